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

TEST(ThreadGovernor, AStolenCoreDropsAThreadWithinAWindow) {
  ThreadGovernor g(Options(2));
  // Two threads and a busy process on two cores: the process gets ~4/3 CPUs.
  EXPECT_EQ(RunSteps(g, 20, 4.0 / 3.0), 1);  // one 200 ms window
}

TEST(ThreadGovernor, ProbesBackUpAndStaysDownWhileContended) {
  ThreadGovernor g(Options(2));
  RunSteps(g, 20, 4.0 / 3.0);
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
  EXPECT_EQ(RunSteps(g, 20, 2.5), 3);  // 2.5 of 4 CPUs: 0.625 < 0.8
  EXPECT_EQ(RunSteps(g, 400, 2.5), 3);  // 2.5 of 3: 0.83, stays; probes of 4 fail
  // Neighbour gone: probes succeed one by one.
  EXPECT_EQ(RunSteps(g, 2000, 4.0), 4);
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
