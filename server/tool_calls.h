// Chat completions' tools on the HTTP face: what a request's tool_choice asks
// of the model at hand (parse its output, constrain it), and OpenAI's wire
// shape of the parser's events (engine/text/tool_calls.h). Thread-compatible.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/text/tool_calls.h"
#include "nlohmann/json.hpp"
#include "server/openai_api.h"

namespace streamgen {

// A JSON Schema -> a grammar whose start rule is `root` (JsonSchemaToGrammar).
using SchemaToGrammar =
    std::function<absl::StatusOr<std::string>(const nlohmann::ordered_json& schema)>;

// Decides, for a model whose chat template writes calls in `format`, how the
// request's tools are served, and sets request->tool_format, content_stop and
// tool_grammar (docs/structured-outputs.md, "Tools"):
// - no tools, or tool_choice "none": the output is content (the tools still
//   reach the template, as OpenAI's model still sees them).
// - "auto": the output is parsed in `format` (kNone: content); the request's
//   stop strings move from the engine to the parser (content_stop;
//   engine_stops false), which applies them to content only, so that no stop
//   string cuts a call.
// - "required" / a function: the output is constrained to the format's
//   calls of any tool / that tool (tool_grammar), one call unless
//   parallel_tool_calls; the stop strings are dropped (engine_stops false: the grammar ends the
//   output; a call never ends at a stop string). FAILED_PRECONDITION naming
//   tool_choice when the template has no format streamgen knows, or when
//   `schema_to_grammar` is unset (no constrained decoding in this build);
//   the converter's INVALID_ARGUMENT naming tools otherwise.
// parallel_tool_calls false: at most one call (the grammar allows one; in
// auto mode the parser keeps the first and drops the rest).
absl::Status PrepareToolCalls(ToolCallFormat format, const SchemaToGrammar& schema_to_grammar,
                              OpenAiRequest* request);

// The parser's options for a prepared request (format kNone: not parsed).
ToolCallParser::Options ToolParserOptions(const OpenAiRequest& request);

// OpenAI's chat deltas for `events`, in order: {"content": text} for content,
// {"tool_calls": [{"index", "id", "type": "function", "function": {"name",
// "arguments"}}]} for a call's start (with the fragments that follow it in
// `events`), {"tool_calls": [{"index", "function": {"arguments"}}]} for later
// fragments.
std::vector<nlohmann::ordered_json> ToolCallDeltas(const std::vector<ToolCallEvent>& events);

// A whole call as message.tool_calls lists it.
struct ParsedToolCall {
  std::string id;
  std::string name;
  std::string arguments;  // JSON text, as the model wrote it
};
// Adds `events` to `content` (unless null) and `calls`.
void AccumulateToolEvents(const std::vector<ToolCallEvent>& events, std::string* content,
                          std::vector<ParsedToolCall>* calls);

}  // namespace streamgen
