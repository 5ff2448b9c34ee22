// Fuzz target: server/openai_api.cc's OpenAiEncoder, the SSE and JSON bodies
// of completions and chat completions, over arbitrary response messages
// (texts, token ids, logprobs including NaN and infinities, finish reasons,
// usage counts, a final error status) and arbitrary token pieces.
//
// Input: byte 0: flags (bit 0 chat, bit 1 include_usage, bit 2 logprobs,
// bit 3 a system fingerprint); byte 1: the number of messages (mod 6, + 1);
// per message a text (length byte, bytes), a token count (mod 8), per token
// an id (16 bits, signed), a logprob (32 bits) and alternatives (mod 3, each
// id and logprob); then the last message's finish reason byte, prompt and
// completion counts (32 bits each), a status byte (0: OK, else the code) and
// the status message (length byte, bytes). Pieces: ids 3..258 are the byte
// pieces <0x00>..<0xFF>, a few odd pieces, and "" for ids beyond.
//
// Properties: the stream is a sequence of "data: <JSON>\n\n" events that
// parse as JSON, ending with exactly one "data: [DONE]\n\n"; an error ends it
// with an "error" event; the streamed text (delta.content or text) and the
// body's text are the messages' texts (when each is valid UTF-8, as the
// engine's are; replaced otherwise, and still JSON); usage is the last message's counts, with
// total_tokens their sum; logprobs list one entry per token with its bytes.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/openai_api.h"
#include "server/openai_encoder.h"
#include "tests/fuzz/fuzz_util.h"

namespace streamgen {
namespace {

using Json = nlohmann::json;

std::string Piece(int id) {
  static const char* const kOdd[] = {"\u2581the", "\u2581", "<0xZZ>", "<0x0", "\xff\xfe",
                                     "\u2581\u2581a", "<s>", "</s>", "<0xf0>", ""};
  if (id >= 3 && id < 259) {
    char piece[8];
    std::snprintf(piece, sizeof(piece), "<0x%02X>", id - 3);
    return piece;
  }
  if (id >= 259 && id < 259 + static_cast<int>(sizeof(kOdd) / sizeof(kOdd[0]))) return kOdd[id - 259];
  return id == 0 ? "<unk>" : "";
}

float FloatFromBits(uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

// Splits SSE output into its events' payloads; every event is "data: X\n\n".
std::vector<std::string> Events(const std::string& sse) {
  std::vector<std::string> events;
  size_t at = 0;
  while (at < sse.size()) {
    FUZZ_CHECK(sse.compare(at, 6, "data: ") == 0, "an event not starting with 'data: '");
    const size_t end = sse.find("\n\n", at);
    FUZZ_CHECK(end != std::string::npos, "an event without its blank line");
    const std::string payload = sse.substr(at + 6, end - at - 6);
    FUZZ_CHECK(payload.find('\n') == std::string::npos, "a newline inside an event's data");
    events.push_back(payload);
    at = end + 2;
  }
  return events;
}

}  // namespace
}  // namespace streamgen

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace streamgen;
  fuzz::Input in(data, size);
  const uint8_t flags = in.Byte();
  OpenAiRequest request;
  request.route = flags & 1 ? OpenAiRoute::kChat : OpenAiRoute::kCompletions;
  request.include_usage = flags & 2;
  request.logprobs = flags & 4;
  request.stream = true;
  const bool chat = request.route == OpenAiRoute::kChat;

