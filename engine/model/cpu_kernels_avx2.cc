// The AVX2 + FMA bodies of the CPU kernels (cpu_kernels_bodies.h), 8 lanes:
// the machines without AVX-512 (AMD Zen 2/3, Intel client parts since Alder
// Lake, many cloud instances). Compiled for baseline x86-64 with
// per-function target attributes and run only where ActiveIsa() is kAvx2
// (cpu_isa.h). The same algorithms as the AVX-512 bodies at half the width:
// results agree with them within the kernels' stated error bounds, not bit
// for bit (the lanes split the sums differently). Tails (sizes not a multiple
// of 8) go through an 8-wide buffer padded with zeros, so they are computed by
// the same vector code as the rest of the row.
#include "engine/model/cpu_kernels_bodies.h"

#if defined(SG_HAVE_X86_BODIES)
#include <immintrin.h>

#include <limits>

namespace streamgen::kernels {
namespace {

#define SG_AVX2 __attribute__((target("avx2,fma")))

// ---- 8 lanes of float32, bfloat16 or int8 ----

SG_AVX2 inline __m256 FromBf16x8(__m128i h) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
// float32 -> bfloat16, rounded to nearest even (as RoundBf16).
SG_AVX2 inline __m128i ToBf16x8(__m256 x) {
  const __m256i bits = _mm256_castps_si256(x);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
  const __m256i r = _mm256_srli_epi32(
      _mm256_add_epi32(_mm256_add_epi32(bits, _mm256_set1_epi32(0x7fff)), lsb), 16);
  // Values fit 16 bits: the unsigned-saturating pack keeps them; packus works
  // per 128-bit lane, so gather the two low quarters.
  const __m256i packed = _mm256_packus_epi32(r, r);
  return _mm256_castsi256_si128(_mm256_permute4x64_epi64(packed, 0x08));
}

SG_AVX2 inline __m256 Load8(const float* p) { return _mm256_loadu_ps(p); }
SG_AVX2 inline __m256 Load8(const uint16_t* p) {
  return FromBf16x8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
SG_AVX2 inline __m256 Load8(const int8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}
SG_AVX2 inline void Store8(float* p, __m256 v) { _mm256_storeu_ps(p, v); }
SG_AVX2 inline void Store8(uint16_t* p, __m256 v) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), ToBf16x8(v));
}

// The first `count` (0..8) of 8 values, the rest 0.
template <typename T>
SG_AVX2 inline __m256 LoadPart8(const T* p, int64_t count) {
  T buf[8] = {};
  for (int64_t i = 0; i < count; ++i) buf[i] = p[i];
  return Load8(buf);
}
template <typename T>
SG_AVX2 inline void StorePart8(T* p, __m256 v, int64_t count) {
  T buf[8];
  Store8(buf, v);
  for (int64_t i = 0; i < count; ++i) p[i] = buf[i];
}

// The sum of 8 lanes in a fixed order: halves, then pairs, then the last two.
SG_AVX2 inline float Sum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
SG_AVX2 inline float Max8(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// ExpNonPositive, 8 lanes at a time (the AVX-512 body's Exp16 at half width).
SG_AVX2 inline __m256 Exp8(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.0f);
  const __m256 c = _mm256_max_ps(x, lo);
  const __m256 fx = _mm256_round_ps(
      _mm256_fmadd_ps(c, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)),
      _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), c);
  r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), r);
  const __m256 z = _mm256_mul_ps(r, r);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, z, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i n = _mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(127));
  const __m256 e = _mm256_mul_ps(y, _mm256_castsi256_ps(_mm256_slli_epi32(n, 23)));
  return _mm256_and_ps(e, _mm256_cmp_ps(x, lo, _CMP_GE_OQ));
}

SG_AVX2 inline __m256 Abs8(__m256 v) {
  return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v);
}

// sigmoid(z) from e = exp(-|z|): 1 / (1 + e) for z >= 0, e / (1 + e) below.
SG_AVX2 inline __m256 SigmoidFromExp8(__m256 z, __m256 e) {
  const __m256 inv = _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_add_ps(_mm256_set1_ps(1.0f), e));
  const __m256 neg = _mm256_cmp_ps(z, _mm256_setzero_ps(), _CMP_LT_OQ);
  return _mm256_blendv_ps(inv, _mm256_mul_ps(e, inv), neg);
}

