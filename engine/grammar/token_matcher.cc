#include "engine/grammar/token_matcher.h"

#include <algorithm>
#include <cstring>
#include <string_view>
#include <utility>

namespace streamgen {
namespace grammar {
namespace {

// Bound on the whole-state cache of one compiled constraint.
constexpr size_t kMaxStateCacheBytes = 64 << 20;
constexpr uint32_t kWholeStackMark = 0xFFFFFFFFu;

inline void SetBit(uint32_t* mask, int id) { mask[id >> 5] |= 1u << (id & 31); }
inline bool TestBit(const uint32_t* mask, int id) { return (mask[id >> 5] >> (id & 31)) & 1u; }

class GrammarTokenMatcher : public TokenMatcher {
 public:
  explicit GrammarTokenMatcher(std::shared_ptr<const GrammarConstraint> c)
      : c_(std::move(c)), stacks_(InitialStacks(c_->grammar())) {}

  void FillNextTokenBitmask(uint32_t* mask) override {
    const TokenVocabulary& vocab = c_->vocab();
    if (terminated_) {
      std::memset(mask, 0, sizeof(uint32_t) * c_->mask_words());
    } else {
      c_->FillMask(stacks_, FirstTokenStrips(), mask);
    }
    if (terminated_ || CanTerminate()) {
      for (int id : vocab.eos_ids) {
        if (id >= 0 && id < vocab.size()) SetBit(mask, id);
      }
    }
  }

  bool AcceptToken(int id) override {
    const TokenVocabulary& vocab = c_->vocab();
    if (terminated_ || id < 0 || id >= vocab.size()) return false;
    if (std::find(vocab.eos_ids.begin(), vocab.eos_ids.end(), id) != vocab.eos_ids.end()) {
      if (!CanTerminate()) return false;
      history_.push_back({stacks_, terminated_});
      terminated_ = true;
      return true;
    }
    if (id < static_cast<int>(vocab.special.size()) && vocab.special[id]) return false;
    std::string_view bytes = vocab.bytes[id];
    if (FirstTokenStrips() && !bytes.empty() && bytes[0] == ' ') bytes.remove_prefix(1);
    if (bytes.empty()) return false;
    // StackSets, as the mask's walks use (the same stacks kept when a
    // state reaches kMaxStacks).
    StackSet cur, next;
    Stack scratch;
    cur.Assign(stacks_);
    for (char b : bytes) {
      AdvanceStackSet(c_->grammar(), cur, static_cast<uint8_t>(b), &next, &scratch);
      if (next.empty()) return false;
      std::swap(cur, next);
    }
    history_.push_back({std::move(stacks_), terminated_});
    stacks_ = cur.ToVector();
    return true;
  }

  void Rollback(int n) override {
    for (; n > 0 && !history_.empty(); --n) {
      stacks_ = std::move(history_.back().stacks);
      terminated_ = history_.back().terminated;
      history_.pop_back();
    }
  }

  bool CanTerminate() const override {
    if (terminated_) return true;
    for (const Stack& s : stacks_) {
      if (s.empty()) return true;
    }
    return false;
  }

  bool IsTerminated() const override {
    if (terminated_) return true;
    bool complete = false;
    for (const Stack& s : stacks_) {
      if (!s.empty()) return false;
      complete = true;
    }
    return complete;
  }

  std::unique_ptr<TokenMatcher> Clone() const override {
    return std::make_unique<GrammarTokenMatcher>(*this);
  }

 private:
  struct Snapshot {
    std::vector<Stack> stacks;
    bool terminated;
  };
  bool FirstTokenStrips() const { return history_.empty() && c_->vocab().strips_first_space; }

