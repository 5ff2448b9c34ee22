// Chat templates: renders messages to token ids, either with the model's own
// Jinja chat_template (tokenizer_config.json or chat_template.jinja, or a
// --chat-template FILE; engine/text/jinja/ interprets it as transformers'
// apply_chat_template does) or, for a model without one, with the built-in
// families. BOS/EOS and control tokens go in as ids, never by encoding their
// text; each text segment between them is encoded on its own (as Hugging
// Face's sentencepiece Llama tokenizer does). No torch, no gRPC.
// docs/chat-templates.md is the user's page.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <map>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/text/jinja/template.h"
#include "engine/text/tool_calls.h"
#include "nlohmann/json.hpp"

namespace streamgen {

// A message as OpenAI sends it. The built-in families read role and content;
// a Jinja template sees every field that is set.
struct ChatMessage {
  std::string role;     // "system", "developer", "user", "assistant" or "tool"
  std::string content;  // the text (ChatContentText joins OpenAI's text parts)
  std::string name = {};             // the author's name; "" = absent
  std::string tool_call_id = {};     // a tool message: the call it answers; "" = absent
  std::string tool_calls_json = {};  // an assistant's OpenAI tool_calls (a JSON array); "" = absent
  bool content_null = false;         // content was null (an assistant message with tool calls only)
};

// OpenAI's message content as text: a string, or a list of parts whose text
// parts ({"type": "text", "text": ...}) are joined. INVALID_ARGUMENT naming
// `field` (e.g. "messages[2].content") for another part type or shape.
absl::StatusOr<std::string> ChatContentText(const nlohmann::ordered_json& content, absl::string_view field);

// OpenAI's messages array -> ChatMessages (role, content, name, tool_calls,
// tool_call_id). INVALID_ARGUMENT naming messages[i] and the field. Parse the
// request as ordered_json: templates print tool calls in the order sent.
absl::StatusOr<std::vector<ChatMessage>> ChatMessagesFromJson(const nlohmann::ordered_json& messages);

// What a Jinja chat template is rendered with besides the messages.
struct ChatRenderOptions {
  bool add_generation_prompt = true;  // end with the header of the assistant's turn
  std::string tools_json;      // OpenAI tools, a JSON array: the template's `tools`; "" = none
  std::string documents_json;  // documents for RAG templates, a JSON array; "" = none
  // false (the safe default): a special token's spelling ("<|im_start|>")
  // inside the messages, tools or documents is text, only those the template
  // itself writes are control tokens. true: they are control tokens wherever
  // they are (a trusted caller's choice; docs/chat-templates.md).
  bool parse_special_tokens = false;
};

// A model's own Jinja chat template with the special tokens its
// tokenizer_config.json names. Thread-safe (const).
class JinjaChatTemplate {
 public:
  // `source` is the template, `name` the file it came from (in every error);
  // `special_tokens` maps bos_token, eos_token, ... to their text (the
  // template's variables); `added_tokens` are further token texts that
  // rendering to ids splits out (tokenizer_config.json's added_tokens_decoder).
  // INVALID_ARGUMENT "NAME:LINE:COLUMN: expected ..., got ..." when it does not parse.
  static absl::StatusOr<std::unique_ptr<JinjaChatTemplate>> Create(
      absl::string_view source, std::string name, std::map<std::string, std::string> special_tokens,
      std::vector<std::string> added_tokens = {});

  // The template of a model directory: chat_template.jinja when there is one,
  // else tokenizer_config.json's chat_template (a string, or the entry named
  // "default" of a list of {name, template}); special tokens from
  // tokenizer_config.json (strings or {"content": ...}). NOT_FOUND when the
  // directory has no template; INVALID_ARGUMENT naming the file and field
  // for a malformed one.
  static absl::StatusOr<std::unique_ptr<JinjaChatTemplate>> FromModelDir(const std::string& dir);

  // A template file (--chat-template FILE) with the given special and added
  // tokens. NOT_FOUND / INVALID_ARGUMENT naming the file.
  static absl::StatusOr<std::unique_ptr<JinjaChatTemplate>> FromFile(
      const std::string& path, std::map<std::string, std::string> special_tokens,
      std::vector<std::string> added_tokens = {});

  // The *_token entries of a tokenizer_config.json (empty when the file is
  // absent), and the texts of its added_tokens_decoder entries.
  static absl::StatusOr<std::map<std::string, std::string>> SpecialTokensOf(
      const std::string& tokenizer_config_path, std::vector<std::string>* added_tokens = nullptr);

  // Texts in the template's literals shaped like control tokens ("<|im_start|>",
  // "<start_of_turn>"): CreateJinja splits them out when the vocabulary has them.
  const std::vector<std::string>& literal_tokens() const { return literal_tokens_; }

  // The rendered text. INVALID_ARGUMENT with the template's message when it
  // raises (raise_exception) or fails (an undefined value used, a limit
  // reached: "NAME:LINE:COLUMN: ..."), or naming tools/documents when their
  // JSON does not parse.
  absl::StatusOr<std::string> Render(const std::vector<ChatMessage>& messages,
                                     const ChatRenderOptions& options) const;

  const std::map<std::string, std::string>& special_tokens() const { return special_tokens_; }
  const std::vector<std::string>& added_tokens() const { return added_tokens_; }
  const std::string& name() const { return template_->name(); }
  // The format the template writes an assistant's tool calls in, by its text
  // (DetectToolCallFormat, engine/text/tool_calls.h).
  ToolCallFormat tool_call_format() const { return tool_call_format_; }

 private:
  friend class ChatTemplate;  // CreateJinja completes bos_token/eos_token from the vocabulary

