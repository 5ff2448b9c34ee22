// The Jinja evaluator: walks a parsed template with a context of variables and
// writes the output. Sandboxed: every statement, expression and loop
// iteration counts a step; macro calls nest to a bounded depth; the output
// and every string or list built are bounded in size. Not thread-safe: one
// Evaluator per render.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/text/jinja/ast.h"
#include "engine/text/jinja/value.h"

namespace streamgen {
namespace jinja {

struct Limits {
  // Evaluation steps (statements, expressions, loop iterations) per render.
  int64_t max_steps = 5'000'000;
  // Macro calls nested inside each other.
  int max_call_depth = 50;
  // Expressions, blocks and macro calls nested inside each other, all counted
  // together: what bounds the evaluator's recursion (its stack).
  int max_depth = 300;
  // Bytes of output, and of any one string a template builds.
  size_t max_output_bytes = 1 << 22;
  // Items of any one list a template builds.
  size_t max_list_items = 1 << 20;
};

class Evaluator {
 public:
  // `name` names the template in error messages; `globals` is a dict.
  Evaluator(std::string name, Limits limits, Value globals);

  // INVALID_ARGUMENT "NAME:LINE:COLUMN: message" for a render-time error; the
  // bare message for raise_exception(message) (payload kRaisedPayload).
  absl::StatusOr<std::string> Render(const Body& body);

 private:
  enum class Flow { kNormal, kBreak, kContinue };

  absl::Status Exec(const Body& body, std::string* out);
  absl::Status ExecBody(const Body& body, std::string* out);
  absl::Status ExecOne(const Stmt& stmt, std::string* out);
  absl::Status ExecFor(const Stmt& stmt, std::string* out);
  absl::Status ExecSet(const Stmt& stmt);
  Value MakeMacro(const Stmt& stmt);
  absl::StatusOr<Value> Eval(const Expr& expr);
  absl::StatusOr<Value> EvalInner(const Expr& expr);
  absl::StatusOr<Value> EvalBinary(const std::string& op, const Value& a, const Value& b);
  absl::StatusOr<CallArgs> EvalArgs(const Expr& expr, size_t first);
  absl::Status Step();
  absl::Status CheckSize(const Value& value);
  absl::Status Located(const absl::Status& status, int line, int column) const;

  Value Lookup(const std::string& name) const;
  void Assign(const std::string& name, Value value);

  std::string name_;
  Limits limits_;
  // Scopes, innermost last: [0] globals + context, then one per for loop or macro call.
  std::vector<std::unordered_map<std::string, Value>> scopes_;
  Value globals_;
  int64_t steps_ = 0;
  int call_depth_ = 0;
  int depth_ = 0;  // current nesting of Eval and Exec calls
  size_t floor_ = 0;  // the innermost macro call's scope: scopes in [1, floor_) are hidden
  Flow flow_ = Flow::kNormal;
};

}  // namespace jinja
}  // namespace streamgen
