#include "engine/text/jinja/parser.h"

#include <cstdlib>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"

namespace streamgen {
namespace jinja {
namespace {

class Parser {
 public:
  Parser(const std::vector<Token>& tokens, absl::string_view name)
      : tokens_(tokens), name_(name) {}

  absl::StatusOr<Body> Run() {
    Body body;
    std::string end;
    SG_RETURN_IF_ERROR(ParseBody({}, nullptr, &body, &end));
    return body;
  }

 private:
  const Token& Peek(size_t ahead = 0) const {
    size_t i = pos_ + ahead;
    return i < tokens_.size() ? tokens_[i] : tokens_.back();
  }
  const Token& Next() { return tokens_[pos_ < tokens_.size() - 1 ? pos_++ : pos_]; }
  bool IsOp(const char* op, size_t ahead = 0) const {
    return Peek(ahead).type == TokenType::kOperator && Peek(ahead).text == op;
  }
  bool IsName(const char* name, size_t ahead = 0) const {
    return Peek(ahead).type == TokenType::kName && Peek(ahead).text == name;
  }

  absl::Status ErrorAt(const Token& at, absl::string_view expected) const {
    return absl::InvalidArgumentError(absl::StrCat(name_, ":", at.line, ":", at.column,
                                                   ": expected ", expected, ", got ",
                                                   DescribeToken(at)));
  }
  absl::Status Expect(TokenType type, const char* text, absl::string_view expected) {
    const Token& t = Peek();
    if (t.type != type || (text != nullptr && t.text != text)) return ErrorAt(t, expected);
    Next();
    return absl::OkStatus();
  }
  absl::Status ExpectBlockEnd() { return Expect(TokenType::kBlockEnd, nullptr, "'%}'"); }
  absl::StatusOr<std::string> ExpectName(absl::string_view what) {
    if (Peek().type != TokenType::kName) return ErrorAt(Peek(), what);
    return Next().text;
  }

  // Statements until a {% tag %} named in `ends` (consumed up to its name,
  // stored in *end); at top level (`ends` empty) until the end of the template.
  absl::Status ParseBody(const std::vector<std::string>& ends, const Token* opener, Body* body,
                         std::string* end) {
    if (++depth_ > kMaxNesting) {
      return ErrorAt(Peek(), absl::StrCat("blocks nested at most ", kMaxNesting, " deep"));
    }
    while (true) {
      const Token& t = Peek();
      if (t.type == TokenType::kEnd) {
        if (ends.empty()) break;
        return ErrorAt(t, absl::StrCat("'", absl::StrJoin(ends, "' or '"), "' to close the '",
                                       opener->text, "' at ", opener->line, ":", opener->column));
      }
      if (t.type == TokenType::kText) {
        auto stmt = NewStmt(StmtKind::kText, t);
        stmt->text = Next().text;
        body->push_back(std::move(stmt));
      } else if (t.type == TokenType::kVarBegin) {
        auto stmt = NewStmt(StmtKind::kOutput, Next());
        SG_ASSIGN_OR_RETURN(stmt->expr, ParseTuple(/*allow_conditional=*/true));
        SG_RETURN_IF_ERROR(Expect(TokenType::kVarEnd, nullptr, "'}}'"));
        body->push_back(std::move(stmt));
      } else if (t.type == TokenType::kBlockBegin) {
        const Token& tag = Peek(1);
        if (tag.type == TokenType::kName) {
          for (const std::string& e : ends) {
            if (tag.text == e) {
              pos_ += 2;
              *end = e;
              --depth_;
              return absl::OkStatus();
            }
          }
        }
        if (tag.type == TokenType::kName &&
            (tag.text == "else" || tag.text == "elif" || absl::StartsWith(tag.text, "end"))) {
          if (ends.empty()) return ErrorAt(tag, "a tag, not one that closes no open block");
          return ErrorAt(tag, absl::StrCat("'", absl::StrJoin(ends, "' or '"), "' to close the '",
                                           opener->text, "' at ", opener->line, ":",
                                           opener->column));
        }
        Next();
        SG_RETURN_IF_ERROR(ParseStatement(body));
      } else {
        return ErrorAt(t, "template text, '{{' or '{%'");
      }
    }
    --depth_;
    return absl::OkStatus();
  }

  StmtPtr NewStmt(StmtKind kind, const Token& at) {
    auto stmt = std::make_unique<Stmt>();
    stmt->kind = kind;
    stmt->line = at.line;
    stmt->column = at.column;
    return stmt;
  }

