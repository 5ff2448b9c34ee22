// The sampler against hand-computed distributions.
#include "engine/sampler.h"
#include "engine/request_validation.h"

#include <gtest/gtest.h>
#include <torch/types.h>
#include <torch/cuda.h>
#include <torch/utils.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

namespace streamgen {
namespace {

torch::Tensor Row(std::vector<float> values) { return torch::tensor(values, torch::kFloat); }

std::vector<float> ToVector(const torch::Tensor& t) {
  torch::Tensor c = t.to(torch::kFloat).contiguous().cpu();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

// Softmax by the formula, for expectations.
std::vector<double> HandSoftmax(const std::vector<double>& x) {
  double total = 0;
  for (double v : x) total += std::exp(v);
  std::vector<double> p;
  for (double v : x) p.push_back(std::exp(v) / total);
  return p;
}

void ExpectProbs(const torch::Tensor& probs, const std::vector<double>& expected) {
  std::vector<float> got = ToVector(probs);
  ASSERT_EQ(got.size(), expected.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_NEAR(got[i], expected[i], 1e-6) << "id " << i;
  }
}

torch::Tensor Probs(std::vector<float> logits, const SamplingParams& params, int valid_vocab = -1,
                    std::vector<int> prompt = {}, std::vector<int> output = {}) {
  if (valid_vocab < 0) valid_vocab = static_cast<int>(logits.size());
  return ComputeProbs(Row(logits), params, prompt, output, valid_vocab);
}

// logits whose softmax is exactly `probs` (up to rounding).
std::vector<float> LogOf(std::vector<double> probs) {
  std::vector<float> out;
  for (double p : probs) out.push_back(static_cast<float>(std::log(p)));
  return out;
}

SamplingParams Sampled(float temperature) {
  SamplingParams p;
  p.temperature = temperature;
  return p;
}

testing::AssertionResult HasText(const absl::Status& status, const std::string& text) {
  if (status.message().find(text) != absl::string_view::npos) {
    return testing::AssertionSuccess();
  }
  return testing::AssertionFailure() << "\"" << status.message() << "\" lacks \"" << text << "\"";
}

// Runs `call`, which must throw a c10::Error whose message contains `text`.
template <typename Call>
testing::AssertionResult ThrowsWith(Call call, const std::string& text) {
  try {
    call();
  } catch (const c10::Error& e) {
    const std::string message = e.what_without_backtrace();
    if (message.find(text) != std::string::npos) return testing::AssertionSuccess();
    return testing::AssertionFailure() << "\"" << message << "\" lacks \"" << text << "\"";
  }
  return testing::AssertionFailure() << "no c10::Error (expected \"" << text << "\")";
}

// SampleOne's TokenInfo.
TokenInfo SampleInfo(const torch::Tensor& logits, const SampleInput& row, int valid_vocab) {
  TokenInfo info;
  const int id = SampleOne(logits, row, valid_vocab, &info);
  EXPECT_EQ(id, info.id);
  return info;
}

// ---- greedy ----

TEST(SamplerTest, GreedyPicksArgmaxWithLowestIdOnTies) {
  SamplingParams greedy;
  SampleInput row{&greedy, nullptr, nullptr, nullptr, 0};
  TokenInfo a = SampleInfo(Row({0.5f, 3.0f, -1.0f, 2.0f}), row, 4);
  EXPECT_EQ(a.id, 1);
  TokenInfo tie = SampleInfo(Row({1.0f, 3.0f, 3.0f, 2.0f}), row, 4);
  EXPECT_EQ(tie.id, 1);
  row.top_logprobs = 1;  // off the batched fast path: the same choice
  EXPECT_EQ(SampleInfo(Row({1.0f, 3.0f, 3.0f, 2.0f}), row, 4).id, 1);
}

TEST(SamplerTest, GreedyNeverChoosesIdsBeyondValidVocab) {
  SamplingParams greedy;
  std::vector<int> output = {0};
  SamplingParams penalised = greedy;
  penalised.repetition_penalty = 1.5f;
  // Id 3 and 4 have the largest logits but are padding (valid_vocab 3).
  torch::Tensor logits = Row({1.0f, 2.0f, 0.0f, 9.0f, 8.0f}).repeat({3, 1});
  std::vector<SampleInput> rows = {{&greedy, nullptr, nullptr, nullptr, 0},  // fast path
                                   {&greedy, nullptr, nullptr, nullptr, 2},  // logprobs
                                   {&penalised, nullptr, &output, nullptr, 0}};
  std::vector<TokenInfo> got = SampleBatch(logits, rows, 3);
  for (const TokenInfo& info : got) EXPECT_EQ(info.id, 1);
  // The fast path's logprob is over the valid ids only.
  const double expected = 2.0 - std::log(std::exp(1.0) + std::exp(2.0) + std::exp(0.0));
  EXPECT_NEAR(got[0].logprob, expected, 1e-6);
  EXPECT_NEAR(got[1].logprob, expected, 1e-6);
  ExpectProbs(Probs({1.0f, 2.0f, 0.0f, 9.0f, 8.0f}, greedy, 3), {0, 1, 0, 0, 0});
}

TEST(SamplerTest, SampledNeverChoosesIdsBeyondValidVocab) {
  SamplingParams hot = Sampled(5.0f);
  SequenceRng rng(1);
  SampleInput row{&hot, nullptr, nullptr, &rng, 0};
  for (int i = 0; i < 200; ++i) {
    TokenInfo got = SampleInfo(Row({0.0f, 0.0f, 50.0f, 50.0f}), row, 2);
    ASSERT_LT(got.id, 2);
  }
  ExpectProbs(Probs({0.0f, 0.0f, 50.0f, 50.0f}, hot, 2), {0.5, 0.5, 0, 0});
}

TEST(SamplerTest, MixedBatchKeepsRowOrder) {
  SamplingParams greedy;
  SamplingParams top1 = Sampled(1.0f);
  top1.top_k = 1;  // sampled, but only one candidate
  SequenceRng rng(3);
  torch::Tensor logits = torch::eye(4) * 5;  // row r prefers id r
  std::vector<SampleInput> rows = {{&top1, nullptr, nullptr, &rng, 0},
                                   {&greedy, nullptr, nullptr, nullptr, 0},
                                   {&greedy, nullptr, nullptr, nullptr, 1},
                                   {&greedy, nullptr, nullptr, nullptr, 0}};
  std::vector<TokenInfo> got = SampleBatch(logits, rows, 4);
  ASSERT_EQ(got.size(), 4u);
  for (int r = 0; r < 4; ++r) EXPECT_EQ(got[r].id, r);
  ASSERT_EQ(got[2].top_logprobs.size(), 1u);
  EXPECT_EQ(got[2].top_logprobs[0].id, 2);
}

// ---- logit_bias (after the penalties, before temperature / greedy) ----

TEST(SamplerTest, LogitBiasIsAddedAfterPenaltiesAndLogprobsDoNotSeeIt) {
  // Id 0: logit 2, seen in the prompt, repetition penalty 2 -> 1; bias 0.8 ->
  // 1.8, above id 1's 1.6. Bias first would give (2 + 0.8) / 2 = 1.4 < 1.6.
  SamplingParams p;
  p.repetition_penalty = 2.0f;
  p.logit_bias = {{0, 0.8f}};
  std::vector<int> prompt = {0};
  SampleInput row{&p, &prompt, nullptr, nullptr, 0};
  TokenInfo got = SampleInfo(Row({2.0f, 1.6f}), row, 2);
  EXPECT_EQ(got.id, 0);
  // The logprob is the model's: log_softmax of the raw logits.
  EXPECT_NEAR(got.logprob, 2.0 - std::log(std::exp(2.0) + std::exp(1.6)), 1e-6);
  p.logit_bias = {{0, 0.5f}};  // 1.5 < 1.6
  EXPECT_EQ(SampleInfo(Row({2.0f, 1.6f}), row, 2).id, 1);
}

TEST(SamplerTest, LogitBiasShiftsTheSampledDistributionBeforeTemperature) {
  // Equal logits, bias ln 3 on id 1: softmax [1, 3] / 4 at T = 1; at T = 2
  // the biased logits are halved: [1, sqrt 3] / (1 + sqrt 3).
  SamplingParams p = Sampled(1.0f);
  p.logit_bias = {{1, static_cast<float>(std::log(3.0))}};
  ExpectProbs(Probs({0.0f, 0.0f}, p), {0.25, 0.75});
  p.temperature = 2.0f;
  ExpectProbs(Probs({0.0f, 0.0f}, p), {1 / (1 + std::sqrt(3.0)), std::sqrt(3.0) / (1 + std::sqrt(3.0))});
  // -100 bans in practice, in a sampled batch row and a greedy one.
  SamplingParams ban = Sampled(1.0f);
  ban.logit_bias = {{2, -100.0f}};
  SamplingParams greedy_ban;
  greedy_ban.logit_bias = {{2, -100.0f}};
  SequenceRng rng(5);
  torch::Tensor logits = Row({0.0f, 0.0f, 5.0f}).repeat({2, 1});
  for (int i = 0; i < 100; ++i) {
    std::vector<TokenInfo> got = SampleBatch(
        logits, {{&ban, nullptr, nullptr, &rng, 0}, {&greedy_ban, nullptr, nullptr, nullptr, 0}}, 3);
    ASSERT_NE(got[0].id, 2);
    ASSERT_EQ(got[1].id, 0);
  }
}

TEST(SamplerTest, LogitBiasOutsideTheVocabularyIsRefusedByName) {
  SamplingParams p;
  p.logit_bias = {{7, 1.0f}};
  SampleInput row{&p, nullptr, nullptr, nullptr, 0};
  EXPECT_TRUE(ThrowsWith([&] { SampleOne(Row({0.0f, 1.0f}), row, 2); },
                         "rows[0]: logit_bias[7]: the token id is outside the vocabulary [0, 2)"));
  p.logit_bias = {{1, 101.0f}};
  EXPECT_TRUE(ThrowsWith([&] { SampleOne(Row({0.0f, 1.0f}), row, 2); },
                         "logit_bias[1]: the bias must be in [-100, 100], got 101"));
}

// ---- a constraint's mask (before everything, logprobs included) ----

// A bitmask for `vocab` ids allowing `ids`.
std::vector<uint32_t> Bitmask(int vocab, std::vector<int> ids) {
  std::vector<uint32_t> mask((vocab + 31) / 32, 0);
  for (int id : ids) mask[id / 32] |= uint32_t{1} << (id % 32);
  return mask;
}

TEST(SamplerTest, AllowedMaskUnpacksBitsAcrossWords) {
  std::vector<uint32_t> mask = Bitmask(70, {0, 31, 32, 63, 69});
  std::vector<float> got = ToVector(AllowedMask(mask.data(), 70, torch::kCPU));
  ASSERT_EQ(got.size(), 70u);
  for (int i = 0; i < 70; ++i) {
    const bool want = i == 0 || i == 31 || i == 32 || i == 63 || i == 69;
    EXPECT_EQ(got[i] != 0, want) << "id " << i;
  }
}

TEST(SamplerTest, MaskedRowsChooseOnlyAllowedIdsAndReportTheMaskedLogprobs) {
  // 40 ids (two words); the best ids 0 and 39 are not allowed; 33 and 35 are.
  std::vector<float> values(40, 0.0f);
  values[0] = 9.0f;
  values[39] = 8.0f;
  values[33] = 1.0f;
  values[35] = 2.0f;
  std::vector<uint32_t> mask = Bitmask(40, {33, 35});
  SamplingParams greedy;
  SamplingParams hot = Sampled(3.0f);
  SequenceRng rng(11);
  torch::Tensor logits = Row(values).repeat({3, 1});
  const torch::Tensor before = logits.clone();
  for (int i = 0; i < 50; ++i) {
    std::vector<TokenInfo> got =
        SampleBatch(logits,
                    {{&greedy, nullptr, nullptr, nullptr, 0, mask.data()},   // batched argmax
                     {&greedy, nullptr, nullptr, nullptr, 2, mask.data()},   // with alternatives
                     {&hot, nullptr, nullptr, &rng, 0, mask.data()}},
                    40);
    ASSERT_EQ(got[0].id, 35);
    ASSERT_EQ(got[1].id, 35);
    ASSERT_TRUE(got[2].id == 33 || got[2].id == 35) << got[2].id;
    // Renormalised over the allowed ids: 2 - log(e^1 + e^2).
    const double lp35 = 2.0 - std::log(std::exp(1.0) + std::exp(2.0));
    EXPECT_NEAR(got[0].logprob, lp35, 1e-5);
    ASSERT_EQ(got[1].top_logprobs.size(), 2u);
    EXPECT_EQ(got[1].top_logprobs[0].id, 35);
    EXPECT_EQ(got[1].top_logprobs[1].id, 33);
  }
  EXPECT_TRUE(torch::equal(logits, before)) << "the caller's logits were written";
  // An unmasked row in the same batch still sees every id.
  std::vector<TokenInfo> mixed = SampleBatch(
      logits.narrow(0, 0, 2),
      {{&greedy, nullptr, nullptr, nullptr, 0}, {&greedy, nullptr, nullptr, nullptr, 0, mask.data()}}, 40);
  EXPECT_EQ(mixed[0].id, 0);
  EXPECT_EQ(mixed[1].id, 35);
}

TEST(SamplerTest, MasksApplyToTheirOwnRowsAcrossFullAndPartialWords) {
  // 72 ids, 70 valid (the last word partial); rows of the same batch carry
  // different masks, the middle one none. The logits rise with the id, so
  // greedy picks the highest allowed id below valid_vocab.
  torch::Tensor logits = torch::arange(72, torch::kFloat).repeat({3, 1});  // [3, 72]
  // Row 0: word 0 all allowed, word 1 id 40 only, ids 69 and 71 in word 2.
  std::vector<uint32_t> first = Bitmask(72, {40, 69, 71});
  first[0] = ~uint32_t{0};
  // Row 2: every id but 69 (words 0 and 1 all set: skipped whole).
  std::vector<uint32_t> last(3, ~uint32_t{0});
  last[2] &= ~(uint32_t{1} << (69 % 32));
  SamplingParams greedy;
  for (torch::ScalarType dtype : {torch::kFloat, torch::kBFloat16}) {
    std::vector<TokenInfo> got = SampleBatch(logits.to(dtype),
                                             {{&greedy, nullptr, nullptr, nullptr, 0, first.data()},
                                              {&greedy, nullptr, nullptr, nullptr, 0},
                                              {&greedy, nullptr, nullptr, nullptr, 0, last.data()}},
                                             70);
    EXPECT_EQ(got[0].id, 69) << dtype;  // 71 is allowed but not valid
    EXPECT_EQ(got[1].id, 69) << dtype;
    EXPECT_EQ(got[2].id, 68) << dtype;
  }
  // Only ids 0..31 and 40 in row 0 once 69 goes: 40 is the best.
  first[2] = 0;
  std::vector<TokenInfo> got =
      SampleBatch(logits.narrow(0, 0, 1), {{&greedy, nullptr, nullptr, nullptr, 0, first.data()}}, 70);
  EXPECT_EQ(got[0].id, 40);
}

TEST(SamplerTest, AMaskThatAllowsNothingIsRefused) {
  std::vector<uint32_t> mask = Bitmask(40, {38});  // allowed, but beyond valid_vocab 36
  SamplingParams greedy;
  SampleInput row{&greedy, nullptr, nullptr, nullptr, 0, mask.data()};
  EXPECT_TRUE(ThrowsWith([&] { SampleOne(torch::zeros({40}), row, 36); },
                         "rows[0]: the constraint's mask allows no token below valid_vocab 36"));
}

TEST(SamplerTest, AcceptsBfloat16Logits) {
  SamplingParams greedy;
  SampleInput row{&greedy, nullptr, nullptr, nullptr, 0};
  TokenInfo got = SampleInfo(Row({0.5f, 3.0f, -1.0f, 2.0f}).to(torch::kBFloat16), row, 4);
  EXPECT_EQ(got.id, 1);
}

// ---- temperature and filters ----

TEST(SamplerTest, TemperatureScalesLogits) {
  // T = 0.5: logits [1, 2, 3] -> [2, 4, 6].
  ExpectProbs(Probs({1, 2, 3}, Sampled(0.5f)), HandSoftmax({2, 4, 6}));
  // T = 2: [0.5, 1, 1.5].
  ExpectProbs(Probs({1, 2, 3}, Sampled(2.0f)), HandSoftmax({0.5, 1, 1.5}));
  // T = 1 with a padded id: softmax over the valid ids only.
  ExpectProbs(Probs({1, 2, 3, 7}, Sampled(1.0f), 3),
              {HandSoftmax({1, 2, 3})[0], HandSoftmax({1, 2, 3})[1], HandSoftmax({1, 2, 3})[2], 0});
}

TEST(SamplerTest, SampleFrequenciesFollowTemperature) {
  // Hand probabilities for [1, 2, 3] at T = 0.5: e^2, e^4, e^6 normalised
  // (0.0159, 0.1173, 0.8668); T = 1 would give (0.090, 0.245, 0.665).
  const std::vector<double> expected = HandSoftmax({2, 4, 6});
  SamplingParams params = Sampled(0.5f);
  SequenceRng rng(2024);
  SampleInput row{&params, nullptr, nullptr, &rng, 0};
  const int kDraws = 20000;
  std::vector<int> counts(3, 0);
  for (int i = 0; i < kDraws; ++i) {
    TokenInfo got = SampleInfo(Row({1, 2, 3}), row, 3);
    ++counts[got.id];
  }
  // The standard deviation of each frequency is below 0.0025.
  for (int i = 0; i < 3; ++i) {
    EXPECT_NEAR(counts[i] / static_cast<double>(kDraws), expected[i], 0.01) << "id " << i;
  }
}

TEST(SamplerTest, TopKKeepsExactlyK) {
  SamplingParams params = Sampled(1.0f);
  params.top_k = 2;
  std::vector<double> kept = HandSoftmax({4, 3});
  ExpectProbs(Probs({1, 4, 2, 3, 0}, params), {0, kept[0], 0, kept[1], 0});
  // Ties at the k-th value: still exactly k (which of them is topk's choice).
  std::vector<float> tied = ToVector(Probs({2, 2, 2, 1}, params));
  EXPECT_EQ(std::count(tied.begin(), tied.end(), 0.5f), 2);
  EXPECT_EQ(tied[3], 0.0f);
  // k beyond the vocabulary: no-op.
  params.top_k = 10;
  ExpectProbs(Probs({1, 2, 3}, params), HandSoftmax({1, 2, 3}));
}

TEST(SamplerTest, TopPKeepsSmallestSetReachingP) {
  SamplingParams params = Sampled(1.0f);
  params.top_p = 0.8f;
  // 0.5 + 0.3 = 0.8 reaches p: {0, 1}, renormalised 0.625 / 0.375.
  ExpectProbs(Probs(LogOf({0.5, 0.3, 0.15, 0.05}), params), {0.625, 0.375, 0, 0});
  // The same in another id order.
  ExpectProbs(Probs(LogOf({0.15, 0.5, 0.05, 0.3}), params), {0, 0.625, 0, 0.375});
  // Just above 0.8 needs the third token.
  params.top_p = 0.81f;
  ExpectProbs(Probs(LogOf({0.5, 0.3, 0.15, 0.05}), params),
              {0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0});
  // A tiny p keeps the most likely token.
  params.top_p = 1e-7f;
  ExpectProbs(Probs(LogOf({0.3, 0.5, 0.2}), params), {0, 1, 0});
}

TEST(SamplerTest, TopPCandidateSearchMatchesFullSort) {
  // 4096 ids, logits on a coarse grid (many ties), from peaked (small nucleus:
  // the candidate search stops early) to flat (it falls back to the sort).
  torch::manual_seed(1);
  torch::Tensor base = torch::round(torch::randn({4096}) * 4) / 4;
  for (double scale : {8.0, 3.0, 1.0, 0.1}) {
    torch::Tensor probs = torch::softmax(base * scale, 0);
    for (double top_p : {0.05, 0.5, 0.9, 0.99}) {
      torch::Tensor by_sort = TopPMask(probs, top_p, /*by_sort=*/true);
      torch::Tensor by_candidates = TopPMask(probs, top_p, /*by_sort=*/false);
      EXPECT_TRUE(torch::equal(by_sort, by_candidates)) << "scale " << scale << " top_p " << top_p;
      // The kept mass reaches top_p, and without its least likely id it does not.
      torch::Tensor kept = probs.masked_select(by_sort).to(torch::kDouble);
      EXPECT_GE(kept.sum().item<double>(), top_p - 1e-6);
      EXPECT_LT((kept.sum() - kept.min()).item<double>(), top_p);
    }
  }
  // Ties at the boundary: the lower ids first.
  EXPECT_EQ(ToVector(TopPMask(Row({0.2, 0.2, 0.2, 0.2, 0.2}), 0.5, true).to(torch::kFloat)),
            (std::vector<float>{1, 1, 1, 0, 0}));
}

TEST(SamplerTest, TopPWorksOnTheTopKRenormalisedDistribution) {
  SamplingParams params = Sampled(1.0f);
  params.top_k = 2;
  params.top_p = 0.5f;
  // After top-k: 0.4 / 0.7 = 0.571 >= 0.5, so only id 0 (over the original
  // distribution 0.4 < 0.5 would have kept id 1 too).
  ExpectProbs(Probs(LogOf({0.4, 0.3, 0.2, 0.1}), params), {1, 0, 0, 0});
}

TEST(SamplerTest, MinPDropsTokensBelowFractionOfMax) {
  SamplingParams params = Sampled(1.0f);
  params.min_p = 0.2f;  // threshold 0.2 * 0.5 = 0.1
  ExpectProbs(Probs(LogOf({0.5, 0.3, 0.15, 0.05}), params),
              {0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0});
  params.min_p = 0.7f;  // threshold 0.35
  ExpectProbs(Probs(LogOf({0.3, 0.5, 0.15, 0.05}), params), {0, 1, 0, 0});
}

// ---- penalties ----

TEST(SamplerTest, RepetitionPenaltyDividesPositiveMultipliesNegative) {
  SamplingParams params;
  params.repetition_penalty = 2.0f;
  // id 0 in the prompt (2 -> 1), id 1 twice in the output (-2 -> -4), id 2
  // and 3 unseen.
  torch::Tensor got = ApplyPenalties(Row({2, -2, 1, 0.5}), params, {0}, {1, 1});
  EXPECT_EQ(ToVector(got), (std::vector<float>{1, -4, 1, 0.5}));
}

TEST(SamplerTest, PresenceAndFrequencyPenaltiesCountOutputOnly) {
  SamplingParams params;
  params.presence_penalty = 0.5f;
  params.frequency_penalty = 0.25f;
  // id 2 twice: 1 - 0.5 - 2 * 0.25 = 0; id 3 once: 1 - 0.5 - 0.25 = 0.25;
  // id 0 only in the prompt: untouched.
  torch::Tensor got = ApplyPenalties(Row({1, 1, 1, 1}), params, {0}, {2, 2, 3});
  EXPECT_EQ(ToVector(got), (std::vector<float>{1, 1, 0, 0.25}));
  // Negative penalties encourage repetition.
  params.presence_penalty = -1.0f;
  params.frequency_penalty = 0.0f;
  EXPECT_EQ(ToVector(ApplyPenalties(Row({1, 1}), params, {}, {1})), (std::vector<float>{1, 2}));
}

TEST(SamplerTest, RepetitionPenaltyComesBeforePresence) {
  SamplingParams params;
  params.repetition_penalty = 2.0f;
  params.presence_penalty = 0.5f;
  // 2 / 2 - 0.5 = 0.5 (the other order would give (2 - 0.5) / 2 = 0.75).
  EXPECT_EQ(ToVector(ApplyPenalties(Row({2, 0}), params, {}, {0})), (std::vector<float>{0.5, 0}));
}

TEST(SamplerTest, PenaltiesSteerTheChoice) {
  SamplingParams params;  // greedy
  params.frequency_penalty = 1.0f;
  std::vector<int> output = {0, 0};
  // 3 - 2 = 1 < 2: id 1 wins.
  SampleInput row{&params, nullptr, &output, nullptr, 0};
  TokenInfo got = SampleInfo(Row({3, 2, 0}), row, 3);
  EXPECT_EQ(got.id, 1);
  // Ids of padding rows in the history are ignored, not an error.
  output = {4};
  got = SampleInfo(Row({3, 2, 0, 0, 0}), row, 3);
  EXPECT_EQ(got.id, 0);
}

// ---- the draw ----

TEST(SamplerTest, InverseCdfBoundaries) {
  torch::Tensor probs = Row({0.25, 0, 0.5, 0.25});
  auto pick = [&](double u) { return SelectByUniform(probs, u).item<int64_t>(); };
  EXPECT_EQ(pick(0.0), 0);
  EXPECT_EQ(pick(0.2499), 0);
  EXPECT_EQ(pick(0.25), 2);  // cdf [0.25, 0.25, 0.75, 1]: id 1 has no mass
  EXPECT_EQ(pick(0.7499), 2);
  EXPECT_EQ(pick(0.75), 3);
  EXPECT_EQ(pick(std::nextafter(1.0, 0.0)), 3);
  // Trailing zeros are never chosen, even for the largest u.
  EXPECT_EQ(SelectByUniform(Row({0.5, 0.5, 0, 0}), std::nextafter(1.0, 0.0)).item<int64_t>(), 1);
  // Not normalised: u scales the total (2 + 6): u = 0.25 -> target 2 -> id 1.
  EXPECT_EQ(SelectByUniform(Row({2, 6}), 0.25).item<int64_t>(), 1);
  EXPECT_EQ(SelectByUniform(Row({2, 6}), 0.2499).item<int64_t>(), 0);
}

TEST(SamplerTest, SequenceRngIsMt19937_64) {
  // The first output of mt19937_64 with seed 5489 is 14514284786278117030.
  SequenceRng rng(5489);
  EXPECT_EQ(rng.NextUniform(), static_cast<double>(14514284786278117030ULL >> 11) * 0x1.0p-53);
  EXPECT_EQ(rng.seed(), 5489u);
  for (int i = 0; i < 1000; ++i) {
    const double u = rng.NextUniform();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
  }
}

// 50 tokens sampled from a flat distribution over 100 ids.
std::vector<int> Draw50(uint64_t seed) {
  SamplingParams params = Sampled(1.0f);
  SequenceRng rng(seed);
  SampleInput row{&params, nullptr, nullptr, &rng, 0};
  std::vector<int> ids;
  for (int i = 0; i < 50; ++i) {
    TokenInfo got = SampleInfo(torch::zeros({100}), row, 100);
    ids.push_back(got.id);
  }
  return ids;
}

TEST(SamplerTest, SameSeedSameTokens) {
  EXPECT_EQ(Draw50(7), Draw50(7));
  EXPECT_NE(Draw50(7), Draw50(8));
  // Each token is the inverse CDF of exactly one uniform: id = floor(100 u).
  std::vector<int> expected;
  SequenceRng rng(7);
  for (int i = 0; i < 50; ++i) expected.push_back(static_cast<int>(rng.NextUniform() * 100));
  EXPECT_EQ(Draw50(7), expected);
}

TEST(SamplerTest, EachTokenIsTheInverseCdfOfComputeProbs) {
  // For every filter: the sampled id is SelectByUniform(ComputeProbs(...), u)
  // with u the row's next uniform (so the CDF runs in id order after top-k too).
  torch::manual_seed(5);
  torch::Tensor logits = torch::randn({200}) * 2;
  std::vector<int> prompt = {3, 4}, output = {4, 9, 9};
  std::vector<SamplingParams> configs(5, Sampled(0.9f));
  configs[1].top_k = 7;
  configs[2].top_p = 0.7f;
  configs[3].min_p = 0.1f;
  configs[4].top_k = 20;
  configs[4].top_p = 0.8f;
  configs[4].repetition_penalty = 1.5f;
  configs[4].presence_penalty = 0.4f;
  for (size_t c = 0; c < configs.size(); ++c) {
    torch::Tensor probs = ComputeProbs(logits, configs[c], prompt, output, 200);
    SequenceRng rng(100 + c), shadow(100 + c);
    SampleInput row{&configs[c], &prompt, &output, &rng, 0};
    for (int i = 0; i < 50; ++i) {
      const int64_t expected = SelectByUniform(probs, shadow.NextUniform()).item<int64_t>();
      ASSERT_EQ(SampleOne(logits, row, 200), expected) << "config " << c << " draw " << i;
    }
  }
}

TEST(SamplerTest, RowsAreIndependentOfBatchAndOrder) {
  // Row X (seed 11) alone, then in a batch after other rows in another order.
  torch::manual_seed(0);
  const int kSteps = 20, kVocab = 50;
  torch::Tensor logits = torch::randn({kSteps, 3, kVocab});
  SamplingParams hot = Sampled(1.5f), warm = Sampled(0.7f), greedy;
  hot.top_p = 0.9f;
  std::vector<int> alone, mixed;
  SequenceRng x1(11), x2(11), other(12);
  for (int s = 0; s < kSteps; ++s) {
    std::vector<TokenInfo> a =
        SampleBatch(logits[s][0].unsqueeze(0), {{&hot, nullptr, nullptr, &x1, 0}}, kVocab);
    alone.push_back(a[0].id);
    torch::Tensor batch = torch::stack({logits[s][1], logits[s][2], logits[s][0]});
    std::vector<TokenInfo> b = SampleBatch(batch,
                                           {{&warm, nullptr, nullptr, &other, 3},
                                            {&greedy, nullptr, nullptr, nullptr, 0},
                                            {&hot, nullptr, nullptr, &x2, 0}},
                                           kVocab);
    mixed.push_back(b[2].id);
  }
  EXPECT_EQ(alone, mixed);
}

TEST(SamplerTest, CudaMatchesCpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(3);
  const int kSteps = 10, kVocab = 1000, kValid = 990;
  SamplingParams greedy, filtered = Sampled(0.8f), penalised = Sampled(1.2f);
  filtered.top_k = 40;
  filtered.top_p = 0.9f;
  filtered.min_p = 0.05f;
  penalised.top_p = 0.95f;
  penalised.repetition_penalty = 1.3f;
  penalised.frequency_penalty = 0.5f;
  std::vector<int> prompt = {1, 2, 3, 999}, output = {5, 5, 7};
  SequenceRng cpu_a(1), cpu_b(2), cuda_a(1), cuda_b(2);
  for (int s = 0; s < kSteps; ++s) {
    torch::Tensor logits = torch::randn({4, kVocab}) * 3;
    auto rows = [&](SequenceRng* a, SequenceRng* b) {
      return std::vector<SampleInput>{{&greedy, nullptr, nullptr, nullptr, 0},
                                      {&filtered, nullptr, nullptr, a, 2},
                                      {&greedy, &prompt, &output, nullptr, 5},
                                      {&penalised, &prompt, &output, b, 0}};
    };
    std::vector<TokenInfo> cpu = SampleBatch(logits, rows(&cpu_a, &cpu_b), kValid);
    std::vector<TokenInfo> cuda = SampleBatch(logits.cuda(), rows(&cuda_a, &cuda_b), kValid);
    for (int r = 0; r < 4; ++r) {
      EXPECT_EQ(cpu[r].id, cuda[r].id) << "step " << s << " row " << r;
      EXPECT_NEAR(cpu[r].logprob, cuda[r].logprob, 1e-4);
      ASSERT_EQ(cpu[r].top_logprobs.size(), cuda[r].top_logprobs.size());
      for (size_t i = 0; i < cpu[r].top_logprobs.size(); ++i) {
        EXPECT_EQ(cpu[r].top_logprobs[i].id, cuda[r].top_logprobs[i].id);
      }
    }
  }
}

// ---- logprobs ----

TEST(SamplerTest, LogprobsAreRawLogSoftmaxOverValidIds) {
  // Id 4 is padding. Penalties and temperature do not change logprobs.
  const std::vector<double> raw = {1, 2, 3, 4};
  const double lse = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0) + std::exp(4.0));
  SamplingParams params;  // greedy, but id 3 is penalised below id 2
  params.repetition_penalty = 4.0f;
  std::vector<int> output = {3};
  SampleInput row{&params, nullptr, &output, nullptr, 3};
  TokenInfo got = SampleInfo(Row({1, 2, 3, 4, 10}), row, 4);
  EXPECT_EQ(got.id, 2);  // 4 / 4 = 1 < 3
  EXPECT_NEAR(got.logprob, raw[2] - lse, 1e-6);
  ASSERT_EQ(got.top_logprobs.size(), 3u);
  const int best[] = {3, 2, 1};
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(got.top_logprobs[i].id, best[i]);
    EXPECT_NEAR(got.top_logprobs[i].logprob, raw[best[i]] - lse, 1e-6);
  }
  // More alternatives than valid ids: all valid ids, none beyond.
  row.top_logprobs = 20;
  got = SampleInfo(Row({1, 2, 3, 4, 10}), row, 4);
  EXPECT_EQ(got.top_logprobs.size(), 4u);
}