// ---- Row kernels: SiluMul, GeluTanhMul, RmsNorm ----

template <typename T>
SG_AVX2 inline __m256 SiluMul8(__m256 g, __m256 u) {
  const __m256 e = Exp8(_mm256_sub_ps(_mm256_setzero_ps(), Abs8(g)));
  __m256 act = _mm256_mul_ps(g, SigmoidFromExp8(g, e));
  // bfloat16: silu's output rounded to bfloat16 before the product, as
  // transformers' act_fn(gate_proj(x)) * up_proj(x) rounds.
  if constexpr (sizeof(T) == 2) act = FromBf16x8(ToBf16x8(act));
  return _mm256_mul_ps(act, u);
}

template <typename T>
SG_AVX2 inline __m256 GeluTanhMul8(__m256 g, __m256 u) {
  const __m256 g3 = _mm256_mul_ps(_mm256_mul_ps(g, g), g);
  const __m256 z = _mm256_mul_ps(_mm256_set1_ps(kGeluTwoC),
                                 _mm256_fmadd_ps(_mm256_set1_ps(kGeluCubic), g3, g));
  const __m256 e = Exp8(_mm256_sub_ps(_mm256_setzero_ps(), Abs8(z)));
  __m256 act = _mm256_mul_ps(g, SigmoidFromExp8(z, e));
  if constexpr (sizeof(T) == 2) act = FromBf16x8(ToBf16x8(act));  // act(gate) stored in bfloat16
  return _mm256_mul_ps(act, u);
}

// out[j] = F(gate[j], up[j]) 8 at a time; the tail through LoadPart8.
template <typename T, __m256 (*F)(__m256, __m256)>
SG_AVX2 inline void GatedRow(const T* gate, const T* up, T* out, int64_t n) {
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) Store8(out + j, F(Load8(gate + j), Load8(up + j)));
  if (j < n) StorePart8(out + j, F(LoadPart8(gate + j, n - j), LoadPart8(up + j, n - j)), n - j);
}

// w * (x * r), the normalised value rounded to bfloat16 first for bfloat16
// (normed.to(bfloat16), then weight * it in bfloat16).
template <typename T>
SG_AVX2 inline __m256 NormMul8(__m256 xv, __m256 wv, __m256 vr) {
  __m256 normed = _mm256_mul_ps(xv, vr);
  if constexpr (sizeof(T) == 2) normed = FromBf16x8(ToBf16x8(normed));
  return _mm256_mul_ps(wv, normed);
}

template <typename T>
SG_AVX2 inline void RmsNormRow(const T* x, const T* w, T* out, int64_t n, float eps) {
  __m256 sq = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 v = Load8(x + j);
    sq = _mm256_fmadd_ps(v, v, sq);
  }
  if (j < n) {
    const __m256 v = LoadPart8(x + j, n - j);
    sq = _mm256_fmadd_ps(v, v, sq);
  }
  const float r = 1.0f / std::sqrt(Sum8(sq) / static_cast<float>(n) + eps);
  const __m256 vr = _mm256_set1_ps(r);
  for (j = 0; j + 8 <= n; j += 8) Store8(out + j, NormMul8<T>(Load8(x + j), Load8(w + j), vr));
  if (j < n) StorePart8(out + j, NormMul8<T>(LoadPart8(x + j, n - j), LoadPart8(w + j, n - j), vr), n - j);
}

// ---- PagedDecodeAttention ----

// Rows ahead that the loops prefetch (as the AVX-512 body: the hardware
// prefetcher barely helps with scattered blocks).
constexpr int64_t kPrefetchRows = 8;

SG_AVX2 inline void Prefetch(const void* p, int64_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (int64_t off = 0; off < bytes; off += 64) _mm_prefetch(c + off, _MM_HINT_T0);
}

// Lanes [0, count) set: the tail of a row of scores.
SG_AVX2 inline __m256i LaneMask(int64_t count) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(std::min<int64_t>(count, 8))),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

