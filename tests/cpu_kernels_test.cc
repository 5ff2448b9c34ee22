// The CPU kernels of engine/model/cpu_kernels.h other than the linear layers
// (tests/cpu_linear_test.cc): PagedDecodeAttention, SiluMul, GeluTanhMul and RmsNorm
// against results computed here in float64 from the same (already rounded)
// inputs, each within a bound derived from the kernel's arithmetic (below);
// RotaryInPlace bit for bit against libtorch's ops. Attention covers
// scattered block tables, ragged lengths, sliding windows, GQA/MQA, head dims
// that take the AVX-512 path (64, 128) and the generic one (48), float32 and
// bfloat16 pools. Every test runs once per body this CPU has (portable, AVX2,
// AVX-512: kernel_test_util.h's kAllBodies); the vector bodies are also
// compared with each other (bit for bit where their arithmetic per element is
// the same).
#include "engine/model/cpu_kernels.h"
#include "tests/kernel_test_util.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>
#include <torch/types.h>
#include <torch/utils.h>

namespace streamgen {
namespace {

// ---- Which bodies run ----

std::string IsaName(KernelIsa isa) { return KernelIsaName(isa); }

// ---- Error bounds (tests/kernel_test_util.h: the method and the helpers) ----

// The float32 exp() of the kernels (Cephes' polynomial, ~2e-7 ~ 3.4 u32
// relative) and of libtorch (SLEEF's 1-ulp functions, or libm's): allowed
// 8 u32 relative.
constexpr double kExpError = 8 * kU32;

double UnitRoundoff(torch::ScalarType t) { return t == torch::kBFloat16 ? kUBf16 : kU32; }
// Relative errors a and b in sequence: (1 + a)(1 + b) - 1.
double Then(double a, double b) { return a + b + a * b; }

// ---- PagedDecodeAttention ----

struct Case {
  int64_t heads, kv_heads, head_dim;
  torch::ScalarType dtype;
  int64_t window;  // 0: none
};

using AttentionParam = std::tuple<Case, KernelIsa>;

std::string Name(const testing::TestParamInfo<AttentionParam>& info) {
  const Case& c = std::get<0>(info.param);
  return "H" + std::to_string(c.heads) + "_KV" + std::to_string(c.kv_heads) + "_D" +
         std::to_string(c.head_dim) + (c.dtype == torch::kBFloat16 ? "_bf16" : "_f32") +
         (c.window > 0 ? "_window" + std::to_string(c.window) : "") + "_" +
         IsaName(std::get<1>(info.param));
}

class PagedDecodeAttentionTest : public testing::TestWithParam<AttentionParam> {};

// The bound of one query head's output o = sum_i p_i v_i, p = softmax(s),
// s_i = scale q.k_i, over L keys of D dims (both bodies: float32 throughout,
// one store in the pool's dtype):
//  - a score is a D-term float32 dot product times scale: off by at most
//    gamma_{D+1} a_i, a_i = scale sum_j |q_j k_ij|; subtracting the maximum
//    rounds once more, u32 |s^_i - max s^| (softmax is shift-invariant, so
//    only these perturbations of the exponent matter): at most Delta =
//    gamma_{D+1} max a + u32 (max s - min s + 2 gamma_{D+1} max a) in all;
//  - exp adds kExpError, so each numerator is e_i (1 + theta_i) with
//    |theta_i| <= theta = e^Delta (1 + kExpError) - 1;
//  - their L-term sum (gamma_{L-1}, positive terms: relative), the reciprocal
//    and the product by it (u32 each) make p^_i = p_i (1 + phi_i), |phi_i| <=
//    phi = (1 + theta)(1 + u32)^2 / ((1 - theta)(1 - gamma_{L-1})) - 1;
//  - the weighted sum of L value rows in float32 adds gamma_L sum p^_i |v_i|:
//    E = (phi + gamma_L (1 + phi)) sum_i p_i |v_ij|; the store adds
//    u_out (|o_j| + E).
// The scores here span far less than 87, so the kernels' exp never flushes a
// term to 0 (which would need an absolute allowance).
//
// With soft-capping (softcap > 0), s_i = c tanh(scale q.k_i / c): the map
// x -> c tanh(x / c) has slope <= 1, so the dot product's error passes
// through undiminished at most, and its own three roundings add at most
// u32 |x| (the division, through the slope), 4 u32 c (libm's tanhf, <= 2
// ulp of a value below 1, with room) and u32 c (the product) per score.
torch::Tensor AttentionBound(const torch::Tensor& q, const torch::Tensor& keys,
                             const torch::Tensor& values, double scale, torch::ScalarType dtype,
                             double softcap = 0.0) {
  const double d = static_cast<double>(q.size(0)), len = static_cast<double>(keys.size(0));
  const torch::Tensor raw = keys.matmul(q) * scale;
  const torch::Tensor s = softcap > 0 ? torch::tanh(raw / softcap) * softcap : raw;
  const torch::Tensor a = keys.abs().matmul(q.abs()) * scale;
  const double cap_err =
      softcap > 0 ? kU32 * raw.abs().max().item<double>() + 5 * kU32 * softcap : 0.0;
  const double score_err = Gamma(d + 1, kU32) * a.max().item<double>() + cap_err;
  const double delta = score_err + kU32 * ((s.max() - s.min()).item<double>() + 2 * score_err);
  const double theta = std::exp(delta) * (1 + kExpError) - 1;
  const double phi =
      (1 + theta) * (1 + kU32) * (1 + kU32) / ((1 - theta) * (1 - Gamma(len - 1, kU32))) - 1;
  const torch::Tensor p = torch::softmax(s, 0);
  const torch::Tensor err = p.matmul(values.abs()) * (phi + Gamma(len, kU32) * (1 + phi));
  const torch::Tensor o = p.matmul(values);
  return err + (o.abs() + err) * (dtype == torch::kBFloat16 ? kUBf16 : 0.0);
}

TEST_P(PagedDecodeAttentionTest, MatchesGatheredReference) {
  const Case c = std::get<0>(GetParam());
  if (!CpuCanRun(std::get<1>(GetParam()))) GTEST_SKIP() << LacksBody(std::get<1>(GetParam()));
  const ScopedKernelIsa isa(std::get<1>(GetParam()));
  torch::manual_seed(7);
  std::mt19937 rng(11);
  const int64_t block = 16, num_blocks = 64, batch = 5;
  const int64_t slots = block * num_blocks;
  torch::Tensor k_pool = torch::randn({slots, c.kv_heads, c.head_dim}).to(c.dtype);
  torch::Tensor v_pool = torch::randn({slots, c.kv_heads, c.head_dim}).to(c.dtype);
  torch::Tensor q = torch::randn({batch, c.heads, c.head_dim}).to(c.dtype);
  // Each sequence gets its own shuffled blocks; lengths cover 1 token, a
  // partial block, exact blocks and many blocks.
  std::vector<int> all(num_blocks);
  std::iota(all.begin(), all.end(), 0);
  std::shuffle(all.begin(), all.end(), rng);
  const int64_t positions[batch] = {0, 5, 15, 31, 200};  // the query's own position
  std::vector<std::vector<int>> tables(batch);
  std::vector<DecodeSeq> seqs;
  size_t next = 0;
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t i = 0; i <= positions[b] / block; ++i) tables[b].push_back(all[next++]);
    const int64_t first = c.window > 0 ? std::max<int64_t>(0, positions[b] - c.window + 1) : 0;
    seqs.push_back({tables[b].data(), first, positions[b]});
  }
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  torch::Tensor out = PagedDecodeAttention(q, k_pool, v_pool, seqs, block, scale);
  ASSERT_EQ(out.sizes(), (std::vector<int64_t>{batch, c.heads * c.head_dim}));
  ASSERT_EQ(out.scalar_type(), c.dtype);

