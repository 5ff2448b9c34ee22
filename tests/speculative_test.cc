// Speculative decoding (engine/speculative.h, issue 21 §3).
//  - units: prompt lookup against hand-worked token lists, the adaptive draft
//    length, VerifyDrafts against hand-made logits (accepted counts, draws);
//  - the scheduler: a decode with drafts plans 1 + g positions, never past
//    max_new_tokens or into reserved blocks, and RollBack frees the rest;
//  - the engine on the demo model (trained: it copies, so drafts are accepted)
//    against the same engine without speculation: greedy and seeded streams
//    token for token, alone, among others and resumed; stop ids, stop
//    strings, max_new_tokens and logprobs; and the distribution of sampled
//    tokens over many seeds (two independent sample sets, a chi-square bound).
#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "engine/engine.h"
#include "engine/model_builder.h"
#include "engine/scheduler.h"
#include "engine/speculative.h"
#include "tests/engine_test_util.h"

namespace streamgen {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// ---- Prompt lookup ----

TEST(PromptLookupTest, ProposesWhatFollowedTheLongestMatch) {
  // Last 3 tokens "7 8 9" occur at 1: the tokens after them are proposed.
  EXPECT_THAT(ProposePromptLookup({5, 7, 8, 9, 4, 6, 3, 7, 8, 9}, 3), ElementsAre(4, 6, 3));
  EXPECT_THAT(ProposePromptLookup({5, 7, 8, 9, 4, 6, 3, 7, 8, 9}, 2), ElementsAre(4, 6));
}

TEST(PromptLookupTest, FallsBackToShorterNgrams) {
  // "8 9" never occurred before as a trigram's tail with 7, but "9" did at 3.
  EXPECT_THAT(ProposePromptLookup({1, 2, 3, 9, 4, 5, 8, 9}, 2), ElementsAre(4, 5));
  // A bigram beats a unigram: "8 9" at 1 (followed by 6), "9" alone at 4 too.
  EXPECT_THAT(ProposePromptLookup({1, 8, 9, 6, 9, 5, 0, 8, 9}, 1), ElementsAre(6));
}

TEST(PromptLookupTest, PrefersTheLatestMatchWithEnoughFollowers) {
  // "2 3" at 0 (followed by 4 4) and at 4 (followed by 5 5): the latest wins.
  EXPECT_THAT(ProposePromptLookup({2, 3, 4, 4, 2, 3, 5, 5, 2, 3}, 2), ElementsAre(5, 5));
  // A looping output: the latest match of "7 7 7" has one follower, the
  // earliest has the most.
  EXPECT_THAT(ProposePromptLookup({7, 7, 7, 7, 7, 7}, 4), ElementsAre(7, 7, 7));
}

TEST(PromptLookupTest, NothingWithoutAMatch) {
  EXPECT_THAT(ProposePromptLookup({1, 2, 3, 4}, 4), IsEmpty());
  EXPECT_THAT(ProposePromptLookup({1}, 4), IsEmpty());
  EXPECT_THAT(ProposePromptLookup({}, 4), IsEmpty());
  EXPECT_THAT(ProposePromptLookup({1, 2, 1}, 0), IsEmpty());
}

TEST(DraftLengthTest, GrowsWhenAllAcceptedAndShrinksOnRejects) {
  DraftLength k;
  EXPECT_EQ(k.k(), 4);
  k.Update(4, 4);
  EXPECT_EQ(k.k(), 5);
  k.Update(5, 3);  // more than half: unchanged
  EXPECT_EQ(k.k(), 5);
  k.Update(5, 2);
  EXPECT_EQ(k.k(), 4);
  for (int i = 0; i < 20; ++i) k.Update(k.k(), 0);
  EXPECT_EQ(k.k(), kMinDraftTokens);
  for (int i = 0; i < 20; ++i) k.Update(k.k(), k.k());
  EXPECT_EQ(k.k(), kMaxDraftTokens);
  DraftLength fixed(3);
  fixed.Update(3, 0);
  fixed.Update(3, 3);
  EXPECT_EQ(fixed.k(), 3);
}

// ---- VerifyDrafts ----

// [rows, 6] logits whose argmax is best[i] in row i.
torch::Tensor PeakedLogits(const std::vector<int>& best) {
  torch::Tensor logits = torch::zeros({static_cast<int64_t>(best.size()), 6});
  for (size_t i = 0; i < best.size(); ++i) logits[i][best[i]] = 5.0;
  return logits;
}

TEST(VerifyDraftsTest, GreedyAcceptsWhileTheArgmaxMatches) {
  SamplingParams greedy;
  const SampleInput row{&greedy, nullptr, nullptr, nullptr, 0};
  VerifyResult all = VerifyDrafts(PeakedLogits({3, 1, 4, 5}), {3, 1, 4}, row, 6);
  EXPECT_EQ(all.accepted, 3);
  ASSERT_EQ(all.tokens.size(), 4u);
  EXPECT_EQ(all.tokens[3].id, 5);  // the row after the last draft
  VerifyResult some = VerifyDrafts(PeakedLogits({3, 2, 4, 5}), {3, 1, 4}, row, 6);
  EXPECT_EQ(some.accepted, 1);
  ASSERT_EQ(some.tokens.size(), 2u);
  EXPECT_EQ(some.tokens[0].id, 3);
  EXPECT_EQ(some.tokens[1].id, 2);  // the target's token where the draft was wrong
  VerifyResult none = VerifyDrafts(PeakedLogits({0, 1}), {3}, row, 6);
  EXPECT_EQ(none.accepted, 0);
  ASSERT_EQ(none.tokens.size(), 1u);
  EXPECT_EQ(none.tokens[0].id, 0);
  // Each token's logprob is its own row's.
  const float lp = torch::log_softmax(PeakedLogits({3})[0], 0)[3].item<float>();
  EXPECT_NEAR(all.tokens[0].logprob, lp, 1e-6);
}

TEST(VerifyDraftsTest, PenaltiesSeeTheAcceptedDrafts) {
  // Without the penalty both rows pick 3; with a strong repetition penalty the
  // second row must not repeat the accepted 3 (its logit 5 -> 5 / 10 < 1).
  torch::Tensor logits = torch::zeros({2, 6});
  logits[0][3] = 5.0;
  logits[1][3] = 5.0;
  logits[1][4] = 1.0;
  SamplingParams p;
  p.repetition_penalty = 10.0f;
  const SampleInput row{&p, nullptr, nullptr, nullptr, 0};
  VerifyResult r = VerifyDrafts(logits, {3}, row, 6);
  EXPECT_EQ(r.accepted, 1);
  ASSERT_EQ(r.tokens.size(), 2u);
  EXPECT_EQ(r.tokens[1].id, 4);
}

TEST(VerifyDraftsTest, SampledRowsDrawOncePerEmittedToken) {
  // Every row is a near point mass on 2: drafts of 2 are accepted, a draft of
  // 5 is rejected. The emitted tokens must have used exactly as many draws as
  // there are tokens: the rng then continues as a fresh one advanced by that.
  torch::Tensor logits = torch::full({4, 6}, -30.0);
  logits.select(1, 2).fill_(10.0);
  SamplingParams p;
  p.temperature = 1.0f;
  SequenceRng rng(99);
  const SampleInput row{&p, nullptr, nullptr, &rng, 0};
  VerifyResult r = VerifyDrafts(logits, {2, 5, 2}, row, 6);
  EXPECT_EQ(r.accepted, 1);
  ASSERT_EQ(r.tokens.size(), 2u);
  SequenceRng reference(99);
  reference.NextUniform();
  reference.NextUniform();
  EXPECT_EQ(rng.NextUniform(), reference.NextUniform());
}

// The rejection scheme keeps the target distribution. For logits l over 6
// tokens, p = exp(l) / sum exp(l) worked out here in double; the draft is
// token 0 (a point mass, as prompt lookup's), then token 5. Over 20,000 seeds:
// the first emitted token's counts against 20,000 p (chi-square, 5 degrees
// of freedom, bound 20.52: the 0.999 quantile, so a correct scheme fails one
// run in a thousand, and this one is deterministic); the acceptance rate of
// the draft against p(0) (within 4 standard deviations); and, given an
// accepted draft, the second token's counts against the second row's p.
TEST(VerifyDraftsTest, RejectionSamplingKeepsTheTargetDistribution) {
  const std::vector<double> l0 = {1.0, 2.0, 0.5, 0.0, -1.0, 1.5};
  const std::vector<double> l1 = {0.0, 0.3, 2.0, 0.0, 1.0, 1.0};
  auto softmax = [](const std::vector<double>& l) {
    double z = 0;
    for (double x : l) z += std::exp(x);
    std::vector<double> p;
    for (double x : l) p.push_back(std::exp(x) / z);
    return p;
  };
  const std::vector<double> p0 = softmax(l0), p1 = softmax(l1);
  torch::Tensor logits = torch::empty({3, 6});
  for (int i = 0; i < 6; ++i) {
    logits[0][i] = l0[i];
    logits[1][i] = l1[i];
    logits[2][i] = 0.0;
  }
  SamplingParams p;
  p.temperature = 1.0f;
  constexpr int kSeeds = 20000;
  std::vector<int> first(6, 0), second(6, 0);
  int accepted = 0;
  for (int seed = 0; seed < kSeeds; ++seed) {
    SequenceRng rng(seed);
    const SampleInput row{&p, nullptr, nullptr, &rng, 0};
    VerifyResult r = VerifyDrafts(logits, {0, 5}, row, 6);
    first[r.tokens[0].id]++;
    if (r.accepted >= 1) {
      accepted++;
      second[r.tokens[1].id]++;
    }
  }
  auto chi2 = [](const std::vector<int>& counts, const std::vector<double>& p) {
    int n = 0;
    for (int c : counts) n += c;
    double x = 0;
    for (size_t i = 0; i < p.size(); ++i) x += std::pow(counts[i] - n * p[i], 2) / (n * p[i]);
    return x;
  };
  EXPECT_LT(chi2(first, p0), 20.52);
  EXPECT_LT(chi2(second, p1), 20.52);
  const double sd = std::sqrt(kSeeds * p0[0] * (1 - p0[0]));
  EXPECT_NEAR(accepted, kSeeds * p0[0], 4 * sd);
  // And the chi-square is not blind: against a distribution a few points off,
  // it fails.
  std::vector<double> off = p0;
  off[0] += 0.02;
  off[1] -= 0.02;
  EXPECT_GT(chi2(first, off), 20.52);
}

TEST(VerifyDraftsTest, RefusesLogitsOfTheWrongShape) {
  SamplingParams greedy;
  const SampleInput row{&greedy, nullptr, nullptr, nullptr, 0};
  try {
    VerifyDrafts(torch::zeros({2, 6}), {1, 2}, row, 6);
    FAIL() << "no error";
  } catch (const c10::Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("2 drafts (expected 3 rows)"));
  }
}

