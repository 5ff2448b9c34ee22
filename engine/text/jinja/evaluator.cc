#include "engine/text/jinja/evaluator.h"

#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "engine/text/jinja/builtins.h"

namespace streamgen {
namespace jinja {
namespace {

constexpr char kLocatedPayload[] = "streamgen.jinja/located";

bool IsMarked(const absl::Status& status, const char* payload) {
  return status.GetPayload(payload).has_value();
}

absl::Status TypeError(const char* op, const Value& a, const Value& b) {
  return absl::InvalidArgumentError(absl::StrCat("unsupported operand type(s) for ", op, ": '",
                                                 a.TypeName(), "' and '", b.TypeName(), "'"));
}

// Python's floor division and modulo on ints.
int64_t FloorDiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

}  // namespace

Evaluator::Evaluator(std::string name, Limits limits, Value globals)
    : name_(std::move(name)), limits_(limits), globals_(std::move(globals)) {
  scopes_.emplace_back();
}

absl::StatusOr<std::string> Evaluator::Render(const Body& body) {
  std::string out;
  SG_RETURN_IF_ERROR(Exec(body, &out));
  return out;
}

absl::Status Evaluator::Step() {
  if (++steps_ > limits_.max_steps) {
    return absl::InvalidArgumentError(
        absl::StrCat("the template ran more than ", limits_.max_steps, " steps"));
  }
  return absl::OkStatus();
}

absl::Status Evaluator::CheckSize(const Value& value) {
  if (value.is_string() && value.str().size() > limits_.max_output_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("the template built a string of more than ",
                                                   limits_.max_output_bytes, " bytes"));
  }
  if (value.is_array() && value.items().size() > limits_.max_list_items) {
    return absl::InvalidArgumentError(absl::StrCat("the template built a list of more than ",
                                                   limits_.max_list_items, " items"));
  }
  return absl::OkStatus();
}

absl::Status Evaluator::Located(const absl::Status& status, int line, int column) const {
  if (status.ok() || IsMarked(status, kLocatedPayload) || IsMarked(status, kRaisedPayload)) {
    return status;
  }
  absl::Status located(status.code(),
                       absl::StrCat(name_, ":", line, ":", column, ": ", status.message()));
  located.SetPayload(kLocatedPayload, absl::Cord("1"));
  return located;
}

Value Evaluator::Lookup(const std::string& name) const {
  for (size_t i = scopes_.size(); i-- > 0;) {
    if (i > 0 && i < floor_) i = 0;  // a macro does not see its caller's loop scopes
    auto it = scopes_[i].find(name);
    if (it != scopes_[i].end()) return it->second;
  }
  if (const Value* global = globals_.Find(name)) return *global;
  return Value::Undefined(absl::StrCat("'", name, "' is undefined"));
}

void Evaluator::Assign(const std::string& name, Value value) {
  scopes_.back()[name] = std::move(value);
}

absl::Status Evaluator::Exec(const Body& body, std::string* out) {
  if (depth_ >= limits_.max_depth) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the template nests deeper than ", limits_.max_depth,
        " (expressions, blocks and macro calls together)"));
  }
  ++depth_;
  absl::Status status = ExecBody(body, out);
  --depth_;
  return status;
}

absl::Status Evaluator::ExecBody(const Body& body, std::string* out) {
  for (const StmtPtr& stmt : body) {
    SG_RETURN_IF_ERROR(Located(ExecOne(*stmt, out), stmt->line, stmt->column));
    if (out->size() > limits_.max_output_bytes) {
      return Located(absl::InvalidArgumentError(absl::StrCat(
                         "the output is longer than ", limits_.max_output_bytes, " bytes")),
                     stmt->line, stmt->column);
    }
    if (flow_ != Flow::kNormal) break;
  }
  return absl::OkStatus();
}

