// The engine's side of constrained decoding (the grammar engine itself is
// engine/grammar/): compiled constraints cached across requests, and the
// matcher and token mask each constrained sequence carries. No torch.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/grammar/constraint.h"

namespace streamgen {

// How a spec becomes a compiled constraint: CompileConstraint, or a test's own.
using ConstraintCompiler = std::function<absl::StatusOr<std::shared_ptr<const CompiledConstraint>>(
    const ConstraintSpec&, std::shared_ptr<const TokenVocabulary>)>;

// The compiled constraints of recent requests, least recently used evicted
// first: services send the same schema again and again, and compiling one
// can take milliseconds. Keyed by (kind, text, choices). Failures are not
// cached. Thread-safe (Submit runs on the callers' threads); compiling runs
// outside the lock, so two threads may compile the same spec once each.
class ConstraintCache {
 public:
  ConstraintCache(size_t capacity, std::shared_ptr<const TokenVocabulary> vocab,
                  ConstraintCompiler compiler);

  absl::StatusOr<std::shared_ptr<const CompiledConstraint>> Get(const ConstraintSpec& spec);

  // The test hook behind Engine::SetConstraintCompilerForTesting: compiles
  // with `compiler` from now on and forgets what was cached.
  void SetCompiler(ConstraintCompiler compiler);

  const std::shared_ptr<const TokenVocabulary>& vocabulary() const { return vocab_; }
  int64_t hits() const;
  int64_t compiles() const;

 private:
  using Entry = std::pair<std::string, std::shared_ptr<const CompiledConstraint>>;
  const size_t capacity_;
  const std::shared_ptr<const TokenVocabulary> vocab_;
  mutable std::mutex mu_;
  ConstraintCompiler compiler_;  // guarded by mu_
  std::list<Entry> entries_;     // guarded by mu_; front: most recently used
  std::unordered_map<std::string, std::list<Entry>::iterator> by_key_;  // guarded by mu_
  int64_t hits_ = 0;      // guarded by mu_
  int64_t compiles_ = 0;  // guarded by mu_
};

// The key ConstraintCache uses: kind, text and choices, each length-prefixed
// (so that no two specs share one).
std::string ConstraintKey(const ConstraintSpec& spec);

// A constrained sequence's state. Owned by its sequence on the loop thread;
// its mask may be filled on another thread while the loop runs the model
// (FillMasks), never while the loop reads or advances it.
struct SequenceConstraint {
  SequenceConstraint(std::shared_ptr<const CompiledConstraint> compiled, int vocab_size)
      : compiled(std::move(compiled)),
        matcher(this->compiled->NewMatcher()),
        mask((vocab_size + 31) / 32, 0) {}
  std::shared_ptr<const CompiledConstraint> compiled;
  std::unique_ptr<TokenMatcher> matcher;
  std::vector<uint32_t> mask;  // the allowed next tokens (SampleInput::allowed)
};

// What one FillMasks call cost: the engine adds these up (EngineStats) so
// that a benchmark can tell how much of the mask work the forward pass hides.
struct MaskTiming {
  int64_t masks = 0;    // masks filled
  int64_t wall_ns = 0;  // the call, start to end
  int64_t cpu_ns = 0;   // the calling thread's CPU time over the call (0 where unknown)
  int64_t on_loop = 0;  // MaskJob::Finish: masks the owner filled itself (no helper got to them)
};

// Fills each state's mask for its next token (TokenMatcher::FillNextTokenBitmask).
// Thread-safe for distinct states.
MaskTiming FillMasks(const std::vector<SequenceConstraint*>& states);

// One step's masks, filled by whichever thread gets to each first: a helper
// (MaskWorker) while the forward pass runs, and the loop itself after it.
// Why both: on a loaded machine (or with as many OpenMP threads as cores) a
// helper thread can wait for a core for whole scheduler slices; the loop
// then fills what the helper has not started instead of waiting (measured:
// 10 ms waits for 25 us of masks; bench/README.md, "Constrained decoding").
class MaskJob {
 public:
  explicit MaskJob(std::vector<SequenceConstraint*> states) : states_(std::move(states)) {}
  // Claims and fills masks until none is left. Thread-safe; a call after
  // Finish() returns at once and touches no state.
  void Work();
  // The owner, once: fills every mask no one has claimed, waits for the ones
  // claimed by others, and returns what they all cost (wall_ns and cpu_ns:
  // the fills' own time, whoever ran them).
  MaskTiming Finish();

 private:
  // Fills states_[i], adding its cost to the totals.
  void Fill(size_t i);

  const std::vector<SequenceConstraint*> states_;
  std::atomic<size_t> next_{0};  // the next state to claim
  std::atomic<int64_t> wall_ns_{0}, cpu_ns_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  size_t done_ = 0;  // guarded by mu_
};

// A thread that runs MaskJobs (one at a time, in order), kept for the
// engine's life: starting a thread per step costs about as much as a batch-1
// step's masks. Thread-safe.
class MaskWorker {
 public:
  MaskWorker();
  ~MaskWorker();  // stops and joins; jobs not yet run are left to their owners' Finish()
  MaskWorker(const MaskWorker&) = delete;
  MaskWorker& operator=(const MaskWorker&) = delete;

  // Queues a job for `states` and returns it: call Finish() on it before
  // reading or advancing any of the states. Empty states: nullptr.
  std::shared_ptr<MaskJob> Start(std::vector<SequenceConstraint*> states);

 private:
  void Run();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<MaskJob>> queue_;  // guarded by mu_
  bool stop_ = false;                           // guarded by mu_
  std::thread thread_;                          // last: starts after the fields above
};

}  // namespace streamgen
