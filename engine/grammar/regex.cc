// RegexToGrammar: a practical regex subset as a grammar (the whole output
// must match). The syntax and meaning follow PCRE2 (without the UTF/UCP
// options' Unicode classes): \d \w \s are ASCII, '.' is any character but
// '\n'. What a grammar cannot express (backreferences, lookaround, word
// boundaries, anchors inside the pattern, inline flags, possessive
// quantifiers) is refused with the construct's name and column.
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/grammar/grammar.h"
#include "engine/grammar/utf8.h"

namespace streamgen {
namespace grammar {
namespace {

constexpr int kMaxRepeat = 10000;
constexpr int kMaxDepth = 200;

std::vector<CodePointRange> DigitRanges() { return {{'0', '9'}}; }
std::vector<CodePointRange> WordRanges() { return {{'0', '9'}, {'A', 'Z'}, {'_', '_'}, {'a', 'z'}}; }
std::vector<CodePointRange> SpaceRanges() { return {{'\t', '\r'}, {' ', ' '}}; }

// The complement of sorted, disjoint ranges in [0, U+10FFFF].
std::vector<CodePointRange> Complement(const std::vector<CodePointRange>& r) {
  std::vector<CodePointRange> out;
  uint32_t next = 0;
  for (const CodePointRange& x : r) {
    if (x.lo > next) out.push_back({next, x.lo - 1});
    next = x.hi + 1;
  }
  if (next <= kMaxCodePoint) out.push_back({next, kMaxCodePoint});
  return out;
}

class RegexParser {
 public:
  explicit RegexParser(std::string_view p) : p_(p) {
    for (size_t pos = 0; pos < p.size();) {
      offsets_.push_back(pos);
      cps_.push_back(DecodeUtf8Lenient(p, &pos));
    }
    offsets_.push_back(p.size());
  }

  absl::StatusOr<Grammar> Parse() {
    if (!IsValidUtf8(p_)) return absl::InvalidArgumentError("regex: the pattern is not valid UTF-8");
    size_t end = cps_.size();
    if (!cps_.empty() && cps_[0] == '^') pos_ = 1;
    // A trailing unescaped '$' anchors the end (count the backslashes before it).
    if (end > pos_ && cps_[end - 1] == '$') {
      size_t bs = 0;
      while (end - 1 - bs > pos_ && cps_[end - 2 - bs] == '\\') ++bs;
      if (bs % 2 == 0) --end;
    }
    end_ = end;
    Expr e = ParseAlternation(0);
    if (!status_.ok()) return status_;
    if (pos_ < end_) {
      if (cps_[pos_] == ')') return Error(pos_, "unbalanced ')'");
      return Error(pos_, "unexpected character");
    }
    Grammar g;
    g.root = AddRule(&g, "root");
    g.rules[g.root].body = std::move(e);
    return g;
  }

 private:
  absl::Status Error(size_t at, const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat("regex: column ", at + 1, ": ", what));
  }
  void Fail(size_t at, const std::string& what) {
    if (status_.ok()) status_ = Error(at, what);
  }
  bool AtEnd() const { return pos_ >= end_; }
  uint32_t Peek(size_t ahead = 0) const {
    return pos_ + ahead < end_ ? cps_[pos_ + ahead] : 0xFFFFFFFF;
  }

  Expr ParseAlternation(int depth) {
    std::vector<Expr> alts;
    alts.push_back(ParseConcat(depth));
    while (status_.ok() && Peek() == '|') {
      ++pos_;
      alts.push_back(ParseConcat(depth));
    }
    if (alts.size() == 1) return std::move(alts[0]);
    return Alt(std::move(alts));
  }

  Expr ParseConcat(int depth) {
    std::vector<Expr> items;
    while (status_.ok() && !AtEnd() && Peek() != '|' && Peek() != ')') {
      Expr atom = ParseAtom(depth);
      if (!status_.ok()) break;
      ParseQuantifiers(&atom);
      items.push_back(std::move(atom));
    }
    if (items.size() == 1) return std::move(items[0]);
    return Seq(std::move(items));
  }

  // Reads {m}, {m,}, {m,n} at pos_; false (pos_ unchanged) when it is not one
  // (PCRE then takes '{' literally).
  bool ReadBraces(int* min, int* max) {
    size_t p = pos_ + 1;
    auto read_int = [&](int* v) {
      const size_t start = p;
      long long x = 0;
      while (p < end_ && cps_[p] >= '0' && cps_[p] <= '9') {
        x = std::min<long long>(x * 10 + (cps_[p] - '0'), kMaxRepeat + 1);
        ++p;
      }
      *v = static_cast<int>(x);
      return p > start;
    };
    if (!read_int(min)) return false;
    *max = *min;
    if (p < end_ && cps_[p] == ',') {
      ++p;
      if (!read_int(max)) *max = -1;
    }
    if (p >= end_ || cps_[p] != '}') return false;
    pos_ = p + 1;
    return true;
  }

