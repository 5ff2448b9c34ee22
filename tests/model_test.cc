// The engine's libtorch forward pass (engine/model/llama_model.h) against the plain
// scalar reference (tests/reference_llama.h) on small random models written
// with WriteTinyModel: prefill, incremental decode, batched decode and chunked
// prefill, for MHA / GQA / MQA, tied and untied, explicit head_dim, Mistral
// sliding windows, and F32 / BF16 / F16 storage. Also the reference itself
// against hand-computed values and (when ../shared is present) the golden
// fixture.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <ostream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "engine/model/llama_model.h"
#include "engine/model/llama_model_testing.h"
#include "tests/reference_llama.h"
#include "tools/tiny_model.h"

namespace streamgen {
namespace {

using ::testing::HasSubstr;

constexpr double kTolerance = 1e-4;  // times max(1, max |reference logit|)
const char kTokenizer[] = STREAMGEN_TINY_MODEL_DIR "/tokenizer.model";

// ---------------------------------------------------------------------------
// Helpers.

std::vector<float> ToVector(const torch::Tensor& row) {
  torch::Tensor t = row.to(torch::kCPU, torch::kFloat32).contiguous();
  return std::vector<float>(t.data_ptr<float>(), t.data_ptr<float>() + t.numel());
}

double MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  double worst = 0.0;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(double{a[i]} - b[i]));
  return worst;
}

double LogitScale(const std::vector<float>& ref) {
  double scale = 1.0;
  for (float v : ref) scale = std::max(scale, std::fabs(double{v}));
  return scale;
}

std::vector<int> RandomTokens(int n, int vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> dist(0, vocab - 1);
  std::vector<int> tokens(n);
  for (int& t : tokens) t = dist(rng);
  return tokens;
}

std::vector<int> Prefix(const std::vector<int>& tokens, size_t n) {
  return std::vector<int>(tokens.begin(), tokens.begin() + n);
}