// ---- The scheduler ----

SchedulerOptions SmallPool() {
  SchedulerOptions o;
  o.block_size = 4;
  o.num_blocks = 8;
  o.max_prefill_tokens = 64;
  return o;
}

TEST(SchedulerSpeculationTest, PlansDraftPositionsAndRollsThemBack) {
  Scheduler s(SmallPool());
  ASSERT_TRUE(s.Add(1, 5, 10).ok());
  SchedulerStep prefill = s.Schedule();
  ASSERT_EQ(prefill.prefills.size(), 1u);
  s.OnTokenAppended(1, 7);  // known 6, cached 5
  s.ProposeDraftTokens(1, 4);
  SchedulerStep step = s.Schedule();
  ASSERT_THAT(step.decodes, ElementsAre(1u));
  ASSERT_THAT(step.decode_drafts, ElementsAre(4));
  EXPECT_EQ(s.CachedTokens(1), 10);             // positions 5 .. 9
  EXPECT_EQ(s.num_used_blocks(), 3);            // ceil(10 / 4)
  s.OnTokenAppended(1, 7);                         // 1 draft accepted + the next token
  s.OnTokenAppended(1, 7);
  s.RollBack(1);
  EXPECT_EQ(s.KnownTokens(1), 8);
  EXPECT_EQ(s.CachedTokens(1), 7);
  EXPECT_EQ(s.num_used_blocks(), 2);            // ceil(7 / 4): the third block is free again
  // The next Schedule plans a plain decode: drafts are per Schedule.
  SchedulerStep next = s.Schedule();
  ASSERT_THAT(next.decodes, ElementsAre(1u));
  EXPECT_THAT(next.decode_drafts, ElementsAre(0));
  EXPECT_EQ(s.CachedTokens(1), 8);
}

