// The byte-level recognizer of a CompiledGrammar: a pushdown automaton run
// nondeterministically (llama.cpp's grammar sampler works the same way).
//
// A stack holds element indices: the top is the byte range to match next, the
// ones below are where to return when the rule above ends. The state is the
// set of stacks still alive; an empty stack means the whole grammar has been
// matched. Left recursion is refused by CompileGrammar, so expanding a stack
// to byte-range tops always terminates.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"

#include "engine/grammar/grammar.h"

namespace streamgen {
namespace grammar {

using Stack = std::vector<uint32_t>;

// The most stacks a state holds. A very ambiguous grammar can need
// exponentially many (x ::= "a" x "b" | "a" x "c" | "" after n "a"s: 2^n);
// past this bound further stacks are dropped, so such a grammar may refuse
// some valid continuations (never allow an invalid one), and time and memory
// per byte stay bounded.
inline constexpr size_t kMaxStacks = 1024;

// Expands `stack` (its top may be a rule reference or a rule's end) into
// stacks whose tops are byte ranges, or the empty stack (grammar complete),
// appended to *out.
void ExpandStack(const CompiledGrammar& g, Stack stack, std::vector<Stack>* out);

// The stacks at the start of the grammar (sorted, unique).
std::vector<Stack> InitialStacks(const CompiledGrammar& g);

// The stacks of `in` advanced over `byte`, into *out (cleared first; sorted,
// unique). Empty stacks of `in` (complete) do not continue.
void AdvanceStacks(const CompiledGrammar& g, const std::vector<Stack>& in, uint8_t byte,
                   std::vector<Stack>* out);

// Sorts and removes duplicates.
void Normalize(std::vector<Stack>* stacks);

// Whether `stacks` accept all of `bytes` (some stack survives).
bool AcceptsBytes(const CompiledGrammar& g, const std::vector<Stack>& stacks,
                  std::string_view bytes);

// A set of stacks in one flat buffer, for the hot loops (trie walks, token
// checks): no allocation once its buffers have grown. Adding a stack that is
// already there does nothing.
class StackSet {
 public:
  StackSet() : begin_{0} {}
  void clear() {
    data_.clear();
    begin_.resize(1);
  }
  size_t size() const { return begin_.size() - 1; }
  bool empty() const { return size() == 0; }
  const uint32_t* stack(size_t i) const { return data_.data() + begin_[i]; }
  uint32_t length(size_t i) const { return begin_[i + 1] - begin_[i]; }
  void Add(const uint32_t* s, uint32_t n);
  void Assign(const std::vector<Stack>& stacks);
  std::vector<Stack> ToVector() const;
  // Removes the empty stacks; true when there were any.
  bool RemoveEmpty();
  // The set's content as bytes (a hash key; order-sensitive).
  std::string Key() const;

 private:
  std::vector<uint32_t> data_;
  std::vector<uint32_t> begin_;
};

// AdvanceStacks on StackSets; `scratch` is reused between calls.
void AdvanceStackSet(const CompiledGrammar& g, const StackSet& in, uint8_t byte, StackSet* out,
                     Stack* scratch);

// AcceptsBytes for one stack, with reusable buffers.
class BytesChecker {
 public:
  bool Accepts(const CompiledGrammar& g, const Stack& stack, std::string_view bytes);

 private:
  StackSet a_, b_;
  Stack scratch_;
};

// The distinct stack sets met in one trie walk, numbered, with their
// transitions memoized: within a walk the same set recurs at many nodes
// (inside a JSON string every ASCII character leads to the same set), so
// each (set, byte) is advanced once and the walk is mostly table lookups.
class SetAutomaton {
 public:
  // remove_empty: complete stacks are dropped from each result and reported
  // as `popped` (the context-independent walk); otherwise kept.
  SetAutomaton(const CompiledGrammar& g, bool remove_empty) : g_(g), remove_empty_(remove_empty) {}
  int Intern(const StackSet& s);
  struct Step {
    int next;     // -1: no stack left
    bool popped;  // a stack completed on this byte (remove_empty only)
  };
  Step Advance(int id, uint8_t byte);
  const StackSet& set(int id) const { return sets_[id]; }

 private:
  const CompiledGrammar& g_;
  bool remove_empty_;
  absl::flat_hash_map<std::string, int> ids_;
  std::vector<StackSet> sets_;
  std::vector<std::vector<int32_t>> trans_;  // per set, per byte: ((next + 1) << 1 | popped), or -1
  StackSet out_;
  Stack scratch_;
};

// A byte-level matcher with history. Not thread-safe.
class GrammarMatcher {
 public:
  explicit GrammarMatcher(std::shared_ptr<const CompiledGrammar> g);

  // Advances over all of `bytes`: false (state unchanged) when some prefix
  // is rejected. One history entry per successful call.
  bool Accept(std::string_view bytes);
  // Undoes the last n successful Accept calls (n <= history).
  void Rollback(int n);
  int history_size() const { return static_cast<int>(history_.size()); }

  // The input so far is a complete match.
  bool CanTerminate() const;
  // Some continuation is possible.
  bool CanContinue() const;

  const std::vector<Stack>& stacks() const { return stacks_; }
  const CompiledGrammar& grammar() const { return *g_; }

  // Whether `g` matches all of `text`.
  static bool FullMatch(std::shared_ptr<const CompiledGrammar> g, std::string_view text);

 private:
  std::shared_ptr<const CompiledGrammar> g_;
  std::vector<Stack> stacks_;
  std::vector<std::vector<Stack>> history_;  // the states before each Accept
};

}  // namespace grammar
}  // namespace streamgen