  // Alone (a batch of one, whose KV heads are split among threads) the
  // longest sequence gets bit-identical output: alone and batched must agree.
  torch::Tensor alone = PagedDecodeAttention(q.narrow(0, batch - 1, 1).contiguous(), k_pool,
                                             v_pool, {seqs[batch - 1]}, block, scale);
  EXPECT_TRUE(torch::equal(alone[0], out[batch - 1]));

  auto kd = k_pool.to(torch::kFloat64), vd = v_pool.to(torch::kFloat64);
  auto qd = q.to(torch::kFloat64);
  auto got = out.view({batch, c.heads, c.head_dim});
  const int64_t g = c.heads / c.kv_heads;
  for (int64_t b = 0; b < batch; ++b) {
    std::vector<int64_t> rows;
    for (int64_t p = seqs[b].first; p <= seqs[b].last; ++p) {
      rows.push_back(int64_t{tables[b][p / block]} * block + p % block);
    }
    auto idx = torch::tensor(rows);
    for (int64_t h = 0; h < c.heads; ++h) {
      auto keys = kd.select(1, h / g).index_select(0, idx);    // [L, D]
      auto values = vd.select(1, h / g).index_select(0, idx);  // [L, D]
      auto probs = torch::softmax(keys.matmul(qd[b][h]) * scale, 0);
      auto want = probs.matmul(values);
      ExpectWithinBound(got[b][h], want, AttentionBound(qd[b][h], keys, values, scale, c.dtype),
                        "sequence " + std::to_string(b) + " head " + std::to_string(h));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, PagedDecodeAttentionTest,
    testing::Combine(
        testing::Values(Case{4, 4, 64, torch::kFloat32, 0}, Case{4, 4, 64, torch::kBFloat16, 0},
                        Case{8, 2, 64, torch::kFloat32, 0}, Case{8, 2, 128, torch::kBFloat16, 0},
                        Case{4, 1, 128, torch::kFloat32, 0}, Case{6, 3, 48, torch::kFloat32, 0},
                        Case{6, 3, 48, torch::kBFloat16, 0}, Case{8, 2, 64, torch::kFloat32, 20},
                        Case{4, 4, 48, torch::kFloat32, 7}, Case{12, 12, 64, torch::kBFloat16, 0},
                        Case{32, 8, 128, torch::kFloat32, 0}),
        testing::ValuesIn(kAllBodies)),
    Name);

TEST(PagedDecodeAttention, RejectsMismatchedShapes) {
  torch::Tensor pool = torch::zeros({32, 2, 64});  // [slots, KV, D]
  torch::Tensor q = torch::zeros({1, 4, 64});
  std::vector<int> table = {0};
  std::vector<DecodeSeq> seqs = {{table.data(), 0, 3}};
  EXPECT_NO_THROW(PagedDecodeAttention(q, pool, pool, seqs, 16, 0.125f));
  try {
    PagedDecodeAttention(torch::zeros({1, 3, 64}), pool, pool, seqs, 16, 0.125f);
    FAIL() << "3 heads over 2 KV heads accepted";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("shapes do not match"), std::string::npos) << e.what();
  }
  try {
    PagedDecodeAttention(q, pool.to(torch::kBFloat16), pool.to(torch::kBFloat16), seqs, 16,
                         0.125f);
    FAIL() << "dtype mismatch accepted";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("pools must be"), std::string::npos) << e.what();
  }
}

