#include "engine/text/jinja/lexer.h"

#include <algorithm>
#include <cctype>
#include <cstdint>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace streamgen {
namespace jinja {
namespace {

void AppendUtf8(uint32_t code, std::string* out) {
  if (code < 0x80) {
    *out += static_cast<char>(code);
  } else if (code < 0x800) {
    *out += static_cast<char>(0xc0 | (code >> 6));
    *out += static_cast<char>(0x80 | (code & 0x3f));
  } else if (code < 0x10000) {
    *out += static_cast<char>(0xe0 | (code >> 12));
    *out += static_cast<char>(0x80 | ((code >> 6) & 0x3f));
    *out += static_cast<char>(0x80 | (code & 0x3f));
  } else {
    *out += static_cast<char>(0xf0 | (code >> 18));
    *out += static_cast<char>(0x80 | ((code >> 12) & 0x3f));
    *out += static_cast<char>(0x80 | ((code >> 6) & 0x3f));
    *out += static_cast<char>(0x80 | (code & 0x3f));
  }
}

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

class Lexer {
 public:
  Lexer(absl::string_view source, absl::string_view name) : src_(source), name_(name) {
    line_starts_.push_back(0);
    for (size_t i = 0; i < src_.size(); ++i) {
      if (src_[i] == '\n') line_starts_.push_back(i + 1);
    }
  }

  absl::StatusOr<std::vector<Token>> Run() {
    bool strip_next = false;  // the previous tag ended with "-"
    while (pos_ < src_.size()) {
      size_t tag = FindTagStart(pos_);
      size_t text_begin = pos_;
      std::string text(src_.substr(pos_, tag - pos_));
      if (strip_next) {
        size_t first = 0;
        while (first < text.size() && IsSpace(text[first])) ++first;
        text.erase(0, first);
        text_begin += first;
      }
      strip_next = false;
      if (tag == src_.size()) {
        Emit(TokenType::kText, std::move(text), text_begin);
        break;
      }
      char kind = src_[tag + 1];  // '{', '%' or '#'
      char modifier = tag + 2 < src_.size() ? src_[tag + 2] : '\0';
      if (modifier == '-') {
        while (!text.empty() && IsSpace(text.back())) text.pop_back();
      } else if (modifier != '+' && kind != '{') {
        LStrip(&text, text_begin);
      }
      Emit(TokenType::kText, std::move(text), text_begin);
      pos_ = tag + 2 + (modifier == '-' || modifier == '+' ? 1 : 0);
      char end_modifier = '\0';
      if (kind == '#') {
        size_t end = src_.find("#}", pos_);
        if (end == absl::string_view::npos) return Error(tag, "unterminated comment: expected '#}'");
        end_modifier = end > pos_ && (src_[end - 1] == '-' || src_[end - 1] == '+') ? src_[end - 1] : '\0';
        pos_ = end + 2;
      } else {
        SG_ASSIGN_OR_RETURN(end_modifier, LexTag(kind, tag));
      }
      if (end_modifier == '-') {
        strip_next = true;
      } else if (kind != '{' && end_modifier != '+') {
        // trim_blocks: the first newline after a block tag or comment goes.
        if (absl::StartsWith(src_.substr(pos_), "\r\n")) {
          pos_ += 2;
        } else if (pos_ < src_.size() && src_[pos_] == '\n') {
          ++pos_;
        }
      }
    }
    tokens_.push_back(Token{TokenType::kEnd, "", LineOf(src_.size()), ColumnOf(src_.size())});
    return std::move(tokens_);
  }

 private:
  size_t FindTagStart(size_t from) const {
    for (size_t i = from; i + 1 < src_.size(); ++i) {
      if (src_[i] == '{' && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#')) {
        return i;
      }
    }
    return src_.size();
  }

