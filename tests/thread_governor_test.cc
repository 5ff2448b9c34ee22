// ThreadGovernor stepped against expected thread counts (a policy object: no
// clocks, no threads; the steps' wall and CPU times are given).
#include "engine/thread_governor.h"

#include <gtest/gtest.h>

namespace streamgen {
namespace {

// Runs `steps` steps of 10 ms wall each, the process getting `cpus` CPUs'
// worth of time (capped at the governor's current thread count).
int RunSteps(ThreadGovernor& g, int steps, double cpus) {
  for (int i = 0; i < steps; ++i) {
    const double used = std::min<double>(cpus, g.threads());
    g.OnStep(10.0, 10.0 * used);
  }
  return g.threads();
}

ThreadGovernorOptions Options(int max_threads) {
  ThreadGovernorOptions o;
  o.max_threads = max_threads;
  return o;
}

TEST(ThreadGovernor, SoloKeepsEveryThread) {
  ThreadGovernor g(Options(2));
  EXPECT_EQ(RunSteps(g, 1000, 2.0), 2);  // 10 s of steps at full efficiency
  EXPECT_EQ(g.changes(), 0);
}

TEST(ThreadGovernor, AStolenCoreDropsAThreadWithinTwoWindows) {
  ThreadGovernor g(Options(2));
  // Two threads and a busy process on two cores: the process gets ~4/3 CPUs.
  EXPECT_EQ(RunSteps(g, 20, 4.0 / 3.0), 2);  // one 200 ms window: not yet
  EXPECT_EQ(RunSteps(g, 20, 4.0 / 3.0), 1);  // the second in a row
}

TEST(ThreadGovernor, OneLowWindowAtATimeKeepsEveryThread) {
  ThreadGovernor g(Options(2));
  // Blips (another process starting, a burst of page faults): a low window
  // between good ones, again and again. A drop would cost half the speed for
  // the 3 s until the next probe.
  for (int i = 0; i < 20; ++i) {
    RunSteps(g, 20, 1.0);
    RunSteps(g, 20, 2.0);
  }
  EXPECT_EQ(g.threads(), 2);
  EXPECT_EQ(g.changes(), 0);
  EXPECT_DOUBLE_EQ(g.last_efficiency(), 1.0);
}

TEST(ThreadGovernor, ProbesBackUpAndStaysDownWhileContended) {
  ThreadGovernor g(Options(2));
  RunSteps(g, 40, 4.0 / 3.0);
  ASSERT_EQ(g.threads(), 1);
  // At one thread the busy process and ours each get a core: efficiency 1.
  // Every 3 s the governor tries 2 threads, sees ~0.67, and goes back.
  int at_two = 0;
  for (int i = 0; i < 1000; ++i) {
    const double cpus = g.threads() == 1 ? 1.0 : 4.0 / 3.0;
    g.OnStep(10.0, 10.0 * cpus);
    at_two += g.threads() == 2;
  }
  EXPECT_EQ(g.threads(), 1);
  EXPECT_GT(at_two, 0);         // it did probe
  EXPECT_LT(at_two, 1000 / 10);  // but spent under a tenth of the time there
}

TEST(ThreadGovernor, ReturnsToAllThreadsWhenTheNeighbourLeaves) {
  ThreadGovernor g(Options(4));
  EXPECT_EQ(RunSteps(g, 40, 2.5), 3);  // 2.5 of 4 CPUs: 0.625 < 0.8, two windows
  EXPECT_EQ(RunSteps(g, 400, 2.5), 3);  // 2.5 of 3: 0.83, stays; probes of 4 fail
  // Neighbour gone: probes succeed one by one.
  EXPECT_EQ(RunSteps(g, 2000, 4.0), 4);
}

TEST(ThreadGovernor, ReportsEachDecisionWithItsWindowsEfficiency) {
  using Decision = ThreadGovernor::Decision;
  ThreadGovernor g(Options(2));
  EXPECT_EQ(g.last_decision(), Decision::kNone);
  EXPECT_DOUBLE_EQ(g.last_efficiency(), 1.0);
  // 19 steps of a 200 ms window at 1.5 CPUs of 2: not judged yet.
  for (int i = 0; i < 19; ++i) EXPECT_EQ(g.OnStep(10.0, 15.0), 2);
  EXPECT_EQ(g.last_decision(), Decision::kNone);
  EXPECT_DOUBLE_EQ(g.last_efficiency(), 1.0);
  EXPECT_EQ(g.OnStep(10.0, 15.0), 2);  // the 20th ends the window: 0.75 < 0.8, once
  EXPECT_EQ(g.last_decision(), Decision::kNone);
  EXPECT_DOUBLE_EQ(g.last_efficiency(), 0.75);
  for (int i = 0; i < 19; ++i) EXPECT_EQ(g.OnStep(10.0, 14.0), 2);
  EXPECT_EQ(g.OnStep(10.0, 14.0), 1);  // twice in a row
  EXPECT_EQ(g.last_decision(), Decision::kDrop);
  EXPECT_DOUBLE_EQ(g.last_efficiency(), 0.7);
  g.OnStep(10.0, 10.0);
  EXPECT_EQ(g.last_decision(), Decision::kNone);  // one step's report, not sticky
  // 3 s at one thread, then the probe's window: 1.8 of 2 CPUs (0.9) keeps it.
  int steps = 1;
  while (g.last_decision() != Decision::kProbe && steps++ < 400) g.OnStep(10.0, 10.0);
  ASSERT_EQ(g.last_decision(), Decision::kProbe);
  EXPECT_EQ(g.threads(), 2);
  while (g.last_decision() != Decision::kProbeKept && steps++ < 400) g.OnStep(10.0, 18.0);
  EXPECT_EQ(g.last_decision(), Decision::kProbeKept);
  EXPECT_DOUBLE_EQ(g.last_efficiency(), 0.9);
  EXPECT_EQ(g.threads(), 2);
}

TEST(ThreadGovernor, AFailedProbeSaysSo) {
  using Decision = ThreadGovernor::Decision;
  ThreadGovernor g(Options(2));
  RunSteps(g, 40, 4.0 / 3.0);
  ASSERT_EQ(g.last_decision(), Decision::kDrop);
  Decision seen = Decision::kNone;
  for (int i = 0; i < 400 && seen != Decision::kProbeFailed; ++i) {
    g.OnStep(10.0, 10.0 * (g.threads() == 1 ? 1.0 : 4.0 / 3.0));
    if (g.last_decision() != Decision::kNone) seen = g.last_decision();
    if (seen == Decision::kProbe) seen = Decision::kNone;  // the probe's start
  }
  EXPECT_EQ(seen, Decision::kProbeFailed);
  EXPECT_EQ(g.threads(), 1);
  EXPECT_NEAR(g.last_efficiency(), 2.0 / 3.0, 1e-9);
}

TEST(ThreadGovernor, ShortStepsAreNotJudged) {
  ThreadGovernor g(Options(2));
  for (int i = 0; i < 10000; ++i) g.OnStep(0.5, 0.5);  // efficiency 0.5, but 0.5 ms steps
  EXPECT_EQ(g.threads(), 2);
}

TEST(ThreadGovernor, NeverBelowMinOrAboveMax) {
  ThreadGovernorOptions o = Options(3);
  o.min_threads = 2;
  ThreadGovernor g(o);
  EXPECT_EQ(RunSteps(g, 500, 0.5), 2);
  ThreadGovernor one(Options(1));
  EXPECT_EQ(RunSteps(one, 500, 0.2), 1);
  EXPECT_EQ(one.changes(), 0);
}

}  // namespace
}  // namespace streamgen
