// The linear-layer kernels (engine/model/cpu_kernels.h: SkinnyLinear, CpuLinear,
// QuantizeInt8) against products computed here in float64, each output within
// a bound derived from the arithmetic (ExpectClose), over shapes with tails (N
// and K not multiples of 8, 16 or 32), odd row counts, every weight dtype
// (float32, bfloat16, int8 under float32 and bfloat16 activations), every
// body this CPU has (portable, AVX2, AVX-512), the bodies against each other;
// batch invariance (a row alone and among others, any thread count); the int8
// round trip and its error bound; the ISA switch (refusals, the start-up
// choice) and CpuLinear's route per ISA (no libtorch bfloat16 GEMM without
// native bfloat16 dot products).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <gtest/gtest.h>
#include <torch/types.h>
#include <torch/utils.h>

#include "engine/model/cpu_kernels.h"
#include "tests/kernel_test_util.h"

namespace streamgen {
namespace {

// ---- Error bounds (the helpers: tests/kernel_test_util.h) ----
//
// No tolerance here is tuned on a machine: each output must lie within the
// worst case of the arithmetic (Higham, "Accuracy and Stability of Numerical
// Algorithms", 2nd ed., ch. 2-3) of the exact result, computed in float64 from
// the values the kernel multiplies (exact there: bfloat16 and float32 inputs,
// int8 times a float32 scale; the float64 product's own error is negligible):
//  - a rounding to nearest with unit roundoff u (float32 2^-24, bfloat16 2^-8)
//    changes v by at most u|v|; n of them compound to gamma_n = n u / (1 - n u);
//  - a K-term dot product accumulated in float32 in any order (vector lanes,
//    FMA or rounded products, tree reductions, GEMM blocking) is within
//    gamma_K(u32) sum_k |x_k w_k| of the exact one; an int8 weight's scale,
//    applied to the sum, is one more rounding: gamma_{K+1};
//  - storing a value within E of the exact y in a format with roundoff u_out
//    adds at most u_out (|y| + E).
// So the bound is ISA-independent: any body, FMA or not, in any summation
// order, passes or fails alike.

enum class WeightKind { kF32, kBF16, kInt8F32, kInt8BF16 };

struct Case {
  WeightKind kind;
  KernelIsa isa;
};

torch::ScalarType ActivationDtype(WeightKind k) {
  return k == WeightKind::kBF16 || k == WeightKind::kInt8BF16 ? torch::kBFloat16 : torch::kFloat32;
}

std::string Name(const testing::TestParamInfo<Case>& info) {
  static const char* kinds[] = {"f32", "bf16", "int8_f32x", "int8_bf16x"};
  return std::string(kinds[static_cast<int>(info.param.kind)]) + "_" +
         KernelIsaName(info.param.isa);
}

// A weight of the case's kind made from a float32 [N, K] matrix.
LinearWeight MakeWeight(const torch::Tensor& w32, WeightKind kind) {
  switch (kind) {
    case WeightKind::kF32:
      return {w32.contiguous(), {}};
    case WeightKind::kBF16:
      return {w32.to(torch::kBFloat16).contiguous(), {}};
    default:
      return QuantizeInt8(w32);
  }
}

// The exact weight values the kernel sees, as float64 [N, K].
torch::Tensor ExactWeight(const LinearWeight& w) {
  if (w.int8()) return w.w.to(torch::kFloat64) * w.scale.to(torch::kFloat64).unsqueeze(1);
  return w.w.to(torch::kFloat64);
}

// Each case runs under its body; a body the CPU lacks is skipped.
class SkinnyLinearTest : public testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    if (!CpuCanRun(GetParam().isa)) GTEST_SKIP() << LacksBody(GetParam().isa);
    isa_ = std::make_unique<ScopedKernelIsa>(GetParam().isa);
  }
  void TearDown() override { isa_.reset(); }

 private:
  std::unique_ptr<ScopedKernelIsa> isa_;
};

// got = x w^T within its bound (above): a dot product over K in float32
// (gamma_K; gamma_{K+1} with int8's scale), then stored in out_dtype.
void ExpectClose(const torch::Tensor& got, const torch::Tensor& x64, const torch::Tensor& w64,
                 bool scaled, torch::ScalarType out_dtype, const std::string& what) {
  ASSERT_EQ(got.scalar_type(), out_dtype) << what;
  const torch::Tensor want = torch::mm(x64, w64.t());
  const torch::Tensor mag = torch::mm(x64.abs(), w64.abs().t());
  const double k = static_cast<double>(x64.size(1));
  const torch::Tensor acc = mag * Gamma(k + (scaled ? 1 : 0), kU32);
  const double u_out = out_dtype == torch::kBFloat16 ? kUBf16 : 0.0;  // float32: acc's type
  ExpectWithinBound(got, want, acc + (want.abs() + acc) * u_out, what);
}

