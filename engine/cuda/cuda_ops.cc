// Compiled only against a CUDA-enabled libtorch (engine/cuda/CMakeLists.txt);
// scripts/cuda-compile-check.sh also compiles it for syntax against Debian's
// libtorch 1.13 headers, which carry ATen's CUDA headers. It has not run on a
// GPU in this project's CI (no GPU there): the CUDA tests (tests/cuda_test.cc)
// run it when one is present.
#include "engine/cuda/cuda_ops.h"

#include <algorithm>
#include <limits>

#include <ATen/cuda/CUDAContext.h>

#include "engine/cuda/paged_attention.h"

namespace streamgen {

torch::Tensor PagedDecodeAttentionCuda(const torch::Tensor& q, const torch::Tensor& k_pool,
                                       const torch::Tensor& v_pool,
                                       const std::vector<DecodeSeq>& seqs, int64_t block_size,
                                       float scale) {
  TORCH_CHECK(q.is_cuda() && q.dim() == 3 && q.is_contiguous(),
              "PagedDecodeAttentionCuda: q must be a contiguous CUDA [B, H, D] tensor");
  TORCH_CHECK(k_pool.dim() == 3 && k_pool.is_contiguous() && v_pool.is_contiguous() &&
                  k_pool.sizes() == v_pool.sizes() && k_pool.scalar_type() == q.scalar_type() &&
                  v_pool.scalar_type() == q.scalar_type() && k_pool.device() == q.device() &&
                  v_pool.device() == q.device(),
              "PagedDecodeAttentionCuda: pools must be contiguous [slots, KV, D] of q's dtype on "
              "q's device");
  TORCH_CHECK(k_pool.size(0) < std::numeric_limits<int32_t>::max(),
              "PagedDecodeAttentionCuda: more slots than int32 indexes");
  const int64_t b = q.size(0), heads = q.size(1), d = q.size(2), kv = k_pool.size(1);
  TORCH_CHECK(static_cast<int64_t>(seqs.size()) == b && k_pool.size(2) == d && heads % kv == 0,
              "PagedDecodeAttentionCuda: shapes do not match");
  cuda::AttnDtype dtype;
  switch (q.scalar_type()) {
    case torch::kFloat32: dtype = cuda::AttnDtype::kFloat32; break;
    case torch::kFloat16: dtype = cuda::AttnDtype::kFloat16; break;
    case torch::kBFloat16: dtype = cuda::AttnDtype::kBFloat16; break;
    default: TORCH_CHECK(false, "PagedDecodeAttentionCuda: float32, float16 or bfloat16 only");
  }
  torch::Tensor out = torch::empty({b, heads * d}, q.options());
  if (b == 0) return out;
  int64_t stride = 1, max_len = 1;
  for (const DecodeSeq& s : seqs) {
    TORCH_CHECK(s.table != nullptr && 0 <= s.first && s.first <= s.last &&
                    s.last < std::numeric_limits<int32_t>::max(),
                "PagedDecodeAttentionCuda: bad sequence range");
    stride = std::max(stride, s.last / block_size + 1);
    max_len = std::max(max_len, s.last - s.first + 1);
  }
  // One pinned host buffer: tables [B, stride] (padded with block 0), first
  // [B], last [B]; one asynchronous copy. The caching host allocator keeps the
  // buffer until the copy has run, so it may be released here.
  torch::Tensor meta =
      torch::empty({b * (stride + 2)}, torch::dtype(torch::kInt32).pinned_memory(true));
  int32_t* m = meta.data_ptr<int32_t>();
  for (int64_t i = 0; i < b; ++i) {
    const DecodeSeq& s = seqs[i];
    const int64_t blocks = s.last / block_size + 1;
    std::copy(s.table, s.table + blocks, m + i * stride);
    std::fill(m + i * stride + blocks, m + (i + 1) * stride, 0);
    m[b * stride + i] = static_cast<int32_t>(s.first);
    m[b * stride + b + i] = static_cast<int32_t>(s.last);
  }
  torch::Tensor meta_d = meta.to(q.device(), /*non_blocking=*/true);
  const int parts = cuda::PagedDecodePartitions(max_len);
  torch::Tensor workspace = torch::empty(
      {cuda::PagedDecodeWorkspaceFloats(static_cast<int>(b), static_cast<int>(heads),
                                        static_cast<int>(d), parts)},
      q.options().dtype(torch::kFloat32));
  cuda::PagedDecodeParams p;
  p.q = q.data_ptr();
  p.k_pool = k_pool.data_ptr();
  p.v_pool = v_pool.data_ptr();
  p.out = out.data_ptr();
  const int32_t* md = meta_d.data_ptr<int32_t>();
  p.block_tables = md;
  p.first = md + b * stride;
  p.last = md + b * stride + b;
  p.workspace = workspace.data_ptr<float>();
  p.batch = static_cast<int>(b);
  p.heads = static_cast<int>(heads);
  p.kv_heads = static_cast<int>(kv);
  p.head_dim = static_cast<int>(d);
  p.block_size = static_cast<int>(block_size);
  p.table_stride = static_cast<int>(stride);
  p.max_partitions = parts;
  p.scale = scale;
  p.dtype = dtype;
  const char* error = cuda::LaunchPagedDecodeAttention(
      p, at::cuda::getCurrentCUDAStream(q.device().index()).stream());
  TORCH_CHECK(error[0] == '\0', "PagedDecodeAttentionCuda: ", error);
  return out;
}

}  // namespace streamgen
