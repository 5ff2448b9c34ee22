#include "server/openai_api.h"

#include "engine/request_validation.h"
#include "server/openai_structured.h"
#include "server/tool_calls.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "common/status.h"

namespace streamgen {

namespace openai_json {

absl::Status BadPath(absl::string_view param, absl::string_view path, absl::string_view message) {
  absl::Status status = absl::InvalidArgumentError(absl::StrCat(path, " ", message));
  SetErrorParam(&status, param);
  return status;
}

const char* TypeName(const nlohmann::ordered_json& value) {
  if (value.is_string()) return "a string";
  if (value.is_boolean()) return "a boolean";
  if (value.is_number()) return "a number";
  if (value.is_array()) return "an array";
  if (value.is_object()) return "an object";
  return "null";
}

const nlohmann::ordered_json* Field(const nlohmann::ordered_json& body, const char* name) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

}  // namespace openai_json

namespace {

using Json = nlohmann::ordered_json;
using OJson = nlohmann::ordered_json;

constexpr char kParamPayload[] = "type.streamgen.dev/openai.param";

absl::Status BadField(absl::string_view field, absl::string_view message) {
  absl::Status status = absl::InvalidArgumentError(absl::StrCat(field, " ", message));
  SetErrorParam(&status, field);
  return status;
}

using openai_json::BadPath;
using openai_json::Field;
using openai_json::TypeName;

absl::StatusOr<std::optional<double>> Number(const Json& body, const char* name) {
  const Json* value = Field(body, name);
  if (value == nullptr) return std::optional<double>();
  if (!value->is_number()) return BadField(name, absl::StrCat("must be a number, got ", TypeName(*value)));
  return std::optional<double>(value->get<double>());
}

absl::StatusOr<std::optional<int64_t>> Integer(const Json& body, const char* name) {
  const Json* value = Field(body, name);
  if (value == nullptr) return std::optional<int64_t>();
  // Above 2^63 - 1 get<int64_t>() wraps: "seed": 18446744073709551615 was
  // refused as "must be >= 0, got -1" (seen while writing the fuzz targets).
  if (value->is_number_unsigned() &&
      value->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return BadField(name, absl::StrCat("must be at most 2^63 - 1, got ", value->get<uint64_t>()));
  }
  if (value->is_number_integer()) return std::optional<int64_t>(value->get<int64_t>());
  // 16.0 is an integer too (JavaScript clients have no other kind of number).
  if (value->is_number_float()) {
    double d = value->get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15) {
      return std::optional<int64_t>(static_cast<int64_t>(d));
    }
  }
  return BadField(name, absl::StrCat("must be an integer, got ", TypeName(*value)));
}

absl::StatusOr<std::optional<bool>> Bool(const Json& body, const char* name) {
  const Json* value = Field(body, name);
  if (value == nullptr) return std::optional<bool>();
  if (!value->is_boolean()) return BadField(name, absl::StrCat("must be a boolean, got ", TypeName(*value)));
  return std::optional<bool>(value->get<bool>());
}

absl::StatusOr<std::optional<std::string>> String(const Json& body, const char* name) {
  const Json* value = Field(body, name);
  if (value == nullptr) return std::optional<std::string>();
  if (!value->is_string()) return BadField(name, absl::StrCat("must be a string, got ", TypeName(*value)));
  return std::optional<std::string>(value->get<std::string>());
}

// A count field of the proto (uint32): negative is refused here, too large is
// clamped so that the validator's limit message names it.
uint32_t ClampToUint32(int64_t value) {
  return static_cast<uint32_t>(std::min<int64_t>(value, std::numeric_limits<uint32_t>::max()));
}

// `path` is what the message names ("prompt", "prompt[0]"); `name` the param.
absl::Status IdArray(const Json& value, const char* name, google::protobuf::RepeatedField<int32_t>* out,
                     absl::string_view path = "") {
  if (path.empty()) path = name;
  if (!value.is_array()) {
    return BadPath(name, path, absl::StrCat("must be an array of token ids, got ", TypeName(value)));
  }
  for (size_t i = 0; i < value.size(); ++i) {
    const Json& id = value[i];
    if (!id.is_number_integer() || id.get<int64_t>() < std::numeric_limits<int32_t>::min() ||
        id.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
      return BadPath(name, path, absl::StrCat("must be an array of token ids; [", i, "] is ",
                                              id.is_number_integer() ? "out of range" : TypeName(id)));
    }
    out->Add(static_cast<int32_t>(id.get<int64_t>()));
  }
  return absl::OkStatus();
}

// completions' prompt: a string, token ids, or OpenAI's batch form holding one
// of them (["text"], [[1, 2]]); a batch of several, or an empty prompt, is
// refused by name.
absl::Status Prompt(const Json& prompt, v1::GenerateRequest* request) {
  const Json* one = &prompt;
  std::string path = "prompt";
  if (prompt.is_array() && !prompt.empty() && !prompt[0].is_number()) {
    if (prompt.size() > 1) {
      return BadField("prompt", absl::StrCat("holds ", prompt.size(),
                                             " prompts; only one prompt per request is "
                                             "supported (send one request per prompt)"));
    }
    one = &prompt[0];
    path = "prompt[0]";
    if (!one->is_string() && !one->is_array()) {
      return BadField("prompt", absl::StrCat("must be a string, an array of token ids, or an "
                                             "array of one of them; [0] is ",
                                             TypeName(*one)));
    }
  }
  if (one->is_string()) {
    if (one->get_ref<const std::string&>().empty()) return BadField("prompt", kEmptyPromptMessage);
    request->set_prompt(one->get<std::string>());
    return absl::OkStatus();
  }
  if (one->is_array()) {
    if (one->empty()) return BadField("prompt", kEmptyPromptMessage);
    return IdArray(*one, "prompt", request->mutable_prompt_token_ids(), path);
  }
  return BadField("prompt", absl::StrCat("must be a string or an array of token ids, got ",
                                         TypeName(*one)));
}

// tool_calls: [{"id": str, "type": "function", "function": {"name": str,
// "arguments": str (JSON) | object}}]
absl::Status ToolCalls(const Json& calls, const std::string& where, v1::ChatMessage* turn) {
  if (!calls.is_array()) {
    return BadPath("messages", where, absl::StrCat("must be an array, got ", TypeName(calls)));
  }
  for (size_t j = 0; j < calls.size(); ++j) {
    const Json& call = calls[j];
    std::string at = absl::StrCat(where, "[", j, "]");
    const Json* function = call.is_object() ? Field(call, "function") : nullptr;
    if (function == nullptr || !function->is_object()) {
      return BadPath("messages", at, "must be {\"id\", \"type\": \"function\", \"function\": "
                                     "{\"name\", \"arguments\"}}");
    }
    v1::ToolCall* out = turn->add_tool_calls();
    for (const char* field : {"id", "type"}) {
      const Json* value = Field(call, field);
      if (value == nullptr) continue;
      if (!value->is_string()) {
        return BadPath("messages", absl::StrCat(at, ".", field),
                       absl::StrCat("must be a string, got ", TypeName(*value)));
      }
      (std::string(field) == "id" ? *out->mutable_id() : *out->mutable_type()) =
          value->get<std::string>();
    }
    const Json* name = Field(*function, "name");
    if (name == nullptr || !name->is_string()) {
      return BadPath("messages", at + ".function.name", "must be a string");
    }
    out->mutable_function()->set_name(name->get<std::string>());
    if (const Json* arguments = Field(*function, "arguments"); arguments != nullptr) {
      out->mutable_function()->set_arguments(arguments->is_string() ? arguments->get<std::string>()
                                                                    : arguments->dump());
    }
  }
  return absl::OkStatus();
}

// messages: [{"role": str, "content": str | null | [{"type": "text", "text": str}],
// "name": str, "tool_call_id": str, "tool_calls": [...]}]
absl::Status Messages(const Json& value,
                      google::protobuf::RepeatedPtrField<v1::ChatMessage>* out) {
  if (!value.is_array()) return BadField("messages", absl::StrCat("must be an array, got ", TypeName(value)));
  if (value.empty()) return BadField("messages", "is empty: send at least one message");
  for (size_t i = 0; i < value.size(); ++i) {
    const Json& message = value[i];
    std::string where = absl::StrCat("messages[", i, "]");
    if (!message.is_object()) {
      return BadField("messages", absl::StrCat("must hold objects; [", i, "] is ", TypeName(message)));
    }
    v1::ChatMessage* turn = out->Add();
    auto role = message.find("role");
    if (role == message.end() || !role->is_string()) {
      return BadPath("messages", absl::StrCat(where, ".role"), "must be a string");
    }
    turn->set_role(role->get<std::string>());
    for (const char* field : {"name", "tool_call_id"}) {
      const Json* value = Field(message, field);
      if (value == nullptr) continue;
      if (!value->is_string()) {
        return BadPath("messages", absl::StrCat(where, ".", field),
                       absl::StrCat("must be a string, got ", TypeName(*value)));
      }
      (std::string(field) == "name" ? *turn->mutable_name() : *turn->mutable_tool_call_id()) =
          value->get<std::string>();
    }
    if (const Json* calls = Field(message, "tool_calls"); calls != nullptr) {
      SG_RETURN_IF_ERROR(ToolCalls(*calls, where + ".tool_calls", turn));
    }
    auto content = message.find("content");
    if (content == message.end() || content->is_null()) continue;
    if (content->is_string()) {
      turn->set_content(content->get<std::string>());
      continue;
    }
    if (!content->is_array()) {
      return BadPath("messages", absl::StrCat(where, ".content"),
                     absl::StrCat("must be a string or an array of text parts, got ",
                                  TypeName(*content)));
    }
    for (size_t j = 0; j < content->size(); ++j) {
      const Json& part = (*content)[j];
      auto type = part.is_object() ? part.find("type") : part.end();
      auto text = part.is_object() ? part.find("text") : part.end();
      if (type == part.end() || *type != "text" || text == part.end() || !text->is_string()) {
        return BadPath("messages", absl::StrCat(where, ".content[", j, "]"),
                       "must be {\"type\": \"text\", \"text\": string} (only text is supported)");
      }
      turn->mutable_content()->append(text->get<std::string>());
    }
  }
  return absl::OkStatus();
}

// tools (OpenAI's, an array: chat's ToolInputs checks each) and documents
// (an array), as JSON text for the template.
absl::Status TemplateInputs(const Json& body, std::string* tools_json, std::string* documents_json) {
  for (const char* field : {"tools", "documents"}) {
    const Json* value = Field(body, field);
    if (value == nullptr) continue;
    if (!value->is_array()) {
      return BadField(field, absl::StrCat("must be an array, got ", TypeName(*value)));
    }
    if (!value->empty()) *(std::string(field) == "tools" ? tools_json : documents_json) = value->dump();
  }
  return absl::OkStatus();
}

// Chat's tools ([{"type": "function", "function": {"name", "description",
// "parameters"}}]), tool_choice and parallel_tool_calls. tools' JSON type was
// checked by TemplateInputs.
absl::Status ToolInputs(const Json& body, OpenAiRequest* out) {
  if (const Json* tools = Field(body, "tools"); tools != nullptr) {
    SG_ASSIGN_OR_RETURN(out->tools, ParseToolSpecs(*tools, "tools"));
  }
  if (const Json* choice = Field(body, "tool_choice"); choice != nullptr) {
    constexpr char kShapes[] =
        "must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", "
        "\"function\": {\"name\": ...}}, got ";
    if (choice->is_string()) {
      const std::string& value = choice->get_ref<const std::string&>();
      if (value == "none") {
        out->tool_choice = ToolChoice::kNone;
      } else if (value == "auto") {
        out->tool_choice = ToolChoice::kAuto;
      } else if (value == "required") {
        out->tool_choice = ToolChoice::kRequired;
      } else {
        return BadField("tool_choice", absl::StrCat(kShapes, choice->dump()));
      }
    } else {
      const Json* type = choice->is_object() ? Field(*choice, "type") : nullptr;
      const Json* function = choice->is_object() ? Field(*choice, "function") : nullptr;
      const Json* name = function != nullptr && function->is_object() ? Field(*function, "name")
                                                                      : nullptr;
      if (type == nullptr || *type != "function" || name == nullptr || !name->is_string()) {
        return BadField("tool_choice", absl::StrCat(kShapes, choice->dump()));
      }
      out->tool_choice = ToolChoice::kFunction;
      out->tool_choice_function = name->get<std::string>();
    }
    if (out->tool_choice == ToolChoice::kRequired && out->tools.empty()) {
      return BadField("tool_choice", "\"required\" needs tools");
    }
    if (out->tool_choice == ToolChoice::kFunction &&
        std::none_of(out->tools.begin(), out->tools.end(), [&](const ToolSpec& tool) {
          return tool.name == out->tool_choice_function;
        })) {
      return BadField("tool_choice", absl::StrCat("names the function \"", out->tool_choice_function,
                                                   "\", which is not in tools"));
    }
  }
  SG_ASSIGN_OR_RETURN(std::optional<bool> parallel, Bool(body, "parallel_tool_calls"));
  out->parallel_tool_calls = parallel.value_or(true);
  return absl::OkStatus();
}

// Fields that would change the output if silently ignored.
absl::Status Unsupported(const Json& body) {
  if (const Json* echo = Field(body, "echo"); echo != nullptr && *echo == true) {
    return BadField("echo", "is not supported");
  }
  if (const Json* best_of = Field(body, "best_of");
      best_of != nullptr && !(best_of->is_number_integer() && best_of->get<int64_t>() == 1)) {
    return BadField("best_of", "is not supported (only 1)");
  }
  if (const Json* suffix = Field(body, "suffix");
      suffix != nullptr && !(suffix->is_string() && suffix->get<std::string>().empty())) {
    return BadField("suffix", "is not supported");
  }
  return absl::OkStatus();
}

absl::Status Sampling(const Json& body, v1::GenerateRequest* request) {
  // Each field only when the body has it: unset, the model's default applies.
  SG_ASSIGN_OR_RETURN(std::optional<double> temperature, Number(body, "temperature"));
  if (temperature.has_value()) request->set_temperature(static_cast<float>(*temperature));
  // The proto reads 0 as "off" for top_p and repetition_penalty; OpenAI's 0
  // is a value the validator must refuse, not the default.
  SG_ASSIGN_OR_RETURN(std::optional<double> top_p, Number(body, "top_p"));
  // Tested as the float the proto carries: 1e-50 > 0, but as a float it is
  // the proto's 0, "off" (found by tests/fuzz/openai_request_fuzz.cc).
  if (top_p.has_value()) {
    if (!(static_cast<float>(*top_p) > 0)) {
      return BadField("top_p", absl::StrCat("must be in (0, 1], got ", *top_p));
    }
    request->set_top_p(static_cast<float>(*top_p));
  }
  SG_ASSIGN_OR_RETURN(std::optional<double> repetition, Number(body, "repetition_penalty"));
  if (repetition.has_value()) {
    if (!(static_cast<float>(*repetition) > 0)) {
      return BadField("repetition_penalty", absl::StrCat("must be in (0, 10], got ", *repetition));
    }
    request->set_repetition_penalty(static_cast<float>(*repetition));
  }
  SG_ASSIGN_OR_RETURN(std::optional<double> min_p, Number(body, "min_p"));
  if (min_p.has_value()) request->set_min_p(static_cast<float>(*min_p));
  SG_ASSIGN_OR_RETURN(std::optional<double> presence, Number(body, "presence_penalty"));
  if (presence.has_value()) request->set_presence_penalty(static_cast<float>(*presence));
  SG_ASSIGN_OR_RETURN(std::optional<double> frequency, Number(body, "frequency_penalty"));
  if (frequency.has_value()) request->set_frequency_penalty(static_cast<float>(*frequency));
  // vLLM: top_k -1 (or 0) is off.
  SG_ASSIGN_OR_RETURN(std::optional<int64_t> top_k, Integer(body, "top_k"));
  if (top_k.has_value()) {
    if (*top_k < -1) return BadField("top_k", absl::StrCat("must be -1 (off), 0 (off) or positive, got ", *top_k));
    request->set_top_k(*top_k < 0 ? 0 : ClampToUint32(*top_k));
  }
  SG_ASSIGN_OR_RETURN(std::optional<int64_t> seed, Integer(body, "seed"));
  if (seed.has_value()) {
    if (*seed < 0) return BadField("seed", absl::StrCat("must be >= 0, got ", *seed));
    request->set_seed(static_cast<uint64_t>(*seed));
  }
  return absl::OkStatus();
}

absl::Status Stops(const Json& body, v1::GenerateRequest* request) {
  if (const Json* stop = Field(body, "stop"); stop != nullptr) {
    if (stop->is_string()) {
      request->add_stop(stop->get<std::string>());
    } else if (stop->is_array()) {
      for (const Json& s : *stop) {
        if (!s.is_string()) return BadField("stop", "must be a string or an array of strings");
        request->add_stop(s.get<std::string>());
      }
    } else {
      return BadField("stop", absl::StrCat("must be a string or an array of strings, got ", TypeName(*stop)));
    }
  }
  if (const Json* ids = Field(body, "stop_token_ids"); ids != nullptr) {
    SG_RETURN_IF_ERROR(IdArray(*ids, "stop_token_ids", request->mutable_stop_token_ids()));
  }
  SG_ASSIGN_OR_RETURN(std::optional<bool> ignore_eos, Bool(body, "ignore_eos"));
  request->set_ignore_eos(ignore_eos.value_or(false));
  return absl::OkStatus();
}

absl::Status MaxTokens(const Json& body, const char* name, v1::GenerateRequest* request) {
  SG_ASSIGN_OR_RETURN(std::optional<int64_t> max_tokens, Integer(body, name));
  if (!max_tokens.has_value()) return absl::OkStatus();
  if (*max_tokens < 1) return BadField(name, absl::StrCat("must be at least 1, got ", *max_tokens));
  request->set_max_new_tokens(ClampToUint32(*max_tokens));
  return absl::OkStatus();
}

absl::Status Logprobs(OpenAiRoute route, const Json& body, OpenAiRequest* out) {
  if (route == OpenAiRoute::kCompletions) {
    // completions: logprobs is the number of alternatives (0..20).
    SG_ASSIGN_OR_RETURN(std::optional<int64_t> logprobs, Integer(body, "logprobs"));
    if (!logprobs.has_value()) return absl::OkStatus();
    if (*logprobs < 0) return BadField("logprobs", absl::StrCat("must be >= 0, got ", *logprobs));
    out->logprobs = true;
    out->request.set_top_logprobs(ClampToUint32(*logprobs));
    return absl::OkStatus();
  }
  // chat: logprobs is a boolean, top_logprobs the number of alternatives.
  SG_ASSIGN_OR_RETURN(std::optional<bool> logprobs, Bool(body, "logprobs"));
  SG_ASSIGN_OR_RETURN(std::optional<int64_t> top, Integer(body, "top_logprobs"));
  out->logprobs = logprobs.value_or(false);
  if (!top.has_value()) return absl::OkStatus();
  if (*top < 0) return BadField("top_logprobs", absl::StrCat("must be >= 0, got ", *top));
  if (!out->logprobs && *top > 0) return BadField("top_logprobs", "needs \"logprobs\": true");
  out->request.set_top_logprobs(ClampToUint32(*top));
  return absl::OkStatus();
}

// The validator's proto field names -> the route's, for messages and params.
struct FieldName {
  const char* proto;
  const char* face;  // nullptr: the route's max tokens field
};
constexpr FieldName kCompletionsNames[] = {
    {"max_new_tokens", nullptr}, {"prompt_token_ids", "prompt"}, {"top_logprobs", "logprobs"},
    {"tools_json", "tools"}, {"documents_json", "documents"}};
constexpr FieldName kChatNames[] = {
    {"max_new_tokens", nullptr}, {"tools_json", "tools"}, {"documents_json", "documents"}};
constexpr FieldName kQueryStreamNames[] = {
    {"prompt_token_ids", "query"}, {"prompt", "query"}, {"messages", "query"}};

absl::Span<const FieldName> FieldNames(OpenAiRoute route) {
  switch (route) {
    case OpenAiRoute::kCompletions:
      return kCompletionsNames;
    case OpenAiRoute::kChat:
      return kChatNames;
    case OpenAiRoute::kQueryStream:
      return kQueryStreamNames;
  }
  return {};
}

std::string OpenAiName(absl::string_view proto_field, OpenAiRoute route,
                       absl::string_view max_tokens_field) {
  for (const FieldName& name : FieldNames(route)) {
    if (proto_field == name.proto) {
      return std::string(name.face != nullptr ? absl::string_view(name.face) : max_tokens_field);
    }
  }
  return std::string(proto_field);
}

bool IsWordChar(char c) { return (c >= 'a' && c <= 'z') || c == '_' || (c >= '0' && c <= '9'); }

}  // namespace

