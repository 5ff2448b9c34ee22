#include "engine/grammar/json_schema_terminals.h"

#include <algorithm>
#include <map>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/status.h"

namespace streamgen::json_schema_internal {
namespace {

absl::Status Invalid(const std::string& message) {
  return absl::InvalidArgumentError(message);
}

// ---- integers --------------------------------------------------------------

std::string DigitClass(char lo, char hi) {
  if (lo == hi) return absl::StrCat("\"", std::string(1, lo), "\"");
  return absl::StrCat("[", std::string(1, lo), "-", std::string(1, hi), "]");
}

// Digit strings of lo.size() digits in [lo, hi] (leading zeros allowed: the
// callers strip them at the top).
std::string SameLength(const std::string& lo, const std::string& hi) {
  const size_t n = lo.size() - 1;
  if (n == 0) return DigitClass(lo[0], hi[0]);
  std::string lo_rest = lo.substr(1), hi_rest = hi.substr(1);
  if (lo[0] == hi[0]) return absl::StrCat(DigitClass(lo[0], lo[0]), " ", SameLength(lo_rest, hi_rest));
  const std::string zeros(n, '0'), nines(n, '9');
  const std::string any = absl::StrCat("[0-9]{", n, "}");
  if (lo_rest == zeros && hi_rest == nines) return absl::StrCat(DigitClass(lo[0], hi[0]), " ", any);
  std::vector<std::string> alts;
  char first = lo[0], last = hi[0];
  if (lo_rest == zeros) {
    // lo[0] itself takes any rest: fold it into the middle class.
  } else {
    alts.push_back(absl::StrCat(DigitClass(lo[0], lo[0]), " (", SameLength(lo_rest, nines), ")"));
    ++first;
  }
  if (hi_rest != nines) {
    --last;
    if (first <= last) alts.push_back(absl::StrCat(DigitClass(first, last), " ", any));
    alts.push_back(absl::StrCat(DigitClass(hi[0], hi[0]), " (", SameLength(zeros, hi_rest), ")"));
  } else if (first <= last) {
    alts.push_back(absl::StrCat(DigitClass(first, last), " ", any));
  }
  return absl::StrCat("(", absl::StrJoin(alts, " | "), ")");
}

// Non-negative integers in [lo, hi] (hi absent: unbounded), without leading zeros.
std::string NonNegative(uint64_t lo, std::optional<uint64_t> hi) {
  std::vector<std::string> alts;
  const size_t lo_digits = std::to_string(lo).size();
  const size_t hi_digits = hi ? std::to_string(*hi).size() : lo_digits;
  uint64_t power = 1;  // 10^(d-1)
  for (size_t d = 1; d < lo_digits; ++d) power *= 10;
  for (size_t d = lo_digits; d <= hi_digits; ++d, power *= 10) {
    const uint64_t first = d == 1 ? 0 : power;
    const uint64_t last = power * 10 - 1;
    uint64_t a = std::max(lo, first), b = hi ? std::min(*hi, last) : last;
    if (a > b) continue;
    alts.push_back(SameLength(std::to_string(a), std::to_string(b)));
  }
  if (!hi) alts.push_back(absl::StrCat("[1-9] [0-9]{", lo_digits, ",}"));
  if (alts.size() == 1) return alts[0];
  return absl::StrCat("(", absl::StrJoin(alts, " | "), ")");
}

// ---- code point sets -------------------------------------------------------

using Ranges = std::vector<std::pair<uint32_t, uint32_t>>;  // inclusive, sorted, disjoint
constexpr uint32_t kMaxCodePoint = 0x10FFFF;

Ranges Normalize(Ranges r) {
  std::sort(r.begin(), r.end());
  Ranges out;
  for (const auto& [a, b] : r) {
    if (!out.empty() && a <= out.back().second + 1) {
      out.back().second = std::max(out.back().second, b);
    } else {
      out.push_back({a, b});
    }
  }
  return out;
}

Ranges Complement(const Ranges& r) {
  Ranges out;
  uint32_t next = 0;
  for (const auto& [a, b] : Normalize(r)) {
    if (a > next) out.push_back({next, a - 1});
    next = b + 1;
  }
  if (next <= kMaxCodePoint) out.push_back({next, kMaxCodePoint});
  return out;
}

Ranges Subtract(const Ranges& r, const Ranges& minus) {
  Ranges complement = Complement(minus);
  Ranges out;
  for (const auto& [a, b] : Normalize(r)) {
    for (const auto& [c, d] : complement) {
      uint32_t lo = std::max(a, c), hi = std::min(b, d);
      if (lo <= hi) out.push_back({lo, hi});
    }
  }
  return out;
}

bool Contains(const Ranges& r, uint32_t c) {
  for (const auto& [a, b] : r) {
    if (a <= c && c <= b) return true;
  }
  return false;
}

// One code point inside a GBNF character class.
std::string ClassChar(uint32_t c) {
  if (c >= 0x21 && c < 0x7F && c != '\\' && c != ']' && c != '[' && c != '-' && c != '^') {
    return std::string(1, static_cast<char>(c));
  }
  if (c < 0x100) return absl::StrFormat("\\x%02X", c);
  if (c < 0x10000) return absl::StrFormat("\\u%04X", c);
  return absl::StrFormat("\\U%08X", c);
}

// The JSON text of the code point c inside a string: its escape for '"', '\'
// and control characters, else the character (as a GBNF literal).
std::string JsonTextLiteral(uint32_t c) {
  switch (c) {
    case '"': return R"("\\\"")";
    case '\\': return R"("\\\\")";
    case '\n': return R"("\\n")";
    case '\t': return R"("\\t")";
    case '\r': return R"("\\r")";
    case '\b': return R"("\\b")";
    case '\f': return R"("\\f")";
    default: break;
  }
  if (c < 0x20) return absl::StrFormat(R"("\\u%04x")", c);
  return absl::StrCat("[", ClassChar(c), "]");
}

// The JSON text (inside a string) of any one code point of `set`.
std::string SetExpr(const Ranges& set) {
  const Ranges specials = {{0, 0x1F}, {'"', '"'}, {'\\', '\\'}};
  Ranges raw = Subtract(set, specials);
  std::vector<std::string> alts;
  if (!raw.empty()) {
    std::string cls = "[";
    for (const auto& [a, b] : raw) {
      cls += ClassChar(a);
      if (b > a) absl::StrAppend(&cls, "-", ClassChar(b));
    }
    alts.push_back(cls + "]");
  }
  for (uint32_t c : {0x22u, 0x5Cu}) {
    if (Contains(set, c)) alts.push_back(JsonTextLiteral(c));
  }
  for (uint32_t c = 0; c < 0x20; ++c) {
    if (Contains(set, c)) alts.push_back(JsonTextLiteral(c));
  }
  if (alts.empty()) return "";
  if (alts.size() == 1) return alts[0];
  return absl::StrCat("(", absl::StrJoin(alts, " | "), ")");
}

// ---- patterns --------------------------------------------------------------

// Decodes one UTF-8 code point at s[*i] (invalid bytes: themselves).
uint32_t NextCodePoint(std::string_view s, size_t* i) {
  unsigned char c = s[*i];
  int extra = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;
  if (*i + extra >= s.size()) extra = 0;
  uint32_t cp = extra == 0 ? c : c & (0x3F >> extra);
  ++*i;
  for (int k = 0; k < extra; ++k, ++*i) cp = (cp << 6) | (static_cast<unsigned char>(s[*i]) & 0x3F);
  return cp;
}

const Ranges kDigit = {{'0', '9'}};
const Ranges kWord = {{'0', '9'}, {'A', 'Z'}, {'_', '_'}, {'a', 'z'}};
const Ranges kSpace = {{'\t', '\r'}, {' ', ' '}, {0xA0, 0xA0}, {0x1680, 0x1680}, {0x2000, 0x200A},
                       {0x2028, 0x2029}, {0x202F, 0x202F}, {0x205F, 0x205F}, {0x3000, 0x3000},
                       {0xFEFF, 0xFEFF}};
const Ranges kDot = Complement({{'\n', '\n'}, {'\r', '\r'}, {0x2028, 0x2029}});

// A recursive-descent translator of one ECMAScript pattern to GBNF.
class PatternTranslator {
 public:
  PatternTranslator(std::string_view p, int max_repetition) : p_(p), max_rep_(max_repetition) {}

