// A whole engine "as on an AVX2-only CPU" (STREAMGEN_KERNEL_ISA=avx2, the
// testing aid of engine/model/cpu_isa.h and HoldCpuLibraries in
// engine/model/device.h): it reports avx2, holds libtorch there on a CPU
// with more (oneDNN off, ATen's kernels at avx2), and runs no bfloat16 matrix
// product through libtorch (its fallback GEMM without native bfloat16 is 20-50x
// slower than the float32 paths: the 16 s prefill).
//
// Each test sets the variable itself before anything reads it (ctest runs
// every test in a process of its own), so this binary needs no environment.
#include <array>
#include <atomic>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include <ATen/Context.h>
#include <ATen/record_function.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/types.h>

#include "engine/engine.h"
#include "engine/model/cpu_isa.h"
#include "engine/model/device.h"
#include "tests/engine_test_util.h"

namespace streamgen {
namespace {

using ::testing::HasSubstr;

// Counts libtorch's matrix products (mm, addmm, matmul, bmm, baddbmm) on
// every thread (the engine's loop runs the model on its own) by their first
// input's dtype, through a global RecordFunction observer (what the
// profiler sees).
class MatmulDtypeCounter {
 public:
  MatmulDtypeCounter() {
    for (auto& c : counts()) c.store(0);
    handle_ = at::addGlobalCallback(
        at::RecordFunctionCallback(&MatmulDtypeCounter::Start).needsInputs(true));
  }
  ~MatmulDtypeCounter() { at::removeCallback(handle_); }
  static int Count(torch::ScalarType t) { return counts()[static_cast<int>(t)].load(); }

 private:
  using Counts = std::array<std::atomic<int>, static_cast<int>(torch::ScalarType::NumOptions)>;
  static Counts& counts() {
    static Counts c;
    return c;
  }
  static std::unique_ptr<at::ObserverContext> Start(const at::RecordFunction& fn) {
    const std::string name = fn.name();
    if (name != "aten::mm" && name != "aten::addmm" && name != "aten::matmul" &&
        name != "aten::bmm" && name != "aten::baddbmm") {
      return nullptr;
    }
    const auto inputs = fn.inputs();
    if (!inputs.empty() && inputs[0].isTensor()) {
      ++counts()[static_cast<int>(inputs[0].toTensor().scalar_type())];
    }
    return nullptr;
  }
  at::CallbackHandle handle_;
};

// Sets STREAMGEN_KERNEL_ISA=avx2 before the start-up choice reads it.
void HoldAsAvx2() { setenv(kKernelIsaEnv, "avx2", 1); }

std::unique_ptr<Engine> MakeBfloat16Engine() {
  EngineOptions options;
  options.model_dir = STREAMGEN_TINY_MODEL_DIR;
  options.dtype = "bfloat16";
  options.threads = 1;
  auto engine = Engine::Create(options);
  EXPECT_TRUE(engine.ok()) << engine.status();
  return engine.ok() ? std::move(*engine) : nullptr;
}

TEST(AsAvx2Cpu, EngineReportsAvx2AndHoldsLibtorchThere) {
  if (!CpuCanRun(KernelIsa::kAvx2)) GTEST_SKIP() << "this CPU has no AVX2 + FMA";
  HoldAsAvx2();
  std::unique_ptr<Engine> engine = MakeBfloat16Engine();
  ASSERT_NE(engine, nullptr);
  EXPECT_EQ(engine->model_info().cpu_isa, "avx2");
  EXPECT_EQ(ActiveIsa(), KernelIsa::kAvx2);
  EXPECT_FALSE(ActiveIsaHasNativeBf16());
  if (BestKernelIsa() == KernelIsa::kAvx512) {
    // An AVX-512 CPU held below its best: the libraries follow.
    EXPECT_TRUE(KernelIsaHeldBelowCpu());
    EXPECT_FALSE(at::globalContext().userEnabledMkldnn()) << "oneDNN is still on";
    ASSERT_NE(std::getenv("ATEN_CPU_CAPABILITY"), nullptr);
    EXPECT_STREQ(std::getenv("ATEN_CPU_CAPABILITY"), "avx2");
    EXPECT_THAT(KernelIsaDescription(),
                HasSubstr("as on an AVX2-only CPU (STREAMGEN_KERNEL_ISA=avx2): libtorch's "
                          "oneDNN off, ATEN_CPU_CAPABILITY=avx2, OpenBLAS core "));
    // The note the log and KernelIsaDescription show is HoldCpuLibraries' own.
    ASSERT_FALSE(HoldCpuLibraries().empty());
    EXPECT_THAT(KernelIsaDescription(), HasSubstr(HoldCpuLibraries()));
  } else {
    // A real AVX2 CPU: avx2 is its own best, nothing is held.
    EXPECT_FALSE(KernelIsaHeldBelowCpu());
    EXPECT_EQ(HoldCpuLibraries(), "");
    EXPECT_THAT(KernelIsaDescription(), ::testing::Not(HasSubstr("as on an")));
  }
}

TEST(AsAvx2Cpu, Bfloat16EngineRunsNoBfloat16MatrixProduct) {
  if (!CpuCanRun(KernelIsa::kAvx2)) GTEST_SKIP() << "this CPU has no AVX2 + FMA";
  HoldAsAvx2();
  std::unique_ptr<Engine> engine = MakeBfloat16Engine();
  ASSERT_NE(engine, nullptr);
  ASSERT_EQ(engine->model_info().cpu_isa, "avx2");
  MatmulDtypeCounter counter;
  // A 96-token prompt (prefill: the linear layers above the skinny kernel's
  // rows, attention over the chunk) and four streams decoding together.
  std::vector<std::unique_ptr<Collector>> collectors;
  engine->Pause();
  for (int s = 0; s < 4; ++s) {
    GenerationRequest r;
    for (int i = 0; i < 96; ++i) r.prompt_token_ids.push_back(3 + (i * 7 + s) % 200);
    r.max_new_tokens = 8;
    collectors.push_back(std::make_unique<Collector>());
    ASSERT_TRUE(engine->Submit(r, collectors.back()->Sink()).ok());
  }
  engine->Resume();
  for (auto& c : collectors) {
    c->Wait();
    EXPECT_EQ(c->ids.size(), 8u);
  }
  EXPECT_EQ(MatmulDtypeCounter::Count(torch::kBFloat16), 0)
      << "a bfloat16 matrix product ran through libtorch";
  // The positive control: the observer saw the float32 products that did run
  // (the linear layers' float32 tiles at 96 rows).
  EXPECT_GT(MatmulDtypeCounter::Count(torch::kFloat32), 0) << "the observer saw no product";
}

}  // namespace
}  // namespace streamgen