void SetErrorParam(absl::Status* status, absl::string_view param) {
  status->SetPayload(kParamPayload, absl::Cord(param));
}

namespace {

// Whether message[at, at + length) is a whole word.
bool IsWholeWord(absl::string_view message, size_t at, size_t length) {
  size_t end = at + length;
  return (at == 0 || !IsWordChar(message[at - 1])) &&
         (end == message.size() || !IsWordChar(message[end]));
}

bool IsRequestError(const absl::Status& status) {
  return status.code() == absl::StatusCode::kInvalidArgument ||
         status.code() == absl::StatusCode::kFailedPrecondition ||
         status.code() == absl::StatusCode::kOutOfRange;
}

}  // namespace

std::string ErrorParam(const absl::Status& status, OpenAiRoute route,
                       absl::string_view max_tokens_field) {
  if (absl::optional<absl::Cord> param = status.GetPayload(kParamPayload)) {
    return std::string(*param);
  }
  if (status.code() != absl::StatusCode::kInvalidArgument &&
      status.code() != absl::StatusCode::kFailedPrecondition) {
    return "";
  }
  // Every request error names its field in a payload (engine/request_validation.h,
  // WithField); one without a field has no param.
  std::string found = FieldOf(status);
  if (found == "request_id") return "";  // the X-Request-Id header, not a body field
  return found.empty() ? "" : OpenAiName(found, route, max_tokens_field);
}