absl::Status Evaluator::ExecOne(const Stmt& stmt, std::string* out) {
  SG_RETURN_IF_ERROR(Step());
  switch (stmt.kind) {
    case StmtKind::kText:
      out->append(stmt.text);
      return absl::OkStatus();
    case StmtKind::kOutput: {
      SG_ASSIGN_OR_RETURN(Value value, Eval(*stmt.expr));
      out->append(value.ToString());
      return absl::OkStatus();
    }
    case StmtKind::kIf: {
      SG_ASSIGN_OR_RETURN(Value condition, Eval(*stmt.expr));
      return Exec(condition.Truthy() ? stmt.body : stmt.else_body, out);
    }
    case StmtKind::kFor: return ExecFor(stmt, out);
    case StmtKind::kSet: return ExecSet(stmt);
    case StmtKind::kSetBlock: {
      std::string captured;
      SG_RETURN_IF_ERROR(Exec(stmt.body, &captured));
      Assign(stmt.targets[0], Value::String(std::move(captured)));
      return absl::OkStatus();
    }
    case StmtKind::kMacro:
      Assign(stmt.name, MakeMacro(stmt));
      return absl::OkStatus();
    case StmtKind::kBreak: flow_ = Flow::kBreak; return absl::OkStatus();
    case StmtKind::kContinue: flow_ = Flow::kContinue; return absl::OkStatus();
  }
  return absl::OkStatus();
}

absl::Status Evaluator::ExecFor(const Stmt& stmt, std::string* out) {
  SG_ASSIGN_OR_RETURN(Value iterable, Eval(*stmt.expr));
  SG_ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(iterable));
  scopes_.emplace_back();
  auto bind = [&](const Value& item) -> absl::Status {
    if (stmt.targets.size() == 1) {
      Assign(stmt.targets[0], item);
      return absl::OkStatus();
    }
    if (!item.is_array() || item.items().size() != stmt.targets.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "cannot unpack ", item.TypeName(), " into ", stmt.targets.size(), " loop variables"));
    }
    for (size_t t = 0; t < stmt.targets.size(); ++t) Assign(stmt.targets[t], item.items()[t]);
    return absl::OkStatus();
  };
  absl::Status status;
  if (stmt.filter) {  // for x in xs if cond: the loop sees only the items that pass
    std::vector<Value> kept;
    for (const Value& item : items) {
      SG_RETURN_IF_ERROR(Step());
      status = bind(item);
      if (!status.ok()) break;
      absl::StatusOr<Value> keep = Eval(*stmt.filter);
      if (!keep.ok()) {
        status = keep.status();
        break;
      }
      if (keep->Truthy()) kept.push_back(item);
    }
    items = std::move(kept);
  }
  for (size_t i = 0; status.ok() && i < items.size(); ++i) {
    status = Step();
    if (!status.ok()) break;
    Value loop = Value::Object();
    int64_t n = static_cast<int64_t>(items.size()), k = static_cast<int64_t>(i);
    loop.Set("index", Value::Int(k + 1));
    loop.Set("index0", Value::Int(k));
    loop.Set("revindex", Value::Int(n - k));
    loop.Set("revindex0", Value::Int(n - k - 1));
    loop.Set("first", Value::Bool(i == 0));
    loop.Set("last", Value::Bool(i + 1 == items.size()));
    loop.Set("length", Value::Int(n));
    loop.Set("depth", Value::Int(1));
    loop.Set("depth0", Value::Int(0));
    loop.Set("previtem", i > 0 ? items[i - 1] : Value::Undefined("there is no previous item"));
    loop.Set("nextitem", i + 1 < items.size() ? items[i + 1]
                                               : Value::Undefined("there is no next item"));
    loop.Set("cycle", Value::Fn("loop.cycle", [k](CallArgs& args) -> absl::StatusOr<Value> {
               if (args.positional.empty()) {
                 return absl::InvalidArgumentError("loop.cycle: no items to cycle through");
               }
               return args.positional[k % args.positional.size()];
             }));
    Assign("loop", loop);
    status = bind(items[i]);
    if (status.ok()) status = Exec(stmt.body, out);
    if (flow_ == Flow::kBreak) {
      flow_ = Flow::kNormal;
      break;
    }
    flow_ = Flow::kNormal;
  }
  scopes_.pop_back();
  SG_RETURN_IF_ERROR(status);
  if (items.empty()) SG_RETURN_IF_ERROR(Exec(stmt.else_body, out));
  return absl::OkStatus();
}