  absl::StatusOr<std::string> Translate() {
    // Top-level alternatives each carry their own anchors.
    std::vector<std::string> alts;
    const std::string any = absl::StrCat("(", kJsonCharExpr, ")*");
    while (true) {
      bool start = false, end = false;
      if (Peek('^')) { ++pos_; start = true; }
      SG_ASSIGN_OR_RETURN(std::string body, Concat(/*top=*/true, &end));
      alts.push_back(absl::StrCat(start ? "" : any + " ", "(", body, ")", end ? "" : " " + any));
      if (pos_ >= p_.size()) break;
      if (p_[pos_] != '|') return Error("unbalanced ')'");
      ++pos_;
    }
    if (alts.size() == 1) return alts[0];
    return absl::StrCat("(", absl::StrJoin(alts, " | "), ")");
  }

 private:
  bool Peek(char c) const { return pos_ < p_.size() && p_[pos_] == c; }
  absl::Status Error(const std::string& what) const {
    return Invalid(absl::StrCat("pattern: ", what, " at offset ", pos_));
  }

  absl::StatusOr<std::string> Alternation() {
    std::vector<std::string> alts;
    while (true) {
      SG_ASSIGN_OR_RETURN(std::string body, Concat(/*top=*/false, nullptr));
      alts.push_back(body);
      if (!Peek('|')) break;
      ++pos_;
    }
    return absl::StrCat("(", absl::StrJoin(alts, " | "), ")");
  }

