// Vectorised CPU kernels of the forward pass (see cpu_kernels.h).
//
// Two bodies per kernel: hand-written AVX-512 (picked at run time with
// __builtin_cpu_supports; head dims that are multiples of 16), and a portable
// one whose `#pragma omp simd` loops vectorise without -ffast-math, cloned for
// AVX-512, AVX2+FMA and baseline x86-64 by GCC's target_clones (the project is
// built for baseline x86-64). This file is compiled with -fopenmp
// (engine/CMakeLists.txt): at::parallel_for is a header template whose
// `#pragma omp parallel` needs it. exp() is a polynomial that vectorises
// (libm's expf does not without -ffast-math).
#include "engine/model/cpu_kernels.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <ATen/Parallel.h>
#include <ATen/record_function.h>

namespace streamgen {
namespace {

std::atomic<bool> g_force_portable{false};
std::atomic<bool> g_libtorch_linear{false};

// Not under TSan: target_clones dispatches through an IFUNC resolver that the
// dynamic linker runs before TSan's runtime is initialized, and the resolver's
// instrumented code then crashes the program (SIGSEGV before main). The
// portable body is compiled for baseline x86-64 there instead.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_THREAD__)
#define SG_TARGET_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define SG_TARGET_CLONES
#endif

inline float ToFloat(float x) { return x; }
// bfloat16 is the high half of a float32.
inline float ToFloat(uint16_t bits) {
  const uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

// exp(x) for x <= 0 (scores minus their maximum), Cephes' polynomial:
// relative error ~2e-7 over the range; exactly 0 below -87.
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
constexpr float kGeluTwoC = 1.5957691216057308f;  // 2 sqrt(2 / pi)
constexpr float kGeluCubic = 0.044715f;

// float32 -> bfloat16 bits, rounded to nearest even (as c10::BFloat16 and
// ToBf16 below; NaN not special-cased, as ToBf16).
inline uint16_t RoundBf16(float v) {
  uint32_t u;
  std::memcpy(&u, &v, sizeof(u));
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// out[j] = gelu_tanh(gate[j]) * up[j] over one row, in float32. bfloat16
// rounds as transformers' `act_fn(gate) * up` does on bfloat16 tensors: the
// activation's output stored in bfloat16, then the product rounded again.
template <typename T>
inline __attribute__((always_inline)) void GeluTanhMulRow(const T* gate, const T* up, T* out,
                                                          int64_t n) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    const float g = ToFloat(gate[j]);
    const float z = kGeluTwoC * (g + kGeluCubic * (g * g * g));
    const float e = ExpNonPositive(-std::fabs(z));
    const float inv = 1.0f / (1.0f + e);
    const float act = g * (z < 0.0f ? e * inv : inv);
    if constexpr (sizeof(T) == 2) {
      out[j] = RoundBf16(ToFloat(RoundBf16(act)) * ToFloat(up[j]));
    } else {
      out[j] = act * ToFloat(up[j]);
    }
  }
}
SG_TARGET_CLONES void GeluTanhMulRowF32(const float* gate, const float* up, float* out, int64_t n) {
  GeluTanhMulRow(gate, up, out, n);
}
SG_TARGET_CLONES void GeluTanhMulRowBf16(const uint16_t* gate, const uint16_t* up, uint16_t* out,
                                         int64_t n) {
  GeluTanhMulRow(gate, up, out, n);
}

// One task: sequence `seq`, KV heads [h0, h0 + nh) and their query heads
// (nh * G of them, contiguous in q). Each key position's row of the pool holds
// all KV heads ([KV, D], row_stride = KV * D elements); the task reads the
// part of each row for its heads, so with one task per sequence (nh = KV) the
// walk is over whole contiguous blocks (block_size * KV * D elements).
struct Task {
  const void* q;       // [nh * G, D]
  const void* k;       // the pool, offset to head h0 of slot 0
  const void* v;
  const DecodeSeq* seq;
  int64_t block_size, g, d, nh, row_stride;
  float scale;
  float softcap;  // > 0: scores capped to softcap * tanh(score / softcap)
  float* qf;      // [nh * G, D] scratch: the queries in float32
  float* scores;  // [nh * G, L] scratch
  float* acc;     // [nh * G, D] scratch: the weighted sum, then the output
  int64_t* rows;  // [L] scratch: element offsets of the key positions' rows
};

// Fills t.rows[i] with the element offset of the pool row holding key
// position first + i of t.seq: whole blocks at a time, no division per position.
inline void PoolRows(const Task& t) {
  const int64_t bs = t.block_size, first = t.seq->first, last = t.seq->last;
  int64_t i = 0;
  for (int64_t blk = first / bs; blk <= last / bs; ++blk) {
    const int64_t lo = std::max(first, blk * bs), hi = std::min(last + 1, (blk + 1) * bs);
    const int64_t base = static_cast<int64_t>(t.seq->table[blk]) * bs;
    for (int64_t p = lo; p < hi; ++p, ++i) t.rows[i] = (base + p % bs) * t.row_stride;
  }
}

// Attention-logit soft-capping (Gemma 2's attn_logit_softcapping), over
// the n scaled scores of one query head: s = cap * tanh(s / cap), the three
// ops of transformers' eager attention in its order (divide, tanh,
// multiply). Scalar libm tanh: only soft-capped models pay for it, and the
// scores are n floats against the n * D key reads of the dot products.
inline void SoftcapScores(float* s, int64_t n, float cap) {
  for (int64_t i = 0; i < n; ++i) s[i] = std::tanh(s[i] / cap) * cap;
}

// The portable body: inlined into each dtype's clones. kD > 0 fixes the head
// dimension at compile time (the loops then vectorise without remainder
// handling, ~3x faster at D = 64); kD = 0 reads it from t.
template <typename T, int kD>
inline __attribute__((always_inline)) void AttendOne(const Task& t) {
  const T* q = static_cast<const T*>(t.q);
  const T* kp = static_cast<const T*>(t.k);
  const T* vp = static_cast<const T*>(t.v);
  const int64_t g = t.g, d = kD > 0 ? kD : t.d, qh = t.nh * g;
  const int64_t len = t.seq->last - t.seq->first + 1;
  for (int64_t i = 0; i < qh * d; ++i) t.qf[i] = ToFloat(q[i]);
  PoolRows(t);
  // Scores, one key row at a time (each head's key is read once for its G queries).
  for (int64_t i = 0; i < len; ++i) {
    for (int64_t kh = 0; kh < t.nh; ++kh) {
      const T* k = kp + t.rows[i] + kh * d;
      for (int64_t h = kh * g; h < (kh + 1) * g; ++h) {
        const float* qv = t.qf + h * d;
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int64_t j = 0; j < d; ++j) dot += qv[j] * ToFloat(k[j]);
        t.scores[h * len + i] = dot * t.scale;
      }
    }
  }
  // Softmax per query head (after the soft cap, as transformers orders them).
  for (int64_t h = 0; h < qh; ++h) {
    float* s = t.scores + h * len;
    if (t.softcap > 0.0f) SoftcapScores(s, len, t.softcap);
    float m = s[0];
    for (int64_t i = 1; i < len; ++i) m = std::max(m, s[i]);
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < len; ++i) {
      s[i] = ExpNonPositive(s[i] - m);
      sum += s[i];
    }
    const float inv = 1.0f / sum;
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) s[i] *= inv;
  }
  // Weighted sum of value rows.
  std::fill(t.acc, t.acc + qh * d, 0.0f);
  for (int64_t i = 0; i < len; ++i) {
    for (int64_t kh = 0; kh < t.nh; ++kh) {
      const T* v = vp + t.rows[i] + kh * d;
      for (int64_t h = kh * g; h < (kh + 1) * g; ++h) {
        const float w = t.scores[h * len + i];
        float* a = t.acc + h * d;
#pragma omp simd
        for (int64_t j = 0; j < d; ++j) a[j] += w * ToFloat(v[j]);
      }
    }
  }
}

