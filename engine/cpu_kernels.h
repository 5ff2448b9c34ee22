// Vectorised CPU kernels of the forward pass, each with a portable fallback
// (AVX-512 bodies picked at run time; the project builds for baseline x86-64):
//
// - PagedDecodeAttention: one query per sequence, keys and values read in
//   place from the KV pool through each sequence's block table.
// - SiluMul and RmsNorm: the MLP activation and the norms, one pass each.
//
// Why a paged attention kernel:
// The generic path (LlamaModel::Attend) gathers every sequence's blocks into a
// new tensor and runs bmm + masked softmax + bmm. At batch 16 on a 2-core CPU
// that gather (write then re-read ~100 MB per step) and its per-step
// allocations cost more than the matrix products of the whole layer (profile in
// bench/README.md). This kernel reads each key and value row once, keeps the
// scores in a small per-thread buffer, and allocates nothing per step but the
// output and small per-thread scratch. Scores, softmax and the weighted sum
// are computed in float32 for both float32 and bfloat16 pools.
//
// Included only by engine .cc files and tests: it pulls in torch.
#pragma once

#include <cstdint>
#include <vector>

#include <torch/torch.h>

namespace streamgen {

// One sequence of a decode batch: its query attends to key positions
// [first, last] (last = the query's own position, whose key is already in the
// pool; first > 0 only under a sliding window). The key of position p is in
// slot table[p / block_size] * block_size + p % block_size of the pool.
struct DecodeSeq {
  const int* table = nullptr;
  int64_t first = 0;
  int64_t last = 0;
};

// q: [B, H, D] (float32 or bfloat16, contiguous); k_pool, v_pool:
// [slots, KV, D] of the same dtype, contiguous (KvPool's layout); H a
// multiple of KV. Returns
// [B, H * D] in q's dtype: softmax(scale * q k^T) v per sequence and head, query
// head h using key/value head h / (H / KV).
torch::Tensor PagedDecodeAttention(const torch::Tensor& q, const torch::Tensor& k_pool,
                                   const torch::Tensor& v_pool, const std::vector<DecodeSeq>& seqs,
                                   int64_t block_size, float scale);

// x * rsqrt(mean(x^2) + eps) * w over the last dim of x = [M, N] (float32 or
// bfloat16, contiguous; w [N] of the same dtype), with Hugging Face's
// LlamaRMSNorm roundings: statistics in float32, the normalised value cast
// to x's dtype, then multiplied by w in that dtype. Replaces 7 libtorch ops
// (two dtype conversions among them) per norm.
torch::Tensor RmsNorm(const torch::Tensor& x, const torch::Tensor& w, double eps);

// silu(gate) * up for gu = [M, 2I] (gate_proj | up_proj stacked, float32 or
// bfloat16, contiguous) -> [M, I] in gu's dtype, computed in float32 in one
// pass (libtorch 1.13 runs silu and the product as two bfloat16 passes with
// a temporary; together ~4% of a mixed prefill + decode step here).
torch::Tensor SiluMul(const torch::Tensor& gu);

}  // namespace streamgen
