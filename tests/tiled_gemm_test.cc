// The tiled GEMMs (engine/model/cpu_kernels.h: Int8TiledGemm,
// Float32TiledGemm): the result must not depend on the number of threads
// (1 against 2, bit for bit), and must lie within the arithmetic's bound of
// the exact product (computed here in float64). Shapes with odd N and K, so
// that tiles end mid-vector and the last tile is shorter; a weight of one
// tile, one of many, and one with a long K (the smallest tiles); 17, 64 and
// 128 rows of x. Each case under the CPU's own body and under AVX2 (where the
// CPU has it: bfloat16 products then go through float32 instead of oneDNN's
// bfloat16 GEMM).
#include <cmath>
#include <string>
#include <vector>

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>
#include <torch/types.h>

#include "engine/model/cpu_kernels.h"
#include "tests/kernel_test_util.h"

namespace streamgen {
namespace {

enum class Kind {
  kInt8F32x,   // int8 w, float32 x: Int8TiledGemm
  kInt8Bf16x,  // int8 w, bfloat16 x: Int8TiledGemm (to bfloat16 or float32)
  kBf16,       // bfloat16 w and x: Float32TiledGemm
};

const char* KindName(Kind kind) {
  switch (kind) {
    case Kind::kInt8F32x:
      return "int8 w, float32 x";
    case Kind::kInt8Bf16x:
      return "int8 w, bfloat16 x";
    case Kind::kBf16:
      return "bfloat16 w as float32 tiles";
  }
  return "?";
}

torch::Tensor Run(Kind kind, const torch::Tensor& x, const LinearWeight& w) {
  return kind == Kind::kBf16 ? Float32TiledGemm(x, w) : Int8TiledGemm(x, w);
}

// Sets the intra-op thread count for its lifetime, then puts back the old one.
class ScopedThreads {
 public:
  explicit ScopedThreads(int n) : old_(at::get_num_threads()) { at::set_num_threads(n); }
  ~ScopedThreads() { at::set_num_threads(old_); }

 private:
  int old_;
};

// The bound on |y - exact| for one output (see tests/kernel_test_util.h):
// the weight as the GEMM sees it is rounded once from the exact q * scale
// (float32, or bfloat16 where x is bfloat16: u_w), the K products are summed
// in float32 (gamma_K), and the result is stored in x's dtype (u_out):
// E = (u_w + gamma_K(u32) (1 + u_w)) sum |x w|, bound E + u_out (|y| + E).
// Widening bfloat16 weights to float32 is exact (u_w = 0).
torch::Tensor Bound(Kind kind, const torch::Tensor& x64, const torch::Tensor& w64,
                    const torch::Tensor& want) {
  const double u32 = std::ldexp(1.0, -24), u16 = std::ldexp(1.0, -8);
  const int64_t k = x64.size(1);
  const double u_w = kind == Kind::kInt8F32x ? u32 : kind == Kind::kInt8Bf16x ? u16 : 0.0;
  const double u_out = kind == Kind::kInt8F32x ? u32 : u16;
  const torch::Tensor s = torch::mm(x64.abs(), w64.abs().t());  // [M, N]
  const torch::Tensor e = s * (u_w + Gamma(k, u32) * (1 + u_w));
  return e + u_out * (want.abs() + e);
}

struct Shape {
  int64_t n, k;
};

void CheckOneBody() {
  // One tile (N below 64), several of 16-row multiples with a short last one,
  // and a long K whose tiles are 16 rows.
  const std::vector<Shape> shapes = {{37, 131}, {1001, 771}, {83, 8195}};
  for (Kind kind : {Kind::kInt8F32x, Kind::kInt8Bf16x, Kind::kBf16}) {
    for (const Shape& sh : shapes) {
      torch::manual_seed(sh.n * 7 + sh.k);
      const torch::Tensor w32 = torch::randn({sh.n, sh.k});  // [N, K]
      const LinearWeight w = kind == Kind::kBf16
                                 ? LinearWeight{w32.to(torch::kBFloat16).contiguous(), {}}
                                 : QuantizeInt8(w32);
      const torch::Tensor w64 =
          w.int8() ? w.w.to(torch::kFloat64) * w.scale.to(torch::kFloat64).unsqueeze(1)
                   : w.w.to(torch::kFloat64);  // [N, K], the exact values
      for (int64_t m : {17, 64, 128}) {
        SCOPED_TRACE(std::string(KindName(kind)) + ", M " + std::to_string(m) + ", N " +
                     std::to_string(sh.n) + ", K " + std::to_string(sh.k));
        torch::Tensor x = torch::randn({m, sh.k});  // [M, K]
        if (kind != Kind::kInt8F32x) x = x.to(torch::kBFloat16);
        torch::Tensor one, two;
        {
          ScopedThreads threads(1);
          one = Run(kind, x, w);
        }
        {
          ScopedThreads threads(2);
          ASSERT_EQ(at::get_num_threads(), 2);
          two = Run(kind, x, w);
        }
        ASSERT_EQ(one.sizes(), (std::vector<int64_t>{m, sh.n}));
        ASSERT_EQ(one.scalar_type(), x.scalar_type());
        EXPECT_TRUE(torch::equal(one, two)) << "1 and 2 threads differ: max |diff| "
                                            << (one.to(torch::kFloat64) - two.to(torch::kFloat64))
                                                   .abs()
                                                   .max()
                                                   .item<double>();
        const torch::Tensor x64 = x.to(torch::kFloat64);
        const torch::Tensor want = torch::mm(x64, w64.t());  // [M, N]
        ExpectWithinBound(one, want, Bound(kind, x64, w64, want), "1 thread");
      }
    }
  }
}

TEST(TiledGemm, SameBitsOnOneAndTwoThreadsAndWithinBound) { CheckOneBody(); }

// As the engine runs it: under inference mode, whose tensors the worker
// threads must be allowed to write.
TEST(TiledGemm, SameBitsOnOneAndTwoThreadsAndWithinBoundInInferenceMode) {
  c10::InferenceMode inference;
  CheckOneBody();
}

// As on an AVX2 CPU: bfloat16 products through float32 tiles.
TEST(TiledGemm, SameBitsOnOneAndTwoThreadsAndWithinBoundAvx2) {
  if (!CpuCanRun(KernelIsa::kAvx2)) GTEST_SKIP() << LacksBody(KernelIsa::kAvx2);
  ScopedKernelIsa isa(KernelIsa::kAvx2);
  CheckOneBody();
}

}  // namespace
}  // namespace streamgen