// ---- PagedDecodeAttention with soft-capping ----

// Soft-capped attention (Gemma 2's attn_logit_softcapping) against the
// formula op by op in float64, as transformers' eager attention writes it:
// scores = q k^T * scale; scores = tanh(scores / cap) * cap; softmax; @ v.
// scale 1 and caps of 2 and 5 put most scores well inside tanh's bend (they
// are ~N(0, D)), so an uncapped kernel misses the reference by far more than
// the bound (checked too, so this test cannot pass with the cap ignored).
using SoftcapParam = std::tuple<int64_t /*head_dim*/, torch::ScalarType, float /*cap*/, KernelIsa>;

class PagedDecodeSoftcapTest : public testing::TestWithParam<SoftcapParam> {};

TEST_P(PagedDecodeSoftcapTest, MatchesTheOpByOpFormula) {
  const auto [d, dtype, cap, body] = GetParam();
  if (!CpuCanRun(body)) GTEST_SKIP() << LacksBody(body);
  const ScopedKernelIsa isa(body);
  torch::manual_seed(3);
  const int64_t heads = 4, kv_heads = 2, block = 16, batch = 3;
  torch::Tensor k_pool = torch::randn({block * 8, kv_heads, d}).to(dtype);
  torch::Tensor v_pool = torch::randn({block * 8, kv_heads, d}).to(dtype);
  torch::Tensor q = torch::randn({batch, heads, d}).to(dtype);
  // Blocks in reverse order; rows of 1, 18 and 40 keys (the last windowed from 10).
  std::vector<int> table = {7, 6, 5};
  std::vector<DecodeSeq> seqs = {
      {table.data(), 0, 0}, {table.data(), 0, 17}, {table.data(), 10, 40}};
  const float scale = 1.0f;
  torch::Tensor out = PagedDecodeAttention(q, k_pool, v_pool, seqs, block, scale, cap);
  torch::Tensor uncapped = PagedDecodeAttention(q, k_pool, v_pool, seqs, block, scale);
  auto kd = k_pool.to(torch::kFloat64), vd = v_pool.to(torch::kFloat64);
  auto qd = q.to(torch::kFloat64);
  auto got = out.view({batch, heads, d});
  auto got_uncapped = uncapped.to(torch::kFloat64).view({batch, heads, d});
  double worst_uncapped_excess = 0;  // max over rows of max |uncapped - want| / bound
  for (int64_t b = 0; b < batch; ++b) {
    std::vector<int64_t> rows;
    for (int64_t p = seqs[b].first; p <= seqs[b].last; ++p) {
      rows.push_back(int64_t{table[p / block]} * block + p % block);
    }
    auto idx = torch::tensor(rows);
    for (int64_t h = 0; h < heads; ++h) {
      auto keys = kd.select(1, h / 2).index_select(0, idx);    // [L, D]
      auto values = vd.select(1, h / 2).index_select(0, idx);  // [L, D]
      auto scores = keys.matmul(qd[b][h]) * scale;
      scores = scores / cap;
      scores = torch::tanh(scores);
      scores = scores * cap;
      auto want = torch::softmax(scores, 0).matmul(values);
      auto bound = AttentionBound(qd[b][h], keys, values, scale, dtype, cap);
      ExpectWithinBound(got[b][h], want, bound,
                        "sequence " + std::to_string(b) + " head " + std::to_string(h));
      worst_uncapped_excess = std::max(
          worst_uncapped_excess, ((got_uncapped[b][h] - want).abs() / bound).max().item<double>());
    }
  }
  EXPECT_GT(worst_uncapped_excess, 100.0) << "the cap changes too little for this test to see it";
}