SG_TARGET_CLONES void AttendOneFloat(const Task& t) {
  if (t.d == 64) return AttendOne<float, 64>(t);
  if (t.d == 128) return AttendOne<float, 128>(t);
  AttendOne<float, 0>(t);
}
SG_TARGET_CLONES void AttendOneBFloat16(const Task& t) {
  if (t.d == 64) return AttendOne<uint16_t, 64>(t);
  if (t.d == 128) return AttendOne<uint16_t, 128>(t);
  AttendOne<uint16_t, 0>(t);
}

// Where SkinnyLinear's kernels put an output: out[i] (i = m * N + c) =
// dot * scale[c] (int8 weights) in the output dtype, float32 or bfloat16
// (rounded to nearest even, as c10::BFloat16).
struct SkinnyOut {
  void* p;
  bool bf16;
  const float* scale;  // nullptr: none
  inline void Put(int64_t i, int64_t c, float v) const {
    if (scale != nullptr) v *= scale[c];
    if (bf16) {
      static_cast<uint16_t*>(p)[i] = c10::BFloat16(v).x;
    } else {
      static_cast<float*>(p)[i] = v;
    }
  }
};

#if defined(__x86_64__) && defined(__GNUC__)
// AVX-512 body for head dims that are multiples of 16 (64 and 128 in practice).
// Hand-written because GCC reduces `omp simd` dot products with a serial chain
// of scalar adds and leaves exp() scalar: this version is ~4x faster at D = 64.
#define SG_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma")))

// bfloat16 <-> float32, 16 lanes; rounding to nearest even as c10::BFloat16.
SG_AVX512 inline __m256i ToBf16(__m512 x) {
  const __m512i bits = _mm512_castps_si512(x);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  return _mm512_cvtepi32_epi16(
      _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(bits, _mm512_set1_epi32(0x7fff)), lsb), 16));
}
SG_AVX512 inline __m512 FromBf16(__m256i h) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// The first min(16, n - j) lanes of 16: the tail of a row of n elements.
inline __mmask16 TailMask(int64_t n, int64_t j) {
  return n - j >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << (n - j)) - 1);
}

// 16 float32 or bfloat16 values as float32; masked-off lanes read nothing and are 0.
SG_AVX512 inline __m512 Load16(const float* p, __mmask16 m = 0xffff) {
  return _mm512_maskz_loadu_ps(m, p);
}
SG_AVX512 inline __m512 Load16(const uint16_t* p, __mmask16 m = 0xffff) {
  return FromBf16(_mm256_maskz_loadu_epi16(m, p));
}
SG_AVX512 inline void Store16(float* p, __m512 v, __mmask16 m) { _mm512_mask_storeu_ps(p, m, v); }
SG_AVX512 inline void Store16(uint16_t* p, __m512 v, __mmask16 m) {
  _mm256_mask_storeu_epi16(p, m, ToBf16(v));
}

// ExpNonPositive, 16 lanes at a time.
SG_AVX512 inline __m512 Exp16(__m512 x) {
  const __m512 lo = _mm512_set1_ps(-87.0f);
  const __m512 c = _mm512_max_ps(x, lo);
  const __m512 fx = _mm512_roundscale_ps(
      _mm512_fmadd_ps(c, _mm512_set1_ps(1.44269504088896341f), _mm512_set1_ps(0.5f)),
      _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(fx, _mm512_set1_ps(0.693359375f), c);
  r = _mm512_fnmadd_ps(fx, _mm512_set1_ps(-2.12194440e-4f), r);
  const __m512 z = _mm512_mul_ps(r, r);
  __m512 y = _mm512_set1_ps(1.9875691500e-4f);
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.3981999507e-3f));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(8.3334519073e-3f));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(4.1665795894e-2f));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.6666665459e-1f));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(5.0000001201e-1f));
  y = _mm512_fmadd_ps(y, z, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  const __m512i n = _mm512_add_epi32(_mm512_cvttps_epi32(fx), _mm512_set1_epi32(127));
  const __m512 e = _mm512_mul_ps(y, _mm512_castsi512_ps(_mm512_slli_epi32(n, 23)));
  return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, lo, _CMP_GE_OQ), e);
}

// Rows ahead that the AVX-512 loops prefetch. The hardware prefetcher of this
// project's (virtualised) machines barely helps with these scattered blocks:
// without software prefetch the kernel read ~6 GB/s from DRAM.
constexpr int64_t kPrefetchRows = 8;

SG_AVX512 inline void Prefetch(const void* p, int64_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (int64_t off = 0; off < bytes; off += 64) _mm_prefetch(c + off, _MM_HINT_T0);
}

