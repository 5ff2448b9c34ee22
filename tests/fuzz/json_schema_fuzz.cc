// Fuzz target: engine/grammar/json_schema.cc (JSON Schema -> grammar). The
// input is a schema's JSON text, compiled with the default options and with
// compact whitespace and small limits.
//
// Properties: never a crash, a hang or unbounded memory (depth, rule and size
// limits); the result is either a grammar that starts with "root ::= ", ends
// with a newline and is no longer than the size limit, or INVALID_ARGUMENT
// with a message that starts "json_schema: "; compiling is deterministic
// (twice, the same).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/strings/match.h"
#include "engine/grammar/json_schema.h"
#include "tests/fuzz/fuzz_util.h"

namespace streamgen {
namespace {

void Check(std::string_view text, const JsonSchemaOptions& options) {
  absl::StatusOr<std::string> first = JsonSchemaTextToGrammar(text, options);
  absl::StatusOr<std::string> second = JsonSchemaTextToGrammar(text, options);
  FUZZ_CHECK(first.ok() == second.ok(), "not deterministic");
  if (!first.ok()) {
    FUZZ_CHECK(first.status().code() == absl::StatusCode::kInvalidArgument, "%s",
               first.status().ToString().c_str());
    FUZZ_CHECK(absl::StartsWith(first.status().message(), "json_schema: "), "%s",
               first.status().ToString().c_str());
    FUZZ_CHECK(first.status().message() == second.status().message(), "two messages");
    return;
  }
  FUZZ_CHECK(*first == *second, "two grammars");
  FUZZ_CHECK(absl::StartsWith(*first, "root ::= "), "%s", first->c_str());
  FUZZ_CHECK(first->back() == '\n', "no final newline");
  FUZZ_CHECK(first->size() <= options.max_grammar_bytes, "%zu bytes", first->size());
}

}  // namespace
}  // namespace streamgen

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > (64 << 10)) return 0;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  streamgen::Check(text, {});
  streamgen::JsonSchemaOptions small;
  small.max_whitespace = 0;
  small.max_depth = 8;
  small.max_rules = 200;
  small.max_repetition = 50;
  small.max_grammar_bytes = 1 << 16;
  streamgen::Check(text, small);
  return 0;
}
