// Context-free grammars over Unicode code points: the IR that the EBNF
// parser (GBNF dialect, docs/structured-outputs.md "Grammar syntax"), the
// regex and choice compilers and the JSON Schema compiler produce, and the
// byte-level form the matcher runs (CompileGrammar).
//
// Two ways to produce a grammar:
//   - text in the dialect, ParseGrammar(text);
//   - the IR directly: a Grammar with Rules whose bodies are Exprs built with
//     the helpers below (Literal, CharClass, Seq, Alt, Repeat, Ref).
// Either way CompileGrammar checks it (undefined rules, left recursion, ...)
// and lowers it to UTF-8 bytes.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace streamgen {
namespace grammar {

// An inclusive range of code points [lo, hi].
struct CodePointRange {
  uint32_t lo = 0;
  uint32_t hi = 0;
};

// One node of a rule's body.
struct Expr {
  enum class Kind {
    kSequence,     // children one after another; no children: the empty string
    kAlternation,  // one of children (at least one)
    kCharClass,    // one code point in `ranges` (or, `negated`, not in them)
    kRuleRef,      // the rule `rule` (an index into Grammar::rules)
    kRepeat,       // children[0] between min_count and max_count times
  };
  Kind kind = Kind::kSequence;
  std::vector<Expr> children;
  std::vector<CodePointRange> ranges;  // kCharClass
  bool negated = false;                // kCharClass
  int rule = -1;                       // kRuleRef
  int min_count = 0;                   // kRepeat
  int max_count = -1;                  // kRepeat; -1: unbounded
  // Where the expression came from (1-based; 0: not from text). Errors found
  // after parsing (left recursion, ...) name it.
  int line = 0;
  int column = 0;
};

struct Rule {
  std::string name;
  Expr body;
  int line = 0;  // of the definition (0: built, not parsed)
  int column = 0;
};

struct Grammar {
  std::vector<Rule> rules;
  int root = -1;  // index of the start rule
};

// Builders for the IR.
Expr Empty();                                  // the empty string
Expr Literal(std::string_view utf8);           // the exact string (a sequence of classes)
Expr CodePoint(uint32_t cp);                   // one code point
Expr CharClass(std::vector<CodePointRange> ranges, bool negated = false);
Expr AnyChar();                                // any code point (".")
Expr Seq(std::vector<Expr> items);
Expr Alt(std::vector<Expr> items);
Expr Repeat(Expr item, int min_count, int max_count);  // max_count -1: unbounded
Expr Optional(Expr item);                      // Repeat(item, 0, 1)
Expr Star(Expr item);                          // Repeat(item, 0, -1)
Expr Plus(Expr item);                          // Repeat(item, 1, -1)
Expr Ref(int rule);

// Adds a rule (body empty, to be set) or returns the existing one by name.
int AddRule(Grammar* g, std::string_view name);
// Index of the rule named `name`, or -1.
int FindRule(const Grammar& g, std::string_view name);

// Parses the EBNF dialect (llama.cpp's GBNF): `name ::= alternatives`, `|`,
// `( )`, `* + ?`, `{m}` `{m,}` `{m,n}`, "literals" with escapes, [classes],
// `.`, `#` comments; `root` is the start rule. Errors are INVALID_ARGUMENT
// "grammar: line L, column C: <what>".
absl::StatusOr<Grammar> ParseGrammar(std::string_view text);

// A regular expression (the subset in docs/structured-outputs.md) as a
// grammar whose root matches exactly the strings the regex fully matches.
// Errors: INVALID_ARGUMENT "regex: column C: <what>".
absl::StatusOr<Grammar> RegexToGrammar(std::string_view pattern);

// A grammar whose root is exactly one of `choices` (at least one).
absl::StatusOr<Grammar> ChoiceGrammar(const std::vector<std::string>& choices);

// The built-in JSON grammar (root: an object, or any value with
// object_root = false). Whitespace: see docs/structured-outputs.md.
const char* JsonGrammarText(bool object_root);

// The grammar in the dialect (ParseGrammar(ToText(g)) is equivalent to g).
std::string ToText(const Grammar& g);

// ---------------------------------------------------------------------------
// The byte-level form the matcher runs: every rule is a list of alternatives,
// each a sequence of elements ending in kEnd; elements are byte ranges or
// references to rules. Code point classes become UTF-8 byte sequences,
// repetitions become helper rules.
struct Element {
  enum Type : uint8_t { kBytes, kRuleRef, kEnd };
  Type type = kEnd;
  uint8_t lo = 0;  // kBytes: [lo, hi]
  uint8_t hi = 0;
  int32_t rule = -1;  // kRuleRef
};

class CompiledGrammar {
 public:
  std::vector<Element> elements;
  // Per rule: the index in `elements` of each alternative's first element.
  std::vector<std::vector<uint32_t>> alternatives;
  std::vector<std::string> rule_names;  // for messages and debugging
  int root = -1;
};

// Checks and lowers `g`: INVALID_ARGUMENT "grammar: ..." (with the line and
// column when the rule came from text) for a reference to a rule that does
// not exist, a missing root, left recursion, a repetition of something that
// matches the empty string, or a grammar too large.
absl::StatusOr<std::shared_ptr<const CompiledGrammar>> CompileGrammar(const Grammar& g);

}  // namespace grammar
}  // namespace streamgen
