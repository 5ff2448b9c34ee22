// streamgen-render-template: renders Jinja templates with streamgen's own
// interpreter (engine/text/jinja/), for comparing against other
// implementations (tests/jinja/) and for trying a chat template by hand.
//
// Input (stdin): {"cases": [case, ...]}, a case being either
//   {"template": "...", "context": {...}}: the template rendered with the context; or
//   {"model_dir": "...", "messages": [OpenAI messages], "add_generation_prompt": bool,
//    "tools": [...]}: the model's own chat template (JinjaChatTemplate::FromModelDir)
//    rendered as a chat request would be.
// Output (stdout): {"results": [{"text": "..."} or {"error": "..."}, ...]}
// Exit status 0 unless the input itself is not such JSON (then 2, with the
// reason on stderr).
#include <iostream>
#include <iterator>
#include <string>

#include "engine/text/chat_template.h"
#include "engine/text/jinja/template.h"
#include "nlohmann/json.hpp"

namespace {

using nlohmann::ordered_json;

ordered_json RenderChat(const ordered_json& c) {
  auto chat = streamgen::JinjaChatTemplate::FromModelDir(c["model_dir"].get<std::string>());
  if (!chat.ok()) return {{"error", std::string(chat.status().message())}};
  auto messages = streamgen::ChatMessagesFromJson(c.value("messages", ordered_json::array()));
  if (!messages.ok()) return {{"error", std::string(messages.status().message())}};
  streamgen::ChatRenderOptions options;
  options.add_generation_prompt = c.value("add_generation_prompt", true);
  if (c.contains("tools")) options.tools_json = c["tools"].dump();
  auto text = (*chat)->Render(*messages, options);
  if (!text.ok()) return {{"error", std::string(text.status().message())}};
  return {{"text", *text}};
}

ordered_json RenderCase(const ordered_json& c) {
  if (c.is_object() && c.contains("model_dir") && c["model_dir"].is_string()) return RenderChat(c);
  if (!c.is_object() || !c.contains("template") || !c["template"].is_string()) {
    return {{"error", "case: \"template\" (a string) is missing"}};
  }
  auto parsed = streamgen::jinja::Template::Parse(c["template"].get<std::string>(),
                                                  c.value("name", "template"));
  if (!parsed.ok()) return {{"error", std::string(parsed.status().message())}};
  streamgen::jinja::Value context =
      streamgen::jinja::Value::FromJson(c.value("context", ordered_json::object()));
  auto text = (*parsed)->Render(context);
  if (!text.ok()) return {{"error", std::string(text.status().message())}};
  return {{"text", *text}};
}

}  // namespace

int main() {
  std::string input((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  ordered_json request = ordered_json::parse(input, nullptr, /*allow_exceptions=*/false);
  if (!request.is_object() || !request.contains("cases") || !request["cases"].is_array()) {
    std::cerr << "streamgen-render-template: stdin must be {\"cases\": [...]}\n";
    return 2;
  }
  ordered_json results = ordered_json::array();
  for (const ordered_json& c : request["cases"]) results.push_back(RenderCase(c));
  std::cout << ordered_json{{"results", results}}.dump(-1, ' ', false,
                                                       ordered_json::error_handler_t::replace)
            << "\n";
  return 0;
}
