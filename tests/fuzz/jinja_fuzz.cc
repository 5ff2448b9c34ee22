// Fuzz target: engine/text/jinja/ (the chat template interpreter). The input
// is a template; it is parsed, and when it parses, rendered over a
// conversation with a system prompt, tool calls, a tool result and unicode,
// with tools given, under small limits.
//
// Properties: never a crash, a hang or unbounded memory (the limits: steps,
// macro depth, output and value sizes); a template that does not parse is
// INVALID_ARGUMENT "template.jinja:LINE:COLUMN: ..." with a line and column
// inside the input; a render is either text no longer than the output limit
// or INVALID_ARGUMENT; parsing and rendering are deterministic (twice, the
// same).
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "engine/text/jinja/template.h"
#include "nlohmann/json.hpp"
#include "tests/fuzz/fuzz_util.h"

namespace streamgen {
namespace {

const jinja::Value& Context() {
  static const jinja::Value context = jinja::Value::FromJson(nlohmann::ordered_json::parse(R"({
    "bos_token": "<s>", "eos_token": "</s>", "add_generation_prompt": true,
    "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather.",
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
    "messages": [
      {"role": "system", "content": "Be brief."},
      {"role": "user", "content": "Wetter in Zürich? 🦙"},
      {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
        "function": {"name": "get_weather", "arguments": {"city": "Zürich"}}}]},
      {"role": "tool", "tool_call_id": "c1", "name": "get_weather", "content": "{\"temp\": 20}"},
      {"role": "assistant", "content": "20 degrees."}]})"));
  return context;
}

void CheckParseError(const absl::Status& status, const std::string& source) {
  FUZZ_CHECK(status.code() == absl::StatusCode::kInvalidArgument, "parse error code %d",
             static_cast<int>(status.code()));
  std::string message(status.message());
  FUZZ_CHECK(absl::StartsWith(message, "template.jinja:"), "parse error without the name: %s",
             message.c_str());
  std::vector<std::string> parts = absl::StrSplit(message, absl::MaxSplits(':', 3));
  int line = 0, column = 0;
  FUZZ_CHECK(parts.size() == 4 && absl::SimpleAtoi(parts[1], &line) &&
                 absl::SimpleAtoi(parts[2], &column),
             "parse error without line:column: %s", message.c_str());
  int lines = 1;
  for (char c : source) lines += c == '\n' || c == '\r';
  FUZZ_CHECK(line >= 1 && line <= lines && column >= 1, "parse error at %d:%d of %d lines: %s",
             line, column, lines, message.c_str());
}

}  // namespace
}  // namespace streamgen

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace streamgen;
  if (size > 1 << 16) return 0;
  std::string source(reinterpret_cast<const char*>(data), size);
  auto parsed = jinja::Template::Parse(source, "template.jinja");
  auto again = jinja::Template::Parse(source, "template.jinja");
  FUZZ_CHECK(parsed.ok() == again.ok(), "parsing is not deterministic");
  if (!parsed.ok()) {
    FUZZ_CHECK(parsed.status() == again.status(), "parse errors differ");
    CheckParseError(parsed.status(), source);
    return 0;
  }
  jinja::Limits limits;
  limits.max_steps = 20000;
  limits.max_call_depth = 20;
  limits.max_output_bytes = 1 << 16;
  limits.max_list_items = 1 << 12;
  auto text = (*parsed)->Render(Context(), limits);
  if (text.ok()) {
    FUZZ_CHECK(text->size() <= limits.max_output_bytes + limits.max_output_bytes,
               "output of %zu bytes over the limit", text->size());
  } else {
    FUZZ_CHECK(text.status().code() == absl::StatusCode::kInvalidArgument,
               "render error code %d: %s", static_cast<int>(text.status().code()),
               std::string(text.status().message()).c_str());
  }
  auto text_again = (*again)->Render(Context(), limits);
  if (!absl::StrContains(source, "strftime_now")) {  // (the clock may tick between the two)
    FUZZ_CHECK(text.ok() == text_again.ok() && (!text.ok() || *text == *text_again),
               "rendering is not deterministic");
  }
  return 0;
}
