// Vectorised CPU kernels of the forward pass. Each has a body per ISA
// (portable, AVX2 + FMA, AVX-512), picked at run time by ActiveIsa()
// (engine/model/cpu_isa.h: detection, forcing, STREAMGEN_KERNEL_ISA); the
// project builds for baseline x86-64:
//
// - PagedDecodeAttention: one query per sequence, keys and values read in
//   place from the KV pool through each sequence's block table.
// - SiluMul, GeluTanhMul and RmsNorm: the MLP activations and the norms, one pass each.
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

// Not torch/torch.h: see engine/model/llama_model.h.
#include <torch/types.h>
#include <torch/utils.h>

#include "engine/model/cpu_isa.h"

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
// head h using key/value head h / (H / KV). softcap > 0 caps the scaled
// scores before the softmax, s = softcap * tanh(s / softcap) (Gemma 2's
// attn_logit_softcapping, in transformers' order); 0: off. scale must be
// finite, softcap finite and >= 0 (c10::Error otherwise).
torch::Tensor PagedDecodeAttention(const torch::Tensor& q, const torch::Tensor& k_pool,
                                   const torch::Tensor& v_pool, const std::vector<DecodeSeq>& seqs,
                                   int64_t block_size, float scale, float softcap = 0.0f);

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

// gelu_tanh(gate) * up for gu = [M, 2I] (gate | up stacked) -> [M, I] in
// gu's dtype: Gemma 3's MLP (transformers' gelu_pytorch_tanh, libtorch's
// gelu(approximate="tanh")), one pass, in float32. bfloat16 rounds twice as
// transformers does on bfloat16 tensors (as SiluMul's vector bodies do): the
// activation stored in bfloat16, then the product. CPU float32 / bfloat16
// contiguous input: the kernel (the active ISA's body: AVX-512, AVX2 or
// portable); anything else: libtorch's gelu and mul.
torch::Tensor GeluTanhMul(const torch::Tensor& gu);

// Rotary embedding in place (Hugging Face's rotate-half layout) on the first
// `heads` heads of each row of qkv = [T, >= heads * D] (float32 or bfloat16,
// rows contiguous): x * cos + rotate_half(x) * sin with cos/sin the rows
// positions[t] of the [P, rotary_dim] tables (qkv's dtype), rounded as
// libtorch's three ops round (each product, then the sum, in x's dtype; no
// FMA), so the result is bit-identical to the op-by-op path. One pass instead
// of 8 libtorch ops (narrow, neg, cat, two muls, add) per q and k per layer.
// Partial rotary (Phi-3's partial_rotary_factor, rotary_dim < D): only each
// head's first rotary_dim dims rotate (rotate-half over those), the rest pass
// through unchanged, as transformers' `q_rot, q_pass` split does.
// rotary_dim 0: the whole head (D). Even, <= D.
void RotaryInPlace(torch::Tensor& qkv, int64_t heads, int64_t head_dim, const torch::Tensor& cos,
                   const torch::Tensor& sin, const std::vector<int64_t>& positions,
                   int64_t rotary_dim = 0);

// ---- Linear layers of the decode step (issue 12) ----
//
// A linear layer's weight [N, K] (N outputs, K inputs): in the compute dtype
// (float32 or bfloat16), or int8 with one float32 scale per output row
// (symmetric, weight ~= q * scale[n]; QuantizeInt8).
struct LinearWeight {
  torch::Tensor w;      // [N, K] contiguous: the compute dtype, or int8
  torch::Tensor scale;  // [N] float32 when w is int8, else undefined
  bool int8() const { return scale.defined(); }
  int64_t nbytes() const { return w.nbytes() + (scale.defined() ? scale.nbytes() : 0); }
};

// Symmetric per-output-row int8: scale[n] = max_k |w[n, k]| / 127 (1 for an
// all-zero row), q = round(w / scale) in [-127, 127]. Computed in float32
// from any floating dtype. |w - q * scale| <= scale / 2 per element.
LinearWeight QuantizeInt8(const torch::Tensor& w);
// q * scale as float32 [N, K] (tests, the error measurements).
torch::Tensor DequantizeInt8(const LinearWeight& w);

// y = x w^T for x [M, K] (float32 or bfloat16, contiguous) -> [M, N] in x's
// dtype: the matrix-vector / skinny-matrix kernel. Every output is one dot
// product accumulated in float32 over K in the same order whatever M, the
// row's place in the batch or the thread split: a row gives bit-identical
// results alone and among others (batch-invariant). The weight is read from
// memory once per call (each weight row is reused from L1/L2 for every row
// of x). Weight dtypes: x's own, or int8 (LinearWeight::scale).
// Threads split the output columns (one parallel region per call).
torch::Tensor SkinnyLinear(const torch::Tensor& x, const LinearWeight& w);
// The body SkinnyLinear (and CpuLinearGroup's skinny pairs) run: the active
// ISA's, except on AMD Zen 4 left to choose (KernelIsaIsAuto), where the
// AVX2 body is used: Zen 4 runs AVX-512 as two 256-bit halves, and there the
// AVX-512 body measured 1.2-1.7x slower than the AVX2 one at batch 1 for
// every weight dtype (bench/README.md, "Kernels per ISA"). A fixed rule, not
// a start-up calibration: every replica on the same CPU computes the same
// bits (a resumed stream may move to another replica).
KernelIsa SkinnyKernelIsa();

