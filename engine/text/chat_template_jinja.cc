// The model's own Jinja chat template (declared in chat_template.h): loading
// it from a model directory or a file, OpenAI messages to template values,
// and splitting the rendered text at special tokens.
#include <algorithm>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "engine/text/chat_template.h"
#include "engine/text/jinja/lexer.h"

namespace streamgen {
namespace {

using nlohmann::ordered_json;

// NOT_FOUND when absent; INVALID_ARGUMENT naming the file when unreadable.
absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open the file"));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return absl::InvalidArgumentError(absl::StrCat(path, ": cannot read the file"));
  return text.str();
}

bool FileExists(const std::string& path) { return std::ifstream(path).good(); }

absl::StatusOr<ordered_json> ParseJson(const std::string& text, absl::string_view what) {
  ordered_json value = ordered_json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(what, ": not valid JSON"));
  return value;
}

// tool_calls' "arguments" arrive from OpenAI clients as a JSON string; templates
// expect the object (as vLLM passes it), so a string holding a JSON object is parsed.
ordered_json ToolCallsForTemplate(ordered_json calls) {
  if (!calls.is_array()) return calls;
  for (ordered_json& call : calls) {
    if (!call.is_object() || !call.contains("function") || !call["function"].is_object()) continue;
    ordered_json& function = call["function"];
    if (function.contains("arguments") && function["arguments"].is_string()) {
      ordered_json parsed = ordered_json::parse(function["arguments"].get<std::string>(), nullptr,
                                                /*allow_exceptions=*/false);
      if (parsed.is_object()) function["arguments"] = std::move(parsed);
    }
  }
  return calls;
}

// U+FDD0, a noncharacter: written after the first character of each special
// token's spelling found in a request's text, so that the split after
// rendering does not take it for the control token; removed from the text
// pieces after the split (and from the request's text before marking).
constexpr absl::string_view kGuardMark = "\xEF\xB7\x90";

size_t Utf8Length(unsigned char lead) {
  return lead < 0x80 ? 1 : (lead >> 5) == 0x6 ? 2 : (lead >> 4) == 0xE ? 3 : (lead >> 3) == 0x1E ? 4 : 1;
}

std::string RemoveGuardMarks(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    size_t found = text.find(kGuardMark, pos);
    if (found == absl::string_view::npos) found = text.size();
    out.append(text.data() + pos, found - pos);
    pos = found == text.size() ? found : found + kGuardMark.size();
  }
  return out;
}

// `text` with kGuardMark after the first character of each of `spellings`
// (longest first) that it holds.
std::string GuardText(absl::string_view input, const SpecialSpellings& spellings) {
  std::string text = RemoveGuardMarks(input);
  std::string out;
  out.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    const size_t length = spellings.LongestAt(text, pos).first;
    if (length == 0) {
      out.push_back(text[pos++]);
      continue;
    }
    size_t first = std::min(Utf8Length(static_cast<unsigned char>(text[pos])), length);
    out.append(text, pos, first);
    out.append(kGuardMark.data(), kGuardMark.size());
    out.append(text, pos + first, length - first);
    pos += length;
  }
  return out;
}

void GuardJsonValue(ordered_json* value, const SpecialSpellings& spellings) {
  if (value->is_string()) {
    *value = GuardText(value->get<std::string>(), spellings);
  } else if (value->is_array()) {
    for (ordered_json& item : *value) GuardJsonValue(&item, spellings);
  } else if (value->is_object()) {
    ordered_json out = ordered_json::object();
    for (auto& [key, item] : value->items()) {
      GuardJsonValue(&item, spellings);
      out[GuardText(key, spellings)] = std::move(item);
    }
    *value = std::move(out);
  }
}

// A JSON text with its strings (keys included) guarded; left as it is when
// it does not parse (Render names the field).
std::string GuardJson(const std::string& json, const SpecialSpellings& spellings) {
  if (json.empty()) return json;
  ordered_json value = ordered_json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded()) return json;
  GuardJsonValue(&value, spellings);
  return value.dump();
}

}  // namespace

absl::StatusOr<std::string> ChatContentText(const ordered_json& content, absl::string_view field) {
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": must be a string or a list of content parts"));
  }
  std::string text;
  for (size_t i = 0; i < content.size(); ++i) {
    const ordered_json& part = content[i];
    std::string where = absl::StrCat(field, "[", i, "]");
    if (!part.is_object() || !part.contains("type") || !part["type"].is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": a content part needs a \"type\""));
    }
    std::string type = part["type"].get<std::string>();
    if (type != "text") {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": content parts of type \"", type, "\" are not supported (only \"text\")"));
    }
    if (!part.contains("text") || !part["text"].is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ".text: must be a string"));
    }
    text += part["text"].get<std::string>();
  }
  return text;
}