// A fresh empty directory under the test temp dir, unique to this process
// (ctest may run the tests of this binary in parallel).
std::string FreshDir(const std::string& name) {
  const std::string dir =
      testing::TempDir() + "model_test_" + name + "_" + std::to_string(getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// ---------------------------------------------------------------------------
// The reference against hand-computed values.

using reference::Shape;

TEST(ReferenceMath, RmsNorm) {
  // mean(3^2, 4^2) = 12.5.
  const std::vector<float> out = reference::RmsNorm({3, 4}, {1, 2}, 0.0);
  EXPECT_NEAR(out[0], 3 / std::sqrt(12.5), 1e-6);
  EXPECT_NEAR(out[1], 8 / std::sqrt(12.5), 1e-6);
  const std::vector<float> eps = reference::RmsNorm({3, 4}, {1, 1}, 0.5);
  EXPECT_NEAR(eps[0], 3 / std::sqrt(13.0), 1e-6);
}

TEST(ReferenceMath, RopeRotatesHalvesWithHfFrequencies) {
  // head_dim 4, theta 100: inv_freq = {1, 100^-0.5 = 0.1}; dims 0<->2, 1<->3.
  std::vector<float> v = {1, 2, 3, 4, /*second head*/ 1, 0, 0, 0};
  reference::ApplyRope(&v, 2, 4, 3, 100.0);
  const double c0 = std::cos(3.0), s0 = std::sin(3.0), c1 = std::cos(0.3), s1 = std::sin(0.3);
  EXPECT_NEAR(v[0], 1 * c0 - 3 * s0, 1e-6);
  EXPECT_NEAR(v[2], 3 * c0 + 1 * s0, 1e-6);
  EXPECT_NEAR(v[1], 2 * c1 - 4 * s1, 1e-6);
  EXPECT_NEAR(v[3], 4 * c1 + 2 * s1, 1e-6);
  EXPECT_NEAR(v[4], c0, 1e-6);
  EXPECT_NEAR(v[6], s0, 1e-6);
  std::vector<float> at_zero = {1, 2, 3, 4};
  reference::ApplyRope(&at_zero, 1, 4, 0, 100.0);
  EXPECT_EQ(at_zero, (std::vector<float>{1, 2, 3, 4}));
}

TEST(ReferenceMath, AttendWeightsBySoftmaxOfScaledScores) {
  Shape s;
  s.heads = 1, s.kv_heads = 1, s.head_dim = 2;
  // q.k / sqrt(2): 0 and ln 3 -> weights 1/4, 3/4.
  const std::vector<float> q = {static_cast<float>(std::sqrt(2.0) * std::log(3.0)), 0};
  const std::vector<float> out = reference::Attend(s, q, {{0, 0}, {1, 0}}, {{1, 2}, {5, 6}}, 1);
  EXPECT_NEAR(out[0], 0.25 * 1 + 0.75 * 5, 1e-5);
  EXPECT_NEAR(out[1], 0.25 * 2 + 0.75 * 6, 1e-5);
  // Causal: position 0 sees only itself.
  EXPECT_NEAR(reference::Attend(s, q, {{0, 0}, {1, 0}}, {{1, 2}, {5, 6}}, 0)[0], 1, 1e-6);
}

TEST(ReferenceMath, AttendGroupsQueryHeadsAndSlidesWindow) {
  Shape s;
  s.heads = 4, s.kv_heads = 2, s.head_dim = 1;
  // Zero queries: uniform weights over the visible keys. kv head 0 values
  // are 1..4, kv head 1 values are 10..40 (positions 0..3).
  const std::vector<std::vector<float>> keys(4, {0, 0});
  const std::vector<std::vector<float>> values = {{1, 10}, {2, 20}, {3, 30}, {4, 40}};
  std::vector<float> out = reference::Attend(s, {0, 0, 0, 0}, keys, values, 3);
  EXPECT_EQ(out.size(), 4u);
  EXPECT_NEAR(out[0], 2.5, 1e-6);  // heads 0, 1 -> kv head 0
  EXPECT_NEAR(out[1], 2.5, 1e-6);
  EXPECT_NEAR(out[2], 25, 1e-5);  // heads 2, 3 -> kv head 1
  EXPECT_NEAR(out[3], 25, 1e-5);
  s.sliding_window = 2;  // position 3 sees positions 2 and 3
  out = reference::Attend(s, {0, 0, 0, 0}, keys, values, 3);
  EXPECT_NEAR(out[0], 3.5, 1e-6);
  EXPECT_NEAR(out[3], 35, 1e-5);
}

// One layer, hidden 2, one head of dim 2: zero queries and keys (uniform
// attention), identity v/o/gate/up/down projections, unit norms, eps 0.
TEST(ReferenceMath, OneLayerModelByHand) {
  Shape s;
  s.hidden = 2, s.intermediate = 2, s.layers = 1, s.heads = 1, s.kv_heads = 1, s.head_dim = 2;
  s.vocab = 3, s.eps = 0.0;
  const std::vector<float> id = {1, 0, 0, 1}, zero = {0, 0, 0, 0}, ones = {1, 1};
  reference::Weights w;
  w.embed = {3, 4, 4, -3, 1, 1};
  w.layers.push_back({ones, zero, zero, id, id, ones, id, id, id});
  w.final_norm = {1, 2};
  w.lm_head = {1, 0, 0, 1, 1, 1};
  ReferenceLlama model(s, w);

  auto norm = [](std::vector<double> x) {
    const double r = std::sqrt((x[0] * x[0] + x[1] * x[1]) / 2);
    return std::vector<double>{x[0] / r, x[1] / r};
  };
  auto silu = [](double x) { return x / (1 + std::exp(-x)); };
  // Tokens {0, 1}: attention output = mean of normed inputs seen so far.
  const std::vector<double> n0 = norm({3, 4}), n1 = norm({4, -3});
  std::vector<std::vector<double>> h = {{3 + n0[0], 4 + n0[1]},
                                        {4 + (n0[0] + n1[0]) / 2, -3 + (n0[1] + n1[1]) / 2}};
  const std::vector<std::vector<float>> logits = model.Logits({0, 1});
  ASSERT_EQ(logits.size(), 2u);
  for (int p = 0; p < 2; ++p) {
    const std::vector<double> m = norm(h[p]);
    for (int i = 0; i < 2; ++i) h[p][i] += silu(m[i]) * m[i];
    const std::vector<double> f = norm(h[p]);
    const double x = f[0] * 1, y = f[1] * 2;
    ASSERT_EQ(logits[p].size(), 3u);
    EXPECT_NEAR(logits[p][0], x, 1e-5) << p;
    EXPECT_NEAR(logits[p][1], y, 1e-5) << p;
    EXPECT_NEAR(logits[p][2], x + y, 1e-5) << p;
  }
  EXPECT_EQ(model.LastLogits({0, 1}), logits[1]);
}

// The reference reproduces the golden fixture's greedy tokens and logits
// (teacher-forced: one pass over prompt + continuation).
TEST(ReferenceGolden, ReproducesFixture) {
  const std::string dir = STREAMGEN_SOURCE_DIR "/../shared/fixtures/tiny-llama";
  if (!std::filesystem::exists(dir + "/golden.json")) {
    GTEST_SKIP() << dir << " is absent: skipping the golden fixture check";
  }
  auto reference = ReferenceLlama::Load(dir);
  ASSERT_TRUE(reference.ok()) << reference.status();
  std::ifstream in(dir + "/golden.json");
  const nlohmann::json golden = nlohmann::json::parse(in);
  for (const nlohmann::json& entry : golden) {
    std::vector<int> tokens = entry["prompt_token_ids"].get<std::vector<int>>();
    const size_t prompt = tokens.size();
    const std::vector<int> generated = entry["generated_token_ids"].get<std::vector<int>>();
    const std::vector<double> chosen = entry["chosen_logits"].get<std::vector<double>>();
    tokens.insert(tokens.end(), generated.begin(), generated.end() - 1);
    const std::vector<std::vector<float>> logits = reference->Logits(tokens);
    for (size_t i = 0; i < generated.size(); ++i) {
      const std::vector<float>& row = logits[prompt - 1 + i];
      const int argmax = static_cast<int>(std::max_element(row.begin(), row.end()) - row.begin());
      ASSERT_EQ(argmax, generated[i]) << entry["prompt"] << " step " << i;
      EXPECT_NEAR(row[argmax], chosen[i], 1e-3) << entry["prompt"] << " step " << i;
    }
  }
}

// ---------------------------------------------------------------------------
// The model shapes.

struct ModelCase {
  std::string name;
  TinyModelSpec spec;
};

ModelCase Case(const std::string& name, int hidden, int heads, int kv_heads, int layers, bool tied,
               StorageDtype dtype) {
  ModelCase c{name, TinyModelSpec()};
  c.spec.hidden_size = hidden;
  c.spec.intermediate_size = hidden * 2 + 8;
  c.spec.num_attention_heads = heads;
  c.spec.num_key_value_heads = kv_heads;
  c.spec.num_hidden_layers = layers;
  c.spec.tie_word_embeddings = tied;
  c.spec.dtype = dtype;
  // Matrices ~ N(0, 1/hidden): activations, attention scores and logits O(1),
  // so attention is far from uniform and a wrong rotation or mask shows.
  c.spec.init_std = static_cast<float>(1.0 / std::sqrt(hidden));
  c.spec.norm_noise_std = 0.2f;
  c.spec.max_position_embeddings = 64;
  c.spec.seed = static_cast<uint64_t>(std::hash<std::string>()(name) % 100000);
  return c;
}

std::vector<ModelCase> AllCases() {
  std::vector<ModelCase> cases;
  // F32 storage also checks that float32 weights are copied out of the
  // memory map (which Load closes) rather than aliasing it.
  cases.push_back(Case("mha_untied_1layer_f32", 64, 4, 4, 1, false, StorageDtype::kF32));
  cases.push_back(Case("gqa_8x2_tied_3layers_bf16", 64, 8, 2, 3, true, StorageDtype::kBF16));
  cases.push_back(Case("mqa_4x1_untied_2layers_f16", 64, 4, 1, 2, false, StorageDtype::kF16));
  ModelCase head_dim =
      Case("head_dim16_hidden48_tied_bf16", 48, 4, 2, 2, true, StorageDtype::kBF16);
  head_dim.spec.head_dim = 16;  // q_proj: [64, 48]
  head_dim.spec.rope_theta = 500000.0;
  head_dim.spec.rms_norm_eps = 1e-6;
  cases.push_back(head_dim);
  ModelCase mistral = Case("mistral_window4_gqa_f32", 64, 4, 2, 2, false, StorageDtype::kF32);
  mistral.spec.architecture = "MistralForCausalLM";
  mistral.spec.sliding_window = 4;
  cases.push_back(mistral);
  ModelCase mistral_mqa =
      Case("mistral_window5_mqa_tied_3layers_bf16", 64, 8, 1, 3, true, StorageDtype::kBF16);
  mistral_mqa.spec.architecture = "MistralForCausalLM";
  mistral_mqa.spec.sliding_window = 5;
  cases.push_back(mistral_mqa);
  return cases;
}

// gtest prints the case by name (test names in ctest stay readable).
void PrintTo(const ModelCase& c, std::ostream* os) { *os << c.name; }

class ModelTest : public testing::TestWithParam<ModelCase> {
 protected:
  void SetUp() override {
    dir_ = FreshDir(GetParam().name);
    ASSERT_TRUE(std::filesystem::exists(kTokenizer)) << kTokenizer << " (build target tiny_model)";
    absl::Status written = WriteTinyModel(GetParam().spec, dir_, kTokenizer, "");
    ASSERT_TRUE(written.ok()) << written;
    auto model = LlamaModel::Load(dir_, ModelOptions{torch::kCPU, torch::kFloat32});
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = std::move(model).value();
    auto reference = ReferenceLlama::Load(dir_);
    ASSERT_TRUE(reference.ok()) << reference.status();
    reference_ = std::make_unique<ReferenceLlama>(std::move(reference).value());
    vocab_ = model_->config().vocab_size;
    tokens_ = RandomTokens(kTokens, vocab_, 17);
    ref_logits_ = reference_->Logits(tokens_);
  }

  void TearDown() override {
    std::printf("[ max |engine - reference| ] %s: %.3g (max |logit| %.3g)\n",
                testing::UnitTest::GetInstance()->current_test_info()->name(), max_diff_,
                max_logit_);
    model_.reset();
    std::filesystem::remove_all(dir_);
  }

  // Engine logits row `engine` vs reference logits `ref`.
  void ExpectClose(const torch::Tensor& engine, const std::vector<float>& ref,
                   const std::string& what) {
    ASSERT_EQ(engine.numel(), static_cast<int64_t>(ref.size())) << what;
    const double diff = MaxAbsDiff(ToVector(engine), ref);
    max_diff_ = std::max(max_diff_, diff);
    max_logit_ = std::max(max_logit_, LogitScale(ref));
    EXPECT_LE(diff, kTolerance * LogitScale(ref)) << what;
  }

  static constexpr int kTokens = 12;
  std::string dir_;
  std::unique_ptr<LlamaModel> model_;
  std::unique_ptr<ReferenceLlama> reference_;
  int vocab_ = 0;
  std::vector<int> tokens_;
  std::vector<std::vector<float>> ref_logits_;
  double max_diff_ = 0.0;
  double max_logit_ = 0.0;  // max(1, max |reference logit|) seen
};

TEST_P(ModelTest, PrefillMatchesReferenceAtEveryPosition) {
  KvCache cache = NewCache(*model_, 32);
  torch::Tensor logits = Forward(*model_, tokens_, &cache, /*all_logits=*/true);
  ASSERT_EQ(logits.sizes(), (std::vector<int64_t>{kTokens, vocab_}));
  EXPECT_EQ(logits.scalar_type(), torch::kFloat32);
  EXPECT_EQ(cache.length, kTokens);
  for (int p = 0; p < kTokens; ++p) {
    ExpectClose(logits[p], ref_logits_[p], "position " + std::to_string(p));
  }
}

TEST_P(ModelTest, PrefillLastLogitsOnly) {
  KvCache cache = NewCache(*model_, 32);
  torch::Tensor logits = Forward(*model_, tokens_, &cache);
  ASSERT_EQ(logits.sizes(), (std::vector<int64_t>{1, vocab_}));
  ExpectClose(logits[0], ref_logits_.back(), "last position");
}

TEST_P(ModelTest, IncrementalForwardMatchesReference) {
  KvCache cache = NewCache(*model_, 32);
  const int prefix = 5;
  ExpectClose(Forward(*model_, Prefix(tokens_, prefix), &cache)[0], ref_logits_[prefix - 1],
              "prefix");
  for (int p = prefix; p < kTokens; ++p) {
    torch::Tensor logits = Forward(*model_, {tokens_[p]}, &cache);
    ASSERT_EQ(logits.sizes(), (std::vector<int64_t>{1, vocab_}));
    ExpectClose(logits[0], ref_logits_[p], "step at position " + std::to_string(p));
    EXPECT_EQ(cache.length, p + 1);
  }
}

TEST_P(ModelTest, IncrementalDecodeBatchOfOneMatchesReference) {
  KvCache cache = NewCache(*model_, 32);
  const int prefix = 5;
  Forward(*model_, Prefix(tokens_, prefix), &cache);
  for (int p = prefix; p < kTokens; ++p) {
    torch::Tensor logits = DecodeBatch(*model_, {tokens_[p]}, {&cache});
    ASSERT_EQ(logits.sizes(), (std::vector<int64_t>{1, vocab_}));
    ExpectClose(logits[0], ref_logits_[p], "step at position " + std::to_string(p));
    EXPECT_EQ(cache.length, p + 1);
  }
}

TEST_P(ModelTest, DecodeBatchOfThreeSequencesOfDifferentLengths) {
  const std::vector<int> prompt_lengths = {3, 8, 12};
  const int steps = 3;
  std::vector<std::vector<int>> seqs;
  std::vector<std::vector<std::vector<float>>> refs;
  std::vector<KvCache> caches;
  for (size_t i = 0; i < prompt_lengths.size(); ++i) {
    seqs.push_back(RandomTokens(prompt_lengths[i] + steps, vocab_, 100 + i));
    refs.push_back(reference_->Logits(seqs[i]));
    caches.push_back(NewCache(*model_, 32));
    Forward(*model_, Prefix(seqs[i], prompt_lengths[i]), &caches[i]);
  }
  for (int s = 0; s < steps; ++s) {
    std::vector<int> step_tokens;
    std::vector<KvCache*> step_caches;
    for (size_t i = 0; i < seqs.size(); ++i) {
      step_tokens.push_back(seqs[i][prompt_lengths[i] + s]);
      step_caches.push_back(&caches[i]);
    }
    torch::Tensor logits = DecodeBatch(*model_, step_tokens, step_caches);
    ASSERT_EQ(logits.sizes(), (std::vector<int64_t>{3, vocab_}));
    for (size_t i = 0; i < seqs.size(); ++i) {
      const int pos = prompt_lengths[i] + s;
      ExpectClose(logits[i], refs[i][pos],
                  "sequence " + std::to_string(i) + " position " + std::to_string(pos));
      EXPECT_EQ(caches[i].length, pos + 1);
    }
  }
}

TEST_P(ModelTest, ChunkedPrefillMatchesReference) {
  for (int split : {1, 5, 11}) {
    KvCache cache = NewCache(*model_, 32);
    torch::Tensor first = Forward(*model_, Prefix(tokens_, split), &cache, true);
    torch::Tensor second =
        Forward(*model_, std::vector<int>(tokens_.begin() + split, tokens_.end()), &cache, true);
    ASSERT_EQ(second.size(0), kTokens - split);
    for (int p = 0; p < kTokens; ++p) {
      torch::Tensor row = p < split ? first[p] : second[p - split];
      ExpectClose(row, ref_logits_[p],
                  "split " + std::to_string(split) + " position " + std::to_string(p));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, ModelTest, testing::ValuesIn(AllCases()),
                         [](const testing::TestParamInfo<ModelCase>& info) {
                           return info.param.name;
                         });

// The comparison can fail: a reference that attends one position further than
// the model's sliding window disagrees with the engine well beyond tolerance.
TEST(ModelTestSensitivity, WrongSlidingWindowIsDetected) {
  ModelCase c = Case("sensitivity_window", 64, 4, 2, 2, false, StorageDtype::kBF16);
  c.spec.architecture = "MistralForCausalLM";
  c.spec.sliding_window = 4;
  const std::string dir = FreshDir(c.name);
  ASSERT_TRUE(WriteTinyModel(c.spec, dir, kTokenizer, "").ok());
  auto model = LlamaModel::Load(dir, ModelOptions{torch::kCPU, torch::kFloat32});
  ASSERT_TRUE(model.ok()) << model.status();
  c.spec.sliding_window = 5;
  const std::string wrong_dir = FreshDir(c.name + "_wrong");
  ASSERT_TRUE(WriteTinyModel(c.spec, wrong_dir, kTokenizer, "").ok());
  auto wrong = ReferenceLlama::Load(wrong_dir);
  ASSERT_TRUE(wrong.ok()) << wrong.status();

  const std::vector<int> tokens = RandomTokens(12, (*model)->config().vocab_size, 5);
  KvCache cache = NewCache(**model, 16);
  torch::Tensor logits = Forward(**model, tokens, &cache, true);
  const std::vector<std::vector<float>> ref = wrong->Logits(tokens);
  // Positions 0-3 see no more than 4 keys either way; position 4 on differ.
  EXPECT_LE(MaxAbsDiff(ToVector(logits[3]), ref[3]), kTolerance * LogitScale(ref[3]));
  EXPECT_GT(MaxAbsDiff(ToVector(logits[11]), ref[11]), 100 * kTolerance * LogitScale(ref[11]));
  std::filesystem::remove_all(dir);
  std::filesystem::remove_all(wrong_dir);
}

// bfloat16 compute (weights and activations rounded to 8 bits of mantissa)
// stays near the float32 reference (observed ~0.07 with logits up to ~4): a
// loose bound against gross errors of the bfloat16 path (a dtype mix-up,
// garbage in the cache), not a proof of its exactness.
TEST(ModelTestBfloat16, PrefillAndDecodeStayNearReference) {
  ModelCase c = Case("bf16_compute", 64, 8, 2, 2, false, StorageDtype::kBF16);
  c.spec.architecture = "MistralForCausalLM";
  c.spec.sliding_window = 4;
  const std::string dir = FreshDir(c.name);
  ASSERT_TRUE(WriteTinyModel(c.spec, dir, kTokenizer, "").ok());
  auto model = LlamaModel::Load(dir, ModelOptions{torch::kCPU, torch::kBFloat16});
  ASSERT_TRUE(model.ok()) << model.status();
  auto reference = ReferenceLlama::Load(dir);
  ASSERT_TRUE(reference.ok()) << reference.status();
  const std::vector<int> tokens = RandomTokens(12, (*model)->config().vocab_size, 9);
  const std::vector<std::vector<float>> ref = reference->Logits(tokens);
  KvCache cache = NewCache(**model, 16);
  torch::Tensor prefill = Forward(**model, Prefix(tokens, 8), &cache, true);
  EXPECT_EQ(prefill.scalar_type(), torch::kFloat32);
  double worst = 0.0;
  for (int p = 0; p < 12; ++p) {
    torch::Tensor row = p < 8 ? prefill[p] : DecodeBatch(**model, {tokens[p]}, {&cache})[0];
    const double diff = MaxAbsDiff(ToVector(row), ref[p]);
    worst = std::max(worst, diff);
    EXPECT_LE(diff, 0.1 * LogitScale(ref[p])) << "position " << p;
  }
  std::printf("[ max |engine bf16 - reference| ] %.3g\n", worst);
  std::filesystem::remove_all(dir);
}

// int8 weights (--quantization int8) against the float32 engine on every
// model shape: the error is measured and printed (max and mean |difference|
// of the logits over prefill and decode positions, for float32 and bfloat16
// activations), and bounded loosely against gross errors (a wrong scale, a
// transposed weight): per-channel int8 moves each weight by at most half a
// step, 1/254 of its row's largest magnitude.
TEST(ModelTestInt8, LogitsStayNearFloat32OnEveryShape) {
  for (const ModelCase& c : AllCases()) {
    const std::string dir = FreshDir(c.name + "_int8");
    ASSERT_TRUE(WriteTinyModel(c.spec, dir, kTokenizer, "").ok());
    auto f32 = LlamaModel::Load(dir, ModelOptions{torch::kCPU, torch::kFloat32});
    ASSERT_TRUE(f32.ok()) << f32.status();
    const std::vector<int> tokens = RandomTokens(12, (*f32)->config().vocab_size, 5);
    auto logits = [&](LlamaModel& m) {
      KvCache cache = NewCache(m, 16);
      torch::Tensor prefill = Forward(m, Prefix(tokens, 8), &cache, true);
      std::vector<torch::Tensor> rows = {prefill};
      for (int p = 8; p < 12; ++p) rows.push_back(Forward(m, {tokens[p]}, &cache));
      return torch::cat(rows, 0);
    };
    const torch::Tensor want = logits(**f32);
    const double scale = std::max(1.0, want.abs().max().item<double>());
    for (torch::ScalarType act : {torch::kFloat32, torch::kBFloat16}) {
      auto q = LlamaModel::Load(dir, ModelOptions{torch::kCPU, act, Quantization::kInt8});
      ASSERT_TRUE(q.ok()) << q.status();
      const torch::Tensor err = (logits(**q) - want).abs();
      const double max_err = err.max().item<double>(), mean_err = err.mean().item<double>();
      std::printf("[ int8 %s vs float32 ] %s: max %.3g, mean %.3g (max |logit| %.3g)\n",
                  act == torch::kFloat32 ? "f32-act" : "bf16-act", c.name.c_str(), max_err,
                  mean_err, scale);
      EXPECT_LE(max_err, 0.15 * scale) << c.name;
      EXPECT_GT(max_err, 0.0) << c.name << ": int8 gave float32's logits exactly (not quantized?)";
    }
    std::filesystem::remove_all(dir);
  }
}

// ---------------------------------------------------------------------------
// Load errors that belong to the model.

class ModelLoadErrorTest : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = FreshDir("load_error");
    ModelCase c = Case("load_error", 32, 2, 1, 1, false, StorageDtype::kBF16);
    absl::Status written = WriteTinyModel(c.spec, dir_, kTokenizer, "");
    ASSERT_TRUE(written.ok()) << written;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

TEST_F(ModelLoadErrorTest, MissingConfigJsonIsNamed) {
  std::filesystem::remove(dir_ + "/config.json");
  auto model = LlamaModel::Load(dir_, ModelOptions{torch::kCPU, torch::kFloat32});
  ASSERT_FALSE(model.ok());
  EXPECT_THAT(std::string(model.status().message()), HasSubstr("config.json"));
}

TEST_F(ModelLoadErrorTest, MissingWeightsAreNamed) {
  std::filesystem::remove(dir_ + "/model.safetensors");
  auto model = LlamaModel::Load(dir_, ModelOptions{torch::kCPU, torch::kFloat32});
  ASSERT_FALSE(model.ok());
  EXPECT_THAT(std::string(model.status().message()), HasSubstr("safetensors"));
}

// Load validates the weights against config.json instead of reading a
// tensor that is not there.
TEST_F(ModelLoadErrorTest, ConfigCallingForAMissingLayerNamesTheTensor) {
  nlohmann::json config;
  {
    std::ifstream in(dir_ + "/config.json");
    config = nlohmann::json::parse(in);
  }
  config["num_hidden_layers"] = 2;  // the weights hold one layer
  std::ofstream(dir_ + "/config.json") << config.dump(2);
  auto model = LlamaModel::Load(dir_, ModelOptions{torch::kCPU, torch::kFloat32});
  ASSERT_FALSE(model.ok());
  EXPECT_THAT(std::string(model.status().message()), HasSubstr("model.layers.1."));
}

TEST_F(ModelLoadErrorTest, Float16OnCpuIsRefused) {
  auto model = LlamaModel::Load(dir_, ModelOptions{torch::kCPU, torch::kFloat16});
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(model.status().message()), HasSubstr("float16 is not supported on CPU"));
}

TEST_F(ModelLoadErrorTest, Int8OffTheCpuIsRefusedBeforeLoading) {
  auto model = LlamaModel::Load(dir_, ModelOptions{torch::Device("cuda:0"), torch::kBFloat16,
                                                   Quantization::kInt8});
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(model.status().message()),
              HasSubstr("quantization int8 is implemented for the CPU only"));
}

TEST(ParseQuantization, NamesTheChoices) {
  EXPECT_EQ(*ParseQuantization(""), Quantization::kNone);
  EXPECT_EQ(*ParseQuantization("none"), Quantization::kNone);
  EXPECT_EQ(*ParseQuantization("int8"), Quantization::kInt8);
  auto bad = ParseQuantization("int4");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(std::string(bad.status().message()), "unknown quantization 'int4': want none or int8");
}

TEST_F(ModelLoadErrorTest, Bfloat16OnCpuLoads) {
  auto model = LlamaModel::Load(dir_, ModelOptions{torch::kCPU, torch::kBFloat16});
  ASSERT_TRUE(model.ok()) << model.status();
}


// The static decode path (CUDA graphs' buckets, issue 13) run on the CPU
// (ModelOptions::static_decode_on_cpu): decode-only steps padded to a bucket
// of 1, 2, 4, 8 or 16 rows, from static buffers, must give every real row
// exactly the eager path's logits (float32: every kernel involved is per row
// and batch-invariant up to 24 rows), across steps that reuse a bucket and
// steps that change it, with sequences of different lengths in one shared
// pool; and the padding rows must leave the real rows' keys and values alone
// (the spare slot).
TEST(StaticDecode, PaddedBucketsMatchTheEagerPathExactly) {
  for (bool window : {false, true}) {
    ModelCase c = Case(window ? "static_window" : "static_gqa", 64, 8, 2, 2, false,
                       StorageDtype::kF32);
    if (window) {
      c.spec.architecture = "MistralForCausalLM";
      c.spec.sliding_window = 5;
    }
    const std::string dir = FreshDir(c.name);
    ASSERT_TRUE(WriteTinyModel(c.spec, dir, kTokenizer, "").ok());
    ModelOptions eager_opts{torch::kCPU, torch::kFloat32};
    ModelOptions static_opts = eager_opts;
    static_opts.static_decode_on_cpu = true;
    auto eager = LlamaModel::Load(dir, eager_opts);
    auto fixed = LlamaModel::Load(dir, static_opts);
    ASSERT_TRUE(eager.ok() && fixed.ok());
    const int64_t bs = 4;
    KvPool pe = (*eager)->NewKvPool(64, bs), ps = (*fixed)->NewKvPool(64, bs);
    EXPECT_EQ(pe.scratch_slot, -1);
    EXPECT_EQ(ps.scratch_slot, 64 * bs);
    const int vocab = (*eager)->config().vocab_size;
    // Up to 11 sequences; sequence i owns blocks i, i + 11, i + 22, ... (interleaved).
    constexpr int kSeqs = 11;
    std::vector<std::vector<int>> tables(kSeqs);
    for (int i = 0; i < kSeqs; ++i) {
      for (int j = 0; j < 5; ++j) tables[i].push_back(i + kSeqs * j);
    }
    std::vector<int64_t> length(kSeqs);
    std::mt19937 rng(5);
    // Prefill each sequence with 1..6 tokens (eager in both models).
    for (int i = 0; i < kSeqs; ++i) {
      SeqChunk chunk{RandomTokens(1 + i % 6, vocab, 100 + i), 0, &tables[i]};
      torch::Tensor a = (*eager)->Step({chunk}, &pe);
      torch::Tensor b = (*fixed)->Step({chunk}, &ps);
      ASSERT_TRUE(torch::equal(a, b));
      length[i] = static_cast<int64_t>(chunk.tokens.size());
    }
    // Decode steps over varying sets of sequences: 1, 3, 2, 5, 11, 4, 8, 1 rows.
    for (int n : {1, 3, 2, 5, 11, 4, 8, 1}) {
      std::vector<SeqChunk> chunks;
      for (int i = 0; i < n; ++i) {
        const int s = (i * 3 + n) % kSeqs;
        bool seen = false;
        for (const auto& ch : chunks) seen |= ch.block_table == &tables[s];
        if (seen) continue;
        chunks.push_back(SeqChunk{{static_cast<int>(rng() % vocab)}, length[s], &tables[s]});
      }
      torch::Tensor a = (*eager)->Step(chunks, &pe);
      torch::Tensor b = (*fixed)->Step(chunks, &ps);
      ASSERT_EQ(a.sizes(), b.sizes());
      EXPECT_TRUE(torch::equal(a, b)) << "rows " << chunks.size() << ", max |diff| "
                                      << (a - b).abs().max().item<double>();
      for (const auto& ch : chunks) {
        for (int i = 0; i < kSeqs; ++i) {
          if (ch.block_table == &tables[i]) ++length[i];
        }
      }
    }
    // The pools agree on every real slot (the spare one is the static pool's alone).
    for (size_t l = 0; l < pe.k.size(); ++l) {
      EXPECT_TRUE(torch::equal(pe.k[l], ps.k[l].narrow(0, 0, 64 * bs))) << "layer " << l;
      EXPECT_TRUE(torch::equal(pe.v[l], ps.v[l].narrow(0, 0, 64 * bs))) << "layer " << l;
    }
    EXPECT_EQ(DecodeBuckets(**fixed), (std::vector<int64_t>{1, 2, 4, 8, 16}));
    EXPECT_TRUE(DecodeBuckets(**eager).empty());
    std::filesystem::remove_all(dir);
  }
}

}  // namespace
}  // namespace streamgen
