// JSON Schema -> grammar: compiles a JSON Schema document to a grammar in the
// project's EBNF dialect (llama.cpp's GBNF, see docs/structured-outputs.md),
// whose `root` rule matches the JSON texts the schema accepts, as far as a
// context-free grammar can say it. What is supported, the defaults and the
// known limits are listed in docs/structured-outputs.md, "JSON Schema support".
//
// The contract, in short:
//  - every keyword is either compiled, ignored by design (annotations: title,
//    description, $comment, examples, default, $schema, deprecated, readOnly,
//    writeOnly, ...), or refused with INVALID_ARGUMENT
//    "json_schema: unsupported keyword 'X' at /json/pointer"; nothing is
//    silently dropped;
//  - object properties come in the order of `properties` (then the `required`
//    names that `properties` does not declare, then additional properties);
//    optional properties may be left out;
//  - between tokens, at most `max_whitespace` characters of [ \t\n].
//
// Thread-safe: a pure function of its arguments.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace streamgen {

struct JsonSchemaOptions {
  // Whitespace allowed between two JSON tokens (after '{', around ':' and
  // ',', before '}' ...): up to this many characters of [ \t\n]. 0: compact
  // JSON only. Bounded so that a model cannot spend its budget on spaces.
  int max_whitespace = 16;
  // Object properties the schema does not declare, where `additionalProperties`
  // is absent: true follows JSON Schema (allowed, any value); false follows
  // OpenAI's strict mode (only the declared properties). An explicit
  // `additionalProperties` always wins.
  bool allow_additional_properties_by_default = true;
  // Abuse limits. A schema beyond them is refused with a message naming the
  // limit and where it was hit.
  int max_depth = 64;             // nesting of subschemas (and of $ref chains)
  int max_rules = 20000;          // rules of the grammar
  int max_repetition = 10000;     // minLength, maxLength, minItems, maxItems bounds
  size_t max_grammar_bytes = 4 << 20;  // length of the grammar text
};

// The grammar text (GBNF) for `schema`. The schema must be parsed with
// nlohmann::ordered_json: the order of `properties` is the order of the output.
absl::StatusOr<std::string> JsonSchemaToGrammar(const nlohmann::ordered_json& schema,
                                                const JsonSchemaOptions& options = {});

// The same from JSON text (ConstraintSpec::text); malformed JSON is
// INVALID_ARGUMENT "json_schema: not valid JSON: ...".
absl::StatusOr<std::string> JsonSchemaTextToGrammar(std::string_view schema_text,
                                                    const JsonSchemaOptions& options = {});

// The canonical serialization of a JSON value inside a grammar (enum, const):
// compact, object keys sorted, a float with an integral value below 2^53
// written as an integer (JSON Schema's 1.0 == 1). Exposed for tests.
std::string CanonicalJson(const nlohmann::ordered_json& value);

}  // namespace streamgen
