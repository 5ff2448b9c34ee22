#include "engine/constraint_state.h"

#include <time.h>

#include <chrono>

#include "absl/strings/str_cat.h"

namespace streamgen {

std::string ConstraintKey(const ConstraintSpec& spec) {
  std::string key = absl::StrCat(static_cast<int>(spec.kind), ":", spec.text.size(), ":", spec.text);
  for (const std::string& choice : spec.choices) absl::StrAppend(&key, ":", choice.size(), ":", choice);
  return key;
}

ConstraintCache::ConstraintCache(size_t capacity, std::shared_ptr<const TokenVocabulary> vocab,
                                 ConstraintCompiler compiler)
    : capacity_(capacity < 1 ? 1 : capacity), vocab_(std::move(vocab)), compiler_(std::move(compiler)) {}

absl::StatusOr<std::shared_ptr<const CompiledConstraint>> ConstraintCache::Get(
    const ConstraintSpec& spec) {
  const std::string key = ConstraintKey(spec);
  ConstraintCompiler compiler;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = by_key_.find(key);
    if (it != by_key_.end()) {
      entries_.splice(entries_.begin(), entries_, it->second);
      hits_++;
      return it->second->second;
    }
    compiler = compiler_;
  }
  absl::StatusOr<std::shared_ptr<const CompiledConstraint>> compiled = compiler(spec, vocab_);
  if (!compiled.ok()) return compiled.status();
  if (*compiled == nullptr) {
    return absl::InternalError(
        absl::StrCat(ConstraintKindName(spec.kind), ": the compiler returned nothing"));
  }
  std::lock_guard<std::mutex> lock(mu_);
  compiles_++;
  if (by_key_.count(key) == 0) {
    entries_.emplace_front(key, *compiled);
    by_key_[key] = entries_.begin();
    if (entries_.size() > capacity_) {
      by_key_.erase(entries_.back().first);
      entries_.pop_back();
    }
  }
  return compiled;
}

void ConstraintCache::SetCompiler(ConstraintCompiler compiler) {
  std::lock_guard<std::mutex> lock(mu_);
  compiler_ = std::move(compiler);
  entries_.clear();
  by_key_.clear();
}

int64_t ConstraintCache::hits() const {
  std::lock_guard<std::mutex> lock(mu_);
  return hits_;
}

int64_t ConstraintCache::compiles() const {
  std::lock_guard<std::mutex> lock(mu_);
  return compiles_;
}

namespace {

// The calling thread's CPU time: the wall time of a mask on a loaded machine
// includes the time the thread waited for a core.
int64_t ThreadCpuNanos() {
  timespec ts{};
  if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) return 0;
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

}  // namespace

MaskTiming FillMasks(const std::vector<SequenceConstraint*>& states) {
  MaskTiming timing;
  if (states.empty()) return timing;
  const auto wall0 = std::chrono::steady_clock::now();
  const int64_t cpu0 = ThreadCpuNanos();
  for (SequenceConstraint* state : states) state->matcher->FillNextTokenBitmask(state->mask.data());
  timing.cpu_ns = ThreadCpuNanos() - cpu0;
  timing.wall_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                       std::chrono::steady_clock::now() - wall0)
                       .count();
  timing.masks = static_cast<int64_t>(states.size());
  return timing;
}

}  // namespace streamgen
