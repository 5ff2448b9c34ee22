#include "engine/grammar/matcher.h"

#include <algorithm>
#include <utility>

namespace streamgen {
namespace grammar {

void ExpandStack(const CompiledGrammar& g, Stack stack, std::vector<Stack>* out) {
  while (!stack.empty()) {
    const uint32_t p = stack.back();
    const Element& el = g.elements[p];
    if (el.type == Element::kBytes) break;
    stack.pop_back();
    if (el.type == Element::kEnd) continue;  // the rule is done: return
    // A reference: return to p + 1 (unless that is the end of the rule: a
    // tail call needs no return address), enter each alternative.
    if (g.elements[p + 1].type != Element::kEnd) stack.push_back(p + 1);
    const std::vector<uint32_t>& alts = g.alternatives[el.rule];
    for (size_t i = 0; i + 1 < alts.size(); ++i) {
      Stack branch = stack;
      branch.push_back(alts[i]);
      ExpandStack(g, std::move(branch), out);
    }
    stack.push_back(alts.back());
  }
  out->push_back(std::move(stack));
}

void Normalize(std::vector<Stack>* stacks) {
  if (stacks->size() < 2) return;
  std::sort(stacks->begin(), stacks->end());
  stacks->erase(std::unique(stacks->begin(), stacks->end()), stacks->end());
}

std::vector<Stack> InitialStacks(const CompiledGrammar& g) {
  std::vector<Stack> out;
  for (uint32_t alt : g.alternatives[g.root]) ExpandStack(g, Stack{alt}, &out);
  Normalize(&out);
  return out;
}

void AdvanceStacks(const CompiledGrammar& g, const std::vector<Stack>& in, uint8_t byte,
                   std::vector<Stack>* out) {
  out->clear();
  for (const Stack& s : in) {
    if (s.empty()) continue;
    const Element& el = g.elements[s.back()];
    if (byte < el.lo || byte > el.hi) continue;
    Stack next = s;
    ++next.back();
    ExpandStack(g, std::move(next), out);
  }
  Normalize(out);
}

bool AcceptsBytes(const CompiledGrammar& g, const std::vector<Stack>& stacks,
                  std::string_view bytes) {
  std::vector<Stack> cur = stacks, next;
  for (char c : bytes) {
    AdvanceStacks(g, cur, static_cast<uint8_t>(c), &next);
    if (next.empty()) return false;
    cur.swap(next);
  }
  return true;
}

GrammarMatcher::GrammarMatcher(std::shared_ptr<const CompiledGrammar> g)
    : g_(std::move(g)), stacks_(InitialStacks(*g_)) {}

bool GrammarMatcher::Accept(std::string_view bytes) {
  std::vector<Stack> cur = stacks_, next;
  for (char c : bytes) {
    AdvanceStacks(*g_, cur, static_cast<uint8_t>(c), &next);
    if (next.empty()) return false;
    cur.swap(next);
  }
  history_.push_back(std::move(stacks_));
  stacks_ = std::move(cur);
  return true;
}

void GrammarMatcher::Rollback(int n) {
  for (; n > 0 && !history_.empty(); --n) {
    stacks_ = std::move(history_.back());
    history_.pop_back();
  }
}

bool GrammarMatcher::CanTerminate() const {
  for (const Stack& s : stacks_) {
    if (s.empty()) return true;
  }
  return false;
}

bool GrammarMatcher::CanContinue() const {
  for (const Stack& s : stacks_) {
    if (!s.empty()) return true;
  }
  return false;
}

bool GrammarMatcher::FullMatch(std::shared_ptr<const CompiledGrammar> g, std::string_view text) {
  GrammarMatcher m(std::move(g));
  return m.Accept(text) && m.CanTerminate();
}

}  // namespace grammar
}  // namespace streamgen
