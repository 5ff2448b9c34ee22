// Compiled only against a CUDA-enabled libtorch (engine/model/cuda/CMakeLists.txt);
// scripts/cuda-compile-check.sh also compiles it for syntax against Debian's
// libtorch 1.13 headers, which carry ATen's CUDA headers. It has not run on a
// GPU in this project's CI (no GPU there): the CUDA tests (tests/cuda_test.cc)
// run it when one is present.
#include "engine/model/cuda/cuda_ops.h"

#include <algorithm>
#include <limits>

#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime_api.h>

#include "engine/model/cuda/paged_attention.h"

namespace streamgen {

torch::Tensor PagedDecodeAttentionCuda(const torch::Tensor& q, const torch::Tensor& k_pool,
                                       const torch::Tensor& v_pool,
                                       const std::vector<DecodeSeq>& seqs, int64_t block_size,
                                       float scale, float softcap) {
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
  if (b == 0) return torch::empty({b, heads * d}, q.options());
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
  return PagedDecodeAttentionCudaStatic(q, k_pool, v_pool, meta_d, stride, parts, workspace,
                                        block_size, scale, softcap);
}

torch::Tensor PagedDecodeAttentionCudaStatic(const torch::Tensor& q, const torch::Tensor& k_pool,
                                             const torch::Tensor& v_pool, const torch::Tensor& meta,
                                             int64_t stride, int64_t partitions,
                                             const torch::Tensor& workspace, int64_t block_size,
                                             float scale, float softcap, int64_t window_set) {
  TORCH_CHECK(q.is_cuda() && q.dim() == 3 && q.is_contiguous() && k_pool.is_contiguous() &&
                  v_pool.is_contiguous() && k_pool.scalar_type() == q.scalar_type() &&
                  v_pool.scalar_type() == q.scalar_type(),
              "PagedDecodeAttentionCudaStatic: contiguous CUDA q and pools of one dtype");
  const int64_t rows = q.size(0), heads = q.size(1), d = q.size(2);
  TORCH_CHECK(meta.is_cuda() && meta.scalar_type() == torch::kInt32 && meta.is_contiguous() &&
                  window_set >= 0 && meta.numel() >= rows * (stride + 2 + window_set) &&
                  (rows == 0 || (meta.numel() - rows * stride) % rows == 0),
              "PagedDecodeAttentionCudaStatic: meta must be int32 [rows * (stride + 1 + W)] "
              "with window_set < W, got ", meta.numel(), " elements for ", rows, " rows, stride ",
              stride, ", window_set ", window_set);
  TORCH_CHECK(workspace.is_cuda() && workspace.scalar_type() == torch::kFloat32 &&
                  workspace.numel() >=
                      cuda::PagedDecodeWorkspaceFloats(static_cast<int>(rows), static_cast<int>(heads),
                                                       static_cast<int>(d),
                                                       static_cast<int>(partitions)),
              "PagedDecodeAttentionCudaStatic: workspace too small");
  torch::Tensor out = torch::empty({rows, heads * d}, q.options());
  cuda::PagedDecodeParams p;
  p.q = q.data_ptr();
  p.k_pool = k_pool.data_ptr();
  p.v_pool = v_pool.data_ptr();
  p.out = out.data_ptr();
  const int32_t* md = meta.data_ptr<int32_t>();
  p.block_tables = md;
  p.first = md + rows * (window_set == 0 ? stride : stride + 1 + window_set);
  p.last = md + rows * (stride + 1);
  p.workspace = workspace.data_ptr<float>();
  p.batch = static_cast<int>(rows);
  p.heads = static_cast<int>(heads);
  p.kv_heads = static_cast<int>(k_pool.size(1));
  p.head_dim = static_cast<int>(d);
  p.block_size = static_cast<int>(block_size);
  p.table_stride = static_cast<int>(stride);
  p.max_partitions = static_cast<int>(partitions);
  p.scale = scale;
  p.softcap = softcap;
  switch (q.scalar_type()) {
    case torch::kFloat32: p.dtype = cuda::AttnDtype::kFloat32; break;
    case torch::kFloat16: p.dtype = cuda::AttnDtype::kFloat16; break;
    case torch::kBFloat16: p.dtype = cuda::AttnDtype::kBFloat16; break;
    default: TORCH_CHECK(false, "PagedDecodeAttentionCudaStatic: float32, float16 or bfloat16 only");
  }
  const char* error = cuda::LaunchPagedDecodeAttention(
      p, at::cuda::getCurrentCUDAStream(q.device().index()).stream());
  TORCH_CHECK(error[0] == '\0', "PagedDecodeAttentionCudaStatic: ", error);
  return out;
}

struct CudaGraphHandle {
  at::cuda::CUDAGraph graph;
};

// The pattern of torch.cuda.graphs.graph(): the side stream waits for the
// current one, the body runs once there (cuBLAS handles and workspaces are
// created outside the capture), is captured on the same side stream (capture
// needs a non-default stream), and the current stream waits for the side
// stream again. Tensors the body allocates come from the graph's private
// memory pool and stay reserved for its replays.
std::shared_ptr<CudaGraphHandle> CaptureCudaGraph(const std::function<void()>& body,
                                                  c10::DeviceIndex device) {
  c10::cuda::CUDAStream current = c10::cuda::getCurrentCUDAStream(device);
  c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool(/*isHighPriority=*/false, device);
  auto handle = std::make_shared<CudaGraphHandle>();
  at::cuda::CUDAEvent before;
  before.record(current);
  before.block(side);
  {
    c10::cuda::CUDAStreamGuard guard(side);
    body();  // warm-up
    side.synchronize();
    handle->graph.capture_begin();
    body();
    handle->graph.capture_end();
  }
  at::cuda::CUDAEvent after;
  after.record(side);
  after.block(current);
  return handle;
}

void ReplayCudaGraph(CudaGraphHandle& graph) { graph.graph.replay(); }

absl::StatusOr<CudaMemory> CudaMemoryInfo(const torch::Device& device) {
  c10::cuda::CUDAGuard guard(device.index());
  size_t free = 0, total = 0;
  const cudaError_t err = cudaMemGetInfo(&free, &total);
  if (err != cudaSuccess) {
    return absl::InternalError(
        absl::StrCat("cudaMemGetInfo on ", device.str(), ": ", cudaGetErrorString(err)));
  }
  return CudaMemory{static_cast<int64_t>(free), static_cast<int64_t>(total)};
}

}  // namespace streamgen
