// The scheduler and the block allocator, stepped iteration by iteration with a
// fake model against tables of expected states (no libtorch).
//
// A table row describes one iteration, after the engine has run it:
//   X<id>              preempted this iteration
//   P<id>[start,end)   prefill chunk; a trailing '*' marks the last chunk
//   D<id>              decode
//   done:<ids>         reached max_new_tokens and removed
//   free=<n>           free blocks at the end of the iteration
//   <id><state>        every live sequence: w waiting, p prefilling,
//                      d decoding, x preempted (waiting to be recomputed)
#include "engine/scheduler.h"

#include <algorithm>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/kv/block_allocator.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace streamgen {
namespace {

using State = Scheduler::State;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

SchedulerOptions Options(int max_batch, int max_queue, int block_size, int num_blocks,
                         int max_prefill_tokens) {
  SchedulerOptions options;
  options.max_batch = max_batch;
  options.max_queue = max_queue;
  options.block_size = block_size;
  options.num_blocks = num_blocks;
  options.max_prefill_tokens = max_prefill_tokens;
  return options;
}

char StateLetter(State state) {
  switch (state) {
    case State::kWaiting:
      return 'w';
    case State::kPrefilling:
      return 'p';
    case State::kDecoding:
      return 'd';
    case State::kPreempted:
      return 'x';
  }
  return '?';
}

// Plays the engine over a fake model. The "KV cache" records which
// (sequence, position) each slot holds; every chunk and decode writes its
// positions through the block table and then checks that all the positions it
// attends to, [0, end), hold its own keys: a wrong or shared block shows up.
class FakeEngine {
 public:
  explicit FakeEngine(const SchedulerOptions& options)
      : options_(options),
        scheduler_(options),
        kv_(static_cast<size_t>(options.num_blocks) * options.block_size, {0, -1}) {}

  // `prompt_ids` (prompt_tokens ids) are given to the scheduler (prefix
  // caching); without them each sequence's tokens are unique to it.
  absl::Status Add(uint64_t id, int prompt_tokens, int max_new_tokens,
                   std::vector<int> prompt_ids = {}) {
    const bool given = !prompt_ids.empty();
    if (!given) {
      for (int p = 0; p < prompt_tokens; ++p) prompt_ids.push_back(Unique(id, p));
    }
    absl::Status status = scheduler_.Add(id, prompt_tokens, max_new_tokens,
                                         given ? prompt_ids : std::vector<int>());
    if (status.ok()) {
      Seq seq{prompt_tokens, max_new_tokens};
      seq.tokens = std::move(prompt_ids);
      seqs_[id] = std::move(seq);
    }
    return status;
  }

  void Cancel(uint64_t id) {
    scheduler_.Remove(id);
    seqs_.erase(id);
  }

  // Runs one iteration and describes it as a table row.
  std::string Step() {
    const SchedulerStep step = scheduler_.Schedule();
    std::vector<std::string> row;
    std::set<uint64_t> seen;
    for (uint64_t id : step.preempted) {
      row.push_back(absl::StrCat("X", id));
      seqs_.at(id).computed = 0;  // its cache is gone: recomputed from position 0
    }
    // The engine copies partial blocks before anything of the step writes.
    for (const KvCacheManager::BlockCopy& copy : step.kv_copies) {
      EXPECT_TRUE(options_.prefix_caching);
      const int bs = options_.block_size;
      std::copy(kv_.begin() + copy.from * bs, kv_.begin() + (copy.from + 1) * bs,
                kv_.begin() + copy.to * bs);
      ++copies_;
    }
    for (const ScheduledPrefill& chunk : step.prefills) {
      Seq& seq = seqs_.at(chunk.id);
      if (options_.prefix_caching && seq.computed == 0 && chunk.start > 0) {
        // Admitted with a shared or copied prefix: those positions must
        // already hold exactly this sequence's tokens; its last known token
        // is always computed.
        EXPECT_LT(chunk.start, seq.known()) << "every known token was shared";
        Attend(chunk.id, chunk.start);
        seq.computed = chunk.start;
        shared_tokens_ += chunk.start;
      }
      EXPECT_TRUE(seen.insert(chunk.id).second) << "twice in one step: " << chunk.id;
      row.push_back(absl::StrCat("P", chunk.id, "[", chunk.start, ",", chunk.start + chunk.length,
                                 ")", chunk.last_chunk ? "*" : ""));
      RunPrefill(chunk);
    }
    for (uint64_t id : step.decodes) {
      EXPECT_TRUE(seen.insert(id).second) << "twice in one step: " << id;
      row.push_back(absl::StrCat("D", id));
      RunDecode(id);
    }
    EXPECT_LE(scheduler_.num_running(), options_.max_batch);
    std::vector<uint64_t> done;
    for (auto& [id, seq] : seqs_) {
      if (seq.generated == seq.max_new) done.push_back(id);
    }
    for (uint64_t id : done) {
      scheduler_.Remove(id);
      seqs_.erase(id);
      ++finished_;
    }
    if (!done.empty()) row.push_back(absl::StrCat("done:", absl::StrJoin(done, ",")));
    row.push_back(absl::StrCat("free=", scheduler_.num_free_blocks()));
    for (const auto& [id, seq] : seqs_) {
      row.push_back(absl::StrCat(id, std::string(1, StateLetter(*scheduler_.StateOf(id)))));
    }
    CheckInvariants();
    return absl::StrJoin(row, " ");
  }