  JinjaChatTemplate(std::unique_ptr<jinja::Template> t, std::map<std::string, std::string> tokens,
                    std::vector<std::string> added)
      : template_(std::move(t)), special_tokens_(std::move(tokens)), added_tokens_(std::move(added)) {}

  std::unique_ptr<jinja::Template> template_;
  std::map<std::string, std::string> special_tokens_;
  std::vector<std::string> added_tokens_;
  std::vector<std::string> literal_tokens_;
  ToolCallFormat tool_call_format_ = ToolCallFormat::kNone;
};

enum class ChatTemplateFamily {
  kNone = 0,  // no known family: chat requests are refused
  kLlama2,    // Llama-2-chat: <s>[INST] <<SYS>>...<</SYS>> ... [/INST] answer </s>
  kMistral,   // Mistral-Instruct v0.1: <s>[INST] ... [/INST]answer</s> (no system role)
  kChatMl,    // <|im_start|>role\ncontent<|im_end|>\n ... <|im_start|>assistant\n
  kJinja,     // the model's own Jinja template (JinjaChatTemplate)
};

// "llama2", "mistral", "chatml", "jinja", "" (kNone).
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
  // Text -> ids with special tokens written in it matched to their ids
  // (ChatRenderOptions.parse_special_tokens); unset: `encode`.
  std::function<std::vector<int>(const std::string&)> encode_special;
  // Whether a token id is special (a control token that user text must not
  // forge); unset: every token the Jinja template splits out is.
  std::function<bool(int)> is_special;
};

// A set of special-token spellings, found at a position of a text by a hash
// lookup per distinct length (longest first), not by comparing every spelling:
// Gemma 3's vocabulary has thousands. Immutable after Add; thread-safe.
class SpecialSpellings {
 public:
  void Add(std::string text, int id);
  bool empty() const { return ids_.empty(); }
  // The longest spelling that starts at text[pos] (its length and id), or
  // length 0 when none does.
  std::pair<size_t, int> LongestAt(absl::string_view text, size_t pos) const;

 private:
  absl::flat_hash_map<std::string, int> ids_;
  std::vector<size_t> lengths_;  // the distinct lengths, longest first
  bool starts_[256] = {};        // the spellings' first bytes: most positions start none
};

// One piece of a rendered conversation: text to encode, or a special token.
struct ChatSegment {
  bool special = false;
  int id = -1;       // special tokens only
  std::string text;  // the text, or the special token's spelling
};

// --chat-template's value: "auto", "none", a family name, or else a path to
// a Jinja template file (kJinja). INVALID_ARGUMENT naming the value when it is
// neither a family nor a readable file.
absl::StatusOr<ChatTemplateFamily> ParseChatTemplateFlag(absl::string_view value);

class ChatTemplate {
 public:
  // FAILED_PRECONDITION when the family is kNone or the vocabulary lacks a
  // token the family needs (names the token).
  static absl::StatusOr<std::unique_ptr<ChatTemplate>> Create(ChatTemplateFamily family,
                                                              ChatVocabulary vocabulary);
  // A Jinja template (family kJinja). Its rendered text is split at the
  // special and added tokens it knows (and the vocabulary's BOS/EOS pieces)
  // that the vocabulary has: those become ids, the rest is encoded. bos_token and
  // eos_token default to the vocabulary's pieces when the template names none.
  static absl::StatusOr<std::unique_ptr<ChatTemplate>> CreateJinja(
      std::unique_ptr<JinjaChatTemplate> jinja, ChatVocabulary vocabulary);
  // What the server's --chat-template names: a family's built-in (Create),
  // or (kJinja) the Jinja template file `value` (JinjaChatTemplate::FromFile
  // then CreateJinja). Errors name the file.
  static absl::StatusOr<std::unique_ptr<ChatTemplate>> FromFlag(absl::string_view value,
                                                                ChatTemplateFamily family,
                                                                ChatVocabulary vocabulary);

  // Thread-safe (const). The conversation followed by the prompt for the
  // assistant's next turn. INVALID_ARGUMENT naming messages[i] when the
  // family cannot render it (unknown role, roles not alternating, system
  // message not first or not supported, empty conversation).
  absl::StatusOr<std::vector<ChatSegment>> RenderSegments(
      const std::vector<ChatMessage>& messages,
      const ChatRenderOptions& options = ChatRenderOptions()) const;
  absl::StatusOr<std::vector<int>> Render(
      const std::vector<ChatMessage>& messages,
      const ChatRenderOptions& options = ChatRenderOptions()) const;
  // The rendered text with special tokens spelled out: what the Jinja template prints.
  absl::StatusOr<std::string> RenderText(
      const std::vector<ChatMessage>& messages,
      const ChatRenderOptions& options = ChatRenderOptions()) const;

  // The Jinja template (null for a built-in family).
  const JinjaChatTemplate* jinja() const { return jinja_.get(); }

  ChatTemplateFamily family() const { return family_; }

 private:
  ChatTemplate(ChatTemplateFamily family, ChatVocabulary vocabulary)
      : family_(family), vocabulary_(std::move(vocabulary)) {}

  absl::StatusOr<std::vector<ChatSegment>> RenderJinjaSegments(
      const std::vector<ChatMessage>& messages, const ChatRenderOptions& options) const;

  ChatTemplateFamily family_;
  ChatVocabulary vocabulary_;
  std::unique_ptr<JinjaChatTemplate> jinja_;       // kJinja only
  SpecialSpellings specials_;  // kJinja: token text -> id
  SpecialSpellings guarded_;   // kJinja: the specials_ that user text must not forge
  int im_start_id_ = -1;
  int im_end_id_ = -1;
};

}  // namespace streamgen