absl::Status ForHttpFace(const absl::Status& status, OpenAiRoute route,
                         absl::string_view max_tokens_field) {
  if (!IsRequestError(status) || status.GetPayload(kParamPayload).has_value()) return status;
  std::string param = ErrorParam(status, route, max_tokens_field);
  // Every whole-word proto name of the route's table, renamed.
  absl::string_view message = status.message();
  std::string renamed;
  for (size_t i = 0; i < message.size();) {
    bool replaced = false;
    if (i == 0 || !IsWordChar(message[i - 1])) {
      for (const FieldName& name : FieldNames(route)) {
        absl::string_view proto(name.proto);
        if (message.substr(i, proto.size()) == proto && IsWholeWord(message, i, proto.size())) {
          absl::StrAppend(&renamed,
                          name.face != nullptr ? absl::string_view(name.face) : max_tokens_field);
          i += proto.size();
          replaced = true;
          break;
        }
      }
    }
    if (!replaced) renamed.push_back(message[i++]);
  }
  absl::Status out(status.code(), renamed);
  status.ForEachPayload([&out](absl::string_view type_url, const absl::Cord& payload) {
    out.SetPayload(type_url, payload);
  });
  if (!param.empty()) SetErrorParam(&out, param);
  return out;
}

HttpError MakeHttpError(int status, std::string type, std::string message, std::string code,
                        std::string param) {
  HttpError error;
  error.status = status;
  error.type = std::move(type);
  error.message = std::move(message);
  error.code = std::move(code);
  error.param = std::move(param);
  return error;
}

