// ParseGrammar: the EBNF dialect (llama.cpp's GBNF) to the IR.
//
//   grammar  := (rule | blank line)*
//   rule     := name "::=" alternatives            (ends at a newline outside parens)
//   alternatives := sequence ("|" sequence)*       (a newline may follow "|")
//   sequence := (item postfix*)*
//   item     := name | "literal" | [class] | [^class] | "." | "(" alternatives ")"
//   postfix  := "*" | "+" | "?" | "{m}" | "{m,}" | "{m,n}"
// Names are [A-Za-z0-9_-]+; "#" starts a comment to the end of the line.
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/grammar/grammar.h"
#include "engine/grammar/utf8.h"

namespace streamgen {
namespace grammar {
namespace {

// Repetition counts above this are refused: {m,n} is expanded into copies.
constexpr int kMaxRepeatCount = 10000;
// Nesting of parentheses (the parser recurses).
constexpr int kMaxDepth = 200;

bool IsNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_';
}

class Parser {
 public:
  explicit Parser(std::string_view text) : s_(text) {}

  absl::StatusOr<Grammar> Parse() {
    if (!IsValidUtf8(s_)) {
      size_t pos = 0;
      while (pos < s_.size() && DecodeUtf8(s_, &pos) >= 0) {
      }
      return Error(pos, "the grammar is not valid UTF-8");
    }
    SkipSpace(true);
    while (ok() && pos_ < s_.size()) {
      ParseRule();
      SkipSpace(true);
    }
    if (!ok()) return status_;
    for (size_t i = 0; i < g_.rules.size(); ++i) {
      if (!defined_[i]) {
        return ErrorAt(g_.rules[i].line, g_.rules[i].column,
                       absl::StrCat("undefined rule '", g_.rules[i].name, "'"));
      }
    }
    g_.root = FindRule(g_, "root");
    if (g_.root < 0) {
      return absl::InvalidArgumentError("grammar: no rule named 'root' (the start rule)");
    }
    return std::move(g_);
  }

 private:
  bool ok() const { return status_.ok(); }
  char Peek(size_t ahead = 0) const {
    return pos_ + ahead < s_.size() ? s_[pos_ + ahead] : '\0';
  }
  bool AtEnd() const { return pos_ >= s_.size(); }

  void LineColumn(size_t at, int* line, int* column) const {
    *line = 1;
    size_t line_start = 0;
    for (size_t i = 0; i < at && i < s_.size(); ++i) {
      if (s_[i] == '\n') {
        ++*line;
        line_start = i + 1;
      }
    }
    // Columns count characters, not bytes.
    *column = 1;
    for (size_t i = line_start; i < at && i < s_.size(); ++i) {
      if ((static_cast<uint8_t>(s_[i]) & 0xC0) != 0x80) ++*column;
    }
  }
  absl::Status ErrorAt(int line, int column, const std::string& what) {
    return absl::InvalidArgumentError(
        absl::StrCat("grammar: line ", line, ", column ", column, ": ", what));
  }
  absl::Status Error(size_t at, const std::string& what) {
    int line, column;
    LineColumn(at, &line, &column);
    return ErrorAt(line, column, what);
  }
  void Fail(size_t at, const std::string& what) {
    if (ok()) status_ = Error(at, what);
  }
  std::string Describe() const {
    if (AtEnd()) return "end of input";
    if (Peek() == '\n' || Peek() == '\r') return "end of line";
    size_t p = pos_;
    const uint32_t cp = DecodeUtf8Lenient(s_, &p);
    std::string out = "'";
    AppendUtf8(cp, &out);
    return out + "'";
  }

  void SkipSpace(bool newline_ok) {
    while (!AtEnd()) {
      const char c = Peek();
      if (c == ' ' || c == '\t' || (newline_ok && (c == '\n' || c == '\r'))) {
        ++pos_;
      } else if (c == '#') {
        while (!AtEnd() && Peek() != '\n' && Peek() != '\r') ++pos_;
      } else {
        break;
      }
    }
  }

  std::string ParseName() {
    const size_t start = pos_;
    while (!AtEnd() && IsNameChar(Peek())) ++pos_;
    return std::string(s_.substr(start, pos_ - start));
  }