absl::Status Evaluator::ExecSet(const Stmt& stmt) {
  SG_ASSIGN_OR_RETURN(Value value, Eval(*stmt.expr));
  if (!stmt.attr.empty()) {
    Value target = Lookup(stmt.targets[0]);
    if (!target.is_object() || !target.object().is_namespace) {
      return absl::InvalidArgumentError(absl::StrCat(
          "cannot assign attribute '", stmt.attr, "' of '", stmt.targets[0],
          "': only a namespace() has assignable attributes"));
    }
    target.Set(stmt.attr, std::move(value));
    return absl::OkStatus();
  }
  if (stmt.targets.size() == 1) {
    Assign(stmt.targets[0], std::move(value));
    return absl::OkStatus();
  }
  if (!value.is_array() || value.items().size() != stmt.targets.size()) {
    return absl::InvalidArgumentError(absl::StrCat("cannot unpack ", value.TypeName(), " into ",
                                                   stmt.targets.size(), " variables"));
  }
  for (size_t t = 0; t < stmt.targets.size(); ++t) Assign(stmt.targets[t], value.items()[t]);
  return absl::OkStatus();
}

Value Evaluator::MakeMacro(const Stmt& stmt) {
  const Stmt* macro = &stmt;
  return Value::Fn(stmt.name, [this, macro](CallArgs& args) -> absl::StatusOr<Value> {
    if (call_depth_ >= limits_.max_call_depth) {
      return absl::InvalidArgumentError(absl::StrCat(
          "macro '", macro->name, "': calls nested deeper than ", limits_.max_call_depth));
    }
    if (args.positional.size() > macro->params.size()) {
      return absl::InvalidArgumentError(absl::StrCat("macro '", macro->name, "' takes ",
                                                     macro->params.size(), " arguments, got ",
                                                     args.positional.size()));
    }
    std::unordered_map<std::string, Value> locals;
    for (size_t p = 0; p < macro->params.size(); ++p) {
      const auto& [param, default_value] = macro->params[p];
      if (p < args.positional.size()) {
        locals[param] = args.positional[p];
        continue;
      }
      bool found = false;
      for (const auto& [key, value] : args.keyword) {
        if (key == param) {
          locals[param] = value;
          found = true;
        }
      }
      if (found) continue;
      if (default_value) {
        SG_ASSIGN_OR_RETURN(locals[param], Eval(*default_value));
      } else {
        locals[param] = Value::Undefined(absl::StrCat("'", param, "' is undefined"));
      }
    }
    for (const auto& [key, value] : args.keyword) {
      bool known = false;
      for (const auto& param : macro->params) known |= param.first == key;
      if (!known) {
        return absl::InvalidArgumentError(
            absl::StrCat("macro '", macro->name, "' takes no keyword argument '", key, "'"));
      }
    }
    // The macro sees its arguments and the template's top-level names only.
    size_t saved_floor = floor_;
    floor_ = scopes_.size();
    scopes_.push_back(std::move(locals));
    ++call_depth_;
    std::string out;
    absl::Status status = Exec(macro->body, &out);
    --call_depth_;
    scopes_.pop_back();
    floor_ = saved_floor;
    flow_ = Flow::kNormal;
    SG_RETURN_IF_ERROR(status);
    return Value::String(std::move(out));
  });
}

