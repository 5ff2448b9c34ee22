// The linear-layer kernels (engine/model/cpu_kernels.h: SkinnyLinear, CpuLinear,
// QuantizeInt8) against products computed here in float64, each output within
// a bound derived from the arithmetic (ExpectClose), over shapes with tails (N
// and K not multiples of 8, 16 or 32), odd row counts, every weight dtype
// (float32, bfloat16, int8 under float32 and bfloat16 activations), every
// body this CPU has (AVX-512 where it has it, and the portable one); batch
// invariance (a row alone and among others, any thread count); the int8 round
// trip and its error bound.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <ATen/Parallel.h>
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
  return std::string(kinds[static_cast<int>(info.param.kind)]) +
         (info.param.isa == KernelIsa::kAuto ? "_auto" : "_portable");
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

// Each case runs under its body (kAuto: AVX-512 where the CPU has it); without
// AVX-512 the kAuto cases would repeat the kPortable ones, and are skipped.
class SkinnyLinearTest : public testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    if (GetParam().isa == KernelIsa::kAuto && !CpuHasAvx512Body()) {
      GTEST_SKIP() << "no AVX-512 on this CPU: kAuto is the portable body, which the "
                      "_portable cases test";
    }
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

INSTANTIATE_TEST_SUITE_P(
    Kinds, SkinnyLinearTest,
    testing::Values(Case{WeightKind::kF32, KernelIsa::kAuto}, Case{WeightKind::kBF16, KernelIsa::kAuto},
                    Case{WeightKind::kInt8F32, KernelIsa::kAuto},
                    Case{WeightKind::kInt8BF16, KernelIsa::kAuto},
                    Case{WeightKind::kF32, KernelIsa::kPortable},
                    Case{WeightKind::kBF16, KernelIsa::kPortable},
                    Case{WeightKind::kInt8F32, KernelIsa::kPortable},
                    Case{WeightKind::kInt8BF16, KernelIsa::kPortable}),
    Name);

TEST(SkinnyLinear, BothBodiesAreCovered) {
  // The _auto cases above are skipped on a CPU without AVX-512; say so
  // instead of passing silently.
  if (!CpuHasAvx512Body()) GTEST_SKIP() << "this CPU has no AVX-512: only the portable body ran";
  const ScopedKernelIsa isa(KernelIsa::kPortable);
  EXPECT_STREQ(ActiveKernelIsa(), "portable");
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

TEST(StreamRead, ReadsEveryByte) {
  std::vector<char> buf(3 * 4096 * 7 + 123, 1);
  const uint64_t a = StreamRead(buf.data(), static_cast<int64_t>(buf.size()));
  EXPECT_EQ(StreamRead(buf.data(), static_cast<int64_t>(buf.size())), a);
  for (size_t at : {size_t{0}, buf.size() / 2, buf.size() - 1}) {
    buf[at] ^= 0x40;
    EXPECT_NE(StreamRead(buf.data(), static_cast<int64_t>(buf.size())), a) << "byte " << at;
    buf[at] ^= 0x40;
  }
}

}  // namespace
}  // namespace streamgen