  void ParseQuantifiers(Expr* atom) {
    while (status_.ok() && !AtEnd()) {
      const size_t start = pos_;
      const uint32_t c = Peek();
      int min, max;
      if (c == '*') {
        min = 0, max = -1, ++pos_;
      } else if (c == '+') {
        min = 1, max = -1, ++pos_;
      } else if (c == '?') {
        min = 0, max = 1, ++pos_;
      } else if (c == '{' && ReadBraces(&min, &max)) {
        if (min > kMaxRepeat || max > kMaxRepeat) {
          return Fail(start, absl::StrCat("repetition count above ", kMaxRepeat));
        }
        if (max >= 0 && max < min) return Fail(start, "repetition {m,n} with n < m");
      } else {
        return;
      }
      // A lazy quantifier matches the same strings as a whole; a possessive
      // one does not, and a grammar cannot say it.
      if (Peek() == '?') {
        ++pos_;
      } else if (Peek() == '+') {
        return Fail(pos_, "possessive quantifiers are not supported");
      }
      *atom = Repeat(std::move(*atom), min, max);
      atom->line = 1;
      atom->column = static_cast<int>(start) + 1;
    }
  }

  Expr ParseAtom(int depth) {
    const size_t start = pos_;
    const uint32_t c = Peek();
    switch (c) {
      case '(':
        return ParseGroup(depth);
      case '[':
        return ParseClass();
      case '.':
        ++pos_;
        return CharClass({{'\n', '\n'}}, /*negated=*/true);
      case '^':
        Fail(start, "anchor '^' is only supported at the start of the pattern");
        return Expr();
      case '$':
        Fail(start, "anchor '$' is only supported at the end of the pattern");
        return Expr();
      case '*': case '+': case '?':
        Fail(start, "quantifier with nothing to repeat");
        return Expr();
      case '\\':
        return ParseEscape(/*in_class=*/false);
      default:
        ++pos_;
        return CodePoint(c);
    }
  }

  Expr ParseGroup(int depth) {
    const size_t start = pos_;
    if (depth >= kMaxDepth) return Fail(start, "groups nested too deeply"), Expr();
    ++pos_;
    if (Peek() == '?') {
      const uint32_t k = Peek(1);
      if (k == ':') {
        pos_ += 2;
      } else if (k == '=' || k == '!') {
        return Fail(start, k == '=' ? "lookahead (?=...) is not supported"
                                    : "negative lookahead (?!...) is not supported"),
               Expr();
      } else if (k == '<' && (Peek(2) == '=' || Peek(2) == '!')) {
        return Fail(start, "lookbehind (?<=...) / (?<!...) is not supported"), Expr();
      } else if (k == '<' || (k == 'P' && Peek(2) == '<')) {
        // A named group: its name is of no use here.
        while (!AtEnd() && Peek() != '>') ++pos_;
        if (AtEnd()) return Fail(start, "unterminated group name"), Expr();
        ++pos_;
      } else if (k == '>') {
        return Fail(start, "atomic groups (?>...) are not supported"), Expr();
      } else {
        return Fail(start, "inline flags and other (?...) groups are not supported"), Expr();
      }
    }
    Expr inner = ParseAlternation(depth + 1);
    if (!status_.ok()) return Expr();
    if (Peek() != ')') return Fail(start, "unbalanced '(': missing ')'"), Expr();
    ++pos_;
    return inner;
  }

