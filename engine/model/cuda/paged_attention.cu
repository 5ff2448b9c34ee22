// Paged decode attention kernels: see paged_attention.h for the contract and
// the algorithm. Kept to CUDA 11.8's feature set (Debian 12's nvcc compiles
// this file in CI): cuda_bf16.h's conversions, warp shuffles, no cooperative
// groups, no thread-block clusters.
#include "engine/model/cuda/paged_attention.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>

namespace streamgen::cuda {
namespace {

__device__ __forceinline__ float ToFloat(float x) { return x; }
__device__ __forceinline__ float ToFloat(__half x) { return __half2float(x); }
__device__ __forceinline__ float ToFloat(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T FromFloat(float x);
template <>
__device__ __forceinline__ float FromFloat<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half FromFloat<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 FromFloat<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

constexpr int kWarps = kAttnThreads / 32;

__device__ __forceinline__ float WarpSum(float v) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}
__device__ __forceinline__ float WarpMax(float v) {
  for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
}

// A block-wide reduction over kAttnThreads threads (max or sum); every thread
// gets the result. `red` is kWarps floats of shared memory; it starts and
// ends with a barrier, so shared scores written before are visible after.
template <bool kMax>
__device__ float BlockReduce(float v, float* red) {
  v = kMax ? WarpMax(v) : WarpSum(v);
  __syncthreads();
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = v;
  __syncthreads();
  float r = red[0];
  for (int w = 1; w < kWarps; ++w) r = kMax ? fmaxf(r, red[w]) : r + red[w];
  __syncthreads();
  return r;
}

// Workspace of one (row, head, partition): [head_dim] partial output, then its max and sum.
__device__ __forceinline__ float* Partial(const PagedDecodeParams& p, int b, int h, int part) {
  return p.workspace +
         ((static_cast<int64_t>(b) * p.heads + h) * p.max_partitions + part) * (p.head_dim + 2);
}

// grid (max_partitions, heads, batch), kAttnThreads threads.
template <typename T>
__global__ void __launch_bounds__(kAttnThreads) PartitionKernel(PagedDecodeParams p) {
  const int part = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int d = p.head_dim;
  const int first = p.first[b], last = p.last[b];
  float* ws = Partial(p, b, h, part);
  const int start = first + part * kPartitionTokens;
  if (last < 0 || start > last) {  // nothing here: the merge skips it
    if (threadIdx.x == 0) {
      ws[d] = -INFINITY;
      ws[d + 1] = 0.f;
    }
    return;
  }
  const int n = min(last, start + kPartitionTokens - 1) - start + 1;
  const int kvh = h / (p.heads / p.kv_heads);
  const int64_t row_stride = static_cast<int64_t>(p.kv_heads) * d;  // elements per slot
  const int32_t* table = p.block_tables + static_cast<int64_t>(b) * p.table_stride;

  __shared__ float q_s[kMaxHeadDim];
  __shared__ float scores[kPartitionTokens];
  __shared__ int32_t slots[kPartitionTokens];
  __shared__ float red[kWarps];
  const T* q = static_cast<const T*>(p.q) + (static_cast<int64_t>(b) * p.heads + h) * d;
  for (int j = threadIdx.x; j < d; j += kAttnThreads) q_s[j] = ToFloat(q[j]);
  for (int i = threadIdx.x; i < n; i += kAttnThreads) {
    const int pos = start + i;
    slots[i] = table[pos / p.block_size] * p.block_size + pos % p.block_size;
  }
  __syncthreads();

  // Scores: one warp per key, its lanes over head_dim (coalesced row reads).
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const T* kp = static_cast<const T*>(p.k_pool) + kvh * d;
  for (int i = warp; i < n; i += kWarps) {
    const T* k = kp + slots[i] * row_stride;
    float s = 0.f;
    for (int j = lane; j < d; j += 32) s += q_s[j] * ToFloat(k[j]);
    s = WarpSum(s);
    if (lane == 0) {
      s *= p.scale;
      // tanhf, not the approximate tanh.approx: the CPU kernel's libm tanh
      // is the reference the float32 comparisons hold it to.
      if (p.softcap > 0.f) s = tanhf(s / p.softcap) * p.softcap;
      scores[i] = s;
    }
  }
  __syncthreads();

  float m = -INFINITY;
  for (int i = threadIdx.x; i < n; i += kAttnThreads) m = fmaxf(m, scores[i]);
  m = BlockReduce<true>(m, red);
  float sum = 0.f;
  for (int i = threadIdx.x; i < n; i += kAttnThreads) {
    const float e = expf(scores[i] - m);
    scores[i] = e;
    sum += e;
  }
  sum = BlockReduce<false>(sum, red);  // its barriers publish the exponentials

  // Un-normalised weighted sum of the values: a thread per output element,
  // so each key's value row is read by consecutive threads.
  const T* vp = static_cast<const T*>(p.v_pool) + kvh * d;
  for (int j = threadIdx.x; j < d; j += kAttnThreads) {
    float acc = 0.f;
    for (int i = 0; i < n; ++i) acc += scores[i] * ToFloat(vp[slots[i] * row_stride + j]);
    ws[j] = acc;
  }
  if (threadIdx.x == 0) {
    ws[d] = m;
    ws[d + 1] = sum;
  }
}

// grid (heads, batch), kAttnThreads threads: merges the partitions.
template <typename T>
__global__ void __launch_bounds__(kAttnThreads) MergeKernel(PagedDecodeParams p) {
  const int h = blockIdx.x, b = blockIdx.y;
  const int d = p.head_dim;
  T* out = static_cast<T*>(p.out) + (static_cast<int64_t>(b) * p.heads + h) * d;
  const int first = p.first[b], last = p.last[b];
  if (last < 0) {  // a padding row
    for (int j = threadIdx.x; j < d; j += kAttnThreads) out[j] = FromFloat<T>(0.f);
    return;
  }
  const int needed = (last - first + kPartitionTokens) / kPartitionTokens;  // PagedDecodePartitions
  if (needed > p.max_partitions || first < 0 || first > last) {
    // The caller's bound was wrong: NaN, loud, rather than attention over a
    // silently truncated context.
    for (int j = threadIdx.x; j < d; j += kAttnThreads) out[j] = FromFloat<T>(NAN);
    return;
  }
  float m = -INFINITY;
  for (int i = 0; i < needed; ++i) m = fmaxf(m, Partial(p, b, h, i)[d]);
  float denom = 0.f;
  for (int i = 0; i < needed; ++i) {
    const float* ws = Partial(p, b, h, i);
    denom += expf(ws[d] - m) * ws[d + 1];
  }
  for (int j = threadIdx.x; j < d; j += kAttnThreads) {
    float acc = 0.f;
    for (int i = 0; i < needed; ++i) {
      const float* ws = Partial(p, b, h, i);
      acc += expf(ws[d] - m) * ws[j];
    }
    out[j] = FromFloat<T>(acc / denom);
  }
}

template <typename T>
const char* Launch(const PagedDecodeParams& p, cudaStream_t stream) {
  const dim3 parts(p.max_partitions, p.heads, p.batch);
  PartitionKernel<T><<<parts, kAttnThreads, 0, stream>>>(p);
  const dim3 merge(p.heads, p.batch);
  MergeKernel<T><<<merge, kAttnThreads, 0, stream>>>(p);
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? "" : cudaGetErrorString(err);
}

}  // namespace

const char* LaunchPagedDecodeAttention(const PagedDecodeParams& p, void* stream) {
  if (p.batch < 0 || p.heads <= 0 || p.kv_heads <= 0 || p.heads % p.kv_heads != 0) {
    return "paged decode attention: heads must be a positive multiple of kv_heads";
  }
  if (p.head_dim <= 0 || p.head_dim > kMaxHeadDim) {
    return "paged decode attention: head_dim must be 1 to 256";
  }
  if (p.block_size <= 0 || p.table_stride <= 0 || p.max_partitions <= 0) {
    return "paged decode attention: block_size, table_stride and max_partitions must be positive";
  }
  if (p.heads > 65535 || p.batch > 65535 || p.max_partitions > (1 << 30)) {
    return "paged decode attention: grid too large";
  }
  if (!std::isfinite(p.scale) || !std::isfinite(p.softcap) || p.softcap < 0.f) {
    return "paged decode attention: scale must be finite and softcap finite and >= 0 (0: off)";
  }
  if (p.batch == 0) return "";
  if (!p.q || !p.k_pool || !p.v_pool || !p.out || !p.block_tables || !p.first || !p.last ||
      !p.workspace) {
    return "paged decode attention: a null pointer";
  }
  auto s = static_cast<cudaStream_t>(stream);
  switch (p.dtype) {
    case AttnDtype::kFloat32:
      return Launch<float>(p, s);
    case AttnDtype::kFloat16:
      return Launch<__half>(p, s);
    case AttnDtype::kBFloat16:
      return Launch<__nv_bfloat16>(p, s);
  }
  return "paged decode attention: unknown dtype";
}

}  // namespace streamgen::cuda
