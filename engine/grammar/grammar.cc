// The IR's builders, ToText, the built-in JSON grammar and choices.
#include "engine/grammar/grammar.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/grammar/utf8.h"

namespace streamgen {
namespace grammar {

Expr Empty() { return Expr(); }

Expr CodePoint(uint32_t cp) { return CharClass({{cp, cp}}); }

Expr Literal(std::string_view utf8) {
  Expr e;
  e.kind = Expr::Kind::kSequence;
  for (size_t pos = 0; pos < utf8.size();) {
    e.children.push_back(CodePoint(DecodeUtf8Lenient(utf8, &pos)));
  }
  return e;
}

Expr CharClass(std::vector<CodePointRange> ranges, bool negated) {
  Expr e;
  e.kind = Expr::Kind::kCharClass;
  e.ranges = std::move(ranges);
  e.negated = negated;
  return e;
}

Expr AnyChar() { return CharClass({{0, kMaxCodePoint}}); }

Expr Seq(std::vector<Expr> items) {
  Expr e;
  e.kind = Expr::Kind::kSequence;
  e.children = std::move(items);
  return e;
}

Expr Alt(std::vector<Expr> items) {
  Expr e;
  e.kind = Expr::Kind::kAlternation;
  e.children = std::move(items);
  return e;
}

Expr Repeat(Expr item, int min_count, int max_count) {
  Expr e;
  e.kind = Expr::Kind::kRepeat;
  e.line = item.line;
  e.column = item.column;
  e.children.push_back(std::move(item));
  e.min_count = min_count;
  e.max_count = max_count;
  return e;
}

Expr Optional(Expr item) { return Repeat(std::move(item), 0, 1); }
Expr Star(Expr item) { return Repeat(std::move(item), 0, -1); }
Expr Plus(Expr item) { return Repeat(std::move(item), 1, -1); }

Expr Ref(int rule) {
  Expr e;
  e.kind = Expr::Kind::kRuleRef;
  e.rule = rule;
  return e;
}

int FindRule(const Grammar& g, std::string_view name) {
  for (size_t i = 0; i < g.rules.size(); ++i) {
    if (g.rules[i].name == name) return static_cast<int>(i);
  }
  return -1;
}

int AddRule(Grammar* g, std::string_view name) {
  const int found = FindRule(*g, name);
  if (found >= 0) return found;
  g->rules.push_back(Rule{std::string(name), Empty()});
  return static_cast<int>(g->rules.size()) - 1;
}

namespace {

// A code point inside "..." or [...], escaped where the dialect needs it.
std::string EscapeCodePoint(uint32_t cp, bool in_class) {
  switch (cp) {
    case '\n': return "\\n";
    case '\t': return "\\t";
    case '\r': return "\\r";
    case '\\': return "\\\\";
    case '"': return "\\\"";
    default: break;
  }
  if (in_class && (cp == ']' || cp == '-' || cp == '^' || cp == '[')) {
    return absl::StrCat("\\", std::string(1, static_cast<char>(cp)));
  }
  if (cp < 0x20 || cp == 0x7F) return absl::StrFormat("\\x%02X", cp);
  if (cp >= 0xD800 && cp <= 0xDFFF) return absl::StrFormat("\\u%04X", cp);
  if (cp > kMaxCodePoint) return absl::StrFormat("\\U%08X", cp);
  std::string out;
  AppendUtf8(cp, &out);
  return out;
}

void ExprToText(const Grammar& g, const Expr& e, std::string* out) {
  switch (e.kind) {
    case Expr::Kind::kSequence: {
      if (e.children.empty()) {
        out->append("\"\"");
        return;
      }
      out->append("(");
      for (size_t i = 0; i < e.children.size(); ++i) {
        if (i > 0) out->append(" ");
        ExprToText(g, e.children[i], out);
      }
      out->append(")");
      return;
    }
    case Expr::Kind::kAlternation: {
      out->append("(");
      for (size_t i = 0; i < e.children.size(); ++i) {
        if (i > 0) out->append(" | ");
        ExprToText(g, e.children[i], out);
      }
      out->append(")");
      return;
    }
    case Expr::Kind::kCharClass: {
      out->append(e.negated ? "[^" : "[");
      for (const CodePointRange& r : e.ranges) {
        out->append(EscapeCodePoint(r.lo, true));
        if (r.hi != r.lo) absl::StrAppend(out, "-", EscapeCodePoint(r.hi, true));
      }
      out->append("]");
      return;
    }
    case Expr::Kind::kRuleRef:
      if (e.rule >= 0 && e.rule < static_cast<int>(g.rules.size())) {
        out->append(g.rules[e.rule].name);
      } else {
        absl::StrAppend(out, "undefined-rule-", e.rule);
      }
      return;
    case Expr::Kind::kRepeat:
      out->append("(");
      if (!e.children.empty()) ExprToText(g, e.children[0], out);
      out->append(")");
      if (e.max_count < 0) {
        absl::StrAppend(out, "{", e.min_count, ",}");
      } else {
        absl::StrAppend(out, "{", e.min_count, ",", e.max_count, "}");
      }
      return;
  }
}

}  // namespace

std::string ToText(const Grammar& g) {
  std::string out;
  for (const Rule& r : g.rules) {
    absl::StrAppend(&out, r.name, " ::= ");
    ExprToText(g, r.body, &out);
    out.append("\n");
  }
  return out;
}

const char* JsonGrammarText(bool object_root) {
  // RFC 8259 JSON. Whitespace is limited so that a model cannot stall in it:
  // at most one space, or one newline followed by up to 20 spaces or tabs,
  // where JSON allows whitespace (after a value, ':' ',' '{' '['); none
  // before the first '{'. Numbers: at most 16 integer digits, 16 exponent
  // digits (llama.cpp's json.gbnf makes the same choices).
  static const char kObjectRoot[] = R"(root ::= object
value ::= object | array | string | number | ("true" | "false" | "null") ws
object ::= "{" ws ( string ":" ws value ("," ws string ":" ws value)* )? "}" ws
array ::= "[" ws ( value ("," ws value)* )? "]" ws
string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4}) )* "\"" ws
number ::= "-"? ("0" | [1-9] [0-9]{0,15}) ("." [0-9]+)? ([eE] [-+]? [0-9]{1,16})? ws
ws ::= | " " | "\n" [ \t]{0,20}
)";
  static const char kValueRoot[] = R"(root ::= value
value ::= object | array | string | number | ("true" | "false" | "null") ws
object ::= "{" ws ( string ":" ws value ("," ws string ":" ws value)* )? "}" ws
array ::= "[" ws ( value ("," ws value)* )? "]" ws
string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4}) )* "\"" ws
number ::= "-"? ("0" | [1-9] [0-9]{0,15}) ("." [0-9]+)? ([eE] [-+]? [0-9]{1,16})? ws
ws ::= | " " | "\n" [ \t]{0,20}
)";
  return object_root ? kObjectRoot : kValueRoot;
}

absl::StatusOr<Grammar> ChoiceGrammar(const std::vector<std::string>& choices) {
  if (choices.empty()) return absl::InvalidArgumentError("choice: no choices");
  std::vector<Expr> alts;
  for (size_t i = 0; i < choices.size(); ++i) {
    if (!IsValidUtf8(choices[i])) {
      return absl::InvalidArgumentError(absl::StrCat("choice: choice ", i, " is not valid UTF-8"));
    }
    alts.push_back(Literal(choices[i]));
  }
  Grammar g;
  g.root = AddRule(&g, "root");
  g.rules[g.root].body = Alt(std::move(alts));
  return g;
}

}  // namespace grammar
}  // namespace streamgen
