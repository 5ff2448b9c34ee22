// Continuous batching: a request's output is the same alone or among others
// (started at different times, with chunked prefill and preemption), a
// cancelled neighbour changes nothing, and every KV block comes back.
#include <filesystem>
#include <future>
#include <mutex>
#include <random>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "engine/engine.h"
#include "tests/engine_test_util.h"

namespace streamgen {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;


void WaitForSteps(Engine* engine, int64_t steps) {
  while (engine->stats().steps < steps) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

// 16 requests with prompts of different lengths; odd ones sampled with a seed.
std::vector<GenerationRequest> MixedRequests(int vocab) {
  std::mt19937 rng(42);
  std::vector<GenerationRequest> out;
  for (int i = 0; i < 16; ++i) {
    GenerationRequest r;
    r.prompt_token_ids.push_back(1);
    const int len = 2 + (i * 7) % 53;
    for (int j = 0; j < len; ++j) r.prompt_token_ids.push_back(3 + rng() % (vocab - 3));
    r.max_new_tokens = 12 + i % 5;
    r.ignore_eos = true;
    if (i % 2 == 1) {
      r.sampling.temperature = 0.8f;
      r.sampling.top_p = 0.95f;
      r.sampling.seed = 1000 + i;
    }
    out.push_back(std::move(r));
  }
  return out;
}

// The loop publishes its gauges at the end of the iteration that sent the last
// events: wait (bounded) until it has gone idle.
void WaitUntilIdle(Engine* engine) {
  for (int i = 0; i < 10000; ++i) {
    const EngineStats s = engine->stats();
    if (s.running == 0 && s.waiting == 0) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

std::vector<int> RunAlone(Engine* engine, const GenerationRequest& r) {
  Collector c;
  EXPECT_TRUE(engine->Submit(r, c.Sink()).ok());
  c.Wait();
  return c.ids;
}

// Submits the requests in waves between single loop iterations, so they start
// at different times and prefill while others decode.
std::vector<std::vector<int>> RunStaggered(Engine* engine,
                                           const std::vector<GenerationRequest>& requests) {
  engine->Pause();
  std::vector<std::unique_ptr<Collector>> collectors;
  int64_t steps = engine->stats().steps;
  for (size_t i = 0; i < requests.size(); ++i) {
    collectors.push_back(std::make_unique<Collector>());
    EXPECT_TRUE(engine->Submit(requests[i], collectors.back()->Sink()).ok());
    if (i % 3 == 2) {  // a few iterations between waves
      engine->Step(2);
      steps += 2;
      WaitForSteps(engine, steps);
    }
  }
  engine->Resume();
  std::vector<std::vector<int>> ids;
  for (auto& c : collectors) {
    c->Wait();
    ids.push_back(c->ids);
  }
  return ids;
}

// Each request of MixedRequests alone, then all of them staggered in one
// batch of 16 with chunked prefill: the same tokens.
void ExpectAloneEqualsBatched(const std::string& dir) {
  EngineOptions options;
  options.max_batch = 16;
  options.max_prefill_tokens = 24;  // long prompts prefill in chunks beside running decodes
  auto engine = MakeEngine(dir, options);
  ASSERT_NE(engine, nullptr);
  const auto requests = MixedRequests(engine->model_info().tokenizer_vocab_size);
  std::vector<std::vector<int>> alone;
  for (const auto& r : requests) alone.push_back(RunAlone(engine.get(), r));
  const auto batched = RunStaggered(engine.get(), requests);
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(batched[i], alone[i]) << "request " << i
                                    << (requests[i].sampling.temperature > 0 ? " (sampled)" : "");
  }
  WaitUntilIdle(engine.get());
  EXPECT_EQ(engine->stats().kv_blocks_used, 0);
}

TEST(BatchingTest, OutputsAreTheSameAloneAndAmongFifteenOthers) {
  if (!fs::exists(kFixtureDir)) GTEST_SKIP() << kFixtureDir << " is absent (not a dev machine)";
  ExpectAloneEqualsBatched(kFixtureDir);
}

// The demo model (models/demo-brown, committed: never skipped).
TEST(BatchingTest, DemoModelOutputsAreTheSameAloneAndAmongFifteenOthers) {
  ExpectAloneEqualsBatched(STREAMGEN_DEMO_MODEL_DIR);
}

TEST(BatchingTest, PreemptionRecomputesWithoutChangingOutputs) {
  if (!fs::exists(kFixtureDir)) GTEST_SKIP() << kFixtureDir << " is absent (not a dev machine)";
  EngineOptions options;
  options.max_batch = 8;
  options.kv_block_size = 8;
  options.kv_cache_blocks = 20;  // 160 tokens for 8 requests of up to ~75: preemption is certain
  auto engine = MakeEngine(kFixtureDir, options);
  ASSERT_NE(engine, nullptr);
  auto requests = MixedRequests(engine->model_info().tokenizer_vocab_size);
  requests.resize(8);
  std::vector<std::vector<int>> alone;
  for (const auto& r : requests) alone.push_back(RunAlone(engine.get(), r));
  ASSERT_EQ(engine->stats().preemptions, 0);
  const auto batched = RunStaggered(engine.get(), requests);
  EXPECT_GT(engine->stats().preemptions, 0);
  for (size_t i = 0; i < requests.size(); ++i) EXPECT_EQ(batched[i], alone[i]) << i;
  WaitUntilIdle(engine.get());
  EXPECT_EQ(engine->stats().kv_blocks_used, 0);
}

// Prefix caching: requests that share a long "system prompt" reuse its KV
// blocks (counted as hits), alone and batched (with preemption), and every
// output is the one an engine without caching gives.
TEST(BatchingTest, PrefixCachingSharesBlocksWithoutChangingOutputs) {
  if (!fs::exists(kFixtureDir)) GTEST_SKIP() << kFixtureDir << " is absent (not a dev machine)";
  EngineOptions plain;
  plain.max_batch = 8;
  plain.kv_block_size = 8;
  plain.kv_cache_blocks = 40;
  plain.max_prefill_tokens = 24;
  EngineOptions cached = plain;
  cached.prefix_caching = true;
  auto reference = MakeEngine(kFixtureDir, plain);
  auto engine = MakeEngine(kFixtureDir, cached);
  ASSERT_NE(reference, nullptr);
  ASSERT_NE(engine, nullptr);
  const int vocab = engine->model_info().tokenizer_vocab_size;
  std::mt19937 rng(7);
  std::vector<int> system = {1};
  for (int i = 0; i < 37; ++i) system.push_back(3 + rng() % (vocab - 3));
  std::vector<GenerationRequest> requests;
  for (int i = 0; i < 8; ++i) {
    GenerationRequest r;
    r.prompt_token_ids = system;
    for (int j = 0; j < i % 4; ++j) r.prompt_token_ids.push_back(3 + rng() % (vocab - 3));
    r.max_new_tokens = 10 + i;
    r.ignore_eos = true;
    if (i % 2 == 1) {
      r.sampling.temperature = 0.8f;
      r.sampling.seed = 500 + i;
    }
    requests.push_back(std::move(r));
  }
  std::vector<std::vector<int>> want;
  for (const auto& r : requests) want.push_back(RunAlone(reference.get(), r));
  EXPECT_EQ(reference->stats().prefix_cache_queries, 0);
  // One after the other: every request after the first shares the system
  // prompt's full blocks (4 of 8 tokens; at most (prompt - 1) / 8 of them).
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(RunAlone(engine.get(), requests[i]), want[i]) << "request " << i;
  }
  WaitUntilIdle(engine.get());
  EngineStats stats = engine->stats();
  EXPECT_GE(stats.prefix_cache_hits, 7 * 32);
  EXPECT_GT(stats.prefix_cache_queries, stats.prefix_cache_hits);
  EXPECT_EQ(stats.kv_blocks_used, 0);
  // All at once, staggered, in a pool small enough to preempt.
  const auto batched = RunStaggered(engine.get(), requests);
  for (size_t i = 0; i < requests.size(); ++i) EXPECT_EQ(batched[i], want[i]) << "request " << i;
  WaitUntilIdle(engine.get());
  EXPECT_GT(engine->stats().prefix_cache_hits, stats.prefix_cache_hits);
  EXPECT_EQ(engine->stats().kv_blocks_used, 0);
}

// Prefix caching across turns: the second turn of a chat (the first turn's
// prompt, its answer, a new message) shares the blocks of the first turn's
// answer too, and a repeated prompt computes only its last token (the rest
// of its last block is copied): the outputs are those of an engine without
// caching, token for token.
TEST(BatchingTest, PrefixCachingSharesTheAnswerAndCopiesThePartialBlock) {
  if (!fs::exists(kFixtureDir)) GTEST_SKIP() << kFixtureDir << " is absent (not a dev machine)";
  EngineOptions plain;
  plain.kv_block_size = 8;
  plain.kv_cache_blocks = 64;
  plain.max_prefill_tokens = 24;
  EngineOptions cached = plain;
  cached.prefix_caching = true;
  auto reference = MakeEngine(kFixtureDir, plain);
  auto engine = MakeEngine(kFixtureDir, cached);
  ASSERT_NE(reference, nullptr);
  ASSERT_NE(engine, nullptr);
  const int vocab = engine->model_info().tokenizer_vocab_size;
  std::mt19937 rng(11);
  GenerationRequest turn1;
  turn1.prompt_token_ids = {1};
  for (int i = 0; i < 20; ++i) turn1.prompt_token_ids.push_back(3 + rng() % (vocab - 3));
  turn1.max_new_tokens = 21;  // positions 21-41: blocks 3 and 4 are all answer
  turn1.ignore_eos = true;
  const std::vector<int> answer = RunAlone(engine.get(), turn1);
  ASSERT_EQ(answer, RunAlone(reference.get(), turn1));
  ASSERT_EQ(answer.size(), 21u);
  WaitUntilIdle(engine.get());
  const EngineStats before = engine->stats();

  GenerationRequest turn2 = turn1;
  turn2.prompt_token_ids.insert(turn2.prompt_token_ids.end(), answer.begin(), answer.end());
  for (int i = 0; i < 5; ++i) turn2.prompt_token_ids.push_back(3 + rng() % (vocab - 3));
  turn2.max_new_tokens = 8;
  turn2.sampling.temperature = 0.8f;
  turn2.sampling.seed = 77;
  EXPECT_EQ(RunAlone(engine.get(), turn2), RunAlone(reference.get(), turn2));
  WaitUntilIdle(engine.get());
  const EngineStats after = engine->stats();
  // 41 known positions of turn 1 had K/V computed: 5 full blocks (40) shared,
  // and position 40 copied from no block (turn 1's sixth block never filled).
  EXPECT_EQ(after.prefix_cache_hits - before.prefix_cache_hits, 40);

  // The same prompt again: 40 of its 47 tokens are in full blocks, 46 are
  // shared or copied, the last is computed.
  EXPECT_EQ(RunAlone(engine.get(), turn2), RunAlone(reference.get(), turn2));
  WaitUntilIdle(engine.get());
  EXPECT_EQ(engine->stats().prefix_cache_hits - after.prefix_cache_hits,
            static_cast<int64_t>(turn2.prompt_token_ids.size()) - 1);
  EXPECT_EQ(engine->stats().kv_blocks_used, 0);
}

TEST(BatchingTest, CancellingOneStreamChangesNothingInTheOthers) {
  EngineOptions options;
  options.start_paused = true;
  auto engine = MakeEngine(STREAMGEN_TINY_MODEL_DIR, options);
  ASSERT_NE(engine, nullptr);
  auto requests = MixedRequests(engine->model_info().tokenizer_vocab_size);
  requests.resize(4);
  engine->Resume();
  std::vector<std::vector<int>> alone;
  for (const auto& r : requests) alone.push_back(RunAlone(engine.get(), r));

  engine->Pause();
  std::vector<std::unique_ptr<Collector>> collectors;
  std::vector<uint64_t> ids;
  for (const auto& r : requests) {
    collectors.push_back(std::make_unique<Collector>());
    ids.push_back(*engine->Submit(r, collectors.back()->Sink()));
  }
  const int64_t steps = engine->stats().steps;
  engine->Step(4);  // all four admitted and a few tokens in
  WaitForSteps(engine.get(), steps + 4);
  engine->Cancel(ids[1]);
  engine->Resume();
  for (size_t i = 0; i < requests.size(); ++i) {
    TokenEvent last = collectors[i]->Wait();
    if (i == 1) {
      EXPECT_EQ(last.finish_reason, FinishReason::kCancelled);
      EXPECT_LT(collectors[i]->ids.size(), alone[i].size());
    } else {
      EXPECT_EQ(last.finish_reason, FinishReason::kLength);
      EXPECT_EQ(collectors[i]->ids, alone[i]) << i;
    }
  }
  WaitUntilIdle(engine.get());
  EXPECT_EQ(engine->stats().kv_blocks_used, 0);
  EXPECT_EQ(engine->stats().running, 0);
}

TEST(BatchingTest, EveryBlockComesBackAfterAMixOfEndings) {
  EngineOptions options;
  options.kv_block_size = 4;
  options.kv_cache_blocks = 64;
  options.max_batch = 6;
  auto engine = MakeEngine(STREAMGEN_TINY_MODEL_DIR, options);
  ASSERT_NE(engine, nullptr);
  auto requests = MixedRequests(engine->model_info().tokenizer_vocab_size);
  std::vector<std::unique_ptr<Collector>> collectors;
  std::vector<uint64_t> ids;
  for (auto& r : requests) {
    if (ids.size() % 4 == 3) r.stop = {"e"};  // some end on a stop string
    collectors.push_back(std::make_unique<Collector>());
    auto id = engine->Submit(r, collectors.back()->Sink());
    ASSERT_TRUE(id.ok()) << id.status();
    ids.push_back(*id);
    if (ids.size() % 5 == 0) engine->Cancel(ids[ids.size() - 3]);  // waiting or running
  }
  int cancelled = 0;
  for (auto& c : collectors) cancelled += c->Wait().finish_reason == FinishReason::kCancelled;
  EXPECT_GT(cancelled, 0);
  WaitUntilIdle(engine.get());
  EXPECT_EQ(engine->stats().kv_blocks_used, 0);
  EXPECT_EQ(engine->stats().running, 0);
  EXPECT_EQ(engine->stats().waiting, 0);
  EXPECT_EQ(engine->stats().finished, 16);
}

TEST(BatchingTest, ARequestThatCanNeverFitIsRefusedAtOnce) {
  EngineOptions options;
  options.kv_block_size = 16;
  options.kv_cache_blocks = 4;  // 64 tokens
  auto engine = MakeEngine(STREAMGEN_TINY_MODEL_DIR, options);
  ASSERT_NE(engine, nullptr);
  EXPECT_EQ(engine->model_info().kv_cache_tokens, 64);
  GenerationRequest r;
  r.prompt = "hello there";
  r.max_new_tokens = 100;
  auto id = engine->Submit(r, [](TokenEvent&&) {});
  ASSERT_FALSE(id.ok());
  EXPECT_EQ(id.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(id.status().message()), HasSubstr("can never fit in the KV cache of 64"));
  // max_new_tokens 0 takes the default (256), clamped to what the pool has left.
  r.max_new_tokens = 0;
  r.ignore_eos = true;
  Collector c;
  ASSERT_TRUE(engine->Submit(r, c.Sink()).ok());
  TokenEvent last = c.Wait();
  EXPECT_EQ(last.finish_reason, FinishReason::kLength);
  EXPECT_EQ(last.prompt_tokens + last.completion_tokens, 64);
}

}  // namespace
}  // namespace streamgen