  // Steps until nothing is left; returns the rows (fails after `limit`).
  std::vector<std::string> RunToCompletion(int limit = 100000) {
    std::vector<std::string> rows;
    while (!seqs_.empty() && static_cast<int>(rows.size()) < limit) rows.push_back(Step());
    EXPECT_TRUE(seqs_.empty()) << "not finished after " << limit << " iterations";
    return rows;
  }

  // Tables hold ceil(cached / block_size) blocks; blocks in use == the blocks
  // in tables; tables are disjoint (without prefix caching).
  void CheckInvariants() {
    std::set<int> blocks;
    for (const auto& [id, seq] : seqs_) {
      const int cached = scheduler_.CachedTokens(id);
      const std::vector<int>& table = scheduler_.BlockTable(id);
      const int want = (cached + options_.block_size - 1) / options_.block_size;
      EXPECT_EQ(static_cast<int>(table.size()), want) << "sequence " << id;
      EXPECT_EQ(cached, seq.computed) << "sequence " << id;
      for (int block : table) {
        const bool fresh = blocks.insert(block).second;
        if (!options_.prefix_caching) EXPECT_TRUE(fresh) << "shared " << block;
      }
    }
    EXPECT_EQ(scheduler_.num_used_blocks(), static_cast<int>(blocks.size()));
    EXPECT_EQ(scheduler_.num_running() + scheduler_.num_waiting(), static_cast<int>(seqs_.size()));
  }

  Scheduler& scheduler() { return scheduler_; }
  // The id generated for `id` at `position` (default: unique to the
  // sequence, so generated blocks never match another's).
  void set_generated_token(std::function<int(uint64_t, int)> f) { generated_token_ = std::move(f); }
  int64_t copies() const { return copies_; }
  int64_t finished() const { return finished_; }
  int64_t shared_tokens() const { return shared_tokens_; }
  int live() const { return static_cast<int>(seqs_.size()); }
  std::vector<uint64_t> live_ids() const {
    std::vector<uint64_t> ids;
    for (const auto& entry : seqs_) ids.push_back(entry.first);
    return ids;
  }

 private:
  struct Seq {
    int prompt = 0;
    int max_new = 0;
    int generated = 0;
    int computed = 0;  // positions whose KV are in its blocks since the last preemption
    std::vector<int> tokens;  // prompt, then generated ids
    int known() const { return prompt + generated; }
  };

  // A token id no other sequence has at any position.
  static int Unique(uint64_t id, int position) {
    return 1000000 + static_cast<int>(id) * 100000 + position;
  }

  void RunPrefill(const ScheduledPrefill& chunk) {
    Seq& seq = seqs_.at(chunk.id);
    EXPECT_GE(chunk.length, 1);
    EXPECT_EQ(chunk.start, seq.computed) << "chunk of " << chunk.id << " does not continue";
    const int end = chunk.start + chunk.length;
    EXPECT_LE(end, seq.known());
    EXPECT_EQ(chunk.last_chunk, end == seq.known());
    for (int p = chunk.start; p < end; ++p) Write(chunk.id, p);
    Attend(chunk.id, end);
    seq.computed = end;
    if (chunk.last_chunk) AppendToken(chunk.id);
  }

  void RunDecode(uint64_t id) {
    Seq& seq = seqs_.at(id);
    EXPECT_EQ(seq.computed, seq.known() - 1) << "decode of " << id;
    Write(id, seq.known() - 1);
    Attend(id, seq.known());
    seq.computed = seq.known();
    AppendToken(id);
  }

  void AppendToken(uint64_t id) {
    Seq& seq = seqs_.at(id);
    EXPECT_LT(seq.generated, seq.max_new) << "token beyond max_new_tokens for " << id;
    const int token = generated_token_ ? generated_token_(id, seq.known()) : Unique(id, seq.known());
    seq.tokens.push_back(token);
    ++seq.generated;
    scheduler_.OnTokenAppended(id, token);
  }

  int Slot(uint64_t id, int position) {
    const std::vector<int>& table = scheduler_.BlockTable(id);
    const size_t index = position / options_.block_size;
    if (index >= table.size()) {
      ADD_FAILURE() << "no block for position " << position << " of " << id;
      return -1;
    }
    return table[index] * options_.block_size + position % options_.block_size;
  }

