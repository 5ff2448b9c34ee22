#include "engine/text/chat_template.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace streamgen {
namespace {

// Python's str.strip(): the whitespace of Python's str.isspace(), in UTF-8.
bool IsPythonSpaceAt(absl::string_view s, size_t pos, size_t* length) {
  unsigned char c = s[pos];
  if (c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f)) {
    *length = 1;
    return true;
  }
  static const char* const kMultiByte[] = {
      "\xc2\x85", "\xc2\xa0", "\xe1\x9a\x80", "\xe2\x80\x80", "\xe2\x80\x81", "\xe2\x80\x82",
      "\xe2\x80\x83", "\xe2\x80\x84", "\xe2\x80\x85", "\xe2\x80\x86", "\xe2\x80\x87",
      "\xe2\x80\x88", "\xe2\x80\x89", "\xe2\x80\x8a", "\xe2\x80\xa8", "\xe2\x80\xa9",
      "\xe2\x80\xaf", "\xe2\x81\x9f", "\xe3\x80\x80"};
  for (const char* space : kMultiByte) {
    if (absl::StartsWith(s.substr(pos), space)) {
      *length = std::char_traits<char>::length(space);
      return true;
    }
  }
  return false;
}

std::string PythonStrip(absl::string_view s) {
  size_t begin = 0, length = 0;
  while (begin < s.size() && IsPythonSpaceAt(s, begin, &length)) begin += length;
  size_t end = begin;
  // The end is the position after the last non-space character.
  for (size_t pos = begin; pos < s.size();) {
    if (IsPythonSpaceAt(s, pos, &length)) {
      pos += length;
    } else {
      ++pos;
      end = pos;
    }
  }
  return std::string(s.substr(begin, end - begin));
}

class SegmentWriter {
 public:
  void Text(absl::string_view text) {
    if (text.empty()) return;
    if (!segments_.empty() && !segments_.back().special) {
      segments_.back().text.append(text.data(), text.size());
    } else {
      segments_.push_back(ChatSegment{false, -1, std::string(text)});
    }
  }
  void Special(int id, const std::string& spelling) {
    segments_.push_back(ChatSegment{true, id, spelling});
  }
  std::vector<ChatSegment> Take() { return std::move(segments_); }

 private:
  std::vector<ChatSegment> segments_;
};

absl::Status RoleError(size_t index, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("messages[", index, "].role: ", why));
}

// [INST] families: after an optional leading system message (Llama-2 only),
// roles must alternate user/assistant starting with user, and end with user.
absl::Status CheckInstRoles(const std::vector<ChatMessage>& messages, bool allow_system) {
  size_t first = 0;
  if (!messages.empty() && messages[0].role == "system") {
    if (!allow_system) return RoleError(0, "this model's template has no system role");
    first = 1;
  }
  if (first == messages.size()) {
    return absl::InvalidArgumentError("messages: the conversation has no user message");
  }
  for (size_t i = first; i < messages.size(); ++i) {
    const std::string& expected = (i - first) % 2 == 0 ? "user" : "assistant";
    if (messages[i].role != expected) {
      return RoleError(i, absl::StrCat("expected \"", expected, "\", got \"", messages[i].role,
                                       "\" (roles alternate user/assistant",
                                       allow_system ? " after an optional first system message" : "",
                                       ")"));
    }
  }
  if (messages.back().role != "user") {
    return RoleError(messages.size() - 1, "the last message must be from the user");
  }
  return absl::OkStatus();
}

}  // namespace

const char* ChatTemplateFamilyName(ChatTemplateFamily family) {
  switch (family) {
    case ChatTemplateFamily::kNone: return "";
    case ChatTemplateFamily::kLlama2: return "llama2";
    case ChatTemplateFamily::kMistral: return "mistral";
    case ChatTemplateFamily::kChatMl: return "chatml";
    case ChatTemplateFamily::kJinja: return "jinja";
  }
  return "";
}

absl::StatusOr<ChatTemplateFamily> ParseChatTemplateFamily(absl::string_view name) {
  if (name == "llama2") return ChatTemplateFamily::kLlama2;
  if (name == "mistral") return ChatTemplateFamily::kMistral;
  if (name == "chatml") return ChatTemplateFamily::kChatMl;
  if (name == "none") return ChatTemplateFamily::kNone;
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown chat template family \"", name, "\" (expected llama2, mistral, chatml or none)"));
}

ChatTemplateFamily DetectChatTemplateFamily(absl::string_view jinja) {
  if (absl::StrContains(jinja, "<|im_start|>")) return ChatTemplateFamily::kChatMl;
  // The [INST] variants render "[INST] " + content + " [/INST]"; later Mistral
  // templates differ in spacing and system handling and are not recognised.
  if (!absl::StrContains(jinja, "[INST]") || !absl::StrContains(jinja, "' [/INST]'")) {
    return ChatTemplateFamily::kNone;
  }
  return absl::StrContains(jinja, "<<SYS>>") ? ChatTemplateFamily::kLlama2
                                              : ChatTemplateFamily::kMistral;
}

