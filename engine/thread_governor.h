// Adapts the model's CPU thread count to the CPU time the process really
// gets, for machines the server shares with other busy processes.
//
// Why: the CPU kernels and libtorch run each step as OpenMP parallel regions
// that end at a barrier. When another process takes a core, one of our
// threads is descheduled for whole scheduler slices while its siblings spin
// at the barrier: on 2 cores with one busy process beside it, a 2-thread
// server ran a request 3-4x slower than alone, and slower than with one
// thread (bench/README.md, "Sharing a machine").
//
// How: per step, the process's CPU time over the step's wall time, divided by
// the thread count, is the share of its threads that actually ran
// ("efficiency"; spinning at a barrier counts as running, so a solo step
// reads ~1). Efficiency below kShrinkBelow over two windows of steps in a row
// drops one thread; at fewer threads than the maximum, the governor probes one thread
// more every kProbeEvery and keeps it when the probe's efficiency reaches
// kKeepAbove (the other process went away), else goes back.
//
// A policy object: no torch, no clocks of its own. The engine's loop feeds it
// each step's wall and CPU times and applies the thread count it returns.
// Not thread-safe: the loop thread owns it.
#pragma once

#include <cstdint>

namespace streamgen {

struct ThreadGovernorOptions {
  int max_threads = 1;             // the configured thread count; never exceeded, >= 1
  int min_threads = 1;             // >= 1
  double window_ms = 200;          // wall time of steps judged together
  double min_step_ms = 1;          // shorter steps are not measured (noise)
  double shrink_below = 0.8;       // efficiency below this over `drop_after` windows in a
                                   // row: one thread fewer
  int drop_after = 2;              // >= 1. Why not 1: a drop costs half the speed until the
                                   // next probe (probe_every_ms); one low window is often a
                                   // blip (another process starting, a compiler forking)
  double keep_above = 0.85;        // a probe's efficiency at or above this: keep the thread
  double probe_every_ms = 3000;    // wall time at a reduced count before probing one more
};

class ThreadGovernor {
 public:
  explicit ThreadGovernor(const ThreadGovernorOptions& options);

  // One step ran with threads() threads for `wall_ms` of wall time, while the
  // process used `cpu_ms` of CPU time. Returns the thread count for the next
  // step (== threads() unless it changed).
  int OnStep(double wall_ms, double cpu_ms);

  int threads() const { return threads_; }
  int64_t changes() const { return changes_; }  // thread count changes so far

  // What the last OnStep decided (for the log: a drop and a kept probe are
  // worth a line; probes that fail every few seconds under contention are not).
  enum class Decision { kNone, kDrop, kProbe, kProbeFailed, kProbeKept };
  Decision last_decision() const { return last_decision_; }
  // The efficiency of the last judged window (1 before any).
  double last_efficiency() const { return last_efficiency_; }

 private:
  void StartWindow();

  ThreadGovernorOptions options_;
  int threads_;
  bool probing_ = false;
  double window_wall_ms_ = 0;
  double window_cpu_ms_ = 0;
  double since_probe_ms_ = 0;  // wall time at a reduced count since the last probe
  int low_windows_ = 0;        // windows in a row below shrink_below
  int64_t changes_ = 0;
  Decision last_decision_ = Decision::kNone;
  double last_efficiency_ = 1;
};

}  // namespace streamgen