  // An escape at pos_ ('\\'). In a class, a class escape gives a class; the
  // caller merges it.
  Expr ParseEscape(bool in_class) {
    const size_t start = pos_;
    ++pos_;
    if (AtEnd()) return Fail(start, "'\\' at the end of the pattern"), Expr();
    const uint32_t c = Peek();
    ++pos_;
    switch (c) {
      case 'd': return CharClass(DigitRanges());
      case 'D': return CharClass(Complement(DigitRanges()));
      case 'w': return CharClass(WordRanges());
      case 'W': return CharClass(Complement(WordRanges()));
      case 's': return CharClass(SpaceRanges());
      case 'S': return CharClass(Complement(SpaceRanges()));
      case 'n': return CodePoint('\n');
      case 't': return CodePoint('\t');
      case 'r': return CodePoint('\r');
      case 'f': return CodePoint('\f');
      case 'v': return CodePoint('\v');
      case 'e': return CodePoint(0x1B);
      case 'a': return CodePoint(0x07);
      case 'x': return CodePoint(ParseHexEscape(start));
      case 'u': return CodePoint(ParseFixedHex(start, 4));
      case 'b':
        if (in_class) return CodePoint('\b');
        return Fail(start, "word boundary \\b is not supported"), Expr();
      case 'B': return Fail(start, "\\B is not supported"), Expr();
      case 'A': case 'z': case 'Z': case 'G':
        return Fail(start, absl::StrCat("anchor \\", std::string(1, static_cast<char>(c)),
                                        " is not supported (use ^ and $ at the ends)")),
               Expr();
      case 'p': case 'P':
        return Fail(start, "Unicode properties \\p{...} are not supported"), Expr();
      case 'k': case 'g':
        return Fail(start, "backreferences are not supported"), Expr();
      default:
        break;
    }
    if (c >= '1' && c <= '9') return Fail(start, "backreferences are not supported"), Expr();
    if (c == '0') return CodePoint(0);
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
      return Fail(start, absl::StrCat("unknown escape '\\", std::string(1, static_cast<char>(c)),
                                      "'")),
             Expr();
    }
    return CodePoint(c);  // an escaped punctuation or other character stands for itself
  }

  uint32_t ParseFixedHex(size_t start, int digits) {
    uint32_t v = 0;
    for (int i = 0; i < digits; ++i) {
      const int d = HexValue(Peek());
      if (d < 0) return Fail(start, "bad hex escape"), 0;
      v = v * 16 + d;
      ++pos_;
    }
    return v;
  }

  // \xHH or \x{H...}.
  uint32_t ParseHexEscape(size_t start) {
    if (Peek() != '{') return ParseFixedHex(start, 2);
    ++pos_;
    uint64_t v = 0;
    int n = 0;
    while (HexValue(Peek()) >= 0 && n < 9) v = v * 16 + HexValue(Peek()), ++pos_, ++n;
    if (n == 0 || Peek() != '}' || v > kMaxCodePoint || (v >= 0xD800 && v <= 0xDFFF)) {
      return Fail(start, "bad hex escape \\x{...}"), 0;
    }
    ++pos_;
    return static_cast<uint32_t>(v);
  }

  static int HexValue(uint32_t c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }

  Expr ParseClass() {
    const size_t start = pos_;
    ++pos_;
    bool negated = false;
    if (Peek() == '^') negated = true, ++pos_;
    std::vector<CodePointRange> ranges;
    bool first = true;
    while (status_.ok() && !AtEnd() && (Peek() != ']' || first)) {
      first = false;
      if (Peek() == '[' && Peek(1) == ':') {
        return Fail(pos_, "POSIX classes [:name:] are not supported"), Expr();
      }
      const size_t item = pos_;
      uint32_t lo;
      if (Peek() == '\\') {
        Expr e = ParseEscape(/*in_class=*/true);
        if (!status_.ok()) return Expr();
        if (e.ranges.size() != 1 || e.ranges[0].lo != e.ranges[0].hi) {
          ranges.insert(ranges.end(), e.ranges.begin(), e.ranges.end());  // \d \w \s ...
          continue;
        }
        lo = e.ranges[0].lo;
      } else {
        lo = Peek();
        ++pos_;
      }
      uint32_t hi = lo;
      if (Peek() == '-' && Peek(1) != ']' && pos_ + 1 < end_) {
        ++pos_;
        if (Peek() == '\\') {
          Expr e = ParseEscape(true);
          if (!status_.ok()) return Expr();
          if (e.ranges.size() != 1 || e.ranges[0].lo != e.ranges[0].hi) {
            return Fail(item, "a class escape cannot end a range"), Expr();
          }
          hi = e.ranges[0].lo;
        } else {
          hi = Peek();
          ++pos_;
        }
        if (hi < lo) return Fail(item, "character class range out of order"), Expr();
      }
      ranges.push_back({lo, hi});
    }
    if (!status_.ok()) return Expr();
    if (AtEnd()) return Fail(start, "unterminated character class ('[' without ']')"), Expr();
    ++pos_;
    Expr e = CharClass(std::move(ranges), negated);
    e.line = 1;  // for the compiler's "matches no character"
    e.column = static_cast<int>(start) + 1;
    return e;
  }

  std::string_view p_;
  std::vector<uint32_t> cps_;
  std::vector<size_t> offsets_;
  size_t pos_ = 0;
  size_t end_ = 0;
  absl::Status status_;
};

}  // namespace

absl::StatusOr<Grammar> RegexToGrammar(std::string_view pattern) {
  return RegexParser(pattern).Parse();
}

}  // namespace grammar
}  // namespace streamgen