  void ParseRule() {
    const size_t start = pos_;
    const std::string name = ParseName();
    if (name.empty()) return Fail(pos_, absl::StrCat("expected a rule name, found ", Describe()));
    SkipSpace(false);
    if (s_.substr(pos_, 3) != "::=") {
      return Fail(pos_, absl::StrCat("expected '::=' after '", name, "', found ", Describe()));
    }
    pos_ += 3;
    SkipSpace(true);
    const int rule = RuleIndex(name, start);
    if (defined_[rule]) return Fail(start, absl::StrCat("rule '", name, "' defined twice"));
    defined_[rule] = true;
    int line, column;
    LineColumn(start, &line, &column);
    g_.rules[rule].line = line;
    g_.rules[rule].column = column;
    Expr body = ParseAlternatives(0);
    if (!ok()) return;
    // The rule ends at the end of its line.
    SkipSpace(false);
    if (!AtEnd() && Peek() != '\n' && Peek() != '\r') {
      if (Peek() == ')') return Fail(pos_, "unbalanced ')'");
      return Fail(pos_, absl::StrCat("unexpected ", Describe()));
    }
    g_.rules[rule].body = std::move(body);
  }

  // The index of the rule `name`, adding it (as referenced at `at`) if new.
  int RuleIndex(const std::string& name, size_t at) {
    const int found = FindRule(g_, name);
    if (found >= 0) return found;
    const int rule = AddRule(&g_, name);
    defined_.push_back(false);
    int line, column;
    LineColumn(at, &line, &column);
    g_.rules[rule].line = line;
    g_.rules[rule].column = column;
    return rule;
  }

  Expr ParseAlternatives(int depth) {
    const size_t start = pos_;
    std::vector<Expr> alts;
    alts.push_back(ParseSequence(depth));
    while (ok() && Peek() == '|') {
      ++pos_;
      SkipSpace(true);
      alts.push_back(ParseSequence(depth));
    }
    if (alts.size() == 1) return std::move(alts[0]);
    Expr e = Alt(std::move(alts));
    SetPosition(&e, start);
    return e;
  }

  void SetPosition(Expr* e, size_t at) { LineColumn(at, &e->line, &e->column); }

  Expr ParseSequence(int depth) {
    const size_t start = pos_;
    std::vector<Expr> items;
    const bool nested = depth > 0;
    while (ok() && !AtEnd()) {
      const char c = Peek();
      const size_t item_start = pos_;
      if (c == '"') {
        ++pos_;
        Expr lit = Seq({});
        while (ok() && !AtEnd() && Peek() != '"') {
          if (Peek() == '\n' || Peek() == '\r') return Fail(item_start, "unterminated string"), Expr();
          lit.children.push_back(CodePoint(ParseChar()));
        }
        if (!ok()) break;
        if (AtEnd()) return Fail(item_start, "unterminated string"), Expr();
        ++pos_;
        SetPosition(&lit, item_start);
        items.push_back(std::move(lit));
      } else if (c == '[') {
        items.push_back(ParseClass());
      } else if (c == '.') {
        ++pos_;
        items.push_back(AnyChar());
        SetPosition(&items.back(), item_start);
      } else if (c == '(') {
        if (depth >= kMaxDepth) return Fail(pos_, "parentheses nested too deeply"), Expr();
        ++pos_;
        SkipSpace(true);
        Expr inner = ParseAlternatives(depth + 1);
        if (!ok()) break;
        if (Peek() != ')') {
          return Fail(item_start, absl::StrCat("unbalanced '(': expected ')', found ", Describe())),
                 Expr();
        }
        ++pos_;
        SetPosition(&inner, item_start);
        items.push_back(std::move(inner));
      } else if (IsNameChar(c)) {
        const std::string name = ParseName();
        Expr ref = Ref(RuleIndex(name, item_start));
        SetPosition(&ref, item_start);
        // "name ::=" here is the next rule, missing its line break.
        const size_t after = pos_;
        SkipSpace(false);
        if (s_.substr(pos_, 3) == "::=") {
          return Fail(item_start, absl::StrCat("expected a new line before rule '", name, "'")),
                 Expr();
        }
        pos_ = after;
        items.push_back(std::move(ref));
      } else if (c == '*' || c == '+' || c == '?' || c == '{') {
        if (items.empty()) {
          return Fail(pos_, absl::StrCat("'", std::string(1, c), "' with nothing before it to repeat")),
                 Expr();
        }
        ParsePostfix(&items.back());
      } else {
        break;  // '|', ')', end of line, or an error the caller names
      }
      if (!ok()) break;
      SkipSpace(nested);
    }
    if (!ok()) return Expr();
    if (!AtEnd() && Peek() != '|' && Peek() != ')' && Peek() != '\n' && Peek() != '\r') {
      Fail(pos_, absl::StrCat("unexpected ", Describe()));
      return Expr();
    }
    if (Peek() == ')' && depth == 0) {
      Fail(pos_, "unbalanced ')'");
      return Expr();
    }
    if (items.size() == 1) return std::move(items[0]);
    Expr e = Seq(std::move(items));
    SetPosition(&e, start);
    return e;
  }

