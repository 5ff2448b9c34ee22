// The Jinja parser: tokens -> syntax tree, following Jinja2's grammar and
// operator precedence. Refuses what it does not know with the template's
// name, line and column, what was expected and what was found.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/text/jinja/ast.h"
#include "engine/text/jinja/lexer.h"

namespace streamgen {
namespace jinja {

// Nesting deeper than this (blocks or expressions) is refused, so that the
// parser's and the evaluator's recursion stay bounded.
inline constexpr int kMaxNesting = 100;

// INVALID_ARGUMENT "NAME:LINE:COLUMN: expected ..., got ..." on a syntax error.
absl::StatusOr<Body> Parse(const std::vector<Token>& tokens, absl::string_view name);

}  // namespace jinja
}  // namespace streamgen
