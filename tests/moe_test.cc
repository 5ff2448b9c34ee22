// MoeMlp (engine/model/mlp.h) against a float64 reference written here from
// transformers' MixtralSparseMoeBlock / Qwen3MoeSparseMoeBlock: for every
// token the router logits (in the compute dtype), softmax over all experts,
// top-k (ties to the lower index), optional renormalisation, and the weighted
// sum of the chosen experts' MLPs, in explicit loops over tokens, experts and
// matrix elements.
//
// The router and the inputs lie on a grid (multiples of 1/64 and 1/8) so the
// logits are exact in float32 and in float64 before their rounding to the
// compute dtype: the kernel and the reference see the same logits and must
// pick the same experts (asserted exactly), whatever the summation order.
// The experts' weights are random; int8 cases compare with the dequantized
// weights (the quantization error itself is QuantizeInt8's, tested in
// tests/cpu_linear_test.cc).
#include "engine/model/mlp.h"
#include "tests/kernel_test_util.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <gtest/gtest.h>
#include <torch/types.h>
#include <torch/utils.h>

namespace streamgen {
namespace {

// How a case stores its weights and activations.
enum class Storage { kFloat32, kBFloat16, kInt8Float32, kInt8BFloat16 };

torch::ScalarType ComputeDtype(Storage s) {
  return s == Storage::kBFloat16 || s == Storage::kInt8BFloat16 ? torch::kBFloat16
                                                                : torch::kFloat32;
}
bool Int8(Storage s) { return s == Storage::kInt8Float32 || s == Storage::kInt8BFloat16; }
std::string StorageName(Storage s) {
  switch (s) {
    case Storage::kFloat32: return "f32";
    case Storage::kBFloat16: return "bf16";
    case Storage::kInt8Float32: return "int8_f32";
    case Storage::kInt8BFloat16: return "int8_bf16";
  }
  return "?";
}

// A MoE layer as the kernel gets it and as the reference reads it (float64
// copies of exactly the values the kernel uses).
struct Layer {
  MoeWeights w;
  torch::Tensor router;                     // [E, hidden] float64
  std::vector<torch::Tensor> gate, up, down;  // E x [I, hidden], [I, hidden], [hidden, I] float64
};

// Multiples of `step` in [-max_k step, max_k step].
torch::Tensor Grid(std::vector<int64_t> shape, int64_t max_k, double step) {
  return torch::randint(-max_k, max_k + 1, shape, torch::kFloat64) * step;
}

Layer MakeLayer(const MoeConfig& moe, int64_t hidden, Storage s) {
  const auto dt = ComputeDtype(s);
  const int64_t inter = moe.expert_intermediate_size;
  Layer l;
  l.router = Grid({moe.num_experts, hidden}, 8, 1.0 / 64);
  l.w.router = l.router.to(dt);
  auto stored = [&](const torch::Tensor& w, torch::Tensor* as_double) {
    const torch::Tensor rounded = w.to(dt);
    if (!Int8(s)) {
      *as_double = rounded.to(torch::kFloat64);
      return LinearWeight{rounded.contiguous(), {}};
    }
    LinearWeight q = QuantizeInt8(rounded);
    *as_double = DequantizeInt8(q).to(torch::kFloat64);
    return q;
  };
  for (int64_t e = 0; e < moe.num_experts; ++e) {
    torch::Tensor gu = torch::randn({2 * inter, hidden}) / std::sqrt(static_cast<double>(hidden));
    torch::Tensor dn = torch::randn({hidden, inter}) / std::sqrt(static_cast<double>(inter));
    torch::Tensor gu_d, dn_d;
    l.w.gate_up.push_back(stored(gu, &gu_d));
    l.w.down.push_back(stored(dn, &dn_d));
    l.gate.push_back(gu_d.narrow(0, 0, inter).contiguous());
    l.up.push_back(gu_d.narrow(0, inter, inter).contiguous());
    l.down.push_back(dn_d.contiguous());
  }
  return l;
}

double Act(double g, Activation act) {
  if (act == Activation::kSilu) return g / (1 + std::exp(-g));
  const double c = std::sqrt(2.0 / M_PI);  // transformers' GELUTanh / gelu_pytorch_tanh
  return 0.5 * g * (1 + std::tanh(c * (g + 0.044715 * g * g * g)));
}

// Value rounded to the compute dtype (transformers' router Linear outputs it).
double RoundTo(double v, torch::ScalarType dt) {
  if (dt == torch::kFloat64) return v;
  const float f = static_cast<float>(v);
  return dt == torch::kBFloat16 ? static_cast<float>(c10::BFloat16(f)) : f;
}

struct Reference {
  torch::Tensor out;        // [T, hidden] float64
  torch::Tensor magnitude;  // [T, hidden]: the same sums over absolute values (the error scale)
  std::vector<std::set<int>> chosen;  // per token
};

Reference RunReference(const torch::Tensor& x_in, const Layer& l, const MoeConfig& moe,
                       Activation act, torch::ScalarType dt) {
  const torch::Tensor x = x_in.to(torch::kFloat64).contiguous();
  const int64_t t = x.size(0), hidden = x.size(1), e_n = moe.num_experts;
  const int64_t inter = moe.expert_intermediate_size;
  auto xa = x.accessor<double, 2>();
  auto ra = l.router.accessor<double, 2>();
  Reference ref{torch::zeros({t, hidden}, torch::kFloat64), torch::zeros({t, hidden}, torch::kFloat64),
                std::vector<std::set<int>>(t)};
  auto oa = ref.out.accessor<double, 2>();
  auto ma = ref.magnitude.accessor<double, 2>();
  for (int64_t tok = 0; tok < t; ++tok) {
    std::vector<double> p(e_n);
    double mx = -INFINITY;
    for (int64_t e = 0; e < e_n; ++e) {
      double logit = 0;
      for (int64_t j = 0; j < hidden; ++j) logit += xa[tok][j] * ra[e][j];
      p[e] = RoundTo(logit, dt);
      mx = std::max(mx, p[e]);
    }
    double sum = 0;
    for (double& v : p) sum += (v = std::exp(v - mx));
    for (double& v : p) v /= sum;
    std::vector<int> order(e_n);
    for (int e = 0; e < e_n; ++e) order[e] = e;
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return p[a] > p[b]; });
    double kept = 0;
    for (int s = 0; s < moe.top_k; ++s) kept += p[order[s]];
    for (int s = 0; s < moe.top_k; ++s) {
      const int e = order[s];
      ref.chosen[tok].insert(e);
      const double weight = moe.norm_topk_prob ? p[e] / kept : p[e];
      auto ga = l.gate[e].accessor<double, 2>();
      auto ua = l.up[e].accessor<double, 2>();
      auto da = l.down[e].accessor<double, 2>();
      std::vector<double> a(inter), a_abs(inter);
      for (int64_t i = 0; i < inter; ++i) {
        double g = 0, u = 0, g_abs = 0, u_abs = 0;
        for (int64_t j = 0; j < hidden; ++j) {
          g += xa[tok][j] * ga[i][j];
          u += xa[tok][j] * ua[i][j];
          g_abs += std::abs(xa[tok][j] * ga[i][j]);
          u_abs += std::abs(xa[tok][j] * ua[i][j]);
        }
        a[i] = Act(g, act) * u;
        a_abs[i] = g_abs * u_abs;  // >= |act(g) u|: |silu(g)|, |gelu(g)| <= |g|
      }
      for (int64_t j = 0; j < hidden; ++j) {
        double y = 0, y_abs = 0;
        for (int64_t i = 0; i < inter; ++i) {
          y += da[j][i] * a[i];
          y_abs += std::abs(da[j][i]) * a_abs[i];
        }
        oa[tok][j] += weight * y;
        ma[tok][j] += weight * y_abs;
      }
    }
  }
  return ref;
}