template <typename T>
SG_AVX512 void AttendOneAvx512(const Task& t) {
  const T* kp = static_cast<const T*>(t.k);
  const T* vp = static_cast<const T*>(t.v);
  const int64_t g = t.g, d = t.d, nv = d / 16, qh = t.nh * g;
  const int64_t len = t.seq->last - t.seq->first + 1;
  const int64_t row_bytes = t.nh * d * static_cast<int64_t>(sizeof(T));
  for (int64_t c = 0; c < qh * nv; ++c) {
    _mm512_storeu_ps(t.qf + 16 * c, Load16(static_cast<const T*>(t.q) + 16 * c));
  }
  PoolRows(t);
  const int64_t* rows = t.rows;
  for (int64_t i = 0; i < len; ++i) {
    if (i + kPrefetchRows < len) Prefetch(kp + rows[i + kPrefetchRows], row_bytes);
    for (int64_t kh = 0; kh < t.nh; ++kh) {
      const T* k = kp + rows[i] + kh * d;
      for (int64_t h = kh * g; h < (kh + 1) * g; ++h) {
        const float* qv = t.qf + h * d;
        __m512 acc = _mm512_mul_ps(_mm512_loadu_ps(qv), Load16(k));
        for (int64_t c = 1; c < nv; ++c) {
          acc = _mm512_fmadd_ps(_mm512_loadu_ps(qv + 16 * c), Load16(k + 16 * c), acc);
        }
        t.scores[h * len + i] = _mm512_reduce_add_ps(acc) * t.scale;
      }
    }
  }
  for (int64_t i = 0; i < std::min(len, kPrefetchRows); ++i) Prefetch(vp + rows[i], row_bytes);
  const __m512 neg_inf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t h = 0; h < qh; ++h) {
    float* s = t.scores + h * len;
    if (t.softcap > 0.0f) SoftcapScores(s, len, t.softcap);
    __m512 mx = neg_inf;
    for (int64_t i = 0; i < len; i += 16) {
      const __mmask16 m = TailMask(len, i);
      mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(neg_inf, m, s + i));
    }
    const __m512 vmax = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
    __m512 sum = _mm512_setzero_ps();
    for (int64_t i = 0; i < len; i += 16) {
      const __mmask16 m = TailMask(len, i);
      const __m512 e = _mm512_maskz_mov_ps(m, Exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, s + i), vmax)));
      _mm512_mask_storeu_ps(s + i, m, e);
      sum = _mm512_add_ps(sum, e);
    }
    const __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
    for (int64_t i = 0; i < len; i += 16) {
      const __mmask16 m = TailMask(len, i);
      _mm512_mask_storeu_ps(s + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, s + i), inv));
    }
  }
  for (int64_t c = 0; c < qh * nv; ++c) _mm512_storeu_ps(t.acc + 16 * c, _mm512_setzero_ps());
  for (int64_t i = 0; i < len; ++i) {
    if (i + kPrefetchRows < len) Prefetch(vp + rows[i + kPrefetchRows], row_bytes);
    for (int64_t kh = 0; kh < t.nh; ++kh) {
      const T* v = vp + rows[i] + kh * d;
      for (int64_t c = 0; c < nv; ++c) {
        const __m512 vv = Load16(v + 16 * c);
        for (int64_t h = kh * g; h < (kh + 1) * g; ++h) {
          float* a = t.acc + h * d + 16 * c;
          _mm512_storeu_ps(a, _mm512_fmadd_ps(_mm512_set1_ps(t.scores[h * len + i]), vv,
                                              _mm512_loadu_ps(a)));
        }
      }
    }
  }
}

// out[j] = silu(gate[j]) * up[j], 16 lanes at a time (n a multiple of 16 or
// the tail masked). sigmoid(x) = 1 / (1 + e) for x >= 0, e / (1 + e) below,
// with e = exp(-|x|) <= 1, so Exp16's x <= 0 range suffices.
template <typename T>
SG_AVX512 void SiluMulRowAvx512(const T* gate, const T* up, T* out, int64_t n) {
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 m = TailMask(n, j);
    const __m512 g = Load16(gate + j, m);
    const __m512 u = Load16(up + j, m);
    const __m512 abs = _mm512_abs_ps(g);
    const __m512 e = Exp16(_mm512_sub_ps(_mm512_setzero_ps(), abs));
    const __m512 inv = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_add_ps(_mm512_set1_ps(1.0f), e));
    const __mmask16 neg = _mm512_cmp_ps_mask(g, _mm512_setzero_ps(), _CMP_LT_OQ);
    const __m512 sig = _mm512_mask_mul_ps(inv, neg, e, inv);
    __m512 act = _mm512_mul_ps(g, sig);
    // bfloat16: silu's output rounded to bfloat16 before the product, as
    // transformers' act_fn(gate_proj(x)) * up_proj(x) rounds (two bfloat16
    // results), and as the portable body (libtorch's ops) does.
    if constexpr (sizeof(T) == 2) act = FromBf16(ToBf16(act));
    Store16(out + j, _mm512_mul_ps(act, u), m);
  }
}

// out[j] = gelu_tanh(gate[j]) * up[j], 16 lanes at a time (see GeluTanhMulRow
// for the formula and the roundings).
template <typename T>
SG_AVX512 void GeluTanhMulRowAvx512(const T* gate, const T* up, T* out, int64_t n) {
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 m = TailMask(n, j);
    const __m512 g = Load16(gate + j, m);
    const __m512 u = Load16(up + j, m);
    const __m512 g3 = _mm512_mul_ps(_mm512_mul_ps(g, g), g);
    const __m512 z = _mm512_mul_ps(_mm512_set1_ps(kGeluTwoC),
                                   _mm512_fmadd_ps(_mm512_set1_ps(kGeluCubic), g3, g));
    const __m512 e = Exp16(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_abs_ps(z)));
    const __m512 inv = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_add_ps(_mm512_set1_ps(1.0f), e));
    const __mmask16 neg = _mm512_cmp_ps_mask(z, _mm512_setzero_ps(), _CMP_LT_OQ);
    __m512 act = _mm512_mul_ps(g, _mm512_mask_mul_ps(inv, neg, e, inv));
    if constexpr (sizeof(T) == 2) act = FromBf16(ToBf16(act));  // act(gate) stored in bfloat16
    Store16(out + j, _mm512_mul_ps(act, u), m);
  }
}

template <typename T>
SG_AVX512 void RmsNormRowAvx512(const T* x, const T* w, T* out, int64_t n, float eps) {
  __m512 sq = _mm512_setzero_ps();
  for (int64_t j = 0; j < n; j += 16) {
    const __m512 v = Load16(x + j, TailMask(n, j));
    sq = _mm512_fmadd_ps(v, v, sq);
  }
  const float r = 1.0f / std::sqrt(_mm512_reduce_add_ps(sq) / static_cast<float>(n) + eps);
  const __m512 vr = _mm512_set1_ps(r);
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 m = TailMask(n, j);
    __m512 normed = _mm512_mul_ps(Load16(x + j, m), vr);
    // bfloat16: normed.to(bfloat16), then weight * it in bfloat16 (a float
    // product, rounded by Store16).
    if constexpr (sizeof(T) == 2) normed = FromBf16(ToBf16(normed));
    Store16(out + j, _mm512_mul_ps(Load16(w + j, m), normed), m);
  }
}

bool CpuHasAvx512() {
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  return has;
}
bool HasAvx512() { return !g_force_portable.load(std::memory_order_relaxed) && CpuHasAvx512(); }