template <typename T>
SG_AVX2 inline void AttendOne(const AttnTask& t) {
  const T* kp = static_cast<const T*>(t.k);
  const T* vp = static_cast<const T*>(t.v);
  const int64_t g = t.g, d = t.d, nv = d / 8, qh = t.nh * g;
  const int64_t len = t.last - t.first + 1;
  const int64_t row_bytes = t.nh * d * static_cast<int64_t>(sizeof(T));
  for (int64_t c = 0; c < qh * nv; ++c) {
    _mm256_storeu_ps(t.qf + 8 * c, Load8(static_cast<const T*>(t.q) + 8 * c));
  }
  PoolRows(t);
  const int64_t* rows = t.rows;
  for (int64_t i = 0; i < len; ++i) {
    if (i + kPrefetchRows < len) Prefetch(kp + rows[i + kPrefetchRows], row_bytes);
    for (int64_t kh = 0; kh < t.nh; ++kh) {
      const T* k = kp + rows[i] + kh * d;
      for (int64_t h = kh * g; h < (kh + 1) * g; ++h) {
        const float* qv = t.qf + h * d;
        // Two accumulators: the FMA chain's latency, not its throughput, is
        // the limit at D = 64 with one.
        __m256 a0 = _mm256_mul_ps(_mm256_loadu_ps(qv), Load8(k));
        __m256 a1 = _mm256_setzero_ps();
        int64_t c = 1;
        for (; c + 1 < nv; c += 2) {
          a1 = _mm256_fmadd_ps(_mm256_loadu_ps(qv + 8 * c), Load8(k + 8 * c), a1);
          a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qv + 8 * c + 8), Load8(k + 8 * c + 8), a0);
        }
        if (c < nv) a1 = _mm256_fmadd_ps(_mm256_loadu_ps(qv + 8 * c), Load8(k + 8 * c), a1);
        t.scores[h * len + i] = Sum8(_mm256_add_ps(a0, a1)) * t.scale;
      }
    }
  }
  for (int64_t i = 0; i < std::min(len, kPrefetchRows); ++i) Prefetch(vp + rows[i], row_bytes);
  const __m256 neg_inf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t h = 0; h < qh; ++h) {
    float* s = t.scores + h * len;
    if (t.softcap > 0.0f) SoftcapScores(s, len, t.softcap);
    __m256 mx = neg_inf;
    for (int64_t i = 0; i < len; i += 8) {
      const __m256i m = LaneMask(len - i);
      mx = _mm256_max_ps(mx, _mm256_blendv_ps(neg_inf, _mm256_maskload_ps(s + i, m),
                                              _mm256_castsi256_ps(m)));
    }
    const __m256 vmax = _mm256_set1_ps(Max8(mx));
    __m256 sum = _mm256_setzero_ps();
    for (int64_t i = 0; i < len; i += 8) {
      const __m256i m = LaneMask(len - i);
      const __m256 e = _mm256_and_ps(Exp8(_mm256_sub_ps(_mm256_maskload_ps(s + i, m), vmax)),
                                     _mm256_castsi256_ps(m));
      _mm256_maskstore_ps(s + i, m, e);
      sum = _mm256_add_ps(sum, e);
    }
    const __m256 inv = _mm256_set1_ps(1.0f / Sum8(sum));
    for (int64_t i = 0; i < len; i += 8) {
      const __m256i m = LaneMask(len - i);
      _mm256_maskstore_ps(s + i, m, _mm256_mul_ps(_mm256_maskload_ps(s + i, m), inv));
    }
  }
  for (int64_t c = 0; c < qh * nv; ++c) _mm256_storeu_ps(t.acc + 8 * c, _mm256_setzero_ps());
  for (int64_t i = 0; i < len; ++i) {
    if (i + kPrefetchRows < len) Prefetch(vp + rows[i + kPrefetchRows], row_bytes);
    for (int64_t kh = 0; kh < t.nh; ++kh) {
      const T* v = vp + rows[i] + kh * d;
      for (int64_t c = 0; c < nv; ++c) {
        const __m256 vv = Load8(v + 8 * c);
        for (int64_t h = kh * g; h < (kh + 1) * g; ++h) {
          float* a = t.acc + h * d + 8 * c;
          _mm256_storeu_ps(a, _mm256_fmadd_ps(_mm256_set1_ps(t.scores[h * len + i]), vv,
                                              _mm256_loadu_ps(a)));
        }
      }
    }
  }
}