  // lstrip_blocks: spaces and tabs between a line's start and a block tag go.
  void LStrip(std::string* text, size_t text_begin) const {
    size_t line_start = text->rfind('\n');
    bool at_line_start;
    if (line_start == std::string::npos) {
      line_start = 0;
      at_line_start = text_begin == 0 || src_[text_begin - 1] == '\n';
    } else {
      line_start += 1;
      at_line_start = true;
    }
    if (!at_line_start) return;
    for (size_t i = line_start; i < text->size(); ++i) {
      if ((*text)[i] != ' ' && (*text)[i] != '\t') return;
    }
    text->erase(line_start);
  }

  // Lexes the inside of {{ }} or {% %}; returns the end marker's modifier.
  absl::StatusOr<char> LexTag(char kind, size_t tag_start) {
    Emit(kind == '{' ? TokenType::kVarBegin : TokenType::kBlockBegin, kind == '{' ? "{{" : "{%",
         tag_start);
    const char* close = kind == '{' ? "}}" : "%}";
    int depth = 0;  // open brackets: "}}" inside a dict literal does not end the tag
    while (true) {
      while (pos_ < src_.size() && IsSpace(src_[pos_])) ++pos_;
      if (pos_ >= src_.size()) {
        return Error(tag_start, absl::StrCat("unterminated tag: expected '", close, "'"));
      }
      absl::string_view rest = src_.substr(pos_);
      if (depth == 0) {
        for (char modifier : {'-', '+', '\0'}) {
          std::string end = modifier ? std::string(1, modifier) + close : std::string(close);
          if (absl::StartsWith(rest, end)) {
            Emit(kind == '{' ? TokenType::kVarEnd : TokenType::kBlockEnd, close, pos_);
            pos_ += end.size();
            return modifier;
          }
        }
      }
      char c = src_[pos_];
      size_t start = pos_;
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        while (pos_ < src_.size() &&
               (std::isalnum(static_cast<unsigned char>(src_[pos_])) || src_[pos_] == '_')) {
          ++pos_;
        }
        Emit(TokenType::kName, std::string(src_.substr(start, pos_ - start)), start);
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        SG_RETURN_IF_ERROR(LexNumber());
      } else if (c == '\'' || c == '"') {
        SG_RETURN_IF_ERROR(LexString(c));
      } else {
        static const char* const kTwo[] = {"//", "**", "==", "!=", "<=", ">="};
        std::string op;
        for (const char* two : kTwo) {
          if (absl::StartsWith(rest, two)) op = two;
        }
        if (op.empty()) {
          if (std::string("+-*/%~<>()[]{},.:|=").find(c) == std::string::npos) {
            return Error(pos_, absl::StrCat("unexpected character '", std::string(1, c), "'"));
          }
          op = std::string(1, c);
        }
        if (op == "(" || op == "[" || op == "{") ++depth;
        if ((op == ")" || op == "]" || op == "}") && depth > 0) --depth;
        pos_ += op.size();
        Emit(TokenType::kOperator, op, start);
      }
    }
  }

