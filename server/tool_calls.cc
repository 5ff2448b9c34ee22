#include "server/tool_calls.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace streamgen {

using OJson = nlohmann::ordered_json;

absl::Status PrepareToolCalls(ToolCallFormat format, const SchemaToGrammar& schema_to_grammar,
                              OpenAiRequest* request) {
  request->tool_format = ToolCallFormat::kNone;
  request->content_stop.clear();
  request->engine_stops = true;
  request->tool_grammar.clear();
  if (request->tools.empty() || request->tool_choice == ToolChoice::kNone) return absl::OkStatus();
  const bool constrained = request->tool_choice == ToolChoice::kRequired ||
                           request->tool_choice == ToolChoice::kFunction;
  auto refuse = [&](absl::string_view why) {
    absl::Status status = absl::FailedPreconditionError(absl::StrCat(
        "tool_choice ",
        request->tool_choice == ToolChoice::kRequired
            ? std::string("\"required\"")
            : absl::StrCat("{\"function\": {\"name\": \"", request->tool_choice_function, "\"}}"),
        " ", why));
    SetErrorParam(&status, "tool_choice");
    return status;
  };
  if (format == ToolCallFormat::kNone) {
    if (!constrained) return absl::OkStatus();  // auto: the output is content
    return refuse(
        "needs a chat template that writes tool calls in a format streamgen knows (Llama 3.1 "
        "JSON, Hermes/Qwen <tool_call>, Mistral [TOOL_CALLS]); this model's has none");
  }
  if (request->request.n() > 1) {
    // One tool-call parser per stream: n choices would need one each.
    absl::Status status = absl::InvalidArgumentError(absl::StrCat(
        "n must be 1 when the output is parsed for tool calls (tools with tool_choice other "
        "than \"none\"), got ", request->request.n()));
    SetErrorParam(&status, "n");
    return status;
  }
  request->tool_format = format;
  // The engine must not see the stop strings (they could cut a call), but the
  // validator still checks them: the face drops them after validation.
  request->engine_stops = false;
  if (!constrained) {
    request->content_stop.assign(request->request.stop().begin(), request->request.stop().end());
    return absl::OkStatus();
  }
  if (!schema_to_grammar) return refuse("needs constrained decoding, which this build lacks");
  std::vector<ToolSpec> tools;
  for (const ToolSpec& tool : request->tools) {
    if (request->tool_choice == ToolChoice::kRequired || tool.name == request->tool_choice_function) {
      tools.push_back(tool);
    }
  }
  absl::StatusOr<std::string> grammar =
      ToolCallGrammar(format, tools, request->parallel_tool_calls, schema_to_grammar);
  if (!grammar.ok()) {
    absl::Status status(grammar.status().code(),
                        absl::StrCat("tools: a parameter schema cannot constrain the output: ",
                                     grammar.status().message()));
    SetErrorParam(&status, "tools");
    return status;
  }
  request->tool_grammar = std::move(*grammar);
  return absl::OkStatus();
}

ToolCallParser::Options ToolParserOptions(const OpenAiRequest& request) {
  ToolCallParser::Options options;
  options.format = request.tool_format;
  options.stop = request.content_stop;
  options.max_calls = request.parallel_tool_calls ? 0 : 1;
  return options;
}

std::vector<OJson> ToolCallDeltas(const std::vector<ToolCallEvent>& events) {
  std::vector<OJson> deltas;
  for (const ToolCallEvent& event : events) {
    switch (event.kind) {
      case ToolCallEvent::Kind::kContent:
        deltas.push_back({{"content", event.text}});
        break;
      case ToolCallEvent::Kind::kCallStart:
        deltas.push_back({{"tool_calls", OJson::array({{{"index", event.index},
                                                         {"id", event.id},
                                                         {"type", "function"},
                                                         {"function", {{"name", event.name},
                                                                       {"arguments", ""}}}}})}});
        break;
      case ToolCallEvent::Kind::kArguments: {
        // The fragment joins its call's start when that is the delta before.
        OJson* last = deltas.empty() ? nullptr : &deltas.back();
        if (last != nullptr && last->contains("tool_calls") &&
            (*last)["tool_calls"][0]["index"] == event.index) {
          (*last)["tool_calls"][0]["function"]["arguments"] =
              (*last)["tool_calls"][0]["function"]["arguments"].get<std::string>() + event.text;
        } else {
          deltas.push_back({{"tool_calls", OJson::array({{{"index", event.index},
                                                           {"function", {{"arguments", event.text}}}}})}});
        }
        break;
      }
    }
  }
  return deltas;
}

void AccumulateToolEvents(const std::vector<ToolCallEvent>& events, std::string* content,
                          std::vector<ParsedToolCall>* calls) {
  for (const ToolCallEvent& event : events) {
    switch (event.kind) {
      case ToolCallEvent::Kind::kContent:
        if (content != nullptr) content->append(event.text);
        break;
      case ToolCallEvent::Kind::kCallStart:
        calls->push_back({event.id, event.name, ""});
        break;
      case ToolCallEvent::Kind::kArguments:
        if (!calls->empty()) calls->back().arguments.append(event.text);
        break;
    }
  }
}

}  // namespace streamgen