absl::StatusOr<std::vector<ChatMessage>> ChatMessagesFromJson(const ordered_json& messages) {
  if (!messages.is_array()) return absl::InvalidArgumentError("messages: must be a list");
  std::vector<ChatMessage> out;
  for (size_t i = 0; i < messages.size(); ++i) {
    const ordered_json& m = messages[i];
    std::string where = absl::StrCat("messages[", i, "]");
    if (!m.is_object()) return absl::InvalidArgumentError(absl::StrCat(where, ": must be an object"));
    ChatMessage message;
    if (!m.contains("role") || !m["role"].is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ".role: must be a string"));
    }
    message.role = m["role"].get<std::string>();
    static const char* const kRoles[] = {"system", "developer", "user", "assistant", "tool"};
    if (std::none_of(std::begin(kRoles), std::end(kRoles),
                     [&](const char* r) { return message.role == r; })) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ".role: \"", message.role,
          "\" is not one of system, developer, user, assistant, tool"));
    }
    if (!m.contains("content") || m["content"].is_null()) {
      message.content_null = true;
    } else {
      SG_ASSIGN_OR_RETURN(message.content, ChatContentText(m["content"], where + ".content"));
    }
    for (const char* field : {"name", "tool_call_id"}) {
      if (!m.contains(field) || m[field].is_null()) continue;
      if (!m[field].is_string()) {
        return absl::InvalidArgumentError(absl::StrCat(where, ".", field, ": must be a string"));
      }
      (std::string(field) == "name" ? message.name : message.tool_call_id) = m[field].get<std::string>();
    }
    if (m.contains("tool_calls") && !m["tool_calls"].is_null()) {
      if (!m["tool_calls"].is_array()) {
        return absl::InvalidArgumentError(absl::StrCat(where, ".tool_calls: must be a list"));
      }
      message.tool_calls_json = m["tool_calls"].dump();
    }
    out.push_back(std::move(message));
  }
  return out;
}

absl::StatusOr<std::unique_ptr<JinjaChatTemplate>> JinjaChatTemplate::Create(
    absl::string_view source, std::string name, std::map<std::string, std::string> special_tokens,
    std::vector<std::string> added_tokens) {
  SG_ASSIGN_OR_RETURN(std::unique_ptr<jinja::Template> parsed,
                      jinja::Template::Parse(source, name));
  std::unique_ptr<JinjaChatTemplate> chat(new JinjaChatTemplate(
      std::move(parsed), std::move(special_tokens), std::move(added_tokens)));
  chat->tool_call_format_ = DetectToolCallFormat(source);
  // "<...>" runs without spaces inside the template's strings and text.
  SG_ASSIGN_OR_RETURN(std::vector<jinja::Token> tokens, jinja::Tokenize(source, name));
  for (const jinja::Token& token : tokens) {
    if (token.type != jinja::TokenType::kString && token.type != jinja::TokenType::kText) continue;
    const std::string& t = token.text;
    for (size_t open = t.find('<'); open != std::string::npos; open = t.find('<', open + 1)) {
      size_t close = t.find('>', open + 1);
      if (close == std::string::npos || close - open < 2 || close - open > 64) continue;
      std::string candidate = t.substr(open, close - open + 1);
      if (candidate.find_first_of(" \t\n<", 1) == std::string::npos) {
        chat->literal_tokens_.push_back(std::move(candidate));
      }
    }
  }
  return chat;
}

absl::StatusOr<ChatTemplateFamily> ParseChatTemplateFlag(absl::string_view value) {
  absl::StatusOr<ChatTemplateFamily> family = ParseChatTemplateFamily(value);
  if (family.ok()) return family;
  if (FileExists(std::string(value))) return ChatTemplateFamily::kJinja;
  return absl::InvalidArgumentError(absl::StrCat(
      "\"", value, "\" is neither a chat template family (llama2, mistral, chatml or none) nor a "
      "readable Jinja template file"));
}

absl::StatusOr<std::unique_ptr<ChatTemplate>> ChatTemplate::FromFlag(absl::string_view value,
                                                                     ChatTemplateFamily family,
                                                                     ChatVocabulary vocabulary) {
  if (family != ChatTemplateFamily::kJinja) return Create(family, std::move(vocabulary));
  SG_ASSIGN_OR_RETURN(std::unique_ptr<JinjaChatTemplate> jinja,
                      JinjaChatTemplate::FromFile(std::string(value), {}));
  return CreateJinja(std::move(jinja), std::move(vocabulary));
}