// ---- SkinnyLinear, AVX-512 ----
// 16 weights of row `p` as float32: float32, bfloat16 or int8 storage.
SG_AVX512 inline __m512 Load16(const int8_t* p, __mmask16 m) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, p)));
}

// How far ahead in a weight row SkinnyRow prefetches: measured best on this
// project's machines (1 KiB for bfloat16, 2 KiB for float32 and int8; the
// hardware prefetcher alone left bfloat16 and int8 at ~0.8 of the probe; 4
// KiB for float32 was slower, at 0.91 of torch::mv's batch-1 decode against
// 0.96 with 2 KiB and 0.91 with 1 KiB).
template <typename W>
constexpr int64_t PrefetchBytes() {
  return sizeof(W) == 2 ? 1024 : 2048;
}

// 16 weights as float32, unmasked (the load folds into the conversion).
SG_AVX512 inline __m512 LoadFull16(const float* p) { return _mm512_loadu_ps(p); }
SG_AVX512 inline __m512 LoadFull16(const uint16_t* p) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(
      _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
}
SG_AVX512 inline __m512 LoadFull16(const int8_t* p) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}

// One weight row n against MG rows of x at a time (all M rows, MG by MG):
// each (m, n) has four accumulators, block b of 16 columns going to
// accumulator b % 4, summed as (a0 + a1) + (a2 + a3) then reduced: the same
// order whatever M (batch invariance). The row is one sequential stream.
template <typename W, int MG>
SG_AVX512 inline void SkinnyRow(const float* x, int64_t m_rows, const W* w, int64_t k, int64_t c,
                                const SkinnyOut& out, int64_t n) {
  const W* wr = w + c * k;
  for (int64_t m0 = 0; m0 < m_rows; m0 += MG) {
    const int64_t mg = std::min<int64_t>(MG, m_rows - m0);
    __m512 acc[MG][4];
    for (int g = 0; g < MG; ++g)
      for (int u = 0; u < 4; ++u) acc[g][u] = _mm512_setzero_ps();
    int64_t j = 0;
    for (; j + 64 <= k; j += 64) {
      // Software prefetch kPrefetchBytes ahead in the row (the first group of
      // rows only; later groups read the row from L1/L2): one prefetch per
      // 64-byte line of this block.
      if (m0 == 0) {
        const char* ahead = reinterpret_cast<const char*>(wr + j) + PrefetchBytes<W>();
        for (size_t line = 0; line < sizeof(W); ++line) _mm_prefetch(ahead + 64 * line, _MM_HINT_T0);
      }
      __m512 wv[4];
      for (int u = 0; u < 4; ++u) wv[u] = LoadFull16(wr + j + 16 * u);
      for (int g = 0; g < MG; ++g) {
        if (g >= mg) break;
        const float* xr = x + (m0 + g) * k + j;
        for (int u = 0; u < 4; ++u) {
          acc[g][u] = _mm512_fmadd_ps(_mm512_loadu_ps(xr + 16 * u), wv[u], acc[g][u]);
        }
      }
    }
    for (int u = 0; j < k; j += 16, ++u) {  // the last < 64 columns, masked
      const __mmask16 mask = TailMask(k, j);
      const __m512 wv = Load16(wr + j, mask);
      for (int g = 0; g < MG; ++g) {
        if (g >= mg) break;
        acc[g][u] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, x + (m0 + g) * k + j), wv, acc[g][u]);
      }
    }
    for (int g = 0; g < mg; ++g) {
      const __m512 sum = _mm512_add_ps(_mm512_add_ps(acc[g][0], acc[g][1]),
                                       _mm512_add_ps(acc[g][2], acc[g][3]));
      out.Put((m0 + g) * n + c, c, _mm512_reduce_add_ps(sum));
    }
  }
}

// Output columns [begin, end) of x [M, K] (float32) times w [N, K]^T, into
// out [M, N] (float32, unscaled): one weight row after another, each a
// sequential stream. Chosen by measurement (bench/README.md, "CPU linear
// kernels"): tiles of 8 interleaved rows with one accumulator each read
// bfloat16 and int8 weights at 17-21 GB/s of a 30 GB/s probe, this at
// 0.95-1.0 of it. For float32 such tiles measured ~3% faster at one row
// (within the noise) and 17% slower at 16; four rows at a time in this
// order was no faster; one layout for every row count keeps the batch
// invariance.
template <typename W>
SG_AVX512 void SkinnyAvx512(const float* x, int64_t m, const W* w, int64_t k, int64_t n,
                            int64_t begin, int64_t end, const SkinnyOut& out) {
  for (int64_t c = begin; c < end; ++c) SkinnyRow<W, 4>(x, m, w, k, c, out, n);
}

