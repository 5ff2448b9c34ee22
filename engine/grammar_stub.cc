// A stand-in for the grammar engine (engine/grammar/, branch `grammar`) until
// it is merged: the kind names, and a CompileConstraint that refuses every
// constraint by name. Deleted by the merge that brings the real one.
#include "engine/grammar/constraint.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace streamgen {

const char* ConstraintKindName(ConstraintSpec::Kind kind) {
  switch (kind) {
    case ConstraintSpec::Kind::kNone:
      return "none";
    case ConstraintSpec::Kind::kJsonObject:
      return "json_object";
    case ConstraintSpec::Kind::kJsonSchema:
      return "json_schema";
    case ConstraintSpec::Kind::kRegex:
      return "regex";
    case ConstraintSpec::Kind::kGrammar:
      return "grammar";
    case ConstraintSpec::Kind::kChoice:
      return "choice";
  }
  return "none";
}

absl::StatusOr<std::shared_ptr<const CompiledConstraint>> CompileConstraint(
    const ConstraintSpec& spec, std::shared_ptr<const TokenVocabulary> vocab) {
  return absl::UnimplementedError(absl::StrCat(
      ConstraintKindName(spec.kind), ": constrained decoding is not built into this server"));
}

}  // namespace streamgen