absl::StatusOr<std::map<std::string, std::string>> JinjaChatTemplate::SpecialTokensOf(
    const std::string& path, std::vector<std::string>* added_tokens) {
  std::map<std::string, std::string> tokens;
  if (!FileExists(path)) return tokens;
  SG_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  SG_ASSIGN_OR_RETURN(ordered_json config, ParseJson(text, path));
  if (!config.is_object()) return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object"));
  for (const auto& [key, value] : config.items()) {
    if (key.size() < 6 || key.compare(key.size() - 6, 6, "_token") != 0) continue;
    if (value.is_string()) {
      tokens[key] = value.get<std::string>();
    } else if (value.is_object() && value.contains("content") && value["content"].is_string()) {
      tokens[key] = value["content"].get<std::string>();
    }
  }
  if (added_tokens != nullptr && config.contains("added_tokens_decoder") &&
      config["added_tokens_decoder"].is_object()) {
    for (const auto& [id, entry] : config["added_tokens_decoder"].items()) {
      if (entry.is_object() && entry.contains("content") && entry["content"].is_string()) {
        added_tokens->push_back(entry["content"].get<std::string>());
      }
    }
  }
  return tokens;
}

absl::StatusOr<std::unique_ptr<JinjaChatTemplate>> JinjaChatTemplate::FromModelDir(
    const std::string& dir) {
  std::string config_path = dir + "/tokenizer_config.json";
  std::string jinja_path = dir + "/chat_template.jinja";
  std::vector<std::string> added;
  SG_ASSIGN_OR_RETURN(auto tokens, SpecialTokensOf(config_path, &added));
  if (FileExists(jinja_path)) return FromFile(jinja_path, std::move(tokens), std::move(added));
  if (!FileExists(config_path)) {
    return absl::NotFoundError(absl::StrCat(dir, ": no chat_template.jinja and no tokenizer_config.json"));
  }
  SG_ASSIGN_OR_RETURN(std::string text, ReadFile(config_path));
  SG_ASSIGN_OR_RETURN(ordered_json config, ParseJson(text, config_path));
  if (!config.contains("chat_template") || config["chat_template"].is_null()) {
    return absl::NotFoundError(absl::StrCat(config_path, ": no chat_template"));
  }
  const ordered_json& t = config["chat_template"];
  if (t.is_string()) {
    return Create(t.get<std::string>(), config_path + " chat_template", std::move(tokens),
                  std::move(added));
  }
  if (t.is_array()) {
    for (const ordered_json& entry : t) {
      if (entry.is_object() && entry.value("name", "") == "default" && entry.contains("template") &&
          entry["template"].is_string()) {
        return Create(entry["template"].get<std::string>(),
                      config_path + " chat_template[default]", std::move(tokens), std::move(added));
      }
    }
    return absl::InvalidArgumentError(absl::StrCat(
        config_path, ": chat_template: a list of named templates without one named \"default\""));
  }
  return absl::InvalidArgumentError(absl::StrCat(
      config_path, ": chat_template: must be a string or a list of {name, template}"));
}

absl::StatusOr<std::unique_ptr<JinjaChatTemplate>> JinjaChatTemplate::FromFile(
    const std::string& path, std::map<std::string, std::string> special_tokens,
    std::vector<std::string> added_tokens) {
  SG_ASSIGN_OR_RETURN(std::string source, ReadFile(path));
  return Create(source, path, std::move(special_tokens), std::move(added_tokens));
}

absl::StatusOr<std::string> JinjaChatTemplate::Render(const std::vector<ChatMessage>& messages,
                                                      const ChatRenderOptions& options) const {
  ordered_json context = ordered_json::object();
  ordered_json list = ordered_json::array();
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    ordered_json message = {{"role", m.role}};
    message["content"] = m.content_null ? ordered_json(nullptr) : ordered_json(m.content);
    if (!m.name.empty()) message["name"] = m.name;
    if (!m.tool_calls_json.empty()) {
      ordered_json calls = ordered_json::parse(m.tool_calls_json, nullptr, false);
      if (calls.is_discarded()) {
        return absl::InvalidArgumentError(absl::StrCat("messages[", i, "].tool_calls: not valid JSON"));
      }
      message["tool_calls"] = ToolCallsForTemplate(std::move(calls));
    }
    if (!m.tool_call_id.empty()) message["tool_call_id"] = m.tool_call_id;
    list.push_back(std::move(message));
  }
  context["messages"] = std::move(list);
  context["add_generation_prompt"] = options.add_generation_prompt;
  for (const auto& [key, value] : special_tokens_) context[key] = value;
  if (!options.tools_json.empty()) {
    SG_ASSIGN_OR_RETURN(context["tools"], ParseJson(options.tools_json, "tools"));
  }
  if (!options.documents_json.empty()) {
    SG_ASSIGN_OR_RETURN(context["documents"], ParseJson(options.documents_json, "documents"));
  }
  return template_->Render(jinja::Value::FromJson(context));
}