SG_AVX512 uint64_t StreamReadAvx512(const char* p, int64_t bytes) {
  __m512i acc0 = _mm512_setzero_si512(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
  int64_t i = 0;
  for (; i + 256 <= bytes; i += 256) {
    acc0 = _mm512_xor_si512(acc0, _mm512_loadu_si512(p + i));
    acc1 = _mm512_xor_si512(acc1, _mm512_loadu_si512(p + i + 64));
    acc2 = _mm512_xor_si512(acc2, _mm512_loadu_si512(p + i + 128));
    acc3 = _mm512_xor_si512(acc3, _mm512_loadu_si512(p + i + 192));
  }
  const __m512i acc = _mm512_xor_si512(_mm512_xor_si512(acc0, acc1), _mm512_xor_si512(acc2, acc3));
  uint64_t sum = static_cast<uint64_t>(_mm512_reduce_add_epi64(acc));
  for (; i < bytes; ++i) sum += static_cast<unsigned char>(p[i]);
  return sum;
}
#define SG_HAVE_AVX512_KERNEL 1
#else
bool HasAvx512() { return false; }
#endif

// ---- SkinnyLinear, portable ----
inline float ToFloat(int8_t q) { return static_cast<float>(q); }

// One dot product per (m, n), each by the same loop whatever M (batch
// invariance, as the AVX-512 body; the two bodies' roundings differ).
template <typename W>
inline __attribute__((always_inline)) void SkinnyPortable(const float* x, int64_t m, const W* w,
                                                          int64_t k, int64_t n, int64_t begin,
                                                          int64_t end, const SkinnyOut& out) {
  for (int64_t c = begin; c < end; ++c) {
    const W* wr = w + c * k;
    for (int64_t r = 0; r < m; ++r) {
      const float* xr = x + r * k;
      float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
      for (int64_t j = 0; j < k; ++j) dot += xr[j] * ToFloat(wr[j]);
      out.Put(r * n + c, c, dot);
    }
  }
}
SG_TARGET_CLONES void SkinnyPortableF32(const float* x, int64_t m, const float* w, int64_t k,
                                        int64_t n, int64_t begin, int64_t end, const SkinnyOut& out) {
  SkinnyPortable(x, m, w, k, n, begin, end, out);
}
SG_TARGET_CLONES void SkinnyPortableBf16(const float* x, int64_t m, const uint16_t* w, int64_t k,
                                         int64_t n, int64_t begin, int64_t end, const SkinnyOut& out) {
  SkinnyPortable(x, m, w, k, n, begin, end, out);
}
SG_TARGET_CLONES void SkinnyPortableI8(const float* x, int64_t m, const int8_t* w, int64_t k,
                                       int64_t n, int64_t begin, int64_t end, const SkinnyOut& out) {
  SkinnyPortable(x, m, w, k, n, begin, end, out);
}

// One row's heads of the rotary embedding (see RotaryInPlace): the first `rd`
// of each head's `d` dims rotate, the rest are left as they are. No FMA
// contraction: libtorch rounds each product before the sum.
template <typename T>
__attribute__((optimize("fp-contract=off"))) SG_TARGET_CLONES void RotaryRow(
    T* row, int64_t heads, int64_t d, int64_t rd, const T* cos, const T* sin) {
  const int64_t half = rd / 2;
  auto round = [](float v) -> float {
    if constexpr (sizeof(T) == 2) {
      return ToFloat(c10::BFloat16(v).x);
    } else {
      return v;
    }
  };
  for (int64_t h = 0; h < heads; ++h) {
    T* x = row + h * d;
    float lo[512], hi[512];  // head_dim <= 1024 (checked by the caller)
    for (int64_t i = 0; i < half; ++i) {
      const float x1 = ToFloat(x[i]), x2 = ToFloat(x[i + half]);
      lo[i] = round(round(x1 * ToFloat(cos[i])) + round(-x2 * ToFloat(sin[i])));
      hi[i] = round(round(x2 * ToFloat(cos[i + half])) + round(x1 * ToFloat(sin[i + half])));
    }
    for (int64_t i = 0; i < half; ++i) {
      if constexpr (sizeof(T) == 2) {
        x[i] = c10::BFloat16(lo[i]).x;
        x[i + half] = c10::BFloat16(hi[i]).x;
      } else {
        x[i] = lo[i];
        x[i + half] = hi[i];
      }
    }
  }
}

}  // namespace

void RotaryInPlace(torch::Tensor& qkv, int64_t heads, int64_t head_dim, const torch::Tensor& cos,
                   const torch::Tensor& sin, const std::vector<int64_t>& positions,
                   int64_t rotary_dim) {
  RECORD_FUNCTION("streamgen::rotary", std::vector<c10::IValue>());
  if (rotary_dim == 0) rotary_dim = head_dim;
  const auto dt = qkv.scalar_type();
  TORCH_CHECK(qkv.device().is_cpu() && qkv.dim() == 2 && qkv.stride(1) == 1 &&
                  qkv.size(1) >= heads * head_dim && qkv.size(0) == static_cast<int64_t>(positions.size()),
              "RotaryInPlace: qkv [T, >= heads * D] with contiguous rows, one position per row");
  TORCH_CHECK((dt == torch::kFloat32 || dt == torch::kBFloat16) && cos.scalar_type() == dt &&
                  sin.scalar_type() == dt && cos.is_contiguous() && sin.is_contiguous() &&
                  cos.dim() == 2 && cos.size(1) == rotary_dim && sin.sizes() == cos.sizes(),
              "RotaryInPlace: float32 or bfloat16, cos/sin [P, rotary_dim] of qkv's dtype");
  TORCH_CHECK(head_dim <= 1024 && rotary_dim % 2 == 0 && 2 <= rotary_dim && rotary_dim <= head_dim,
              "RotaryInPlace: head_dim <= 1024, rotary_dim even in [2, head_dim], got head_dim ",
              head_dim, ", rotary_dim ", rotary_dim);
  const int64_t t = qkv.size(0), stride = qkv.stride(0), p_max = cos.size(0);
  for (int64_t p : positions) TORCH_CHECK(0 <= p && p < p_max, "RotaryInPlace: position ", p);
  at::parallel_for(0, t, 32, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t p = positions[r];
      if (dt == torch::kFloat32) {
        RotaryRow<float>(qkv.data_ptr<float>() + r * stride, heads, head_dim, rotary_dim,
                         cos.data_ptr<float>() + p * rotary_dim,
                         sin.data_ptr<float>() + p * rotary_dim);
      } else {
        auto* base = reinterpret_cast<uint16_t*>(qkv.data_ptr());
        RotaryRow<uint16_t>(base + r * stride, heads, head_dim, rotary_dim,
                            reinterpret_cast<const uint16_t*>(cos.data_ptr()) + p * rotary_dim,
                            reinterpret_cast<const uint16_t*>(sin.data_ptr()) + p * rotary_dim);
      }
    }
  });
}