// The worst-case error of MoeMlp relative to Reference::magnitude (Higham's
// bounds, tests/kernel_test_util.h), u = the compute dtype's unit roundoff:
//  - gate and up: float32 dot products over hidden (gamma_hidden(u32) of
//    their absolute sums), stored (u);
//  - the activation: silu' and gelu_tanh' lie in [-0.13, 1.13], so the
//    inputs' error passes on at most 1.13 times, plus the kernel's own
//    (< 1e-6 relative, and the store u); times up (u): together within
//    2.13 (gamma_hidden + u) + 2 u + 1e-6 of g_abs * u_abs;
//  - down: gamma_I(u32) more, stored (u);
//  - the routing weight: float32 softmax and division (< 1e-5 relative,
//    exp included), stored (u); the product stored (u); k sums stored (u
//    each).
double Tolerance(const MoeConfig& moe, int64_t hidden, torch::ScalarType dt) {
  const double u = dt == torch::kBFloat16 ? kUBf16 : kU32;
  return Gamma(moe.expert_intermediate_size, kU32) + 2.13 * (Gamma(hidden, kU32) + u) +
         (6 + moe.top_k) * u + 2e-5;
}

struct Case {
  const char* name;
  MoeConfig moe;
  int64_t hidden;
  Activation act;
};

