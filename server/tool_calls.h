// Tools on both faces: what a request's tool_choice asks of the model at hand
// (parse its output, constrain it: PlanToolCalls, one decision for both), the
// tools' checks, and each face's wire shape of the parser's events
// (engine/text/tool_calls.h): OpenAI's delta.tool_calls on HTTP,
// GenerateResponse.tool_calls on gRPC. Thread-compatible.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/text/tool_calls.h"
#include "nlohmann/json.hpp"
#include "server/openai_api.h"
#include "streamgen/v1/generate.pb.h"

namespace streamgen {

// A JSON Schema -> a grammar whose start rule is `root` (JsonSchemaToGrammar).
using SchemaToGrammar =
    std::function<absl::StatusOr<std::string>(const nlohmann::ordered_json& schema)>;

// OpenAI's function tools ([{"type": "function", "function": {"name",
// "description", "parameters"}}], a JSON array) -> specs. INVALID_ARGUMENT
// "<field>[i]... must be ..." (param `field`) for anything else: an entry
// that is not an object, a type other than "function", a name that is not 1
// to 64 letters, digits, underscores or dashes or that repeats an earlier
// one, parameters that are not an object.
absl::StatusOr<std::vector<ToolSpec>> ParseToolSpecs(const nlohmann::ordered_json& tools,
                                                     absl::string_view field);

// What a request asks of its tools, whatever its wire.
struct ToolCallInputs {
  std::vector<ToolSpec> tools;
  ToolChoice choice = ToolChoice::kAuto;
  std::string function;           // kFunction: the function's name (one of tools)
  bool parallel = true;           // parallel_tool_calls
  int n = 1;                      // the request's choices
  std::vector<std::string> stop;  // the request's stop strings
  // tool_choice as the errors spell it ("\"required\"", the face's form of a
  // named function).
  std::string choice_text;
  std::string tools_field = "tools";  // what the errors call the tools
};

// How a request's tools are served (PlanToolCalls).
struct ToolCallPlan {
  ToolCallFormat format = ToolCallFormat::kNone;  // kNone: the output is not parsed
  std::vector<std::string> content_stop;  // the stop strings, applied to content by the parser
  bool engine_stops = true;  // false: the face clears the engine request's stop strings
  std::string grammar;       // required / a function: the output's grammar ("" otherwise)
  int max_calls = 0;         // the parser's: 1 without parallel calls, else 0 (no limit)
};

// Decides, for a model whose chat template writes calls in `format`, how the
// request's tools are served (docs/structured-outputs.md, "Tools"):
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
// auto mode the parser keeps the first and drops the rest). n > 1 with a
// parsed output: INVALID_ARGUMENT naming n (one parser per stream).
absl::StatusOr<ToolCallPlan> PlanToolCalls(ToolCallFormat format,
                                           const SchemaToGrammar& schema_to_grammar,
                                           const ToolCallInputs& inputs);

// The parser's options for a plan.
ToolCallParser::Options ToolParserOptions(const ToolCallPlan& plan);

// ---- the HTTP face ----

// PlanToolCalls for a chat completion: sets request->tool_format,
// content_stop, engine_stops and tool_grammar.
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

// ---- the gRPC face ----

// GenerateRequest's tool_choice, parallel_tool_calls and tools_json (proto
// comments) -> the plan for a model whose template writes calls in `format`;
// for tool_choice "required" or a function, request->grammar is set to the
// calls' grammar. tool_choice "" (unset): the default plan (not parsed).
// INVALID_ARGUMENT naming the field: parallel_tool_calls without
// tool_choice, tool_choice without tools in tools_json, tools_json not a
// JSON array of function tools, tool_choice naming no function of tools_json,
// a required / named tool_choice with a constraint, a parsed output with
// resume_token_ids; PlanToolCalls' errors.
absl::StatusOr<ToolCallPlan> PrepareGenerateToolCalls(ToolCallFormat format,
                                                      const SchemaToGrammar& schema_to_grammar,
                                                      v1::GenerateRequest* request);

// Rewrites the messages of one Generate stream whose output is parsed for
// tool calls, in order, before each is written: `text` becomes the content
// the message completes, the calls' pieces go to `tool_calls` (a call's
// first piece with its id and name; each fragment of its arguments once, in
// order), and the last message's finish_reason becomes TOOL_CALLS when the
// output made calls and ended at EOS or a stop. A stop string in content ends
// the output (ToolCallParser): Rewrite returns true once, the caller ends the
// generation, later messages lose their text and tokens, and the last one
// reports FINISH_REASON_STOP (or TOOL_CALLS) with the completion tokens up to
// the stop. Not thread-safe: one per stream.
class GenerateToolCallRewriter {
 public:
  explicit GenerateToolCallRewriter(ToolCallParser::Options options);
  // `message` in place; true when the parser has just stopped at a stop string.
  bool Rewrite(v1::GenerateResponse* message);

 private:
  ToolCallParser parser_;
  bool stopped_ = false;
  bool made_calls_ = false;
  uint32_t tokens_ = 0;  // tokens of the messages up to the stop
};

}  // namespace streamgen