HttpError ToHttpError(const absl::Status& status, OpenAiRoute route) {
  std::string message(status.message());
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      return MakeHttpError(400, "invalid_request_error", message, "", ErrorParam(status, route));
    case absl::StatusCode::kUnauthenticated:
      return MakeHttpError(401, "authentication_error", message, "invalid_api_key");
    case absl::StatusCode::kPermissionDenied:
      return MakeHttpError(403, "permission_error", message);
    case absl::StatusCode::kNotFound:
      return MakeHttpError(404, "invalid_request_error", message, "not_found");
    case absl::StatusCode::kResourceExhausted:
      return MakeHttpError(429, "rate_limit_error", message, "queue_full");
    case absl::StatusCode::kUnavailable: {
      HttpError error = MakeHttpError(503, "service_unavailable", message, "unavailable");
      error.retry_after_s = 1;
      return error;
    }
    case absl::StatusCode::kDeadlineExceeded:
      return MakeHttpError(504, "timeout", message);
    case absl::StatusCode::kCancelled:
      return MakeHttpError(499, "cancelled", message);
    default:
      return MakeHttpError(500, "server_error", message);
  }
}

OJson ErrorBody(const HttpError& error) {
  OJson inner;
  inner["message"] = error.message;
  inner["type"] = error.type;
  inner["param"] = error.param.empty() ? OJson() : OJson(error.param);
  inner["code"] = error.code.empty() ? OJson() : OJson(error.code);
  OJson body;
  body["error"] = std::move(inner);
  return body;
}