std::string SoftcapName(const testing::TestParamInfo<SoftcapParam>& info) {
  const auto [d, dtype, cap, body] = info.param;
  return "D" + std::to_string(d) + (dtype == torch::kBFloat16 ? "_bf16" : "_f32") + "_cap" +
         std::to_string(static_cast<int>(cap)) + "_" + IsaName(body);
}

INSTANTIATE_TEST_SUITE_P(Caps, PagedDecodeSoftcapTest,
                         testing::Combine(testing::Values<int64_t>(64, 48),
                                          testing::Values(torch::kFloat32, torch::kBFloat16),
                                          testing::Values(2.0f, 5.0f),
                                          testing::ValuesIn(kAllBodies)),
                         SoftcapName);

TEST(PagedDecodeAttention, RejectsABadScaleOrSoftcap) {
  torch::Tensor pool = torch::zeros({32, 2, 64});  // [slots, KV, D]
  torch::Tensor q = torch::zeros({1, 4, 64});
  std::vector<int> table = {0};
  std::vector<DecodeSeq> seqs = {{table.data(), 0, 3}};
  for (const auto& [scale, cap] :
       std::vector<std::pair<float, float>>{{0.125f, -1.0f},
                                            {0.125f, std::nanf("")},
                                            {std::nanf(""), 0.0f},
                                            {0.125f, std::numeric_limits<float>::infinity()}}) {
    try {
      PagedDecodeAttention(q, pool, pool, seqs, 16, scale, cap);
      FAIL() << "scale " << scale << ", softcap " << cap << " accepted";
    } catch (const c10::Error& e) {
      EXPECT_NE(std::string(e.what()).find(
                    "PagedDecodeAttention: scale must be finite and softcap finite and >= 0"),
                std::string::npos)
          << e.what();
    }
  }
}

// ---- The element-wise kernels, each once per body ----

class KernelBodyTest : public testing::TestWithParam<KernelIsa> {};
using SiluMulTest = KernelBodyTest;
using GeluTanhMulTest = KernelBodyTest;
using RmsNormTest = KernelBodyTest;
using RotaryInPlaceTest = KernelBodyTest;

std::string BodyName(const testing::TestParamInfo<KernelIsa>& info) {
  return IsaName(info.param);
}

