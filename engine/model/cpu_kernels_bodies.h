// The per-ISA bodies of the CPU kernels (cpu_kernels.h), internal to
// engine/model: cpu_kernels.cc checks the tensors and picks a body by
// ActiveIsa() (cpu_isa.h); each body lives in its own file, compiled for
// baseline x86-64 with per-function target attributes:
//   cpu_kernels_portable.cc  plain C++ (`omp simd` loops, GCC target_clones);
//                            also compiles on aarch64
//   cpu_kernels_avx2.cc      AVX2 + FMA, 8 lanes
//   cpu_kernels_avx512.cc    AVX-512 F/BW/VL/DQ, 16 lanes
// Torch-free (raw pointers), so the bodies compile fast and without libtorch.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace streamgen::kernels {

inline float ToFloat(float x) { return x; }
// bfloat16 is the high half of a float32.
inline float ToFloat(uint16_t bits) {
  const uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}
inline float ToFloat(int8_t q) { return static_cast<float>(q); }

// float32 -> bfloat16 bits, rounded to nearest even; NaN not special-cased
// (the vector bodies' rounding; GeluTanhMul's intermediate roundings).
inline uint16_t RoundBf16(float v) {
  uint32_t u;
  std::memcpy(&u, &v, sizeof(u));
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
// As c10::BFloat16(v).x: RoundBf16, and NaN -> 0x7fc0.
inline uint16_t Bf16Bits(float v) { return std::isnan(v) ? uint16_t{0x7fc0} : RoundBf16(v); }

// exp(x) for x <= 0 (scores minus their maximum), Cephes' polynomial:
// relative error ~2e-7 over the range; exactly 0 below -87. Every body's
// vector exp computes this polynomial in this order (FMA where it has FMA).
inline float ExpNonPositive(float x) {
  const float clamped = std::max(x, -87.0f);
  const float fx = std::floor(clamped * 1.44269504088896341f + 0.5f);
  float r = clamped - fx * 0.693359375f;
  r -= fx * -2.12194440e-4f;
  const float z = r * r;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * z + r + 1.0f;
  const uint32_t bits = static_cast<uint32_t>(static_cast<int32_t>(fx) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return x < -87.0f ? 0.0f : y * scale;
}

// GELU with the tanh approximation (torch's gelu(approximate="tanh"), Hugging
// Face's gelu_pytorch_tanh): 0.5 g (1 + tanh(c (g + 0.044715 g^3))), c =
// sqrt(2 / pi). Computed as g * sigmoid(2c (g + 0.044715 g^3)), the same
// function (1 + tanh(y) = 2 sigmoid(2y)) without tanh's cancellation near -1:
// sigmoid(z) = 1 / (1 + e) for z >= 0, e / (1 + e) below, e = exp(-|z|).
inline constexpr float kGeluTwoC = 1.5957691216057308f;  // 2 sqrt(2 / pi)
inline constexpr float kGeluCubic = 0.044715f;

// ---- PagedDecodeAttention ----

// One task: one sequence's query positions [first, last] of keys, KV heads
// [h0, h0 + nh) and their query heads (nh * G of them, contiguous in q). Each
// key position's row of the pool holds all KV heads ([KV, D], row_stride =
// KV * D elements); the task reads the part of each row for its heads, so
// with one task per sequence (nh = KV) the walk is over whole contiguous
// blocks (block_size * KV * D elements).
struct AttnTask {
  const void* q;  // [nh * G, D]
  const void* k;  // the pool, offset to head h0 of slot 0
  const void* v;
  const int* table;      // the sequence's block table
  int64_t first, last;   // key positions attended
  int64_t block_size, g, d, nh, row_stride;
  float scale;
  float softcap;  // > 0: scores capped to softcap * tanh(score / softcap)
  float* qf;      // [nh * G, D] scratch: the queries in float32
  float* scores;  // [nh * G, L] scratch
  float* acc;     // [nh * G, D] scratch: the weighted sum, then the output
  int64_t* rows;  // [L] scratch: element offsets of the key positions' rows
};

// Fills t.rows[i] with the element offset of the pool row holding key
// position first + i: whole blocks at a time, no division per position.
inline void PoolRows(const AttnTask& t) {
  const int64_t bs = t.block_size, first = t.first, last = t.last;
  int64_t i = 0;
  for (int64_t blk = first / bs; blk <= last / bs; ++blk) {
    const int64_t lo = std::max(first, blk * bs), hi = std::min(last + 1, (blk + 1) * bs);
    const int64_t base = static_cast<int64_t>(t.table[blk]) * bs;
    for (int64_t p = lo; p < hi; ++p, ++i) t.rows[i] = (base + p % bs) * t.row_stride;
  }
}

// Attention-logit soft-capping (Gemma 2's attn_logit_softcapping), over the
// n scaled scores of one query head: s = cap * tanh(s / cap), the three ops
// of transformers' eager attention in its order. Scalar libm tanh in every
// body: only soft-capped models pay for it.
inline void SoftcapScores(float* s, int64_t n, float cap) {
  for (int64_t i = 0; i < n; ++i) s[i] = std::tanh(s[i] / cap) * cap;
}

// ---- SkinnyLinear ----

// Where SkinnyLinear's bodies put an output: out[i] (i = m * N + c) =
// dot * scale[c] (int8 weights) in the output dtype, float32 or bfloat16
// (rounded as c10::BFloat16).
struct SkinnyOut {
  void* p;
  bool bf16;
  const float* scale;  // nullptr: none
  inline void Put(int64_t i, int64_t c, float v) const {
    if (scale != nullptr) v *= scale[c];
    if (bf16) {
      static_cast<uint16_t*>(p)[i] = Bf16Bits(v);
    } else {
      static_cast<float*>(p)[i] = v;
    }
  }
};

// Output columns [begin, end) of x [m, k] (float32) times w [n, k]^T. Each
// body computes every output by the same loop whatever m (batch invariance);
// the bodies' summation orders differ from each other.
#define SG_SKINNY_DECL(name, W)                                                                \
  void name(const float* x, int64_t m, const W* w, int64_t k, int64_t n, int64_t begin, \
            int64_t end, const SkinnyOut& out)

// ---- Each ISA's entry points ----
// Row kernels: out[j] = act(gate[j]) * up[j] (SiluMul, GeluTanhMul); RmsNorm
// over one row of n. Attend*: one AttnTask, the output left in t.acc.

// Portable (every CPU).
void AttendPortableF32(const AttnTask& t);
void AttendPortableBf16(const AttnTask& t);
SG_SKINNY_DECL(SkinnyPortableF32, float);
SG_SKINNY_DECL(SkinnyPortableBf16, uint16_t);
SG_SKINNY_DECL(SkinnyPortableI8, int8_t);
void GeluTanhMulRowPortableF32(const float* gate, const float* up, float* out, int64_t n);
void GeluTanhMulRowPortableBf16(const uint16_t* gate, const uint16_t* up, uint16_t* out, int64_t n);
void RotaryRowF32(float* row, int64_t heads, int64_t d, int64_t rd, const float* cos,
                  const float* sin);
void RotaryRowBf16(uint16_t* row, int64_t heads, int64_t d, int64_t rd, const uint16_t* cos,
                   const uint16_t* sin);
uint64_t StreamReadPortable(const char* p, int64_t bytes);
// The tiled GEMMs' weight conversions, n values at a time: bfloat16 -> float32
// (exact); int8 * scale -> float32 (one rounding), or -> bfloat16 (one
// rounding, as c10::BFloat16), or rounded to bfloat16 and widened back to
// float32. Auto-vectorised loops (GCC target_clones): libtorch 1.13's int8 ->
// float32 conversion and broadcast multiply took ~1.4 s per pass over a 134M
// model's weights on a busy 2-core machine, more than the GEMM.
void WidenBf16(const uint16_t* in, float* out, int64_t n);
void DequantizeInt8F32(const int8_t* q, float scale, float* out, int64_t n, bool round_bf16);
void DequantizeInt8Bf16(const int8_t* q, float scale, uint16_t* out, int64_t n);

// The tiled bodies' and the AVX2 row body's hot loops start on a 64-byte
// boundary. Where they fell otherwise depended on the size of unrelated
// code linked before them, and on Zen 4 one placement made the AVX-512
// body's bfloat16 tiles 1.4-1.6x slower (1 / 4 rows: 17.3 / 22.3 ms a pass
// against 11.3 / 16.5 aligned, the same instructions). GCC only (clang has
// no such attribute).
#if defined(__GNUC__) && !defined(__clang__)
#define SG_ALIGN_LOOPS __attribute__((optimize("align-loops=64")))
#else
#define SG_ALIGN_LOOPS
#endif

#if defined(__x86_64__) && defined(__GNUC__)
#define SG_HAVE_X86_BODIES 1
// AVX2 + FMA (cpu_kernels_avx2.cc). Attention: head dims multiple of 8.
void AttendAvx2F32(const AttnTask& t);
void AttendAvx2Bf16(const AttnTask& t);
SG_SKINNY_DECL(SkinnyAvx2F32, float);
SG_SKINNY_DECL(SkinnyAvx2Bf16, uint16_t);
SG_SKINNY_DECL(SkinnyAvx2I8, int8_t);
// The tiled bodies: the same outputs as Skinny*, bit for bit, scheduled as a
// register-blocked tile of rows x weight rows (the batched range).
SG_SKINNY_DECL(TiledAvx2F32, float);
SG_SKINNY_DECL(TiledAvx2Bf16, uint16_t);
SG_SKINNY_DECL(TiledAvx2I8, int8_t);
void SiluMulRowAvx2F32(const float* gate, const float* up, float* out, int64_t n);
void SiluMulRowAvx2Bf16(const uint16_t* gate, const uint16_t* up, uint16_t* out, int64_t n);
void GeluTanhMulRowAvx2F32(const float* gate, const float* up, float* out, int64_t n);
void GeluTanhMulRowAvx2Bf16(const uint16_t* gate, const uint16_t* up, uint16_t* out, int64_t n);
void RmsNormRowAvx2F32(const float* x, const float* w, float* out, int64_t n, float eps);
void RmsNormRowAvx2Bf16(const uint16_t* x, const uint16_t* w, uint16_t* out, int64_t n, float eps);
uint64_t StreamReadAvx2(const char* p, int64_t bytes);

// AVX-512 (cpu_kernels_avx512.cc). Attention: head dims multiple of 16.
void AttendAvx512F32(const AttnTask& t);
void AttendAvx512Bf16(const AttnTask& t);
SG_SKINNY_DECL(SkinnyAvx512F32, float);
SG_SKINNY_DECL(SkinnyAvx512Bf16, uint16_t);
SG_SKINNY_DECL(SkinnyAvx512I8, int8_t);
SG_SKINNY_DECL(TiledAvx512F32, float);
SG_SKINNY_DECL(TiledAvx512Bf16, uint16_t);
SG_SKINNY_DECL(TiledAvx512I8, int8_t);
// The AVX2 tiled bodies' outputs, bit for bit, computed on AVX-512
// registers (two hold an output's four 8-lane chains): the tiled schedule of
// the AVX2 skinny body on a CPU that runs AVX-512 (AMD Zen 4).
SG_SKINNY_DECL(Tiled8Avx512F32, float);
SG_SKINNY_DECL(Tiled8Avx512Bf16, uint16_t);
SG_SKINNY_DECL(Tiled8Avx512I8, int8_t);
void SiluMulRowAvx512F32(const float* gate, const float* up, float* out, int64_t n);
void SiluMulRowAvx512Bf16(const uint16_t* gate, const uint16_t* up, uint16_t* out, int64_t n);
void GeluTanhMulRowAvx512F32(const float* gate, const float* up, float* out, int64_t n);
void GeluTanhMulRowAvx512Bf16(const uint16_t* gate, const uint16_t* up, uint16_t* out, int64_t n);
void RmsNormRowAvx512F32(const float* x, const float* w, float* out, int64_t n, float eps);
void RmsNormRowAvx512Bf16(const uint16_t* x, const uint16_t* w, uint16_t* out, int64_t n,
                          float eps);
uint64_t StreamReadAvx512(const char* p, int64_t bytes);
#endif

}  // namespace streamgen::kernels
