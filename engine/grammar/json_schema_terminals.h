// The leaves of the JSON Schema compiler (json_schema.cc): GBNF expressions
// for literals, integer ranges, string formats and ECMAScript patterns.
// Internal to engine/grammar; exposed for tests.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace streamgen::json_schema_internal {

// A GBNF string literal matching exactly `bytes` (UTF-8): "..." with '"', '\'
// and control characters escaped.
std::string GbnfLiteral(std::string_view bytes);

// One JSON string character (a code point or an escape), as GBNF. \u escapes
// of UTF-16 surrogates are left out: a pair would count as two characters
// here but one for minLength, and a lone one is no character at all (astral
// characters come as UTF-8).
inline constexpr char kJsonCharExpr[] =
    R"([^"\\\x00-\x1F] | "\\" (["\\/bfnrt] | "u" ([0-9a-cA-CeEfF] [0-9a-fA-F]{3} | [dD] [0-7] [0-9a-fA-F]{2})))";

// A GBNF expression for the decimal integers in [lo, hi] (no leading zeros,
// no "-0"); an absent bound is unbounded. INVALID_ARGUMENT when lo > hi.
absl::StatusOr<std::string> IntegerRangeExpr(std::optional<int64_t> lo,
                                             std::optional<int64_t> hi);

// The content (between the quotes) of a JSON string in `format`: date, time,
// date-time, uuid, email, ipv4. NOT_FOUND for any other format.
absl::StatusOr<std::string> FormatContentExpr(std::string_view format);

// The content (between the quotes, as JSON text: '"' and '\' escaped) of the
// JSON strings whose value matches the ECMAScript regular expression
// `pattern` as JSON Schema uses it (a search: unanchored unless ^ / $).
// Supported: literals, ., classes, \d \w \s \D \W \S, groups, (?:...),
// alternation, * + ? {m} {m,} {m,n} (lazy or not), ^ and $ at the ends of
// top-level alternatives. INVALID_ARGUMENT naming the construct otherwise
// (look-around, back-references, \b ...).
absl::StatusOr<std::string> PatternContentExpr(std::string_view pattern, int max_repetition);

// The content (between the quotes) of the JSON strings that are none of
// `names` (the JSON text of each, escapes included, without the quotes). A
// string that differs from every name first at an escape is left out: the
// grammar is stricter there, never looser.
std::string KeyNotInExpr(const std::vector<std::string>& names);

}  // namespace streamgen::json_schema_internal