// ---- SkinnyLinear ----

// How far ahead in a weight row the first group of rows prefetches (the
// AVX-512 body's measured distances).
template <typename W>
constexpr int64_t PrefetchBytes() {
  return sizeof(W) == 2 ? 1024 : 2048;
}

// One weight row c against MG rows of x at a time: each (m, c) has four
// accumulators of 8 lanes, block b of 8 columns going to accumulator b % 4,
// summed as (a0 + a1) + (a2 + a3) then Sum8: the same order whatever M
// (batch invariance). MG = 2 keeps 8 accumulators and 4 weight vectors in
// the 16 YMM registers (x is an FMA memory operand); the weight row is
// converted once per two rows of x and read from L1 for the others.
template <typename W, int MG>
SG_AVX2 SG_ALIGN_LOOPS inline void SkinnyRow(const float* x, int64_t m_rows, const W* w, int64_t k, int64_t c,
                              const SkinnyOut& out, int64_t n) {
  const W* wr = w + c * k;
  const int64_t full = k / 32 * 32;
  for (int64_t m0 = 0; m0 < m_rows; m0 += MG) {
    const int64_t mg = std::min<int64_t>(MG, m_rows - m0);
    __m256 acc[MG][4];
    for (int g = 0; g < MG; ++g)
      for (int u = 0; u < 4; ++u) acc[g][u] = _mm256_setzero_ps();
    for (int64_t j = 0; j < full; j += 32) {
      if (m0 == 0) {
        // One prefetch per 64-byte line of the 32 weights (128, 64 or 32 bytes).
        const char* ahead = reinterpret_cast<const char*>(wr + j) + PrefetchBytes<W>();
        for (size_t line = 0; line < (32 * sizeof(W) + 63) / 64; ++line) {
          _mm_prefetch(ahead + 64 * line, _MM_HINT_T0);
        }
      }
      __m256 wv[4];
      for (int u = 0; u < 4; ++u) wv[u] = Load8(wr + j + 8 * u);
      for (int g = 0; g < MG; ++g) {
        if (g >= mg) break;
        const float* xr = x + (m0 + g) * k + j;
        for (int u = 0; u < 4; ++u) acc[g][u] = _mm256_fmadd_ps(_mm256_loadu_ps(xr + 8 * u), wv[u], acc[g][u]);
      }
    }
    // The last < 32 columns, 8 at a time (the final block zero-padded).
    for (int64_t j = full, u = 0; j < k; j += 8, ++u) {
      const int64_t cnt = std::min<int64_t>(8, k - j);
      const __m256 wv = cnt == 8 ? Load8(wr + j) : LoadPart8(wr + j, cnt);
      for (int g = 0; g < MG; ++g) {
        if (g >= mg) break;
        const float* xr = x + (m0 + g) * k + j;
        const __m256 xv = cnt == 8 ? _mm256_loadu_ps(xr) : _mm256_maskload_ps(xr, LaneMask(cnt));
        acc[g][u] = _mm256_fmadd_ps(xv, wv, acc[g][u]);
      }
    }
    for (int g = 0; g < mg; ++g) {
      const __m256 sum = _mm256_add_ps(_mm256_add_ps(acc[g][0], acc[g][1]),
                                       _mm256_add_ps(acc[g][2], acc[g][3]));
      out.Put((m0 + g) * n + c, c, Sum8(sum));
    }
  }
}

template <typename W>
SG_AVX2 inline void Skinny(const float* x, int64_t m, const W* w, int64_t k, int64_t n,
                           int64_t begin, int64_t end, const SkinnyOut& out) {
  for (int64_t c = begin; c < end; ++c) SkinnyRow<W, 2>(x, m, w, k, c, out, n);
}