// SiluMul against silu(gate) * up in float64, on rows whose length is not a
// multiple of 16 (the masked tail), over a wide range of inputs (exp's clamp
// included). Relative error of y = gate * sigmoid(gate) * up:
//  - AVX-512 and AVX2 bodies: float32 throughout, exp (kExpError; its argument -|gate|
//    is exact, and sigmoid passes on at most exp's relative error), then 1 +
//    e, the reciprocal, e * it (gate < 0), gate * sigmoid and * up: five
//    float32 roundings; one store in the output dtype;
//  - portable body: libtorch's silu (x / (1 + exp(-x))) and mul, whose
//    reduced-precision vector code may round each op's result to the output
//    dtype (libtorch 1.13 does for bfloat16: errors up to 2.6 u_bf16 on
//    AVX-512, 0.0102 relative on AVX2 in issue 18, beyond two roundings):
//    exp, 1 + e, x / it, * up: four roundings in the output dtype, plus
//    exp's error.
// Both bodies flush exp below float32's normal range (e^-87 < 2^-125; the
// kernels' clamp, libtorch's overflow of exp(-gate) to inf) to 0, where y is
// below |gate * up| 2^-125 in magnitude: the one absolute allowance, which
// only the +-120 inputs need.
TEST_P(SiluMulTest, MatchesFloat64) {
  if (!CpuCanRun(GetParam())) GTEST_SKIP() << LacksBody(GetParam());
  const ScopedKernelIsa isa(GetParam());
  // The AVX2 and AVX-512 bodies share the arithmetic (vector_body).
  const bool avx512 = std::string(ActiveKernelIsa()) != "portable";
  torch::manual_seed(3);
  for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    const double u_out = UnitRoundoff(dtype);
    // AVX-512, bfloat16: silu's output is rounded to bfloat16 before the
    // product, as transformers rounds (one more rounding in the output dtype).
    const double rel = avx512 ? Then(Then(kExpError, Gamma(5, kU32)),
                                     Gamma(dtype == torch::kBFloat16 ? 2 : 1, u_out))
                              : Then(kExpError, Gamma(4, u_out));
    for (int64_t inter : {16, 37, 2048}) {
      torch::Tensor gu = (torch::randn({5, 2 * inter}) * 8).to(dtype);
      gu[0][0] = 120.0f;   // exp(-120) underflows: silu = x
      gu[0][1] = -120.0f;  // silu = 0
      torch::Tensor got = SiluMul(gu);
      ASSERT_EQ(got.sizes(), (std::vector<int64_t>{5, inter}));
      ASSERT_EQ(got.scalar_type(), dtype);
      torch::Tensor g = gu.narrow(1, 0, inter).to(torch::kFloat64);
      torch::Tensor u = gu.narrow(1, inter, inter).to(torch::kFloat64);
      torch::Tensor want = g * torch::sigmoid(g) * u;
      torch::Tensor bound = want.abs() * rel + (g * u).abs() * 0x1p-125;
      ExpectWithinBound(got, want, bound,
                        std::string(c10::toString(dtype)) + " inter " + std::to_string(inter));
      if (avx512 && dtype == torch::kBFloat16 && inter >= 2048) {
        // transformers' roundings on bfloat16 tensors (PyTorch 2.x): silu(gate)
        // stored in bfloat16, then the product (as GeluTanhMulTest explains);
        // rounding once instead agrees on a much smaller share of the
        // elements. (The portable body is libtorch 1.13's own bfloat16 silu,
        // which rounds its steps: see the bound above.)
        torch::Tensor act = torch::silu(g.to(torch::kFloat32));
        torch::Tensor twice = (act.to(dtype).to(torch::kFloat32) * u.to(torch::kFloat32)).to(dtype);
        torch::Tensor once = (act * u.to(torch::kFloat32)).to(dtype);
        const double n = static_cast<double>(got.numel());
        EXPECT_GT(got.eq(twice).sum().item<double>() / n, 0.99);
        EXPECT_LT(got.eq(once).sum().item<double>() / n, 0.95)
            << "the data do not tell the roundings apart";
      }
    }
  }
}

// GeluTanhMul against gelu_tanh(gate) * up in float64, gelu_tanh(g) = 0.5 g
// (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3))) as transformers' GELUTanh and
// libtorch's gelu(approximate="tanh") define it. Both bodies compute z = 2c (g
// + 0.044715 g^3) (seven roundings at most, constants included; the two terms
// have g's sign, so no cancellation: gamma_7 relative), e = exp(-|z|) (off by
// kExpError, and by a factor e^(|z| gamma_7) from z's error), sigmoid(z) = 1 /
// (1 + e) or e / (1 + e) (three roundings; e's relative error passes on at
// most whole, and only a fraction min(1, e) of it for z >= 0), g * sigmoid
// (one), then float32: * up (one); bfloat16: the activation stored (u_bf16)
// and the product stored (u_bf16). e below float32's range is 0 (y below |g
// u| 2^-125): the one absolute allowance, as for SiluMul.
TEST_P(GeluTanhMulTest, MatchesFloat64) {
  if (!CpuCanRun(GetParam())) GTEST_SKIP() << LacksBody(GetParam());
  const ScopedKernelIsa isa(GetParam());
  torch::manual_seed(4);
  for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    for (int64_t inter : {16, 37, 2048}) {
      torch::Tensor gu = (torch::randn({5, 2 * inter}) * 4).to(dtype);
      gu[0][0] = 60.0f;   // z ~ 1.6e4: gelu = g
      gu[0][1] = -60.0f;  // gelu = -0
      gu[0][2] = 0.0f;
      torch::Tensor got = GeluTanhMul(gu);
      ASSERT_EQ(got.sizes(), (std::vector<int64_t>{5, inter}));
      ASSERT_EQ(got.scalar_type(), dtype);
      torch::Tensor g = gu.narrow(1, 0, inter).to(torch::kFloat64);
      torch::Tensor u = gu.narrow(1, inter, inter).to(torch::kFloat64);
      const double c = std::sqrt(2.0 / M_PI);
      torch::Tensor inner = c * (g + 0.044715 * g.pow(3));
      // 0.5 g (1 + tanh(inner)) = g / (1 + exp(-2 inner)): the same value,
      // without the cancellation of 1 + tanh near -1 that leaves float64
      // with 0 for g below ~-6 (the kernel's tiny values there are right).
      torch::Tensor want = g / (1 + torch::exp(-2 * inner)) * u;
      torch::Tensor z_abs = (2 * inner).abs();
      torch::Tensor e_rel = torch::expm1(z_abs * Gamma(7, kU32)) + kExpError;
      e_rel = torch::where(inner >= 0, e_rel * torch::exp(-z_abs).clamp_max(1.0), e_rel);
      torch::Tensor act_rel = e_rel + Gamma(4, kU32) + e_rel * Gamma(4, kU32);
      const double out_rel = dtype == torch::kBFloat16 ? Gamma(2, kUBf16) : Gamma(1, kU32);
      torch::Tensor rel = act_rel + out_rel + act_rel * out_rel;
      torch::Tensor bound = want.abs() * rel + (g * u).abs() * 0x1p-125;
      ExpectWithinBound(got, want, bound,
                        std::string(c10::toString(dtype)) + " inter " + std::to_string(inter));
      if (dtype == torch::kBFloat16) {
        // transformers' roundings on bfloat16 tensors: act(gate) stored in
        // bfloat16, then the product stored. PyTorch 2.x computes gelu of a
        // bfloat16 tensor in float32 and stores once: that is the float32 op
        // below, rounded. The kernel's float32 activation and libtorch's
        // differ by ~1e-6 relative, so their bfloat16 roundings differ only
        // where a rounding boundary (2^-8 |v| apart) falls between them (a
        // fraction ~2^8 1e-6 in expectation); rounding only once (the product
        // of the float32 activation) differs on a large part of the elements.
        torch::Tensor act = torch::gelu(g.to(torch::kFloat32), "tanh");
        torch::Tensor twice = (act.to(dtype).to(torch::kFloat32) * u.to(torch::kFloat32)).to(dtype);
        torch::Tensor once = (act * u.to(torch::kFloat32)).to(dtype);
        // Only where g >= -3: below, libtorch's float32 1 + tanh cancels
        // (1e-5 relative at g = -3, everything at g < -6).
        torch::Tensor where = g >= -3;
        const double n = where.sum().item<double>();
        const double same = (got.eq(twice) & where).sum().item<double>() / n;
        const double same_once = (got.eq(once) & where).sum().item<double>() / n;
        EXPECT_GT(same, 0.99) << "inter " << inter;
        if (inter >= 2048) {
          EXPECT_LT(same_once, 0.95) << "the data do not tell the roundings apart";
        }
      }
    }
  }
}