absl::StatusOr<OpenAiRequest> ParseOpenAiRequest(OpenAiRoute route, const Json& body) {
  if (!body.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the body must be a JSON object, got ", TypeName(body)));
  }
  OpenAiRequest out;
  out.route = route;
  v1::GenerateRequest& request = out.request;
  SG_ASSIGN_OR_RETURN(std::optional<std::string> model, String(body, "model"));
  out.model = model.value_or("");
  SG_RETURN_IF_ERROR(Unsupported(body));
  if (route == OpenAiRoute::kCompletions) {
    const Json* prompt = Field(body, "prompt");
    if (prompt == nullptr) return BadField("prompt", "is required");
    SG_RETURN_IF_ERROR(Prompt(*prompt, &request));
    // Only when given: no OpenAI default of 16 here, the model's (or the
    // server's) default applies, as for chat.
    SG_RETURN_IF_ERROR(MaxTokens(body, "max_tokens", &request));
    if (const Json* tools = Field(body, "tools"); tools != nullptr && !tools->empty()) {
      return BadField("tools", "apply to chat completions only (the chat template)");
    }
  } else if (route == OpenAiRoute::kChat) {
    const Json* messages = Field(body, "messages");
    if (messages == nullptr) return BadField("messages", "is required");
    SG_RETURN_IF_ERROR(Messages(*messages, request.mutable_messages()));
    SG_RETURN_IF_ERROR(TemplateInputs(body, request.mutable_tools_json(),
                                      request.mutable_documents_json()));
    SG_RETURN_IF_ERROR(ToolInputs(body, &out));
    SG_RETURN_IF_ERROR(MaxTokens(body, "max_completion_tokens", &request));
    if (Field(body, "max_completion_tokens") == nullptr) {
      SG_RETURN_IF_ERROR(MaxTokens(body, "max_tokens", &request));
    } else {
      out.max_tokens_field = "max_completion_tokens";
    }
  } else {
    return absl::InvalidArgumentError("ParseOpenAiRequest: not an OpenAI route");
  }
  SG_ASSIGN_OR_RETURN(std::optional<int64_t> n, Integer(body, "n"));
  if (n.has_value()) {
    // The range is the validator's (n must be in [1, 8]); negative would wrap.
    // (The proto's 0 means 1, so 0 is refused here.)
    if (*n < 1) return BadField("n", absl::StrCat("must be in [1, ", kMaxChoices, "], got ", *n));
    request.set_n(ClampToUint32(*n));
  }
  SG_ASSIGN_OR_RETURN(std::optional<bool> parse_special, Bool(body, "parse_special_tokens"));
  request.set_parse_special_tokens(parse_special.value_or(false));
  SG_RETURN_IF_ERROR(Sampling(body, &request));
  SG_RETURN_IF_ERROR(ParseLogitBias(body, &request));
  SG_RETURN_IF_ERROR(ParseConstraint(body, &request));
  SG_RETURN_IF_ERROR(Stops(body, &request));
  SG_RETURN_IF_ERROR(Logprobs(route, body, &out));
  SG_ASSIGN_OR_RETURN(std::optional<bool> stream, Bool(body, "stream"));
  out.stream = stream.value_or(false);
  if (const Json* options = Field(body, "stream_options"); options != nullptr) {
    if (!options->is_object()) {
      return BadField("stream_options", absl::StrCat("must be an object, got ", TypeName(*options)));
    }
    auto usage = options->find("include_usage");
    if (usage != options->end() && !usage->is_null()) {
      if (!usage->is_boolean()) return BadField("stream_options", "include_usage must be a boolean");
      out.include_usage = usage->get<bool>();
    }
  }
  return out;
}