  bool ParseInt(int* value) {
    const size_t start = pos_;
    long long v = 0;
    while (!AtEnd() && Peek() >= '0' && Peek() <= '9') {
      v = v * 10 + (Peek() - '0');
      if (v > kMaxRepeatCount) {
        Fail(start, absl::StrCat("repetition count above ", kMaxRepeatCount));
        return false;
      }
      ++pos_;
    }
    if (pos_ == start) {
      Fail(pos_, absl::StrCat("expected a number, found ", Describe()));
      return false;
    }
    *value = static_cast<int>(v);
    return true;
  }

  void ParsePostfix(Expr* item) {
    const size_t start = pos_;
    int min = 0, max = -1;
    const char c = Peek();
    ++pos_;
    if (c == '*') {
      min = 0, max = -1;
    } else if (c == '+') {
      min = 1, max = -1;
    } else if (c == '?') {
      min = 0, max = 1;
    } else {  // '{'
      SkipSpace(false);
      if (!ParseInt(&min)) return;
      SkipSpace(false);
      if (Peek() == ',') {
        ++pos_;
        SkipSpace(false);
        if (Peek() != '}' && !ParseInt(&max)) return;
        SkipSpace(false);
      } else {
        max = min;
      }
      if (Peek() != '}') return Fail(pos_, absl::StrCat("expected '}', found ", Describe()));
      ++pos_;
      if (max >= 0 && max < min) {
        return Fail(start, absl::StrCat("repetition {", min, ",", max, "}: maximum below minimum"));
      }
    }
    Expr e = Repeat(std::move(*item), min, max);
    SetPosition(&e, start);
    *item = std::move(e);
  }

  // One character of a literal or class (an escape or a UTF-8 character).
  uint32_t ParseChar() {
    const size_t start = pos_;
    if (Peek() != '\\') {
      size_t p = pos_;
      const int32_t cp = DecodeUtf8(s_, &p);
      pos_ = p;
      return static_cast<uint32_t>(cp);  // the text is valid UTF-8
    }
    ++pos_;
    const char e = Peek();
    if (AtEnd()) return Fail(start, "'\\' at the end of the input"), 0;
    ++pos_;
    switch (e) {
      case 'n': return '\n';
      case 't': return '\t';
      case 'r': return '\r';
      case '\\': case '"': case '[': case ']': case '-': case '^': case '/':
        return static_cast<uint8_t>(e);
      case 'x': return ParseHex(start, 2);
      case 'u': return ParseHex(start, 4);
      case 'U': return ParseHex(start, 8);
      default: break;
    }
    --pos_;
    Fail(start, absl::StrCat("bad escape '\\", Describe().substr(1)));
    return 0;
  }

  uint32_t ParseHex(size_t start, int digits) {
    uint64_t v = 0;
    for (int i = 0; i < digits; ++i) {
      const char c = Peek();
      int d;
      if (c >= '0' && c <= '9') {
        d = c - '0';
      } else if (c >= 'a' && c <= 'f') {
        d = c - 'a' + 10;
      } else if (c >= 'A' && c <= 'F') {
        d = c - 'A' + 10;
      } else {
        Fail(start, absl::StrCat("bad escape: expected ", digits, " hex digits"));
        return 0;
      }
      v = v * 16 + d;
      ++pos_;
    }
    if (v > kMaxCodePoint) {
      Fail(start, "bad escape: code point above U+10FFFF");
      return 0;
    }
    return static_cast<uint32_t>(v);
  }

  Expr ParseClass() {
    const size_t start = pos_;
    ++pos_;  // '['
    Expr e = CharClass({});
    SetPosition(&e, start);
    if (Peek() == '^') {
      e.negated = true;
      ++pos_;
    }
    while (ok() && !AtEnd() && Peek() != ']') {
      if (Peek() == '\n' || Peek() == '\r') break;
      const uint32_t lo = ParseChar();
      uint32_t hi = lo;
      if (ok() && Peek() == '-' && Peek(1) != ']' && pos_ + 1 < s_.size()) {
        const size_t dash = pos_;
        ++pos_;
        hi = ParseChar();
        if (ok() && hi < lo) Fail(dash, "character class range out of order");
      }
      e.ranges.push_back({lo, hi});
    }
    if (!ok()) return Expr();
    if (AtEnd() || Peek() != ']') return Fail(start, "unterminated character class ('[' without ']')"), Expr();
    ++pos_;
    if (e.ranges.empty()) return Fail(start, "empty character class"), Expr();
    return e;
  }

  std::string_view s_;
  size_t pos_ = 0;
  absl::Status status_;
  Grammar g_;
  std::vector<bool> defined_;
};

}  // namespace

absl::StatusOr<Grammar> ParseGrammar(std::string_view text) { return Parser(text).Parse(); }

}  // namespace grammar
}  // namespace streamgen
