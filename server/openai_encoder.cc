#include "server/openai_encoder.h"

#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"

namespace streamgen {

using OJson = nlohmann::ordered_json;

std::string PieceText(absl::string_view piece) {
  // A byte-fallback piece: "<0x0A>".
  if (piece.size() == 6 && piece.substr(0, 3) == "<0x" && piece[5] == '>') {
    int value = 0;
    for (char c : piece.substr(3, 2)) {
      int digit = (c >= '0' && c <= '9') ? c - '0' : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
      if (digit < 0) return std::string(piece);
      value = value * 16 + digit;
    }
    return std::string(1, static_cast<char>(value));
  }
  std::string out;
  constexpr absl::string_view kSpace = "\xE2\x96\x81";  // U+2581
  for (size_t i = 0; i < piece.size();) {
    if (piece.substr(i, kSpace.size()) == kSpace) {
      out.push_back(' ');
      i += kSpace.size();
    } else {
      out.push_back(piece[i++]);
    }
  }
  return out;
}

std::string OpenAiFinishReason(v1::FinishReason reason) {
  switch (reason) {
    case v1::FINISH_REASON_EOS:
    case v1::FINISH_REASON_STOP:
      return "stop";
    case v1::FINISH_REASON_LENGTH:
      return "length";
    default:
      return "";
  }
}

std::string DumpJson(const OJson& json) {
  return json.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

// ---- OpenAiEncoder ----

OpenAiEncoder::OpenAiEncoder(const OpenAiRequest& request, std::string id, int64_t created,
                             std::string model, std::function<std::string(int)> piece)
    : request_(request),
      id_(std::move(id)),
      created_(created),
      model_(std::move(model)),
      piece_(std::move(piece)) {
  if (request_.route == OpenAiRoute::kChat && request_.tool_format != ToolCallFormat::kNone) {
    tool_parser_ = std::make_unique<ToolCallParser>(ToolParserOptions(request_));
  }
  if (request_.route == OpenAiRoute::kChat) {
    logprobs_ = {{"content", OJson::array()}};
  } else {
    logprobs_ = {{"tokens", OJson::array()}, {"token_logprobs", OJson::array()},
                 {"top_logprobs", OJson::array()}, {"text_offset", OJson::array()}};
  }
}

std::string OpenAiEncoder::Event(const OJson& json) {
  return absl::StrCat("data: ", DumpJson(json), "\n\n");
}

OJson OpenAiEncoder::Envelope(const char* object) const {
  OJson out;
  out["id"] = id_;
  out["object"] = object;
  out["created"] = created_;
  out["model"] = model_;
  if (!system_fingerprint_.empty()) out["system_fingerprint"] = system_fingerprint_;
  return out;
}

OJson OpenAiEncoder::Chunk() const {
  return Envelope(request_.route == OpenAiRoute::kChat ? "chat.completion.chunk" : "text_completion");
}

std::string OpenAiEncoder::ChoiceEvent(OJson chat_delta, std::string text, OJson logprobs,
                                       OJson finish_reason) const {
  OJson chunk = Chunk();
  OJson choice = {{"index", index_}};
  if (request_.route == OpenAiRoute::kChat) {
    choice["delta"] = std::move(chat_delta);
  } else {
    choice["text"] = std::move(text);
  }
  choice["logprobs"] = std::move(logprobs);
  choice["finish_reason"] = std::move(finish_reason);
  chunk["choices"] = OJson::array({std::move(choice)});
  if (request_.include_usage) chunk["usage"] = nullptr;
  return Event(chunk);
}

void OpenAiEncoder::TakeUsage(const v1::GenerateResponse& last) {
  if (last.has_usage()) {
    prompt_tokens_ = last.usage().prompt_tokens();
    completion_tokens_ = last.usage().completion_tokens();
  } else {
    // The face ended the output at a stop string in content (finished_): the
    // engine's generation is cancelled and its last message never comes.
    completion_tokens_ = tokens_seen_;
  }
  finish_reason_ = finished_ ? "stop" : OpenAiFinishReason(last.finish_reason());
  if (finish_reason_ == "stop" && !tool_calls_.empty()) finish_reason_ = "tool_calls";
}

std::vector<ToolCallEvent> OpenAiEncoder::ToolEvents(const v1::GenerateResponse& message,
                                                     bool last) {
  tokens_seen_ += message.tokens_size();
  std::vector<ToolCallEvent> events = tool_parser_->Feed(message.text());
  if (last || tool_parser_->stopped()) {
    std::vector<ToolCallEvent> end = tool_parser_->Finish();
    events.insert(events.end(), std::make_move_iterator(end.begin()),
                  std::make_move_iterator(end.end()));
  }
  if (tool_parser_->stopped()) finished_ = true;
  AccumulateToolEvents(events, /*content=*/nullptr, &tool_calls_);
  return events;
}

OJson OpenAiEncoder::Usage() const { return UsageOf(prompt_tokens_, completion_tokens_); }

OJson OpenAiEncoder::UsageOf(int64_t prompt_tokens, int64_t completion_tokens) {
  return {{"prompt_tokens", prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + completion_tokens}};
}

namespace {

// The length of the character lead byte `b` starts; 0 when it starts none.
int Utf8Length(unsigned char b) {
  if (b >= 0xC2 && b <= 0xDF) return 2;
  if (b >= 0xE0 && b <= 0xEF) return 3;
  if (b >= 0xF0 && b <= 0xF4) return 4;
  return 0;
}

// Whether `b` may follow `tail` (a lead byte and continuations) in a
// character: RFC 3629's table, as sentencepiece's decoder has it.
bool Utf8Continues(const std::string& tail, unsigned char b) {
  if (b < 0x80 || b > 0xBF) return false;
  if (tail.size() != 1) return true;
  switch (static_cast<unsigned char>(tail[0])) {
    case 0xE0: return b >= 0xA0;
    case 0xED: return b <= 0x9F;
    case 0xF0: return b >= 0x90;
    case 0xF4: return b <= 0x8F;
    default: return true;
  }
}

}  // namespace

void OpenAiEncoder::CoverBytes(absl::string_view bytes) {
  constexpr int64_t kReplacement = 3;  // U+FFFD, for each byte of no character
  for (size_t i = 0; i < bytes.size();) {
    const unsigned char b = static_cast<unsigned char>(bytes[i]);
    if (utf8_tail_.empty()) {
      if (b < 0x80) {
        token_bytes_ += 1;
      } else if (Utf8Length(b) > 0) {
        utf8_tail_.push_back(static_cast<char>(b));
      } else {
        token_bytes_ += kReplacement;
      }
      ++i;
    } else if (Utf8Continues(utf8_tail_, b)) {
      utf8_tail_.push_back(static_cast<char>(b));
      if (static_cast<int>(utf8_tail_.size()) == Utf8Length(utf8_tail_[0])) {
        token_bytes_ += static_cast<int64_t>(utf8_tail_.size());
        utf8_tail_.clear();
      }
      ++i;
    } else {
      // The character cannot complete: each of its bytes is one U+FFFD, and
      // `b` starts afresh.
      token_bytes_ += kReplacement * static_cast<int64_t>(utf8_tail_.size());
      utf8_tail_.clear();
    }
  }
}

std::vector<OpenAiEncoder::PendingToken> OpenAiEncoder::ListedTokens(
    const v1::GenerateResponse& message, bool last) {
  text_bytes_ += static_cast<int64_t>(message.text().size());
  for (const v1::Token& token : message.tokens()) {
    // Where its text starts: an unfinished character before it counts its
    // bytes as they are (as they come out if it completes).
    PendingToken pending{token, PieceText(piece_(token.id())),
                         token_bytes_ + static_cast<int64_t>(utf8_tail_.size())};
    if (!(hidden_ && hidden_(token.id()))) CoverBytes(pending.text);
    pending_.push_back(std::move(pending));
  }
  std::vector<PendingToken> listed;
  // Reached by the text returned: its start lies before the text's end.
  while (!pending_.empty() && pending_.front().start < text_bytes_) {
    listed.push_back(std::move(pending_.front()));
    pending_.pop_front();
  }
  if (last) {
    const v1::FinishReason reason = message.finish_reason();
    const bool withheld = reason == v1::FINISH_REASON_EOS || reason == v1::FINISH_REASON_STOP;
    // EOS / stop: what is left lies entirely in the text withheld. Any other
    // ending released all the text: a token left over only means its piece's
    // text and the decoded text differ in length (a byte piece decoded as
    // U+FFFD, "<unk>"), and it is listed.
    if (!withheld) {
      for (PendingToken& pending : pending_) listed.push_back(std::move(pending));
    }
    pending_.clear();
  }
  return listed;
}

OJson OpenAiEncoder::Logprobs(const std::vector<PendingToken>& tokens) const {
  auto bytes_of = [](const std::string& text) {
    OJson bytes = OJson::array();
    for (unsigned char c : text) bytes.push_back(static_cast<int>(c));
    return bytes;
  };
  if (request_.route == OpenAiRoute::kChat) {
    OJson content = OJson::array();
    for (const PendingToken& listed : tokens) {
      const v1::Token& token = listed.token;
      OJson entry = {{"token", listed.text}, {"logprob", token.logprob()}, {"bytes", bytes_of(listed.text)}};
      OJson top = OJson::array();
      for (const v1::TokenLogprob& alt : token.top_logprobs()) {
        std::string alt_text = PieceText(piece_(alt.id()));
        top.push_back({{"token", alt_text}, {"logprob", alt.logprob()}, {"bytes", bytes_of(alt_text)}});
      }
      entry["top_logprobs"] = std::move(top);
      content.push_back(std::move(entry));
    }
    return {{"content", std::move(content)}};
  }
  OJson texts = OJson::array(), token_logprobs = OJson::array(), top_logprobs = OJson::array(),
        offsets = OJson::array();
  for (const PendingToken& listed : tokens) {
    texts.push_back(listed.text);
    token_logprobs.push_back(listed.token.logprob());
    OJson top = OJson::object();
    for (const v1::TokenLogprob& alt : listed.token.top_logprobs()) {
      top[PieceText(piece_(alt.id()))] = alt.logprob();
    }
    top_logprobs.push_back(std::move(top));
    offsets.push_back(listed.start);
  }
  return {{"tokens", std::move(texts)}, {"token_logprobs", std::move(token_logprobs)},
          {"top_logprobs", std::move(top_logprobs)}, {"text_offset", std::move(offsets)}};
}

std::string OpenAiEncoder::StreamStart() {
  if (request_.route != OpenAiRoute::kChat) return "";
  return ChoiceEvent({{"role", "assistant"}, {"content", ""}}, "", nullptr, nullptr);
}

std::string OpenAiEncoder::StreamMessage(const v1::GenerateResponse& message, bool last,
                                         const absl::Status& status) {
  if (finished_) return "";  // the face ended the output at a stop string in content
  std::string out = StreamChoice(message, last, /*finish=*/status.ok());
  if (finished_ && !last) return absl::StrCat(out, StreamEnd(prompt_tokens_, completion_tokens_));
  if (!last) return out;
  if (!status.ok()) return absl::StrCat(out, StreamError(status));
  return absl::StrCat(out, StreamEnd(prompt_tokens_, completion_tokens_));
}

std::string OpenAiEncoder::StreamChoice(const v1::GenerateResponse& message, bool done,
                                        bool finish) {
  std::string out;
  std::vector<PendingToken> listed;
  if (request_.logprobs) listed = ListedTokens(message, done);
  if (tool_parser_ != nullptr) {
    std::vector<OJson> deltas = ToolCallDeltas(ToolEvents(message, done && finish));
    // The logprobs ride on the message's first chunk.
    if (deltas.empty() && !listed.empty()) deltas.push_back({{"content", ""}});
    for (size_t i = 0; i < deltas.size(); ++i) {
      OJson logprobs = request_.logprobs && i == 0 ? Logprobs(listed) : OJson();
      absl::StrAppend(&out, ChoiceEvent(std::move(deltas[i]), "", std::move(logprobs), nullptr));
    }
    if (finished_ && !done) {
      // A stop string in content ended the output here: the finish now.
      TakeUsage(message);
      absl::StrAppend(&out, ChoiceEvent(OJson::object(), "", nullptr, finish_reason_));
      return out;
    }
  } else if (!message.text().empty() || !listed.empty()) {
    out = ChoiceEvent({{"content", message.text()}}, message.text(),
                      request_.logprobs ? Logprobs(listed) : OJson(), nullptr);
  }
  if (!done || !finish) return out;
  TakeUsage(message);
  absl::StrAppend(&out, ChoiceEvent(OJson::object(), "", nullptr, finish_reason_));
  return out;
}

std::string OpenAiEncoder::StreamEnd(int64_t prompt_tokens, int64_t completion_tokens) {
  std::string out;
  if (request_.include_usage) {
    OJson usage = Chunk();
    usage["choices"] = OJson::array();
    usage["usage"] = UsageOf(prompt_tokens, completion_tokens);
    absl::StrAppend(&out, Event(usage));
  }
  absl::StrAppend(&out, "data: [DONE]\n\n");
  return out;
}

std::string OpenAiEncoder::StreamError(const absl::Status& status) {
  if (finished_) return "";  // the face ended the output: the cancellation is its own
  HttpError error =
      ToHttpError(ForHttpFace(status, request_.route, request_.max_tokens_field), request_.route);
  return absl::StrCat(Event(ErrorBody(error)), "data: [DONE]\n\n");
}

void OpenAiEncoder::Accumulate(const v1::GenerateResponse& message) {
  if (finished_) return;
  const bool last = message.finish_reason() != v1::FINISH_REASON_UNSPECIFIED;
  if (tool_parser_ != nullptr) {
    for (const ToolCallEvent& event : ToolEvents(message, last)) {
      if (event.kind == ToolCallEvent::Kind::kContent) text_.append(event.text);
    }
  } else {
    text_.append(message.text());
  }
  if (request_.logprobs) {
    std::vector<PendingToken> listed = ListedTokens(message, last);
    if (!listed.empty()) {
      OJson part = Logprobs(listed);
      for (auto& [key, values] : part.items()) {
        for (auto& value : values) logprobs_[key].push_back(std::move(value));
      }
    }
  }
  if (last || finished_) TakeUsage(message);
}

OJson OpenAiEncoder::Body() const {
  bool chat = request_.route == OpenAiRoute::kChat;
  OJson body = Envelope(chat ? "chat.completion" : "text_completion");
  OJson choice = {{"index", index_}};
  if (chat) {
    choice["message"] = {{"role", "assistant"}, {"content", text_}};
    if (!tool_calls_.empty()) {
      // OpenAI: content is null when the message is only calls.
      if (text_.empty()) choice["message"]["content"] = nullptr;
      OJson calls = OJson::array();
      for (const ParsedToolCall& call : tool_calls_) {
        calls.push_back({{"id", call.id},
                         {"type", "function"},
                         {"function", {{"name", call.name}, {"arguments", call.arguments}}}});
      }
      choice["message"]["tool_calls"] = std::move(calls);
    }
  } else {
    choice["text"] = text_;
  }
  choice["logprobs"] = request_.logprobs ? logprobs_ : OJson();
  choice["finish_reason"] = finish_reason_;
  body["choices"] = OJson::array({std::move(choice)});
  body["usage"] = Usage();
  return body;
}

}  // namespace streamgen