  absl::Status ParseStatement(Body* body) {
    const Token& tag = Peek();
    if (tag.type != TokenType::kName) return ErrorAt(tag, "a tag name");
    const std::string& name = tag.text;
    if (name == "if") return ParseIf(body);
    if (name == "for") return ParseFor(body);
    if (name == "set") return ParseSet(body);
    if (name == "macro") return ParseMacro(body);
    if (name == "break" || name == "continue") {
      body->push_back(NewStmt(name == "break" ? StmtKind::kBreak : StmtKind::kContinue, Next()));
      return ExpectBlockEnd();
    }
    if (name == "generation") {
      // transformers' AssistantTracker marks assistant text; rendering is the body's.
      Token opener = Next();
      SG_RETURN_IF_ERROR(ExpectBlockEnd());
      auto stmt = NewStmt(StmtKind::kIf, opener);
      stmt->expr = std::make_unique<Expr>();
      stmt->expr->literal = Value::Bool(true);
      std::string end;
      SG_RETURN_IF_ERROR(ParseBody({"endgeneration"}, &opener, &stmt->body, &end));
      SG_RETURN_IF_ERROR(ExpectBlockEnd());
      body->push_back(std::move(stmt));
      return absl::OkStatus();
    }
    return ErrorAt(tag, "a known tag (if, for, set, macro, break, continue, generation)");
  }

  absl::Status ParseIf(Body* body) {
    Token opener = Next();
    auto stmt = NewStmt(StmtKind::kIf, opener);
    SG_ASSIGN_OR_RETURN(stmt->expr, ParseTuple(true));
    SG_RETURN_IF_ERROR(ExpectBlockEnd());
    std::string end;
    SG_RETURN_IF_ERROR(ParseBody({"elif", "else", "endif"}, &opener, &stmt->body, &end));
    if (end == "elif") {
      --pos_;  // parse "elif ..." as a nested "if ..." that also consumes the endif
      SG_RETURN_IF_ERROR(ParseIf(&stmt->else_body));
    } else if (end == "else") {
      SG_RETURN_IF_ERROR(ExpectBlockEnd());
      SG_RETURN_IF_ERROR(ParseBody({"endif"}, &opener, &stmt->else_body, &end));
      SG_RETURN_IF_ERROR(ExpectBlockEnd());
    } else {
      SG_RETURN_IF_ERROR(ExpectBlockEnd());
    }
    body->push_back(std::move(stmt));
    return absl::OkStatus();
  }

  absl::Status ParseFor(Body* body) {
    Token opener = Next();
    auto stmt = NewStmt(StmtKind::kFor, opener);
    do {
      SG_ASSIGN_OR_RETURN(std::string target, ExpectName("a loop variable name"));
      stmt->targets.push_back(std::move(target));
    } while (IsOp(",") && (Next(), true));
    SG_RETURN_IF_ERROR(Expect(TokenType::kName, "in", "'in'"));
    SG_ASSIGN_OR_RETURN(stmt->expr, ParseTuple(/*allow_conditional=*/false));
    if (IsName("if")) {
      Next();
      SG_ASSIGN_OR_RETURN(stmt->filter, ParseExpression(true));
    }
    SG_RETURN_IF_ERROR(ExpectBlockEnd());
    std::string end;
    SG_RETURN_IF_ERROR(ParseBody({"else", "endfor"}, &opener, &stmt->body, &end));
    SG_RETURN_IF_ERROR(ExpectBlockEnd());
    if (end == "else") {
      SG_RETURN_IF_ERROR(ParseBody({"endfor"}, &opener, &stmt->else_body, &end));
      SG_RETURN_IF_ERROR(ExpectBlockEnd());
    }
    body->push_back(std::move(stmt));
    return absl::OkStatus();
  }