absl::StatusOr<QueryStreamRequest> ParseQueryStreamRequest(const Json& body) {
  if (!body.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the body must be a JSON object, got ", TypeName(body)));
  }
  QueryStreamRequest out;
  SG_ASSIGN_OR_RETURN(std::optional<std::string> query, String(body, "query"));
  if (!query.has_value()) return BadField("query", "is required");
  if (query->empty()) return BadField("query", kEmptyQueryMessage);
  out.query = std::move(*query);
  SG_ASSIGN_OR_RETURN(std::optional<int64_t> max_new_tokens, Integer(body, "max_new_tokens"));
  if (max_new_tokens.has_value()) {
    if (*max_new_tokens < 1) {
      return BadField("max_new_tokens", absl::StrCat("must be at least 1, got ", *max_new_tokens));
    }
    out.max_new_tokens = ClampToUint32(*max_new_tokens);
  }
  return out;
}

v1::GenerateRequest ToGenerateRequest(const QueryStreamRequest& query, bool chat, uint64_t seed) {
  v1::GenerateRequest request;
  if (chat) {
    v1::ChatMessage* message = request.add_messages();
    message->set_role("user");
    message->set_content(query.query);
  } else {
    request.set_prompt(query.query);
  }
  if (query.max_new_tokens > 0) request.set_max_new_tokens(query.max_new_tokens);
  request.set_temperature(1.0f);
  request.set_top_k(50);
  request.set_top_p(1.0f);
  request.set_seed(seed);
  return request;
}