// Qwen 3 MoE-like (renormalised or not), Mixtral-like (sizes that leave
// tails of the 16-lane loops), and a k = 4 of 16 case with GELU (the order
// of more than two sums).
const Case kCases[] = {
    {"qwen3_norm", {8, 2, 48, true}, 64, Activation::kSilu},
    {"qwen3_no_norm", {8, 2, 48, false}, 64, Activation::kSilu},
    {"mixtral", {8, 2, 72, true}, 88, Activation::kSilu},
    {"e16_k4_gelu", {16, 4, 40, false}, 64, Activation::kGeluTanh},
};

class MoeMlpTest : public testing::TestWithParam<std::tuple<int, Storage>> {};

TEST_P(MoeMlpTest, MatchesFloat64Reference) {
  const Case& c = kCases[std::get<0>(GetParam())];
  const Storage s = std::get<1>(GetParam());
  const auto dt = ComputeDtype(s);
  torch::manual_seed(17);
  const Layer layer = MakeLayer(c.moe, c.hidden, s);
  const double tol = Tolerance(c.moe, c.hidden, dt);
  for (KernelIsa isa : {KernelIsa::kAuto, KernelIsa::kPortable}) {
  const ScopedKernelIsa scoped_isa(isa);
  for (int64_t t : {1, 3, 16}) {
    SCOPED_TRACE("T " + std::to_string(t));
    const torch::Tensor x = Grid({t, c.hidden}, 16, 1.0 / 8).to(dt);
    const torch::Tensor got = MoeMlp(x, layer.w, c.moe, c.act);
    ASSERT_EQ(got.sizes(), x.sizes());
    ASSERT_EQ(got.scalar_type(), dt);
    const Reference ref = RunReference(x, layer, c.moe, c.act, dt);

    // The same experts as the reference, token by token.
    const MoeRouting routing = RouteTokens(ApplyLinear(x, LinearWeight{layer.w.router, {}}), c.moe);
    std::set<int> used;
    for (int64_t tok = 0; tok < t; ++tok) {
      std::set<int> mine(routing.experts.begin() + tok * c.moe.top_k,
                         routing.experts.begin() + (tok + 1) * c.moe.top_k);
      EXPECT_EQ(mine, ref.chosen[tok]) << "token " << tok;
      used.insert(mine.begin(), mine.end());
    }
    if (t == 3) {  // at most 3 k < E experts have rows: the others are skipped
      EXPECT_LT(static_cast<int64_t>(used.size()), c.moe.num_experts);
    }
    if (t == 16) {  // routing differs between tokens
      EXPECT_GE(static_cast<int64_t>(used.size()), c.moe.top_k + 3) << "routing too uniform";
    }

    ExpectWithinBound(got, ref.out, ref.magnitude * tol, std::string(c.name) + " " + StorageName(s));
    // The worst case above allows much more than rounding does in practice
    // (errors of independent roundings add up as a random walk): the RMS
    // error must also stay below 2e-6 (float32) or 1.5% (bfloat16) of the
    // output's RMS: ~7 roundings in the dtype along the chain, each ~u / sqrt(3)
    // RMS, give ~0.5% for bfloat16 (measured 0.46-0.54% here; float32 1.5e-7
    // to 2.3e-7). A wrong expert, weight or normalisation changes a token's
    // output by O(1) of it (a 1% error in one expert's weight fails the
    // float32 cases).
    const double rms_err = (got.to(torch::kFloat64) - ref.out).pow(2).mean().sqrt().item<double>();
    const double rms = ref.out.pow(2).mean().sqrt().item<double>();
    EXPECT_LT(rms_err, (dt == torch::kBFloat16 ? 0.015 : 2e-6) * rms)
        << c.name << " " << StorageName(s);
  }
  }
}