  absl::Status ParseSet(Body* body) {
    Token opener = Next();
    auto stmt = NewStmt(StmtKind::kSet, opener);
    SG_ASSIGN_OR_RETURN(std::string target, ExpectName("a variable name"));
    stmt->targets.push_back(std::move(target));
    if (IsOp(".")) {
      Next();
      SG_ASSIGN_OR_RETURN(stmt->attr, ExpectName("an attribute name"));
    } else {
      while (IsOp(",")) {
        Next();
        SG_ASSIGN_OR_RETURN(std::string more, ExpectName("a variable name"));
        stmt->targets.push_back(std::move(more));
      }
    }
    if (IsOp("=")) {
      Next();
      SG_ASSIGN_OR_RETURN(stmt->expr, ParseTuple(true));
      SG_RETURN_IF_ERROR(ExpectBlockEnd());
    } else {
      if (stmt->targets.size() != 1 || !stmt->attr.empty()) return ErrorAt(Peek(), "'='");
      SG_RETURN_IF_ERROR(Expect(TokenType::kBlockEnd, nullptr, "'=' or '%}'"));
      stmt->kind = StmtKind::kSetBlock;
      std::string end;
      SG_RETURN_IF_ERROR(ParseBody({"endset"}, &opener, &stmt->body, &end));
      SG_RETURN_IF_ERROR(ExpectBlockEnd());
    }
    body->push_back(std::move(stmt));
    return absl::OkStatus();
  }

  absl::Status ParseMacro(Body* body) {
    Token opener = Next();
    auto stmt = NewStmt(StmtKind::kMacro, opener);
    SG_ASSIGN_OR_RETURN(stmt->name, ExpectName("a macro name"));
    SG_RETURN_IF_ERROR(Expect(TokenType::kOperator, "(", "'('"));
    while (!IsOp(")")) {
      SG_ASSIGN_OR_RETURN(std::string param, ExpectName("a parameter name"));
      ExprPtr default_value;
      if (IsOp("=")) {
        Next();
        SG_ASSIGN_OR_RETURN(default_value, ParseExpression(true));
      }
      stmt->params.emplace_back(std::move(param), std::move(default_value));
      if (!IsOp(",")) break;
      Next();
    }
    SG_RETURN_IF_ERROR(Expect(TokenType::kOperator, ")", "',' or ')'"));
    SG_RETURN_IF_ERROR(ExpectBlockEnd());
    std::string end;
    SG_RETURN_IF_ERROR(ParseBody({"endmacro"}, &opener, &stmt->body, &end));
    if (Peek().type == TokenType::kName && Peek().text == stmt->name) Next();
    SG_RETURN_IF_ERROR(ExpectBlockEnd());
    body->push_back(std::move(stmt));
    return absl::OkStatus();
  }

  // ---- expressions, by Jinja2's precedence (lowest first) ----

  ExprPtr NewExpr(ExprKind kind, const Token& at) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = at.line;
    e->column = at.column;
    return e;
  }
  ExprPtr Combine(ExprKind kind, const Token& at, std::string name, ExprPtr left, ExprPtr right) {
    auto e = NewExpr(kind, at);
    e->name = std::move(name);
    e->children.push_back(std::move(left));
    e->children.push_back(std::move(right));
    return e;
  }

  // a, b, c (a tuple without parentheses) or a single expression.
  absl::StatusOr<ExprPtr> ParseTuple(bool allow_conditional) {
    const Token& at = Peek();
    SG_ASSIGN_OR_RETURN(ExprPtr first, ParseExpression(allow_conditional));
    if (!IsOp(",")) return first;
    auto tuple = NewExpr(ExprKind::kTuple, at);
    tuple->children.push_back(std::move(first));
    while (IsOp(",")) {
      Next();
      if (Peek().type == TokenType::kVarEnd || Peek().type == TokenType::kBlockEnd || IsOp(")")) {
        break;
      }
      SG_ASSIGN_OR_RETURN(ExprPtr item, ParseExpression(allow_conditional));
      tuple->children.push_back(std::move(item));
    }
    return tuple;
  }

  absl::StatusOr<ExprPtr> ParseExpression(bool allow_conditional) {
    if (++depth_ > kMaxNesting) {
      return ErrorAt(Peek(), absl::StrCat("expressions nested at most ", kMaxNesting, " deep"));
    }
    SG_ASSIGN_OR_RETURN(ExprPtr e, ParseOr());
    while (allow_conditional && IsName("if")) {
      Token at = Next();
      SG_ASSIGN_OR_RETURN(ExprPtr condition, ParseOr());
      auto conditional = NewExpr(ExprKind::kConditional, at);
      conditional->children.push_back(std::move(e));
      conditional->children.push_back(std::move(condition));
      ExprPtr otherwise;
      if (IsName("else")) {
        Next();
        SG_ASSIGN_OR_RETURN(otherwise, ParseExpression(true));
      }
      conditional->children.push_back(std::move(otherwise));
      e = std::move(conditional);
    }
    --depth_;
    return e;
  }

