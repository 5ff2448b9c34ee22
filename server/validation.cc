#include "server/validation.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"

namespace streamgen {
namespace {

std::vector<int> Ids(const google::protobuf::RepeatedField<int32_t>& ids) {
  return std::vector<int>(ids.begin(), ids.end());
}

}  // namespace

int RequestLimits::EffectiveMaxPromptTokens() const {
  int context_bound = std::max(0, context_length - 1);
  return max_prompt_tokens > 0 ? std::min(max_prompt_tokens, context_bound) : context_bound;
}

absl::Status ConvertSampling(const v1::GenerateRequest& request, const RequestLimits& limits,
                             GenerationRequest* out) {
  // The wire's conventions only (0 means "off" for top_p and
  // repetition_penalty; top_k beyond the vocabulary keeps everything); the
  // ranges are the one validator's (engine/request_validation.h).
  SamplingParams& s = out->sampling;
  s.temperature = request.temperature();
  s.top_p = request.top_p() == 0.0f ? 1.0f : request.top_p();
  s.min_p = request.min_p();
  s.repetition_penalty = request.repetition_penalty() == 0.0f ? 1.0f : request.repetition_penalty();
  s.presence_penalty = request.presence_penalty();
  s.frequency_penalty = request.frequency_penalty();
  s.top_k = static_cast<int>(
      std::min<uint64_t>(request.top_k(), static_cast<uint64_t>(std::max(limits.vocab_size, 0))));
  if (request.has_seed()) s.seed = request.seed();
  out->top_logprobs = static_cast<int>(std::min<uint32_t>(request.top_logprobs(), 1u << 30));
  // Unset (no presence on the wire): the engine takes the model's
  // generation_config.json value (engine/generation_defaults.h).
  out->unset.temperature = !request.has_temperature();
  out->unset.top_k = !request.has_top_k();
  out->unset.top_p = !request.has_top_p();
  out->unset.min_p = !request.has_min_p();
  out->unset.repetition_penalty = !request.has_repetition_penalty();
  SG_RETURN_IF_ERROR(ValidateSampling(s, out->top_logprobs));
  // In id order: a map's order is unspecified, and the sampler's result must
  // not depend on it.
  s.logit_bias.assign(request.logit_bias().begin(), request.logit_bias().end());
  std::sort(s.logit_bias.begin(), s.logit_bias.end());
  return ValidateLogitBias(s.logit_bias, limits.vocab_size);
}

absl::Status ConvertConstraint(const v1::GenerateRequest& request, GenerationRequest* out) {
  ConstraintSpec& c = out->constraint;
  switch (request.constraint_case()) {
    case v1::GenerateRequest::CONSTRAINT_NOT_SET:
      return absl::OkStatus();
    case v1::GenerateRequest::kJsonSchema:
      c.kind = ConstraintSpec::Kind::kJsonSchema;
      c.text = request.json_schema();
      break;
    case v1::GenerateRequest::kJsonObject:
      if (request.json_object()) c.kind = ConstraintSpec::Kind::kJsonObject;
      break;
    case v1::GenerateRequest::kRegex:
      c.kind = ConstraintSpec::Kind::kRegex;
      c.text = request.regex();
      break;
    case v1::GenerateRequest::kGrammar:
      c.kind = ConstraintSpec::Kind::kGrammar;
      c.text = request.grammar();
      break;
    case v1::GenerateRequest::kChoice:
      c.kind = ConstraintSpec::Kind::kChoice;
      c.choices.assign(request.choice().choices().begin(), request.choice().choices().end());
      break;
  }
  return ValidateConstraintShape(c);
}

absl::Status ConvertStops(const v1::GenerateRequest& request, const RequestLimits& limits,
                          GenerationRequest* out) {
  out->stop.assign(request.stop().begin(), request.stop().end());
  out->stop_token_ids = Ids(request.stop_token_ids());
  out->ignore_eos = request.ignore_eos();
  return ValidateStops(
      out->stop, out->stop_token_ids,
      StopLimits{limits.vocab_size, limits.max_stop_strings, limits.max_stop_string_bytes});
}

absl::StatusOr<std::vector<ChatMessage>> ConvertMessages(
    const google::protobuf::RepeatedPtrField<v1::ChatMessage>& messages,
    const RequestLimits& limits) {
  if (messages.size() > limits.max_messages) {
    return InvalidField("messages",
                        absl::StrCat("messages has ", messages.size(), " entries; at most ",
                                     limits.max_messages, " are allowed"));
  }
  std::vector<ChatMessage> out;
  out.reserve(messages.size());
  for (int i = 0; i < messages.size(); ++i) {
    const v1::ChatMessage& m = messages[i];
    std::string where = absl::StrCat("messages[", i, "]");
    if (m.role().empty()) return InvalidField("messages", absl::StrCat(where, ".role is empty"));
    static const char* const kRoles[] = {"system", "developer", "user", "assistant", "tool"};
    if (std::none_of(std::begin(kRoles), std::end(kRoles),
                     [&](const char* r) { return m.role() == r; })) {
      return InvalidField(
          "messages", absl::StrCat(where, ".role \"", m.role(),
                                   "\" is not one of system, developer, user, assistant, tool"));
    }
    ChatMessage message{m.role(), m.content()};
    if (m.content_parts_size() > 0) {
      if (!m.content().empty()) {
        return InvalidField("messages", absl::StrCat(where,
                                                     ": set one of content and "
                                                     "content_parts, not both"));
      }
      for (int j = 0; j < m.content_parts_size(); ++j) {
        const v1::ContentPart& part = m.content_parts(j);
        if (part.type() != "text") {
          return InvalidField("messages",
                              absl::StrCat(where, ".content_parts[", j, "].type \"", part.type(),
                                           "\" is not supported (only \"text\")"));
        }
        message.content += part.text();
      }
    }
    message.name = m.name();
    message.tool_call_id = m.tool_call_id();
    if (m.tool_calls_size() > 0) {
      nlohmann::ordered_json calls = nlohmann::ordered_json::array();
      for (int j = 0; j < m.tool_calls_size(); ++j) {
        const v1::ToolCall& call = m.tool_calls(j);
        std::string type = call.type().empty() ? "function" : call.type();
        if (type != "function") {
          return InvalidField("messages", absl::StrCat(where, ".tool_calls[", j, "].type \"", type,
                                                       "\" is not supported (only \"function\")"));
        }
        if (call.function().name().empty()) {
          return InvalidField("messages",
                              absl::StrCat(where, ".tool_calls[", j, "].function.name is empty"));
        }
        nlohmann::ordered_json entry = nlohmann::ordered_json::object();
        if (!call.id().empty()) entry["id"] = call.id();
        entry["type"] = type;
        entry["function"] = {{"name", call.function().name()},
                             {"arguments", call.function().arguments()}};
        calls.push_back(std::move(entry));
      }
      message.tool_calls_json = calls.dump();
      message.content_null = message.content.empty();
    }
    out.push_back(std::move(message));
  }
  return out;
}

absl::StatusOr<ChatRenderOptions> ConvertRenderOptions(const std::string& tools_json,
                                                       const std::string& documents_json,
                                                       bool parse_special_tokens,
                                                       bool add_generation_prompt) {
  ChatRenderOptions options;
  for (const auto& [field, text] :
       {std::pair<const char*, const std::string*>{"tools_json", &tools_json},
        {"documents_json", &documents_json}}) {
    if (text->empty()) continue;
    nlohmann::ordered_json value = nlohmann::ordered_json::parse(*text, nullptr, false);
    if (value.is_discarded() || !value.is_array()) {
      return InvalidField(
          field, absl::StrCat(field, " must be a JSON array (as text), got ",
                              value.is_discarded() ? "text that is not JSON" : value.type_name()));
    }
  }
  options.tools_json = tools_json;
  options.documents_json = documents_json;
  options.parse_special_tokens = parse_special_tokens;
  options.add_generation_prompt = add_generation_prompt;
  return options;
}

absl::StatusOr<std::vector<int>> EncodePrompt(const v1::GenerateRequest& request,
                                              const RequestLimits& limits,
                                              const PromptEncoder& encoder) {
  std::vector<std::string> set;
  if (!request.prompt().empty()) set.push_back("prompt");
  if (request.prompt_token_ids_size() > 0) set.push_back("prompt_token_ids");
  if (request.messages_size() > 0) set.push_back("messages");
  if (set.size() != 1) {
    return InvalidField(
        "prompt",
        absl::StrCat(
            "exactly one of prompt, prompt_token_ids, messages must be set; ",
            set.empty()
                ? "none is (an empty prompt is the same as none in proto3: send at least one "
                  "character or use prompt_token_ids)"
                : absl::StrCat("got ", absl::StrJoin(set, " and "))));
  }
  const std::string& field = set[0];
  std::vector<int> ids;
  if (field != "messages" && (!request.tools_json().empty() || !request.documents_json().empty())) {
    const char* which = request.tools_json().empty() ? "documents_json" : "tools_json";
    return InvalidField(which,
                        absl::StrCat(which, " applies to messages only (the chat template)"));
  }
  if (field == "prompt") {
    ids = encoder.tokenize(request.prompt(), request.parse_special_tokens());
  } else if (field == "prompt_token_ids") {
    ids = Ids(request.prompt_token_ids());
    SG_RETURN_IF_ERROR(ValidateIds(ids, "prompt_token_ids", limits.vocab_size));
  } else {
    SG_ASSIGN_OR_RETURN(std::vector<ChatMessage> messages,
                        ConvertMessages(request.messages(), limits));
    if (!encoder.render_chat) {
      return WithField(
          absl::FailedPreconditionError(
              "messages: this model has no chat template of a known family (llama2, mistral, "
              "chatml); send prompt or prompt_token_ids, or start the server with "
              "--chat-template"),
          "messages");
    }
    SG_ASSIGN_OR_RETURN(ChatRenderOptions options,
                        ConvertRenderOptions(request.tools_json(), request.documents_json(),
                                             request.parse_special_tokens(),
                                             /*add_generation_prompt=*/true));
    // The template's own errors (raise_exception, roles, parts) are about messages.
    absl::StatusOr<std::vector<int>> rendered = encoder.render_chat(messages, options);
    if (!rendered.ok()) {
      return FieldOf(rendered.status()).empty() ? WithField(rendered.status(), "messages")
                                                : rendered.status();
    }
    ids = *std::move(rendered);
  }
  if (ids.empty()) {
    return InvalidField(field, absl::StrCat(field, " encodes to no tokens"));
  }
  int max_prompt = limits.EffectiveMaxPromptTokens();
  if (static_cast<int>(ids.size()) > max_prompt) {
    return InvalidField(
        field,
        absl::StrCat(field, " is ", ids.size(), " tokens; at most ", max_prompt,
                     " are allowed (the model's context length is ", limits.context_length, ")"));
  }
  return ids;
}

absl::StatusOr<int> ResolveMaxNewTokens(uint32_t requested, int prompt_tokens,
                                        const RequestLimits& limits) {
  int room = limits.context_length - prompt_tokens;
  if (requested == 0) return std::max(0, std::min(limits.default_max_new_tokens, room));
  if (requested > static_cast<uint32_t>(limits.max_new_tokens_limit)) {
    return InvalidField("max_new_tokens",
                        absl::StrCat("max_new_tokens ", requested, " exceeds the server's limit ",
                                     limits.max_new_tokens_limit));
  }
  if (static_cast<int64_t>(requested) > room) {
    return InvalidField(
        "max_new_tokens",
        absl::StrCat("the prompt (", prompt_tokens, " tokens) + max_new_tokens (", requested,
                     ") exceeds the model's context length ", limits.context_length));
  }
  return static_cast<int>(requested);
}

absl::StatusOr<GenerationRequest> ToGenerationRequest(const v1::GenerateRequest& request,
                                                      const RequestLimits& limits,
                                                      const PromptEncoder& encoder) {
  if (request.request_id().size() > static_cast<size_t>(kMaxRequestIdBytes)) {
    return InvalidField("request_id",
                        absl::StrCat("request_id is ", request.request_id().size(),
                                     " bytes; at most ", kMaxRequestIdBytes, " are allowed"));
  }
  // First: on another model every other check would answer the wrong question.
  if (!request.model_fingerprint().empty() &&
      request.model_fingerprint() != limits.model_fingerprint) {
    return WithField(
        absl::FailedPreconditionError(absl::StrCat(
            "model_fingerprint: the request is for model ", request.model_fingerprint(),
            " but this server runs ", limits.model_fingerprint,
            ": a stream cannot be resumed on another model")),
        "model_fingerprint");
  }
  GenerationRequest out;
  out.request_id = request.request_id();
  out.model_fingerprint = request.model_fingerprint();
  // The engine checks them (vocabulary, EOS / stop ids and strings within
  // them, max_new_tokens, the seed) with the tokenizer at hand.
  out.resume_token_ids.assign(request.resume_token_ids().begin(), request.resume_token_ids().end());
  SG_RETURN_IF_ERROR(ConvertSampling(request, limits, &out));
  SG_RETURN_IF_ERROR(ConvertStops(request, limits, &out));
  SG_RETURN_IF_ERROR(ConvertConstraint(request, &out));
  SG_ASSIGN_OR_RETURN(out.prompt_token_ids, EncodePrompt(request, limits, encoder));
  SG_ASSIGN_OR_RETURN(out.max_new_tokens,
                      ResolveMaxNewTokens(request.max_new_tokens(),
                                          static_cast<int>(out.prompt_token_ids.size()), limits));
  return out;
}

}  // namespace streamgen