absl::StatusOr<v1::TokenizeRequest> ParseTokenizeRequest(const Json& body) {
  if (!body.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the body must be a JSON object, got ", TypeName(body)));
  }
  v1::TokenizeRequest request;
  SG_ASSIGN_OR_RETURN(std::optional<std::string> prompt, String(body, "prompt"));
  const Json* messages = Field(body, "messages");
  if (prompt.has_value() == (messages != nullptr)) {
    return BadField("prompt", "or messages: exactly one must be set");
  }
  SG_ASSIGN_OR_RETURN(std::optional<bool> parse_special, Bool(body, "parse_special_tokens"));
  request.set_parse_special_tokens(parse_special.value_or(false));
  if (prompt.has_value()) {
    request.set_text(*prompt);
    SG_ASSIGN_OR_RETURN(std::optional<bool> special, Bool(body, "add_special_tokens"));
    request.set_add_special_tokens(special.value_or(true));
    return request;
  }
  SG_RETURN_IF_ERROR(Messages(*messages, request.mutable_messages()));
  SG_RETURN_IF_ERROR(TemplateInputs(body, request.mutable_tools_json(),
                                    request.mutable_documents_json()));
  SG_ASSIGN_OR_RETURN(std::optional<bool> generation_prompt, Bool(body, "add_generation_prompt"));
  if (generation_prompt.has_value()) request.set_add_generation_prompt(*generation_prompt);
  return request;
}

