// Paged decode attention on CUDA (issue 13): one query token per sequence,
// keys and values read in place from the paged KV pool through each
// sequence's block table: the CUDA twin of cpu_kernels.h's
// PagedDecodeAttention, same layouts, same contract.
//
// This header has no torch and no CUDA types in it, so that the kernels
// (paged_attention.cu) compile with nvcc alone (scripts/cuda-compile-check.sh
// compiles them in CI with Debian's nvcc 11.8 and the image's nvcc 13, for
// sm_80 and sm_90, on a machine with no GPU), and so that the engine's C++
// code includes it without the CUDA toolkit's headers.
//
// Algorithm (flash-decoding with a fixed partition count, as vLLM's
// paged_attention_v2): the keys of a sequence are split into partitions of
// kPartitionTokens positions; one thread block per (sequence, query head,
// partition) computes the partition's scores, their max m_p, the sum of
// exp(s - m_p) and the un-normalised sum of exp(s - m_p) * v in float32; a
// second kernel merges the partitions of each (sequence, head). The grid is
// sized from `max_partitions`, a bound the caller fixes (from the model's
// context), not from this step's lengths, and the lengths, block tables and
// pointers are read from device memory: so the launch has the same shape on
// every step of a batch-size bucket, which is what capturing it in a CUDA
// graph needs. Blocks whose partition lies beyond their sequence's last
// position exit at once.
#pragma once

#include <cstdint>

namespace streamgen::cuda {

enum class AttnDtype : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

// Positions per partition (one thread block's keys).
inline constexpr int kPartitionTokens = 256;
// Threads per block.
inline constexpr int kAttnThreads = 128;
// head_dim: 1 to kMaxHeadDim (lanes beyond it idle: 64 and 128 use every lane).
inline constexpr int kMaxHeadDim = 256;

struct PagedDecodeParams {
  const void* q = nullptr;       // [batch, heads, head_dim], dtype
  const void* k_pool = nullptr;  // [slots, kv_heads, head_dim], dtype
  const void* v_pool = nullptr;  // [slots, kv_heads, head_dim], dtype
  void* out = nullptr;           // [batch, heads, head_dim], dtype
  // [batch, table_stride]: the block ids of each sequence; position p is in
  // slot block_tables[b * table_stride + p / block_size] * block_size + p % block_size.
  const int32_t* block_tables = nullptr;
  const int32_t* first = nullptr;  // [batch]: first key position (> 0 under a sliding window)
  const int32_t* last = nullptr;   // [batch]: last key position (the query's own), -1: padding row
  // Scratch of PagedDecodeWorkspaceFloats(batch, heads, head_dim, max_partitions) floats.
  float* workspace = nullptr;
  int batch = 0, heads = 0, kv_heads = 0, head_dim = 0;
  int block_size = 0, table_stride = 0;
  int max_partitions = 0;  // >= ceil((last - first + 1) / kPartitionTokens) for every row
  float scale = 0.f;       // scores = scale * q.k
  float softcap = 0.f;     // > 0: scores = softcap * tanh(scores / softcap) before the softmax
  AttnDtype dtype = AttnDtype::kFloat32;
};

// Floats of scratch the launch needs: per (row, head, partition) the
// partial output, its max and its sum.
inline int64_t PagedDecodeWorkspaceFloats(int batch, int heads, int head_dim, int max_partitions) {
  return static_cast<int64_t>(batch) * heads * max_partitions * (head_dim + 2);
}

// Partitions needed for `context` positions.
inline int PagedDecodePartitions(int64_t context) {
  return static_cast<int>((context + kPartitionTokens - 1) / kPartitionTokens);
}

// Soft-capping (Gemma 2's attn_logit_softcapping) is applied to each scaled
// score in the partition kernel, before the partition's max: the merge then
// sees capped scores only, as the CPU kernel's single softmax does.
//
// Checks the parameters and launches both kernels on `stream` (a
// cudaStream_t, passed as void* to keep CUDA's headers out of this one).
// Returns "" on success, else what is wrong (a bad parameter, or the CUDA
// error of the launch). Rows with last < 0 write zeros (padding rows of a
// captured batch-size bucket).
const char* LaunchPagedDecodeAttention(const PagedDecodeParams& p, void* stream);

}  // namespace streamgen::cuda
