// CompileConstraint: a ConstraintSpec to a grammar, compiled for a vocabulary.
#include "engine/grammar/constraint.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/grammar/grammar.h"
#include "engine/grammar/token_matcher.h"

namespace streamgen {

const char* ConstraintKindName(ConstraintSpec::Kind kind) {
  switch (kind) {
    case ConstraintSpec::Kind::kNone: return "none";
    case ConstraintSpec::Kind::kJsonObject: return "json_object";
    case ConstraintSpec::Kind::kJsonSchema: return "json_schema";
    case ConstraintSpec::Kind::kRegex: return "regex";
    case ConstraintSpec::Kind::kGrammar: return "grammar";
    case ConstraintSpec::Kind::kChoice: return "choice";
  }
  return "unknown";
}

namespace {

// Errors found while compiling a regex's grammar name a column of the regex
// (RegexToGrammar puts the pattern on line 1): "regex: column C: ...".
absl::Status AsRegexError(const absl::Status& s) {
  const std::string kPrefix = "grammar: line 1, column ";
  if (absl::StartsWith(s.message(), kPrefix)) {
    return absl::InvalidArgumentError(
        absl::StrCat("regex: column ", s.message().substr(kPrefix.size())));
  }
  if (absl::StartsWith(s.message(), "grammar: ")) {
    return absl::InvalidArgumentError(absl::StrCat("regex: ", s.message().substr(9)));
  }
  return s;
}

}  // namespace

absl::StatusOr<std::shared_ptr<const CompiledConstraint>> CompileConstraint(
    const ConstraintSpec& spec, std::shared_ptr<const TokenVocabulary> vocab) {
  if (vocab == nullptr) return absl::InvalidArgumentError("constraint: no vocabulary");
  if (vocab->special.size() != vocab->bytes.size()) {
    return absl::InvalidArgumentError("constraint: vocabulary bytes and special flags differ in size");
  }
  absl::StatusOr<grammar::Grammar> g;
  switch (spec.kind) {
    case ConstraintSpec::Kind::kNone:
      return absl::InvalidArgumentError("constraint: kind none has nothing to compile");
    case ConstraintSpec::Kind::kJsonObject:
      g = grammar::ParseGrammar(grammar::JsonGrammarText(/*object_root=*/true));
      break;
    case ConstraintSpec::Kind::kGrammar:
      g = grammar::ParseGrammar(spec.text);
      break;
    case ConstraintSpec::Kind::kRegex:
      g = grammar::RegexToGrammar(spec.text);
      break;
    case ConstraintSpec::Kind::kChoice:
      g = grammar::ChoiceGrammar(spec.choices);
      break;
    case ConstraintSpec::Kind::kJsonSchema:
      // engine/grammar/json_schema (issue 22) compiles schemas to a grammar.
      return absl::UnimplementedError("json_schema: not compiled by this build yet");
  }
  if (!g.ok()) return g.status();
  absl::StatusOr<std::shared_ptr<const grammar::CompiledGrammar>> cg = grammar::CompileGrammar(*g);
  if (!cg.ok()) {
    return spec.kind == ConstraintSpec::Kind::kRegex ? AsRegexError(cg.status()) : cg.status();
  }
  return std::shared_ptr<const CompiledConstraint>(
      std::make_shared<grammar::GrammarConstraint>(std::move(*cg), std::move(vocab)));
}

}  // namespace streamgen