  // A sequence up to '|', ')' or the end. At the top level a final '$' sets *end.
  absl::StatusOr<std::string> Concat(bool top, bool* end) {
    std::vector<std::string> items;
    while (pos_ < p_.size() && !Peek('|') && !Peek(')')) {
      if (Peek('$')) {
        ++pos_;
        if (top && (pos_ == p_.size() || Peek('|'))) {
          *end = true;
          break;
        }
        return Error("'$' inside the pattern (only at the end of an alternative)");
      }
      if (Peek('^')) return Error("'^' inside the pattern (only at the start of an alternative)");
      SG_ASSIGN_OR_RETURN(std::string atom, Atom());
      SG_ASSIGN_OR_RETURN(std::string quantified, Quantifier(atom));
      items.push_back(quantified);
    }
    if (top && Peek(')')) return Error("unbalanced ')'");
    if (items.empty()) return std::string("\"\"");
    return absl::StrJoin(items, " ");
  }

  absl::StatusOr<int> Number() {
    size_t start = pos_;
    long value = 0;
    while (pos_ < p_.size() && p_[pos_] >= '0' && p_[pos_] <= '9') {
      value = std::min<long>(value * 10 + (p_[pos_] - '0'), 1L << 40);
      ++pos_;
    }
    if (pos_ == start) return Error("a number expected in {m,n}");
    if (value > max_rep_) return Error(absl::StrCat("repetition count ", value, " above the limit ", max_rep_));
    return static_cast<int>(value);
  }

  absl::StatusOr<std::string> Quantifier(const std::string& atom) {
    if (pos_ >= p_.size()) return atom;
    std::string q;
    char c = p_[pos_];
    if (c == '*' || c == '+' || c == '?') {
      ++pos_;
      q = std::string(1, c);
    } else if (c == '{') {
      ++pos_;
      SG_ASSIGN_OR_RETURN(int m, Number());
      q = absl::StrCat("{", m);
      if (Peek(',')) {
        ++pos_;
        q += ",";
        if (!Peek('}')) {
          SG_ASSIGN_OR_RETURN(int n, Number());
          if (n < m) return Error("{m,n} with n < m");
          absl::StrAppend(&q, n);
        }
      }
      if (!Peek('}')) return Error("unterminated {m,n}");
      ++pos_;
      q += "}";
    } else {
      return atom;
    }
    if (Peek('?')) ++pos_;  // lazy: the same language
    if (pos_ < p_.size() && (p_[pos_] == '*' || p_[pos_] == '+' || p_[pos_] == '{')) {
      return Error("a quantifier after a quantifier");
    }
    return absl::StrCat("(", atom, ")", q);
  }

  absl::StatusOr<std::string> Atom() {
    char c = p_[pos_];
    if (c == '(') {
      ++pos_;
      if (Peek('?')) {
        if (pos_ + 1 < p_.size() && p_[pos_ + 1] == ':') {
          pos_ += 2;
        } else if (pos_ + 1 < p_.size() && p_[pos_ + 1] == '<' && pos_ + 2 < p_.size() &&
                   p_[pos_ + 2] != '=' && p_[pos_ + 2] != '!') {
          size_t close = p_.find('>', pos_);
          if (close == std::string_view::npos) return Error("unterminated group name");
          pos_ = close + 1;
        } else {
          return Error("look-around '(?' is not supported");
        }
      }
      SG_ASSIGN_OR_RETURN(std::string inner, Alternation());
      if (!Peek(')')) return Error("missing ')'");
      ++pos_;
      return inner;
    }
    if (c == '[') return Class();
    if (c == '.') {
      ++pos_;
      return SetExpr(kDot);
    }
    if (c == '*' || c == '+' || c == '?' || c == '{') return Error("nothing to repeat");
    if (c == '\\') {
      SG_ASSIGN_OR_RETURN(Ranges set, Escape(/*in_class=*/false));
      std::string expr = SetExpr(set);
      if (expr.empty()) return Error("an empty class");
      return expr;
    }
    uint32_t cp = NextCodePoint(p_, &pos_);
    return SetExpr({{cp, cp}});
  }