absl::StatusOr<std::unique_ptr<ChatTemplate>> ChatTemplate::Create(ChatTemplateFamily family,
                                                                   ChatVocabulary vocabulary) {
  if (family == ChatTemplateFamily::kNone) {
    return absl::FailedPreconditionError("no chat template family");
  }
  if (family == ChatTemplateFamily::kJinja) {
    return absl::InvalidArgumentError("a Jinja chat template is made by ChatTemplate::CreateJinja");
  }
  if (!vocabulary.encode) return absl::InvalidArgumentError("ChatVocabulary.encode is not set");
  std::unique_ptr<ChatTemplate> chat(new ChatTemplate(family, std::move(vocabulary)));
  const ChatVocabulary& v = chat->vocabulary_;
  const char* name = ChatTemplateFamilyName(family);
  if (family == ChatTemplateFamily::kChatMl) {
    if (!v.piece_to_id) return absl::InvalidArgumentError("ChatVocabulary.piece_to_id is not set");
    chat->im_start_id_ = v.piece_to_id("<|im_start|>");
    chat->im_end_id_ = v.piece_to_id("<|im_end|>");
    if (chat->im_start_id_ < 0 || chat->im_end_id_ < 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the chatml template needs the tokens <|im_start|> and <|im_end|>, which the "
          "model's vocabulary lacks"));
    }
  } else if (v.bos_id < 0 || v.eos_id < 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the ", name, " template needs BOS and EOS tokens; the model has ",
        v.bos_id < 0 ? "no BOS" : "a BOS", " and ", v.eos_id < 0 ? "no EOS" : "an EOS"));
  }
  return chat;
}

absl::StatusOr<std::vector<ChatSegment>> ChatTemplate::RenderSegments(
    const std::vector<ChatMessage>& messages, const ChatRenderOptions& options) const {
  if (messages.empty()) return absl::InvalidArgumentError("messages is empty");
  if (family_ == ChatTemplateFamily::kJinja) return RenderJinjaSegments(messages, options);
  const ChatVocabulary& v = vocabulary_;
  SegmentWriter out;
  switch (family_) {
    case ChatTemplateFamily::kNone:
    case ChatTemplateFamily::kJinja:  // (RenderJinjaSegments)
      return absl::FailedPreconditionError("no chat template");
    case ChatTemplateFamily::kLlama2: {
      absl::Status roles = CheckInstRoles(messages, /*allow_system=*/true);
      if (!roles.ok()) return roles;
      bool has_system = messages[0].role == "system";
      for (size_t i = has_system ? 1 : 0; i < messages.size(); ++i) {
        std::string content = messages[i].content;
        if (has_system && i == 1) {
          content = absl::StrCat("<<SYS>>\n", messages[0].content, "\n<</SYS>>\n\n", content);
        }
        if (messages[i].role == "user") {
          out.Special(v.bos_id, v.bos_piece);
          out.Text(absl::StrCat("[INST] ", PythonStrip(content), " [/INST]"));
        } else {
          out.Text(absl::StrCat(" ", PythonStrip(content), " "));
          out.Special(v.eos_id, v.eos_piece);
        }
      }
      break;
    }
    case ChatTemplateFamily::kMistral: {
      absl::Status roles = CheckInstRoles(messages, /*allow_system=*/false);
      if (!roles.ok()) return roles;
      out.Special(v.bos_id, v.bos_piece);
      for (const ChatMessage& message : messages) {
        if (message.role == "user") {
          out.Text(absl::StrCat("[INST] ", message.content, " [/INST]"));
        } else {
          out.Text(message.content);
          out.Special(v.eos_id, v.eos_piece);
          out.Text(" ");
        }
      }
      break;
    }
    case ChatTemplateFamily::kChatMl: {
      for (size_t i = 0; i < messages.size(); ++i) {
        const std::string& role = messages[i].role;
        if (role != "system" && role != "user" && role != "assistant") {
          return RoleError(i, absl::StrCat("\"", role,
                                           "\" is not one of system, user, assistant"));
        }
        out.Special(im_start_id_, "<|im_start|>");
        out.Text(absl::StrCat(role, "\n", messages[i].content));
        out.Special(im_end_id_, "<|im_end|>");
        out.Text("\n");
      }
      out.Special(im_start_id_, "<|im_start|>");
      out.Text("assistant\n");
      break;
    }
  }
  return out.Take();
}

absl::StatusOr<std::vector<int>> ChatTemplate::Render(const std::vector<ChatMessage>& messages,
                                                      const ChatRenderOptions& options) const {
  absl::StatusOr<std::vector<ChatSegment>> segments = RenderSegments(messages, options);
  if (!segments.ok()) return segments.status();
  const auto& encode = options.parse_special_tokens && vocabulary_.encode_special
                           ? vocabulary_.encode_special
                           : vocabulary_.encode;
  std::vector<int> ids;
  for (const ChatSegment& segment : *segments) {
    if (segment.special) {
      ids.push_back(segment.id);
    } else {
      std::vector<int> text_ids = encode(segment.text);
      ids.insert(ids.end(), text_ids.begin(), text_ids.end());
    }
  }
  return ids;
}

absl::StatusOr<std::string> ChatTemplate::RenderText(const std::vector<ChatMessage>& messages,
                                                     const ChatRenderOptions& options) const {
  absl::StatusOr<std::vector<ChatSegment>> segments = RenderSegments(messages, options);
  if (!segments.ok()) return segments.status();
  std::string text;
  for (const ChatSegment& segment : *segments) text += segment.text;
  return text;
}

}  // namespace streamgen
