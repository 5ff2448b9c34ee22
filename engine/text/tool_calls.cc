#include "engine/text/tool_calls.h"

#include <utility>

#include "absl/random/random.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace streamgen {
namespace {

using OJson = nlohmann::ordered_json;

constexpr absl::string_view kHermesOpen = "<tool_call>";
constexpr absl::string_view kHermesClose = "</tool_call>";
constexpr absl::string_view kMistralOpen = "[TOOL_CALLS]";
constexpr absl::string_view kPythonTag = "<|python_tag|>";

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

size_t SkipSpace(absl::string_view s, size_t pos) {
  while (pos < s.size() && IsSpace(s[pos])) ++pos;
  return pos;
}

// A match against text that may still grow.
enum class Match { kYes, kNeedMore, kNo };

// `literal` at s[*pos]: kYes advances *pos; a proper prefix at the end is kNeedMore.
Match Literal(absl::string_view s, size_t* pos, absl::string_view literal) {
  absl::string_view rest = s.substr(*pos);
  size_t n = std::min(rest.size(), literal.size());
  if (rest.substr(0, n) != literal.substr(0, n)) return Match::kNo;
  if (n < literal.size()) return Match::kNeedMore;
  *pos += literal.size();
  return Match::kYes;
}

// A JSON string at s[*pos], decoded into *out.
Match JsonString(absl::string_view s, size_t* pos, std::string* out) {
  if (*pos >= s.size()) return Match::kNeedMore;
  if (s[*pos] != '"') return Match::kNo;
  bool escape = false;
  for (size_t i = *pos + 1; i < s.size(); ++i) {
    if (escape) {
      escape = false;
    } else if (s[i] == '\\') {
      escape = true;
    } else if (s[i] == '"') {
      OJson decoded = OJson::parse(s.substr(*pos, i + 1 - *pos), nullptr, false);
      if (decoded.is_discarded() || !decoded.is_string()) return Match::kNo;
      *out = decoded.get<std::string>();
      *pos = i + 1;
      return Match::kYes;
    } else if (static_cast<unsigned char>(s[i]) < 0x20) {
      return Match::kNo;  // a raw control character: not JSON
    }
  }
  return Match::kNeedMore;
}

// {"name": STRING, KEY: with KEY one of the format's argument keys, up to the
// first character of the value. *consumed: the header's length.
Match CallHeader(absl::string_view s, ToolCallFormat format, size_t* consumed, std::string* name) {
  size_t pos = SkipSpace(s, 0);
  Match m;
  auto step = [&](Match result) {
    m = result;
    return result == Match::kYes;
  };
  std::string key;
  if (!step(Literal(s, &pos, "{"))) return m;
  pos = SkipSpace(s, pos);
  if (!step(Literal(s, &pos, "\"name\""))) return m;
  pos = SkipSpace(s, pos);
  if (!step(Literal(s, &pos, ":"))) return m;
  pos = SkipSpace(s, pos);
  if (!step(JsonString(s, &pos, name))) return m;
  pos = SkipSpace(s, pos);
  if (!step(Literal(s, &pos, ","))) return m;
  pos = SkipSpace(s, pos);
  if (!step(JsonString(s, &pos, &key))) return m;
  if (key != "arguments" && !(format == ToolCallFormat::kLlama3Json && key == "parameters")) {
    return Match::kNo;
  }
  pos = SkipSpace(s, pos);
  if (!step(Literal(s, &pos, ":"))) return m;
  pos = SkipSpace(s, pos);
  if (pos >= s.size()) return Match::kNeedMore;
  *consumed = pos;
  return Match::kYes;
}

// The length of the longest suffix of `s` that is a proper prefix of `marker`.
size_t PartialSuffix(absl::string_view s, absl::string_view marker) {
  for (size_t n = std::min(s.size(), marker.size() - 1); n > 0; --n) {
    if (s.substr(s.size() - n) == marker.substr(0, n)) return n;
  }
  return 0;
}

std::string RandomId(size_t length) {
  static constexpr char kChars[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  thread_local absl::BitGen gen;
  std::string id;
  for (size_t i = 0; i < length; ++i) id.push_back(kChars[absl::Uniform<size_t>(gen, 0, 62)]);
  return id;
}

// A whole call object parsed as JSON: its name and arguments text, or false.
bool CallOfJson(const OJson& call, ToolCallFormat format, std::string* name, std::string* args) {
  if (!call.is_object()) return false;
  auto n = call.find("name");
  auto a = call.find("arguments");
  if (a == call.end() && format == ToolCallFormat::kLlama3Json) a = call.find("parameters");
  if (n == call.end() || !n->is_string() || a == call.end()) return false;
  *name = n->get<std::string>();
  // OpenAI's arguments are JSON text: a string value is taken to be that text.
  *args = a->is_string() ? a->get<std::string>() : a->dump();
  return true;
}

}  // namespace

const char* ToolCallFormatName(ToolCallFormat format) {
  switch (format) {
    case ToolCallFormat::kLlama3Json:
      return "llama3_json";
    case ToolCallFormat::kHermes:
      return "hermes";
    case ToolCallFormat::kMistral:
      return "mistral";
    case ToolCallFormat::kNone:
      break;
  }
  return "";
}

ToolCallFormat DetectToolCallFormat(absl::string_view t) {
  if (absl::StrContains(t, kHermesOpen)) return ToolCallFormat::kHermes;
  // Nemo writes "[TOOL_CALLS][", v0.3 "[TOOL_CALLS] ["; Small 3.2's
  // "[TOOL_CALLS]name[ARGS]{...}" is another format.
  if (absl::StrContains(t, kMistralOpen) && !absl::StrContains(t, "[ARGS]")) {
    return ToolCallFormat::kMistral;
  }
  if (absl::StrContains(t, "<|start_header_id|>") &&
      (absl::StrContains(t, kPythonTag) || absl::StrContains(t, "\"parameters\""))) {
    return ToolCallFormat::kLlama3Json;
  }
  return ToolCallFormat::kNone;
}

// ---- ToolCallParser ----

ToolCallParser::ToolCallParser(Options options)
    : options_(std::move(options)), stop_matcher_(options_.stop) {
  if (options_.format == ToolCallFormat::kHermes) state_ = State::kContent;
  if (options_.format == ToolCallFormat::kNone) state_ = State::kContentOnly;
}

std::vector<ToolCallEvent> ToolCallParser::Feed(absl::string_view text) {
  if (!stopped_) {
    buffer_.append(text.data(), text.size());
    Process(/*final=*/false);
  }
  return std::move(events_);
}

std::vector<ToolCallEvent> ToolCallParser::Finish() {
  if (!stopped_) {
    Process(/*final=*/true);
    // Whatever a state could not finish is content (an incomplete call's
    // arguments have been streamed already and stand).
    if (state_ == State::kContent || state_ == State::kContentOnly || state_ == State::kStart) {
      Content(buffer_);
    }
    buffer_.clear();
    if (!stopped_) {
      Release(stop_matcher_.Flush());
      // Whitespace at the end: content only in an output without calls.
      if (parsed_calls_ == 0 && !held_ws_.empty()) {
        events_.push_back({ToolCallEvent::Kind::kContent, held_ws_});
      }
      held_ws_.clear();
    }
  }
  return std::move(events_);
}

void ToolCallParser::Process(bool final) {
  bool progress = true;
  while (progress && !stopped_) {
    switch (state_) {
      case State::kStart:
        progress = ProcessStart(final);
        break;
      case State::kContent:
        progress = ProcessContent(final);
        break;
      case State::kContentOnly:
        Content(buffer_);
        buffer_.clear();
        progress = false;
        break;
      case State::kArrayOpen: {
        size_t pos = SkipSpace(buffer_, 0);
        Match m = Literal(buffer_, &pos, "[");
        if (m == Match::kYes) {
          opening_.append(buffer_, 0, pos);
          buffer_.erase(0, pos);
          state_ = State::kHeader;
        } else if (m == Match::kNo || final) {
          FallBack(State::kContent);
        } else {
          progress = false;
        }
        break;
      }
      case State::kHeader:
        progress = ProcessHeader(final);
        break;
      case State::kArguments:
        progress = ProcessValue(final, !drop_);
        break;
      case State::kMemberValue:
        progress = ProcessValue(final, false);
        break;
      case State::kAfterValue:
        progress = ProcessAfterValue(final);
        break;
      case State::kAfterCall:
        progress = ProcessAfterCall(final);
        break;
      case State::kHeldBlock:
        progress = ProcessHeldBlock(final);
        break;
    }
  }
}

bool ToolCallParser::ProcessStart(bool final) {
  size_t pos = SkipSpace(buffer_, 0);
  if (pos == buffer_.size() && !final) return false;  // only whitespace so far
  absl::string_view rest = absl::string_view(buffer_).substr(pos);
  if (options_.format == ToolCallFormat::kLlama3Json) {
    size_t at = pos;
    Match tag = Literal(buffer_, &at, kPythonTag);
    if (tag == Match::kNeedMore && !final) return false;
    if (tag == Match::kYes || (!rest.empty() && rest[0] == '{')) {
      opening_ = buffer_.substr(0, at);
      buffer_.erase(0, at);
      state_ = State::kHeader;
      return true;
    }
    state_ = State::kContentOnly;
    return true;
  }
  // Mistral: a "[" that opens the output (its [TOOL_CALLS] token was dropped),
  // else content in which [TOOL_CALLS] may still come.
  if (!final && !rest.empty() && rest.size() < kMistralOpen.size() &&
      absl::StartsWith(kMistralOpen, rest)) {
    return false;  // "[TOOL_" so far: the opening written out, or a bare "["?
  }
  if (!rest.empty() && rest[0] == '[' && !absl::StartsWith(rest, kMistralOpen)) {
    state_ = State::kArrayOpen;
    return true;
  }
  state_ = State::kContent;
  return true;
}

bool ToolCallParser::ProcessContent(bool final) {
  absl::string_view marker =
      options_.format == ToolCallFormat::kHermes ? kHermesOpen : kMistralOpen;
  size_t at = absl::string_view(buffer_).find(marker);
  if (at != std::string::npos) {
    Content(absl::string_view(buffer_).substr(0, at));
    opening_ = std::string(marker);
    buffer_.erase(0, at + marker.size());
    // The opening is not content: what the stop strings held back is released.
    if (stopped_) return false;
    Release(stop_matcher_.Flush());
    state_ = options_.format == ToolCallFormat::kHermes ? State::kHeader : State::kArrayOpen;
    return true;
  }
  size_t keep = final ? 0 : PartialSuffix(buffer_, marker);
  Content(absl::string_view(buffer_).substr(0, buffer_.size() - keep));
  buffer_.erase(0, buffer_.size() - keep);
  return false;
}

bool ToolCallParser::ProcessHeader(bool final) {
  size_t consumed = 0;
  std::string name;
  Match m = CallHeader(buffer_, options_.format, &consumed, &name);
  if (m == Match::kNeedMore && !final) return false;
  if (m != Match::kYes) {
    state_ = State::kHeldBlock;
    return true;
  }
  opening_.clear();
  buffer_.erase(0, consumed);
  drop_ = options_.max_calls > 0 && parsed_calls_ >= options_.max_calls;
  ++parsed_calls_;
  if (!drop_) StartCall(name);
  depth_ = 0;
  in_string_ = escape_ = value_started_ = scalar_ = false;
  state_ = State::kArguments;
  return true;
}

bool ToolCallParser::ProcessValue(bool final, bool emit) {
  size_t i = 0;
  bool done = false;
  for (; i < buffer_.size() && !done; ++i) {
    const char c = buffer_[i];
    if (!value_started_) {
      value_started_ = true;
      if (c == '"') {
        in_string_ = true;
      } else if (c == '{' || c == '[') {
        depth_ = 1;
      } else {
        scalar_ = true;
      }
      continue;
    }
    if (in_string_) {
      if (escape_) {
        escape_ = false;
      } else if (c == '\\') {
        escape_ = true;
      } else if (c == '"') {
        in_string_ = false;
        done = depth_ == 0;
      }
    } else if (scalar_) {
      if (IsSpace(c) || c == ',' || c == '}' || c == ']') {
        done = true;
        --i;  // the delimiter is not part of the value
      }
    } else if (c == '"') {
      in_string_ = true;
    } else if (c == '{' || c == '[') {
      ++depth_;
    } else if (c == '}' || c == ']') {
      done = --depth_ == 0;
    }
  }
  if (emit && i > 0) EmitArguments(absl::string_view(buffer_).substr(0, i));
  buffer_.erase(0, i);
  if (done || (final && scalar_)) {
    state_ = State::kAfterValue;
    return true;
  }
  return false;
}

bool ToolCallParser::ProcessAfterValue(bool final) {
  size_t pos = SkipSpace(buffer_, 0);
  if (pos == buffer_.size()) {
    buffer_.clear();
    return false;
  }
  if (buffer_[pos] == '}') {
    buffer_.erase(0, pos + 1);
    state_ = State::kAfterCall;
    return true;
  }
  if (buffer_[pos] == ',') {
    // Another member ("id"): its key, then its value skipped.
    size_t at = SkipSpace(buffer_, pos + 1);
    std::string key;
    Match m = JsonString(buffer_, &at, &key);
    at = SkipSpace(buffer_, at);
    if (m == Match::kYes) m = Literal(buffer_, &at, ":");
    if (m == Match::kYes) {
      at = SkipSpace(buffer_, at);
      if (at == buffer_.size() && !final) return false;
      buffer_.erase(0, at);
      depth_ = 0;
      in_string_ = escape_ = value_started_ = scalar_ = false;
      state_ = State::kMemberValue;
      return true;
    }
    if (m == Match::kNeedMore && !final) return false;
  }
  // Not JSON any more: the call stands as it is, the rest is content.
  buffer_.erase(0, pos);
  state_ = options_.format == ToolCallFormat::kLlama3Json ? State::kContentOnly : State::kContent;
  return true;
}

bool ToolCallParser::ProcessAfterCall(bool final) {
  size_t pos = SkipSpace(buffer_, 0);
  if (pos == buffer_.size()) {
    buffer_.clear();  // whitespace next to a call is not content
    return false;
  }
  Match m = Match::kNo;
  State next = State::kContent;
  switch (options_.format) {
    case ToolCallFormat::kHermes:
      m = Literal(buffer_, &pos, kHermesClose);
      break;
    case ToolCallFormat::kLlama3Json:
      m = Literal(buffer_, &pos, ";");
      next = State::kHeader;
      break;
    case ToolCallFormat::kMistral:
      m = Literal(buffer_, &pos, ",");
      next = State::kHeader;
      if (m == Match::kNo) {
        m = Literal(buffer_, &pos, "]");
        next = State::kContent;
      }
      break;
    case ToolCallFormat::kNone:
      break;
  }
  if (m == Match::kNeedMore && !final) return false;
  if (m == Match::kYes) {
    buffer_.erase(0, pos);
    state_ = next;
    return true;
  }
  buffer_.erase(0, SkipSpace(buffer_, 0));
  state_ = options_.format == ToolCallFormat::kLlama3Json ? State::kContentOnly : State::kContent;
  return true;
}

bool ToolCallParser::ProcessHeldBlock(bool final) {
  // Hermes: the block ends at </tool_call>; the others hold to the end.
  size_t end = std::string::npos;
  if (options_.format == ToolCallFormat::kHermes) end = absl::string_view(buffer_).find(kHermesClose);
  if (end == std::string::npos && !final) return false;
  absl::string_view block = absl::string_view(buffer_).substr(0, end);
  std::vector<OJson> calls;
  OJson parsed = OJson::parse(block, nullptr, false);
  if (parsed.is_discarded() && options_.format == ToolCallFormat::kMistral) {
    // The "[" was consumed as the opening; the array's text lacks it.
    parsed = OJson::parse(absl::StrCat("[", block), nullptr, false);
  }
  if (!parsed.is_discarded()) {
    if (parsed.is_array() && options_.format == ToolCallFormat::kMistral) {
      for (OJson& call : parsed) calls.push_back(std::move(call));
    } else {
      calls.push_back(std::move(parsed));
    }
  }
  std::vector<std::pair<std::string, std::string>> found;
  for (const OJson& call : calls) {
    std::string name, args;
    if (!CallOfJson(call, options_.format, &name, &args)) {
      found.clear();
      break;
    }
    found.emplace_back(std::move(name), std::move(args));
  }
  if (found.empty()) {
    FallBack(options_.format == ToolCallFormat::kLlama3Json ? State::kContentOnly
                                                            : State::kContent);
    // FallBack made the block content; Hermes goes on after its closing.
    return true;
  }
  for (auto& [name, args] : found) {
    drop_ = options_.max_calls > 0 && parsed_calls_ >= options_.max_calls;
    ++parsed_calls_;
    if (drop_) continue;
    StartCall(name);
    EmitArguments(args);
  }
  opening_.clear();
  if (end == std::string::npos) {
    buffer_.clear();
  } else {
    buffer_.erase(0, end + kHermesClose.size());
  }
  state_ = options_.format == ToolCallFormat::kLlama3Json ? State::kContentOnly : State::kContent;
  return true;
}

void ToolCallParser::StartCall(const std::string& name) {
  ToolCallEvent event;
  event.kind = ToolCallEvent::Kind::kCallStart;
  event.index = calls_++;
  if (options_.new_id) {
    event.id = options_.new_id();
  } else {
    event.id = options_.format == ToolCallFormat::kMistral ? RandomId(9)
                                                           : absl::StrCat("call_", RandomId(24));
  }
  event.name = name;
  held_ws_.clear();    // whitespace before a call is not content
  after_call_ = true;  // nor is whitespace after it
  events_.push_back(std::move(event));
}

void ToolCallParser::EmitArguments(absl::string_view text) {
  if (!events_.empty() && events_.back().kind == ToolCallEvent::Kind::kArguments) {
    events_.back().text.append(text.data(), text.size());
    return;
  }
  ToolCallEvent event;
  event.kind = ToolCallEvent::Kind::kArguments;
  event.index = calls_ - 1;
  event.text = std::string(text);
  events_.push_back(std::move(event));
}

void ToolCallParser::Content(absl::string_view text) {
  if (text.empty() || stopped_) return;
  StopMatcher::Result result = stop_matcher_.Push(std::string_view(text.data(), text.size()));
  Release(result.text);
  if (result.stopped) {
    stopped_ = true;
    held_ws_.clear();
    buffer_.clear();
  }
}

void ToolCallParser::Release(absl::string_view text) {
  if (text.empty()) return;
  // Whitespace is held until text that is not whitespace follows: whitespace
  // before a call, after one, or at the end of an output with calls is dropped.
  held_ws_.append(text.data(), text.size());
  size_t last = held_ws_.find_last_not_of(" \t\n\r");
  if (last == std::string::npos) return;
  std::string out = held_ws_.substr(0, last + 1);
  held_ws_.erase(0, last + 1);
  if (after_call_) {
    out.erase(0, out.find_first_not_of(" \t\n\r"));
    after_call_ = false;
  }
  if (!events_.empty() && events_.back().kind == ToolCallEvent::Kind::kContent) {
    events_.back().text += out;
  } else {
    events_.push_back({ToolCallEvent::Kind::kContent, std::move(out)});
  }
}

void ToolCallParser::FallBack(State to) {
  std::string text = std::move(opening_);
  opening_.clear();
  if (state_ == State::kHeldBlock && options_.format == ToolCallFormat::kHermes) {
    size_t end = absl::string_view(buffer_).find(kHermesClose);
    size_t n = end == std::string::npos ? buffer_.size() : end + kHermesClose.size();
    text.append(buffer_, 0, n);
    buffer_.erase(0, n);
  } else {
    text += buffer_;
    buffer_.clear();
  }
  state_ = to;
  Content(text);
}

}  // namespace streamgen
