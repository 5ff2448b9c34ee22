// MaskJob and MaskWorker (engine/constraint_state.h): every mask of a step is
// filled exactly once, by the worker or by the owner's Finish(), and nothing
// touches a state after Finish() returns.
#include "engine/constraint_state.h"

#include <atomic>
#include <memory>
#include <vector>

#include "gtest/gtest.h"

namespace streamgen {
namespace {

// Fills word 0 of its mask with its own tag and counts its fills.
class TagMatcher : public TokenMatcher {
 public:
  TagMatcher(uint32_t tag, std::atomic<int>* fills) : tag_(tag), fills_(fills) {}
  void FillNextTokenBitmask(uint32_t* mask) override {
    mask[0] = tag_;
    fills_->fetch_add(1);
  }
  bool AcceptToken(int) override { return true; }
  void Rollback(int) override {}
  bool CanTerminate() const override { return false; }
  bool IsTerminated() const override { return false; }
  std::unique_ptr<TokenMatcher> Clone() const override {
    return std::make_unique<TagMatcher>(tag_, fills_);
  }

 private:
  uint32_t tag_;
  std::atomic<int>* fills_;
};

class TagConstraint : public CompiledConstraint {
 public:
  TagConstraint(uint32_t tag, std::atomic<int>* fills) : tag_(tag), fills_(fills) {}
  std::unique_ptr<TokenMatcher> NewMatcher() const override {
    return std::make_unique<TagMatcher>(tag_, fills_);
  }

 private:
  uint32_t tag_;
  std::atomic<int>* fills_;
};

struct States {
  explicit States(int n) : fills(n) {
    for (int i = 0; i < n; ++i) {
      owned.push_back(std::make_unique<SequenceConstraint>(
          std::make_shared<TagConstraint>(1000 + i, &fills[i]), 64));
      raw.push_back(owned.back().get());
    }
  }
  std::vector<std::atomic<int>> fills;
  std::vector<std::unique_ptr<SequenceConstraint>> owned;
  std::vector<SequenceConstraint*> raw;
};

void ExpectEachFilledOnce(const States& s) {
  for (size_t i = 0; i < s.raw.size(); ++i) {
    EXPECT_EQ(s.fills[i].load(), 1) << "state " << i;
    EXPECT_EQ(s.raw[i]->mask[0], 1000 + i) << "state " << i;
  }
}

TEST(MaskJobTest, FinishFillsEveryMaskNoHelperClaimed) {
  States s(5);
  MaskJob job(s.raw);
  const MaskTiming t = job.Finish();
  ExpectEachFilledOnce(s);
  EXPECT_EQ(t.masks, 5);
  EXPECT_EQ(t.on_loop, 5);
  // A helper that comes late finds nothing to do.
  job.Work();
  ExpectEachFilledOnce(s);
}

TEST(MaskJobTest, AHelperAndTheOwnerShareTheMasks) {
  States s(4);
  MaskJob job(s.raw);
  job.Work();  // a helper that ran before the owner: all of them
  const MaskTiming t = job.Finish();
  ExpectEachFilledOnce(s);
  EXPECT_EQ(t.masks, 4);
  EXPECT_EQ(t.on_loop, 0);
}

TEST(MaskWorkerTest, EveryStepsMasksAreFilledOnceWhoeverFillsThem) {
  MaskWorker worker;
  EXPECT_EQ(worker.Start({}), nullptr);
  int64_t on_loop = 0, masks = 0;
  for (int step = 0; step < 200; ++step) {
    States s(1 + step % 16);
    std::shared_ptr<MaskJob> job = worker.Start(s.raw);
    ASSERT_NE(job, nullptr);
    const MaskTiming t = job->Finish();
    ExpectEachFilledOnce(s);
    ASSERT_EQ(t.masks, static_cast<int64_t>(s.raw.size()));
    on_loop += t.on_loop;
    masks += t.masks;
    // s (the states) goes here, while the worker may still hold the job.
  }
  EXPECT_LE(on_loop, masks);
}

}  // namespace
}  // namespace streamgen