  // The "KV" of a position is (its token, the position). A block that another
  // live sequence's table also holds may only be written by the sequence that
  // publishes it in this very step (the engine writes every token's K/V before
  // any attention reads), so only with the content the other expects there.
  void Write(uint64_t id, int position) {
    const int slot = Slot(id, position);
    if (slot < 0) return;
    const int block = slot / options_.block_size;
    const int token = seqs_.at(id).tokens[position];
    for (const auto& [other, seq] : seqs_) {
      if (other == id) continue;
      const std::vector<int>& table = scheduler_.BlockTable(other);
      const auto at = std::find(table.begin(), table.end(), block);
      if (at == table.end()) continue;
      const size_t other_position =
          static_cast<size_t>(at - table.begin()) * options_.block_size + position % options_.block_size;
      EXPECT_TRUE(other_position == static_cast<size_t>(position) &&
                  position < static_cast<int>(seq.tokens.size()) && seq.tokens[position] == token)
          << id << " writes position " << position << " into block " << block << " shared with "
          << other << " with other content";
    }
    kv_[slot] = {token, position};
  }

  void Attend(uint64_t id, int end) {
    const Seq& seq = seqs_.at(id);
    for (int p = 0; p < end; ++p) {
      const int slot = Slot(id, p);
      if (slot < 0) return;
      ASSERT_EQ(kv_[slot], std::make_pair(seq.tokens[p], p)) << "KV of " << id << " position " << p;
    }
  }

  SchedulerOptions options_;
  Scheduler scheduler_;
  std::vector<std::pair<int, int>> kv_;  // [num_blocks * block_size] (token, position)
  std::map<uint64_t, Seq> seqs_;
  int64_t finished_ = 0;
  int64_t shared_tokens_ = 0;
  int64_t copies_ = 0;
  std::function<int(uint64_t, int)> generated_token_;
};

void ExpectRows(FakeEngine& engine, const std::vector<std::string>& table) {
  for (size_t i = 0; i < table.size(); ++i) {
    EXPECT_EQ(engine.Step(), table[i]) << "iteration " << i + 1;
  }
}

// ---------------------------------------------------------------- allocator

TEST(BlockAllocatorTest, HandsOutEveryIdOnceThenNothing) {
  BlockAllocator allocator(3);
  EXPECT_EQ(allocator.num_blocks(), 3);
  EXPECT_EQ(allocator.Allocate(), 0);
  EXPECT_EQ(allocator.Allocate(), 1);
  EXPECT_EQ(allocator.Allocate(), 2);
  EXPECT_EQ(allocator.Allocate(), std::nullopt);
  EXPECT_EQ(allocator.num_free(), 0);
  allocator.Free(1);
  EXPECT_FALSE(allocator.IsAllocated(1));
  EXPECT_EQ(allocator.num_free(), 1);
  EXPECT_EQ(allocator.Allocate(), 1);  // freed ids are reused
  EXPECT_EQ(allocator.num_used(), 3);
}

TEST(BlockAllocatorTest, DoubleFreeAndForeignIdsAreRefused) {
  BlockAllocator allocator(2);
  const int block = *allocator.Allocate();
  allocator.Free(block);
  EXPECT_DEBUG_DEATH(allocator.Free(block), "not allocated");
  EXPECT_DEBUG_DEATH(allocator.Free(7), "not allocated");
  EXPECT_DEBUG_DEATH(allocator.Free(-1), "not allocated");
#ifdef NDEBUG
  EXPECT_EQ(allocator.num_rejected_frees(), 3);
#endif
  EXPECT_EQ(allocator.num_free(), 2);  // the pool is unchanged
  EXPECT_EQ(allocator.Allocate(), 0);
  EXPECT_EQ(allocator.Allocate(), 1);
  EXPECT_EQ(allocator.Allocate(), std::nullopt);  // no id was handed out twice
}

// ---------------------------------------------------------------- Add errors

TEST(SchedulerTest, ValidateNamesTheField) {
  EXPECT_TRUE(Scheduler::Validate(SchedulerOptions()).ok());
  absl::Status status = Scheduler::Validate(Options(4, 4, 0, 8, 8));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("block_size must be >= 1, got 0"));
}

