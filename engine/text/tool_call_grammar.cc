// The grammar of tool_choice "required" and named functions: the format's
// wrapping around one JSON Schema for the call object (engine/text/tool_calls.h).
#include <set>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/text/tool_calls.h"

namespace streamgen {
namespace {

using OJson = nlohmann::ordered_json;

bool IsNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-';
}

// The end of the literal, class or repetition count that opens at g[i].
size_t SkipQuoted(absl::string_view g, size_t i, char close) {
  for (++i; i < g.size(); ++i) {
    if (g[i] == '\\') {
      ++i;
    } else if (g[i] == close) {
      return i + 1;
    }
  }
  return g.size();
}

}  // namespace

std::string PrefixGrammarRules(absl::string_view g, absl::string_view prefix) {
  // The names it defines: NAME followed by "::=".
  std::set<std::string, std::less<>> defined;
  for (size_t i = 0; i < g.size();) {
    if (g[i] == '"' || g[i] == '[' || g[i] == '{') {
      i = SkipQuoted(g, i, g[i] == '"' ? '"' : g[i] == '[' ? ']' : '}');
    } else if (g[i] == '#') {
      while (i < g.size() && g[i] != '\n') ++i;
    } else if (IsNameChar(g[i])) {
      size_t start = i;
      while (i < g.size() && IsNameChar(g[i])) ++i;
      size_t after = i;
      while (after < g.size() && (g[after] == ' ' || g[after] == '\t')) ++after;
      if (g.substr(after, 3) == "::=") defined.emplace(g.substr(start, i - start));
    } else {
      ++i;
    }
  }
  std::string out;
  for (size_t i = 0; i < g.size();) {
    size_t start = i;
    // Literals, classes and repetition counts ({0,16}: rules may be named "0").
    if (g[i] == '"' || g[i] == '[' || g[i] == '{') {
      i = SkipQuoted(g, i, g[i] == '"' ? '"' : g[i] == '[' ? ']' : '}');
    } else if (g[i] == '#') {
      while (i < g.size() && g[i] != '\n') ++i;
    } else if (IsNameChar(g[i])) {
      while (i < g.size() && IsNameChar(g[i])) ++i;
      if (defined.count(g.substr(start, i - start)) > 0) out.append(prefix.data(), prefix.size());
    } else {
      ++i;
    }
    out.append(g.data() + start, i - start);
  }
  return out;
}

OJson ToolCallObjectSchema(ToolCallFormat format, const std::vector<ToolSpec>& tools) {
  const char* key = format == ToolCallFormat::kLlama3Json ? "parameters" : "arguments";
  OJson any = OJson::array();
  for (const ToolSpec& tool : tools) {
    OJson parameters = tool.parameters.is_null() ? OJson{{"type", "object"}} : tool.parameters;
    OJson call = {{"type", "object"},
                  {"properties", {{"name", {{"const", tool.name}}}, {key, std::move(parameters)}}},
                  {"required", {"name", key}},
                  {"additionalProperties", false}};
    any.push_back(std::move(call));
  }
  if (any.size() == 1) return std::move(any[0]);
  return {{"anyOf", std::move(any)}};
}

absl::StatusOr<std::string> ToolCallGrammar(
    ToolCallFormat format, const std::vector<ToolSpec>& tools, bool parallel,
    const std::function<absl::StatusOr<std::string>(const OJson& schema)>& schema_to_grammar) {
  if (format == ToolCallFormat::kNone) {
    return absl::InvalidArgumentError("the chat template has no tool-call format streamgen knows");
  }
  if (tools.empty()) return absl::InvalidArgumentError("no tools to call");
  absl::StatusOr<std::string> object = schema_to_grammar(ToolCallObjectSchema(format, tools));
  if (!object.ok()) return object.status();
  // The call object's start rule is now call-root.
  std::string rules = PrefixGrammarRules(*object, "call-");
  std::string root;
  switch (format) {
    case ToolCallFormat::kHermes:
      // Qwen's template writes "<tool_call>\n{...}\n</tool_call>", calls apart by "\n".
      root = parallel ? "root ::= tool-call (\"\\n\" tool-call)*\n"
                        "tool-call ::= \"<tool_call>\\n\" call-root \"\\n</tool_call>\"\n"
                      : "root ::= \"<tool_call>\\n\" call-root \"\\n</tool_call>\"\n";
      break;
    case ToolCallFormat::kLlama3Json:
      // Llama 3.1's template takes one call; vLLM's parser several joined by "; ".
      root = parallel ? "root ::= call-root (\"; \" call-root)*\n" : "root ::= call-root\n";
      break;
    case ToolCallFormat::kMistral:
      root = parallel ? "root ::= \"[\" call-root (\", \" call-root)* \"]\"\n"
                      : "root ::= \"[\" call-root \"]\"\n";
      break;
    case ToolCallFormat::kNone:
      break;
  }
  return absl::StrCat(root, rules);
}

}  // namespace streamgen