  std::vector<v1::GenerateResponse> messages(1 + in.Byte() % 6);
  std::string all_text;
  size_t all_tokens = 0;
  for (v1::GenerateResponse& message : messages) {
    message.set_text(in.ShortString());
    all_text += message.text();
    const int tokens = in.Byte() % 8;
    for (int t = 0; t < tokens; ++t) {
      v1::Token* token = message.add_tokens();
      token->set_id(static_cast<int16_t>(in.U16()));
      token->set_logprob(FloatFromBits(in.U32()));
      const int alternatives = in.Byte() % 3;
      for (int a = 0; a < alternatives; ++a) {
        v1::TokenLogprob* alt = token->add_top_logprobs();
        alt->set_id(static_cast<int16_t>(in.U16()));
        alt->set_logprob(FloatFromBits(in.U32()));
      }
      ++all_tokens;
    }
  }
  v1::GenerateResponse& last = messages.back();
  // The last message always carries a finish reason (LENGTH .. ERROR).
  last.set_finish_reason(static_cast<v1::FinishReason>(1 + in.Byte() % 5));
  last.mutable_usage()->set_prompt_tokens(in.U32());
  last.mutable_usage()->set_completion_tokens(in.U32());
  const uint8_t code = in.Byte() % 17;
  const absl::Status status(static_cast<absl::StatusCode>(code), in.ShortString());
  // The engine's texts never end inside a character (request.h, TokenEvent):
  // only then must the JSON carry them unchanged.
  bool valid_text = true;
  for (const v1::GenerateResponse& message : messages) {
    valid_text = valid_text && fuzz::IsValidUtf8(message.text());
  }