absl::StatusOr<std::unique_ptr<ChatTemplate>> ChatTemplate::CreateJinja(
    std::unique_ptr<JinjaChatTemplate> jinja, ChatVocabulary vocabulary) {
  if (jinja == nullptr) return absl::InvalidArgumentError("CreateJinja: no template");
  if (!vocabulary.encode) return absl::InvalidArgumentError("ChatVocabulary.encode is not set");
  std::map<std::string, std::string> tokens = jinja->special_tokens();
  if (!tokens.count("bos_token") && !vocabulary.bos_piece.empty() && vocabulary.bos_id >= 0) {
    tokens["bos_token"] = vocabulary.bos_piece;
  }
  if (!tokens.count("eos_token") && !vocabulary.eos_piece.empty() && vocabulary.eos_id >= 0) {
    tokens["eos_token"] = vocabulary.eos_piece;
  }
  std::unique_ptr<ChatTemplate> chat(new ChatTemplate(ChatTemplateFamily::kJinja, std::move(vocabulary)));
  const ChatVocabulary& v = chat->vocabulary_;
  std::vector<std::string> texts = jinja->added_tokens();
  texts.insert(texts.end(), jinja->literal_tokens().begin(), jinja->literal_tokens().end());
  for (const auto& entry : tokens) texts.push_back(entry.second);
  std::sort(texts.begin(), texts.end());
  texts.erase(std::unique(texts.begin(), texts.end()), texts.end());
  for (const std::string& text : texts) {
    if (text.empty()) continue;
    int id = v.piece_to_id ? v.piece_to_id(text) : -1;
    if (text == v.bos_piece && v.bos_id >= 0) id = v.bos_id;
    if (text == v.eos_piece && v.eos_id >= 0) id = v.eos_id;
    if (id < 0) continue;
    chat->specials_.Add(text, id);
    if (!v.is_special || v.is_special(id) || id == v.bos_id || id == v.eos_id) {
      chat->guarded_.Add(text, id);
    }
  }
  jinja->special_tokens_ = std::move(tokens);
  chat->jinja_ = std::move(jinja);
  return chat;
}

void SpecialSpellings::Add(std::string text, int id) {
  if (text.empty()) return;
  starts_[static_cast<unsigned char>(text[0])] = true;
  if (std::find(lengths_.begin(), lengths_.end(), text.size()) == lengths_.end()) {
    lengths_.insert(std::upper_bound(lengths_.begin(), lengths_.end(), text.size(),
                                     std::greater<size_t>()),
                    text.size());
  }
  ids_.emplace(std::move(text), id);
}

std::pair<size_t, int> SpecialSpellings::LongestAt(absl::string_view text, size_t pos) const {
  if (pos >= text.size() || !starts_[static_cast<unsigned char>(text[pos])]) return {0, -1};
  for (size_t length : lengths_) {
    if (length > text.size() - pos) continue;
    auto it = ids_.find(text.substr(pos, length));
    if (it != ids_.end()) return {length, it->second};
  }
  return {0, -1};
}

absl::StatusOr<std::vector<ChatSegment>> ChatTemplate::RenderJinjaSegments(
    const std::vector<ChatMessage>& messages, const ChatRenderOptions& options) const {
  std::string text;
  bool guard = !options.parse_special_tokens && !guarded_.empty();
  if (guard) {
    // The request's own text cannot spell a control token (see kGuardMark).
    std::vector<ChatMessage> marked = messages;
    for (ChatMessage& m : marked) {
      m.content = GuardText(m.content, guarded_);
      m.name = GuardText(m.name, guarded_);
      m.tool_call_id = GuardText(m.tool_call_id, guarded_);
      m.tool_calls_json = GuardJson(m.tool_calls_json, guarded_);
    }
    ChatRenderOptions marked_options = options;
    marked_options.tools_json = GuardJson(options.tools_json, guarded_);
    marked_options.documents_json = GuardJson(options.documents_json, guarded_);
    SG_ASSIGN_OR_RETURN(text, jinja_->Render(marked, marked_options));
  } else {
    SG_ASSIGN_OR_RETURN(text, jinja_->Render(messages, options));
  }
  std::vector<ChatSegment> segments;
  size_t start = 0;
  for (size_t pos = 0; pos < text.size();) {
    const auto [length, id] = specials_.LongestAt(text, pos);
    if (length == 0) {
      ++pos;
      continue;
    }
    if (pos > start) segments.push_back(ChatSegment{false, -1, text.substr(start, pos - start)});
    segments.push_back(ChatSegment{true, id, text.substr(pos, length)});
    pos += length;
    start = pos;
  }
  if (start < text.size()) segments.push_back(ChatSegment{false, -1, text.substr(start)});
  if (guard) {
    for (ChatSegment& segment : segments) {
      if (!segment.special) segment.text = RemoveGuardMarks(segment.text);
    }
  }
  return segments;
}

}  // namespace streamgen