absl::StatusOr<v1::TokenizeRequest> ParseApplyTemplateRequest(const Json& body) {
  if (!body.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the body must be a JSON object, got ", TypeName(body)));
  }
  const Json* messages = Field(body, "messages");
  if (messages == nullptr) return BadField("messages", "is required");
  v1::TokenizeRequest request;
  SG_RETURN_IF_ERROR(Messages(*messages, request.mutable_messages()));
  SG_RETURN_IF_ERROR(TemplateInputs(body, request.mutable_tools_json(),
                                    request.mutable_documents_json()));
  SG_ASSIGN_OR_RETURN(std::optional<bool> generation_prompt, Bool(body, "add_generation_prompt"));
  request.set_add_generation_prompt(generation_prompt.value_or(true));
  return request;
}

absl::StatusOr<std::vector<int>> ParseDetokenizeRequest(const Json& body) {
  if (!body.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the body must be a JSON object, got ", TypeName(body)));
  }
  const Json* tokens = Field(body, "tokens");
  if (tokens == nullptr) return BadField("tokens", "is required");
  google::protobuf::RepeatedField<int32_t> ids;
  SG_RETURN_IF_ERROR(IdArray(*tokens, "tokens", &ids));
  return std::vector<int>(ids.begin(), ids.end());
}

namespace {

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The UTF-16 code unit of the unicode escape at json[at] (its backslash), or
// -1 when there is none there.
int EscapedUnit(absl::string_view json, size_t at) {
  if (at + 6 > json.size() || json[at] != '\\' || json[at + 1] != 'u') return -1;
  int unit = 0;
  for (size_t k = at + 2; k < at + 6; ++k) {
    int digit = HexDigit(json[k]);
    if (digit < 0) return -1;
    unit = unit * 16 + digit;
  }
  return unit;
}

bool IsHighSurrogate(int unit) { return unit >= 0xD800 && unit <= 0xDBFF; }
bool IsLowSurrogate(int unit) { return unit >= 0xDC00 && unit <= 0xDFFF; }

}  // namespace

std::optional<std::string> ReplaceLoneSurrogates(absl::string_view json) {
  std::optional<std::string> out;
  size_t copied = 0;  // json[0, copied) is in *out
  bool in_string = false;
  for (size_t i = 0; i < json.size(); ++i) {
    const char c = json[i];
    if (!in_string) {
      in_string = c == '"';
      continue;
    }
    if (c == '"') {
      in_string = false;
      continue;
    }
    if (c != '\\') continue;
    const int unit = EscapedUnit(json, i);
    if (unit < 0) {
      ++i;  // another escape (\\, \", \n, ...): its character is not special
      continue;
    }
    if (IsHighSurrogate(unit) && IsLowSurrogate(EscapedUnit(json, i + 6))) {
      i += 11;  // a pair: kept
      continue;
    }
    if (IsHighSurrogate(unit) || IsLowSurrogate(unit)) {
      if (!out.has_value()) out.emplace().reserve(json.size());
      out->append(json.data() + copied, i - copied);
      out->append("\\uFFFD");
      copied = i + 6;
    }
    i += 5;
  }
  if (out.has_value()) out->append(json.data() + copied, json.size() - copied);
  return out;
}

}  // namespace streamgen
