// Chat templates: renders {role, content} messages straight to token ids, the
// way the model's Jinja chat_template (tokenizer_config.json) would, for the
// families built in. BOS/EOS and control tokens go in as ids, never by encoding
// their text; each text segment between them is encoded on its own (as Hugging
// Face's sentencepiece Llama tokenizer does). No torch, no gRPC.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace streamgen {

struct ChatMessage {
  std::string role;     // "system", "user" or "assistant"
  std::string content;
};

enum class ChatTemplateFamily {
  kNone = 0,  // no known family: chat requests are refused
  kLlama2,    // Llama-2-chat: <s>[INST] <<SYS>>...<</SYS>> ... [/INST] answer </s>
  kMistral,   // Mistral-Instruct v0.1: <s>[INST] ... [/INST]answer</s> (no system role)
  kChatMl,    // <|im_start|>role\ncontent<|im_end|>\n ... <|im_start|>assistant\n
};

// "llama2", "mistral", "chatml", "" (kNone).
const char* ChatTemplateFamilyName(ChatTemplateFamily family);

// "llama2" | "mistral" | "chatml" | "none"; INVALID_ARGUMENT naming the value otherwise.
absl::StatusOr<ChatTemplateFamily> ParseChatTemplateFamily(absl::string_view name);

// Recognises a Jinja chat_template by its distinctive markers: "<|im_start|>"
// -> ChatML; "[INST]" with "<<SYS>>" -> Llama-2; "[INST]" alone -> Mistral.
// Anything else (or "") -> kNone. Never guesses beyond those markers.
ChatTemplateFamily DetectChatTemplateFamily(absl::string_view jinja_template);

// What rendering needs from the tokenizer.
struct ChatVocabulary {
  // Plain text -> ids: no BOS/EOS added, control-token text not special.
  std::function<std::vector<int>(const std::string&)> encode;
  // The id of a piece such as "<|im_start|>"; -1 when the vocabulary lacks it.
  std::function<int(const std::string&)> piece_to_id;
  int bos_id = -1;  // -1: none
  int eos_id = -1;  // -1: none
  std::string bos_piece = "<s>";   // how the Jinja template spells bos_token
  std::string eos_piece = "</s>";  // how the Jinja template spells eos_token
};

// One piece of a rendered conversation: text to encode, or a special token.
struct ChatSegment {
  bool special = false;
  int id = -1;       // special tokens only
  std::string text;  // the text, or the special token's spelling
};

class ChatTemplate {
 public:
  // FAILED_PRECONDITION when the family is kNone or the vocabulary lacks a
  // token the family needs (names the token).
  static absl::StatusOr<std::unique_ptr<ChatTemplate>> Create(ChatTemplateFamily family,
                                                              ChatVocabulary vocabulary);

  // Thread-safe (const). The conversation followed by the prompt for the
  // assistant's next turn. INVALID_ARGUMENT naming messages[i] when the
  // family cannot render it (unknown role, roles not alternating, system
  // message not first or not supported, empty conversation).
  absl::StatusOr<std::vector<ChatSegment>> RenderSegments(
      const std::vector<ChatMessage>& messages) const;
  absl::StatusOr<std::vector<int>> Render(const std::vector<ChatMessage>& messages) const;
  // The rendered text with special tokens spelled out: what the Jinja template prints.
  absl::StatusOr<std::string> RenderText(const std::vector<ChatMessage>& messages) const;

  ChatTemplateFamily family() const { return family_; }

 private:
  ChatTemplate(ChatTemplateFamily family, ChatVocabulary vocabulary)
      : family_(family), vocabulary_(std::move(vocabulary)) {}

  ChatTemplateFamily family_;
  ChatVocabulary vocabulary_;
  int im_start_id_ = -1;
  int im_end_id_ = -1;
};

}  // namespace streamgen