  absl::StatusOr<ExprPtr> ParseOr() {
    SG_ASSIGN_OR_RETURN(ExprPtr left, ParseAnd());
    while (IsName("or")) {
      Token at = Next();
      SG_ASSIGN_OR_RETURN(ExprPtr right, ParseAnd());
      left = Combine(ExprKind::kOr, at, "or", std::move(left), std::move(right));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseAnd() {
    SG_ASSIGN_OR_RETURN(ExprPtr left, ParseNot());
    while (IsName("and")) {
      Token at = Next();
      SG_ASSIGN_OR_RETURN(ExprPtr right, ParseNot());
      left = Combine(ExprKind::kAnd, at, "and", std::move(left), std::move(right));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseNot() {
    if (IsName("not")) {
      Token at = Next();
      if (++depth_ > kMaxNesting) return ErrorAt(at, "fewer nested 'not'");
      SG_ASSIGN_OR_RETURN(ExprPtr operand, ParseNot());
      --depth_;
      auto e = NewExpr(ExprKind::kUnary, at);
      e->name = "not";
      e->children.push_back(std::move(operand));
      return e;
    }
    return ParseCompare();
  }

  absl::StatusOr<ExprPtr> ParseCompare() {
    SG_ASSIGN_OR_RETURN(ExprPtr left, ParseMath1());
    while (true) {
      const Token& t = Peek();
      std::string op;
      if (t.type == TokenType::kOperator &&
          (t.text == "==" || t.text == "!=" || t.text == "<" || t.text == ">" ||
           t.text == "<=" || t.text == ">=")) {
        op = t.text;
        Next();
      } else if (IsName("in")) {
        op = "in";
        Next();
      } else if (IsName("not") && IsName("in", 1)) {
        op = "not in";
        pos_ += 2;
      } else {
        break;
      }
      SG_ASSIGN_OR_RETURN(ExprPtr right, ParseMath1());
      left = Combine(ExprKind::kBinary, t, op, std::move(left), std::move(right));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseMath1() {
    SG_ASSIGN_OR_RETURN(ExprPtr left, ParseConcat());
    while (IsOp("+") || IsOp("-")) {
      Token at = Next();
      SG_ASSIGN_OR_RETURN(ExprPtr right, ParseConcat());
      left = Combine(ExprKind::kBinary, at, at.text, std::move(left), std::move(right));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseConcat() {
    SG_ASSIGN_OR_RETURN(ExprPtr left, ParseMath2());
    while (IsOp("~")) {
      Token at = Next();
      SG_ASSIGN_OR_RETURN(ExprPtr right, ParseMath2());
      left = Combine(ExprKind::kBinary, at, "~", std::move(left), std::move(right));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseMath2() {
    SG_ASSIGN_OR_RETURN(ExprPtr left, ParsePow());
    while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%")) {
      Token at = Next();
      SG_ASSIGN_OR_RETURN(ExprPtr right, ParsePow());
      left = Combine(ExprKind::kBinary, at, at.text, std::move(left), std::move(right));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParsePow() {
    SG_ASSIGN_OR_RETURN(ExprPtr left, ParseUnary(true));
    while (IsOp("**")) {
      Token at = Next();
      SG_ASSIGN_OR_RETURN(ExprPtr right, ParseUnary(true));
      left = Combine(ExprKind::kBinary, at, "**", std::move(left), std::move(right));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseUnary(bool with_filters) {
    ExprPtr e;
    if (IsOp("-") || IsOp("+")) {
      Token at = Next();
      if (++depth_ > kMaxNesting) return ErrorAt(at, "fewer nested signs");
      SG_ASSIGN_OR_RETURN(ExprPtr operand, ParseUnary(false));
      --depth_;
      e = NewExpr(ExprKind::kUnary, at);
      e->name = at.text;
      e->children.push_back(std::move(operand));
    } else {
      SG_ASSIGN_OR_RETURN(e, ParsePrimary());
    }
    SG_ASSIGN_OR_RETURN(e, ParsePostfix(std::move(e)));
    if (with_filters) {
      SG_ASSIGN_OR_RETURN(e, ParseFilters(std::move(e)));
    }
    return e;
  }

  absl::StatusOr<ExprPtr> ParsePrimary() {
    const Token& t = Peek();
    switch (t.type) {
      case TokenType::kName: {
        Token at = Next();
        auto e = NewExpr(ExprKind::kLiteral, at);
        if (at.text == "true" || at.text == "True") {
          e->literal = Value::Bool(true);
        } else if (at.text == "false" || at.text == "False") {
          e->literal = Value::Bool(false);
        } else if (at.text == "none" || at.text == "None") {
          e->literal = Value::None();
        } else {
          e->kind = ExprKind::kName;
          e->name = at.text;
        }
        return e;
      }
      case TokenType::kString: {
        auto e = NewExpr(ExprKind::kLiteral, t);
        std::string s;
        while (Peek().type == TokenType::kString) s += Next().text;  // "a" "b" is "ab"
        e->literal = Value::String(std::move(s));
        return e;
      }
      case TokenType::kInt: {
        Token at = Next();
        auto e = NewExpr(ExprKind::kLiteral, at);
        e->literal = Value::Int(std::strtoll(at.text.c_str(), nullptr, 10));
        return e;
      }
      case TokenType::kFloat: {
        Token at = Next();
        auto e = NewExpr(ExprKind::kLiteral, at);
        e->literal = Value::Float(std::strtod(at.text.c_str(), nullptr));
        return e;
      }
      case TokenType::kOperator:
        if (t.text == "(") return ParseParenthesized();
        if (t.text == "[") return ParseSequence(ExprKind::kList, "]");
        if (t.text == "{") return ParseDict();
        break;
      default:
        break;
    }
    return ErrorAt(t, "an expression");
  }

  absl::StatusOr<ExprPtr> ParseParenthesized() {
    Token at = Next();
    if (IsOp(")")) {
      Next();
      return NewExpr(ExprKind::kTuple, at);
    }
    SG_ASSIGN_OR_RETURN(ExprPtr e, ParseTuple(true));
    SG_RETURN_IF_ERROR(Expect(TokenType::kOperator, ")", "')'"));
    return e;
  }

  absl::StatusOr<ExprPtr> ParseSequence(ExprKind kind, const char* close) {
    auto e = NewExpr(kind, Next());
    while (!IsOp(close)) {
      SG_ASSIGN_OR_RETURN(ExprPtr item, ParseExpression(true));
      e->children.push_back(std::move(item));
      if (!IsOp(",")) break;
      Next();
    }
    SG_RETURN_IF_ERROR(Expect(TokenType::kOperator, close, absl::StrCat("',' or '", close, "'")));
    return e;
  }

  absl::StatusOr<ExprPtr> ParseDict() {
    auto e = NewExpr(ExprKind::kDict, Next());
    while (!IsOp("}")) {
      SG_ASSIGN_OR_RETURN(ExprPtr key, ParseExpression(true));
      SG_RETURN_IF_ERROR(Expect(TokenType::kOperator, ":", "':'"));
      SG_ASSIGN_OR_RETURN(ExprPtr value, ParseExpression(true));
      e->children.push_back(std::move(key));
      e->children.push_back(std::move(value));
      if (!IsOp(",")) break;
      Next();
    }
    SG_RETURN_IF_ERROR(Expect(TokenType::kOperator, "}", "',' or '}'"));
    return e;
  }

  absl::StatusOr<ExprPtr> ParsePostfix(ExprPtr e) {
    while (true) {
      if (IsOp(".")) {
        Token at = Next();
        auto get = NewExpr(ExprKind::kGetAttr, at);
        if (Peek().type == TokenType::kInt) {  // x.0 is x[0]
          get->kind = ExprKind::kGetItem;
          get->children.push_back(std::move(e));
          SG_ASSIGN_OR_RETURN(ExprPtr index, ParsePrimary());
          get->children.push_back(std::move(index));
        } else {
          SG_ASSIGN_OR_RETURN(get->name, ExpectName("an attribute name"));
          get->children.push_back(std::move(e));
        }
        e = std::move(get);
      } else if (IsOp("[")) {
        SG_ASSIGN_OR_RETURN(e, ParseSubscript(std::move(e)));
      } else if (IsOp("(")) {
        SG_ASSIGN_OR_RETURN(e, ParseCall(std::move(e), ExprKind::kCall, ""));
      } else {
        return e;
      }
    }
  }

  absl::StatusOr<ExprPtr> ParseSubscript(ExprPtr target) {
    Token at = Next();
    ExprPtr parts[3];
    int part = 0;
    bool is_slice = false;
    while (true) {
      if (IsOp(":")) {
        Next();
        is_slice = true;
        if (++part > 2) return ErrorAt(Peek(), "']'");
        continue;
      }
      if (IsOp("]")) break;
      if (parts[part]) return ErrorAt(Peek(), is_slice ? "':' or ']'" : "']'");
      SG_ASSIGN_OR_RETURN(parts[part], ParseExpression(true));
    }
    Next();
    if (!is_slice && !parts[0]) return ErrorAt(at, "an index");
    auto e = NewExpr(is_slice ? ExprKind::kSlice : ExprKind::kGetItem, at);
    e->children.push_back(std::move(target));
    e->children.push_back(std::move(parts[0]));
    if (is_slice) {
      e->children.push_back(std::move(parts[1]));
      e->children.push_back(std::move(parts[2]));
    }
    return e;
  }

  // "(" args ")" after `target`: positional then name=value arguments.
  absl::StatusOr<ExprPtr> ParseCall(ExprPtr target, ExprKind kind, std::string name) {
    Token at = Next();
    auto e = NewExpr(kind, at);
    e->name = std::move(name);
    e->children.push_back(std::move(target));
    SG_RETURN_IF_ERROR(ParseArguments(e.get()));
    return e;
  }

  absl::Status ParseArguments(Expr* e) {
    while (!IsOp(")")) {
      if (Peek().type == TokenType::kName && IsOp("=", 1)) {
        std::string key = Next().text;
        Next();
        SG_ASSIGN_OR_RETURN(ExprPtr value, ParseExpression(true));
        e->keyword.emplace_back(std::move(key), std::move(value));
      } else {
        if (!e->keyword.empty()) return ErrorAt(Peek(), "a keyword argument (name=value)");
        SG_ASSIGN_OR_RETURN(ExprPtr value, ParseExpression(true));
        e->children.push_back(std::move(value));
      }
      if (!IsOp(",")) break;
      Next();
    }
    return Expect(TokenType::kOperator, ")", "',' or ')'");
  }

  // | filter(args), is [not] test(args), and calls after them.
  absl::StatusOr<ExprPtr> ParseFilters(ExprPtr e) {
    while (true) {
      if (IsOp("|")) {
        Token at = Next();
        SG_ASSIGN_OR_RETURN(std::string name, ExpectName("a filter name"));
        while (IsOp(".")) {  // dotted filter names are refused at render
          Next();
          SG_ASSIGN_OR_RETURN(std::string part, ExpectName("a filter name"));
          name += "." + part;
        }
        if (IsOp("(")) {
          SG_ASSIGN_OR_RETURN(e, ParseCall(std::move(e), ExprKind::kFilter, name));
        } else {
          auto filter = NewExpr(ExprKind::kFilter, at);
          filter->name = name;
          filter->children.push_back(std::move(e));
          e = std::move(filter);
        }
      } else if (IsName("is")) {
        Token at = Next();
        bool negated = IsName("not");
        if (negated) Next();
        SG_ASSIGN_OR_RETURN(std::string name, ExpectName("a test name"));
        ExprPtr test;
        if (IsOp("(")) {
          SG_ASSIGN_OR_RETURN(test, ParseCall(std::move(e), ExprKind::kTest, name));
        } else {
          test = NewExpr(ExprKind::kTest, at);
          test->name = name;
          test->children.push_back(std::move(e));
          // One argument without parentheses: "is sameas false", "is divisibleby 3".
          const Token& n = Peek();
          if (n.type == TokenType::kString || n.type == TokenType::kInt ||
              n.type == TokenType::kFloat ||
              (n.type == TokenType::kName && n.text != "and" && n.text != "or" &&
               n.text != "if" && n.text != "else" && n.text != "is" && n.text != "in" &&
               n.text != "not")) {
            SG_ASSIGN_OR_RETURN(ExprPtr arg, ParsePrimary());
            test->children.push_back(std::move(arg));
          }
        }
        test->negated = negated;
        e = std::move(test);
      } else if (IsOp("(")) {
        SG_ASSIGN_OR_RETURN(e, ParseCall(std::move(e), ExprKind::kCall, ""));
      } else {
        return e;
      }
    }
  }

  const std::vector<Token>& tokens_;
  std::string name_;
  size_t pos_ = 0;
  int depth_ = 0;
};

}  // namespace

absl::StatusOr<Body> Parse(const std::vector<Token>& tokens, absl::string_view name) {
  return Parser(tokens, name).Run();
}

}  // namespace jinja
}  // namespace streamgen
