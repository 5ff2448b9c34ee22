// The HTTP face's wire formats, without HTTP: OpenAI's completions and chat
// completions (and vLLM's /tokenize, /detokenize, the seed's /query-stream/)
// as JSON <-> streamgen.v1 messages.
//
// Requests become a v1::GenerateRequest, so that the one validation
// (server/validation.h, through Frontend::PrepareGenerate) is the
// only one: this file checks JSON types and OpenAI's own rules (n, logprobs
// shapes), never a limit. Responses are encoded from the merged
// v1::GenerateResponse messages a ResponseStream hands out
// (server/openai_encoder.h). Thread-compatible.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/text/tool_calls.h"
#include "nlohmann/json.hpp"
#include "streamgen/v1/generate.pb.h"

namespace streamgen {

// The HTTP face's generation routes: OpenAI's two, and the seed's
// /query-stream/ (whose only fields are "query" and "max_new_tokens").
enum class OpenAiRoute { kCompletions, kChat, kQueryStream };

// A request error's OpenAI `param`: carried as a payload of the status.
void SetErrorParam(absl::Status* status, absl::string_view param);

// JSON helpers of the OpenAI request parsers (openai_api.cc,
// openai_structured.cc), one copy for both. Thread-safe.
namespace openai_json {
// "a string", "a boolean", "a number", "an array", "an object" or "null", for messages.
const char* TypeName(const nlohmann::ordered_json& value);
// The field's value, or nullptr when it is absent or null (OpenAI's clients
// send null for unset fields).
const nlohmann::ordered_json* Field(const nlohmann::ordered_json& body, const char* name);
// INVALID_ARGUMENT "<path> <message>" with OpenAI's param `param`: an error
// inside a field (`path` "messages[2].content" is what the message names).
absl::Status BadPath(absl::string_view param, absl::string_view path, absl::string_view message);
}  // namespace openai_json
// The param set with SetErrorParam, or the route's name of the proto field
// the status carries as its payload (engine/request_validation.h FieldOf;
// "max_new_tokens" -> `max_tokens_field`); "" when it carries neither.
std::string ErrorParam(const absl::Status& status, OpenAiRoute route,
                       absl::string_view max_tokens_field = "max_tokens");

// A refusal of the shared validator (or the engine), whose messages name the
// proto's fields, as the HTTP face answers it: each proto field name the
// message holds becomes the route's own (a table in openai_api.cc:
// max_new_tokens -> `max_tokens_field`, completions' prompt_token_ids ->
// prompt and top_logprobs -> logprobs, /query-stream/'s prompt and messages
// -> query), and the param is set to the route's name of the field at fault
// (max_tokens for "the prompt (..) + max_new_tokens (..) exceeds the model's
// context length"). A status that already has a param (the face's own
// messages), or is not a request error, comes back unchanged.
absl::Status ForHttpFace(const absl::Status& status, OpenAiRoute route,
                         absl::string_view max_tokens_field = "max_tokens");

// An error as the HTTP face answers it.
struct HttpError {
  int status = 500;
  std::string type;     // "invalid_request_error", ...
  std::string message;
  std::string param;    // "" -> null
  std::string code;     // "" -> null
  int retry_after_s = 0;  // > 0: a Retry-After header
};
// absl::Status -> HttpError: INVALID_ARGUMENT and FAILED_PRECONDITION 400,
// UNAUTHENTICATED 401, NOT_FOUND 404, RESOURCE_EXHAUSTED 429, UNAVAILABLE 503
// (Retry-After 1), anything else 500.
// The message is the status's own (ForHttpFace renames the validator's fields).
HttpError ToHttpError(const absl::Status& status, OpenAiRoute route = OpenAiRoute::kCompletions);
HttpError MakeHttpError(int status, std::string type, std::string message, std::string code = "",
                        std::string param = "");
// {"error": {"message", "type", "param", "code"}}
nlohmann::ordered_json ErrorBody(const HttpError& error);

// OpenAI's tool_choice: "auto" (the default), "none", "required", or
// {"type": "function", "function": {"name": ...}} (kFunction).
enum class ToolChoice { kAuto, kNone, kRequired, kFunction };

// A parsed /v1/completions or /v1/chat/completions body.
struct OpenAiRequest {
  OpenAiRoute route = OpenAiRoute::kCompletions;
  v1::GenerateRequest request;  // request_id left empty
  std::string model;            // as sent; "" when absent
  bool stream = false;
  bool include_usage = false;   // stream_options.include_usage
  bool logprobs = false;        // report logprobs (top_logprobs: request.top_logprobs)
  // The body's name for request.max_new_tokens: "max_tokens", or chat's
  // "max_completion_tokens" when that was sent (what messages and params say).
  std::string max_tokens_field = "max_tokens";