torch::Tensor PagedDecodeAttention(const torch::Tensor& q, const torch::Tensor& k_pool,
                                   const torch::Tensor& v_pool, const std::vector<DecodeSeq>& seqs,
                                   int64_t block_size, float scale, float softcap) {
  RECORD_FUNCTION("streamgen::paged_decode_attention", std::vector<c10::IValue>());
  TORCH_CHECK(std::isfinite(scale) && std::isfinite(softcap) && softcap >= 0.0f,
              "PagedDecodeAttention: scale must be finite and softcap finite and >= 0 (0: off), "
              "got scale ", scale, ", softcap ", softcap);
  TORCH_CHECK(q.device().is_cpu() && q.dim() == 3 && q.is_contiguous(),
              "PagedDecodeAttention: q must be a contiguous CPU [B, H, D] tensor");
  TORCH_CHECK(k_pool.dim() == 3 && k_pool.is_contiguous() && v_pool.is_contiguous() &&
                  k_pool.sizes() == v_pool.sizes() && k_pool.scalar_type() == q.scalar_type() &&
                  v_pool.scalar_type() == q.scalar_type(),
              "PagedDecodeAttention: pools must be contiguous [slots, KV, D] of q's dtype");
  const bool bf16 = q.scalar_type() == torch::kBFloat16;
  TORCH_CHECK(bf16 || q.scalar_type() == torch::kFloat32,
              "PagedDecodeAttention: float32 or bfloat16 only");
  const int64_t b = q.size(0), heads = q.size(1), d = q.size(2);
  const int64_t kv = k_pool.size(1);
  TORCH_CHECK(static_cast<int64_t>(seqs.size()) == b && k_pool.size(2) == d && heads % kv == 0,
              "PagedDecodeAttention: shapes do not match");
  const int64_t g = heads / kv;
  int64_t max_len = 0;
  for (const DecodeSeq& s : seqs) {
    TORCH_CHECK(s.table != nullptr && 0 <= s.first && s.first <= s.last,
                "PagedDecodeAttention: bad sequence range");
    max_len = std::max(max_len, s.last - s.first + 1);
  }
  // One task per sequence when there are enough sequences to keep every thread
  // busy (whole rows, contiguous blocks); otherwise each sequence's KV heads
  // are split into groups.
  const int64_t threads = at::get_num_threads();
  const int64_t groups = std::min(kv, std::max<int64_t>(1, (2 * threads + b - 1) / b));
  const int64_t max_nh = (kv + groups - 1) / groups;
  torch::Tensor out = torch::empty({b, heads * d}, q.options());
  const size_t elem = bf16 ? 2 : 4;
  const char* qb = static_cast<const char*>(q.data_ptr());
  const char* kb = static_cast<const char*>(k_pool.data_ptr());
  const char* vb = static_cast<const char*>(v_pool.data_ptr());
  char* ob = static_cast<char*>(out.data_ptr());
#ifdef SG_HAVE_AVX512_KERNEL
  const bool avx512 = d % 16 == 0 && HasAvx512();
#else
  const bool avx512 = false;
#endif
  at::parallel_for(0, b * groups, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> qf(max_nh * g * d), scores(max_nh * g * max_len), acc(max_nh * g * d);
    std::vector<int64_t> rows(max_len);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t i = task / groups, grp = task % groups;
      const int64_t h0 = kv * grp / groups, h1 = kv * (grp + 1) / groups;
      const int64_t first_q = (i * heads + h0 * g) * d;  // element offset in q and out
      Task t{qb + first_q * elem,
             kb + h0 * d * elem,
             vb + h0 * d * elem,
             &seqs[i],
             block_size,
             g,
             d,
             h1 - h0,
             kv * d,
             scale,
             softcap,
             qf.data(),
             scores.data(),
             acc.data(),
             rows.data()};
      const int64_t n_out = (h1 - h0) * g * d;
      if (bf16) {
#ifdef SG_HAVE_AVX512_KERNEL
        if (avx512) AttendOneAvx512<uint16_t>(t); else
#endif
        AttendOneBFloat16(t);
        auto* o = reinterpret_cast<c10::BFloat16*>(ob) + first_q;
        for (int64_t j = 0; j < n_out; ++j) o[j] = c10::BFloat16(acc[j]);
      } else {
#ifdef SG_HAVE_AVX512_KERNEL
        if (avx512) AttendOneAvx512<float>(t); else
#endif
        AttendOneFloat(t);
        std::memcpy(reinterpret_cast<float*>(ob) + first_q, acc.data(), n_out * sizeof(float));
      }
    }
  });
  return out;
}

torch::Tensor RmsNorm(const torch::Tensor& x, const torch::Tensor& w, double eps) {
  RECORD_FUNCTION("streamgen::rms_norm", std::vector<c10::IValue>());
#ifdef SG_HAVE_AVX512_KERNEL
  const auto dtype = x.scalar_type();
  if (x.device().is_cpu() && x.dim() == 2 && x.is_contiguous() && w.is_contiguous() &&
      w.scalar_type() == dtype && w.numel() == x.size(1) && HasAvx512() &&
      (dtype == torch::kFloat32 || dtype == torch::kBFloat16)) {
    torch::Tensor out = torch::empty_like(x);
    const int64_t n = x.size(1);
    at::parallel_for(0, x.size(0), 16, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        if (dtype == torch::kFloat32) {
          RmsNormRowAvx512<float>(x.data_ptr<float>() + r * n, w.data_ptr<float>(),
                                  out.data_ptr<float>() + r * n, n, static_cast<float>(eps));
        } else {
          RmsNormRowAvx512<uint16_t>(reinterpret_cast<const uint16_t*>(x.data_ptr()) + r * n,
                                     reinterpret_cast<const uint16_t*>(w.data_ptr()),
                                     reinterpret_cast<uint16_t*>(out.data_ptr()) + r * n, n,
                                     static_cast<float>(eps));
        }
      }
    });
    return out;
  }
#endif
  torch::Tensor xf = x.to(torch::kFloat32);
  torch::Tensor normed = xf * torch::rsqrt(xf.pow(2).mean(-1, true) + eps);
  return w * normed.to(x.scalar_type());
}

torch::Tensor SiluMul(const torch::Tensor& gu) {
  RECORD_FUNCTION("streamgen::silu_mul", std::vector<c10::IValue>());
  const int64_t inter = gu.size(1) / 2;
#ifdef SG_HAVE_AVX512_KERNEL
  const auto dtype = gu.scalar_type();
  if (gu.device().is_cpu() && gu.dim() == 2 && gu.is_contiguous() && HasAvx512() &&
      (dtype == torch::kFloat32 || dtype == torch::kBFloat16)) {
    torch::Tensor out = torch::empty({gu.size(0), inter}, gu.options());
    const int64_t rows = gu.size(0);
    at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        if (dtype == torch::kFloat32) {
          const float* g = gu.data_ptr<float>() + r * 2 * inter;
          SiluMulRowAvx512<float>(g, g + inter, out.data_ptr<float>() + r * inter, inter);
        } else {
          const auto* g = reinterpret_cast<const uint16_t*>(gu.data_ptr()) + r * 2 * inter;
          SiluMulRowAvx512<uint16_t>(g, g + inter,
                                     reinterpret_cast<uint16_t*>(out.data_ptr()) + r * inter, inter);
        }
      }
    });
    return out;
  }
#endif
  return torch::silu(gu.narrow(1, 0, inter)) * gu.narrow(1, inter, inter);
}

