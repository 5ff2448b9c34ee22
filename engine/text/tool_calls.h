// Tool calls in a model's output: which format a chat template asks its model
// to write calls in, a streaming parser that splits generated text into
// content and calls, and the grammar that constrains an output to calls
// (tool_choice "required" or a named function). Wire-independent: the OpenAI
// encoding of the events is server/openai_encoder.h's. No torch, no protobuf.
// docs/structured-outputs.md ("Tools") is the user's page.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/text/stop_matcher.h"
#include "nlohmann/json.hpp"

namespace streamgen {

enum class ToolCallFormat {
  kNone = 0,   // the template shows no format streamgen knows: output is content
  kLlama3Json, // Llama 3.1 / 3.2 / 3.3: {"name": ..., "parameters": {...}} as the
               // whole output, after an optional <|python_tag|>; several joined by ";"
  kHermes,     // Hermes / Qwen 2.5 / Qwen 3: <tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>
  kMistral,    // Mistral (v3, Nemo): [TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]
};

// "llama3_json", "hermes", "mistral", "" (kNone).
const char* ToolCallFormatName(ToolCallFormat format);

// The format a Jinja chat template writes an assistant's tool calls in, by its
// text (never the model's name): "<tool_call>" -> kHermes (checked first: the
// Hermes 3 Llama template also says "parameters"); "[TOOL_CALLS]" -> kMistral
// (unless "[ARGS]" shows Mistral Small 3.2's "[TOOL_CALLS]name[ARGS]{...}"
// form, which is not supported: kNone); "<|start_header_id|>" with "<|python_tag|>" or "\"parameters\"" ->
// kLlama3Json. Anything else -> kNone.
ToolCallFormat DetectToolCallFormat(absl::string_view chat_template);

// One piece of a parsed output.
struct ToolCallEvent {
  enum class Kind {
    kContent,    // `text` is content (text outside calls)
    kCallStart,  // call `index` begins: `id`, `name`
    kArguments,  // `text` is the next fragment of call `index`'s arguments (JSON text)
  };
  Kind kind = Kind::kContent;
  std::string text;
  int index = 0;
  std::string id;
  std::string name;
};

// Splits an output into content and tool calls as its text streams in.
// Not thread-safe: one per output.
//
// The rules (docs/structured-outputs.md):
// - A call is recognised by its opening (<tool_call>; [TOOL_CALLS] or a "[" that
//   starts the output for Mistral, whose [TOOL_CALLS] is a control token the
//   detokenizer drops; <|python_tag|> or a "{" that starts the output for Llama)
//   followed by {"name": STRING, "arguments" (Llama: or "parameters"): VALUE.
//   Once that header is complete the call starts (kCallStart), and VALUE's text
//   streams out as kArguments fragments, byte for byte as the model wrote it:
//   the fragments of a call concatenate to its arguments exactly. Members after
//   VALUE (Mistral's "id") are skipped.
// - A call whose header does not match (keys in another order, not JSON) is held
//   back until its block ends (</tool_call>) or the output ends, then parsed as a
//   whole; when that fails too, its text is content, openings included. Llama
//   and Mistral outputs that do not start with a call are content throughout.
// - Whitespace next to a call is not content; text between or after calls is.
// - `stop` strings apply to content only: a stop string inside a call's text
//   does not end the output. When one matches, the content before it is
//   released, stopped() is true, and every later text is ignored (the caller
//   ends the generation).
// - `max_calls` > 0 (OpenAI's parallel_tool_calls false: 1): calls beyond it
//   are parsed and dropped (neither calls nor content).
// - An output that ends inside a call's arguments (max_tokens) leaves that
//   call's arguments incomplete: its fragments so far stand.
class ToolCallParser {
 public:
  struct Options {
    ToolCallFormat format = ToolCallFormat::kNone;  // kNone: everything is content
    std::vector<std::string> stop;                  // applied to content only
    int max_calls = 0;                              // 0: no limit
    // A fresh call id; unset: "call_" + 24 random letters and digits (Mistral:
    // 9 letters and digits, which its template requires of ids sent back).
    std::function<std::string()> new_id;
  };
  explicit ToolCallParser(Options options);