// ---- The tiled body of SkinnyLinear (the batched range) ----
//
// Bit-identical to SkinnyRow<W, 2> above: every output (m, c) is the same
// four chains of FMAs (block b of 8 columns into chain b % 4, a last partial
// block zero-padded), summed as (a0 + a1) + (a2 + a3), then Sum8. Only the
// schedule differs: a tile of MR rows of x by NR weight rows runs one chain
// at a time for its MR x NR outputs (one accumulator each, NR weight vectors
// and one of x in the 16 YMM registers), MR + NR loads per MR * NR FMAs, and
// x is read once per NR weight rows instead of once per weight row. K is
// walked in chunks (x's and w's chunk stay in L1 for the four chains); a
// chain's accumulators wait in `part` between chunks (exact).
//
// The tile's shape follows the rows of x (TilePlan): an FMA has a 4-cycle
// latency and the core issues two a cycle, so a tile needs ~8 independent
// accumulators or it waits on its own chains. The first version's one shape,
// 3 x 3, split 4 rows into 3 + 1 and 16 into 5 x 3 + 1: the 1-row tile (3
// accumulators) ran at ~3 FMAs per 4 cycles and cost nearly what a full tile
// costs, and converted every bfloat16 or int8 weight a second time (bfloat16
// at 4 rows: the tiled schedule was slower than the row-by-row one). Now
// the shape follows the rows (Tiled). 4 x 3 (12 accumulators + 3 + 1) left
// GCC one register short: it kept an accumulator on the stack. Where the
// CPU runs AVX-512 (Zen 4) the same sums run on its 32 registers instead
// (Tiled8Avx512, cpu_kernels_avx512.cc).
constexpr int64_t kTileChunk = 64;  // blocks of 8 columns per chunk (a multiple of 4)

template <typename W, int MR, int NR>
SG_AVX2 SG_ALIGN_LOOPS inline void TileAvx2(const float* x, int64_t k, const W* w, int64_t n, int64_t m0,
                             int64_t c0, const SkinnyOut& out) {
  // Full blocks of 8 columns, then at most one partial block (kept out of
  // the main loop: its buffer and mask inside it made GCC keep the
  // accumulators of a 2 x 4 tile on the stack).
  const int64_t full = k / 8, blocks = (k + 7) / 8;
  alignas(32) float part[4][MR][NR][8];
  // Row i of the tile at x0 + i * k, weight row r at w0 + r * k: one base
  // register each and scaled offsets (arrays of row pointers were spilled).
  const float* x0 = x + m0 * k;
  const W* w0 = w + c0 * k;
  for (int64_t b0 = 0; b0 < blocks; b0 += kTileChunk) {
    const int64_t b1 = std::min(blocks, b0 + kTileChunk);
    for (int u = 0; u < 4; ++u) {
      __m256 acc[MR][NR];
      for (int i = 0; i < MR; ++i)
        for (int r = 0; r < NR; ++r)
          acc[i][r] = b0 == 0 ? _mm256_setzero_ps() : _mm256_load_ps(part[u][i][r]);
      int64_t b = b0 + u;
      for (const int64_t bf = std::min(b1, full); b < bf; b += 4) {
        const int64_t j = 8 * b;
        __m256 wv[NR];
        for (int r = 0; r < NR; ++r) wv[r] = Load8(w0 + r * k + j);
        for (int i = 0; i < MR; ++i) {
          const __m256 xv = _mm256_loadu_ps(x0 + i * k + j);
          for (int r = 0; r < NR; ++r) acc[i][r] = _mm256_fmadd_ps(xv, wv[r], acc[i][r]);
        }
      }
      if (b < b1) {  // b == full: the last block, zero-padded as SkinnyRow pads it
        const int64_t j = 8 * b, cnt = k - j;
        __m256 wv[NR];
        for (int r = 0; r < NR; ++r) wv[r] = LoadPart8(w0 + r * k + j, cnt);
        for (int i = 0; i < MR; ++i) {
          const __m256 xv = _mm256_maskload_ps(x0 + i * k + j, LaneMask(cnt));
          for (int r = 0; r < NR; ++r) acc[i][r] = _mm256_fmadd_ps(xv, wv[r], acc[i][r]);
        }
      }
      for (int i = 0; i < MR; ++i)
        for (int r = 0; r < NR; ++r) _mm256_store_ps(part[u][i][r], acc[i][r]);
    }
  }
  for (int i = 0; i < MR; ++i) {
    for (int r = 0; r < NR; ++r) {
      const __m256 sum = _mm256_add_ps(_mm256_add_ps(_mm256_load_ps(part[0][i][r]), _mm256_load_ps(part[1][i][r])),
                                       _mm256_add_ps(_mm256_load_ps(part[2][i][r]), _mm256_load_ps(part[3][i][r])));
      out.Put((m0 + i) * n + c0 + r, c0 + r, Sum8(sum));
    }
  }
}

