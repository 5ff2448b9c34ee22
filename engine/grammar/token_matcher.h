// A CompiledGrammar for one vocabulary: token masks from walking the
// vocabulary trie with the byte-level matcher, with two caches.
//
//  - Context-independent masks (xgrammar's idea, on this matcher's stacks):
//    for a stack, only its top kContextFrames frames decide most tokens. Per
//    distinct top (the key), one trie walk with just those frames sorts every
//    token into accepted (whatever lies below), rejected (likewise), or
//    uncertain: the walk returned below the top frames with bytes of the
//    token left, so the rest of the stack decides. The mask of a stack is
//    then its key's accepted bits plus the uncertain tokens that the full
//    stack accepts (checked one by one; in JSON these are the few tokens that
//    close a string or a number and go on). Entries are computed the first
//    time a key is seen and shared by every matcher of the grammar.
//  - Whole-state masks: the mask of a state (its set of stacks) seen before,
//    bounded in memory.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "engine/grammar/constraint.h"
#include "engine/grammar/grammar.h"
#include "engine/grammar/matcher.h"
#include "engine/grammar/token_trie.h"

namespace streamgen {
namespace grammar {

class GrammarConstraint : public CompiledConstraint,
                          public std::enable_shared_from_this<GrammarConstraint> {
 public:
  // Frames of a stack that key the context-independent cache.
  static constexpr int kContextFrames = 3;

  GrammarConstraint(std::shared_ptr<const CompiledGrammar> grammar,
                    std::shared_ptr<const TokenVocabulary> vocab);

  std::unique_ptr<TokenMatcher> NewMatcher() const override;

  const CompiledGrammar& grammar() const { return *grammar_; }
  const TokenVocabulary& vocab() const { return *vocab_; }
  const TokenTrie& trie() const { return *trie_; }
  int mask_words() const { return (vocab_->size() + 31) / 32; }

  // The mask of `stacks` (EOS and specials not set), into mask (mask_words()).
  // first_token: the tokenizer strips the leading space of this token.
  void FillMask(const std::vector<Stack>& stacks, bool first_token, uint32_t* mask) const;

  // Computes the context-independent entries of every stack reachable in
  // the first `steps` bytes... (not needed): exposed for the bench, which
  // reports cache statistics.
  struct Stats {
    int64_t context_entries = 0;
    int64_t state_entries = 0;
    int64_t state_hits = 0;
    int64_t state_misses = 0;
  };
  Stats stats() const;

 private:
  struct ContextEntry {
    std::vector<uint32_t> accepted;  // mask words
    std::vector<int32_t> uncertain;  // token ids
  };
  std::shared_ptr<const ContextEntry> GetContextEntry(const Stack& stack) const;
  std::shared_ptr<const ContextEntry> ComputeContextEntry(const Stack& top, bool whole) const;
  // A walk of the whole trie with full stacks (no cache): the first token of
  // a space-stripping tokenizer.
  void WalkFull(const std::vector<Stack>& stacks, bool strip_first_space, uint32_t* mask) const;

  std::shared_ptr<const CompiledGrammar> grammar_;
  std::shared_ptr<const TokenVocabulary> vocab_;
  std::shared_ptr<const TokenTrie> trie_;

  mutable absl::Mutex mu_;
  mutable absl::flat_hash_map<std::vector<uint32_t>, std::shared_ptr<const ContextEntry>>
      context_cache_ ABSL_GUARDED_BY(mu_);
  mutable absl::flat_hash_map<std::vector<uint32_t>, std::shared_ptr<const std::vector<uint32_t>>>
      state_cache_ ABSL_GUARDED_BY(mu_);
  mutable size_t state_cache_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  mutable Stats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace grammar
}  // namespace streamgen