// SkinnyLinear's two schedules of the same sums: row by row (each weight row
// against every row of x, the weight streamed once) and, from TiledMinRows()
// rows of x, tiled (a register-blocked tile of rows of x by weight rows: the
// batched range, where the row-by-row schedule is bound by re-reading x).
// Every output is bit-identical either way (the tiled bodies run each dot
// product's four FMA chains in the same order), so the batch invariance
// holds across the switch. The portable body has one schedule. Where the
// skinny body is AVX2 on a CPU that runs AVX-512 (Zen 4), the tiles run on
// AVX-512 registers with the AVX2 body's sums (the same bits). kAuto: the
// measured table; kRows / kTiles force one (benchmarks and tests).
enum class SkinnySchedule { kAuto, kRows, kTiles };
void SetSkinnySchedule(SkinnySchedule schedule);
// The rows from which SkinnyLinear tiles under SkinnyKernelIsa() and the
// schedule set, for weights of w_dtype (float32, bfloat16 or int8;
// INT64_MAX: never, as on the portable body).
int64_t TiledMinRows(torch::ScalarType w_dtype);

// The linear layer as LlamaModel runs it on the CPU, by CpuLinearRouteFor:
// SkinnyLinear up to SkinnyMaxRows(w, x's dtype) rows of x, above that a GEMM
// path. Batch-invariant only up to SkinnyMaxRows.
torch::Tensor CpuLinear(const torch::Tensor& x, const LinearWeight& w);
// CpuLinear for several pairs: out[i] = CpuLinear(xs[i], *ws[i]), bit for
// bit. The pairs within the skinny kernel's range share one parallel region
// (their output columns end to end, split over the threads), instead of one
// region each: the experts of a MoE layer. The others run as CpuLinear does.
std::vector<torch::Tensor> CpuLinearGroup(const std::vector<torch::Tensor>& xs,
                                          const std::vector<const LinearWeight*>& ws);
// For benchmarks: kLibtorch makes CpuLinear run what the model ran before the
// skinny kernels (torch::mv for one row, torch::mm above, whatever the ISA;
// int8 through Int8TiledGemm), so both can be measured in one run.
enum class CpuLinearPath { kKernels, kLibtorch };
void SetCpuLinearPath(CpuLinearPath path);

// The ways CpuLinear computes a product.
enum class CpuLinearRoute {
  kSkinny,        // SkinnyLinear (up to SkinnyMaxRows rows)
  kTorchMm,       // libtorch's mm in x's dtype (float32: OpenBLAS; bfloat16: oneDNN)
  kFloat32Tiles,  // Float32TiledGemm: bfloat16 x and w through float32 GEMM
  kInt8Tiles,     // Int8TiledGemm dequantizing to x's dtype
  kInt8Float32Tiles,  // Int8TiledGemm dequantizing to float32 (bfloat16 x)
};
// The route CpuLinear takes for `rows` rows of x_dtype against w under the
// active ISA and CpuLinearPath. Without native bfloat16 dot products
// (ActiveIsaHasNativeBf16() false: AVX2, portable, AVX-512 without
// AVX512-BF16) a bfloat16 product above the crossover never reaches
// libtorch's bfloat16 GEMM, a slow fallback there (16 s for a 128-token
// prompt on an AVX2 machine), but runs in float32 (kFloat32Tiles,
// kInt8Float32Tiles); the kLibtorch path is the exception (kept as it was,
// for comparisons).
CpuLinearRoute CpuLinearRouteFor(int64_t rows, const LinearWeight& w, torch::ScalarType x_dtype);
// "skinny", "torch_mm", "float32_tiles", "int8_tiles", "int8_float32_tiles".
const char* CpuLinearRouteName(CpuLinearRoute route);

// The int8 GEMM path: w dequantized a tile of rows at a time (to x's dtype,
// or to float32 for bfloat16 x without native bfloat16 dot products: the
// dequantized value is rounded to bfloat16 first, as the native path rounds
// it), each tile through libtorch's mm. Result in x's dtype.
torch::Tensor Int8TiledGemm(const torch::Tensor& x, const LinearWeight& w);
// x w^T for a float32 or bfloat16 w: x and w's tiles of rows converted to
// float32 (exact for bfloat16), each tile through libtorch's float32 mm
// (OpenBLAS), the result rounded once to x's dtype. Measured faster than
// libtorch's bfloat16 GEMM on CPUs without AVX512-BF16 (bench/README.md).
torch::Tensor Float32TiledGemm(const torch::Tensor& x, const LinearWeight& w);
// The crossover: rows of x above which CpuLinear leaves the skinny kernel,
// per ISA and weight dtype (a measured table per ISA: bench/README.md,
// "Linear kernels" and "Kernels per ISA").
int64_t SkinnyMaxRows(const LinearWeight& w, torch::ScalarType x_dtype);

// Which bodies the kernels use: KernelIsa, SetKernelIsa (refuses an ISA the
// CPU lacks), ActiveIsa and ActiveKernelIsa ("portable", "avx2", "avx512")
// are in engine/model/cpu_isa.h.

// A plain multi-threaded streaming read of `bytes` bytes at `data` (one
// parallel region, each thread a contiguous part); returns a checksum so the
// reads cannot be optimised away. The read-bandwidth probe of the benchmarks.
uint64_t StreamRead(const void* data, int64_t bytes);

// What one parallel region costs, in microseconds: the mean over `reps` of an
// at::parallel_for over the intra-op threads with an almost empty body. In
// this file because at::parallel_for's `#pragma omp parallel` is compiled into
// its caller, and only engine/model/cpu_kernels.cc is built with -fopenmp (elsewhere
// the region would silently run on one thread).
double ParallelRegionMicros(int reps);

}  // namespace streamgen