absl::StatusOr<Value> Evaluator::Eval(const Expr& expr) {
  if (depth_ >= limits_.max_depth) {
    return Located(absl::InvalidArgumentError(absl::StrCat(
                       "the template nests deeper than ", limits_.max_depth,
                       " (expressions, blocks and macro calls together)")),
                   expr.line, expr.column);
  }
  ++depth_;
  absl::StatusOr<Value> value = EvalInner(expr);
  --depth_;
  if (!value.ok()) return Located(value.status(), expr.line, expr.column);
  return value;
}

absl::StatusOr<CallArgs> Evaluator::EvalArgs(const Expr& expr, size_t first) {
  CallArgs args;
  for (size_t i = first; i < expr.children.size(); ++i) {
    SG_ASSIGN_OR_RETURN(Value value, Eval(*expr.children[i]));
    args.positional.push_back(std::move(value));
  }
  for (const auto& [key, arg] : expr.keyword) {
    SG_ASSIGN_OR_RETURN(Value value, Eval(*arg));
    args.keyword.emplace_back(key, std::move(value));
  }
  return args;
}

absl::StatusOr<Value> Evaluator::EvalInner(const Expr& expr) {
  SG_RETURN_IF_ERROR(Step());
  switch (expr.kind) {
    case ExprKind::kLiteral: return expr.literal;
    case ExprKind::kName: return Lookup(expr.name);
    case ExprKind::kList:
    case ExprKind::kTuple: {
      SG_ASSIGN_OR_RETURN(CallArgs items, EvalArgs(expr, 0));
      if (expr.kind == ExprKind::kTuple) return Value::Tuple(std::move(items.positional));
      return Value::Array(std::move(items.positional));
    }
    case ExprKind::kDict: {
      Value dict = Value::Object();
      for (size_t i = 0; i + 1 < expr.children.size(); i += 2) {
        SG_ASSIGN_OR_RETURN(Value key, Eval(*expr.children[i]));
        SG_ASSIGN_OR_RETURN(Value value, Eval(*expr.children[i + 1]));
        if (!key.is_string()) {
          return absl::InvalidArgumentError(
              absl::StrCat("dict keys must be strings, got ", key.TypeName()));
        }
        dict.Set(key.str(), std::move(value));
      }
      return dict;
    }
    case ExprKind::kGetAttr: {
      SG_ASSIGN_OR_RETURN(Value object, Eval(*expr.children[0]));
      if (object.is_undefined()) return UndefinedError(object);
      return GetAttr(object, expr.name);
    }
    case ExprKind::kGetItem: {
      SG_ASSIGN_OR_RETURN(Value object, Eval(*expr.children[0]));
      SG_ASSIGN_OR_RETURN(Value key, Eval(*expr.children[1]));
      if (object.is_undefined()) return UndefinedError(object);
      return GetItem(object, key);
    }
    case ExprKind::kSlice: {
      SG_ASSIGN_OR_RETURN(Value object, Eval(*expr.children[0]));
      Value bounds[3] = {Value::None(), Value::None(), Value::None()};
      for (int i = 0; i < 3; ++i) {
        if (expr.children[i + 1]) {
          SG_ASSIGN_OR_RETURN(bounds[i], Eval(*expr.children[i + 1]));
        }
      }
      if (object.is_undefined()) return UndefinedError(object);
      return Slice(object, bounds[0], bounds[1], bounds[2]);
    }
    case ExprKind::kCall: {
      SG_ASSIGN_OR_RETURN(Value callee, Eval(*expr.children[0]));
      SG_ASSIGN_OR_RETURN(CallArgs args, EvalArgs(expr, 1));
      if (callee.is_undefined()) return UndefinedError(callee);
      if (!callee.is_function()) {
        return absl::InvalidArgumentError(
            absl::StrCat("'", callee.TypeName(), "' object is not callable"));
      }
      SG_ASSIGN_OR_RETURN(Value result, callee.function()(args));
      SG_RETURN_IF_ERROR(CheckSize(result));
      return result;
    }
    case ExprKind::kFilter: {
      SG_ASSIGN_OR_RETURN(Value input, Eval(*expr.children[0]));
      SG_ASSIGN_OR_RETURN(CallArgs args, EvalArgs(expr, 1));
      SG_ASSIGN_OR_RETURN(Value result, ApplyFilter(expr.name, input, args));
      SG_RETURN_IF_ERROR(CheckSize(result));
      return result;
    }
    case ExprKind::kTest: {
      absl::StatusOr<Value> input = Eval(*expr.children[0]);
      if (!input.ok()) return input.status();
      SG_ASSIGN_OR_RETURN(CallArgs args, EvalArgs(expr, 1));
      SG_ASSIGN_OR_RETURN(bool passed, ApplyTest(expr.name, *input, args));
      return Value::Bool(passed != expr.negated);
    }
    case ExprKind::kUnary: {
      SG_ASSIGN_OR_RETURN(Value operand, Eval(*expr.children[0]));
      if (expr.name == "not") return Value::Bool(!operand.Truthy());
      if (operand.is_undefined()) return UndefinedError(operand);
      if (operand.kind() == Value::Kind::kBool) operand = Value::Int(operand.bool_value());
      if (!operand.is_number()) {
        return absl::InvalidArgumentError(absl::StrCat("bad operand type for unary ", expr.name,
                                                       ": '", operand.TypeName(), "'"));
      }
      if (expr.name == "+") return operand;
      return operand.kind() == Value::Kind::kInt ? Value::Int(-operand.int_value())
                                                 : Value::Float(-operand.number());
    }
    case ExprKind::kAnd: {
      SG_ASSIGN_OR_RETURN(Value left, Eval(*expr.children[0]));
      if (!left.Truthy()) return left;
      return Eval(*expr.children[1]);
    }
    case ExprKind::kOr: {
      SG_ASSIGN_OR_RETURN(Value left, Eval(*expr.children[0]));
      if (left.Truthy()) return left;
      return Eval(*expr.children[1]);
    }
    case ExprKind::kConditional: {
      SG_ASSIGN_OR_RETURN(Value condition, Eval(*expr.children[1]));
      if (condition.Truthy()) return Eval(*expr.children[0]);
      if (expr.children[2]) return Eval(*expr.children[2]);
      return Value::Undefined("the inline if expression evaluated to false and no else "
                              "section was defined");
    }
    case ExprKind::kBinary: {
      SG_ASSIGN_OR_RETURN(Value left, Eval(*expr.children[0]));
      SG_ASSIGN_OR_RETURN(Value right, Eval(*expr.children[1]));
      SG_ASSIGN_OR_RETURN(Value result, EvalBinary(expr.name, left, right));
      SG_RETURN_IF_ERROR(CheckSize(result));
      return result;
    }
  }
  return absl::InternalError("unknown expression");
}

