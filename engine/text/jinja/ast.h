// The syntax tree of a Jinja template: expressions and statements, one node
// type each with a kind (small trees; plain structs the evaluator walks).
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/text/jinja/value.h"

namespace streamgen {
namespace jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

enum class ExprKind {
  kLiteral,      // literal
  kName,         // name
  kList,         // [children...]
  kTuple,        // (children...): evaluates to a list
  kDict,         // {children[0]: children[1], ...}
  kGetAttr,      // children[0].name
  kGetItem,      // children[0][children[1]]
  kSlice,        // children[0][children[1]:children[2]:children[3]] (null: absent)
  kCall,         // children[0](children[1..], keyword...)
  kFilter,       // children[0] | name(children[1..], keyword...)
  kTest,         // children[0] is [not] name(children[1..])
  kUnary,        // name ("-", "+", "not") children[0]
  kBinary,       // children[0] name children[1]: arithmetic, ~, comparisons, in, not in
  kAnd,          // children[0] and children[1]
  kOr,           // children[0] or children[1]
  kConditional,  // children[0] if children[1] else children[2] (null: no else)
};

struct Expr {
  ExprKind kind = ExprKind::kLiteral;
  int line = 0;
  int column = 0;
  Value literal;
  std::string name;  // a name, attribute, filter, test or operator
  bool negated = false;  // "is not"
  std::vector<ExprPtr> children;
  std::vector<std::pair<std::string, ExprPtr>> keyword;  // call/filter keyword arguments
};

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

enum class StmtKind {
  kText,      // text
  kOutput,    // {{ expr }}
  kIf,        // if expr: body else else_body (an elif is an If alone in else_body)
  kFor,       // for targets in expr [if filter]: body else else_body
  kSet,       // set targets[0][.attr] = expr, or set a, b = expr
  kSetBlock,  // set targets[0]: body's output
  kMacro,     // macro name(params): body
  kBreak,
  kContinue,
};

struct Stmt {
  StmtKind kind = StmtKind::kText;
  int line = 0;
  int column = 0;
  std::string text;                  // kText
  ExprPtr expr;                      // output, condition, iterable, assigned value
  ExprPtr filter;                    // for ... if filter
  std::vector<std::string> targets;  // for and set targets
  std::string attr;                  // set ns.attr = ...
  std::string name;                  // macro name
  std::vector<std::pair<std::string, ExprPtr>> params;  // macro parameters (default or null)
  Body body;
  Body else_body;
};

}  // namespace jinja
}  // namespace streamgen
