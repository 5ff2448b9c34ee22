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
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"
#include "streamgen/v1/generate.pb.h"

namespace streamgen {

// The HTTP face's generation routes: OpenAI's two, and the seed's
// /query-stream/ (whose only fields are "query" and "max_new_tokens").
enum class OpenAiRoute { kCompletions, kChat, kQueryStream };

// A request error's OpenAI `param`: carried as a payload of the status.
void SetErrorParam(absl::Status* status, absl::string_view param);
// The param set with SetErrorParam, or, for the validator's messages (which
// name the proto field), the route's name of the first field the message
// names ("max_new_tokens" -> `max_tokens_field`); "" when none.
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
absl::StatusOr<OpenAiRequest> ParseOpenAiRequest(OpenAiRoute route, const nlohmann::json& body);

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
absl::StatusOr<QueryStreamRequest> ParseQueryStreamRequest(const nlohmann::json& body);
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
// json.dumps does for a str holding one; nlohmann::json refuses it ("invalid
// string: surrogate U+DC00..U+DFFF must follow U+D800..U+DBFF"). The face
// takes it as U+FFFD instead, as WHATWG's TextEncoder encodes it.
std::optional<std::string> ReplaceLoneSurrogates(absl::string_view json);

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
  // Whether a token's text never appears in the output (control tokens: BOS,
  // EOS, <|im_end|>, ...): it then covers no bytes of the text (logprobs'
  // rule below). Unset: every token covers its piece's text.
  void set_hidden_token(std::function<bool(int)> hidden) { hidden_ = std::move(hidden); }

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

  // Logprobs list the tokens of the text returned, so that their texts join to
  // it: each token covers the bytes of its text (PieceText, as UTF-8 decodes
  // it: a byte piece that makes no character is U+FFFD; none for a hidden
  // token) laid end to end from the start of the output, and is listed once
  // the returned text reaches into it (the engine sends a token before the
  // text it covers while that text could still be the start of a stop string,
  // or half a character). When the output ends with EOS or a stop (string or
  // token id), the tokens the returned text never reached lie entirely in the
  // text withheld (the stop string, the ending token's own text) and are not
  // listed; a token that straddles the stop string's start is (its text goes
  // on into the stop string). Any other ending lists every token.

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
  struct PendingToken {
    v1::Token token;
    std::string text;   // PieceText
    int64_t start = 0;  // the byte of the output where its text starts
  };
  // Takes `message`'s text and tokens; returns the tokens to list now (see
  // above). `last`: the message ends the output.
  std::vector<PendingToken> ListedTokens(const v1::GenerateResponse& message, bool last);
  // Adds a token's text to the bytes the tokens cover, as the engine decodes
  // them: a byte that ends up in no character is one U+FFFD (3 bytes).
  void CoverBytes(absl::string_view bytes);
  nlohmann::ordered_json Logprobs(const std::vector<PendingToken>& tokens) const;
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
  std::function<bool(int)> hidden_;
  std::deque<PendingToken> pending_;  // tokens not listed yet
  int64_t token_bytes_ = 0;           // bytes covered by the tokens so far
  std::string utf8_tail_;             // their unfinished last character
  int64_t text_bytes_ = 0;            // bytes of text returned so far
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
