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
    if (out->size() > 2 * kMaxStacks) Normalize(out);
  }
  Normalize(out);
  if (out->size() > kMaxStacks) out->resize(kMaxStacks);
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

void StackSet::Add(const uint32_t* s, uint32_t n) {
  if (size() >= kMaxStacks) return;
  // Sets are small (a few stacks): a linear check for duplicates.
  for (size_t i = 0; i < size(); ++i) {
    if (length(i) == n && std::equal(s, s + n, stack(i))) return;
  }
  data_.insert(data_.end(), s, s + n);
  begin_.push_back(static_cast<uint32_t>(data_.size()));
}

void StackSet::Assign(const std::vector<Stack>& stacks) {
  clear();
  for (const Stack& s : stacks) Add(s.data(), static_cast<uint32_t>(s.size()));
}

std::vector<Stack> StackSet::ToVector() const {
  std::vector<Stack> out;
  for (size_t i = 0; i < size(); ++i) out.emplace_back(stack(i), stack(i) + length(i));
  Normalize(&out);
  return out;
}

bool StackSet::RemoveEmpty() {
  bool any = false;
  size_t w = 0;
  std::vector<uint32_t> begin = {0};
  for (size_t i = 0; i < size(); ++i) {
    const uint32_t n = length(i);
    if (n == 0) {
      any = true;
      continue;
    }
    const uint32_t from = begin_[i];
    for (uint32_t k = 0; k < n; ++k) data_[w + k] = data_[from + k];
    w += n;
    begin.push_back(static_cast<uint32_t>(w));
  }
  if (any) {
    data_.resize(w);
    begin_.swap(begin);
  }
  return any;
}

std::string StackSet::Key() const {
  std::string key;
  key.append(reinterpret_cast<const char*>(begin_.data()), begin_.size() * sizeof(uint32_t));
  key.append(reinterpret_cast<const char*>(data_.data()), data_.size() * sizeof(uint32_t));
  return key;
}

int SetAutomaton::Intern(const StackSet& s) {
  auto [it, inserted] = ids_.try_emplace(s.Key(), static_cast<int>(sets_.size()));
  if (inserted) {
    sets_.push_back(s);
    trans_.emplace_back(256, -1);
  }
  return it->second;
}

SetAutomaton::Step SetAutomaton::Advance(int id, uint8_t byte) {
  int32_t t = trans_[id][byte];
  if (t < 0) {
    AdvanceStackSet(g_, sets_[id], byte, &out_, &scratch_);
    const bool popped = remove_empty_ && out_.RemoveEmpty();
    const int next = out_.empty() ? -1 : Intern(out_);
    t = ((next + 1) << 1) | (popped ? 1 : 0);
    trans_[id][byte] = t;  // Intern may have grown trans_: index again
  }
  return Step{(t >> 1) - 1, (t & 1) != 0};
}

namespace {

// ExpandStack into a StackSet, on `st` in place (restored on return).
void ExpandInto(const CompiledGrammar& g, Stack& st, StackSet* out) {
  if (st.empty()) {
    out->Add(st.data(), 0);
    return;
  }
  const uint32_t p = st.back();
  const Element& el = g.elements[p];
  if (el.type == Element::kBytes) {
    out->Add(st.data(), static_cast<uint32_t>(st.size()));
    return;
  }
  st.pop_back();
  if (el.type == Element::kEnd) {
    ExpandInto(g, st, out);
  } else {
    const bool ret = g.elements[p + 1].type != Element::kEnd;
    if (ret) st.push_back(p + 1);
    for (uint32_t alt : g.alternatives[el.rule]) {
      st.push_back(alt);
      ExpandInto(g, st, out);
      st.pop_back();
    }
    if (ret) st.pop_back();
  }
  st.push_back(p);
}

}  // namespace

void AdvanceStackSet(const CompiledGrammar& g, const StackSet& in, uint8_t byte, StackSet* out,
                     Stack* scratch) {
  out->clear();
  for (size_t i = 0; i < in.size(); ++i) {
    const uint32_t n = in.length(i);
    if (n == 0) continue;
    const uint32_t* s = in.stack(i);
    const uint32_t top = s[n - 1];
    const Element& el = g.elements[top];
    if (byte < el.lo || byte > el.hi) continue;
    if (g.elements[top + 1].type == Element::kBytes) {
      // The common case inside a literal or a UTF-8 sequence: no expansion.
      scratch->assign(s, s + n);
      scratch->back() = top + 1;
      out->Add(scratch->data(), n);
      continue;
    }
    scratch->assign(s, s + n);
    scratch->back() = top + 1;
    ExpandInto(g, *scratch, out);
  }
}

bool BytesChecker::Accepts(const CompiledGrammar& g, const Stack& stack, std::string_view bytes) {
  a_.clear();
  a_.Add(stack.data(), static_cast<uint32_t>(stack.size()));
  for (char c : bytes) {
    AdvanceStackSet(g, a_, static_cast<uint8_t>(c), &b_, &scratch_);
    if (b_.empty()) return false;
    std::swap(a_, b_);
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