// The libtorch path (non-contiguous input) is the same function, and bad
// shapes are refused with a message.
TEST(GeluTanhMul, OpPathAndShapes) {
  torch::manual_seed(6);
  torch::Tensor wide = torch::randn({4, 2 * 40});
  torch::Tensor gu = wide.narrow(1, 0, 64);  // rows not contiguous: libtorch's gelu and mul
  ASSERT_FALSE(gu.is_contiguous());
  torch::Tensor got = GeluTanhMul(gu);
  torch::Tensor kernel = GeluTanhMul(gu.contiguous());
  EXPECT_TRUE(torch::allclose(got, kernel, 1e-5, 1e-6));
  try {
    GeluTanhMul(torch::zeros({2, 3}));
    ADD_FAILURE() << "odd width accepted";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what_without_backtrace()).find("GeluTanhMul: gu must be [M, 2I]"),
              std::string::npos)
        << e.what_without_backtrace();
  }
}

// RmsNorm against Hugging Face's LlamaRMSNorm: y = w * x / sqrt(mean(x^2) +
// eps), in float64. Both bodies (the AVX-512 one, and the portable one, which
// is that formula in libtorch ops) compute r = 1 / sqrt(mean(x^2) + eps) in
// float32: n rounded squares summed (gamma_n), the mean's division (or a
// product by a rounded 1 / n: 2), + eps, sqrt and the reciprocal: r within
// gamma_{n+5} relative (the square root halves part of it; not counted).
// Then x * r (u32): gamma_{n+6}(u32); stored to the dtype (bfloat16: u_bf16;
// float32: exact) and times w (u_out): gamma_2(u_out) more. y = 0 only where
// x = 0, and the kernel's y is 0 there too: no absolute allowance.
TEST_P(RmsNormTest, MatchesFloat64) {
  if (!CpuCanRun(GetParam())) GTEST_SKIP() << LacksBody(GetParam());
  const ScopedKernelIsa isa(GetParam());
  torch::manual_seed(5);
  const double eps = 1e-6;
  const double eps32 = static_cast<float>(eps);  // what both bodies add
  for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    for (int64_t n : {16, 40, 768}) {
      const std::string what = std::string(c10::toString(dtype)) + " n " + std::to_string(n);
      torch::Tensor x = (torch::randn({7, n}) * 3).to(dtype);
      torch::Tensor w = (torch::rand({n}) + 0.5).to(dtype);
      torch::Tensor got = RmsNorm(x, w, eps);
      ASSERT_EQ(got.sizes(), x.sizes());
      ASSERT_EQ(got.scalar_type(), dtype);
      torch::Tensor xd = x.to(torch::kFloat64), wd = w.to(torch::kFloat64);
      torch::Tensor want = wd * xd * torch::rsqrt(xd.pow(2).mean(-1, true) + eps32);
      const double rel =
          Then(Gamma(static_cast<double>(n) + 6, kU32), Gamma(2, UnitRoundoff(dtype)));
      ExpectWithinBound(got, want, want.abs() * rel, what);
      // Hugging Face's roundings (the normalised value rounded to bfloat16,
      // then times the weight): the kernel and that formula in libtorch ops
      // compute r within gamma_{n+5}(u32) of the exact one each, so x * r of
      // the two differ by at most delta = 2 gamma_{n+5} + 2 u32 relative, and
      // round to different bfloat16 values only where a rounding boundary
      // (at least 2^-8 |v| apart) falls between them: a fraction 2^8 delta of
      // the elements in expectation, <= 2.4% at n = 768 (typically none
      // differ). Rounding once instead of twice differs on ~27% of them.
      if (dtype == torch::kBFloat16) {
        torch::Tensor xf = x.to(torch::kFloat32);
        torch::Tensor hf = w * (xf * torch::rsqrt(xf.pow(2).mean(-1, true) + eps)).to(dtype);
        const double same = got.eq(hf).to(torch::kFloat32).mean().item<double>();
        EXPECT_GT(same, 0.95) << what;
      }
    }
  }
}