  std::shared_ptr<const GrammarConstraint> c_;
  std::vector<Stack> stacks_;
  bool terminated_ = false;
  std::vector<Snapshot> history_;
};

}  // namespace

GrammarConstraint::GrammarConstraint(std::shared_ptr<const CompiledGrammar> grammar,
                                     std::shared_ptr<const TokenVocabulary> vocab)
    : grammar_(std::move(grammar)),
      vocab_(std::move(vocab)),
      trie_(TokenTrie::ForVocabulary(vocab_)) {}

std::unique_ptr<TokenMatcher> GrammarConstraint::NewMatcher() const {
  return std::make_unique<GrammarTokenMatcher>(shared_from_this());
}

GrammarConstraint::Stats GrammarConstraint::stats() const {
  absl::MutexLock lock(&mu_);
  Stats s = stats_;
  s.context_entries = static_cast<int64_t>(context_cache_.size());
  s.state_entries = static_cast<int64_t>(state_cache_.size());
  return s;
}

void GrammarConstraint::FillMask(const std::vector<Stack>& stacks, bool first_token,
                                 uint32_t* mask) const {
  const int words = mask_words();
  if (first_token) {
    // Once per request, and the only place the stripped bytes matter.
    WalkFull(stacks, /*strip_first_space=*/true, mask);
    return;
  }
  std::vector<uint32_t> key;
  for (const Stack& s : stacks) {
    key.push_back(static_cast<uint32_t>(s.size()));
    key.insert(key.end(), s.begin(), s.end());
  }
  {
    absl::MutexLock lock(&mu_);
    auto it = state_cache_.find(key);
    if (it != state_cache_.end()) {
      ++stats_.state_hits;
      std::memcpy(mask, it->second->data(), sizeof(uint32_t) * words);
      return;
    }
    ++stats_.state_misses;
  }
  std::memset(mask, 0, sizeof(uint32_t) * words);
  for (const Stack& s : stacks) {
    if (s.empty()) continue;
    std::shared_ptr<const ContextEntry> e = GetContextEntry(s);
    const uint32_t* acc = e->accepted.data();
    for (int w = 0; w < words; ++w) mask[w] |= acc[w];
    if (e->uncertain.empty()) continue;
    BytesChecker checker;
    for (int32_t id : e->uncertain) {
      if (!TestBit(mask, id) && checker.Accepts(*grammar_, s, vocab_->bytes[id])) SetBit(mask, id);
    }
  }
  auto copy = std::make_shared<const std::vector<uint32_t>>(mask, mask + words);
  absl::MutexLock lock(&mu_);
  const size_t bytes = sizeof(uint32_t) * (words + key.size()) + 64;
  if (state_cache_bytes_ + bytes <= kMaxStateCacheBytes &&
      state_cache_.emplace(std::move(key), std::move(copy)).second) {
    state_cache_bytes_ += bytes;
  }
}

std::shared_ptr<const GrammarConstraint::ContextEntry> GrammarConstraint::GetContextEntry(
    const Stack& stack) const {
  const bool whole = stack.size() <= static_cast<size_t>(kContextFrames);
  Stack top(stack.end() - std::min<size_t>(stack.size(), kContextFrames), stack.end());
  std::vector<uint32_t> key = top;
  if (whole) key.push_back(kWholeStackMark);
  {
    absl::MutexLock lock(&mu_);
    auto it = context_cache_.find(key);
    if (it != context_cache_.end()) return it->second;
  }
  // Computed outside the lock: another thread may compute the same entry;
  // the first one stored wins.
  std::shared_ptr<const ContextEntry> entry = ComputeContextEntry(top, whole);
  absl::MutexLock lock(&mu_);
  return context_cache_.emplace(std::move(key), std::move(entry)).first->second;
}

// One walk of the trie with the top frames `top`. Per node: the live stacks
// after its bytes (still inside the top frames), whether some stack returned
// below the top frames on exactly its last byte ("popped here": the token
// ending here is accepted whatever lies below), and whether one did on an
// earlier byte ("popped before": the rest of the token needs the frames
// below). With `whole`, the top is the whole stack: returning below it is
// the end of the grammar, after which nothing more may come.
std::shared_ptr<const GrammarConstraint::ContextEntry> GrammarConstraint::ComputeContextEntry(
    const Stack& top, bool whole) const {
  auto entry = std::make_shared<ContextEntry>();
  entry->accepted.assign(mask_words(), 0);
  const TokenTrie& t = *trie_;
  SetAutomaton automaton(*grammar_, /*remove_empty=*/true);
  std::vector<int> level(t.max_depth + 1);
  std::vector<uint8_t> popped_before(t.max_depth + 1, 0);
  {
    StackSet start;
    start.Add(top.data(), static_cast<uint32_t>(top.size()));
    level[0] = automaton.Intern(start);
  }
  const auto add_ids = [&](int begin_node, int end_node, bool accepted) {
    for (uint32_t k = t.first_id[begin_node]; k < t.first_id[end_node]; ++k) {
      if (accepted) {
        SetBit(entry->accepted.data(), t.ids[k]);
      } else {
        entry->uncertain.push_back(t.ids[k]);
      }
    }
  };
  for (int i = 0; i < t.size();) {
    const int d = t.depth[i];
    const SetAutomaton::Step step = automaton.Advance(level[d - 1], t.byte[i]);
    const bool popped_here = step.popped;
    const bool before = popped_before[d - 1] != 0;
    const bool live = step.next >= 0;
    if (live || popped_here) {
      add_ids(i, i + 1, /*accepted=*/true);
    } else if (before) {
      add_ids(i, i + 1, /*accepted=*/false);
    }
    const bool pending = !whole && (before || popped_here);
    if (!live) {
      // No stack inside the top frames: the subtree is decided below them
      // (uncertain) or rejected.
      if (pending) add_ids(i + 1, t.end[i], /*accepted=*/false);
      i = t.end[i];
      continue;
    }
    level[d] = step.next;
    popped_before[d] = pending ? 1 : 0;
    ++i;
  }
  return entry;
}

void GrammarConstraint::WalkFull(const std::vector<Stack>& stacks, bool strip_first_space,
                                 uint32_t* mask) const {
  std::memset(mask, 0, sizeof(uint32_t) * mask_words());
  const TokenTrie& t = *trie_;
  SetAutomaton automaton(*grammar_, /*remove_empty=*/false);
  std::vector<int> level(t.max_depth + 1);
  {
    StackSet start;
    start.Assign(stacks);
    level[0] = automaton.Intern(start);
  }
  for (int i = 0; i < t.size();) {
    const int d = t.depth[i];
    if (strip_first_space && d == 1 && t.byte[i] == ' ') {
      // The tokenizer drops this space: the token's text starts after it,
      // and the token " " alone adds nothing (never allowed).
      level[1] = level[0];
    } else {
      const SetAutomaton::Step step = automaton.Advance(level[d - 1], t.byte[i]);
      if (step.next < 0) {
        i = t.end[i];
        continue;
      }
      level[d] = step.next;
      for (uint32_t k = t.first_id[i]; k < t.first_id[i + 1]; ++k) SetBit(mask, t.ids[k]);
    }
    ++i;
  }
}

}  // namespace grammar
}  // namespace streamgen