// One tile of `mr` (1..5) rows of x by NR weight rows; shapes over 12
// accumulators are never asked for (Tiled).
template <typename W, int NR>
SG_AVX2 inline void TileRowsAvx2(int64_t mr, const float* x, int64_t k, const W* w, int64_t n,
                                 int64_t m0, int64_t c0, const SkinnyOut& out) {
  switch (mr) {
    case 1: TileAvx2<W, 1, NR>(x, k, w, n, m0, c0, out); break;
    case 2: TileAvx2<W, 2, NR>(x, k, w, n, m0, c0, out); break;
    case 3: if constexpr (NR <= 3) TileAvx2<W, 3, NR>(x, k, w, n, m0, c0, out); break;
    case 4: if constexpr (NR <= 2) TileAvx2<W, 4, NR>(x, k, w, n, m0, c0, out); break;
    case 5: if constexpr (NR <= 2) TileAvx2<W, 5, NR>(x, k, w, n, m0, c0, out); break;
    default: break;
  }
}

// All rows of x against weight rows [c0, c0 + NR): `tiles` tiles of rows, as
// even as they come (the first m % tiles one row taller).
template <typename W, int NR>
SG_AVX2 inline void TileColumnsAvx2(const float* x, int64_t m, int64_t tiles, const W* w, int64_t k,
                                    int64_t n, int64_t c0, const SkinnyOut& out) {
  for (int64_t t = 0, m0 = 0; t < tiles; ++t) {
    const int64_t mr = m / tiles + (t < m % tiles ? 1 : 0);
    TileRowsAvx2<W, NR>(mr, x, k, w, n, m0, c0, out);
    m0 += mr;
  }
}

// Output columns [begin, end), NR weight rows at a time, the next tile's
// rows (contiguous in w) prefetched into L2 meanwhile (see TiledAvx512).
template <typename W, int NR>
SG_AVX2 inline void TiledNr(const float* x, int64_t m, int64_t tiles, const W* w, int64_t k,
                            int64_t n, int64_t begin, int64_t end, const SkinnyOut& out) {
  int64_t c = begin;
  for (; c + NR <= end; c += NR) {
    const int64_t next = std::min<int64_t>(NR, end - c - NR);
    if (next > 0) {
      const char* p = reinterpret_cast<const char*>(w + (c + NR) * k);
      const int64_t bytes = next * k * static_cast<int64_t>(sizeof(W));
      for (int64_t off = 0; off < bytes; off += 64) _mm_prefetch(p + off, _MM_HINT_T1);
    }
    TileColumnsAvx2<W, NR>(x, m, tiles, w, k, n, c, out);
  }
  switch (end - c) {
    case 1: TileColumnsAvx2<W, 1>(x, m, tiles, w, k, n, c, out); break;
    case 2: if constexpr (NR > 2) TileColumnsAvx2<W, 2>(x, m, tiles, w, k, n, c, out); break;
    case 3: if constexpr (NR > 3) TileColumnsAvx2<W, 3>(x, m, tiles, w, k, n, c, out); break;
    default: break;
  }
}