// RotaryInPlace has one body (GCC's target_clones picks the CPU's clone;
// SetKernelIsa does not choose it); it runs under every setting all the same.
// Whole heads (rotary_dim = D, given or by default) and partial rotary
// (rotary_dim < D, Phi-3's partial_rotary_factor: 96 of 128, 32 of 80).
TEST_P(RotaryInPlaceTest, BitIdenticalToTheLibtorchOps) {
  if (!CpuCanRun(GetParam())) GTEST_SKIP() << LacksBody(GetParam());
  const ScopedKernelIsa isa(GetParam());
  torch::manual_seed(21);
  struct Shape {
    int64_t d, rd, arg;  // head_dim, rotary_dim, the rotary_dim argument (0: default)
  };
  for (torch::ScalarType dt : {torch::kFloat32, torch::kBFloat16}) {
    for (const Shape& shape : {Shape{64, 64, 0}, Shape{128, 128, 128}, Shape{48, 48, 0},
                               Shape{128, 96, 96}, Shape{80, 32, 32}}) {
      const int64_t d = shape.d, rd = shape.rd;
      const int64_t heads = 5, extra = 3, t = 37, p = 300;
      torch::Tensor qkv = torch::randn({t, (heads + extra) * d}).to(dt);
      torch::Tensor angles = torch::rand({p, rd}) * 6;
      torch::Tensor cos = angles.cos().to(dt), sin = angles.sin().to(dt);
      std::vector<int64_t> positions;
      for (int64_t i = 0; i < t; ++i) positions.push_back((i * 97) % p);
      // The op-by-op path (LlamaModel::ApplyRope; transformers' Phi-3
      // apply_rotary_pos_emb: cat(rotated q_rot, q_pass)).
      torch::Tensor pos = torch::tensor(positions);
      torch::Tensor c = cos.index_select(0, pos).unsqueeze(1), s = sin.index_select(0, pos).unsqueeze(1);
      torch::Tensor x = qkv.narrow(1, 0, heads * d).view({t, heads, d});
      torch::Tensor x_rot = x.narrow(-1, 0, rd), x_pass = x.narrow(-1, rd, d - rd);
      const int64_t half = rd / 2;
      torch::Tensor rotated =
          torch::cat({-x_rot.narrow(-1, half, half), x_rot.narrow(-1, 0, half)}, -1);
      torch::Tensor want = torch::cat({x_rot * c + rotated * s, x_pass}, -1);
      torch::Tensor untouched = qkv.narrow(1, heads * d, extra * d).clone();
      RotaryInPlace(qkv, heads, d, cos, sin, positions, shape.arg);
      EXPECT_TRUE(torch::equal(qkv.narrow(1, 0, heads * d).view({t, heads, d}), want))
          << "dtype " << dt << " D " << d << " rotary_dim " << rd;
      EXPECT_TRUE(torch::equal(qkv.narrow(1, heads * d, extra * d), untouched));
    }
  }
  {  // tables of another width than rotary_dim; rotary_dim beyond the head
    torch::Tensor qkv = torch::randn({1, 128});
    torch::Tensor table = torch::randn({4, 64});
    try {
      RotaryInPlace(qkv, 1, 128, table, table, {0}, 96);
      ADD_FAILURE() << "no error";
    } catch (const c10::Error& e) {
      EXPECT_NE(std::string(e.what_without_backtrace()).find("cos/sin [P, rotary_dim]"),
                std::string::npos)
          << e.what_without_backtrace();
    }
    torch::Tensor wide = torch::randn({4, 130});
    try {
      RotaryInPlace(qkv, 1, 128, wide, wide, {0}, 130);
      ADD_FAILURE() << "no error";
    } catch (const c10::Error& e) {
      EXPECT_NE(std::string(e.what_without_backtrace()).find("rotary_dim even in [2, head_dim]"),
                std::string::npos)
          << e.what_without_backtrace();
    }
  }
  torch::Tensor qkv = torch::randn({2, 64});
  torch::Tensor table = torch::randn({4, 32});
  try {
    RotaryInPlace(qkv, 2, 32, table, table, {0, 4});
    ADD_FAILURE() << "no error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what_without_backtrace()).find("RotaryInPlace: position 4"),
              std::string::npos);
  }
}

