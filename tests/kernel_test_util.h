// Helpers shared by the CPU kernel tests (cpu_kernels_test.cc,
// cpu_linear_test.cc): which kernel body runs, and error bounds derived from
// the arithmetic rather than tuned on one machine.
#pragma once

#include <cmath>
#include <string>

#include <gtest/gtest.h>
#include <torch/types.h>

#include "engine/model/cpu_kernels.h"

namespace streamgen {

// ---- Which bodies run ----

// Every body a test runs, where the CPU has it (the others are skipped, with
// the reason: ISAs change from one machine to the next).
inline constexpr KernelIsa kAllBodies[] = {KernelIsa::kPortable, KernelIsa::kAvx2,
                                           KernelIsa::kAvx512};

// Forces a kernel body for its lifetime, names it in every failure message
// raised meanwhile, and puts back the automatic choice at the end (also when
// an assertion returns early). A body the CPU lacks is a test failure: check
// CpuCanRun first and skip.
class ScopedKernelIsa {
 public:
  explicit ScopedKernelIsa(KernelIsa isa)
      : set_(SetKernelIsa(isa)),
        trace_(__FILE__, __LINE__, std::string("kernel body: ") + ActiveKernelIsa()) {
    EXPECT_TRUE(set_.ok()) << set_.message();
  }
  ~ScopedKernelIsa() { (void)SetKernelIsa(KernelIsa::kAuto); }
  ScopedKernelIsa(const ScopedKernelIsa&) = delete;
  ScopedKernelIsa& operator=(const ScopedKernelIsa&) = delete;

 private:
  absl::Status set_;
  testing::ScopedTrace trace_;
};

// The skip message for a body the CPU lacks.
inline std::string LacksBody(KernelIsa isa) {
  return std::string("this CPU cannot run the ") + KernelIsaName(isa) + " body (" +
         DetectedCpuFeatures().Summary() + ")";
}

inline bool CpuHasAvx512Body() { return CpuCanRun(KernelIsa::kAvx512); }

// ---- Error bounds ----
//
// No tolerance here is tuned on a machine. Each kernel's output is compared
// with the exact result, computed in float64 from the same inputs (rounded to
// the test's dtype before the kernel sees them, so exact in float64; the
// reference's own error, ~1e-16 relative, is negligible next to the bounds),
// and each element must lie within the worst case of the arithmetic the
// kernel does (Higham, "Accuracy and Stability of Numerical Algorithms", 2nd
// ed., ch. 2-4), built from three facts:
//  - one rounding to nearest in a format with unit roundoff u (float32
//    2^-24, bfloat16 2^-8: 8 significant bits) changes v by at most u|v|;
//    a chain of n products, quotients or roundings of positive sums is off by
//    a factor within 1 +- gamma_n, gamma_n = n u / (1 - n u);
//  - a sum of n terms accumulated in float32 in any order (vector lanes, FMA,
//    tree reductions, libtorch's blocking) is off by at most
//    gamma_{n-1} * sum |terms|, gamma_n when each term is a rounded product;
//  - storing a value v^ that is within E of the exact v in a format with
//    roundoff u_out adds at most u_out |v^| <= u_out (|v| + E).
// Each kernel's accounting is next to its test. Whatever an ISA's code
// rounds differently (FMA or not, summation order, vector exp) stays within
// these bounds, so the tests pass or fail the same on AVX-512, AVX2 or
// baseline x86-64.
inline constexpr double kU32 = 0x1p-24;  // float32
inline constexpr double kUBf16 = 0x1p-8;  // bfloat16
inline double Gamma(double n, double u) { return n * u / (1 - n * u); }

// Asserts |got - want| <= bound element by element (float64 want and bound
// of got's shape); a NaN anywhere fails. On failure says how many elements
// are out and the worst one (largest error / bound).
inline void ExpectWithinBound(const torch::Tensor& got, const torch::Tensor& want,
                       const torch::Tensor& bound, const std::string& what) {
  const torch::Tensor g = got.to(torch::kFloat64).reshape({-1});
  const torch::Tensor w = want.reshape({-1}), b = bound.reshape({-1});
  const torch::Tensor err = (g - w).abs();
  const torch::Tensor over = (err <= b).logical_not();
  const int64_t n_over = over.sum().item<int64_t>();
  if (n_over == 0) return;
  const torch::Tensor ratio =
      torch::where(over, torch::where(b > 0, err / b, torch::full_like(err, INFINITY)),
                   torch::zeros_like(err));
  const int64_t i = torch::nan_to_num(ratio, INFINITY).argmax().item<int64_t>();
  ADD_FAILURE() << what << ": " << n_over << " of " << g.numel()
                << " elements beyond their bound; worst: element " << i << " got "
                << g[i].item<double>() << ", want " << w[i].item<double>() << ", error "
                << err[i].item<double>() << " > bound " << b[i].item<double>() << " (x"
                << ratio[i].item<double>() << ")";
}

}  // namespace streamgen
