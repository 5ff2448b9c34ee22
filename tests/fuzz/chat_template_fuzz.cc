// Fuzz target: engine/text/chat_template.cc. Family detection on arbitrary Jinja
// text, family names, ChatTemplate::Create with and without the tokens a
// family needs, and rendering arbitrary conversations to segments, ids and
// text over a byte vocabulary (tests/fuzz/byte_vocabulary.h).
//
// Input: byte 0: the family (bits 0-1: llama2, chatml, mistral, none) and
// which tokens the vocabulary lacks (bit 2: BOS, bit 3: EOS, bit 4:
// <|im_start|>); byte 1: the number of messages (mod 9); per message a role
// byte (0 system, 1 user, 2 assistant, else a short string read next) and a
// content of length byte * 2; what is left is fed to DetectChatTemplateFamily
// and ParseChatTemplateFamily.
//
// Properties: never a crash; Create refuses exactly the vocabularies that
// lack a token the family needs, naming it; rendering succeeds exactly when
// the roles follow the family's rules (checked independently here), and
// errors name messages[i]; Render's ids are the segments' ids and encodings
// in order, with special ids only where the segments are special; RenderText
// is the segments' text; ChatML renders exactly its documented text; the
// [INST] families start with BOS and end with " [/INST]".
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/text/chat_template.h"
#include "tests/fuzz/byte_vocabulary.h"
#include "tests/fuzz/fuzz_util.h"

namespace streamgen {
namespace {

// The roles rule of the [INST] families: an optional first system message
// (Llama-2 only), then user/assistant alternating from user, ending on user.
bool InstRolesValid(const std::vector<ChatMessage>& messages, bool allow_system) {
  size_t first = 0;
  if (!messages.empty() && messages[0].role == "system") {
    if (!allow_system) return false;
    first = 1;
  }
  if (first == messages.size()) return false;
  for (size_t i = first; i < messages.size(); ++i) {
    if (messages[i].role != ((i - first) % 2 == 0 ? "user" : "assistant")) return false;
  }
  return messages.back().role == "user";
}

bool RolesValid(ChatTemplateFamily family, const std::vector<ChatMessage>& messages) {
  if (messages.empty()) return false;
  switch (family) {
    case ChatTemplateFamily::kLlama2: return InstRolesValid(messages, true);
    case ChatTemplateFamily::kMistral: return InstRolesValid(messages, false);
    case ChatTemplateFamily::kChatMl:
      for (const ChatMessage& m : messages) {
        if (m.role != "system" && m.role != "user" && m.role != "assistant") return false;
      }
      return true;
    default: return false;
  }
}

bool IsSpecialId(int id) {
  return id == 1 || id == 2 || id == fuzz::kImStart || id == fuzz::kImEnd;
}

}  // namespace
}  // namespace streamgen

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace streamgen;
  fuzz::Input in(data, size);
  const uint8_t flags = in.Byte();
  const ChatTemplateFamily kFamilies[] = {ChatTemplateFamily::kLlama2, ChatTemplateFamily::kChatMl,
                                           ChatTemplateFamily::kMistral, ChatTemplateFamily::kNone};
  const ChatTemplateFamily chosen = kFamilies[flags & 3];
  const bool no_bos = flags & 4, no_eos = flags & 8, no_im_start = flags & 16;

  std::vector<ChatMessage> messages(in.Byte() % 9);
  for (ChatMessage& message : messages) {
    const uint8_t role = in.Byte();
    message.role = role == 0 ? "system" : role == 1 ? "user" : role == 2 ? "assistant"
                                                                          : in.ShortString(12);
    message.content = in.Bytes(static_cast<size_t>(in.Byte()) * 2);
  }
  const std::string rest = in.Rest();
  DetectChatTemplateFamily(rest);
  absl::StatusOr<ChatTemplateFamily> named = ParseChatTemplateFamily(rest);
  if (!named.ok()) {
    FUZZ_CHECK(absl::StrContains(named.status().message(), "unknown chat template family"),
               "%s", named.status().ToString().c_str());
  }

  ChatVocabulary vocabulary = fuzz::ByteChatVocabulary();
  if (no_bos) vocabulary.bos_id = -1;
  if (no_eos) vocabulary.eos_id = -1;
  if (no_im_start) {
    vocabulary.piece_to_id = [](const std::string& piece) {
      return piece == "<|im_end|>" ? fuzz::kImEnd : -1;
    };
  }
  absl::StatusOr<std::unique_ptr<ChatTemplate>> chat = ChatTemplate::Create(chosen, vocabulary);
  const bool lacks = chosen == ChatTemplateFamily::kChatMl ? no_im_start : (no_bos || no_eos);
  if (chosen == ChatTemplateFamily::kNone || lacks) {
    FUZZ_CHECK(!chat.ok() && chat.status().code() == absl::StatusCode::kFailedPrecondition,
               "Create accepted a family without its tokens: %s",
               chat.status().ToString().c_str());
    if (chosen == ChatTemplateFamily::kChatMl) {
      FUZZ_CHECK(absl::StrContains(chat.status().message(), "<|im_start|>"), "%s",
                 chat.status().ToString().c_str());
    } else if (chosen != ChatTemplateFamily::kNone) {
      FUZZ_CHECK(absl::StrContains(chat.status().message(), no_bos ? "no BOS" : "no EOS"), "%s",
                 chat.status().ToString().c_str());
    }
    return 0;
  }
  FUZZ_CHECK(chat.ok(), "Create: %s", chat.status().ToString().c_str());

  absl::StatusOr<std::vector<ChatSegment>> segments = (*chat)->RenderSegments(messages);
  absl::StatusOr<std::vector<int>> ids = (*chat)->Render(messages);
  absl::StatusOr<std::string> text = (*chat)->RenderText(messages);
  const bool valid = RolesValid(chosen, messages);
  FUZZ_CHECK(segments.ok() == valid && ids.ok() == valid && text.ok() == valid,
             "roles %s but rendering %s", valid ? "valid" : "invalid",
             segments.status().ToString().c_str());
  if (!valid) {
    FUZZ_CHECK(segments.status().code() == absl::StatusCode::kInvalidArgument &&
                   absl::StartsWith(segments.status().message(), "messages"),
               "%s", segments.status().ToString().c_str());
    return 0;
  }
  std::vector<int> expected_ids;
  std::string expected_text;
  for (const ChatSegment& segment : *segments) {
    expected_text += segment.text;
    if (segment.special) {
      FUZZ_CHECK(IsSpecialId(segment.id), "special segment with id %d", segment.id);
      expected_ids.push_back(segment.id);
    } else {
      for (int id : fuzz::EncodeBytes(segment.text)) expected_ids.push_back(id);
    }
  }
  FUZZ_CHECK(*ids == expected_ids, "Render is not the segments' ids");
  FUZZ_CHECK(*text == expected_text, "RenderText is not the segments' text");
  if (chosen == ChatTemplateFamily::kChatMl) {
    std::string want;
    for (const ChatMessage& m : messages) {
      absl::StrAppend(&want, "<|im_start|>", m.role, "\n", m.content, "<|im_end|>\n");
    }
    want += "<|im_start|>assistant\n";
    FUZZ_CHECK(*text == want, "ChatML text differs from its documented form");
  } else {
    FUZZ_CHECK(!ids->empty() && (*ids)[0] == 1, "an [INST] rendering without BOS first");
    FUZZ_CHECK(absl::StartsWith(*text, "<s>[INST] ") && absl::EndsWith(*text, " [/INST]"),
               "[INST] rendering: %s", text->c_str());
  }
  return 0;
}