TEST(SchedulerTest, NeverFitsIsInvalidArgumentAtOnce) {
  FakeEngine engine(Options(4, 4, 4, 4, 512));  // 16 tokens in all
  absl::Status status = engine.Add(1, 10, 7);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("prompt (10 tokens) + max_new_tokens (7)"));
  EXPECT_THAT(status.message(), HasSubstr("holds 16 tokens (4 blocks of 4 tokens)"));
  EXPECT_EQ(engine.scheduler().StateOf(1), std::nullopt);
  EXPECT_EQ(engine.Add(2, 0, 1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine.Add(3, 1, 0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine.scheduler().num_waiting(), 0);
  // Exactly the capacity fits, and runs to the end alone.
  ASSERT_TRUE(engine.Add(4, 10, 6).ok());
  engine.RunToCompletion();
  EXPECT_EQ(engine.finished(), 1);
  EXPECT_EQ(engine.scheduler().num_used_blocks(), 0);
}

TEST(SchedulerTest, QueueFullIsResourceExhaustedAndDuplicatesAlreadyExist) {
  FakeEngine engine(Options(4, 2, 4, 16, 512));
  ASSERT_TRUE(engine.Add(1, 2, 2).ok());
  ASSERT_TRUE(engine.Add(2, 2, 2).ok());
  absl::Status status = engine.Add(3, 2, 2);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(status.message(), HasSubstr("max_queue = 2"));
  EXPECT_EQ(engine.Add(1, 2, 2).code(), absl::StatusCode::kAlreadyExists);
  engine.Step();  // both admitted: the queue has room again
  EXPECT_TRUE(engine.Add(3, 2, 2).ok());
  EXPECT_EQ(engine.Add(2, 2, 2).code(), absl::StatusCode::kAlreadyExists);  // running
}

// ---------------------------------------------------------------- tables

TEST(SchedulerTest, SingleRequestPrefillThenDecode) {
  FakeEngine engine(Options(4, 4, 4, 8, 512));
  ASSERT_TRUE(engine.Add(1, 6, 3).ok());
  EXPECT_EQ(engine.scheduler().StateOf(1), State::kWaiting);
  ExpectRows(engine, {
                         "P1[0,6)* free=6 1d",
                         "D1 free=6 1d",
                         "D1 done:1 free=8",
                         "free=8",
                     });
}

TEST(SchedulerTest, BlockBoundaryAllocationIsExact) {
  FakeEngine engine(Options(4, 4, 4, 4, 512));
  ASSERT_TRUE(engine.Add(1, 4, 6).ok());
  EXPECT_EQ(engine.Step(), "P1[0,4)* free=3 1d");  // positions 0..3: one block
  EXPECT_THAT(engine.scheduler().BlockTable(1), ElementsAre(0));
  EXPECT_EQ(engine.Step(), "D1 free=2 1d");  // position 4 needs a second block
  EXPECT_THAT(engine.scheduler().BlockTable(1), ElementsAre(0, 1));
  ExpectRows(engine, {
                         "D1 free=2 1d",      // 5
                         "D1 free=2 1d",      // 6
                         "D1 free=2 1d",      // 7
                         "D1 done:1 free=4",  // 8: a third block
                     });
}

TEST(SchedulerTest, ChunkedPrefillNeverStallsDecodes) {
  FakeEngine engine(Options(4, 4, 4, 32, 4));
  ASSERT_TRUE(engine.Add(1, 3, 10).ok());
  EXPECT_EQ(engine.Step(), "P1[0,3)* free=31 1d");
  ASSERT_TRUE(engine.Add(2, 10, 2).ok());
  ExpectRows(engine, {
                         "P2[0,4) D1 free=30 1d 2p",
                         "P2[4,8) D1 free=28 1d 2p",
                         "P2[8,10)* D1 free=27 1d 2d",
                         "D1 D2 done:2 free=30 1d",
                     });
  // Two prefills share one iteration's budget of 4 prompt tokens.
  ASSERT_TRUE(engine.Add(3, 6, 1).ok());
  ASSERT_TRUE(engine.Add(4, 3, 1).ok());
  ExpectRows(engine, {
                         "P3[0,4) D1 free=29 1d 3p 4w",
                         "P3[4,6)* P4[0,2) D1 done:3 free=28 1d 4p",
                         "P4[2,3)* D1 done:4 free=29 1d",
                         "D1 free=29 1d",
                         "D1 done:1 free=32",
                     });
}

TEST(SchedulerTest, AdmissionKeepsHeadroomForTheFirstDecode) {
  FakeEngine engine(Options(4, 4, 4, 2, 512));
  ASSERT_TRUE(engine.Add(1, 1, 3).ok());
  ASSERT_TRUE(engine.Add(2, 4, 2).ok());
  ExpectRows(engine, {
                         // 2's 4 prompt tokens fit in the free block, its first decode would not.
                         "P1[0,1)* free=1 1d 2w", "D1 free=1 1d 2w", "D1 done:1 free=2 2w",
                         "P2[0,4)* free=1 2d",
                         "D2 done:2 free=2",  // position 4: the second block
                     });
  EXPECT_EQ(engine.scheduler().num_preemptions(), 0);
}

TEST(SchedulerTest, MaxBatchLimitsRunningSequences) {
  FakeEngine engine(Options(2, 4, 4, 16, 512));
  for (uint64_t id : {1, 2, 3}) ASSERT_TRUE(engine.Add(id, 2, 2).ok());
  ExpectRows(engine, {
                         "P1[0,2)* P2[0,2)* free=14 1d 2d 3w",
                         "D1 D2 done:1,2 free=16 3w",
                         "P3[0,2)* free=15 3d",
                         "D3 done:3 free=16",
                     });
}

TEST(SchedulerTest, PreemptsTheNewestAndRecomputesPromptPlusGenerated) {
  FakeEngine engine(Options(4, 2, 4, 4, 512));
  ASSERT_TRUE(engine.Add(1, 4, 8).ok());
  ASSERT_TRUE(engine.Add(2, 4, 8).ok());
  ExpectRows(engine, {
                         "P1[0,4)* P2[0,4)* free=2 1d 2d", "D1 D2 free=0 1d 2d",
                         "D1 D2 free=0 1d 2d", "D1 D2 free=0 1d 2d", "D1 D2 free=0 1d 2d",
                         "X2 D1 free=1 1d 2x",  // 1 needs a block for position 8
                     });
  EXPECT_EQ(engine.scheduler().num_preemptions(), 1);
  EXPECT_TRUE(engine.scheduler().BlockTable(2).empty());
  // Preempted sequences do not count against max_queue (2 here).
  EXPECT_EQ(engine.scheduler().num_waiting_fresh(), 0);
  ASSERT_TRUE(engine.Add(3, 1, 1).ok());
  ASSERT_TRUE(engine.Add(4, 1, 1).ok());
  EXPECT_EQ(engine.Add(5, 1, 1).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(engine.scheduler().num_waiting(), 3);
  ExpectRows(engine, {
                         "D1 free=1 1d 2x 3w 4w",  // 2 needs 3 blocks; 3 may not overtake it
                         "D1 done:1 free=4 2x 3w 4w",
                         "P2[0,9)* P3[0,1)* done:3 free=1 2d 4w",  // 9 = 4 prompt + 5 generated
                         "P4[0,1)* D2 done:4 free=1 2d",
                         "D2 done:2 free=4",
                     });
}

TEST(SchedulerTest, TheNewestPreemptsItself) {
  FakeEngine engine(Options(4, 4, 4, 3, 512));
  ASSERT_TRUE(engine.Add(1, 5, 3).ok());
  ASSERT_TRUE(engine.Add(2, 3, 4).ok());
  ExpectRows(engine, {
                         "P1[0,5)* P2[0,3)* free=0 1d 2d",
                         "D1 D2 free=0 1d 2d",
                         "X2 D1 done:1 free=3 2x",  // 2 needs a block for position 4
                         "P2[0,5)* free=1 2d",
                         "D2 done:2 free=3",
                     });
}

TEST(SchedulerTest, RemoveReturnsBlocksInEveryState) {
  FakeEngine engine(Options(4, 4, 4, 8, 4));
  ASSERT_TRUE(engine.Add(1, 2, 5).ok());
  ASSERT_TRUE(engine.Add(2, 10, 5).ok());
  ASSERT_TRUE(engine.Add(3, 2, 5).ok());
  EXPECT_EQ(engine.Step(), "P1[0,2)* P2[0,2) free=6 1d 2p 3w");
  Scheduler& scheduler = engine.scheduler();
  engine.Cancel(3);  // waiting
  EXPECT_EQ(scheduler.StateOf(3), std::nullopt);
  EXPECT_EQ(scheduler.num_waiting(), 0);
  EXPECT_EQ(scheduler.num_free_blocks(), 6);
  engine.Cancel(2);  // prefilling: its block and its reservation
  EXPECT_EQ(scheduler.num_free_blocks(), 7);
  engine.Cancel(1);  // decoding
  EXPECT_EQ(scheduler.num_free_blocks(), 8);
  EXPECT_EQ(scheduler.num_running(), 0);
  engine.Cancel(42);  // unknown: no-op
  EXPECT_EQ(engine.Step(), "free=8");
  // The whole pool is usable again: 28 + 4 = 32 tokens.
  ASSERT_TRUE(engine.Add(4, 28, 4).ok());
  engine.RunToCompletion();
  EXPECT_EQ(scheduler.num_used_blocks(), 0);
}

TEST(SchedulerTest, RemoveOfAPreemptedSequence) {
  FakeEngine engine(Options(4, 4, 4, 3, 512));
  ASSERT_TRUE(engine.Add(1, 5, 3).ok());
  ASSERT_TRUE(engine.Add(2, 3, 4).ok());
  engine.Step();
  engine.Step();
  EXPECT_EQ(engine.Step(), "X2 D1 done:1 free=3 2x");
  engine.Cancel(2);
  EXPECT_EQ(engine.scheduler().num_waiting(), 0);
  EXPECT_EQ(engine.Step(), "free=3");
}

// ---------------------------------------------------------------- stress

TEST(SchedulerTest, TinyPoolManySequencesAllFinish) {
  FakeEngine engine(Options(8, 32, 4, 6, 8));  // 6 blocks of 4 tokens
  for (uint64_t id = 1; id <= 20; ++id) {
    ASSERT_TRUE(engine.Add(id, 1 + static_cast<int>(id * 7 % 12), 1 + id % 10).ok());
  }
  const std::vector<std::string> rows = engine.RunToCompletion();
  EXPECT_EQ(engine.finished(), 20);
  EXPECT_GT(engine.scheduler().num_preemptions(), 0);
  const bool recomputed = std::any_of(rows.begin(), rows.end(), [](const std::string& row) {
    return row.find('X') != std::string::npos;
  });
  EXPECT_TRUE(recomputed);
  EXPECT_EQ(engine.scheduler().num_used_blocks(), 0);
  EXPECT_EQ(engine.scheduler().num_free_blocks(), 6);
}

// ---------------------------------------------------------------- prefix caching

std::vector<int> Ids(int first, int n) {
  std::vector<int> ids;
  for (int i = 0; i < n; ++i) ids.push_back(first + i);
  return ids;
}

TEST(PrefixCacheTest, SharesWholePromptBlocksAndCountsHits) {
  SchedulerOptions options = Options(4, 8, 4, 16, 64);
  options.prefix_caching = true;
  FakeEngine engine(options);
  // A's 10-token prompt has two full blocks (positions 0-3, 4-7), published
  // when its prefill is planned.
  ASSERT_TRUE(engine.Add(1, 10, 3, Ids(100, 10)).ok());
  ExpectRows(engine, {"P1[0,10)* free=13 1d"});
  EXPECT_EQ(engine.scheduler().num_cached_blocks(), 2);
  // B has the same first 9 tokens: it shares both full blocks and prefills
  // only positions 8-9 (its own block).
  std::vector<int> b = Ids(100, 9);
  b.push_back(7);
  ASSERT_TRUE(engine.Add(2, 10, 3, b).ok());
  ExpectRows(engine, {"P2[8,10)* D1 free=12 1d 2d"});
  const std::vector<int>& ta = engine.scheduler().BlockTable(1);
  const std::vector<int>& tb = engine.scheduler().BlockTable(2);
  EXPECT_EQ(ta[0], tb[0]);
  EXPECT_EQ(ta[1], tb[1]);
  EXPECT_NE(ta[2], tb[2]);
  EXPECT_EQ(engine.scheduler().prefix_cache_queries(), 20);
  EXPECT_EQ(engine.scheduler().prefix_cache_hits(), 8);
  engine.RunToCompletion();
  // Done: the cached blocks count as free (each sequence also published its
  // third block, positions 8-11, once its generated tokens filled it), and a
  // third request still hits: the first block shared, then the first token
  // of A's second block copied (position 5, its last, is computed).
  EXPECT_EQ(engine.scheduler().num_free_blocks(), 16);
  EXPECT_EQ(engine.scheduler().num_used_blocks(), 0);
  EXPECT_EQ(engine.scheduler().num_cached_blocks(), 4);
  ASSERT_TRUE(engine.Add(3, 6, 1, Ids(100, 6)).ok());
  ExpectRows(engine, {"P3[5,6)* done:3 free=16"});
  EXPECT_EQ(engine.scheduler().prefix_cache_hits(), 13);
  EXPECT_EQ(engine.copies(), 1);
}

TEST(PrefixCacheTest, AtLeastOnePromptTokenIsComputed) {
  SchedulerOptions options = Options(4, 8, 4, 16, 64);
  options.prefix_caching = true;
  FakeEngine engine(options);
  ASSERT_TRUE(engine.Add(1, 8, 1, Ids(100, 8)).ok());
  ExpectRows(engine, {"P1[0,8)* done:1 free=16"});
  // Same 8 tokens (two full blocks): only the first is shared; the second is
  // copied into a block of its own (nothing writes into a shared block) and
  // its last position recomputed there.
  ASSERT_TRUE(engine.Add(2, 8, 1, Ids(100, 8)).ok());
  ExpectRows(engine, {"P2[7,8)* done:2 free=16"});
  EXPECT_EQ(engine.copies(), 1);
}

TEST(PrefixCacheTest, DifferentTokensOrCachingOffShareNothing) {
  SchedulerOptions options = Options(4, 8, 4, 16, 64);
  options.prefix_caching = true;
  FakeEngine engine(options);
  ASSERT_TRUE(engine.Add(1, 10, 1, Ids(100, 10)).ok());
  engine.Step();
  std::vector<int> other = Ids(100, 10);
  other[0] = 5;  // differs at the first token
  ASSERT_TRUE(engine.Add(2, 10, 1, other).ok());
  ExpectRows(engine, {"P2[0,10)* done:2 free=16"});
  // Without ids (or with caching off), nothing is shared or counted.
  ASSERT_TRUE(engine.Add(3, 10, 1).ok());
  ExpectRows(engine, {"P3[0,10)* done:3 free=16"});
  FakeEngine off(Options(4, 8, 4, 16, 64));
  ASSERT_TRUE(off.Add(1, 10, 1, Ids(100, 10)).ok());
  ASSERT_TRUE(off.Add(2, 10, 1, Ids(100, 10)).ok());
  ExpectRows(off, {"P1[0,10)* P2[0,10)* done:1,2 free=16"});
  EXPECT_EQ(off.scheduler().prefix_cache_queries(), 0);
  EXPECT_EQ(off.scheduler().num_cached_blocks(), 0);
}

TEST(PrefixCacheTest, CachedBlocksAreEvictedLeastRecentlyReleasedFirst) {
  SchedulerOptions options = Options(4, 8, 4, 6, 64);
  options.prefix_caching = true;
  FakeEngine engine(options);
  ASSERT_TRUE(engine.Add(1, 5, 1, Ids(100, 5)).ok());  // publishes 1 block
  engine.Step();
  ASSERT_TRUE(engine.Add(2, 5, 1, Ids(200, 5)).ok());  // publishes 1 block
  engine.Step();
  EXPECT_EQ(engine.scheduler().num_cached_blocks(), 2);
  EXPECT_EQ(engine.scheduler().num_free_blocks(), 6);
  // 20 tokens need 5 blocks of 6: 4 free + the older cached block (of 1).
  ASSERT_TRUE(engine.Add(3, 20, 1).ok());
  engine.Step();
  EXPECT_EQ(engine.scheduler().num_cached_blocks(), 1);
  // 2's block survived, 1's did not.
  ASSERT_TRUE(engine.Add(4, 5, 1, Ids(200, 5)).ok());
  ASSERT_TRUE(engine.Add(5, 5, 1, Ids(100, 5)).ok());
  ExpectRows(engine, {"P4[4,5)* P5[0,5)* done:4,5 free=6"});
}

TEST(PrefixCacheTest, CopiesThePublishedBlockThatAgreesLongest) {
  SchedulerOptions options = Options(4, 8, 4, 16, 64);
  options.prefix_caching = true;
  FakeEngine engine(options);
  // Two published second blocks after the same first block: 104-107 and
  // 104 105 50 51.
  ASSERT_TRUE(engine.Add(1, 9, 1, Ids(100, 9)).ok());
  std::vector<int> other = Ids(100, 9);
  other[6] = 50;
  other[7] = 51;
  ASSERT_TRUE(engine.Add(2, 9, 1, other).ok());
  ExpectRows(engine, {"P1[0,9)* P2[4,9)* done:1,2 free=16"});
  EXPECT_EQ(engine.scheduler().num_cached_blocks(), 3);
  // 100-106 then 9: shares the first block; A's second block agrees on 3
  // tokens, B's on 2: A's is copied, positions 7-8 computed.
  std::vector<int> third = Ids(100, 7);
  third.insert(third.end(), {9, 9});
  ASSERT_TRUE(engine.Add(3, 9, 1, third).ok());
  ExpectRows(engine, {"P3[7,9)* done:3 free=16"});
  EXPECT_EQ(engine.copies(), 1);
  // A shared nothing; B only A's first block: A's second was published in
  // the step that computed it (next test).
  EXPECT_EQ(engine.scheduler().prefix_cache_hits(), 0 + 4 + 7);
}

TEST(PrefixCacheTest, BlocksPublishedInThisStepAreSharedButNotCopied) {
  SchedulerOptions options = Options(4, 8, 4, 16, 64);
  options.prefix_caching = true;
  FakeEngine engine(options);
  // Both admitted in one step: B shares A's first block (written before any
  // attention reads it) but cannot copy A's second one, whose K/V this same
  // step computes: it computes positions 4-8 itself.
  ASSERT_TRUE(engine.Add(1, 9, 1, Ids(100, 9)).ok());
  std::vector<int> b = Ids(100, 7);
  b.insert(b.end(), {9, 9});
  ASSERT_TRUE(engine.Add(2, 9, 1, b).ok());
  ExpectRows(engine, {"P1[0,9)* P2[4,9)* done:1,2 free=16"});
  EXPECT_EQ(engine.copies(), 0);
  // One step later it can: 100-106 then 20 agrees with A's second block
  // (104-107) and B's (104-106 9) on 3 tokens.
  std::vector<int> c = Ids(100, 7);
  c.insert(c.end(), {20, 20});
  ASSERT_TRUE(engine.Add(3, 9, 1, c).ok());
  ExpectRows(engine, {"P3[7,9)* done:3 free=16"});
  EXPECT_EQ(engine.copies(), 1);
}

TEST(PrefixCacheTest, TheNextTurnSharesThePreviousAnswer) {
  SchedulerOptions options = Options(4, 8, 4, 16, 64);
  options.prefix_caching = true;
  FakeEngine engine(options);
  engine.set_generated_token([](uint64_t, int position) { return 500 + position; });
  // Turn 1: a 6-token prompt and a 7-token answer (positions 6-12).
  ASSERT_TRUE(engine.Add(1, 6, 7, Ids(100, 6)).ok());
  engine.RunToCompletion();
  // Blocks 0-3 hold positions 0-15 of which 0-12 are known; the third block
  // (positions 8-11) is full of answer tokens whose K/V were computed.
  EXPECT_EQ(engine.scheduler().num_cached_blocks(), 3);
  // Turn 2: the conversation so far (prompt, answer) and 3 new tokens.
  std::vector<int> turn2 = Ids(100, 6);
  for (int p = 6; p < 13; ++p) turn2.push_back(500 + p);
  turn2.insert(turn2.end(), {7, 8, 9});
  ASSERT_TRUE(engine.Add(2, 16, 1, turn2).ok());
  // Three blocks shared (12 positions); A's fourth block was never full, so
  // positions 12-15 are computed.
  ExpectRows(engine, {"P2[12,16)* done:2 free=16"});
  EXPECT_EQ(engine.shared_tokens(), 12);
}

TEST(PrefixCacheTest, APartialCopyThatWouldNotFitIsLeftOut) {
  // 3 blocks of 4. A's prompt fills 2 blocks and leaves them cached. B needs
  // all 3 blocks (8 prompt tokens + 1 decode would take 3): sharing A's first
  // block and copying A's second would keep that second block from eviction
  // while B takes the other two, one more than is free. B goes without the
  // copy instead of waiting forever.
  SchedulerOptions options = Options(4, 8, 4, 3, 64);
  options.prefix_caching = true;
  FakeEngine engine(options);
  ASSERT_TRUE(engine.Add(1, 8, 1, Ids(100, 8)).ok());
  ExpectRows(engine, {"P1[0,8)* done:1 free=3"});
  std::vector<int> b = Ids(100, 7);
  b.push_back(9);
  ASSERT_TRUE(engine.Add(2, 8, 4, b).ok());
  EXPECT_EQ(engine.Step(), "P2[4,8)* free=1 2d");
  EXPECT_EQ(engine.copies(), 0);
  engine.RunToCompletion();
}

// Random options, arrivals, cancellations and lengths, 40 seeds; every step
// checks the FakeEngine's invariants. With prefix caching, prompts start with
// one of three "system prompts" (random lengths) and then differ.
struct SoakTotals {
  int64_t preemptions = 0;
  int64_t shared_tokens = 0;
  int64_t copies = 0;
};
SoakTotals Soak(bool prefix_caching, int iterations) {
  SoakTotals totals;
  for (uint32_t seed = 1; seed <= 40; ++seed) {
    std::mt19937 rng(seed);
    auto uniform = [&rng](int lo, int hi) {
      return std::uniform_int_distribution<int>(lo, hi)(rng);
    };
    SchedulerOptions options =
        Options(uniform(1, 6), uniform(1, 8), 1 << uniform(0, 3), uniform(3, 24), uniform(1, 16));
    options.prefix_caching = prefix_caching;
    const int capacity = options.num_blocks * options.block_size;
    FakeEngine engine(options);
    // With caching, generated ids depend on the position only: sequences
    // with the same prompt generate the same blocks, which match too.
    if (prefix_caching) engine.set_generated_token([](uint64_t, int p) { return 1 + p % 3; });
    std::vector<std::vector<int>> families(prefix_caching ? 3 : 0);
    for (auto& family : families) {
      for (int i = 0; i < capacity; ++i) family.push_back(uniform(1, 3));
    }
    uint64_t next_id = 1;
    int64_t added = 0;
    int64_t cancelled = 0;
    for (int iteration = 0; iteration < iterations; ++iteration) {
      for (int n = uniform(0, 2); n > 0; --n) {
        const int prompt = uniform(1, capacity);
        const int max_new = uniform(1, std::max(1, capacity / 2));
        std::vector<int> ids;
        if (prefix_caching) {
          ids = families[uniform(0, 2)];
          ids.resize(prompt);
          for (int i = uniform(0, prompt); i < prompt; ++i) ids[i] = uniform(1, 3);
        }
        const absl::Status status = engine.Add(next_id++, prompt, max_new, ids);
        if (prompt + max_new > capacity) {
          EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
        } else if (status.ok()) {
          ++added;
        } else {
          EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
        }
      }
      if (uniform(0, 19) == 0 && engine.live() > 0) {
        const std::vector<uint64_t> ids = engine.live_ids();
        engine.Cancel(ids[uniform(0, static_cast<int>(ids.size()) - 1)]);
        ++cancelled;
      }
      engine.Step();
      if (::testing::Test::HasFailure()) {
        ADD_FAILURE() << "seed " << seed << " iteration " << iteration;
        return totals;
      }
    }
    engine.RunToCompletion();
    EXPECT_EQ(engine.finished() + cancelled, added) << "seed " << seed;
    EXPECT_EQ(engine.scheduler().num_used_blocks(), 0) << "seed " << seed;
    EXPECT_EQ(engine.scheduler().num_free_blocks(), options.num_blocks) << "seed " << seed;
    EXPECT_EQ(engine.scheduler().num_running() + engine.scheduler().num_waiting(), 0);
    totals.preemptions += engine.scheduler().num_preemptions();
    totals.shared_tokens += engine.shared_tokens();
    totals.copies += engine.copies();
  }
  return totals;
}

TEST(SchedulerTest, RandomizedSoak) {
  const SoakTotals totals = Soak(/*prefix_caching=*/false, 1500);
  EXPECT_GT(totals.preemptions, 0);
  EXPECT_EQ(totals.shared_tokens, 0);
  EXPECT_EQ(totals.copies, 0);
}

TEST(PrefixCacheTest, RandomizedSoakWithSharedPrefixes) {
  const SoakTotals totals = Soak(/*prefix_caching=*/true, 1000);
  EXPECT_GT(totals.shared_tokens, 0);
  EXPECT_GT(totals.copies, 0);
  EXPECT_GT(totals.preemptions, 0);
}

}  // namespace
}  // namespace streamgen
