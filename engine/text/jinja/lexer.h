// The Jinja lexer: template text -> tokens, as Jinja2 configured by
// transformers lexes it (trim_blocks and lstrip_blocks on; "-" and "+"
// whitespace control on {{ }}, {% %} and {# #}). Comments are dropped here.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace streamgen {
namespace jinja {

enum class TokenType {
  kText,        // literal template text (after whitespace control)
  kVarBegin,    // {{
  kVarEnd,      // }}
  kBlockBegin,  // {%
  kBlockEnd,    // %}
  kName,        // identifier or keyword
  kString,      // string literal; text is the unescaped value
  kInt,         // integer literal
  kFloat,       // float literal
  kOperator,    // + - * / // % ** ~ == != < > <= >= ( ) [ ] { } , . : | =
  kEnd,         // end of template
};

struct Token {
  TokenType type = TokenType::kEnd;
  std::string text;
  int line = 1;    // 1-based, where the token starts
  int column = 1;  // 1-based, in bytes
};

// What a token is called in error messages: "'endfor'", "string", "end of template".
std::string DescribeToken(const Token& token);

// INVALID_ARGUMENT "NAME:LINE:COLUMN: ..." for an unterminated tag, comment or
// string, or a character that starts no token. `name` names the template.
absl::StatusOr<std::vector<Token>> Tokenize(absl::string_view source, absl::string_view name);

}  // namespace jinja
}  // namespace streamgen
