// Constrained decoding: the interface between the engine's loop and the
// grammar engine (engine/grammar/). No torch, no protobuf.
//
// A request may carry a ConstraintSpec (GenerationRequest::constraint). The
// engine compiles it once per request with CompileConstraint (on the
// submitting thread, not the loop: compiling may take milliseconds) against
// the model's TokenVocabulary; compiled constraints are immutable and may be
// cached and shared by requests. Each sequence then owns a TokenMatcher: per
// step the loop asks it for the bitmask of allowed next tokens, the sampler
// only sees those, and the chosen token is fed back with AcceptToken.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace streamgen {

// What a request asks its output to match.
struct ConstraintSpec {
  enum class Kind {
    kNone = 0,
    kJsonObject,  // any JSON object (OpenAI's response_format json_object)
    kJsonSchema,  // `text`: a JSON Schema document (JSON text)
    kRegex,       // `text`: a regular expression the whole output matches
    kGrammar,     // `text`: a grammar in the EBNF dialect of docs/structured-outputs.md
    kChoice,      // `choices`: the output is exactly one of these strings
  };
  Kind kind = Kind::kNone;
  std::string text;
  std::vector<std::string> choices;
};

// "none", "json_object", "json_schema", "regex", "grammar", "choice".
const char* ConstraintKindName(ConstraintSpec::Kind kind);

// The vocabulary as a grammar sees it. Built once per model by the engine
// (BuildTokenVocabulary in engine/grammar/vocabulary.h).
struct TokenVocabulary {
  // Per id in [0, size): the bytes the token adds to the output text as the
  // engine's detokenizer produces it (byte-level BPE pieces decoded to their
  // bytes, sentencepiece's U+2581 as a space, <0xNN> pieces as one byte).
  std::vector<std::string> bytes;
  // Per id: a special / control token, never allowed by a grammar (its bytes
  // are not text). EOS ids are special too; they are allowed exactly where
  // the grammar can end.
  std::vector<bool> special;
  std::vector<int> eos_ids;
  // sentencepiece drops the leading space of the first piece of the output
  // (the dummy prefix): a first token "▁{" adds "{" there. true for such
  // tokenizers; the matcher then strips one leading space from the first token.
  bool strips_first_space = false;
  int size() const { return static_cast<int>(bytes.size()); }
};

// One sequence's position in a compiled constraint. Not thread-safe: owned
// and used by one sequence on the engine's loop thread.
class TokenMatcher {
 public:
  virtual ~TokenMatcher() = default;
  // Sets bit (id % 32) of mask[id / 32] for every id allowed next and clears
  // every other bit; mask has (vocab size + 31) / 32 words. EOS ids are
  // allowed exactly when CanTerminate(). Never all-clear: a state from which
  // nothing can follow is IsTerminated().
  virtual void FillNextTokenBitmask(uint32_t* mask) = 0;
  // Advances over `id`. false (state unchanged) when id is not allowed here.
  // An EOS id is accepted when CanTerminate() and terminates the matcher.
  virtual bool AcceptToken(int id) = 0;
  // Undoes the last `n` accepted tokens (speculative decoding's rejected
  // drafts; n <= tokens accepted so far).
  virtual void Rollback(int n) = 0;
  // The text so far is a complete match: EOS may come now.
  virtual bool CanTerminate() const = 0;
  // The match is complete and nothing may follow (the engine ends the
  // sequence as if EOS had come).
  virtual bool IsTerminated() const = 0;
  // A copy at the same position (n > 1 choices forking after the prompt).
  virtual std::unique_ptr<TokenMatcher> Clone() const = 0;
};

// A constraint compiled for one vocabulary. Immutable and thread-safe.
class CompiledConstraint {
 public:
  virtual ~CompiledConstraint() = default;
  virtual std::unique_ptr<TokenMatcher> NewMatcher() const = 0;
};

// Compiles `spec` for `vocab`. INVALID_ARGUMENT with a message naming the
// position (grammar, regex: "grammar: line 3, column 7: ...") or the schema
// keyword ("json_schema: unsupported keyword 'patternProperties' at
// /properties/a") for bad or unsupported input.
absl::StatusOr<std::shared_ptr<const CompiledConstraint>> CompileConstraint(
    const ConstraintSpec& spec, std::shared_ptr<const TokenVocabulary> vocab);

}  // namespace streamgen
