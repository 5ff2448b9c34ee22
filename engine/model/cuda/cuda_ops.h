// The engine's CUDA operations on torch tensors (issue 13): the glue between
// LlamaModel and the CUDA kernels of this folder. Declared everywhere,
// defined only in a build against a CUDA-enabled libtorch (STREAMGEN_CUDA;
// cuda_ops.cc), so callers test kCudaKernels before calling.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

// Not torch/torch.h: see engine/model/llama_model.h.
#include <torch/types.h>
#include <torch/utils.h>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

#include "engine/model/cpu_kernels.h"  // DecodeSeq

namespace streamgen {

#if defined(STREAMGEN_CUDA)
inline constexpr bool kCudaKernels = true;
#else
inline constexpr bool kCudaKernels = false;
#endif

// PagedDecodeAttention (cpu_kernels.h) on a CUDA device, same contract: q
// [B, H, D], pools [slots, KV, D] of q's dtype (float32, float16 or
// bfloat16), all contiguous on one CUDA device; returns [B, H * D] in q's
// dtype. The block tables and ranges go to the device in one pinned,
// asynchronous copy on the current stream; nothing synchronises. scale and
// softcap as in PagedDecodeAttention (softcap > 0: scores = softcap *
// tanh(scale q.k / softcap) before the softmax; 0: off).
torch::Tensor PagedDecodeAttentionCuda(const torch::Tensor& q, const torch::Tensor& k_pool,
                                       const torch::Tensor& v_pool,
                                       const std::vector<DecodeSeq>& seqs, int64_t block_size,
                                       float scale, float softcap = 0.0f);

// The same kernel over metadata already on the device, for a step captured
// in a CUDA graph: `meta` is int32 [rows * (stride + 1 + W)], W >= 1 window
// sets (cuda_graph_decode.h's DecodeGraph): block tables [rows, stride],
// then set 0's first [rows], then last [rows], then the first [rows] of sets
// 1 .. W-1 (W = 1: tables, first, last). `window_set` picks the first
// positions this layer attends from; last = -1 marks a padding row, whose
// output is zeros. `partitions` bounds ceil((last - first + 1) / 256) over
// the set's rows; `workspace` is float32 of at least
// cuda::PagedDecodeWorkspaceFloats(rows, H, D, partitions) elements.
// Allocates only the output; no host work depends on the step's lengths.
torch::Tensor PagedDecodeAttentionCudaStatic(const torch::Tensor& q, const torch::Tensor& k_pool,
                                             const torch::Tensor& v_pool, const torch::Tensor& meta,
                                             int64_t stride, int64_t partitions,
                                             const torch::Tensor& workspace, int64_t block_size,
                                             float scale, float softcap = 0.0f,
                                             int64_t window_set = 0);

// The device's free and total memory (cudaMemGetInfo). In a build without
// CUDA: FAILED_PRECONDITION.
struct CudaMemory {
  int64_t free = 0;
  int64_t total = 0;
};
absl::StatusOr<CudaMemory> CudaMemoryInfo(const torch::Device& device);

// CUDA graph capture of a callable (a decode step over static buffers):
// warms it up once on a side stream, captures it, and returns an opaque
// handle; ReplayCudaGraph runs it on the current stream. Only in CUDA
// builds (kCudaKernels).
struct CudaGraphHandle;
std::shared_ptr<CudaGraphHandle> CaptureCudaGraph(const std::function<void()>& body,
                                                  c10::DeviceIndex device);
void ReplayCudaGraph(CudaGraphHandle& graph);

#if !defined(STREAMGEN_CUDA)
inline absl::StatusOr<CudaMemory> CudaMemoryInfo(const torch::Device& device) {
  return absl::FailedPreconditionError(
      absl::StrCat("no CUDA in this build: cannot query ", device.str(), "'s memory"));
}
#endif

}  // namespace streamgen
