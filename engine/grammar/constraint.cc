// CompileConstraint: a ConstraintSpec to a grammar, compiled for a vocabulary.
#include "engine/grammar/constraint.h"

#include <list>
#include <mutex>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/grammar/json_schema.h"
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

// Compiled constraints of recent specs, per vocabulary: requests repeat their
// constraints (json_object, a service's schema, its tools), and a compiled
// constraint carries its mask caches, which then stay warm across requests.
class CompiledCache {
 public:
  static constexpr size_t kCapacity = 64;

  static std::string Key(const ConstraintSpec& spec, const TokenVocabulary* vocab) {
    std::string key = absl::StrCat(reinterpret_cast<uintptr_t>(vocab), ":",
                                   static_cast<int>(spec.kind), ":", spec.text.size(), ":", spec.text);
    for (const std::string& c : spec.choices) absl::StrAppend(&key, ":", c.size(), ":", c);
    return key;
  }

  std::shared_ptr<const CompiledConstraint> Find(const std::string& key,
                                                 const std::shared_ptr<const TokenVocabulary>& vocab) {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = entries_.begin(); it != entries_.end(); ++it) {
      if (it->key == key && it->vocab.lock() == vocab) {
        entries_.splice(entries_.begin(), entries_, it);  // most recent first
        return it->compiled;
      }
    }
    return nullptr;
  }

  void Insert(std::string key, const std::shared_ptr<const TokenVocabulary>& vocab,
              std::shared_ptr<const CompiledConstraint> compiled) {
    std::lock_guard<std::mutex> lock(mu_);
    entries_.remove_if([](const Entry& e) { return e.vocab.expired(); });
    entries_.push_front(Entry{std::move(key), vocab, std::move(compiled)});
    if (entries_.size() > kCapacity) entries_.pop_back();
  }

 private:
  struct Entry {
    std::string key;
    std::weak_ptr<const TokenVocabulary> vocab;  // the key's address is this one's
    std::shared_ptr<const CompiledConstraint> compiled;
  };
  std::mutex mu_;
  std::list<Entry> entries_;
};

CompiledCache& Cache() {
  static CompiledCache* cache = new CompiledCache();
  return *cache;
}

absl::StatusOr<std::shared_ptr<const CompiledConstraint>> CompileUncached(
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
    case ConstraintSpec::Kind::kJsonSchema: {
      absl::StatusOr<std::string> text = JsonSchemaTextToGrammar(spec.text);
      if (!text.ok()) return text.status();
      g = grammar::ParseGrammar(*text);
      break;
    }
  }
  if (!g.ok()) return g.status();
  absl::StatusOr<std::shared_ptr<const grammar::CompiledGrammar>> cg = grammar::CompileGrammar(*g);
  if (!cg.ok()) {
    return spec.kind == ConstraintSpec::Kind::kRegex ? AsRegexError(cg.status()) : cg.status();
  }
  return std::shared_ptr<const CompiledConstraint>(
      std::make_shared<grammar::GrammarConstraint>(std::move(*cg), std::move(vocab)));
}

}  // namespace
}  // namespace streamgen

namespace streamgen {

absl::StatusOr<std::shared_ptr<const CompiledConstraint>> CompileConstraint(
    const ConstraintSpec& spec, std::shared_ptr<const TokenVocabulary> vocab) {
  if (vocab == nullptr) return absl::InvalidArgumentError("constraint: no vocabulary");
  std::string key = CompiledCache::Key(spec, vocab.get());
  if (std::shared_ptr<const CompiledConstraint> hit = Cache().Find(key, vocab)) return hit;
  absl::StatusOr<std::shared_ptr<const CompiledConstraint>> compiled = CompileUncached(spec, vocab);
  if (compiled.ok()) Cache().Insert(std::move(key), vocab, *compiled);
  return compiled;
}

}  // namespace streamgen