absl::StatusOr<Value> Evaluator::EvalBinary(const std::string& op, const Value& a,
                                            const Value& b) {
  using Kind = Value::Kind;
  if (op == "==") return Value::Bool(a.Equals(b));
  if (op == "!=") return Value::Bool(!a.Equals(b));
  if (op == "~") return Value::String(a.ToString() + b.ToString());
  if (op == "in" || op == "not in") {
    bool found = false;
    if (b.is_string()) {
      if (!a.is_string()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "'in <string>' requires string as left operand, not ", a.TypeName()));
      }
      found = b.str().find(a.str()) != std::string::npos;
    } else if (b.is_object()) {
      found = a.is_string() && b.Find(a.str()) != nullptr;
    } else if (b.is_array()) {
      for (const Value& item : b.items()) found = found || item.Equals(a);
    } else if (!b.is_undefined()) {
      return absl::InvalidArgumentError(
          absl::StrCat("argument of type '", b.TypeName(), "' is not iterable"));
    }
    return Value::Bool(found == (op == "in"));
  }
  if (a.is_undefined()) return UndefinedError(a);
  if (b.is_undefined()) return UndefinedError(b);
  Value x = a.kind() == Kind::kBool ? Value::Int(a.bool_value()) : a;
  Value y = b.kind() == Kind::kBool ? Value::Int(b.bool_value()) : b;
  if (op == "<" || op == ">" || op == "<=" || op == ">=") {
    int cmp;
    if (x.is_number() && y.is_number()) {
      cmp = x.number() < y.number() ? -1 : x.number() > y.number() ? 1 : 0;
    } else if (x.is_string() && y.is_string()) {
      cmp = x.str().compare(y.str());
    } else {
      return absl::InvalidArgumentError(absl::StrCat("'", op, "' not supported between "
                                                     "instances of '", a.TypeName(), "' and '",
                                                     b.TypeName(), "'"));
    }
    bool r = op == "<" ? cmp < 0 : op == ">" ? cmp > 0 : op == "<=" ? cmp <= 0 : cmp >= 0;
    return Value::Bool(r);
  }
  if (op == "+") {
    if (x.is_string() && y.is_string()) return Value::String(x.str() + y.str());
    if (x.is_array() && y.is_array()) {
      std::vector<Value> items = x.items();
      items.insert(items.end(), y.items().begin(), y.items().end());
      return Value::Array(std::move(items));
    }
  }
  if (op == "*" && (x.is_string() || x.is_array()) && y.kind() == Kind::kInt) {
    int64_t n = std::max<int64_t>(0, y.int_value());
    size_t unit = x.is_string() ? x.str().size() : x.items().size();
    if (unit > 0 && static_cast<uint64_t>(n) > limits_.max_output_bytes / unit) {
      return absl::InvalidArgumentError(absl::StrCat("the template built a ", x.TypeName(),
                                                     " of more than ", limits_.max_output_bytes,
                                                     " items"));
    }
    if (x.is_string()) {
      std::string s;
      for (int64_t i = 0; i < n; ++i) s += x.str();
      return Value::String(std::move(s));
    }
    std::vector<Value> items;
    for (int64_t i = 0; i < n; ++i) items.insert(items.end(), x.items().begin(), x.items().end());
    return Value::Array(std::move(items));
  }
  if (!x.is_number() || !y.is_number()) return TypeError(op.c_str(), a, b);
  bool ints = x.kind() == Kind::kInt && y.kind() == Kind::kInt;
  double p = x.number(), q = y.number();
  if (op == "+") return ints ? Value::Int(x.int_value() + y.int_value()) : Value::Float(p + q);
  if (op == "-") return ints ? Value::Int(x.int_value() - y.int_value()) : Value::Float(p - q);
  if (op == "*") return ints ? Value::Int(x.int_value() * y.int_value()) : Value::Float(p * q);
  if (q == 0 && (op == "/" || op == "//" || op == "%")) {
    return absl::InvalidArgumentError("division by zero");
  }
  if (op == "/") return Value::Float(p / q);
  if (op == "//") {
    return ints ? Value::Int(FloorDiv(x.int_value(), y.int_value())) : Value::Float(std::floor(p / q));
  }
  if (op == "%") {
    if (ints) {
      return Value::Int(x.int_value() - FloorDiv(x.int_value(), y.int_value()) * y.int_value());
    }
    double r = std::fmod(p, q);
    if (r != 0 && ((r < 0) != (q < 0))) r += q;
    return Value::Float(r);
  }
  if (op == "**") {
    if (ints && y.int_value() >= 0) {
      double r = std::pow(p, q);
      if (std::fabs(r) > 9.2e18) return absl::InvalidArgumentError("integer power too large");
      return Value::Int(static_cast<int64_t>(std::llround(r)));
    }
    return Value::Float(std::pow(p, q));
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown operator ", op));
}

}  // namespace jinja
}  // namespace streamgen
