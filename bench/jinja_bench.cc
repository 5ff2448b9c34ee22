// streamgen-bench-jinja: the time to render a chat template over a
// 20-message conversation (system prompt, 9 user/assistant pairs with a tool
// call and its result, unicode), and the time to parse the template.
//
//   streamgen-bench-jinja [--model_dir DIR | --template_file FILE] [--iterations N]
//
// --model_dir renders a model directory's own template (chat_template.jinja
// or tokenizer_config.json's chat_template); --template_file a Jinja file (default:
// tests/jinja/templates/features.jinja, from the project root).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "engine/text/chat_template.h"

ABSL_FLAG(std::string, model_dir, "", "A model directory whose own chat template is rendered.");
ABSL_FLAG(std::string, template_file, "tests/jinja/templates/features.jinja",
          "A Jinja template file (when --model_dir is not given).");
ABSL_FLAG(int, iterations, 2000, "Renders timed.");

namespace {

using Clock = std::chrono::steady_clock;

std::vector<streamgen::ChatMessage> Conversation() {
  std::vector<streamgen::ChatMessage> messages;
  messages.push_back({"system", "You are a helpful assistant. Answer briefly and cite sources."});
  for (int turn = 0; turn < 9; ++turn) {
    std::string n = std::to_string(turn);
    messages.push_back({"user", "Question " + n + ": what is the weather in Zürich on day " + n +
                                    "? Please answer in one or two sentences. 🦙"});
    if (turn == 4) {
      streamgen::ChatMessage call{"assistant", ""};
      call.tool_calls_json = R"([{"id": "call_4", "type": "function", "function": )"
                             R"({"name": "get_weather", "arguments": "{\"city\": \"Zürich\"}"}}])";
      messages.push_back(call);
      streamgen::ChatMessage result{"tool", R"({"temp": 21.5, "sky": "clear"})"};
      result.tool_call_id = "call_4";
      messages.push_back(result);
      continue;
    }
    messages.push_back({"assistant", "Answer " + n + ": it is sunny with a light breeze, around "
                                         "twenty degrees in the afternoon."});
  }
  messages.resize(std::min<size_t>(messages.size(), 19));
  messages.push_back({"user", "Thanks. And tomorrow?"});
  return messages;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  Clock::time_point parse_start = Clock::now();
  absl::StatusOr<std::unique_ptr<streamgen::JinjaChatTemplate>> chat =
      absl::GetFlag(FLAGS_model_dir).empty()
          ? streamgen::JinjaChatTemplate::FromFile(absl::GetFlag(FLAGS_template_file),
                                                   {{"bos_token", "<s>"}, {"eos_token", "</s>"}})
          : streamgen::JinjaChatTemplate::FromModelDir(absl::GetFlag(FLAGS_model_dir));
  double parse_us =
      std::chrono::duration<double, std::micro>(Clock::now() - parse_start).count();
  if (!chat.ok()) {
    std::fprintf(stderr, "streamgen-bench-jinja: %s\n", std::string(chat.status().message()).c_str());
    return 1;
  }
  std::vector<streamgen::ChatMessage> messages = Conversation();
  streamgen::ChatRenderOptions options;
  options.tools_json = R"([{"type": "function", "function": {"name": "get_weather",
    "description": "The weather in a city.", "parameters": {"type": "object",
    "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])";
  absl::StatusOr<std::string> first = (*chat)->Render(messages, options);
  if (!first.ok()) {
    std::fprintf(stderr, "streamgen-bench-jinja: %s\n", std::string(first.status().message()).c_str());
    return 1;
  }
  int iterations = std::max(1, absl::GetFlag(FLAGS_iterations));
  std::vector<double> times;
  times.reserve(iterations);
  for (int i = 0; i < iterations; ++i) {
    Clock::time_point start = Clock::now();
    absl::StatusOr<std::string> text = (*chat)->Render(messages, options);
    times.push_back(std::chrono::duration<double, std::micro>(Clock::now() - start).count());
    if (!text.ok() || *text != *first) return 1;
  }
  std::sort(times.begin(), times.end());
  double sum = 0;
  for (double t : times) sum += t;
  std::printf("template %s: %zu messages, %zu bytes rendered\n", (*chat)->name().c_str(),
              messages.size(), first->size());
  std::printf("parse %.0f us; render over %d runs: mean %.1f us, p50 %.1f us, p99 %.1f us\n",
              parse_us, iterations, sum / iterations, times[times.size() / 2],
              times[std::min(times.size() - 1, times.size() * 99 / 100)]);
  return 0;
}
