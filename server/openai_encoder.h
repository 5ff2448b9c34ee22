// The HTTP face's response half: OpenAI's completions and chat completions
// (streamed as server-sent events, or one JSON body) encoded from the merged
// v1::GenerateResponse messages a ResponseStream hands out. The request half
// (parsing, errors) is server/openai_api.h. Thread-compatible.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"
#include "server/openai_api.h"
#include "server/tool_calls.h"
#include "streamgen/v1/generate.pb.h"

namespace streamgen {

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
  // The choice this encoder writes (`index` of its choices; n > 1). Default 0.
  void set_index(int index) { index_ = index; }
  // {"prompt_tokens", "completion_tokens", "total_tokens"}.
  static nlohmann::ordered_json UsageOf(int64_t prompt_tokens, int64_t completion_tokens);

  // The prompt's token count, for the usage of an output the face ended
  // itself (finished()); the engine's last message reports it otherwise.
  void set_prompt_tokens(int64_t count) { prompt_tokens_ = count; }

  // Tools (request.tool_format set): the output is parsed into content and
  // calls (engine/text/tool_calls.h), streamed as OpenAI's delta.tool_calls,
  // listed as message.tool_calls (content null when there is none), and
  // finish_reason is "tool_calls" when the output made calls and ended by
  // EOS or a stop. A stop string in content (request.content_stop) ends the
  // output here: finished() turns true, the finish (and usage, counting the
  // tokens seen) is encoded at once, and the caller ends the generation.
  bool finished() const { return finished_; }

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

  // The pieces of StreamMessage, for several choices (OpenAiChoicesEncoder):
  // a choice's text chunk and, when `done` (its last message) and `finish`,
  // its finish chunk; then, once for the stream, the usage chunk
  // (include_usage, with these counts) and [DONE].
  std::string StreamChoice(const v1::GenerateResponse& message, bool done, bool finish);
  std::string StreamEnd(int64_t prompt_tokens, int64_t completion_tokens);

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
  // The tool parser's events for `message` (and the end's, with `last`).
  std::vector<ToolCallEvent> ToolEvents(const v1::GenerateResponse& message, bool last);

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
  int index_ = 0;
  std::deque<PendingToken> pending_;  // tokens not listed yet
  int64_t token_bytes_ = 0;           // bytes covered by the tokens so far
  std::string utf8_tail_;             // their unfinished last character
  int64_t text_bytes_ = 0;            // bytes of text returned so far
  std::string finish_reason_;
  // Tools: the parser (null: the output is not parsed), the calls so far,
  // the tokens seen, and whether the face ended the output.
  std::unique_ptr<ToolCallParser> tool_parser_;
  std::vector<ParsedToolCall> tool_calls_;
  int64_t tokens_seen_ = 0;
  bool finished_ = false;
  // Non-streaming accumulation.
  std::string text_;
  nlohmann::ordered_json logprobs_;
};

// OpenAI's finish_reason: "stop" (EOS, stop string, stop id), "length"; "" otherwise.
std::string OpenAiFinishReason(v1::FinishReason reason);

// JSON text with invalid UTF-8 replaced (a token's bytes may be half a character).
std::string DumpJson(const nlohmann::ordered_json& json);

}  // namespace streamgen