  // The events the new text completes (possibly none: text is held back while it
  // may still turn out to be part of a call's opening or a stop string).
  std::vector<ToolCallEvent> Feed(absl::string_view text);
  // The end of the output: releases whatever was held back.
  std::vector<ToolCallEvent> Finish();

  bool stopped() const { return stopped_; }
  // Calls started (and not dropped) so far.
  int call_count() const { return calls_; }

 private:
  enum class State {
    kStart,         // nothing consumed yet (Llama, Mistral: does the output open with a call?)
    kContent,       // content; Hermes and Mistral look for the opening marker
    kContentOnly,   // content to the end (Llama after a non-call start)
    kArrayOpen,     // Mistral: after [TOOL_CALLS], expecting "["
    kHeader,        // expecting {"name": STRING, "arguments":
    kArguments,     // streaming the arguments' value
    kAfterValue,    // after the arguments: more members or "}"
    kMemberValue,   // skipping another member's value
    kAfterCall,     // after a call's "}": the format's separator or closing
    kHeldBlock,     // an unrecognised call: held until its end, then parsed whole
  };

  // Runs the state machine over buffer_ as far as it can.
  void Process(bool final);
  bool ProcessStart(bool final);
  bool ProcessContent(bool final);
  bool ProcessHeader(bool final);
  bool ProcessValue(bool final, bool emit);
  bool ProcessAfterValue(bool final);
  bool ProcessAfterCall(bool final);
  bool ProcessHeldBlock(bool final);

  void StartCall(const std::string& name);
  void EmitArguments(absl::string_view text);
  // Content as the model wrote it: through the stop strings, whitespace held.
  void Content(absl::string_view text);
  void Release(absl::string_view text);
  void FlushContent();
  // The held text (opening included) becomes content; `to` is what follows.
  void FallBack(State to);

  Options options_;
  StopMatcher stop_matcher_;
  State state_ = State::kStart;
  std::string buffer_;       // text not consumed yet
  std::string opening_;      // the current call's opening as written (for FallBack)
  std::string held_ws_;      // content whitespace not released yet
  bool drop_ = false;        // the current call is beyond max_calls
  int calls_ = 0;            // calls started (not dropped)
  int parsed_calls_ = 0;     // calls seen, dropped ones included
  bool stopped_ = false;
  bool after_call_ = false;  // whitespace that follows is not content
  // The JSON value scanner (kArguments, kMemberValue).
  int depth_ = 0;
  bool in_string_ = false;
  bool escape_ = false;
  bool value_started_ = false;
  bool scalar_ = false;
  std::vector<ToolCallEvent> events_;
};

// A tool as the grammar sees it: OpenAI's function name and parameter schema.
struct ToolSpec {
  std::string name;
  nlohmann::ordered_json parameters;  // a JSON Schema; absent in the request: {"type": "object"}
};

// The JSON Schema of one call object of `format` for any of `tools`: an anyOf
// (one tool: the object itself) of {"name": {"const": NAME}, KEY: PARAMETERS}
// with both required, no other properties; KEY is "parameters" for Llama,
// "arguments" otherwise.
nlohmann::ordered_json ToolCallObjectSchema(ToolCallFormat format, const std::vector<ToolSpec>& tools);

// A grammar (the EBNF dialect of docs/structured-outputs.md, GBNF-like) whose
// language is the format's wrapping of one call (parallel: one or more) of
// `tools`. `schema_to_grammar` turns a JSON Schema into a grammar whose start
// rule is `root` (JsonSchemaToGrammar); its rules are renamed with the prefix
// "call-" so that they cannot meet the wrapper's. Mistral's opening
// [TOOL_CALLS] is a control token no grammar can produce: the grammar starts
// at "[" (the parser takes that too). INVALID_ARGUMENT for kNone or no tools;
// the converter's errors as they are.
absl::StatusOr<std::string> ToolCallGrammar(
    ToolCallFormat format, const std::vector<ToolSpec>& tools, bool parallel,
    const std::function<absl::StatusOr<std::string>(const nlohmann::ordered_json& schema)>&
        schema_to_grammar);

// `grammar` with every rule it defines ("name ::= ...") renamed to
// `prefix` + name, in definitions and references; string literals, character
// classes, repetition counts ({0,16}) and comments are left alone.
std::string PrefixGrammarRules(absl::string_view grammar, absl::string_view prefix);

}  // namespace streamgen
