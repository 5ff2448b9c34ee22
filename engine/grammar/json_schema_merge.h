// Internal to engine/grammar/json_schema.cc: the messages it shares with its
// helpers, local $ref resolution, and the merging of allOf (and of the
// keywords beside anyOf / oneOf) into single schemas.
#pragma once

#include <cstdint>
#include <set>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/grammar/json_schema.h"
#include "nlohmann/json.hpp"

namespace streamgen::json_schema_internal {

using Json = nlohmann::ordered_json;

// Keywords that say nothing about which instances are valid: skipped by design.
const std::set<std::string>& Annotations();

// A JSON pointer's escaping of one key (~ as ~0, / as ~1).
std::string EscapePointer(const std::string& key);
// A pointer for messages ("/" for the root).
std::string At(const std::string& ptr);

// INVALID_ARGUMENT "json_schema: <message>".
absl::Status Error(const std::string& message);
// "json_schema: unsupported keyword 'K' at /ptr (why)".
absl::Status Unsupported(const std::string& keyword, const std::string& ptr,
                         const std::string& why = "");
// "json_schema: the schema at /ptr accepts nothing (why)".
absl::Status Nothing(const std::string& ptr, const std::string& why);

// The schema a local $ref ("#", "#/a/b~1c", percent-escapes) points to in
// `root`; other references are refused naming '$ref'.
absl::StatusOr<const Json*> ResolveRef(const Json& root, const std::string& ref,
                                       const std::string& ptr);

// Merges schemas that must all hold into one: allOf, and the keywords beside
// anyOf / oneOf into each branch. `properties` merge (recursively per
// property), `required` unite, `type`s intersect, min* / max* take the
// tighter bound; any other keyword must agree. Not thread-safe (counts work).
class SchemaMerger {
 public:
  SchemaMerger(const Json& root, const JsonSchemaOptions& options)
      : root_(root), options_(options) {}
  // `s` with its allOf merged into the rest.
  absl::StatusOr<Json> MergeAllOf(const Json& s, const std::string& ptr, int depth);
  // The schema that holds where both `a` and `b` hold.
  absl::StatusOr<Json> Merge(const Json& a, const Json& b, const std::string& ptr, int depth);

 private:
  // A schema local to `ptr`: $ref followed (when it has no siblings), allOf merged.
  absl::StatusOr<Json> Flatten(const Json& s, const std::string& ptr, int depth);

  const Json& root_;
  const JsonSchemaOptions& options_;
  int64_t flattened_ = 0;  // Flatten calls so far: bounded, as allOf over $refs can branch
};

}  // namespace streamgen::json_schema_internal