TEST_P(SkinnyLinearTest, MatchesFloat64Reference) {
  const WeightKind kind = GetParam().kind;
  const torch::ScalarType xt = ActivationDtype(kind);
  torch::manual_seed(3);
  // (N, K): single elements, tails of every tile width, sizes of real layers.
  const std::vector<std::pair<int64_t, int64_t>> shapes = {
      {1, 1}, {3, 5}, {7, 15}, {9, 16}, {17, 33}, {33, 17}, {64, 64}, {130, 257}, {257, 768},
      {1000, 100}};
  for (const auto& [n, k] : shapes) {
    for (int64_t m : {1, 2, 3, 4, 5, 7, 8, 9, 13, 24}) {
      const std::string what = "M " + std::to_string(m) + " N " + std::to_string(n) + " K " +
                               std::to_string(k);
      const LinearWeight w = MakeWeight(torch::randn({n, k}), kind);
      const torch::Tensor x = torch::randn({m, k}).to(xt);
      const torch::Tensor got = SkinnyLinear(x, w);
      ExpectClose(got, x.to(torch::kFloat64), ExactWeight(w), w.int8(), xt, what);
      if (HasFailure()) return;
    }
  }
}

TEST_P(SkinnyLinearTest, ARowGivesTheSameBitsAloneAndInABatch) {
  const WeightKind kind = GetParam().kind;
  const torch::ScalarType xt = ActivationDtype(kind);
  torch::manual_seed(5);
  const int64_t n = 203, k = 301;
  const LinearWeight w = MakeWeight(torch::randn({n, k}), kind);
  const torch::Tensor x = torch::randn({25, k}).to(xt);
  const int threads = at::get_num_threads();
  std::vector<torch::Tensor> alone;
  for (int64_t r = 0; r < x.size(0); ++r) alone.push_back(SkinnyLinear(x.narrow(0, r, 1), w));
  for (int t : {1, 2, 3}) {
    at::set_num_threads(t);
    for (int64_t m : {2, 3, 5, 8, 9, 13, 24}) {
      for (int64_t first = 0; first + m <= x.size(0); first += 4) {
        const torch::Tensor batch = SkinnyLinear(x.narrow(0, first, m).contiguous(), w);
        for (int64_t r = 0; r < m; ++r) {
          EXPECT_TRUE(torch::equal(batch.narrow(0, r, 1), alone[first + r]))
              << "row " << first + r << " in a batch of " << m << " at " << t << " threads";
        }
      }
    }
  }
  at::set_num_threads(threads);
}

TEST_P(SkinnyLinearTest, CpuLinearAboveTheCrossoverMatchesToo) {
  const WeightKind kind = GetParam().kind;
  const torch::ScalarType xt = ActivationDtype(kind);
  torch::manual_seed(9);
  const int64_t n = 300, k = 200;
  const LinearWeight w = MakeWeight(torch::randn({n, k}), kind);
  const int64_t cross = SkinnyMaxRows(w, xt);
  for (int64_t m : {cross, cross + 1, cross + 37}) {
    const torch::Tensor x = torch::randn({m, k}).to(xt);
    const torch::Tensor got = CpuLinear(x, w);
    // Above the crossover int8 goes through GEMM on tiles dequantized to x's
    // dtype: the weights it multiplies are q * scale rounded to that dtype
    // (exactly as DequantizeInt8 then .to(x's dtype) rounds them), and no
    // scale follows the sum. libtorch's GEMM accumulates in float32 for
    // bfloat16 too (oneDNN, and its own kernels), so the same bound holds.
    const bool gemm = m > cross;
    ExpectClose(got, x.to(torch::kFloat64),
                w.int8() && gemm ? DequantizeInt8(w).to(xt).to(torch::kFloat64) : ExactWeight(w),
                w.int8() && !gemm, xt, "CpuLinear M " + std::to_string(m));
  }
}

