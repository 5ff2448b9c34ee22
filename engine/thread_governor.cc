#include "engine/thread_governor.h"

#include <algorithm>

namespace streamgen {

ThreadGovernor::ThreadGovernor(const ThreadGovernorOptions& options) : options_(options) {
  options_.max_threads = std::max(1, options_.max_threads);
  options_.min_threads = std::clamp(options_.min_threads, 1, options_.max_threads);
  options_.drop_after = std::max(1, options_.drop_after);
  threads_ = options_.max_threads;
}

void ThreadGovernor::StartWindow() {
  window_wall_ms_ = 0;
  window_cpu_ms_ = 0;
}

int ThreadGovernor::OnStep(double wall_ms, double cpu_ms) {
  last_decision_ = Decision::kNone;
  if (options_.max_threads == options_.min_threads) return threads_;
  if (threads_ < options_.max_threads && !probing_) since_probe_ms_ += wall_ms;
  if (wall_ms >= options_.min_step_ms && cpu_ms >= 0) {
    window_wall_ms_ += wall_ms;
    window_cpu_ms_ += cpu_ms;
  }
  if (window_wall_ms_ >= options_.window_ms) {
    const double efficiency = window_cpu_ms_ / (window_wall_ms_ * threads_);
    last_efficiency_ = efficiency;
    StartWindow();
    if (probing_) {
      probing_ = false;
      low_windows_ = 0;
      since_probe_ms_ = 0;
      if (efficiency < options_.keep_above) {
        --threads_;  // still contended: back to what ran well
        ++changes_;
        last_decision_ = Decision::kProbeFailed;
      } else {
        last_decision_ = Decision::kProbeKept;
      }
      return threads_;
    }
    low_windows_ = efficiency < options_.shrink_below ? low_windows_ + 1 : 0;
    if (low_windows_ >= options_.drop_after && threads_ > options_.min_threads) {
      low_windows_ = 0;
      --threads_;
      ++changes_;
      since_probe_ms_ = 0;
      last_decision_ = Decision::kDrop;
      return threads_;
    }
  }
  if (!probing_ && threads_ < options_.max_threads && since_probe_ms_ >= options_.probe_every_ms) {
    probing_ = true;
    ++threads_;
    ++changes_;
    last_decision_ = Decision::kProbe;
    StartWindow();
  }
  return threads_;
}

}  // namespace streamgen