  // ---- streaming ----
  OpenAiEncoder stream(request, "cmpl-fuzz", 1700000000, "demo-brown", Piece);
  if (flags & 8) stream.set_system_fingerprint("fp-0123");
  std::string sse = stream.StreamStart();
  FUZZ_CHECK(chat != sse.empty(), "StreamStart: %s", sse.c_str());
  for (size_t i = 0; i < messages.size(); ++i) {
    const bool is_last = i + 1 == messages.size();
    const std::string out = stream.StreamMessage(messages[i], is_last, is_last ? status : absl::OkStatus());
    if (!is_last) {
      for (const std::string& event : Events(out)) FUZZ_CHECK(event != "[DONE]", "[DONE] before the end");
    }
    sse += out;
  }
  const std::vector<std::string> events = Events(sse);
  FUZZ_CHECK(!events.empty() && events.back() == "[DONE]", "the stream does not end with [DONE]");
  std::string streamed_text;
  bool saw_error = false, saw_usage = false;
  size_t logprob_entries = 0;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    // Not const: operator[] of a const json asserts that the key exists.
    Json event = Json::parse(events[i], nullptr, /*allow_exceptions=*/false);
    FUZZ_CHECK(!event.is_discarded() && event.is_object(), "event %zu is not a JSON object: %s", i,
               events[i].c_str());
    if (event.contains("error")) {
      FUZZ_CHECK(i + 2 == events.size(), "an error event before the end");
      FUZZ_CHECK(!status.ok(), "an error event for an OK stream");
      saw_error = true;
      continue;
    }
    FUZZ_CHECK(event["object"] == (chat ? "chat.completion.chunk" : "text_completion"),
               "object: %s", events[i].c_str());
    FUZZ_CHECK(event["id"] == "cmpl-fuzz" && event["model"] == "demo-brown", "envelope: %s",
               events[i].c_str());
    FUZZ_CHECK(event.contains("system_fingerprint") == static_cast<bool>(flags & 8),
               "system_fingerprint: %s", events[i].c_str());
    Json& choices = event["choices"];
    FUZZ_CHECK(choices.is_array(), "choices: %s", events[i].c_str());
    if (choices.empty()) {
      FUZZ_CHECK(request.include_usage && event["usage"].is_object(), "a chunk without choices");
      Json& usage = event["usage"];
      FUZZ_CHECK(usage["prompt_tokens"] == last.usage().prompt_tokens() &&
                     usage["completion_tokens"] == last.usage().completion_tokens() &&
                     usage["total_tokens"] == static_cast<uint64_t>(last.usage().prompt_tokens()) +
                                                  last.usage().completion_tokens(),
                 "usage %s for %u + %u", usage.dump().c_str(), last.usage().prompt_tokens(),
                 last.usage().completion_tokens());
      saw_usage = true;
      continue;
    }
    Json& choice = choices[0];
    Json& piece = chat ? choice["delta"]["content"] : choice["text"];
    if (piece.is_string()) streamed_text += piece.get<std::string>();
    Json& logprobs = choice["logprobs"];
    if (!logprobs.is_null()) {
      FUZZ_CHECK(request.logprobs, "logprobs without being asked");
      Json& entries = chat ? logprobs["content"] : logprobs["tokens"];
      FUZZ_CHECK(entries.is_array(), "logprobs: %s", events[i].c_str());
      logprob_entries += entries.size();
      if (!chat) {
        FUZZ_CHECK(logprobs["token_logprobs"].size() == entries.size() &&
                       logprobs["top_logprobs"].size() == entries.size() &&
                       logprobs["text_offset"].size() == entries.size(),
                   "completions logprobs arrays differ in length: %s", events[i].c_str());
      } else {
        for (Json& entry : entries) {
          FUZZ_CHECK(entry["bytes"].is_array(), "chat logprobs entry without bytes");
        }
      }
    }
  }
  FUZZ_CHECK(saw_error == !status.ok(), "the error event is %s", saw_error ? "spurious" : "missing");
  FUZZ_CHECK(saw_usage == (status.ok() && request.include_usage), "the usage chunk is %s",
             saw_usage ? "spurious" : "missing");
  if (valid_text) {
    FUZZ_CHECK(streamed_text == all_text, "the streamed text is not the messages' text");
  }
  // One entry per token, except that after EOS or a stop string the tokens
  // the returned text never reached are dropped (openai_api.h: the logprobs
  // join to exactly the text returned).
  const bool text_cut = last.finish_reason() == v1::FINISH_REASON_EOS ||
                        last.finish_reason() == v1::FINISH_REASON_STOP;
  if (request.logprobs) {
    FUZZ_CHECK(text_cut ? logprob_entries <= all_tokens : logprob_entries == all_tokens,
               "%zu logprobs entries for %zu tokens", logprob_entries, all_tokens);
  }

  // ---- one JSON body ----
  OpenAiEncoder body_encoder(request, "cmpl-fuzz", 1700000000, "demo-brown", Piece);
  for (const v1::GenerateResponse& message : messages) body_encoder.Accumulate(message);
  const std::string text = DumpJson(body_encoder.Body());
  Json body = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  FUZZ_CHECK(!body.is_discarded(), "the body is not JSON: %s", text.c_str());
  Json& choice = body["choices"][0];
  Json& body_text = chat ? choice["message"]["content"] : choice["text"];
  FUZZ_CHECK(body_text.is_string(), "the body has no text: %s", text.c_str());
  if (valid_text) FUZZ_CHECK(body_text == all_text, "the body's text is not the messages' text");
  FUZZ_CHECK(choice["finish_reason"] == OpenAiFinishReason(last.finish_reason()),
             "finish_reason: %s", text.c_str());
  Json& usage = body["usage"];
  FUZZ_CHECK(usage["prompt_tokens"] == last.usage().prompt_tokens() &&
                 usage["total_tokens"] == static_cast<uint64_t>(last.usage().prompt_tokens()) +
                                              last.usage().completion_tokens(),
             "body usage %s", usage.dump().c_str());
  if (request.logprobs) {
    Json& entries = chat ? choice["logprobs"]["content"] : choice["logprobs"]["tokens"];
    FUZZ_CHECK(text_cut ? entries.size() <= all_tokens : entries.size() == all_tokens,
               "body logprobs: %zu for %zu tokens", entries.size(), all_tokens);
  }

  // An error before any message.
  OpenAiEncoder failed(request, "cmpl-fuzz", 1700000000, "demo-brown", Piece);
  const std::vector<std::string> error_events =
      Events(failed.StreamError(status.ok() ? absl::InternalError("") : status));
  FUZZ_CHECK(error_events.size() == 2 && error_events[1] == "[DONE]", "StreamError's events");
  Json error = Json::parse(error_events[0], nullptr, /*allow_exceptions=*/false);
  FUZZ_CHECK(!error.is_discarded() && error["error"]["message"].is_string(), "StreamError: %s",
             error_events[0].c_str());
  return 0;
}