// transformers' forward transcribed op by op (Qwen3MoeSparseMoeBlock.forward,
// v4.5x; Mixtral's is the same with norm_topk_prob true), with this
// project's linear and activation as its experts' layers: the result must
// be bit-identical in bfloat16 (float32: see below), which pins the routing
// weights' dtype, the products' and the sums' roundings and their order. Row counts stay within the skinny
// kernel's batch-invariant range (T = 8), so the experts' rows give the
// same values whichever way they are gathered.
torch::Tensor TransformersForward(const torch::Tensor& hidden_states, const MoeWeights& w,
                                  const MoeConfig& moe, Activation act) {
  const torch::Tensor router_logits = ApplyLinear(hidden_states, LinearWeight{w.router, {}});
  torch::Tensor routing_weights = torch::softmax(router_logits, 1, torch::kFloat);
  auto topk = torch::topk(routing_weights, moe.top_k, -1);
  routing_weights = std::get<0>(topk);
  const torch::Tensor selected_experts = std::get<1>(topk);
  if (moe.norm_topk_prob) routing_weights /= routing_weights.sum(-1, true);
  routing_weights = routing_weights.to(hidden_states.scalar_type());
  torch::Tensor final_hidden_states = torch::zeros_like(hidden_states);
  const torch::Tensor expert_mask =
      torch::one_hot(selected_experts, moe.num_experts).permute({2, 1, 0});
  for (int64_t e = 0; e < moe.num_experts; ++e) {
    const std::vector<torch::Tensor> where = torch::where(expert_mask[e]);
    const torch::Tensor& idx = where[0];
    const torch::Tensor& top_x = where[1];
    if (top_x.numel() == 0) continue;
    const torch::Tensor current_state = hidden_states.index_select(0, top_x);
    const torch::Tensor expert_out = ApplyLinear(
        GatedActivation(ApplyLinear(current_state, w.gate_up[e]), act), w.down[e]);
    const torch::Tensor current_hidden_states =
        expert_out * routing_weights.index({top_x, idx}).unsqueeze(1);
    final_hidden_states.index_add_(0, top_x, current_hidden_states.to(hidden_states.scalar_type()));
  }
  return final_hidden_states;
}

TEST(MoeMlp, BitIdenticalToTransformersForwardOpByOp) {
  for (const Case& c : kCases) {
    for (Storage s : {Storage::kFloat32, Storage::kBFloat16, Storage::kInt8BFloat16}) {
      SCOPED_TRACE(std::string(c.name) + " " + StorageName(s));
      torch::manual_seed(29);
      const auto dt = ComputeDtype(s);
      const Layer layer = MakeLayer(c.moe, c.hidden, s);
      // Off the grid: no equal probabilities, where torch.topk's order is unspecified.
      MoeWeights w = layer.w;
      w.router = (torch::randn({c.moe.num_experts, c.hidden}) * 0.2).to(dt);
      const torch::Tensor x = torch::randn({8, c.hidden}).to(dt);
      const torch::Tensor probs =
          torch::softmax(ApplyLinear(x, LinearWeight{w.router, {}}), 1, torch::kFloat);
      const torch::Tensor sorted = std::get<0>(probs.sort(1, true));
      ASSERT_TRUE(sorted.select(1, c.moe.top_k - 1).gt(sorted.select(1, c.moe.top_k)).all().item<bool>())
          << "a tie at the top-k boundary: choose another seed";
      const torch::Tensor want = TransformersForward(x, w, c.moe, c.act);
      const torch::Tensor got = MoeMlp(x, w, c.moe, c.act);
      if (dt == torch::kBFloat16) {
        EXPECT_TRUE(torch::equal(got, want))
            << "max difference " << (got - want).abs().max().item<float>();
      } else {
        // float32 routing weights may differ in their last bits (libtorch's
        // vectorised exp and its product by 1 / sum, against libm's exp and a
        // division here); bfloat16 rounds them alike. Allowed: 8 u32 of the
        // token's largest output.
        const torch::Tensor scale = want.abs().amax(1, true).to(torch::kFloat64);
        ExpectWithinBound(got, want.to(torch::kFloat64), (scale * 8 * kU32).expand_as(want), "f32");
      }
    }
  }
}

