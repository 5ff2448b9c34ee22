#include "engine/model/device.h"

#include "common/cpu_quota.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <thread>

#if defined(__linux__)
#include <dlfcn.h>
#endif

#include <ATen/Context.h>

#include <torch/cuda.h>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "engine/model/cpu_isa.h"

#if defined(STREAMGEN_CUDA)
#include <torch/cuda.h>
#endif

namespace streamgen {

absl::StatusOr<torch::Device> ParseDevice(const std::string& name) {
  if (name == "cpu") return torch::Device(torch::kCPU);
  if (name == "cuda" || absl::StartsWith(name, "cuda:")) {
    int index = 0;
    if (name != "cuda" && !absl::SimpleAtoi(name.substr(5), &index)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--device: '", name, "' is not cpu, cuda or cuda:N"));
    }
    if (!torch::cuda::is_available()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "--device ", name,
          ": CUDA is not available (no GPU, or this libtorch is built without CUDA); use "
          "--device cpu"));
    }
    const int count = static_cast<int>(torch::cuda::device_count());
    if (index < 0 || index >= count) {
      return absl::InvalidArgumentError(
          absl::StrCat("--device ", name, ": there are ", count, " CUDA devices"));
    }
    return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--device: '", name, "' is not cpu, cuda or cuda:N"));
}

absl::StatusOr<torch::ScalarType> ParseDtype(const std::string& name,
                                             const torch::Device& device) {
  if (name.empty()) return device.is_cuda() ? torch::kBFloat16 : torch::kFloat32;
  if (name == "float32") return torch::kFloat32;
  if (name == "bfloat16") return torch::kBFloat16;
  if (name == "float16") {
    if (device.is_cpu()) {
      return absl::InvalidArgumentError(
          "--dtype float16 is not supported on CPU (libtorch has no float16 CPU kernels): use "
          "float32 or bfloat16");
    }
    return torch::kFloat16;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--dtype: '", name, "' is not float32, bfloat16 or float16"));
}

std::string DtypeName(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kFloat32:
      return "float32";
    case torch::kBFloat16:
      return "bfloat16";
    case torch::kFloat16:
      return "float16";
    default:
      return c10::toString(dtype);
  }
}

std::string HoldCpuLibraries() {
  static const std::string note = [] {
    if (!KernelIsaHeldBelowCpu()) return std::string();
    const KernelIsa isa = ActiveIsa();
    at::globalContext().setUserEnabledMkldnn(false);
    // ATen's names: "default" (no vector ISA), "avx2", "avx512".
    const char* aten = isa == KernelIsa::kAvx2 ? "avx2" : "default";
    const char* set = std::getenv("ATEN_CPU_CAPABILITY");
    if (set == nullptr || *set == '\0') {
      setenv("ATEN_CPU_CAPABILITY", aten, 1);
      set = aten;
    }
    // OpenBLAS's own report of the kernels it chose (a dynamic-arch build
    // chooses at load; OPENBLAS_CORETYPE overrides the choice).
    std::string blas = "unknown";
#if defined(__linux__)
    using CoreName = char* (*)();
    if (auto f = reinterpret_cast<CoreName>(dlsym(RTLD_DEFAULT, "openblas_get_corename"))) {
      blas = f();
    }
#endif
    const char* as = isa == KernelIsa::kAvx2 ? "an AVX2-only CPU" : "a CPU without AVX2";
    std::string n = absl::StrCat("as on ", as, " (", kKernelIsaEnv, "=", KernelIsaName(isa),
                                 "): libtorch's oneDNN off, ATEN_CPU_CAPABILITY=", set,
                                 ", OpenBLAS core ", blas);
    // OpenBLAS chose at load: only the environment holds it (the caller's part).
    const char* core = std::getenv("OPENBLAS_CORETYPE");
    if (core == nullptr || *core == '\0') {
      absl::StrAppend(&n, " (OPENBLAS_CORETYPE unset: set it, e.g. to Haswell, to hold OpenBLAS too)");
    }
    std::fprintf(stderr, "streamgen: %s\n", n.c_str());
    SetCpuLibrariesNote(n);
    return n;
  }();
  return note;
}

int ConfigureThreads(int threads) {
  HoldCpuLibraries();  // before any op: ATen reads its capability once
  // OMP_NUM_THREADS, as OpenMP programs read it (the TSan job sets 1: libgomp's
  // barriers are invisible to TSan, so two threads would show false races).
  if (threads <= 0) {
    const char* env = std::getenv("OMP_NUM_THREADS");
    if (env == nullptr || !absl::SimpleAtoi(env, &threads)) threads = 0;
  }
  if (threads <= 0) threads = DefaultThreadCount();
  at::set_num_threads(threads);
  return threads;
}

torch::Tensor ZerosHugePages(at::IntArrayRef sizes, const torch::TensorOptions& options) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr size_t kHuge = size_t{2} << 20;
  const size_t nbytes = static_cast<size_t>(c10::multiply_integers(sizes)) *
                        c10::elementSize(c10::typeMetaToScalarType(options.dtype()));
  if (options.device().is_cpu() && nbytes >= (size_t{1} << 20)) {
    // A mapping of its own, 2 MiB-aligned. Not aligned_alloc: glibc may carve
    // that from its heap, and the advice would then stick to heap pages that
    // later hold per-step temporaries, each refault zeroing a whole 2 MiB page
    // (seen: a fifth of the server's CPU time in clear_page under load).
    const size_t bytes = (nbytes + kHuge - 1) / kHuge * kHuge;
    void* raw = mmap(nullptr, bytes + kHuge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                     -1, 0);
    if (raw != MAP_FAILED) {
      char* base = static_cast<char*>(raw);
      char* mem = reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(base) + kHuge - 1) &
                                          ~(uintptr_t{kHuge} - 1));
      if (mem > base) munmap(base, mem - base);
      if (char* end = mem + bytes; end < base + bytes + kHuge) munmap(end, base + bytes + kHuge - end);
      madvise(mem, bytes, MADV_HUGEPAGE);  // advice only: failure leaves 4 KiB pages
      // Fresh anonymous memory reads as zeros; pages are faulted in on first use.
      return torch::from_blob(
          mem, sizes, [bytes](void* p) { munmap(p, bytes); }, options);
    }
  }
#endif
  return torch::zeros(sizes, options);
}

torch::Tensor ToHugePages(const torch::Tensor& t) {
  if (!t.device().is_cpu() || t.nbytes() < (size_t{1} << 20)) return t;
  return ZerosHugePages(t.sizes(), t.options()).copy_(t);
}
}  // namespace streamgen