  // After '\': the set it stands for (a single character or a class escape).
  absl::StatusOr<Ranges> Escape(bool in_class) {
    ++pos_;
    if (pos_ >= p_.size()) return Error("a trailing '\\'");
    char c = p_[pos_++];
    switch (c) {
      case 'd': return kDigit;
      case 'D': return Complement(kDigit);
      case 'w': return kWord;
      case 'W': return Complement(kWord);
      case 's': return kSpace;
      case 'S': return Complement(kSpace);
      case 'n': return Ranges{{'\n', '\n'}};
      case 't': return Ranges{{'\t', '\t'}};
      case 'r': return Ranges{{'\r', '\r'}};
      case 'f': return Ranges{{'\f', '\f'}};
      case 'v': return Ranges{{'\v', '\v'}};
      case '0': return Ranges{{0, 0}};
      case 'x':
      case 'u': {
        size_t digits = c == 'x' ? 2 : 4;
        if (pos_ + digits > p_.size()) return Error("a short \\x or \\u escape");
        uint32_t cp = 0;
        for (size_t k = 0; k < digits; ++k) {
          char h = p_[pos_++];
          int v = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10
                : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
          if (v < 0) return Error("a bad hex digit");
          cp = cp * 16 + v;
        }
        return Ranges{{cp, cp}};
      }
      case 'b':
        if (in_class) return Ranges{{'\b', '\b'}};
        return Error("'\\b' (word boundary) is not supported");
      default: break;
    }
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '1' && c <= '9')) {
      --pos_;
      return Error(absl::StrCat("the escape '\\", std::string(1, c), "' is not supported"));
    }
    --pos_;
    uint32_t cp = NextCodePoint(p_, &pos_);
    return Ranges{{cp, cp}};
  }

  absl::StatusOr<std::string> Class() {
    ++pos_;  // '['
    bool negate = Peek('^');
    if (negate) ++pos_;
    Ranges set;
    while (true) {
      if (pos_ >= p_.size()) return Error("unterminated '['");
      if (Peek(']')) break;  // "[]" is the empty class, "[^]" any character
      Ranges item;
      if (Peek('\\')) {
        SG_ASSIGN_OR_RETURN(item, Escape(/*in_class=*/true));
      } else {
        uint32_t cp = NextCodePoint(p_, &pos_);
        item = {{cp, cp}};
      }
      // A range a-b (a and b single characters).
      if (Peek('-') && pos_ + 1 < p_.size() && p_[pos_ + 1] != ']' && item.size() == 1 &&
          item[0].first == item[0].second) {
        ++pos_;
        Ranges hi;
        if (Peek('\\')) {
          SG_ASSIGN_OR_RETURN(hi, Escape(/*in_class=*/true));
        } else {
          uint32_t cp = NextCodePoint(p_, &pos_);
          hi = {{cp, cp}};
        }
        if (hi.size() != 1 || hi[0].first != hi[0].second) return Error("a class escape as a range end");
        if (hi[0].first < item[0].first) return Error("a range out of order in a class");
        item = {{item[0].first, hi[0].first}};
      }
      set.insert(set.end(), item.begin(), item.end());
    }
    ++pos_;  // ']'
    if (negate) set = Complement(set);
    std::string expr = SetExpr(Normalize(set));
    if (expr.empty()) return Error("an empty class");
    return expr;
  }

  std::string_view p_;
  int max_rep_;
  size_t pos_ = 0;
};

}  // namespace

std::string GbnfLiteral(std::string_view bytes) {
  std::string out = "\"";
  for (char ch : bytes) {
    unsigned char c = ch;
    if (c == '"' || c == '\\') {
      out += '\\';
      out += ch;
    } else if (c < 0x20 || c == 0x7F) {
      absl::StrAppend(&out, absl::StrFormat("\\x%02X", c));
    } else {
      out += ch;
    }
  }
  return out + "\"";
}