// A token's output alone and inside a batch, bit for bit (float32
// activations): the router (T = 16 rows) and every expert (<= 16 rows) stay
// within the skinny kernel's batch-invariant range (SkinnyMaxRows: 24 for
// float32 weights, 32 for int8), the activation is per row, and the sums run
// in expert order either way. (bfloat16 weights leave the skinny kernel above
// 8 rows: not invariant at T = 16.)
TEST(MoeMlp, TokenAloneEqualsTokenInBatchFloat32) {
  for (Storage s : {Storage::kFloat32, Storage::kInt8Float32}) {
    const Case& c = kCases[0];
    torch::manual_seed(23);
    const Layer layer = MakeLayer(c.moe, c.hidden, s);
    const int64_t t = 16;
    ASSERT_GE(SkinnyMaxRows(LinearWeight{layer.w.router, {}}, torch::kFloat32), t);
    ASSERT_GE(SkinnyMaxRows(layer.w.gate_up[0], torch::kFloat32), t);
    const torch::Tensor x = Grid({t, c.hidden}, 16, 1.0 / 8).to(torch::kFloat32);
    const torch::Tensor batch = MoeMlp(x, layer.w, c.moe, c.act);
    for (int64_t tok = 0; tok < t; ++tok) {
      const torch::Tensor alone = MoeMlp(x.narrow(0, tok, 1), layer.w, c.moe, c.act);
      EXPECT_TRUE(torch::equal(alone[0], batch[tok])) << StorageName(s) << " token " << tok;
    }
  }
}

// The path MoeMlp takes off the CPU kernels (CUDA; here float64 on the CPU):
// libtorch's softmax and topk for the routing, index_add_ for the sums.
// float64 throughout except the routing weights, which transformers
// computes in float32 (softmax(..., dtype=torch.float), top-k, the sum and
// division: < 16 u32 relative, exp included), so within 16 u32 of the error
// scale.
TEST(MoeMlp, LibtorchPathFloat64) {
  for (const Case& c : kCases) {
    SCOPED_TRACE(c.name);
    torch::manual_seed(31);
    Layer layer = MakeLayer(c.moe, c.hidden, Storage::kFloat32);
    MoeWeights w;
    w.router = layer.router;
    for (int64_t e = 0; e < c.moe.num_experts; ++e) {
      w.gate_up.push_back(LinearWeight{torch::cat({layer.gate[e], layer.up[e]}), {}});
      w.down.push_back(LinearWeight{layer.down[e], {}});
    }
    const torch::Tensor x = Grid({16, c.hidden}, 16, 1.0 / 8);  // float64
    const torch::Tensor got = MoeMlp(x, w, c.moe, c.act);
    ASSERT_EQ(got.scalar_type(), torch::kFloat64);
    const Reference ref = RunReference(x, layer, c.moe, c.act, torch::kFloat64);
    ExpectWithinBound(got, ref.out, ref.magnitude * (16 * kU32), c.name);
  }
}

// CpuLinearGroup (the experts' linears in one parallel region) gives each
// pair exactly CpuLinear's result: row counts within the skinny range (one
// region for all), and one above it (its own GEMM call), for every weight
// kind and both kernel bodies.
TEST(CpuLinearGroup, BitIdenticalToCpuLinearPerPair) {
  torch::manual_seed(37);
  const int threads = at::get_num_threads();
  at::set_num_threads(3);  // the columns split over threads mid-pair

  for (KernelIsa isa : {KernelIsa::kAuto, KernelIsa::kPortable}) {
    const ScopedKernelIsa scoped_isa(isa);
    for (Storage s : {Storage::kFloat32, Storage::kBFloat16, Storage::kInt8Float32,
                      Storage::kInt8BFloat16}) {
      const auto dt = ComputeDtype(s);
      std::vector<LinearWeight> ws;
      std::vector<torch::Tensor> xs;
      const std::vector<std::pair<int64_t, int64_t>> shapes = {{40, 72}, {24, 72}, {100, 72}, {7, 72}};
      const std::vector<int64_t> rows = {1, 3, 40, 8};
      for (size_t i = 0; i < shapes.size(); ++i) {
        torch::Tensor w = torch::randn({shapes[i].first, shapes[i].second}).to(dt);
        ws.push_back(Int8(s) ? QuantizeInt8(w) : LinearWeight{w, {}});
        xs.push_back(torch::randn({rows[i], shapes[i].second}).to(dt));
      }
      std::vector<const LinearWeight*> ptrs;
      for (const LinearWeight& w : ws) ptrs.push_back(&w);
      const std::vector<torch::Tensor> got = CpuLinearGroup(xs, ptrs);
      ASSERT_EQ(got.size(), xs.size());
      for (size_t i = 0; i < xs.size(); ++i) {
        EXPECT_TRUE(torch::equal(got[i], CpuLinear(xs[i], ws[i])))
            << StorageName(s) << " pair " << i << " rows " << rows[i];
      }
    }
  }
  at::set_num_threads(threads);
}