TEST(SchedulerSpeculationTest, NeverPlansPastMaxNewTokens) {
  Scheduler s(SmallPool());
  ASSERT_TRUE(s.Add(1, 5, 3).ok());
  s.Schedule();
  s.OnTokenAppended(1, 7);  // 1 of 3 generated: 2 more at most = 1 decode + 1 draft
  s.ProposeDraftTokens(1, 8);
  SchedulerStep step = s.Schedule();
  EXPECT_THAT(step.decode_drafts, ElementsAre(1));
  EXPECT_EQ(s.CachedTokens(1), 7);
}

TEST(SchedulerSpeculationTest, DraftsTakeOnlyBlocksNoDecodeNeeds) {
  SchedulerOptions o = SmallPool();
  o.num_blocks = 6;
  Scheduler s(o);
  ASSERT_TRUE(s.Add(1, 7, 10).ok());
  ASSERT_TRUE(s.Add(2, 8, 10).ok());
  ASSERT_EQ(s.Schedule().prefills.size(), 2u);  // 2 blocks each, 2 free
  s.OnTokenAppended(1, 7);                          // known 8, cached 7
  s.OnTokenAppended(2, 7);                          // known 9, cached 8: its decode needs a block
  s.ProposeDraftTokens(1, 8);
  SchedulerStep step = s.Schedule();
  EXPECT_THAT(step.preempted, IsEmpty());
  ASSERT_THAT(step.decodes, ElementsAre(1u, 2u));
  // The older sequence's drafts get the one block left: positions 8 .. 11.
  EXPECT_THAT(step.decode_drafts, ElementsAre(4, 0));
  EXPECT_EQ(s.num_free_blocks(), 0);
  s.OnTokenAppended(1, 7);
  s.RollBack(1);
  s.OnTokenAppended(2, 7);
  EXPECT_EQ(s.CachedTokens(1), 8);
  EXPECT_EQ(s.num_free_blocks(), 1);
}

// ---- The engine ----

// A prompt that the demo model continues in a loop ("He's a good thing.
// He's a good thing. ..."), which prompt lookup drafts: 21 of 31 drafts
// accepted over 40 greedy tokens. (The 3M-parameter demo model copies little
// from its prompt; it repeats its own output.)
std::vector<int> CopyPrompt(Engine* engine) {
  return engine->Tokenize("he said , `` i am going home '' . he said , `` i am going home '' . "
                          "he said ,",
                          /*add_special=*/true);
}

std::unique_ptr<Engine> DemoEngine(bool speculate, int max_batch = 16, int k = 0) {
  EngineOptions options;
  options.max_batch = max_batch;
  options.max_prefill_tokens = 32;
  if (speculate) {
    options.speculative = "prompt-lookup";
    options.num_speculative_tokens = k;
    options.speculative_max_batch = 16;  // speculate in batched tests too
  }
  return MakeEngine(STREAMGEN_DEMO_MODEL_DIR, options);
}