TEST(SamplerTest, SampledTokenLogprobMatchesItsId) {
  SamplingParams params = Sampled(2.0f);
  SequenceRng rng(5);
  SampleInput row{&params, nullptr, nullptr, &rng, 0};
  const std::vector<float> logits = {0.1f, -1.0f, 0.7f, 0.3f};
  const double lse = std::log(std::exp(0.1) + std::exp(-1.0) + std::exp(0.7) + std::exp(0.3));
  for (int i = 0; i < 20; ++i) {
    TokenInfo got = SampleInfo(Row(logits), row, 4);
    EXPECT_NEAR(got.logprob, logits[got.id] - lse, 1e-6);
  }
}

// ---- bad input ----

TEST(SamplerTest, BadInputIsAnErrorNamingTheField) {
  SamplingParams greedy, hot = Sampled(1.0f), bad_p = Sampled(1.0f);
  bad_p.top_p = 1.5f;
  std::vector<int> bad_ids = {1, 7};
  torch::Tensor two = torch::zeros({2, 4});
  SampleInput ok{&greedy, nullptr, nullptr, nullptr, 0};
  EXPECT_TRUE(ThrowsWith([&] { SampleBatch(torch::zeros({4}), {ok}, 4); }, "[batch, vocab]"));
  EXPECT_TRUE(ThrowsWith([&] { SampleBatch(two, {ok}, 4); }, "2 rows but 1 SampleInputs"));
  EXPECT_TRUE(ThrowsWith([&] { SampleBatch(two, {ok, ok}, 5); }, "valid_vocab must be in [1, 4]"));
  EXPECT_TRUE(ThrowsWith([&] { SampleBatch(two, {ok, ok}, 0); }, "valid_vocab"));
  EXPECT_TRUE(ThrowsWith(
      [&] {
        SampleBatch(two.to(torch::kLong), {ok, ok}, 4);
      },
      "floating point"));
  EXPECT_TRUE(ThrowsWith(
      [&] {
        SampleBatch(two, {ok, {nullptr, nullptr, nullptr, nullptr, 0}}, 4);
      },
      "rows[1].params is null"));
  EXPECT_TRUE(ThrowsWith(
      [&] {
        SampleBatch(two, {ok, {&hot, nullptr, nullptr, nullptr, 0}}, 4);
      },
      "rows[1].rng is null"));
  EXPECT_TRUE(ThrowsWith(
      [&] {
        SampleBatch(two, {ok, {&bad_p, nullptr, nullptr, nullptr, 0}}, 4);
      },
      "rows[1]: top_p must be in (0, 1], got 1.5"));
  EXPECT_TRUE(ThrowsWith(
      [&] {
        SampleBatch(two, {ok, {&greedy, nullptr, nullptr, nullptr, 21}}, 4);
      },
      "top_logprobs must be in [0, 20], got 21"));
  SamplingParams rep;
  rep.repetition_penalty = 1.2f;
  EXPECT_TRUE(ThrowsWith(
      [&] {
        SampleBatch(two, {{&rep, &bad_ids, nullptr, nullptr, 0}, ok}, 4);
      },
      "rows[0].prompt_ids[1] = 7 is outside [0, 4)"));
  EXPECT_TRUE(ThrowsWith([&] { ComputeProbs(torch::zeros({4}), bad_p, {}, {}, 4); },
                         "ComputeProbs: top_p"));
  EXPECT_TRUE(ThrowsWith([&] { SampleOne(two, ok, 4); }, "SampleOne: logits must be [vocab]"));
}

