// The AVX-512 bodies of the CPU kernels (cpu_kernels_bodies.h), 16 lanes,
// compiled for baseline x86-64 with per-function target attributes and run
// only where ActiveIsa() is kAvx512 (cpu_isa.h). Hand-written because GCC
// reduces `omp simd` dot products with a serial chain of scalar adds and
// leaves exp() scalar: the attention body is ~4x faster than the portable
// one at D = 64.
#include "engine/model/cpu_kernels_bodies.h"

#if defined(SG_HAVE_X86_BODIES)
#include <immintrin.h>

#include <limits>

namespace streamgen::kernels {
namespace {

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
SG_AVX512 inline void AttendOneAvx512(const AttnTask& t) {
  const T* kp = static_cast<const T*>(t.k);
  const T* vp = static_cast<const T*>(t.v);
  const int64_t g = t.g, d = t.d, nv = d / 16, qh = t.nh * g;
  const int64_t len = t.last - t.first + 1;
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
SG_AVX512 inline void SiluMulRowAvx512(const T* gate, const T* up, T* out, int64_t n) {
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
SG_AVX512 inline void GeluTanhMulRowAvx512(const T* gate, const T* up, T* out, int64_t n) {
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
SG_AVX512 inline void RmsNormRowAvx512(const T* x, const T* w, T* out, int64_t n, float eps) {
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
SG_AVX512 inline void SkinnyAvx512(const float* x, int64_t m, const W* w, int64_t k, int64_t n,
                            int64_t begin, int64_t end, const SkinnyOut& out) {
  for (int64_t c = begin; c < end; ++c) SkinnyRow<W, 4>(x, m, w, k, c, out, n);
}

// ---- The tiled body of SkinnyLinear (the batched range) ----
//
// Bit-identical to SkinnyRow<W, 4> above: every output (m, c) is the same
// four chains of FMAs (block b of 16 columns into chain b % 4, the last
// block masked), summed as (a0 + a1) + (a2 + a3) and reduced by
// _mm512_reduce_add_ps. Only the schedule differs: a tile of MR rows of x by
// NR weight rows runs one chain u at a time for all MR x NR outputs (one
// register each: 24 accumulators, 4 weight vectors, 1 of x), so each block
// of 16 columns costs MR + NR loads for MR * NR FMAs, where SkinnyRow pays
// 1 + 1 / MG loads per FMA and re-reads all of x from L2 for every weight
// row. K is walked in chunks of kTileChunk blocks (x's and w's chunk stay in
// L1 for the four chains); a chain's accumulators wait in `part` between
// chunks (a store and a load: exact).
constexpr int kTileM = 6, kTileN = 4;
constexpr int64_t kTileChunk = 32;  // blocks of 16 columns per chunk (a multiple of 4)

template <typename W, int MR, int NR>
SG_AVX512 SG_ALIGN_LOOPS inline void TileAvx512(const float* x, int64_t k, const W* w, int64_t n, int64_t m0,
                                 int64_t c0, const SkinnyOut& out) {
  const int64_t blocks = (k + 15) / 16;
  alignas(64) float part[4][MR][NR][16];  // each chain's accumulators between chunks
  // Row i of the tile at x0 + i * k, weight row r at w0 + r * k: one base
  // register each and scaled offsets (arrays of row pointers were spilled).
  const float* x0 = x + m0 * k;
  const W* w0 = w + c0 * k;
  for (int64_t b0 = 0; b0 < blocks; b0 += kTileChunk) {
    const int64_t b1 = std::min(blocks, b0 + kTileChunk);
    for (int u = 0; u < 4; ++u) {
      __m512 acc[MR][NR];
      for (int i = 0; i < MR; ++i)
        for (int r = 0; r < NR; ++r)
          acc[i][r] = b0 == 0 ? _mm512_setzero_ps() : _mm512_load_ps(part[u][i][r]);
      for (int64_t b = b0 + u; b < b1; b += 4) {
        const int64_t j = 16 * b;
        __m512 wv[NR];
        if (j + 16 <= k) {
          for (int r = 0; r < NR; ++r) wv[r] = LoadFull16(w0 + r * k + j);
          for (int i = 0; i < MR; ++i) {
            const __m512 xv = _mm512_loadu_ps(x0 + i * k + j);
            for (int r = 0; r < NR; ++r) acc[i][r] = _mm512_fmadd_ps(xv, wv[r], acc[i][r]);
          }
        } else {  // the last block, masked as SkinnyRow masks it
          const __mmask16 mask = TailMask(k, j);
          for (int r = 0; r < NR; ++r) wv[r] = Load16(w0 + r * k + j, mask);
          for (int i = 0; i < MR; ++i) {
            const __m512 xv = _mm512_maskz_loadu_ps(mask, x0 + i * k + j);
            for (int r = 0; r < NR; ++r) acc[i][r] = _mm512_fmadd_ps(xv, wv[r], acc[i][r]);
          }
        }
      }
      for (int i = 0; i < MR; ++i)
        for (int r = 0; r < NR; ++r) _mm512_store_ps(part[u][i][r], acc[i][r]);
    }
  }
  for (int i = 0; i < MR; ++i) {
    for (int r = 0; r < NR; ++r) {
      const __m512 sum = _mm512_add_ps(_mm512_add_ps(_mm512_load_ps(part[0][i][r]), _mm512_load_ps(part[1][i][r])),
                                       _mm512_add_ps(_mm512_load_ps(part[2][i][r]), _mm512_load_ps(part[3][i][r])));
      out.Put((m0 + i) * n + c0 + r, c0 + r, _mm512_reduce_add_ps(sum));
    }
  }
}

// All rows of x against weight rows [c0, c0 + NR): tiles of kTileM rows, the
// weight rows read from L1/L2 after the first tile.
template <typename W, int NR>
SG_AVX512 inline void TileColumnsAvx512(const float* x, int64_t m, const W* w, int64_t k,
                                        int64_t n, int64_t c0, const SkinnyOut& out) {
  int64_t m0 = 0;
  for (; m0 + kTileM <= m; m0 += kTileM) TileAvx512<W, kTileM, NR>(x, k, w, n, m0, c0, out);
  switch (m - m0) {
    case 1: TileAvx512<W, 1, NR>(x, k, w, n, m0, c0, out); break;
    case 2: TileAvx512<W, 2, NR>(x, k, w, n, m0, c0, out); break;
    case 3: TileAvx512<W, 3, NR>(x, k, w, n, m0, c0, out); break;
    case 4: TileAvx512<W, 4, NR>(x, k, w, n, m0, c0, out); break;
    case 5: TileAvx512<W, 5, NR>(x, k, w, n, m0, c0, out); break;
    default: break;
  }
}

// Output columns [begin, end), kTileN weight rows at a time. The next tile's
// weight rows (contiguous in w) are prefetched into L2 while this one runs:
// its rows are read a chain at a time, every fourth 64-byte line, which the
// hardware prefetcher alone follows poorly.
template <typename W>
SG_AVX512 inline void TiledAvx512(const float* x, int64_t m, const W* w, int64_t k, int64_t n,
                                  int64_t begin, int64_t end, const SkinnyOut& out) {
  int64_t c = begin;
  for (; c + kTileN <= end; c += kTileN) {
    const int64_t next = std::min<int64_t>(kTileN, end - c - kTileN);
    if (next > 0) {
      const char* p = reinterpret_cast<const char*>(w + (c + kTileN) * k);
      const int64_t bytes = next * k * static_cast<int64_t>(sizeof(W));
      for (int64_t off = 0; off < bytes; off += 64) _mm_prefetch(p + off, _MM_HINT_T1);
    }
    TileColumnsAvx512<W, kTileN>(x, m, w, k, n, c, out);
  }
  switch (end - c) {
    case 1: TileColumnsAvx512<W, 1>(x, m, w, k, n, c, out); break;
    case 2: TileColumnsAvx512<W, 2>(x, m, w, k, n, c, out); break;
    case 3: TileColumnsAvx512<W, 3>(x, m, w, k, n, c, out); break;
    default: break;
  }
}

// ---- The AVX2 body's tiled sums on AVX-512 registers (AMD Zen 4) ----
//
// On Zen 4 SkinnyKernelIsa() picks the AVX2 body (8-lane sums: block b of 8
// columns into chain b % 4, (a0 + a1) + (a2 + a3), then Sum8), so its tiled
// schedule must give those bits. With 32 registers of 16 lanes the four
// chains of an output fit in two: lanes 0-7 of `lo` are chain 0 and lanes
// 8-15 chain 1 (columns 32s..32s+15, blocks 4s and 4s + 1), `hi` chains 2
// and 3 (32s+16..32s+31). Each lane sees the same FMAs in the same order as
// the AVX2 body's chain, so the outputs are the same bit for bit; the final
// sums are the AVX2 body's. What changes is the schedule: no chain-at-a-time
// walk over K with the partial sums in memory between chunks (the AVX2
// tiles' 8-9 accumulators per chain kept the FMAs at ~half the core's rate:
// one FMA per accumulator per pass, a 4-cycle latency, two FMAs a cycle),
// but 2 x MR x NR independent accumulators over contiguous 64-byte loads.
// Zen 4 runs a 512-bit FMA as two 256-bit halves: the same FMA rate as
// AVX2, twice the registers. Used only where the skinny body is AVX2 on a
// CPU that runs AVX-512 (cpu_kernels.cc).

// The AVX2 body's Sum8 of the (a0 + a1) + (a2 + a3) of lo and hi.
SG_AVX512 inline float SumChains8(__m512 lo, __m512 hi) {
  const __m256 a01 = _mm256_add_ps(_mm512_castps512_ps256(lo), _mm512_extractf32x8_ps(lo, 1));
  const __m256 a23 = _mm256_add_ps(_mm512_castps512_ps256(hi), _mm512_extractf32x8_ps(hi, 1));
  const __m256 v = _mm256_add_ps(a01, a23);
  __m128 t = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  t = _mm_add_ps(t, _mm_movehl_ps(t, t));
  t = _mm_add_ss(t, _mm_movehdup_ps(t));
  return _mm_cvtss_f32(t);
}

template <typename W, int MR, int NR>
SG_AVX512 SG_ALIGN_LOOPS inline void Tile8Avx512(const float* x, int64_t k, const W* w, int64_t n, int64_t m0,
                                  int64_t c0, const SkinnyOut& out) {
  __m512 lo[MR][NR], hi[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int r = 0; r < NR; ++r) lo[i][r] = hi[i][r] = _mm512_setzero_ps();
  const float* x0 = x + m0 * k;
  const W* w0 = w + c0 * k;
  const int64_t full = k / 32 * 32;
  for (int64_t j = 0; j < full; j += 32) {
    __m512 wv[NR];
    for (int r = 0; r < NR; ++r) wv[r] = LoadFull16(w0 + r * k + j);
    for (int i = 0; i < MR; ++i) {
      const __m512 xv = _mm512_loadu_ps(x0 + i * k + j);
      for (int r = 0; r < NR; ++r) lo[i][r] = _mm512_fmadd_ps(xv, wv[r], lo[i][r]);
    }
    for (int r = 0; r < NR; ++r) wv[r] = LoadFull16(w0 + r * k + j + 16);
    for (int i = 0; i < MR; ++i) {
      const __m512 xv = _mm512_loadu_ps(x0 + i * k + j + 16);
      for (int r = 0; r < NR; ++r) hi[i][r] = _mm512_fmadd_ps(xv, wv[r], hi[i][r]);
    }
  }
  // The last < 32 columns: the AVX2 body's blocks of 8, the last one
  // zero-padded; a block that does not exist leaves its chain untouched
  // (mask3: the lanes off the FMA mask keep the accumulator).
  for (int half = 0; half < 2 && full + 16 * half < k; ++half) {
    const int64_t j = full + 16 * half, rem = std::min<int64_t>(16, k - j);
    const __mmask16 load = TailMask(k, j);
    const __mmask16 fma = rem > 8 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>(0x00ff);
    __m512 wv[NR];
    for (int r = 0; r < NR; ++r) wv[r] = Load16(w0 + r * k + j, load);
    for (int i = 0; i < MR; ++i) {
      const __m512 xv = _mm512_maskz_loadu_ps(load, x0 + i * k + j);
      for (int r = 0; r < NR; ++r) {
        __m512& acc = half == 0 ? lo[i][r] : hi[i][r];
        acc = _mm512_mask3_fmadd_ps(xv, wv[r], acc, fma);
      }
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int r = 0; r < NR; ++r) out.Put((m0 + i) * n + c0 + r, c0 + r, SumChains8(lo[i][r], hi[i][r]));
}

// One tile of `mr` rows of x (1..4) by NR weight rows: 2 x MR x NR <= 24
// accumulators, NR weight vectors and one of x in the 32 registers.
template <typename W, int NR>
SG_AVX512 inline void Tile8RowsAvx512(int64_t mr, const float* x, int64_t k, const W* w, int64_t n,
                                      int64_t m0, int64_t c0, const SkinnyOut& out) {
  switch (mr) {
    case 1: Tile8Avx512<W, 1, NR>(x, k, w, n, m0, c0, out); break;
    case 2: Tile8Avx512<W, 2, NR>(x, k, w, n, m0, c0, out); break;
    case 3: if constexpr (NR <= 4) Tile8Avx512<W, 3, NR>(x, k, w, n, m0, c0, out); break;
    case 4: if constexpr (NR <= 3) Tile8Avx512<W, 4, NR>(x, k, w, n, m0, c0, out); break;
    default: break;
  }
}

// Weight rows [c0, c0 + NR) against all rows of x in `tiles` tiles of rows
// as even as they come.
template <typename W, int NR>
SG_AVX512 inline void Tile8ColumnsAvx512(const float* x, int64_t m, int64_t tiles, const W* w,
                                         int64_t k, int64_t n, int64_t c0, const SkinnyOut& out) {
  for (int64_t t = 0, m0 = 0; t < tiles; ++t) {
    const int64_t mr = m / tiles + (t < m % tiles ? 1 : 0);
    Tile8RowsAvx512<W, NR>(mr, x, k, w, n, m0, c0, out);
    m0 += mr;
  }
}

// Output columns [begin, end), NR weight rows at a time, the next tile's
// rows prefetched into L2 (as TiledAvx512).
template <typename W, int NR, int MaxMR>
SG_AVX512 inline void Tiled8Nr(const float* x, int64_t m, const W* w, int64_t k, int64_t n,
                               int64_t begin, int64_t end, const SkinnyOut& out) {
  const int64_t tiles = (m + MaxMR - 1) / MaxMR;
  int64_t c = begin;
  for (; c + NR <= end; c += NR) {
    const int64_t next = std::min<int64_t>(NR, end - c - NR);
    if (next > 0) {
      const char* p = reinterpret_cast<const char*>(w + (c + NR) * k);
      const int64_t bytes = next * k * static_cast<int64_t>(sizeof(W));
      for (int64_t off = 0; off < bytes; off += 64) _mm_prefetch(p + off, _MM_HINT_T1);
    }
    Tile8ColumnsAvx512<W, NR>(x, m, tiles, w, k, n, c, out);
  }
  switch (end - c) {
    case 1: Tile8ColumnsAvx512<W, 1>(x, m, tiles, w, k, n, c, out); break;
    case 2: if constexpr (NR > 2) Tile8ColumnsAvx512<W, 2>(x, m, tiles, w, k, n, c, out); break;
    case 3: if constexpr (NR > 3) Tile8ColumnsAvx512<W, 3>(x, m, tiles, w, k, n, c, out); break;
    default: break;
  }
}

template <typename W>
SG_AVX512 inline void Tiled8Avx512(const float* x, int64_t m, const W* w, int64_t k, int64_t n,
                                   int64_t begin, int64_t end, const SkinnyOut& out) {
  // 1-3 rows: one tile of 4 weight rows. More: tiles of up to 4 x 3; for
  // int8 weights 3 x 4 from 5 rows (measured, 1 thread, ms a pass at 8 / 16
  // rows: int8 22.4 / 43.5 against 24.0 / 46.8; bfloat16 31.5 / 51.5
  // against 28.3 / 50.7).
  if (m <= 3 || (sizeof(W) == 1 && m >= 5)) {
    Tiled8Nr<W, 4, 3>(x, m, w, k, n, begin, end, out);
  } else {
    Tiled8Nr<W, 3, 4>(x, m, w, k, n, begin, end, out);
  }
}

}  // namespace

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

SG_AVX512 void AttendAvx512F32(const AttnTask& t) { AttendOneAvx512<float>(t); }
SG_AVX512 void AttendAvx512Bf16(const AttnTask& t) { AttendOneAvx512<uint16_t>(t); }
SG_AVX512 SG_SKINNY_DECL(SkinnyAvx512F32, float) { SkinnyAvx512(x, m, w, k, n, begin, end, out); }
SG_AVX512 SG_SKINNY_DECL(SkinnyAvx512Bf16, uint16_t) {
  SkinnyAvx512(x, m, w, k, n, begin, end, out);
}
SG_AVX512 SG_SKINNY_DECL(SkinnyAvx512I8, int8_t) { SkinnyAvx512(x, m, w, k, n, begin, end, out); }
SG_AVX512 SG_SKINNY_DECL(TiledAvx512F32, float) { TiledAvx512(x, m, w, k, n, begin, end, out); }
SG_AVX512 SG_SKINNY_DECL(TiledAvx512Bf16, uint16_t) { TiledAvx512(x, m, w, k, n, begin, end, out); }
SG_AVX512 SG_SKINNY_DECL(TiledAvx512I8, int8_t) { TiledAvx512(x, m, w, k, n, begin, end, out); }
SG_AVX512 SG_SKINNY_DECL(Tiled8Avx512F32, float) { Tiled8Avx512(x, m, w, k, n, begin, end, out); }
SG_AVX512 SG_SKINNY_DECL(Tiled8Avx512Bf16, uint16_t) { Tiled8Avx512(x, m, w, k, n, begin, end, out); }
SG_AVX512 SG_SKINNY_DECL(Tiled8Avx512I8, int8_t) { Tiled8Avx512(x, m, w, k, n, begin, end, out); }
SG_AVX512 void SiluMulRowAvx512F32(const float* gate, const float* up, float* out, int64_t n) {
  SiluMulRowAvx512(gate, up, out, n);
}
SG_AVX512 void SiluMulRowAvx512Bf16(const uint16_t* gate, const uint16_t* up, uint16_t* out,
                                    int64_t n) {
  SiluMulRowAvx512(gate, up, out, n);
}
SG_AVX512 void GeluTanhMulRowAvx512F32(const float* gate, const float* up, float* out, int64_t n) {
  GeluTanhMulRowAvx512(gate, up, out, n);
}
SG_AVX512 void GeluTanhMulRowAvx512Bf16(const uint16_t* gate, const uint16_t* up, uint16_t* out,
                                        int64_t n) {
  GeluTanhMulRowAvx512(gate, up, out, n);
}
SG_AVX512 void RmsNormRowAvx512F32(const float* x, const float* w, float* out, int64_t n,
                                   float eps) {
  RmsNormRowAvx512(x, w, out, n, eps);
}
SG_AVX512 void RmsNormRowAvx512Bf16(const uint16_t* x, const uint16_t* w, uint16_t* out,
                                    int64_t n, float eps) {
  RmsNormRowAvx512(x, w, out, n, eps);
}

}  // namespace streamgen::kernels
#endif  // SG_HAVE_X86_BODIES