  absl::Status LexNumber() {
    size_t start = pos_;
    auto digits = [&] {
      while (pos_ < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[pos_])) || src_[pos_] == '_')) ++pos_;
    };
    digits();
    bool is_float = false;
    if (pos_ + 1 < src_.size() && src_[pos_] == '.' &&
        std::isdigit(static_cast<unsigned char>(src_[pos_ + 1]))) {
      is_float = true;
      ++pos_;
      digits();
    }
    if (pos_ < src_.size() && (src_[pos_] == 'e' || src_[pos_] == 'E')) {
      size_t save = pos_++;
      if (pos_ < src_.size() && (src_[pos_] == '+' || src_[pos_] == '-')) ++pos_;
      if (pos_ < src_.size() && std::isdigit(static_cast<unsigned char>(src_[pos_]))) {
        is_float = true;
        digits();
      } else {
        pos_ = save;
      }
    }
    std::string text;
    for (char c : src_.substr(start, pos_ - start)) {
      if (c != '_') text += c;
    }
    Emit(is_float ? TokenType::kFloat : TokenType::kInt, text, start);
    return absl::OkStatus();
  }

  absl::Status LexString(char quote) {
    size_t start = pos_++;
    std::string value;
    while (true) {
      if (pos_ >= src_.size()) return Error(start, "unterminated string literal");
      char c = src_[pos_++];
      if (c == quote) break;
      if (c != '\\') {
        value += c;
        continue;
      }
      if (pos_ >= src_.size()) return Error(start, "unterminated string literal");
      char e = src_[pos_++];
      switch (e) {
        case 'n': value += '\n'; break;
        case 't': value += '\t'; break;
        case 'r': value += '\r'; break;
        case '0': value += '\0'; break;
        case '\\': case '\'': case '"': value += e; break;
        case 'a': value += '\a'; break;
        case 'b': value += '\b'; break;
        case 'f': value += '\f'; break;
        case 'v': value += '\v'; break;
        case '\n': break;  // a line continuation
        case 'x': case 'u': case 'U': {
          // \xXX, \uXXXX, \UXXXXXXXX: a code point, written as UTF-8.
          size_t digits = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          uint32_t code = 0;
          for (size_t i = 0; i < digits; ++i) {
            char h = pos_ + i < src_.size() ? src_[pos_ + i] : '\0';
            if (!std::isxdigit(static_cast<unsigned char>(h))) {
              return Error(pos_ - 2, absl::StrCat("truncated \\", std::string(1, e), " escape"));
            }
            code = code * 16 + (std::isdigit(static_cast<unsigned char>(h)) ? h - '0' : (h | 0x20) - 'a' + 10);
          }
          pos_ += digits;
          if (code > 0x10ffff) return Error(pos_ - digits - 2, "escape beyond U+10FFFF");
          AppendUtf8(code, &value);
          break;
        }
        default: value += '\\'; value += e;  // Python keeps unknown escapes
      }
    }
    Emit(TokenType::kString, std::move(value), start);
    return absl::OkStatus();
  }

  void Emit(TokenType type, std::string text, size_t at) {
    if (type == TokenType::kText && text.empty()) return;
    tokens_.push_back(Token{type, std::move(text), LineOf(at), ColumnOf(at)});
  }

  int LineOf(size_t at) const {
    return static_cast<int>(std::upper_bound(line_starts_.begin(), line_starts_.end(), at) -
                            line_starts_.begin());
  }
  int ColumnOf(size_t at) const { return static_cast<int>(at - line_starts_[LineOf(at) - 1]) + 1; }

  absl::Status Error(size_t at, absl::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat(name_, ":", LineOf(at), ":", ColumnOf(at), ": ", what));
  }

  absl::string_view src_;
  std::string name_;
  size_t pos_ = 0;
  std::vector<Token> tokens_;
  std::vector<size_t> line_starts_;  // offset of each line's first byte
};

}  // namespace

std::string DescribeToken(const Token& token) {
  switch (token.type) {
    case TokenType::kText: return "template text";
    case TokenType::kVarBegin: return "'{{'";
    case TokenType::kVarEnd: return "'}}'";
    case TokenType::kBlockBegin: return "'{%'";
    case TokenType::kBlockEnd: return "'%}'";
    case TokenType::kString: return "a string";
    case TokenType::kInt: case TokenType::kFloat: return absl::StrCat("number ", token.text);
    case TokenType::kEnd: return "end of template";
    default: return absl::StrCat("'", token.text, "'");
  }
}

absl::StatusOr<std::vector<Token>> Tokenize(absl::string_view source, absl::string_view name) {
  // As Jinja2 reads a source (keep_trailing_newline off): line ends become
  // "\n", and one newline at the very end goes.
  std::string normalized;
  normalized.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      normalized += '\n';
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      normalized += source[i];
    }
  }
  if (!normalized.empty() && normalized.back() == '\n') normalized.pop_back();
  return Lexer(normalized, name).Run();
}

}  // namespace jinja
}  // namespace streamgen
