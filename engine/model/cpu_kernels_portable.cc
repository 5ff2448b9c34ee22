// The portable bodies of the CPU kernels (cpu_kernels_bodies.h): plain C++
// whose `#pragma omp simd` loops vectorise without -ffast-math, cloned for
// x86-64-v4, x86-64-v3 and baseline x86-64 by GCC's target_clones (the
// project is built for baseline x86-64). Compiles on aarch64 too (NEON
// through the same `omp simd` loops), without libtorch. Compiled with
// -fopenmp for the `omp simd` pragmas (engine/model/CMakeLists.txt).
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "engine/model/cpu_kernels_bodies.h"

namespace streamgen::kernels {
namespace {

// Not under TSan: target_clones dispatches through an IFUNC resolver that the
// dynamic linker runs before TSan's runtime is initialized, and the resolver's
// instrumented code then crashes the program (SIGSEGV before main). The
// portable body is compiled for baseline x86-64 there instead.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_THREAD__)
#define SG_TARGET_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define SG_TARGET_CLONES
#endif

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

// kD > 0 fixes the head dimension at compile time (the loops then vectorise
// without remainder handling, ~3x faster at D = 64); kD = 0 reads it from t.
template <typename T, int kD>
inline __attribute__((always_inline)) void AttendOne(const AttnTask& t) {
  const T* q = static_cast<const T*>(t.q);
  const T* kp = static_cast<const T*>(t.k);
  const T* vp = static_cast<const T*>(t.v);
  const int64_t g = t.g, d = kD > 0 ? kD : t.d, qh = t.nh * g;
  const int64_t len = t.last - t.first + 1;
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

// One dot product per (m, n), each by the same loop whatever M (batch
// invariance, as the vector bodies; the bodies' roundings differ).
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

// One row's heads of the rotary embedding (see RotaryInPlace): the first `rd`
// of each head's `d` dims rotate, the rest are left as they are. No FMA
// contraction: libtorch rounds each product before the sum.
template <typename T>
__attribute__((optimize("fp-contract=off"))) inline void RotaryRow(
    T* row, int64_t heads, int64_t d, int64_t rd, const T* cos, const T* sin) {
  const int64_t half = rd / 2;
  auto round = [](float v) -> float {
    if constexpr (sizeof(T) == 2) {
      return ToFloat(Bf16Bits(v));
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
        x[i] = Bf16Bits(lo[i]);
        x[i + half] = Bf16Bits(hi[i]);
      } else {
        x[i] = lo[i];
        x[i + half] = hi[i];
      }
    }
  }
}

}  // namespace

SG_TARGET_CLONES void GeluTanhMulRowPortableF32(const float* gate, const float* up, float* out,
                                                int64_t n) {
  GeluTanhMulRow(gate, up, out, n);
}
SG_TARGET_CLONES void GeluTanhMulRowPortableBf16(const uint16_t* gate, const uint16_t* up,
                                                 uint16_t* out, int64_t n) {
  GeluTanhMulRow(gate, up, out, n);
}

SG_TARGET_CLONES void AttendPortableF32(const AttnTask& t) {
  if (t.d == 64) return AttendOne<float, 64>(t);
  if (t.d == 128) return AttendOne<float, 128>(t);
  AttendOne<float, 0>(t);
}
SG_TARGET_CLONES void AttendPortableBf16(const AttnTask& t) {
  if (t.d == 64) return AttendOne<uint16_t, 64>(t);
  if (t.d == 128) return AttendOne<uint16_t, 128>(t);
  AttendOne<uint16_t, 0>(t);
}

SG_TARGET_CLONES SG_SKINNY_DECL(SkinnyPortableF32, float) {
  SkinnyPortable(x, m, w, k, n, begin, end, out);
}
SG_TARGET_CLONES SG_SKINNY_DECL(SkinnyPortableBf16, uint16_t) {
  SkinnyPortable(x, m, w, k, n, begin, end, out);
}
SG_TARGET_CLONES SG_SKINNY_DECL(SkinnyPortableI8, int8_t) {
  SkinnyPortable(x, m, w, k, n, begin, end, out);
}

__attribute__((optimize("fp-contract=off"))) SG_TARGET_CLONES void RotaryRowF32(float* row, int64_t heads, int64_t d, int64_t rd,
                                   const float* cos, const float* sin) {
  RotaryRow(row, heads, d, rd, cos, sin);
}
__attribute__((optimize("fp-contract=off"))) SG_TARGET_CLONES void RotaryRowBf16(uint16_t* row, int64_t heads, int64_t d, int64_t rd,
                                    const uint16_t* cos, const uint16_t* sin) {
  RotaryRow(row, heads, d, rd, cos, sin);
}

SG_TARGET_CLONES void WidenBf16(const uint16_t* in, float* out, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = ToFloat(in[i]);
}

SG_TARGET_CLONES void DequantizeInt8F32(const int8_t* q, float scale, float* out, int64_t n,
                                        bool round_bf16) {
  if (round_bf16) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) out[i] = ToFloat(RoundBf16(static_cast<float>(q[i]) * scale));
  } else {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(q[i]) * scale;
  }
}

SG_TARGET_CLONES void DequantizeInt8Bf16(const int8_t* q, float scale, uint16_t* out, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = RoundBf16(static_cast<float>(q[i]) * scale);
}

uint64_t StreamReadPortable(const char* p, int64_t bytes) {
  uint64_t s = 0;
  const int64_t words = bytes / 8;
  for (int64_t i = 0; i < words; ++i) {
    uint64_t q;
    std::memcpy(&q, p + 8 * i, sizeof(q));
    s ^= q;
  }
  for (int64_t i = words * 8; i < bytes; ++i) s += static_cast<unsigned char>(p[i]);
  return s;
}

}  // namespace streamgen::kernels