template <typename W>
SG_AVX2 inline void Tiled(const float* x, int64_t m, const W* w, int64_t k, int64_t n,
                          int64_t begin, int64_t end, const SkinnyOut& out) {
  // The tile plan: 1-2 rows as one tile of 4 weight rows, 4-5 as one tile
  // of 2, else 3 x 3 tiles (the rows split evenly: 16 = 3 + 3 + 3 + 3 + 2 +
  // 2). 6 x 2 tiles were slower than 3 x 3 from 8 rows (float32 at 16 rows,
  // 1 thread: 86.5 against 76.1 ms a pass): x is read once per weight tile
  // (from L2 for the larger K), and 2 weight rows read it 1.5x as often.
  if (m <= 2) {
    TiledNr<W, 4>(x, m, 1, w, k, n, begin, end, out);
  } else if (m <= 5 && m != 3) {
    TiledNr<W, 2>(x, m, 1, w, k, n, begin, end, out);
  } else {
    TiledNr<W, 3>(x, m, (m + 2) / 3, w, k, n, begin, end, out);
  }
}

}  // namespace

SG_AVX2 void AttendAvx2F32(const AttnTask& t) { AttendOne<float>(t); }
SG_AVX2 void AttendAvx2Bf16(const AttnTask& t) { AttendOne<uint16_t>(t); }
SG_AVX2 SG_SKINNY_DECL(SkinnyAvx2F32, float) { Skinny(x, m, w, k, n, begin, end, out); }
SG_AVX2 SG_SKINNY_DECL(SkinnyAvx2Bf16, uint16_t) { Skinny(x, m, w, k, n, begin, end, out); }
SG_AVX2 SG_SKINNY_DECL(SkinnyAvx2I8, int8_t) { Skinny(x, m, w, k, n, begin, end, out); }
SG_AVX2 SG_SKINNY_DECL(TiledAvx2F32, float) { Tiled(x, m, w, k, n, begin, end, out); }
SG_AVX2 SG_SKINNY_DECL(TiledAvx2Bf16, uint16_t) { Tiled(x, m, w, k, n, begin, end, out); }
SG_AVX2 SG_SKINNY_DECL(TiledAvx2I8, int8_t) { Tiled(x, m, w, k, n, begin, end, out); }

SG_AVX2 void SiluMulRowAvx2F32(const float* gate, const float* up, float* out, int64_t n) {
  GatedRow<float, SiluMul8<float>>(gate, up, out, n);
}
SG_AVX2 void SiluMulRowAvx2Bf16(const uint16_t* gate, const uint16_t* up, uint16_t* out,
                                int64_t n) {
  GatedRow<uint16_t, SiluMul8<uint16_t>>(gate, up, out, n);
}
SG_AVX2 void GeluTanhMulRowAvx2F32(const float* gate, const float* up, float* out, int64_t n) {
  GatedRow<float, GeluTanhMul8<float>>(gate, up, out, n);
}
SG_AVX2 void GeluTanhMulRowAvx2Bf16(const uint16_t* gate, const uint16_t* up, uint16_t* out,
                                    int64_t n) {
  GatedRow<uint16_t, GeluTanhMul8<uint16_t>>(gate, up, out, n);
}
SG_AVX2 void RmsNormRowAvx2F32(const float* x, const float* w, float* out, int64_t n, float eps) {
  RmsNormRow(x, w, out, n, eps);
}
SG_AVX2 void RmsNormRowAvx2Bf16(const uint16_t* x, const uint16_t* w, uint16_t* out, int64_t n,
                                float eps) {
  RmsNormRow(x, w, out, n, eps);
}

SG_AVX2 uint64_t StreamReadAvx2(const char* p, int64_t bytes) {
  __m256i acc0 = _mm256_setzero_si256(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
  int64_t i = 0;
  for (; i + 128 <= bytes; i += 128) {
    acc0 = _mm256_xor_si256(acc0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i)));
    acc1 = _mm256_xor_si256(acc1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 32)));
    acc2 = _mm256_xor_si256(acc2, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 64)));
    acc3 = _mm256_xor_si256(acc3, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 96)));
  }
  const __m256i acc = _mm256_xor_si256(_mm256_xor_si256(acc0, acc1), _mm256_xor_si256(acc2, acc3));
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), acc);
  uint64_t sum = lanes[0] + lanes[1] + lanes[2] + lanes[3];
  for (; i < bytes; ++i) sum += static_cast<unsigned char>(p[i]);
  return sum;
}

}  // namespace streamgen::kernels
#endif  // SG_HAVE_X86_BODIES