torch::Tensor GeluTanhMul(const torch::Tensor& gu) {
  RECORD_FUNCTION("streamgen::gelu_tanh_mul", std::vector<c10::IValue>());
  TORCH_CHECK(gu.dim() == 2 && gu.size(1) % 2 == 0,
              "GeluTanhMul: gu must be [M, 2I] (gate | up), got ", gu.sizes());
  const int64_t inter = gu.size(1) / 2;
  const auto dtype = gu.scalar_type();
  if (!gu.device().is_cpu() || !gu.is_contiguous() ||
      (dtype != torch::kFloat32 && dtype != torch::kBFloat16)) {
    return torch::gelu(gu.narrow(1, 0, inter), "tanh") * gu.narrow(1, inter, inter);
  }
  torch::Tensor out = torch::empty({gu.size(0), inter}, gu.options());
  const bool avx512 = HasAvx512();
  (void)avx512;
  at::parallel_for(0, gu.size(0), 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      if (dtype == torch::kFloat32) {
        const float* g = gu.data_ptr<float>() + r * 2 * inter;
        float* o = out.data_ptr<float>() + r * inter;
#ifdef SG_HAVE_AVX512_KERNEL
        if (avx512) {
          GeluTanhMulRowAvx512<float>(g, g + inter, o, inter);
          continue;
        }
#endif
        GeluTanhMulRowF32(g, g + inter, o, inter);
      } else {
        const auto* g = reinterpret_cast<const uint16_t*>(gu.data_ptr()) + r * 2 * inter;
        auto* o = reinterpret_cast<uint16_t*>(out.data_ptr()) + r * inter;
#ifdef SG_HAVE_AVX512_KERNEL
        if (avx512) {
          GeluTanhMulRowAvx512<uint16_t>(g, g + inter, o, inter);
          continue;
        }
#endif
        GeluTanhMulRowBf16(g, g + inter, o, inter);
      }
    }
  });
  return out;
}

void SetKernelIsa(KernelIsa isa) {
  g_force_portable.store(isa == KernelIsa::kPortable, std::memory_order_relaxed);
}

const char* ActiveKernelIsa() { return HasAvx512() ? "avx512" : "portable"; }

LinearWeight QuantizeInt8(const torch::Tensor& w) {
  TORCH_CHECK(w.dim() == 2 && w.is_floating_point(), "QuantizeInt8: a floating [N, K] weight");
  c10::InferenceMode guard;
  torch::Tensor wf = w.to(torch::kFloat32);
  torch::Tensor amax = wf.abs().amax(1);
  torch::Tensor scale = torch::where(amax > 0, amax / 127.0, torch::ones_like(amax));
  torch::Tensor q = torch::round(wf / scale.unsqueeze(1)).clamp(-127, 127).to(torch::kInt8);
  return {q.contiguous(), scale.contiguous()};
}

torch::Tensor DequantizeInt8(const LinearWeight& w) {
  TORCH_CHECK(w.int8(), "DequantizeInt8: not an int8 weight");
  return w.w.to(torch::kFloat32) * w.scale.unsqueeze(1);
}

namespace {

// One SkinnyLinear call's operands, checked, with x as float32 (the
// accumulation type) and the output allocated.
struct SkinnyJob {
  const float* xp = nullptr;
  std::vector<float> xbuf;  // x converted (bfloat16 x, when no buffer is given)
  int64_t m = 0, k = 0, n = 0;
  const void* wp = nullptr;
  torch::ScalarType wt = torch::kFloat32;
  torch::Tensor result;  // [m, n]
  SkinnyOut op{};
};

// `buf`: where to convert a bfloat16 x (nullptr: the job's own xbuf).
void PrepareSkinny(const torch::Tensor& x, const LinearWeight& lw, SkinnyJob& job,
                   std::vector<float>* buf) {
  const torch::Tensor& w = lw.w;
  const auto xt = x.scalar_type();
  TORCH_CHECK(x.device().is_cpu() && w.device().is_cpu() && x.dim() == 2 && w.dim() == 2 &&
                  x.is_contiguous() && w.is_contiguous() && x.size(1) == w.size(1),
              "SkinnyLinear: x [M, K] and w [N, K], contiguous CPU tensors");
  TORCH_CHECK(xt == torch::kFloat32 || xt == torch::kBFloat16, "SkinnyLinear: x float32 or bfloat16");
  TORCH_CHECK(lw.int8() ? w.scalar_type() == torch::kInt8 &&
                              lw.scale.scalar_type() == torch::kFloat32 &&
                              lw.scale.numel() == w.size(0) && lw.scale.is_contiguous()
                        : w.scalar_type() == xt,
              "SkinnyLinear: w in x's dtype, or int8 with a float32 scale per row");
  job.m = x.size(0);
  job.k = x.size(1);
  job.n = w.size(0);
  // x as float32, converted once for every thread (no libtorch op: a few
  // microseconds each, four linears per layer).
  if (xt == torch::kFloat32) {
    job.xp = x.data_ptr<float>();
  } else {
    std::vector<float>& xb = buf != nullptr ? *buf : job.xbuf;
    xb.resize(static_cast<size_t>(job.m * job.k));
    const auto* bits = reinterpret_cast<const uint16_t*>(x.data_ptr());
    for (int64_t i = 0; i < job.m * job.k; ++i) xb[i] = ToFloat(bits[i]);
    job.xp = xb.data();
  }
  job.result = torch::empty({job.m, job.n}, x.options());
  job.op = SkinnyOut{job.result.data_ptr(), xt == torch::kBFloat16,
                     lw.int8() ? lw.scale.data_ptr<float>() : nullptr};
  job.wp = w.data_ptr();
  job.wt = w.scalar_type();
}

// Output columns [begin, end) of one job.
void RunSkinnyColumns(const SkinnyJob& j, int64_t begin, int64_t end) {
#ifdef SG_HAVE_AVX512_KERNEL
  if (HasAvx512()) {
    if (j.wt == torch::kFloat32) {
      SkinnyAvx512(j.xp, j.m, static_cast<const float*>(j.wp), j.k, j.n, begin, end, j.op);
    } else if (j.wt == torch::kBFloat16) {
      SkinnyAvx512(j.xp, j.m, static_cast<const uint16_t*>(j.wp), j.k, j.n, begin, end, j.op);
    } else {
      SkinnyAvx512(j.xp, j.m, static_cast<const int8_t*>(j.wp), j.k, j.n, begin, end, j.op);
    }
    return;
  }
#endif
  if (j.wt == torch::kFloat32) {
    SkinnyPortableF32(j.xp, j.m, static_cast<const float*>(j.wp), j.k, j.n, begin, end, j.op);
  } else if (j.wt == torch::kBFloat16) {
    SkinnyPortableBf16(j.xp, j.m, static_cast<const uint16_t*>(j.wp), j.k, j.n, begin, end, j.op);
  } else {
    SkinnyPortableI8(j.xp, j.m, static_cast<const int8_t*>(j.wp), j.k, j.n, begin, end, j.op);
  }
}

// Columns per thread at least (below that one thread does them all).
constexpr int64_t kSkinnyGrain = 16;

}  // namespace

torch::Tensor SkinnyLinear(const torch::Tensor& x, const LinearWeight& lw) {
  RECORD_FUNCTION("streamgen::skinny_linear", std::vector<c10::IValue>());
  thread_local std::vector<float> xbuf;
  SkinnyJob job;
  PrepareSkinny(x, lw, job, &xbuf);
  at::parallel_for(0, job.n, kSkinnyGrain,
                   [&](int64_t begin, int64_t end) { RunSkinnyColumns(job, begin, end); });
  return job.result;
}