// RouteTokens: ties go to the lower expert index; weights are the softmax
// probabilities (float32), renormalised to sum 1 when asked.
TEST(RouteTokens, TiesToLowerIndexAndWeights) {
  MoeConfig moe{4, 2, 8, false};
  const torch::Tensor logits = torch::tensor({1.0f, 3.0f, 3.0f, 0.0f, 2.0f, 2.0f, 2.0f, 2.0f,
                                              0.0f, 0.0f, 5.0f, 0.0f}).view({3, 4});
  MoeRouting r = RouteTokens(logits, moe);
  EXPECT_EQ(r.experts, (std::vector<int32_t>{1, 2, 0, 1, 2, 0}));
  const double z0 = std::exp(1.0) + 2 * std::exp(3.0) + 1;
  EXPECT_NEAR(r.weights[0], std::exp(3.0) / z0, 1e-6);
  EXPECT_NEAR(r.weights[1], std::exp(3.0) / z0, 1e-6);
  EXPECT_NEAR(r.weights[2], 0.25, 1e-6);
  const double z2 = std::exp(5.0) + 3;
  EXPECT_NEAR(r.weights[4], std::exp(5.0) / z2, 1e-6);
  EXPECT_NEAR(r.weights[5], 1 / z2, 1e-6);
  moe.norm_topk_prob = true;
  r = RouteTokens(logits.to(torch::kBFloat16), moe);
  EXPECT_EQ(r.experts, (std::vector<int32_t>{1, 2, 0, 1, 2, 0}));
  EXPECT_NEAR(r.weights[0], 0.5, 1e-6);
  EXPECT_NEAR(r.weights[4], std::exp(5.0) / (std::exp(5.0) + 1), 1e-6);
  EXPECT_NEAR(r.weights[4] + r.weights[5], 1.0, 1e-6);
}

// Bad shapes and settings: a message naming what is wrong.
TEST(MoeMlp, RejectsBadShapes) {
  const MoeConfig moe{4, 2, 8, true};
  torch::manual_seed(1);
  const Layer layer = MakeLayer(moe, 16, Storage::kFloat32);
  const torch::Tensor x = torch::randn({3, 16});
  auto expect_error = [&](const torch::Tensor& xi, const MoeWeights& w, const MoeConfig& m,
                          const std::string& message) {
    try {
      MoeMlp(xi, w, m, Activation::kSilu);
      ADD_FAILURE() << "accepted; expected: " << message;
    } catch (const c10::Error& e) {
      EXPECT_NE(std::string(e.what_without_backtrace()).find(message), std::string::npos)
          << e.what_without_backtrace();
    }
  };
  expect_error(x[0], layer.w, moe, "MoeMlp: x must be a floating [T, hidden] tensor");
  expect_error(torch::randn({3, 12}), layer.w, moe,
               "MoeMlp: router must be [num_experts, hidden] = [4, 12]");
  MoeConfig bad_k = moe;
  bad_k.top_k = 5;
  expect_error(x, layer.w, bad_k, "MoeMlp: need num_experts > 0, 1 <= top_k <= num_experts");
  MoeWeights w = layer.w;
  w.router = w.router.to(torch::kBFloat16);
  expect_error(x, w, moe, "in x's dtype Float");
  w = layer.w;
  w.down.pop_back();
  expect_error(x, w, moe, "MoeMlp: need num_experts = 4 gate_up and down weights, got 4 and 3");
  w = layer.w;
  w.gate_up[2] = LinearWeight{torch::randn({8, 16}), {}};
  expect_error(x, w, moe, "MoeMlp: expert 2 gate_up must be [2 * expert_intermediate_size, hidden] = [16, 16], got [8, 16]");
  w = layer.w;
  w.down[3] = LinearWeight{torch::randn({16, 9}), {}};
  expect_error(x, w, moe, "MoeMlp: expert 3 down must be [hidden, expert_intermediate_size] = [16, 8], got [16, 9]");
}

std::string ParamName(const testing::TestParamInfo<std::tuple<int, Storage>>& info) {
  return std::string(kCases[std::get<0>(info.param)].name) + "_" +
         StorageName(std::get<1>(info.param));
}

INSTANTIATE_TEST_SUITE_P(Cases, MoeMlpTest,
                         testing::Combine(testing::Range(0, 4),
                                          testing::Values(Storage::kFloat32, Storage::kBFloat16,
                                                          Storage::kInt8Float32,
                                                          Storage::kInt8BFloat16)),
                         ParamName);

}  // namespace
}  // namespace streamgen
