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

namespace streamgen {

void MaskJob::Fill(size_t i) {
  const auto wall0 = std::chrono::steady_clock::now();
  const int64_t cpu0 = ThreadCpuNanos();
  states_[i]->matcher->FillNextTokenBitmask(states_[i]->mask.data());
  cpu_ns_ += ThreadCpuNanos() - cpu0;
  wall_ns_ += std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - wall0)
                  .count();
}

void MaskJob::Work() {
  for (size_t i = next_.fetch_add(1); i < states_.size(); i = next_.fetch_add(1)) {
    Fill(i);
    std::lock_guard<std::mutex> lock(mu_);
    if (++done_ == states_.size()) cv_.notify_all();
  }
}

MaskTiming MaskJob::Finish() {
  MaskTiming timing;
  // What no helper has claimed yet, on this thread; after this loop every
  // later claim is past the end, so no helper touches a state again.
  for (size_t i = next_.fetch_add(1); i < states_.size(); i = next_.fetch_add(1)) {
    Fill(i);
    timing.on_loop++;
    std::lock_guard<std::mutex> lock(mu_);
    ++done_;
  }
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return done_ == states_.size(); });
  }
  timing.masks = static_cast<int64_t>(states_.size());
  timing.wall_ns = wall_ns_.load();
  timing.cpu_ns = cpu_ns_.load();
  return timing;
}

MaskWorker::MaskWorker() : thread_([this] { Run(); }) {}

MaskWorker::~MaskWorker() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

std::shared_ptr<MaskJob> MaskWorker::Start(std::vector<SequenceConstraint*> states) {
  if (states.empty()) return nullptr;
  auto job = std::make_shared<MaskJob>(std::move(states));
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(job);
  }
  cv_.notify_one();
  return job;
}

void MaskWorker::Run() {
  for (;;) {
    std::shared_ptr<MaskJob> job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    job->Work();  // a job its owner has finished already: returns at once
  }
}

}  // namespace streamgen