// The one validator (engine/request_validation.h): each range's edges, the
// field in the payload, and the message every face shows.
TEST(RequestValidationTest, SamplingRangesEdgesAndFieldPayload) {
  auto check = [](void (*edit)(SamplingParams*), int top_logprobs) {
    SamplingParams p;
    edit(&p);
    return ValidateSampling(p, top_logprobs);
  };
  EXPECT_TRUE(check([](SamplingParams*) {}, 0).ok());
  EXPECT_TRUE(check([](SamplingParams*) {}, kMaxTopLogprobs).ok());
  EXPECT_TRUE(check([](SamplingParams* p) { p->temperature = 100; }, 0).ok());
  EXPECT_TRUE(check([](SamplingParams* p) { p->top_p = 1e-30f; }, 0).ok());
  EXPECT_TRUE(check([](SamplingParams* p) { p->repetition_penalty = 10; }, 0).ok());
  EXPECT_TRUE(check([](SamplingParams* p) { p->presence_penalty = -2; }, 0).ok());
  const std::pair<absl::Status, std::pair<const char*, const char*>> refused[] = {
      {check([](SamplingParams* p) { p->temperature = -1; }, 0),
       {"temperature", "temperature must be in [0, 100], got -1"}},
      {check([](SamplingParams* p) { p->temperature = 100.5f; }, 0),
       {"temperature", "temperature must be in [0, 100], got 100.5"}},
      {check([](SamplingParams* p) { p->temperature = NAN; }, 0),
       {"temperature", "temperature must be in [0, 100], got nan"}},
      {check([](SamplingParams* p) { p->top_k = -1; }, 0), {"top_k", "top_k must be in"}},
      {check([](SamplingParams* p) { p->top_p = 0; }, 0), {"top_p", "top_p must be in (0, 1], got 0"}},
      {check([](SamplingParams* p) { p->min_p = 1; }, 0), {"min_p", "min_p must be in [0, 1), got 1"}},
      {check([](SamplingParams* p) { p->repetition_penalty = 0; }, 0),
       {"repetition_penalty", "repetition_penalty must be in (0, 10], got 0"}},
      {check([](SamplingParams* p) { p->presence_penalty = 3; }, 0),
       {"presence_penalty", "presence_penalty must be in [-2, 2], got 3"}},
      {check([](SamplingParams* p) { p->frequency_penalty = -3; }, 0),
       {"frequency_penalty", "frequency_penalty must be in [-2, 2], got -3"}},
      {check([](SamplingParams*) {}, -1), {"top_logprobs", "top_logprobs must be in [0, 20], got -1"}},
      {check([](SamplingParams*) {}, 21), {"top_logprobs", "top_logprobs must be in [0, 20], got 21"}},
  };
  for (const auto& [status, expected] : refused) {
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << expected.second;
    EXPECT_EQ(FieldOf(status), expected.first) << status;
    EXPECT_TRUE(HasText(status, expected.second)) << status;
  }
  const absl::Status stops =
      ValidateStops({"a", ""}, {}, StopLimits{10, 16, 256});
  EXPECT_EQ(FieldOf(stops), "stop");
  EXPECT_TRUE(HasText(stops, "stop[1] is empty"));
  const absl::Status ids = ValidateStops({}, {3, 10}, StopLimits{10, 16, 256});
  EXPECT_EQ(FieldOf(ids), "stop_token_ids");
  EXPECT_TRUE(HasText(ids, "stop_token_ids[1] = 10 is outside the vocabulary [0, 10)"));
  EXPECT_EQ(FieldOf(absl::OkStatus()), "");
}

}  // namespace
}  // namespace streamgen