// The AVX2 and AVX-512 bodies of SiluMul and GeluTanhMul do the same
// float32 operations per element in the same order (the same exp polynomial
// with FMA, the same sigmoid, the same bfloat16 roundings), so they must agree
// bit for bit, tails included (AVX2 pads them to 8 lanes, AVX-512 masks).
TEST(VectorBodies, SiluMulAndGeluTanhMulAgreeBitForBit) {
  if (!CpuCanRun(KernelIsa::kAvx512)) GTEST_SKIP() << LacksBody(KernelIsa::kAvx512);
  torch::manual_seed(17);
  for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    for (int64_t inter : {1, 7, 16, 37, 2053}) {
      const torch::Tensor gu = (torch::randn({3, 2 * inter}) * 6).to(dtype);
      torch::Tensor silu[2], gelu[2];
      int i = 0;
      for (KernelIsa body : {KernelIsa::kAvx2, KernelIsa::kAvx512}) {
        const ScopedKernelIsa isa(body);
        silu[i] = SiluMul(gu);
        gelu[i] = GeluTanhMul(gu);
        ++i;
      }
      const std::string what = std::string(c10::toString(dtype)) + " inter " + std::to_string(inter);
      EXPECT_TRUE(torch::equal(silu[0], silu[1])) << "SiluMul " << what;
      EXPECT_TRUE(torch::equal(gelu[0], gelu[1])) << "GeluTanhMul " << what;
    }
  }
}

// The attention bodies split the dot products over 8 or 16 lanes: not bit
// for bit, but each within its bound of the exact result (the tests above);
// here also within a small distance of each other, on a head dim that every
// vector body takes (64) and one only AVX2 takes (the multiple of 8, 40).
TEST(VectorBodies, AttentionBodiesAgree) {
  torch::manual_seed(19);
  for (int64_t d : {64, 40}) {
    for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
      torch::Tensor k_pool = torch::randn({16 * 8, 2, d}).to(dtype);
      torch::Tensor v_pool = torch::randn({16 * 8, 2, d}).to(dtype);
      torch::Tensor q = torch::randn({2, 4, d}).to(dtype);
      std::vector<int> table = {3, 1, 7, 0};
      std::vector<DecodeSeq> seqs = {{table.data(), 0, 37}, {table.data(), 5, 60}};
      std::vector<torch::Tensor> outs;
      for (KernelIsa body : kAllBodies) {
        if (!CpuCanRun(body)) continue;
        const ScopedKernelIsa isa(body);
        outs.push_back(PagedDecodeAttention(q, k_pool, v_pool, seqs, 16, 0.125f).to(torch::kFloat32));
      }
      // Outputs are convex combinations of values ~N(0, 1): |o| < 5; float32
      // sums of <= 64 terms differ by far less than 1e-4; bfloat16 outputs by
      // at most one rounding of each (2^-8 relative).
      const double tol = dtype == torch::kBFloat16 ? 5 * 2 * kUBf16 : 1e-4;
      for (size_t i = 1; i < outs.size(); ++i) {
        EXPECT_LE((outs[i] - outs[0]).abs().max().item<double>(), tol)
            << "body " << i << " vs the portable one, D " << d << " " << c10::toString(dtype);
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Bodies, SiluMulTest,
                         testing::ValuesIn(kAllBodies), BodyName);
INSTANTIATE_TEST_SUITE_P(Bodies, GeluTanhMulTest,
                         testing::ValuesIn(kAllBodies), BodyName);
INSTANTIATE_TEST_SUITE_P(Bodies, RmsNormTest,
                         testing::ValuesIn(kAllBodies), BodyName);
INSTANTIATE_TEST_SUITE_P(Bodies, RotaryInPlaceTest,
                         testing::ValuesIn(kAllBodies), BodyName);

}  // namespace
}  // namespace streamgen
