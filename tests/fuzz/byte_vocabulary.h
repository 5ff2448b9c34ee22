// A byte vocabulary for the fuzz targets that render chat without a real
// tokenizer (chat_template_fuzz.cc and, through fuzz_request.h, the request
// targets): every byte is one id, the special tokens have ids of their own.
#pragma once

#include <string>
#include <vector>

#include "engine/text/chat_template.h"

namespace streamgen::fuzz {

// The byte vocabulary: <unk> 0, <s> 1, </s> 2, byte b -> 3 + b, then the
// ChatML markers.
inline constexpr int kByteBase = 3;
inline constexpr int kImStart = 259;
inline constexpr int kImEnd = 260;

inline std::vector<int> EncodeBytes(const std::string& text) {
  std::vector<int> ids;
  ids.reserve(text.size());
  for (unsigned char c : text) ids.push_back(kByteBase + c);
  return ids;
}

inline ChatVocabulary ByteChatVocabulary() {
  ChatVocabulary vocabulary;
  vocabulary.encode = EncodeBytes;
  vocabulary.piece_to_id = [](const std::string& piece) {
    if (piece == "<|im_start|>") return kImStart;
    if (piece == "<|im_end|>") return kImEnd;
    return -1;
  };
  vocabulary.bos_id = 1;
  vocabulary.eos_id = 2;
  return vocabulary;
}

inline ChatTemplateFamily FuzzFamily(int which) {
  switch (which % 4) {
    case 0: return ChatTemplateFamily::kChatMl;
    case 1: return ChatTemplateFamily::kLlama2;
    case 2: return ChatTemplateFamily::kMistral;
    default: return ChatTemplateFamily::kNone;
  }
}

}  // namespace streamgen::fuzz