std::vector<Case> AllCases() {
  std::vector<Case> cases;
  for (KernelIsa isa : kAllBodies) {
    for (WeightKind kind :
         {WeightKind::kF32, WeightKind::kBF16, WeightKind::kInt8F32, WeightKind::kInt8BF16}) {
      cases.push_back({kind, isa});
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Kinds, SkinnyLinearTest, testing::ValuesIn(AllCases()), Name);

// Every body this CPU has, on the same inputs, for every row count from 1 to
// a few past the largest crossover (so both of CpuLinear's routes), with K
// and N tails of every vector width: each output within its bound of the
// exact product (as above), so any two bodies within the sum of their
// bounds of each other; and the bodies whose summation order is the same
// (none today: 1, 8 and 16 lanes) would be bit for bit. Also checks that
// the vector bodies differ from the portable one somewhere (they are really
// different code, not the same body under three names).
TEST(SkinnyLinear, BodiesAgreeForEveryRowCount) {
  std::vector<KernelIsa> bodies;
  for (KernelIsa isa : kAllBodies) {
    if (CpuCanRun(isa)) bodies.push_back(isa);
  }
  torch::manual_seed(23);
  const int64_t n = 77, k = 203;  // tails of 8, 16, 32 and 64
  for (WeightKind kind :
       {WeightKind::kF32, WeightKind::kBF16, WeightKind::kInt8F32, WeightKind::kInt8BF16}) {
    const torch::ScalarType xt = ActivationDtype(kind);
    const LinearWeight w = MakeWeight(torch::randn({n, k}), kind);
    int64_t max_cross = 0;
    for (KernelIsa isa : bodies) {
      const ScopedKernelIsa scoped(isa);
      max_cross = std::max(max_cross, SkinnyMaxRows(w, xt));
    }
    const torch::Tensor x = torch::randn({max_cross + 3, k}).to(xt);
    bool any_difference = false;
    for (int64_t m = 1; m <= max_cross + 3; ++m) {
      const torch::Tensor xm = x.narrow(0, 0, m);
      std::vector<torch::Tensor> outs;
      for (KernelIsa isa : bodies) {
        const ScopedKernelIsa scoped(isa);
        outs.push_back(SkinnyLinear(xm, w));
        ExpectClose(outs.back(), xm.to(torch::kFloat64), ExactWeight(w), w.int8(), xt,
                    std::string("SkinnyLinear ") + KernelIsaName(isa) + " M " + std::to_string(m));
        const torch::Tensor routed = CpuLinear(xm, w);
        if (CpuLinearRouteFor(m, w, xt) == CpuLinearRoute::kSkinny) {
          EXPECT_TRUE(torch::equal(routed, outs.back())) << "CpuLinear is SkinnyLinear, M " << m;
        }
      }
      for (size_t i = 1; i < outs.size(); ++i) any_difference |= !torch::equal(outs[i], outs[0]);
      if (HasFailure()) return;
    }
    if (bodies.size() > 1 && xt == torch::kFloat32) {
      EXPECT_TRUE(any_difference) << "every body gave the same bits: are they one body?";
    }
  }
}

// SkinnyLinear's tiled schedule (the batched range) against its row-by-row
// one: the same bits for every output (the tiled bodies run each dot
// product's four FMA chains in the row-by-row order), so the batch
// invariance holds across TiledMinRows; and within the float64 bound. Every
// vector body this CPU has (under the forced-ISA variants of this test: the
// one forced), every weight kind, rows 1..64 (every tail of the 6- and
// 4-row tiles), N with tails of the 4- and 3-row weight tiles and K with
// tails of 8 and 16 lanes and of the chunks (K 1100: three chunks of 512
// columns). The row-by-row schedule is itself checked against the float64
// reference above, so an equal tiled one is right too, but it is checked
// here as well.
TEST(SkinnyLinear, TiledScheduleMatchesRowByRowBitForBit) {
  struct Shape {
    int64_t n, k;
    std::vector<int64_t> rows;
  };
  std::vector<int64_t> all_rows;
  for (int64_t m = 1; m <= 64; ++m) all_rows.push_back(m);
  const std::vector<Shape> shapes = {{1, 1, {1, 2, 6, 7}},
                                     {5, 17, all_rows},
                                     {7, 203, all_rows},
                                     {13, 64, {4, 6, 12, 13, 25}},
                                     {10, 1100, {1, 5, 6, 11, 64}},
                                     {131, 257, {3, 16, 29}}};
  int bodies = 0;
  for (KernelIsa isa : kAllBodies) {
    if (!CpuCanRun(isa) || isa == KernelIsa::kPortable) continue;
    const ScopedKernelIsa scoped(isa);
    if (ActiveIsa() == KernelIsa::kPortable) continue;
    ++bodies;
    torch::manual_seed(41);
    for (WeightKind kind :
         {WeightKind::kF32, WeightKind::kBF16, WeightKind::kInt8F32, WeightKind::kInt8BF16}) {
      const torch::ScalarType xt = ActivationDtype(kind);
      for (const Shape& s : shapes) {
        const LinearWeight w = MakeWeight(torch::randn({s.n, s.k}), kind);
        const torch::Tensor x = torch::randn({64, s.k}).to(xt);
        for (int64_t m : s.rows) {
          const std::string what = std::string(KernelIsaName(isa)) + " kind " +
                                   std::to_string(static_cast<int>(kind)) + " M " +
                                   std::to_string(m) + " N " + std::to_string(s.n) + " K " +
                                   std::to_string(s.k);
          const torch::Tensor xm = x.narrow(0, 0, m);
          SetSkinnySchedule(SkinnySchedule::kRows);
          const torch::Tensor rows = SkinnyLinear(xm, w);
          SetSkinnySchedule(SkinnySchedule::kTiles);
          ASSERT_EQ(TiledMinRows(w.w.scalar_type()), 1) << what;
          const torch::Tensor tiles = SkinnyLinear(xm, w);
          SetSkinnySchedule(SkinnySchedule::kAuto);
          EXPECT_TRUE(torch::equal(rows, tiles))
              << what << ": max |diff| "
              << (rows.to(torch::kFloat64) - tiles.to(torch::kFloat64)).abs().max().item<double>();
          ExpectClose(tiles, xm.to(torch::kFloat64), ExactWeight(w), w.int8(), xt, what);
          if (HasFailure()) return;
        }
      }
    }
  }
  // The portable body has one schedule.
  {
    const ScopedKernelIsa scoped(KernelIsa::kPortable);
    SetSkinnySchedule(SkinnySchedule::kTiles);
    EXPECT_EQ(TiledMinRows(torch::kFloat32), std::numeric_limits<int64_t>::max());
    SetSkinnySchedule(SkinnySchedule::kAuto);
  }
  if (bodies == 0) GTEST_SKIP() << "no vector body on this CPU (or the portable one forced)";
}

// Bit for bit (torch::equal takes -0.0 for +0.0).
bool SameBits(const torch::Tensor& a, const torch::Tensor& b) {
  const auto as_int = [](const torch::Tensor& t) {
    return t.view(t.scalar_type() == torch::kFloat32 ? torch::kInt32 : torch::kInt16);
  };
  return a.scalar_type() == b.scalar_type() && torch::equal(as_int(a), as_int(b));
}

// On AMD Zen 4 (auto ISA) the skinny body is AVX2 on a CPU that runs AVX-512,
// and its tiled schedule runs on AVX-512 registers (Tiled8Avx512*): the same
// bits as the AVX2 row-by-row schedule, and as the AVX2 tiles (AVX2 forced).
TEST(SkinnyLinear, WideTilesMatchTheAvx2BodyBitForBit) {
  if (!(KernelIsaIsAuto() && SkinnyKernelIsa() == KernelIsa::kAvx2 &&
        ActiveIsa() == KernelIsa::kAvx512)) {
    GTEST_SKIP() << "the AVX2 skinny body on an AVX-512 CPU is Zen 4's auto choice only; here "
                 << KernelIsaName(ActiveIsa()) << " / " << KernelIsaName(SkinnyKernelIsa());
  }
  std::vector<int64_t> all_rows;
  for (int64_t m = 1; m <= 40; ++m) all_rows.push_back(m);
  // K: under 32 (only the tail), 32-multiples, tails of 1-31 columns past
  // whole 32-column steps (a block that exists only in part, blocks that do
  // not exist), and a tail in the second half of a step.
  const std::vector<std::pair<int64_t, int64_t>> shapes = {
      {1, 1}, {5, 17}, {7, 203}, {13, 64}, {10, 1100}, {9, 57}, {6, 88}, {131, 257}, {4, 40}};
  torch::manual_seed(43);
  for (WeightKind kind :
       {WeightKind::kF32, WeightKind::kBF16, WeightKind::kInt8F32, WeightKind::kInt8BF16}) {
    const torch::ScalarType xt = ActivationDtype(kind);
    for (const auto& [n, k] : shapes) {
      const LinearWeight w = MakeWeight(torch::randn({n, k}), kind);
      // Some exact zeros and a wide range: a lane the tail masks off must
      // keep its accumulator (a -0.0 made +0.0 would show in an output).
      torch::Tensor x = torch::randn({40, k}) * torch::pow(10.0, torch::randint(-3, 4, {40, k}));
      x.masked_fill_(torch::rand({40, k}) < 0.1, 0.0);
      x = x.to(xt);
      for (int64_t m : all_rows) {
        const std::string what = "kind " + std::to_string(static_cast<int>(kind)) + " M " +
                                 std::to_string(m) + " N " + std::to_string(n) + " K " +
                                 std::to_string(k);
        const torch::Tensor xm = x.narrow(0, 0, m);
        SetSkinnySchedule(SkinnySchedule::kRows);
        const torch::Tensor rows = SkinnyLinear(xm, w);
        SetSkinnySchedule(SkinnySchedule::kTiles);
        const torch::Tensor wide = SkinnyLinear(xm, w);
        torch::Tensor narrow;
        {
          const ScopedKernelIsa scoped(KernelIsa::kAvx2);
          narrow = SkinnyLinear(xm, w);
        }
        SetSkinnySchedule(SkinnySchedule::kAuto);
        EXPECT_TRUE(SameBits(rows, wide)) << what << ": wide tiles against rows";
        EXPECT_TRUE(SameBits(narrow, wide)) << what << ": wide tiles against AVX2 tiles";
        if (HasFailure()) return;
      }
    }
  }
  // Products that underflow to -0.0: every chain ends at -0.0, and so does
  // the output, unless a lane of a block that does not exist (K = 40: blocks
  // 0-4 of a 32-column step's second, partial step) is touched: 0 * 0 + -0.0
  // is +0.0.
  for (WeightKind kind : {WeightKind::kF32, WeightKind::kBF16}) {
    const torch::ScalarType xt = ActivationDtype(kind);
    const LinearWeight w = MakeWeight(torch::full({5, 40}, -1e-30), kind);
    const torch::Tensor x = torch::full({16, 40}, 1e-30).to(xt);
    SetSkinnySchedule(SkinnySchedule::kRows);
    const torch::Tensor rows = SkinnyLinear(x, w);
    SetSkinnySchedule(SkinnySchedule::kTiles);
    const torch::Tensor wide = SkinnyLinear(x, w);
    SetSkinnySchedule(SkinnySchedule::kAuto);
    EXPECT_TRUE(std::signbit(rows.to(torch::kFloat32)[0][0].item<float>())) << "rows: -0.0";
    EXPECT_TRUE(SameBits(rows, wide)) << "kind " << static_cast<int>(kind) << ": -0.0 outputs";
  }
}

TEST(SkinnyLinear, EveryBodyIsCovered) {
  // The cases above skip the bodies this CPU lacks; say which instead of
  // passing silently.
  std::string missing;
  for (KernelIsa isa : kAllBodies) {
    if (!CpuCanRun(isa)) missing += std::string(" ") + KernelIsaName(isa);
  }
  if (!missing.empty()) GTEST_SKIP() << "not run on this CPU:" << missing;
}

TEST(SkinnyLinear, RejectsWhatItCannotRun) {
  const LinearWeight w{torch::randn({4, 8}), {}};
  auto message = [](auto&& f) {
    try {
      f();
    } catch (const c10::Error& e) {
      return std::string(e.what_without_backtrace());
    }
    return std::string("no error");
  };
  EXPECT_NE(message([&] { SkinnyLinear(torch::randn({2, 7}), w); }).find("x [M, K] and w [N, K]"),
            std::string::npos);
  EXPECT_NE(message([&] { SkinnyLinear(torch::randn({2, 8}).to(torch::kBFloat16), w); })
                .find("w in x's dtype, or int8"),
            std::string::npos);
  EXPECT_NE(message([&] { SkinnyLinear(torch::randn({2, 8}).to(torch::kFloat64), w); })
                .find("x float32 or bfloat16"),
            std::string::npos);
  LinearWeight bad = QuantizeInt8(torch::randn({4, 8}));
  bad.scale = bad.scale.narrow(0, 0, 3);
  EXPECT_NE(message([&] { SkinnyLinear(torch::randn({1, 8}), bad); }).find("int8 with a float32 scale"),
            std::string::npos);
}

TEST(QuantizeInt8, RoundTripWithinHalfAStepPerRow) {
  torch::manual_seed(13);
  for (torch::ScalarType dt : {torch::kFloat32, torch::kBFloat16}) {
    torch::Tensor w = torch::randn({37, 53}) * torch::rand({37, 1}) * 4;
    w[5].zero_();  // an all-zero row: scale 1, all zeros
    w[6][0] = 1e-30f;  // a tiny row
    w = w.to(dt);
    const LinearWeight q = QuantizeInt8(w);
    ASSERT_EQ(q.w.scalar_type(), torch::kInt8);
    ASSERT_EQ(q.scale.scalar_type(), torch::kFloat32);
    ASSERT_EQ(q.scale.numel(), 37);
    const torch::Tensor wf = w.to(torch::kFloat32);
    const torch::Tensor amax = wf.abs().amax(1);
    EXPECT_EQ(q.scale[5].item<float>(), 1.0f);
    EXPECT_TRUE(torch::equal(q.w[5], torch::zeros({53}, torch::kInt8)));
    EXPECT_LE(q.w.abs().max().item<int>(), 127);
    for (int64_t r = 0; r < 37; ++r) {
      if (r == 5) continue;
      EXPECT_FLOAT_EQ(q.scale[r].item<float>(), amax[r].item<float>() / 127.0f) << r;
      // The largest magnitude of each row maps to +-127.
      EXPECT_EQ(q.w[r].abs().max().item<int>(), 127) << r;
    }
    // |q * scale - w| <= scale / 2 but for float32's roundings: scale =
    // fl(amax / 127) >= amax / 127 (1 - u32), so |w / scale| <= 127 / (1 - u32)
    // and computing it rounds by at most u32 times that < 128 u32 before
    // round(): the error is at most scale (1/2 + 128 u32). Measured in
    // float64, where q * scale (7 by 24 bits) is exact.
    const torch::Tensor scale64 = q.scale.to(torch::kFloat64).unsqueeze(1);
    const torch::Tensor err = (q.w.to(torch::kFloat64) * scale64 - w.to(torch::kFloat64)).abs();
    const torch::Tensor half_step = (scale64 * (0.5 + 128 * kU32)).expand_as(err);
    ExpectWithinBound(err, torch::zeros_like(err), half_step,
                      std::string("round trip, ") + c10::toString(dt));
  }
}

// ---- The ISA switch (engine/model/cpu_isa.h) ----

// Made-up CPUs, so that every refusal is tested on any machine.
CpuFeatures Zen3() {  // AVX2 + FMA + F16C, no AVX-512
  CpuFeatures f;
  f.avx = f.avx2 = f.fma = f.f16c = true;
  return f;
}
CpuFeatures Baseline() { return {}; }  // x86-64 v1 (or aarch64)
CpuFeatures Zen4() {
  CpuFeatures f = Zen3();
  f.avx512f = f.avx512bw = f.avx512vl = f.avx512dq = f.avx512_bf16 = true;
  return f;
}

TEST(KernelIsa, RefusesAnIsaTheCpuLacksNamingWhatIsMissing) {
  const absl::Status on_zen3 = CheckKernelIsa(KernelIsa::kAvx512, Zen3());
  EXPECT_EQ(on_zen3.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(on_zen3.message(),
            "kernel ISA avx512 refused: this CPU lacks avx512f avx512bw avx512vl avx512dq "
            "(it has: avx2 fma f16c)");
  EXPECT_EQ(CheckKernelIsa(KernelIsa::kAvx2, Baseline()).message(),
            "kernel ISA avx2 refused: this CPU lacks avx2 fma (it has: none)");
  EXPECT_EQ(CheckKernelIsa(KernelIsa::kAvx512, Baseline()).message(),
            "kernel ISA avx512 refused: this CPU lacks avx512f avx512bw avx512vl avx512dq fma "
            "(it has: none)");
  for (KernelIsa isa : {KernelIsa::kAuto, KernelIsa::kPortable}) {
    EXPECT_TRUE(CheckKernelIsa(isa, Baseline()).ok()) << KernelIsaName(isa);
  }
  EXPECT_TRUE(CheckKernelIsa(KernelIsa::kAvx2, Zen3()).ok());
  EXPECT_TRUE(CheckKernelIsa(KernelIsa::kAvx512, Zen4()).ok());
  EXPECT_TRUE(CheckKernelIsa(KernelIsa::kAvx2, Zen4()).ok());
}

TEST(KernelIsa, SetKernelIsaRefusesWhatThisCpuLacksAndKeepsTheChoice) {
  const ScopedKernelIsa portable(KernelIsa::kPortable);
  for (KernelIsa isa : {KernelIsa::kAvx2, KernelIsa::kAvx512}) {
    const absl::Status st = SetKernelIsa(isa);
    if (CpuCanRun(isa)) {
      EXPECT_TRUE(st.ok()) << st;
      EXPECT_STREQ(ActiveKernelIsa(), KernelIsaName(isa));
      ASSERT_TRUE(SetKernelIsa(KernelIsa::kPortable).ok());
    } else {
      EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
      EXPECT_NE(std::string(st.message()).find(std::string("kernel ISA ") + KernelIsaName(isa) +
                                               " refused: this CPU lacks"),
                std::string::npos)
          << st;
      EXPECT_STREQ(ActiveKernelIsa(), "portable") << "a refused ISA changed the choice";
    }
  }
  ASSERT_TRUE(SetKernelIsa(KernelIsa::kAuto).ok());
  EXPECT_NE(std::string(ActiveKernelIsa()), "auto");
}

TEST(KernelIsa, TheEnvironmentVariableIsClampedToTheCpu) {
  std::string note;
  EXPECT_EQ(StartupKernelIsa(nullptr, Zen3(), &note), KernelIsa::kAvx2);
  EXPECT_EQ(note, "");
  EXPECT_EQ(StartupKernelIsa("", Zen4(), &note), KernelIsa::kAvx512);
  EXPECT_EQ(StartupKernelIsa("portable", Zen4(), &note), KernelIsa::kPortable);
  EXPECT_EQ(note, "");
  EXPECT_EQ(StartupKernelIsa("avx2", Zen4(), &note), KernelIsa::kAvx2);
  EXPECT_EQ(StartupKernelIsa("auto", Zen3(), &note), KernelIsa::kAvx2);
  EXPECT_EQ(StartupKernelIsa("avx512", Zen3(), &note), KernelIsa::kAvx2);
  EXPECT_EQ(note,
            "STREAMGEN_KERNEL_ISA=avx512: this CPU lacks avx512f avx512bw avx512vl avx512dq; "
            "using avx2");
  EXPECT_EQ(StartupKernelIsa("avx512", Baseline(), &note), KernelIsa::kPortable);
  EXPECT_EQ(StartupKernelIsa("avx2", Baseline(), &note), KernelIsa::kPortable);
  EXPECT_EQ(note, "STREAMGEN_KERNEL_ISA=avx2: this CPU lacks avx2 fma; using portable");
  EXPECT_EQ(StartupKernelIsa("sse9", Zen3(), &note), KernelIsa::kAvx2);
  EXPECT_EQ(note,
            "STREAMGEN_KERNEL_ISA: unknown kernel ISA \"sse9\": expected one of portable, avx2, "
            "avx512, auto; using avx2");
}

// Run by ctest a second time with STREAMGEN_KERNEL_ISA=portable in the
// environment (tests/CMakeLists.txt: cpu_linear_test_env_portable): the
// whole process then starts on the portable body. Without the variable
// there is nothing to check.
TEST(KernelIsaEnv, TheProcessStartsOnTheForcedIsa) {
  const char* env = std::getenv(kKernelIsaEnv);
  if (env == nullptr) GTEST_SKIP() << kKernelIsaEnv << " is not set";
  std::string note;
  const KernelIsa want = StartupKernelIsa(env, DetectedCpuFeatures(), &note);
  EXPECT_EQ(KernelIsaStartupNote(), note);
  EXPECT_STREQ(ActiveKernelIsa(), KernelIsaName(want));
  ASSERT_TRUE(SetKernelIsa(KernelIsa::kAuto).ok());
  EXPECT_STREQ(ActiveKernelIsa(), KernelIsaName(want)) << "kAuto is the start-up choice";
}

TEST(KernelIsa, DetectionIsConsistent) {
  const CpuFeatures& f = DetectedCpuFeatures();
  // AVX-512 implies AVX2 on every CPU made; the OS check implies the same
  // order (ZMM state includes YMM state).
  if (f.avx512f) EXPECT_TRUE(f.avx2 && f.fma);
  if (f.avx512_bf16) EXPECT_TRUE(f.avx512f);
  EXPECT_EQ(BestKernelIsa() == KernelIsa::kAvx512, CpuCanRun(KernelIsa::kAvx512));
  EXPECT_NE(KernelIsaDescription().find(f.Summary()), std::string::npos);
  std::printf("this CPU: %s\n", KernelIsaDescription().c_str());
}

// ---- CpuLinear's route per ISA ----

// Counts the aten::mm calls on this thread by their first input's dtype,
// through libtorch's RecordFunction observer (what the profiler sees).
class MmDtypeCounter {
 public:
  MmDtypeCounter() {
    handle_ = at::addThreadLocalCallback(
        at::RecordFunctionCallback(&MmDtypeCounter::Start).needsInputs(true));
  }
  ~MmDtypeCounter() { at::removeCallback(handle_); }
  static int& Count(torch::ScalarType t) {
    thread_local int counts[static_cast<int>(torch::ScalarType::NumOptions)] = {};
    return counts[static_cast<int>(t)];
  }

 private:
  static std::unique_ptr<at::ObserverContext> Start(const at::RecordFunction& fn) {
    const std::string name = fn.name();
    if (name != "aten::mm" && name != "aten::addmm" && name != "aten::matmul") return nullptr;
    const auto inputs = fn.inputs();
    if (!inputs.empty() && inputs[0].isTensor()) ++Count(inputs[0].toTensor().scalar_type());
    return nullptr;
  }
  at::CallbackHandle handle_;
};

TEST(CpuLinearRoute, NoBfloat16GemmWithoutNativeBfloat16) {
  if (!CpuCanRun(KernelIsa::kAvx2)) GTEST_SKIP() << LacksBody(KernelIsa::kAvx2);
  torch::manual_seed(29);
  const int64_t n = 96, k = 80, m = 64;  // m above every crossover
  const LinearWeight bf16 = MakeWeight(torch::randn({n, k}), WeightKind::kBF16);
  const LinearWeight int8 = MakeWeight(torch::randn({n, k}), WeightKind::kInt8BF16);
  const torch::Tensor x = torch::randn({m, k}).to(torch::kBFloat16);
  for (KernelIsa body : {KernelIsa::kPortable, KernelIsa::kAvx2}) {
    const ScopedKernelIsa isa(body);
    ASSERT_FALSE(ActiveIsaHasNativeBf16());
    ASSERT_GT(m, SkinnyMaxRows(bf16, torch::kBFloat16));
    EXPECT_EQ(CpuLinearRouteFor(m, bf16, torch::kBFloat16), CpuLinearRoute::kFloat32Tiles);
    EXPECT_EQ(CpuLinearRouteFor(m, int8, torch::kBFloat16), CpuLinearRoute::kInt8Float32Tiles);
    EXPECT_EQ(CpuLinearRouteFor(1, bf16, torch::kBFloat16), CpuLinearRoute::kSkinny);
    MmDtypeCounter counter;
    const int bf16_before = MmDtypeCounter::Count(torch::kBFloat16);
    const int f32_before = MmDtypeCounter::Count(torch::kFloat32);
    const torch::Tensor y = CpuLinear(x, bf16);
    const torch::Tensor yq = CpuLinear(x, int8);
    EXPECT_EQ(MmDtypeCounter::Count(torch::kBFloat16), bf16_before) << "a bfloat16 GEMM ran";
    // The positive control: the observer sees the float32 GEMMs that did run.
    EXPECT_GT(MmDtypeCounter::Count(torch::kFloat32), f32_before) << "the observer saw no mm";
    EXPECT_EQ(y.scalar_type(), torch::kBFloat16);
    EXPECT_EQ(yq.scalar_type(), torch::kBFloat16);
    ExpectClose(y, x.to(torch::kFloat64), ExactWeight(bf16), false, torch::kBFloat16, "bf16 tiles");
    ExpectClose(yq, x.to(torch::kFloat64),
                DequantizeInt8(int8).to(torch::kBFloat16).to(torch::kFloat64), false,
                torch::kBFloat16, "int8 float32 tiles");
  }
  // float32 is unaffected: libtorch's float32 GEMM on every ISA.
  const ScopedKernelIsa isa(KernelIsa::kAvx2);
  const LinearWeight f32 = MakeWeight(torch::randn({n, k}), WeightKind::kF32);
  EXPECT_EQ(CpuLinearRouteFor(m, f32, torch::kFloat32), CpuLinearRoute::kTorchMm);
  EXPECT_EQ(CpuLinearRouteFor(m, int8, torch::kFloat32), CpuLinearRoute::kInt8Tiles);
}

TEST(CpuLinearRoute, NativeBfloat16UsesLibtorchsGemm) {
  if (!CpuCanRun(KernelIsa::kAvx512) || !DetectedCpuFeatures().avx512_bf16) {
    GTEST_SKIP() << "no AVX512-BF16 on this CPU (" << DetectedCpuFeatures().Summary() << ")";
  }
  const ScopedKernelIsa isa(KernelIsa::kAvx512);
  ASSERT_TRUE(ActiveIsaHasNativeBf16());
  const LinearWeight bf16{torch::randn({64, 64}).to(torch::kBFloat16), {}};
  const int64_t m = SkinnyMaxRows(bf16, torch::kBFloat16) + 1;
  EXPECT_EQ(CpuLinearRouteFor(m, bf16, torch::kBFloat16), CpuLinearRoute::kTorchMm);
  MmDtypeCounter counter;
  const int before = MmDtypeCounter::Count(torch::kBFloat16);
  CpuLinear(torch::randn({m, 64}).to(torch::kBFloat16), bf16);
  EXPECT_EQ(MmDtypeCounter::Count(torch::kBFloat16), before + 1);
  // int8 weights under bfloat16 activations leave the skinny kernel from 9
  // rows (oneDNN on tiles dequantized to bfloat16: 1.6x the skinny kernel's
  // tiled schedule at 16 rows); under float32 activations from 17.
  const LinearWeight int8 = QuantizeInt8(torch::randn({64, 64}));
  EXPECT_EQ(SkinnyMaxRows(int8, torch::kBFloat16), 8);
  EXPECT_EQ(CpuLinearRouteFor(8, int8, torch::kBFloat16), CpuLinearRoute::kSkinny);
  EXPECT_EQ(CpuLinearRouteFor(9, int8, torch::kBFloat16), CpuLinearRoute::kInt8Tiles);
  EXPECT_EQ(SkinnyMaxRows(int8, torch::kFloat32), 16);
}

TEST(StreamRead, ReadsEveryByte) {
  for (KernelIsa body : kAllBodies) {
    if (!CpuCanRun(body)) continue;
    const ScopedKernelIsa isa(body);
    std::vector<char> buf(3 * 4096 * 7 + 123, 1);
    const uint64_t a = StreamRead(buf.data(), static_cast<int64_t>(buf.size()));
    EXPECT_EQ(StreamRead(buf.data(), static_cast<int64_t>(buf.size())), a);
    for (size_t at : {size_t{0}, buf.size() / 2, buf.size() - 1}) {
      buf[at] ^= 0x40;
      EXPECT_NE(StreamRead(buf.data(), static_cast<int64_t>(buf.size())), a) << "byte " << at;
      buf[at] ^= 0x40;
    }
  }
}

}  // namespace
}  // namespace streamgen
