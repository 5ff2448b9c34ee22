// Device, dtype and thread set-up for the engine (torch types: engine-internal).
#pragma once

#include <string>

// Not torch/torch.h: see engine/model/llama_model.h.
#include <torch/types.h>
#include <torch/utils.h>

#include "absl/status/statusor.h"

namespace streamgen {

// "cpu", "cuda", "cuda:N" -> a device that exists on this machine, or an error
// that says why not (CPU-only libtorch, no GPU, index out of range).
absl::StatusOr<torch::Device> ParseDevice(const std::string& name);

// "float32" | "bfloat16" | "float16" ("" picks float32 on CPU, bfloat16 on
// CUDA). float16 on CPU is refused: libtorch 1.13 has no float16 CPU kernels.
absl::StatusOr<torch::ScalarType> ParseDtype(const std::string& name, const torch::Device& device);

std::string DtypeName(torch::ScalarType dtype);

// Sets libtorch's intra-op threads: `threads`; when 0, $OMP_NUM_THREADS if it
// is a positive number, else DefaultThreadCount() (common/cpu_quota.h: the
// CPUs of the process's affinity mask and cgroup quota; Debian's libtorch
// starts with 1 thread here). Returns the number set.
int ConfigureThreads(int threads);

// When STREAMGEN_KERNEL_ISA held the kernels below this CPU's best
// (KernelIsaHeldBelowCpu, cpu_isa.h: e.g. avx2 on an AVX-512 CPU, "as on an
// AVX2-only CPU"), holds libtorch there too, so that the process takes the
// paths such a CPU takes: turns libtorch's oneDNN off (libtorch 1.13 sends
// bfloat16 matrix products to oneDNN when cpuinfo reports AVX-512; oneDNN
// held to AVX2 by ONEDNN_MAX_CPU_ISA then throws instead of falling back),
// and sets ATEN_CPU_CAPABILITY to the same level unless it is set (ATen
// reads it on its first vectorized op: this must run before any). OpenBLAS
// picks its kernels when it is loaded, before main: OPENBLAS_CORETYPE=Haswell
// in the environment does that part; its core is reported. Says what it did
// on stderr and in KernelIsaDescription(). Once per process (thread-safe);
// ConfigureThreads calls it. Returns the note ("" when not held).
std::string HoldCpuLibraries();

// A copy of CPU tensor `t` in memory the kernel may back with 2 MiB
// transparent huge pages (madvise(MADV_HUGEPAGE); Debian's default THP mode is
// "madvise", so nothing happens without it). Reading weights and KV blocks
// goes through far fewer TLB misses: on this project's virtual machines a
// sequential read of 256 MB ran at 20 GB/s on 4 KiB pages and 32 GB/s on huge
// pages, scattered 2 KiB reads (KV blocks) at 7 and 10 GB/s. Tensors under
// 1 MiB, non-CPU tensors, and systems without madvise are returned unchanged.
torch::Tensor ToHugePages(const torch::Tensor& t);
// A zero-filled tensor in such memory (a plain torch::zeros below 1 MiB or off
// the CPU). Its pages are faulted in on first use, not here.
torch::Tensor ZerosHugePages(at::IntArrayRef sizes, const torch::TensorOptions& options);

}  // namespace streamgen
