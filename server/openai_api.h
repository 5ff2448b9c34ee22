// The HTTP face's wire formats, without HTTP: OpenAI's completions and chat
// completions (and vLLM's /tokenize, /detokenize, the seed's /query-stream/)
// as JSON <-> streamgen.v1 messages.
//
// Requests become a v1::GenerateRequest, so that the gRPC face's validation
// (server/validation.h, through TextGenerationService::PrepareGenerate) is the
// only one: this file checks JSON types and OpenAI's own rules (n, logprobs
// shapes), never a limit. Responses are encoded from the merged
// v1::GenerateResponse messages a ResponseStream hands out. Thread-compatible.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"
#include "streamgen/v1/generate.pb.h"

namespace streamgen {

enum class OpenAiRoute { kCompletions, kChat };

// A request error's OpenAI `param`: carried as a payload of the status.
void SetErrorParam(absl::Status* status, absl::string_view param);
// The param set with SetErrorParam, or, for the validator's messages (which
// name the proto field), the OpenAI name of the first field the message names;
// "" when none.
std::string ErrorParam(const absl::Status& status, OpenAiRoute route);

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
HttpError ToHttpError(const absl::Status& status, OpenAiRoute route = OpenAiRoute::kCompletions);
HttpError MakeHttpError(int status, std::string type, std::string message, std::string code = "",
                        std::string param = "");
// {"error": {"message", "type", "param", "code"}}
nlohmann::ordered_json ErrorBody(const HttpError& error);

// A parsed /v1/completions or /v1/chat/completions body.
struct OpenAiRequest {
  OpenAiRoute route = OpenAiRoute::kCompletions;
  v1::GenerateRequest request;  // request_id left empty
  std::string model;            // as sent; "" when absent
  bool stream = false;
  bool include_usage = false;   // stream_options.include_usage
  bool logprobs = false;        // report logprobs (top_logprobs: request.top_logprobs)
};

// Checks the JSON types and OpenAI's rules; the limits are the validator's.
// Defaults are OpenAI's: temperature 1, completions max_tokens 16; chat without
// max_tokens gets the server's default. INVALID_ARGUMENT with the param set.
absl::StatusOr<OpenAiRequest> ParseOpenAiRequest(OpenAiRoute route, const nlohmann::json& body);

// The seed's /query-stream/ body: {"query": str, "max_new_tokens": int}.
struct QueryStreamRequest {
  std::string query;
  uint32_t max_new_tokens = 0;  // 0: the server's default
};
absl::StatusOr<QueryStreamRequest> ParseQueryStreamRequest(const nlohmann::json& body);
// As a GenerateRequest: a user message when `chat` (the model has a chat
// template), else a prompt; sampled like transformers' do_sample=True
// defaults (temperature 1.0, top_k 50, top_p 1.0) with `seed`.
v1::GenerateRequest ToGenerateRequest(const QueryStreamRequest& query, bool chat, uint64_t seed);

// vLLM's /tokenize body -> TokenizeRequest ({"prompt", "add_special_tokens"}
// or {"messages", "add_generation_prompt"}).
absl::StatusOr<v1::TokenizeRequest> ParseTokenizeRequest(const nlohmann::json& body);
// vLLM's /detokenize body: {"tokens": [ids]}.
absl::StatusOr<std::vector<int>> ParseDetokenizeRequest(const nlohmann::json& body);

// The text OpenAI shows for a sentencepiece piece: "▁" -> " ", a byte piece
// "<0xNN>" -> that byte.
std::string PieceText(absl::string_view piece);

// Encodes one generation's responses. `piece(id)` gives a token's piece.
class OpenAiEncoder {
 public:
  OpenAiEncoder(const OpenAiRequest& request, std::string id, int64_t created, std::string model,
                std::function<std::string(int)> piece);
  // OpenAI's "system_fingerprint" on every chunk and body (the model's
  // fingerprint, ModelInfo.fingerprint); omitted while empty.
  void set_system_fingerprint(std::string fingerprint) { system_fingerprint_ = std::move(fingerprint); }

  // ---- streaming: server-sent events ----
  // What goes out before the first token (chat: the role chunk).
  std::string StreamStart();
  // One merged message. With `last` and `status` OK: the text chunk, the
  // finish chunk, the usage chunk (include_usage) and [DONE]; with `last` and
  // an error status: the text chunk, an error event and [DONE].
  std::string StreamMessage(const v1::GenerateResponse& message, bool last,
                            const absl::Status& status);
  // An error event and [DONE] (the stream ends without a final message).
  std::string StreamError(const absl::Status& status);

  // ---- not streaming: one JSON body ----
  void Accumulate(const v1::GenerateResponse& message);
  nlohmann::ordered_json Body() const;

 private:
  // id, object, created, model.
  nlohmann::ordered_json Envelope(const char* object) const;
  nlohmann::ordered_json Chunk() const;  // Envelope of a stream chunk
  // One SSE event with one choice: chat puts `chat_delta` in "delta",
  // completions put `text` in "text".
  std::string ChoiceEvent(nlohmann::ordered_json chat_delta, std::string text,
                          nlohmann::ordered_json logprobs,
                          nlohmann::ordered_json finish_reason) const;
  // The last message's usage and finish reason.
  void TakeUsage(const v1::GenerateResponse& last);
  nlohmann::ordered_json Logprobs(const v1::GenerateResponse& message);  // this message's tokens
  nlohmann::ordered_json Usage() const;
  static std::string Event(const nlohmann::ordered_json& json);

  const OpenAiRequest& request_;
  std::string system_fingerprint_;
  const std::string id_;
  const int64_t created_;
  const std::string model_;
  const std::function<std::string(int)> piece_;
  // The proto's uint32 counts; int64 so that their sum cannot overflow (as
  // int, counts above 2^31 came out negative; found by fuzzing).
  int64_t prompt_tokens_ = 0;
  int64_t completion_tokens_ = 0;
  int text_offset_ = 0;  // completions' logprobs.text_offset
  std::string finish_reason_;
  // Non-streaming accumulation.
  std::string text_;
  nlohmann::ordered_json logprobs_;
};

// OpenAI's finish_reason: "stop" (EOS, stop string, stop id), "length"; "" otherwise.
std::string OpenAiFinishReason(v1::FinishReason reason);

// JSON text with invalid UTF-8 replaced (a token's bytes may be half a character).
std::string DumpJson(const nlohmann::ordered_json& json);

}  // namespace streamgen