absl::StatusOr<std::string> IntegerRangeExpr(std::optional<int64_t> lo, std::optional<int64_t> hi) {
  if (lo && hi && *lo > *hi) {
    return Invalid(absl::StrCat("no integer in [", *lo, ", ", *hi, "]"));
  }
  if (lo && *lo >= 0) {
    std::optional<uint64_t> h;
    if (hi) h = static_cast<uint64_t>(*hi);
    return NonNegative(static_cast<uint64_t>(*lo), h);
  }
  if (hi && *hi < 0) {
    std::optional<uint64_t> magnitude_hi;
    if (lo) magnitude_hi = static_cast<uint64_t>(-*lo);
    return absl::StrCat("\"-\" ", NonNegative(static_cast<uint64_t>(-*hi), magnitude_hi));
  }
  // lo < 0 (or none) <= hi (or none).
  std::optional<uint64_t> neg_hi, pos_hi;
  if (lo) neg_hi = static_cast<uint64_t>(-*lo);
  if (hi) pos_hi = static_cast<uint64_t>(*hi);
  return absl::StrCat("(\"-\" ", NonNegative(1, neg_hi), " | ", NonNegative(0, pos_hi), ")");
}

absl::StatusOr<std::string> FormatContentExpr(std::string_view format) {
  static const std::string kDate =
      R"([0-9]{4} "-" (("0" [13578] | "1" [02]) "-" ("0" [1-9] | [12] [0-9] | "3" [01]))"
      R"( | ("0" [469] | "11") "-" ("0" [1-9] | [12] [0-9] | "30"))"
      R"( | "02-" ("0" [1-9] | "1" [0-9] | "2" [0-8])))";
  static const std::string kHour = R"(([01] [0-9] | "2" [0-3]))";
  static const std::string kTime = absl::StrCat(
      kHour, R"( ":" [0-5] [0-9] ":" [0-5] [0-9] ("." [0-9]{1,9})? ("Z" | [+-] )", kHour,
      R"( ":" [0-5] [0-9]))");
  if (format == "date") return "(" + kDate + ")";
  if (format == "time") return "(" + kTime + ")";
  if (format == "date-time") return absl::StrCat("(", kDate, ") \"T\" (", kTime, ")");
  if (format == "uuid") {
    return R"([0-9a-fA-F]{8} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{12})";
  }
  if (format == "email") {
    // A common subset of RFC 5321's addresses: dot-atoms of letters, digits,
    // '_', '+', '-' at a domain of two or more labels.
    return R"([a-zA-Z0-9_+-]+ ("." [a-zA-Z0-9_+-]+)* "@" ([a-zA-Z0-9] ([a-zA-Z0-9-]{0,61} [a-zA-Z0-9])? ".")+ [a-zA-Z] [a-zA-Z0-9-]{0,61} [a-zA-Z0-9])";
  }
  if (format == "ipv4") {
    return R"((([0-9] | [1-9] [0-9] | "1" [0-9] [0-9] | "2" [0-4] [0-9] | "25" [0-5]) "."){3} ([0-9] | [1-9] [0-9] | "1" [0-9] [0-9] | "2" [0-4] [0-9] | "25" [0-5]))";
  }
  return absl::NotFoundError(absl::StrCat("format '", std::string(format), "'"));
}

namespace {

struct TrieNode {
  std::map<uint32_t, TrieNode> children;
  bool end = false;
};

std::string NotIn(const TrieNode& node) {
  std::vector<std::string> alts;
  Ranges excluded = {{0, 0x1F}, {'"', '"'}, {'\\', '\\'}};
  for (const auto& [cp, child] : node.children) {
    alts.push_back(absl::StrCat("[", ClassChar(cp), "] ", NotIn(child)));
    excluded.push_back({cp, cp});
  }
  Ranges other = Complement(excluded);
  std::string cls = "[";
  for (const auto& [a, b] : other) {
    cls += ClassChar(a);
    if (b > a) absl::StrAppend(&cls, "-", ClassChar(b));
  }
  alts.push_back(absl::StrCat(cls, "] (", kJsonCharExpr, ")*"));
  std::string expr = absl::StrCat("(", absl::StrJoin(alts, " | "), ")");
  // Where no name ends, the key may end too.
  return node.end ? expr : expr + "?";
}

}  // namespace

std::string KeyNotInExpr(const std::vector<std::string>& names) {
  TrieNode root;
  for (const std::string& name : names) {
    TrieNode* node = &root;
    for (size_t i = 0; i < name.size();) node = &node->children[NextCodePoint(name, &i)];
    node->end = true;
  }
  return NotIn(root);
}

absl::StatusOr<std::string> PatternContentExpr(std::string_view pattern, int max_repetition) {
  return PatternTranslator(pattern, max_repetition).Translate();
}

}  // namespace streamgen::json_schema_internal