  // ---- chat's tools (server/tool_calls.h); they reach the template as request.tools_json ----
  std::vector<ToolSpec> tools;
  ToolChoice tool_choice = ToolChoice::kAuto;
  std::string tool_choice_function;  // kFunction: the function's name (one of tools)
  bool parallel_tool_calls = true;
  // Set by PrepareToolCalls for the model that serves the request: the format
  // the output is parsed in (kNone: the output is content, not parsed), the
  // stop strings then applied to content only, whether the engine applies
  // request.stop (false: the face takes them out of the engine's request once
  // the validator has checked them), and for tool_choice required / a
  // function the grammar the output must match.
  ToolCallFormat tool_format = ToolCallFormat::kNone;
  std::vector<std::string> content_stop;
  bool engine_stops = true;
  std::string tool_grammar;
};

// Checks the JSON types and OpenAI's rules; the limits are the validator's.
// A sampling field (temperature, top_p, top_k, min_p, repetition_penalty) and
// max_tokens are set in the proto only when the body has them (null is
// absent): unset, they take the model's defaults (its generation_config.json)
// and the server's default max tokens downstream. INVALID_ARGUMENT with the
// param set.
//
// completions' prompt: a string, an array of token ids, or (as OpenAI's batch
// form, which LangChain sends) an array of one string or of one token-id
// array; two or more prompts are refused by name, as is an empty prompt
// (kEmptyPromptMessage).
absl::StatusOr<OpenAiRequest> ParseOpenAiRequest(OpenAiRoute route, const nlohmann::ordered_json& body);

// What every face answers for an empty prompt (after the field's name).
inline constexpr char kEmptyPromptMessage[] =
    "is empty: send at least one character or the prompt as token ids";
// /query-stream/'s: its body has no token-id form.
inline constexpr char kEmptyQueryMessage[] = "is empty: send at least one character";

// The seed's /query-stream/ body: {"query": str, "max_new_tokens": int}.
struct QueryStreamRequest {
  std::string query;            // never empty (refused by name)
  uint32_t max_new_tokens = 0;  // 0: absent (the server's default)
};
absl::StatusOr<QueryStreamRequest> ParseQueryStreamRequest(const nlohmann::ordered_json& body);
// As a GenerateRequest: a user message when `chat` (the model has a chat
// template), else a prompt; sampled like transformers' do_sample=True
// defaults (temperature 1.0, top_k 50, top_p 1.0) with `seed`;
// max_new_tokens set only when the body had it.
v1::GenerateRequest ToGenerateRequest(const QueryStreamRequest& query, bool chat, uint64_t seed);

// `json` with each unicode escape (a backslash, "u" and four hex digits) that
// is a lone UTF-16 surrogate (a high one not followed by a low one, or a low
// one alone) replaced by the escape of U+FFFD, inside strings only, an escaped
// backslash respected; a valid pair is kept. nullopt when there is none (the
// text parses as it is). JavaScript's JSON.stringify sends a lone surrogate
// (a string cut between the halves of an emoji) as such an escape, as Python's
// json.dumps does for a str holding one; nlohmann::ordered_json refuses it ("invalid
// string: surrogate U+DC00..U+DFFF must follow U+D800..U+DBFF"). The face
// takes it as U+FFFD instead, as WHATWG's TextEncoder encodes it.
std::optional<std::string> ReplaceLoneSurrogates(absl::string_view json);

// vLLM's /tokenize body -> TokenizeRequest ({"prompt", "add_special_tokens"}
// or {"messages", "add_generation_prompt", "tools", "documents"}; either with
// "parse_special_tokens").
absl::StatusOr<v1::TokenizeRequest> ParseTokenizeRequest(const nlohmann::ordered_json& body);
// llama.cpp's /apply-template body: {"messages", "add_generation_prompt"
// (default true), "tools", "documents"} -> TokenizeRequest (messages).
absl::StatusOr<v1::TokenizeRequest> ParseApplyTemplateRequest(const nlohmann::ordered_json& body);
// vLLM's /detokenize body: {"tokens": [ids]}.
absl::StatusOr<std::vector<int>> ParseDetokenizeRequest(const nlohmann::ordered_json& body);

}  // namespace streamgen