// The loop publishes its gauges at the end of the iteration that sent the
// last events: wait (bounded) until it has gone idle.
void WaitUntilIdle(Engine* engine) {
  for (int i = 0; i < 10000; ++i) {
    const EngineStats s = engine->stats();
    if (s.running == 0 && s.waiting == 0 && s.kv_blocks_used == 0) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

struct Outcome {
  std::vector<int> ids;
  std::vector<float> logprobs;
  std::vector<std::vector<TokenLogprob>> tops;
  std::string text;
  FinishReason reason = FinishReason::kNone;
  int events = 0;
};

Outcome Generate(Engine* engine, const GenerationRequest& r) {
  Outcome run;
  std::mutex mu;
  std::promise<void> done;
  auto id = engine->Submit(r, [&](TokenEvent&& e) {
    std::lock_guard<std::mutex> lock(mu);
    run.events++;
    for (const auto& t : e.tokens) {
      run.ids.push_back(t.id);
      run.logprobs.push_back(t.logprob);
      run.tops.push_back(t.top_logprobs);
    }
    run.text += e.text;
    if (e.finish_reason != FinishReason::kNone) {
      run.reason = e.finish_reason;
      done.set_value();
    }
  });
  EXPECT_TRUE(id.ok()) << id.status();
  if (id.ok()) done.get_future().wait();
  std::lock_guard<std::mutex> lock(mu);
  return run;
}

GenerationRequest CopyRequest(Engine* engine, int max_new_tokens = 40) {
  GenerationRequest r;
  r.prompt_token_ids = CopyPrompt(engine);
  r.max_new_tokens = max_new_tokens;
  r.ignore_eos = true;
  return r;
}

TEST(SpeculativeEngineTest, RefusesUnknownModesWithAClearMessage) {
  EngineOptions options;
  options.model_dir = STREAMGEN_DEMO_MODEL_DIR;
  options.speculative = "medusa";
  auto engine = Engine::Create(options);
  ASSERT_FALSE(engine.ok());
  EXPECT_THAT(engine.status().message(),
              HasSubstr("speculative: must be \"none\", \"prompt-lookup\" or \"draft\", got \"medusa\""));
  options.speculative = "prompt-lookup";
  options.num_speculative_tokens = 9;
  engine = Engine::Create(options);
  ASSERT_FALSE(engine.ok());
  EXPECT_THAT(engine.status().message(), HasSubstr("num_speculative_tokens: must be in [0, 8], got 9"));
}

TEST(SpeculativeEngineTest, GreedyOutputIsTheSameTokenForToken) {
  auto plain = DemoEngine(false);
  auto spec = DemoEngine(true);
  ASSERT_NE(plain, nullptr);
  ASSERT_NE(spec, nullptr);
  GenerationRequest r = CopyRequest(plain.get(), 60);
  r.top_logprobs = 3;
  const Outcome want = Generate(plain.get(), r);
  const Outcome got = Generate(spec.get(), r);
  EXPECT_EQ(got.ids, want.ids);
  EXPECT_EQ(got.text, want.text);
  EXPECT_EQ(got.reason, FinishReason::kLength);
  EXPECT_EQ(got.events, want.events);  // one event per token, as without speculation
  // Every token's logprobs come from its own row.
  ASSERT_EQ(got.logprobs.size(), want.logprobs.size());
  for (size_t i = 0; i < got.logprobs.size(); ++i) {
    EXPECT_NEAR(got.logprobs[i], want.logprobs[i], 1e-4) << i;
    ASSERT_EQ(got.tops[i].size(), 3u);
    for (size_t j = 0; j < 3; ++j) {
      EXPECT_EQ(got.tops[i][j].id, want.tops[i][j].id) << i;
      EXPECT_NEAR(got.tops[i][j].logprob, want.tops[i][j].logprob, 1e-4) << i;
    }
  }
  // Speculation did happen, and paid: fewer steps than tokens.
  WaitUntilIdle(spec.get());
  const EngineStats stats = spec->stats();
  EXPECT_GT(stats.draft_tokens, 0);
  EXPECT_GT(stats.accepted_draft_tokens, 10);
  EXPECT_LT(stats.steps, plain->stats().steps);
  EXPECT_EQ(stats.kv_blocks_used, 0);
}

TEST(SpeculativeEngineTest, FixedDraftLengthGivesTheSameOutput) {
  auto plain = DemoEngine(false);
  ASSERT_NE(plain, nullptr);
  const GenerationRequest r = CopyRequest(plain.get(), 50);
  const Outcome want = Generate(plain.get(), r);
  for (int k : {1, 3, 8}) {
    auto spec = DemoEngine(true, 16, k);
    ASSERT_NE(spec, nullptr);
    EXPECT_EQ(Generate(spec.get(), r).ids, want.ids) << "k = " << k;
    EXPECT_GT(spec->stats().accepted_draft_tokens, 0) << "k = " << k;
  }
}

// Greedy and seeded requests (penalties on some), all submitted at once with
// chunked prefill: each equals its own non-speculative run alone.
TEST(SpeculativeEngineTest, BatchedOutputsEqualPlainOutputsAlone) {
  auto plain = DemoEngine(false);
  auto spec = DemoEngine(true);
  ASSERT_NE(plain, nullptr);
  ASSERT_NE(spec, nullptr);
  const std::vector<std::string> texts = {
      "the old man walked to the river . the old man walked to the",
      "she said that she would come back . she said that",
      "it was a good day for the city and a good day for the",
      "the house was quiet",
      "in the morning the men went out to the fields . in the morning the men",
      "he looked at her and said nothing . he looked at her and",
  };
  std::vector<GenerationRequest> requests;
  for (size_t i = 0; i < texts.size() * 2; ++i) {
    GenerationRequest r;
    r.prompt_token_ids = plain->Tokenize(texts[i % texts.size()], true);
    r.max_new_tokens = 20 + static_cast<int>(i) % 7;
    r.ignore_eos = true;
    if (i >= texts.size()) {  // the second half sampled, seeded
      r.sampling.temperature = 0.7f;
      r.sampling.top_k = 20;
      r.sampling.seed = 31 + i;
      if (i % 2 == 0) r.sampling.repetition_penalty = 1.2f;
      if (i % 3 == 0) r.sampling.frequency_penalty = 0.5f;
    }
    requests.push_back(std::move(r));
  }
  std::vector<std::vector<int>> want;
  for (const auto& r : requests) want.push_back(Generate(plain.get(), r).ids);
  std::vector<std::unique_ptr<Collector>> collectors;
  for (const auto& r : requests) {
    collectors.push_back(std::make_unique<Collector>());
    ASSERT_TRUE(spec->Submit(r, collectors.back()->Sink()).ok());
  }
  for (size_t i = 0; i < requests.size(); ++i) {
    collectors[i]->Wait();
    EXPECT_EQ(collectors[i]->ids, want[i]) << "request " << i;
  }
  EXPECT_GT(spec->stats().accepted_draft_tokens, 0);
}

TEST(SpeculativeEngineTest, ResumedStreamsContinueTheSameWay) {
  auto plain = DemoEngine(false);
  auto spec = DemoEngine(true);
  ASSERT_NE(plain, nullptr);
  ASSERT_NE(spec, nullptr);
  for (float temperature : {0.0f, 0.8f}) {
    GenerationRequest r = CopyRequest(plain.get(), 40);
    r.sampling.temperature = temperature;
    r.sampling.seed = 7;
    const Outcome want = Generate(plain.get(), r);
    ASSERT_EQ(want.ids.size(), 40u);
    for (size_t cut : {1u, 9u, 23u}) {
      GenerationRequest resumed = r;
      resumed.resume_token_ids.assign(want.ids.begin(), want.ids.begin() + cut);
      const Outcome got = Generate(spec.get(), resumed);
      // The same resumed request without speculation (a resumed stream's
      // prefill rounds differently from the decodes it replaces: compare
      // like with like).
      EXPECT_EQ(got.ids, Generate(plain.get(), resumed).ids)
          << "temperature " << temperature << ", cut after " << cut;
      if (temperature == 0.0f) {
        EXPECT_EQ(got.ids, std::vector<int>(want.ids.begin() + cut, want.ids.end())) << cut;
      }
    }
  }
  EXPECT_GT(spec->stats().accepted_draft_tokens, 0);
}

// A stop id, a stop string and max_new_tokens that fall inside a run of
// accepted drafts end the stream exactly where a plain decode ends it.
TEST(SpeculativeEngineTest, StopsInsideAcceptedDraftsEndWhereThePlainStreamEnds) {
  auto plain = DemoEngine(false);
  auto spec = DemoEngine(true, 16, 8);
  ASSERT_NE(plain, nullptr);
  ASSERT_NE(spec, nullptr);
  const GenerationRequest base = CopyRequest(plain.get(), 60);
  const Outcome full = Generate(plain.get(), base);
  ASSERT_GE(full.ids.size(), 30u);
  for (int max_new : {2, 5, 13, 21}) {  // the max tokens always land mid-draft for some k
    GenerationRequest r = base;
    r.max_new_tokens = max_new;
    const Outcome got = Generate(spec.get(), r);
    EXPECT_EQ(got.ids, std::vector<int>(full.ids.begin(), full.ids.begin() + max_new)) << max_new;
    EXPECT_EQ(got.reason, FinishReason::kLength);
  }
  // A stop token id that first appears at index 12 or later of the output.
  size_t at = 12;
  while (at < full.ids.size() &&
         std::find(full.ids.begin(), full.ids.begin() + at, full.ids[at]) !=
             full.ids.begin() + at) {
    ++at;
  }
  if (at < full.ids.size()) {
    GenerationRequest r = base;
    r.stop_token_ids = {full.ids[at]};
    const Outcome want = Generate(plain.get(), r);
    const Outcome got = Generate(spec.get(), r);
    EXPECT_EQ(got.ids, want.ids);
    EXPECT_EQ(got.ids.size(), at + 1);
    EXPECT_EQ(got.reason, FinishReason::kStop);
  }
  // A stop string: the text of tokens 15..16 of the output.
  GenerationRequest r = base;
  const std::string stop = spec->Detokenize({full.ids[15], full.ids[16]});
  if (!stop.empty() && stop.find_first_not_of(' ') != std::string::npos) {
    r.stop = {stop};
    const Outcome want = Generate(plain.get(), r);
    const Outcome got = Generate(spec.get(), r);
    EXPECT_EQ(got.ids, want.ids);
    EXPECT_EQ(got.text, want.text);
    EXPECT_EQ(got.reason, FinishReason::kStop);
  }
  EXPECT_GT(spec->stats().accepted_draft_tokens, 0);
  WaitUntilIdle(spec.get());
  EXPECT_EQ(spec->stats().kv_blocks_used, 0);
}

// Seeded sampled streams over the looping prompt, where drafts are verified:
// each seed's stream equals the one without speculation (the same draws),
// but for a token whose uniform falls within rounding of a CDF boundary (a
// verify chunk's arithmetic differs from a decode's in the last bits; none
// on the machines measured, at most one seed of 12 allowed).
TEST(SpeculativeEngineTest, SeededSampledStreamsAreTheSame) {
  auto plain = DemoEngine(false);
  auto spec = DemoEngine(true);
  ASSERT_NE(plain, nullptr);
  ASSERT_NE(spec, nullptr);
  GenerationRequest r = CopyRequest(plain.get(), 40);
  r.sampling.temperature = 0.5f;
  r.sampling.top_p = 0.9f;
  int same = 0;
  for (int seed = 0; seed < 12; ++seed) {
    r.sampling.seed = seed;
    same += Generate(spec.get(), r).ids == Generate(plain.get(), r).ids;
  }
  EXPECT_GE(same, 11);
  EXPECT_GT(spec->stats().accepted_draft_tokens, 30);
}

// ---- A draft model ----

// The demo model as its own draft: the same tokenizer, and its greedy drafts
// are the target's own greedy choices, so nearly every draft is accepted and
// the output must be the plain one, greedy and seeded, alone and batched.
std::unique_ptr<Engine> DraftEngine(int k = 0, float p_min = 0) {
  EngineOptions options;
  options.max_prefill_tokens = 32;
  options.speculative = "draft";
  options.draft_model = STREAMGEN_DEMO_MODEL_DIR;
  options.num_speculative_tokens = k;
  options.draft_p_min = p_min;
  options.speculative_max_batch = 16;
  return MakeEngine(STREAMGEN_DEMO_MODEL_DIR, options);
}

TEST(DraftModelTest, OutputIsThePlainOutput) {
  auto plain = DemoEngine(false);
  auto spec = DraftEngine();
  ASSERT_NE(plain, nullptr);
  ASSERT_NE(spec, nullptr);
  std::vector<GenerationRequest> requests;
  for (const char* text : {"The committee said that the new plan", "In the morning the men",
                           "She had never seen the city so"}) {
    GenerationRequest r;
    r.prompt_token_ids = plain->Tokenize(text, true);
    r.max_new_tokens = 30;
    r.ignore_eos = true;
    r.top_logprobs = 2;
    requests.push_back(r);
    r.sampling.temperature = 0.8f;
    r.sampling.seed = 5;
    requests.push_back(r);
  }
  std::vector<Outcome> want;
  for (const auto& r : requests) want.push_back(Generate(plain.get(), r));
  // The greedy requests (even indices) first: nearly all their drafts pass.
  for (size_t i = 0; i < requests.size(); i += 2) {
    EXPECT_EQ(Generate(spec.get(), requests[i]).ids, want[i].ids) << "request " << i;
  }
  const EngineStats greedy = spec->stats();
  EXPECT_GT(greedy.draft_tokens, 30);
  EXPECT_GT(greedy.accepted_draft_tokens, greedy.draft_tokens * 9 / 10);
  for (size_t i = 0; i < requests.size(); ++i) {
    const Outcome got = Generate(spec.get(), requests[i]);
    EXPECT_EQ(got.ids, want[i].ids) << "request " << i;
    ASSERT_EQ(got.logprobs.size(), want[i].logprobs.size());
    for (size_t j = 0; j < got.logprobs.size(); ++j) {
      EXPECT_NEAR(got.logprobs[j], want[i].logprobs[j], 1e-4) << i << ", token " << j;
    }
  }
  const EngineStats alone = spec->stats();
  // All at once.
  std::vector<std::unique_ptr<Collector>> collectors;
  for (const auto& r : requests) {
    collectors.push_back(std::make_unique<Collector>());
    ASSERT_TRUE(spec->Submit(r, collectors.back()->Sink()).ok());
  }
  for (size_t i = 0; i < requests.size(); ++i) {
    collectors[i]->Wait();
    EXPECT_EQ(collectors[i]->ids, want[i].ids) << "batched request " << i;
  }
  EXPECT_GT(spec->stats().accepted_draft_tokens, alone.accepted_draft_tokens);
  WaitUntilIdle(spec.get());
  EXPECT_EQ(spec->stats().kv_blocks_used, 0);
}

// The draft's own cache: drafts proposed after a rejection (its cache then
// holds positions whose tokens the sequence does not have) equal those of a
// fresh draft model fed the sequence from scratch.
TEST(DraftModelTest, RejectedPositionsAreDroppedFromItsCache) {
  EngineOptions options;
  options.model_dir = STREAMGEN_DEMO_MODEL_DIR;
  ModelOptions model_options;  // float32 on the CPU
  auto target = LlamaModel::Load(STREAMGEN_DEMO_MODEL_DIR, model_options);
  ASSERT_TRUE(target.ok()) << target.status();
  auto tokenizer = LoadModelTokenizer(options, (*target)->config());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  auto load = [&] {
    auto d = DraftModel::Load(STREAMGEN_DEMO_MODEL_DIR, model_options, **tokenizer,
                              (*target)->config(), 64, 4);
    EXPECT_TRUE(d.ok()) << d.status();
    return d.ok() ? std::move(*d) : nullptr;
  };
  auto warm = load();
  ASSERT_NE(warm, nullptr);
  const int vocab = (*tokenizer)->piece_count();
  std::vector<int> tokens = (*tokenizer)->Encode("In the morning the men went out");
  tokens.insert(tokens.begin(), 1);
  std::vector<int> drafts;
  warm->Propose({DraftModel::Request{7, &tokens, 5, &drafts}}, vocab);
  ASSERT_EQ(drafts.size(), 5u);
  // The target took 2 drafts, then chose another token than the third.
  tokens.insert(tokens.end(), drafts.begin(), drafts.begin() + 2);
  tokens.push_back(drafts[2] == 100 ? 101 : 100);
  std::vector<int> again;
  warm->Propose({DraftModel::Request{7, &tokens, 4, &again}}, vocab);
  auto fresh = load();
  ASSERT_NE(fresh, nullptr);
  std::vector<int> want;
  fresh->Propose({DraftModel::Request{7, &tokens, 4, &want}}, vocab);
  EXPECT_EQ(again, want);
  ASSERT_EQ(want.size(), 4u);
  // Removing the sequence gives every block back.
  warm->Remove(7);
  EXPECT_EQ(warm->num_free_blocks(), 64);
}

// The confidence stop (draft_p_min): the drafts proposed are the longest
// prefix of the unstopped drafts whose probabilities under the draft are all
// at least p_min. The probabilities come from one forward pass of the whole
// sequence (prompt + the 8 unstopped drafts, a row per position, a fresh
// cache), not from the draft's incremental steps.
TEST(DraftModelTest, ConfidenceStopProposesThePrefixThatReachesPMin) {
  EngineOptions options;
  options.model_dir = STREAMGEN_DEMO_MODEL_DIR;
  ModelOptions model_options;  // float32 on the CPU
  auto target = LlamaModel::Load(STREAMGEN_DEMO_MODEL_DIR, model_options);
  ASSERT_TRUE(target.ok()) << target.status();
  auto tokenizer = LoadModelTokenizer(options, (*target)->config());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  auto draft = DraftModel::Load(STREAMGEN_DEMO_MODEL_DIR, model_options, **tokenizer,
                                (*target)->config(), 64, 4);
  ASSERT_TRUE(draft.ok()) << draft.status();
  const int vocab = (*tokenizer)->piece_count();
  std::vector<int> tokens = (*tokenizer)->Encode("The committee said that the new plan");
  tokens.insert(tokens.begin(), 1);
  std::vector<int> all;
  (*draft)->Propose({DraftModel::Request{3, &tokens, 8, &all}}, vocab, 0.0f);
  ASSERT_EQ(all.size(), 8u);

  // The reference: p[i] = the probability of draft i after tokens + drafts < i.
  std::vector<int> sequence = tokens;
  sequence.insert(sequence.end(), all.begin(), all.end());
  KvPool pool = (*target)->NewKvPool(16, 4);
  KvCacheManager blocks(16, 4, /*prefix_caching=*/false);
  blocks.AddSequence(1, static_cast<int>(sequence.size()), {});
  blocks.AllocateSlots(1, static_cast<int64_t>(sequence.size()));
  const torch::Tensor probs =
      (*target)
          ->Step({SeqChunk{sequence, 0, &blocks.BlockTable(1), /*all_logits=*/true}}, &pool)
          .narrow(1, 0, vocab)
          .softmax(1);  // [sequence, vocab]
  std::vector<float> p;
  for (size_t i = 0; i < all.size(); ++i) {
    const torch::Tensor row = probs[static_cast<int64_t>(tokens.size() - 1 + i)];
    EXPECT_EQ(row.argmax().item<int64_t>(), all[i]) << "draft " << i;
    p.push_back(row.max().item<float>());
  }
  // Thresholds just above each p[i] (and 0 and 1): each stops at the first
  // position below it. Thresholds within rounding of some p are skipped.
  std::vector<float> thresholds = {0.0f, 1.0f};
  for (float q : p) thresholds.push_back(q + 1e-3f);
  int partial = 0;  // thresholds that stopped mid-draft
  for (float p_min : thresholds) {
    if (std::any_of(p.begin(), p.end(), [&](float q) { return std::abs(q - p_min) < 5e-4f; })) {
      continue;
    }
    size_t want = 0;
    while (want < p.size() && p[want] >= p_min) ++want;
    std::vector<int> got;
    (*draft)->Propose({DraftModel::Request{3, &tokens, 8, &got}}, vocab, p_min);
    EXPECT_EQ(got, std::vector<int>(all.begin(), all.begin() + want)) << "p_min " << p_min;
    partial += want > 0 && want < p.size();
  }
  EXPECT_GE(partial, 2) << "the prompt's draft probabilities do not exercise the stop";
}

// A draft model with the confidence stop: the output is still the plain
// output, greedy and seeded, alone, batched and resumed; and the stop acted
// (steps with fewer drafts than k).
TEST(DraftModelTest, ConfidenceStopKeepsThePlainOutput) {
  auto plain = DemoEngine(false);
  auto spec = DraftEngine(/*k=*/4, /*p_min=*/0.15f);
  ASSERT_NE(plain, nullptr);
  ASSERT_NE(spec, nullptr);
  std::vector<GenerationRequest> requests;
  for (const char* text : {"The committee said that the new plan", "In the morning the men",
                           "She had never seen the city so", "It was a good year for the"}) {
    GenerationRequest r;
    r.prompt_token_ids = plain->Tokenize(text, true);
    r.max_new_tokens = 32;
    r.ignore_eos = true;
    requests.push_back(r);
    r.sampling.temperature = 0.8f;
    r.sampling.seed = 11;
    requests.push_back(r);
  }
  std::vector<std::vector<int>> want;
  for (const auto& r : requests) want.push_back(Generate(plain.get(), r).ids);
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(Generate(spec.get(), requests[i]).ids, want[i]) << "request " << i;
  }
  WaitUntilIdle(spec.get());
  const EngineStats alone = spec->stats();
  EXPECT_GT(alone.accepted_draft_tokens, 20);
  // Positions counted: every draft once, every accepted one once.
  int64_t drafted = 0, accepted = 0;
  for (int i = 0; i < EngineStats::kDraftPositions; ++i) {
    drafted += alone.drafted_at[i];
    accepted += alone.accepted_at[i];
    EXPECT_LE(alone.accepted_at[i], alone.reached_at[i]) << i;
    EXPECT_LE(alone.reached_at[i], alone.drafted_at[i]) << i;
  }
  EXPECT_EQ(drafted, alone.draft_tokens);
  EXPECT_EQ(accepted, alone.accepted_draft_tokens);
  EXPECT_EQ(alone.drafted_at[0], alone.verify_steps);
  // The stop acted: many steps drafted fewer than k = 4 (max_new_tokens cuts
  // only the last steps of each request).
  EXPECT_LT(alone.drafted_at[3], alone.drafted_at[0] / 2);
  EXPECT_GT(alone.drafted_at[3], 0);
  // All at once.
  std::vector<std::unique_ptr<Collector>> collectors;
  for (const auto& r : requests) {
    collectors.push_back(std::make_unique<Collector>());
    ASSERT_TRUE(spec->Submit(r, collectors.back()->Sink()).ok());
  }
  for (size_t i = 0; i < requests.size(); ++i) {
    collectors[i]->Wait();
    EXPECT_EQ(collectors[i]->ids, want[i]) << "batched request " << i;
  }
  // Resumed, greedy and seeded: the rest of the plain stream.
  for (size_t i : {0u, 1u}) {
    for (size_t cut : {1u, 12u}) {
      GenerationRequest resumed = requests[i];
      resumed.resume_token_ids.assign(want[i].begin(), want[i].begin() + cut);
      EXPECT_EQ(Generate(spec.get(), resumed).ids, Generate(plain.get(), resumed).ids)
          << "request " << i << ", cut after " << cut;
    }
  }
  EXPECT_GT(spec->stats().accepted_draft_tokens, alone.accepted_draft_tokens);
  WaitUntilIdle(spec.get());
  EXPECT_EQ(spec->stats().kv_blocks_used, 0);
}

TEST(DraftModelTest, RefusesAPMinOutsideZeroToOne) {
  EngineOptions options;
  options.model_dir = STREAMGEN_DEMO_MODEL_DIR;
  options.speculative = "draft";
  options.draft_model = STREAMGEN_DEMO_MODEL_DIR;
  for (float p_min : {-0.1f, 1.5f, std::nanf("")}) {
    options.draft_p_min = p_min;
    auto engine = Engine::Create(options);
    ASSERT_FALSE(engine.ok()) << p_min;
    EXPECT_THAT(engine.status().message(), HasSubstr("draft_p_min: must be in [0, 1], got "));
  }
  options.draft_p_min = 1.5f;
  EXPECT_THAT(Engine::Create(options).status().message(),
              HasSubstr("draft_p_min: must be in [0, 1], got 1.5"));
}

TEST(DraftModelTest, RefusesADraftWithAnotherTokenizer) {
  EngineOptions options;
  options.model_dir = STREAMGEN_DEMO_MODEL_DIR;
  options.speculative = "draft";
  options.draft_model = STREAMGEN_TINY_MODEL_DIR;
  auto engine = Engine::Create(options);
  ASSERT_FALSE(engine.ok());
  EXPECT_THAT(engine.status().message(), HasSubstr("draft model " STREAMGEN_TINY_MODEL_DIR ": "));
  EXPECT_THAT(engine.status().message(),
              HasSubstr("a draft must share the target's tokenizer"));
  options.draft_model = "";
  engine = Engine::Create(options);
  ASSERT_FALSE(engine.ok());
  EXPECT_THAT(engine.status().message(),
              HasSubstr("draft_model: a draft model directory goes with speculative \"draft\""));
  options.speculative = "prompt-lookup";
  options.draft_model = STREAMGEN_DEMO_MODEL_DIR;
  EXPECT_FALSE(Engine::Create(options).ok());
}

TEST(SpeculativeEngineTest, StepsAsideWhenTheBatchIsLarge) {
  EngineOptions options;
  options.speculative = "prompt-lookup";
  options.speculative_max_batch = 1;
  options.start_paused = true;
  auto spec = MakeEngine(STREAMGEN_DEMO_MODEL_DIR, options);
  ASSERT_NE(spec, nullptr);
  std::vector<std::unique_ptr<Collector>> collectors;
  for (int i = 0; i < 2; ++i) {
    collectors.push_back(std::make_unique<Collector>());
    GenerationRequest r = CopyRequest(spec.get(), 4);
    ASSERT_TRUE(spec->Submit(r, collectors.back()->Sink()).ok());
  }
  // Both prefill in one step, then decode together: two decoders > 1.
  spec->Resume();
  for (auto& c : collectors) c->Wait();
  EXPECT_EQ(spec->stats().draft_tokens, 0);
  // Alone, the same request speculates.
  Generate(spec.get(), CopyRequest(spec.get(), 8));
  EXPECT_GT(spec->stats().draft_tokens, 0);
}

}  // namespace
}  // namespace streamgen
