// The engine's CUDA operations on torch tensors (issue 13): the glue between
// LlamaModel and the CUDA kernels of this folder. Declared everywhere,
// defined only in a build against a CUDA-enabled libtorch (STREAMGEN_CUDA;
// cuda_ops.cc), so callers test kCudaKernels before calling.
#pragma once

#include <cstdint>
#include <vector>

#include <torch/torch.h>

#include "engine/cpu_kernels.h"  // DecodeSeq

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
// asynchronous copy on the current stream; nothing synchronises.
torch::Tensor PagedDecodeAttentionCuda(const torch::Tensor& q, const torch::Tensor& k_pool,
                                       const torch::Tensor& v_pool,
                                       const std::vector<DecodeSeq>& seqs, int64_t block_size,
                                       float scale);

}  // namespace streamgen