std::vector<torch::Tensor> CpuLinearGroup(const std::vector<torch::Tensor>& xs,
                                          const std::vector<const LinearWeight*>& ws) {
  RECORD_FUNCTION("streamgen::cpu_linear_group", std::vector<c10::IValue>());
  TORCH_CHECK(xs.size() == ws.size(), "CpuLinearGroup: one weight per input");
  std::vector<torch::Tensor> out(xs.size());
  std::vector<SkinnyJob> jobs;
  std::vector<size_t> job_of;  // the pair of each job
  jobs.reserve(xs.size());
  for (size_t i = 0; i < xs.size(); ++i) {
    const auto xt = xs[i].scalar_type();
    if (!g_libtorch_linear.load(std::memory_order_relaxed) &&
        (xt == torch::kFloat32 || xt == torch::kBFloat16) &&
        xs[i].size(0) <= SkinnyMaxRows(*ws[i], xt)) {
      jobs.emplace_back();
      PrepareSkinny(xs[i].contiguous(), *ws[i], jobs.back(), nullptr);
      job_of.push_back(i);
    } else {
      out[i] = CpuLinear(xs[i], *ws[i]);  // GEMM-sized: its own call
    }
  }
  // All jobs' output columns, end to end, split over the threads at once.
  std::vector<int64_t> first(jobs.size() + 1, 0);
  for (size_t j = 0; j < jobs.size(); ++j) first[j + 1] = first[j] + jobs[j].n;
  at::parallel_for(0, first.back(), kSkinnyGrain, [&](int64_t begin, int64_t end) {
    for (size_t j = 0; j < jobs.size(); ++j) {
      const int64_t lo = std::max(begin, first[j]), hi = std::min(end, first[j + 1]);
      if (lo < hi) RunSkinnyColumns(jobs[j], lo - first[j], hi - first[j]);
    }
  });
  for (size_t j = 0; j < jobs.size(); ++j) out[job_of[j]] = jobs[j].result;
  return out;
}

int64_t SkinnyMaxRows(const LinearWeight& w, torch::ScalarType x_dtype) {
  // Where the GEMM path starts to win, summed over the 134M model's linears
  // (`streamgen-bench-engine --linear-sweep`, bench/README.md "Linear
  // kernels"): float32 against OpenBLAS between 24 and 32 rows; bfloat16
  // against libtorch's bfloat16 GEMM (oneDNN) between 8 and 12; int8 against
  // the dequantizing tiled GEMM between 32 and 64 (float32 activations) and
  // 24 and 32 (bfloat16).
  if (w.int8()) return x_dtype == torch::kBFloat16 ? 24 : 32;
  return w.w.scalar_type() == torch::kBFloat16 ? 8 : 24;
}

void SetCpuLinearPath(CpuLinearPath path) {
  g_libtorch_linear.store(path == CpuLinearPath::kLibtorch, std::memory_order_relaxed);
}

torch::Tensor CpuLinear(const torch::Tensor& x, const LinearWeight& w) {
  const auto xt = x.scalar_type();
  if (g_libtorch_linear.load(std::memory_order_relaxed)) {
    if (w.int8()) return Int8TiledGemm(x, w);
    if (x.size(0) == 1) return torch::mv(w.w, x[0]).unsqueeze(0);
    return torch::mm(x, w.w.t());
  }
  if ((xt == torch::kFloat32 || xt == torch::kBFloat16) && x.size(0) <= SkinnyMaxRows(w, xt)) {
    return SkinnyLinear(x.contiguous(), w);
  }
  if (!w.int8()) return torch::mm(x, w.w.t());
  return Int8TiledGemm(x, w);
}

torch::Tensor Int8TiledGemm(const torch::Tensor& x, const LinearWeight& w) {
  // Dequantize-in-GEMM: a tile of weight rows (~512K values) at a time to x's
  // dtype, each tile through mm (the tile is written and read back from cache).
  RECORD_FUNCTION("streamgen::int8_tiled_gemm", std::vector<c10::IValue>());
  TORCH_CHECK(w.int8() && x.dim() == 2 && x.size(1) == w.w.size(1), "Int8TiledGemm: shapes");
  const auto xt = x.scalar_type();
  const int64_t n = w.w.size(0), k = w.w.size(1);
  const int64_t tile = std::max<int64_t>(64, (int64_t{1} << 19) / std::max<int64_t>(1, k));
  torch::Tensor out = torch::empty({x.size(0), n}, x.options());
  for (int64_t n0 = 0; n0 < n; n0 += tile) {
    const int64_t rows = std::min(tile, n - n0);
    torch::Tensor deq = (w.w.narrow(0, n0, rows).to(torch::kFloat32) *
                         w.scale.narrow(0, n0, rows).unsqueeze(1)).to(xt);
    out.narrow(1, n0, rows).copy_(torch::mm(x, deq.t()));
  }
  return out;
}

uint64_t StreamRead(const void* data, int64_t bytes) {
  const char* p = static_cast<const char*>(data);
  const int64_t threads = std::max(1, at::get_num_threads());
  std::vector<uint64_t> sums(threads, 0);
  // Parts of whole 4 KiB pages, one per thread.
  const int64_t part = (bytes / threads + 4095) / 4096 * 4096;
  at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t lo = std::min(bytes, t * part), hi = std::min(bytes, lo + part);
#ifdef SG_HAVE_AVX512_KERNEL
      if (CpuHasAvx512()) {
        sums[t] = StreamReadAvx512(p + lo, hi - lo);
        continue;
      }
#endif
      uint64_t s = 0;
      const uint64_t* q = reinterpret_cast<const uint64_t*>(p + lo);
      const int64_t words = (hi - lo) / 8;
      for (int64_t i = 0; i < words; ++i) s ^= q[i];
      for (int64_t i = lo + words * 8; i < hi; ++i) s += static_cast<unsigned char>(p[i]);
      sums[t] = s;
    }
  });
  uint64_t sum = 0;
  for (uint64_t s : sums) sum += s;
  return sum;
}

double ParallelRegionMicros(int reps) {
  const int threads = std::max(1, at::get_num_threads());
  std::vector<int64_t> touched(static_cast<size_t>(threads) * 16, 0);  // a line per thread
  at::parallel_for(0, threads, 1, [&](int64_t b, int64_t e) {  // warm-up: threads started
    for (int64_t t = b; t < e; ++t) touched[t * 16]++;
  });
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) {
    at::parallel_for(0, threads, 1, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) touched[t * 16]++;
    });
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return s / std::max(1, reps) * 1e6;
}

}  // namespace streamgen
