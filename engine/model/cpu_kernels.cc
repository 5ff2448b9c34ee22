// Vectorised CPU kernels of the forward pass (see cpu_kernels.h): the torch
// glue. Each kernel checks its tensors here and runs one body per row or task,
// picked by ActiveIsa() (cpu_isa.h): AVX-512 (cpu_kernels_avx512.cc), AVX2 +
// FMA (cpu_kernels_avx2.cc) or portable (cpu_kernels_portable.cc); the
// bodies' declarations are in cpu_kernels_bodies.h. This file is compiled
// with -fopenmp (engine/model/CMakeLists.txt): at::parallel_for is a header
// template whose `#pragma omp parallel` needs it.
#include "engine/model/cpu_kernels.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>

#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <ATen/record_function.h>

#include "engine/model/cpu_isa.h"
#include "engine/model/cpu_kernels_bodies.h"

namespace streamgen {
namespace {

namespace kn = kernels;

std::atomic<bool> g_libtorch_linear{false};

#if defined(SG_HAVE_X86_BODIES)
bool Avx512() { return ActiveIsa() == KernelIsa::kAvx512; }
bool Avx2() { return ActiveIsa() == KernelIsa::kAvx2; }
#else
bool Avx512() { return false; }
bool Avx2() { return false; }
#endif

// The row kernels' bodies of one dtype T for the active ISA (nullptr where
// the ISA has none: the caller falls back to libtorch's ops).
template <typename T>
using RowFn = void (*)(const T*, const T*, T*, int64_t);
template <typename T>
using NormFn = void (*)(const T*, const T*, T*, int64_t, float);

struct RowBodies {
  RowFn<float> silu_f32 = nullptr;
  RowFn<uint16_t> silu_bf16 = nullptr;
  RowFn<float> gelu_f32 = kn::GeluTanhMulRowPortableF32;
  RowFn<uint16_t> gelu_bf16 = kn::GeluTanhMulRowPortableBf16;
  NormFn<float> norm_f32 = nullptr;
  NormFn<uint16_t> norm_bf16 = nullptr;
};

RowBodies ActiveRowBodies() {
  RowBodies b;
#if defined(SG_HAVE_X86_BODIES)
  if (Avx512()) {
    b = {kn::SiluMulRowAvx512F32, kn::SiluMulRowAvx512Bf16, kn::GeluTanhMulRowAvx512F32,
         kn::GeluTanhMulRowAvx512Bf16, kn::RmsNormRowAvx512F32, kn::RmsNormRowAvx512Bf16};
  } else if (Avx2()) {
    b = {kn::SiluMulRowAvx2F32, kn::SiluMulRowAvx2Bf16, kn::GeluTanhMulRowAvx2F32,
         kn::GeluTanhMulRowAvx2Bf16, kn::RmsNormRowAvx2F32, kn::RmsNormRowAvx2Bf16};
  }
#endif
  return b;
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
        kn::RotaryRowF32(qkv.data_ptr<float>() + r * stride, heads, head_dim, rotary_dim,
                         cos.data_ptr<float>() + p * rotary_dim,
                         sin.data_ptr<float>() + p * rotary_dim);
      } else {
        auto* base = reinterpret_cast<uint16_t*>(qkv.data_ptr());
        kn::RotaryRowBf16(base + r * stride, heads, head_dim, rotary_dim,
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
  // The body: AVX-512 for head dims that are multiples of 16, AVX2 for
  // multiples of 8 (64 and 128 in practice), else portable.
  void (*attend_f32)(const kn::AttnTask&) = kn::AttendPortableF32;
  void (*attend_bf16)(const kn::AttnTask&) = kn::AttendPortableBf16;
#if defined(SG_HAVE_X86_BODIES)
  if (Avx512() && d % 16 == 0) {
    attend_f32 = kn::AttendAvx512F32;
    attend_bf16 = kn::AttendAvx512Bf16;
  } else if ((Avx512() || Avx2()) && d % 8 == 0) {
    attend_f32 = kn::AttendAvx2F32;
    attend_bf16 = kn::AttendAvx2Bf16;
  }
#endif
  at::parallel_for(0, b * groups, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> qf(max_nh * g * d), scores(max_nh * g * max_len), acc(max_nh * g * d);
    std::vector<int64_t> rows(max_len);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t i = task / groups, grp = task % groups;
      const int64_t h0 = kv * grp / groups, h1 = kv * (grp + 1) / groups;
      const int64_t first_q = (i * heads + h0 * g) * d;  // element offset in q and out
      const DecodeSeq& seq = seqs[i];
      kn::AttnTask t{qb + first_q * elem,
                     kb + h0 * d * elem,
                     vb + h0 * d * elem,
                     seq.table,
                     seq.first,
                     seq.last,
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
        attend_bf16(t);
        auto* o = reinterpret_cast<c10::BFloat16*>(ob) + first_q;
        for (int64_t j = 0; j < n_out; ++j) o[j] = c10::BFloat16(acc[j]);
      } else {
        attend_f32(t);
        std::memcpy(reinterpret_cast<float*>(ob) + first_q, acc.data(), n_out * sizeof(float));
      }
    }
  });
  return out;
}

torch::Tensor RmsNorm(const torch::Tensor& x, const torch::Tensor& w, double eps) {
  RECORD_FUNCTION("streamgen::rms_norm", std::vector<c10::IValue>());
  const auto dtype = x.scalar_type();
  const RowBodies body = ActiveRowBodies();
  if (body.norm_f32 != nullptr && x.device().is_cpu() && x.dim() == 2 && x.is_contiguous() &&
      w.is_contiguous() && w.scalar_type() == dtype && w.numel() == x.size(1) &&
      (dtype == torch::kFloat32 || dtype == torch::kBFloat16)) {
    torch::Tensor out = torch::empty_like(x);
    const int64_t n = x.size(1);
    at::parallel_for(0, x.size(0), 16, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        if (dtype == torch::kFloat32) {
          body.norm_f32(x.data_ptr<float>() + r * n, w.data_ptr<float>(),
                        out.data_ptr<float>() + r * n, n, static_cast<float>(eps));
        } else {
          body.norm_bf16(reinterpret_cast<const uint16_t*>(x.data_ptr()) + r * n,
                         reinterpret_cast<const uint16_t*>(w.data_ptr()),
                         reinterpret_cast<uint16_t*>(out.data_ptr()) + r * n, n,
                         static_cast<float>(eps));
        }
      }
    });
    return out;
  }
  // The portable body: libtorch's ops, as Hugging Face's LlamaRMSNorm writes them.
  torch::Tensor xf = x.to(torch::kFloat32);
  torch::Tensor normed = xf * torch::rsqrt(xf.pow(2).mean(-1, true) + eps);
  return w * normed.to(x.scalar_type());
}

// Runs row(gate_row, up_row, out_row, I) over the rows of gu = [M, 2I] -> [M, I].
template <typename T>
torch::Tensor GatedRows(const torch::Tensor& gu, RowFn<T> row) {
  const int64_t inter = gu.size(1) / 2;
  torch::Tensor out = torch::empty({gu.size(0), inter}, gu.options());
  const T* in = reinterpret_cast<const T*>(gu.data_ptr());
  T* o = reinterpret_cast<T*>(out.data_ptr());
  at::parallel_for(0, gu.size(0), 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      row(in + r * 2 * inter, in + r * 2 * inter + inter, o + r * inter, inter);
    }
  });
  return out;
}

torch::Tensor SiluMul(const torch::Tensor& gu) {
  RECORD_FUNCTION("streamgen::silu_mul", std::vector<c10::IValue>());
  const int64_t inter = gu.size(1) / 2;
  const auto dtype = gu.scalar_type();
  const RowBodies body = ActiveRowBodies();
  if (body.silu_f32 != nullptr && gu.device().is_cpu() && gu.dim() == 2 && gu.is_contiguous()) {
    if (dtype == torch::kFloat32) return GatedRows<float>(gu, body.silu_f32);
    if (dtype == torch::kBFloat16) return GatedRows<uint16_t>(gu, body.silu_bf16);
  }
  // The portable body: libtorch's ops.
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
  const RowBodies body = ActiveRowBodies();
  if (dtype == torch::kFloat32) return GatedRows<float>(gu, body.gelu_f32);
  return GatedRows<uint16_t>(gu, body.gelu_bf16);
}

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

std::atomic<int> g_skinny_schedule{static_cast<int>(SkinnySchedule::kAuto)};

// Rows of x from which the vector bodies run their tiled schedule, per body
// and weight dtype (the outputs are the row-by-row schedule's bit for bit, so
// this is a speed choice only). Measured with
//   [STREAMGEN_KERNEL_ISA=avx512] streamgen-bench-engine --model build/models/bench-134m
//       --threads 1 --runs 7 --tiled-sweep
// (CPU time of one pass over the 134M model's 49 linears, weights from DRAM;
// bench/README.md, "Kernels per ISA"), on 2 vCPUs of an AMD EPYC Zen 4 (avx2
// fma f16c avx512f/bw/vl/dq avx512_bf16 avx512_vnni), 2026-12-07, load
// average 4-11; row-by-row time over tiled time:
//   rows                  1     2     4     8    16    32    64
//   AVX2 float32       0.73  0.60  0.62  1.03  1.25  1.38  1.44
//   AVX2 bfloat16      0.79  0.87  1.03  1.28  1.42  1.50  1.48
//   AVX2 int8          0.88  1.09  1.28  1.44  1.28  1.55  1.53
//   AVX-512 float32    1.32  1.06  0.70  0.96  1.33  1.49  1.60
//   AVX-512 int8       1.09  1.23  1.42  1.46  1.67  1.73  1.76
// (AVX-512 bfloat16 not measured apart: AVX2's row.)
//   the AVX2 body on Zen 4 (Tiled8Avx512), 2 interleaved rounds later that
//   evening (load 4-6), bfloat16 x 32 bytes past a 64-byte boundary:
//   rows                  1     2     4     8    16
//   float32            0.86  0.68  0.73  1.19  1.39
//   bfloat16           0.80  0.88  0.97  1.24  1.49
//   int8 (bf16 x)      0.85  1.12  1.18  1.38  1.55
// wide: the AVX2 body's tiles run on AVX-512 registers (SkinnyJob::wide_tiles).
int64_t TiledMinRowsFor(KernelIsa isa, torch::ScalarType wt, bool wide) {
  if (isa == KernelIsa::kPortable) return std::numeric_limits<int64_t>::max();  // no tiled body
  switch (static_cast<SkinnySchedule>(g_skinny_schedule.load(std::memory_order_relaxed))) {
    case SkinnySchedule::kRows:
      return std::numeric_limits<int64_t>::max();
    case SkinnySchedule::kTiles:
      return 1;
    case SkinnySchedule::kAuto:
      break;
  }
  if (wt == torch::kInt8) return 2;
  if (wt == torch::kBFloat16) return wide ? 6 : 4;
  return isa == KernelIsa::kAvx512 ? 16 : 8;
}

// The AVX2 skinny body on a CPU running AVX-512 (Zen 4, SkinnyKernelIsa):
// its tiled schedule runs on AVX-512 registers (Tiled8Avx512*).
bool WideTiles(KernelIsa skinny_isa) {
  return skinny_isa == KernelIsa::kAvx2 && ActiveIsa() == KernelIsa::kAvx512;
}

// One SkinnyLinear call's operands, checked, with x as float32 (the
// accumulation type) and the output allocated.
struct SkinnyJob {
  const float* xp = nullptr;
  std::vector<float> xbuf;  // x converted (bfloat16 x, when no buffer is given)
  int64_t m = 0, k = 0, n = 0;
  const void* wp = nullptr;
  torch::ScalarType wt = torch::kFloat32;
  torch::Tensor result;  // [m, n]
  kn::SkinnyOut op{};
  KernelIsa isa = KernelIsa::kPortable;  // the body, fixed for the whole call
  // The AVX2 body's tiled schedule on AVX-512 registers (Tiled8Avx512*):
  // the skinny body is AVX2 on a CPU running AVX-512 (Zen 4, SkinnyKernelIsa).
  bool wide_tiles = false;
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
    // For the AVX2 body, 32 bytes past a 64-byte boundary. The bodies read
    // x with unaligned 32-byte (AVX2) or 64-byte loads; from a vector's
    // 16-byte aligned start the 32-byte loads could cross a cache line (two
    // loads each), and the row-by-row schedule issues one x load per FMA:
    // int8 weights at 4 rows took 20.7 ms a pass under bfloat16 x against
    // 15.2 under float32 x.
    // Measured, 1 thread, ms a pass at 1 / 4 rows (row-by-row; 4 rows tiled
    // in brackets), by x's offset from a 64-byte boundary:
    //   offset            0                    16 or 48             32
    //   bfloat16   10.3-11.0 / 19.1 (17.1)  8.8-9.3 / 21.1 (20.6)  9.4-9.7 / 17.4 (17.4)
    //   int8       6.2-6.5 / 15.5 (12.5)    6.5-6.6 / 20.0 (16.8)  6.2-6.3 / 15.3 (12.9)
    // Offset 0 slows bfloat16 weights at one row, for a reason not found;
    // bfloat16 weights at 1-2 rows keep offset 16, where the vector's
    // allocation put x before (glibc: 16 past a page for large blocks).
    std::vector<float>& xb = buf != nullptr ? *buf : job.xbuf;
    // The AVX-512 body (Intel's, or forced) keeps x where the vector puts
    // it, as before: on Zen 4 its figures moved by up to 1.5x with the
    // offset, run to run, without a pattern these loaded runs could show.
    float* xa = nullptr;
    if (SkinnyKernelIsa() == KernelIsa::kAvx512) {
      xb.resize(static_cast<size_t>(job.m * job.k));
      xa = xb.data();
    } else {
      constexpr size_t kPadFloats = 64 / sizeof(float);
      xb.resize(static_cast<size_t>(job.m * job.k) + kPadFloats);
      const uintptr_t addr = reinterpret_cast<uintptr_t>(xb.data());  // 4-byte aligned at least
      const uintptr_t offset = lw.w.scalar_type() == torch::kBFloat16 && job.m <= 2 ? 16 : 32;
      xa = xb.data() + ((64 + offset - addr % 64) % 64) / sizeof(float);
    }
    const auto* bits = reinterpret_cast<const uint16_t*>(x.data_ptr());
    for (int64_t i = 0; i < job.m * job.k; ++i) xa[i] = kn::ToFloat(bits[i]);
    job.xp = xa;
  }
  job.result = torch::empty({job.m, job.n}, x.options());
  job.isa = SkinnyKernelIsa();
  job.wide_tiles = WideTiles(job.isa);
  job.op = kn::SkinnyOut{job.result.data_ptr(), xt == torch::kBFloat16,
                     lw.int8() ? lw.scale.data_ptr<float>() : nullptr};
  job.wp = w.data_ptr();
  job.wt = w.scalar_type();
}

// Output columns [begin, end) of one job: the row-by-row schedule, or from
// TiledMinRows() rows the tiled one (the same bits: cpu_kernels_bodies.h).
void RunSkinnyColumns(const SkinnyJob& j, int64_t begin, int64_t end) {
  using F32 = decltype(&kn::SkinnyPortableF32);
  using Bf16 = decltype(&kn::SkinnyPortableBf16);
  using I8 = decltype(&kn::SkinnyPortableI8);
  F32 f32 = kn::SkinnyPortableF32;
  Bf16 bf16 = kn::SkinnyPortableBf16;
  I8 i8 = kn::SkinnyPortableI8;
#if defined(SG_HAVE_X86_BODIES)
  const bool tiled = j.m >= TiledMinRowsFor(j.isa, j.wt, j.wide_tiles);
  if (j.isa == KernelIsa::kAvx512) {
    f32 = tiled ? kn::TiledAvx512F32 : kn::SkinnyAvx512F32;
    bf16 = tiled ? kn::TiledAvx512Bf16 : kn::SkinnyAvx512Bf16;
    i8 = tiled ? kn::TiledAvx512I8 : kn::SkinnyAvx512I8;
  } else if (j.isa == KernelIsa::kAvx2 && tiled && j.wide_tiles) {
    f32 = kn::Tiled8Avx512F32;
    bf16 = kn::Tiled8Avx512Bf16;
    i8 = kn::Tiled8Avx512I8;
  } else if (j.isa == KernelIsa::kAvx2) {
    f32 = tiled ? kn::TiledAvx2F32 : kn::SkinnyAvx2F32;
    bf16 = tiled ? kn::TiledAvx2Bf16 : kn::SkinnyAvx2Bf16;
    i8 = tiled ? kn::TiledAvx2I8 : kn::SkinnyAvx2I8;
  }
#endif
  if (j.wt == torch::kFloat32) {
    f32(j.xp, j.m, static_cast<const float*>(j.wp), j.k, j.n, begin, end, j.op);
  } else if (j.wt == torch::kBFloat16) {
    bf16(j.xp, j.m, static_cast<const uint16_t*>(j.wp), j.k, j.n, begin, end, j.op);
  } else {
    i8(j.xp, j.m, static_cast<const int8_t*>(j.wp), j.k, j.n, begin, end, j.op);
  }
}

// Columns per thread at least (below that one thread does them all).
constexpr int64_t kSkinnyGrain = 16;

}  // namespace

void SetSkinnySchedule(SkinnySchedule schedule) {
  g_skinny_schedule.store(static_cast<int>(schedule), std::memory_order_relaxed);
}

int64_t TiledMinRows(torch::ScalarType w_dtype) {
  const KernelIsa isa = SkinnyKernelIsa();
  return TiledMinRowsFor(isa, w_dtype, WideTiles(isa));
}

KernelIsa SkinnyKernelIsa() {
  const KernelIsa isa = ActiveIsa();
  if (isa == KernelIsa::kAvx512 && KernelIsaIsAuto() && DetectedCpuFeatures().amd_zen4) {
    return KernelIsa::kAvx2;
  }
  return isa;
}

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
  // (`streamgen-bench-engine --linear-sweep` and `--isa-sweep`, bench/README.md
  // "Linear kernels" and "Kernels per ISA"), a table per ISA because the GEMM
  // side changes with it.
  //  - float32 against OpenBLAS: between 24 and 32 rows with AVX-512; at or
  //    below 16 with OpenBLAS's Haswell kernels (AVX2), by ~20%, within that
  //    busy machine's noise. Kept at 24 on every ISA: the engine's batch
  //    invariance up to 24 float32 rows (mlp.h, the batching tests) then
  //    holds on every CPU. With the tiled schedule (`--tiled-sweep`, Zen 4,
  //    native OpenBLAS): GEMM time over ours 1.13 / 1.06 / 1.00 at 16 / 24 /
  //    32 rows on the AVX2 body, 1.10 / - / 0.96 on the AVX-512 one.
  //  - int8 against Int8TiledGemm: at or below 16 rows on every ISA since
  //    the tiles are dequantized by our own vector loop (32 and 24 before,
  //    with libtorch's conversion).
  //  - bfloat16 with native bfloat16 dot products (AVX512-BF16) against
  //    libtorch's bfloat16 GEMM (oneDNN): between 8 and 12. Without them the
  //    GEMM side is Float32TiledGemm (a float32 GEMM plus the conversion,
  //    ~1.4x float32's at 128 rows), and the skinny kernel, reading half of
  //    float32's bytes, stays ahead up to ~32 rows.
  //  - int8 weights under bfloat16 activations with native bfloat16 dot
  //    products: Int8TiledGemm dequantizes to bfloat16 for oneDNN, which
  //    led the skinny kernel's tiled schedule by 1.6x at 16 rows and tied
  //    it at 8 (`--tiled-sweep`, "Kernels per ISA"): 8, as for bfloat16
  //    weights. float32 activations keep 16 (the float32 GEMM's side).
  if (w.int8()) return x_dtype == torch::kBFloat16 && ActiveIsaHasNativeBf16() ? 8 : 16;
  if (w.w.scalar_type() != torch::kBFloat16) return 24;
  return ActiveIsaHasNativeBf16() ? 8 : 32;
}

void SetCpuLinearPath(CpuLinearPath path) {
  g_libtorch_linear.store(path == CpuLinearPath::kLibtorch, std::memory_order_relaxed);
}

const char* CpuLinearRouteName(CpuLinearRoute route) {
  switch (route) {
    case CpuLinearRoute::kSkinny:
      return "skinny";
    case CpuLinearRoute::kTorchMm:
      return "torch_mm";
    case CpuLinearRoute::kFloat32Tiles:
      return "float32_tiles";
    case CpuLinearRoute::kInt8Tiles:
      return "int8_tiles";
    case CpuLinearRoute::kInt8Float32Tiles:
      return "int8_float32_tiles";
  }
  return "?";
}

CpuLinearRoute CpuLinearRouteFor(int64_t rows, const LinearWeight& w, torch::ScalarType x_dtype) {
  const bool bf16_x = x_dtype == torch::kBFloat16;
  // Without native bfloat16 dot products libtorch's bfloat16 GEMM is a slow
  // fallback (a 128-token prompt took 16 s on an AVX2 machine): bfloat16
  // products go through float32 there.
  const bool via_float32 = bf16_x && !ActiveIsaHasNativeBf16();
  if (g_libtorch_linear.load(std::memory_order_relaxed)) {  // the old path, as it was
    return w.int8() ? CpuLinearRoute::kInt8Tiles : CpuLinearRoute::kTorchMm;
  }
  if ((x_dtype == torch::kFloat32 || bf16_x) && rows <= SkinnyMaxRows(w, x_dtype)) {
    return CpuLinearRoute::kSkinny;
  }
  if (w.int8()) return via_float32 ? CpuLinearRoute::kInt8Float32Tiles : CpuLinearRoute::kInt8Tiles;
  return via_float32 ? CpuLinearRoute::kFloat32Tiles : CpuLinearRoute::kTorchMm;
}

namespace {

// Rows of the weight per tile of the tiled GEMMs: at most ~512K values (2 MiB
// as float32, 1 MiB as bfloat16), a multiple of 16 rows (OpenBLAS's and
// oneDNN's register blocks), the tiles of one weight made equal, and at
// least 2 tiles where each gets 64 rows (so that 2 threads share a weight).
// A tile is dequantized by the thread that multiplies it and read back by
// that thread's GEMM from L2 (1 MiB a core on Zen 4) or L3; large enough that
// packing x again for each tile, and each GEMM call's own cost, stay a small
// part of the product. Measured on the 134M model, ms per pass over its
// linears (int8+f32 / int8+bf16 through oneDNN), 2 threads at 128 rows, two
// rounds: 32K values 202-205 / 150-152, 64K 201 / 101-104, 128K 170-189 /
// 89-92, 256K 168-184 / 87-90, 512K 162-183 / 85-87. At 16 rows, 1 thread,
// int8+bf16 (native bfloat16 CPUs route it here above 8 rows): 256K values
// with at least 8 tiles a weight 46.4 ms, 512K with at least 2: 39.3-39.5,
// as the schedule before this one (38.2-38.4): below 128 rows the calls'
// own cost dominates.
// Independent of the thread count: each tile's GEMM is the same
// single-threaded call on any number of threads, so the result is too
// (tests/tiled_gemm_test.cc). A weight of one tile (under 128 rows) is one
// GEMM, which OpenBLAS threads itself (its split of M and N leaves each
// output's sum alone; tested at 37 rows).
int64_t TileRows(int64_t n, int64_t k) {
  constexpr int64_t kTileValues = int64_t{1} << 19;
  const int64_t max_rows = std::max<int64_t>(16, kTileValues / std::max<int64_t>(1, k) / 16 * 16);
  // At least 2 tiles where there are 64 rows each, so 2 threads share even a
  // small weight.
  const int64_t tiles = std::max((n + max_rows - 1) / max_rows, std::min<int64_t>(2, n / 64));
  return std::min(max_rows, ((n + tiles - 1) / tiles + 15) / 16 * 16);
}

// A buffer per thread for the tile it dequantizes, kept between calls (it
// grows to the largest tile once, then is reused: no allocation per tile).
// Returns at least `bytes` bytes, 64-byte aligned (c10's CPU allocator).
void* ThreadTileBuffer(int64_t bytes) {
  thread_local torch::Tensor buf;
  if (!buf.defined() || buf.numel() < bytes) buf = torch::empty({bytes}, torch::kByte);
  return buf.data_ptr();
}

// y = x w^T with w's tiles of rows converted to `dt` by `convert`, each tile
// through libtorch's mm in `dt`; x is converted to `dt` once, the result to
// x's dtype at the end. One parallel region for the whole product: each
// thread takes the next tile (a shared counter, so a thread slowed by
// another process takes fewer), converts it into its own buffer while it is
// hot in L2 and multiplies it single-threaded (inside an OpenMP region
// OpenBLAS's OpenMP build and oneDNN run on the calling thread) into its
// columns of the output. Before, each tile took two parallel regions (the
// conversion, then the threaded GEMM over one small tile) and their
// barriers: the int8 tiles gained 1.27x from a second thread against
// float32 GEMM's 1.8x (bench/README.md, "The tiled GEMMs on two threads").
// convert(wt, n0, rows) fills wt [rows, k] in dt with rows n0.. of w; it is
// called from the worker threads, on its own thread each (no nested region).
template <typename Convert>
torch::Tensor TiledGemm(const torch::Tensor& x, int64_t n, int64_t k, torch::ScalarType dt,
                        Convert convert) {
  const torch::Tensor xd = x.to(dt).contiguous();  // [M, K] in dt
  const int64_t tile = TileRows(n, k);
  const int64_t tiles = (n + tile - 1) / tile;
  const int64_t elem = static_cast<int64_t>(c10::elementSize(dt));
  torch::Tensor out = torch::empty({x.size(0), n}, x.options().dtype(dt));  // [M, N] in dt
  // The caller's thread-local state (inference mode above all: out is an
  // inference tensor in the engine, and writing it from a worker outside
  // inference mode is refused), on every worker.
  const at::ThreadLocalState caller_state;
  std::atomic<int64_t> next{0};
  const int64_t workers = std::min<int64_t>(tiles, std::max(1, at::get_num_threads()));
  at::parallel_for(0, workers, 1, [&](int64_t begin, int64_t end) {
    at::ThreadLocalStateGuard state_guard(caller_state);
    for (int64_t w = begin; w < end; ++w) {
      void* data = ThreadTileBuffer(tile * k * elem);
      for (int64_t t = next.fetch_add(1); t < tiles; t = next.fetch_add(1)) {
        const int64_t n0 = t * tile, rows = std::min(tile, n - n0);
        torch::Tensor wt = torch::from_blob(data, {rows, k}, xd.options());  // [rows, K]
        convert(wt, n0, rows);
        // [M, rows] into columns n0.. of out (row stride N: BLAS's ldc).
        torch::Tensor cols = out.narrow(1, n0, rows);
        torch::mm_out(cols, xd, wt.t());
      }
    }
  });
  return out.scalar_type() == x.scalar_type() ? out : out.to(x.scalar_type());
}

}  // namespace

torch::Tensor Float32TiledGemm(const torch::Tensor& x, const LinearWeight& w) {
  RECORD_FUNCTION("streamgen::float32_tiled_gemm", std::vector<c10::IValue>());
  TORCH_CHECK(!w.int8() && x.dim() == 2 && x.size(1) == w.w.size(1) && w.w.is_contiguous(),
              "Float32TiledGemm: x [M, K] and a contiguous float w [N, K]");
  const int64_t k = w.w.size(1);
  return TiledGemm(x, w.w.size(0), k, torch::kFloat32,
                   [&](torch::Tensor& wt, int64_t n0, int64_t rows) {
                     if (w.w.scalar_type() != torch::kBFloat16) {
                       wt.copy_(w.w.narrow(0, n0, rows));
                       return;
                     }
                     const auto* in = reinterpret_cast<const uint16_t*>(w.w.data_ptr()) + n0 * k;
                     float* out = wt.data_ptr<float>();
                     kn::WidenBf16(in, out, rows * k);
                   });
}

torch::Tensor CpuLinear(const torch::Tensor& x, const LinearWeight& w) {
  switch (CpuLinearRouteFor(x.size(0), w, x.scalar_type())) {
    case CpuLinearRoute::kSkinny:
      return SkinnyLinear(x.contiguous(), w);
    case CpuLinearRoute::kTorchMm:
      if (g_libtorch_linear.load(std::memory_order_relaxed) && x.size(0) == 1) {
        return torch::mv(w.w, x[0]).unsqueeze(0);
      }
      return torch::mm(x, w.w.t());
    case CpuLinearRoute::kFloat32Tiles:
      return Float32TiledGemm(x, w);
    case CpuLinearRoute::kInt8Tiles:
    case CpuLinearRoute::kInt8Float32Tiles:
      return Int8TiledGemm(x, w);
  }
  return {};
}

torch::Tensor Int8TiledGemm(const torch::Tensor& x, const LinearWeight& w) {
  // Dequantize-in-GEMM: a tile of weight rows at a time to x's dtype (float32
  // for bfloat16 x without native bfloat16 dot products), each tile through
  // mm (the tile is written and read back from cache).
  RECORD_FUNCTION("streamgen::int8_tiled_gemm", std::vector<c10::IValue>());
  TORCH_CHECK(w.int8() && x.dim() == 2 && x.size(1) == w.w.size(1) && w.w.is_contiguous() &&
                  w.scale.is_contiguous(),
              "Int8TiledGemm: x [M, K] and a contiguous int8 w [N, K] with its scales");
  const auto xt = x.scalar_type();
  const torch::ScalarType dt =
      xt == torch::kBFloat16 && !ActiveIsaHasNativeBf16() ? torch::kFloat32 : xt;
  const int64_t k = w.w.size(1);
  const auto* q = w.w.data_ptr<int8_t>();
  const float* scale = w.scale.data_ptr<float>();
  return TiledGemm(x, w.w.size(0), k, dt, [&](torch::Tensor& wt, int64_t n0, int64_t rows) {
    // Rounded to x's dtype as the native path rounds (q * scale in float32,
    // then to bfloat16), widened back (exactly) where the GEMM runs in float32.
    for (int64_t r = 0; r < rows; ++r) {
      const int8_t* qr = q + (n0 + r) * k;
      if (dt == torch::kFloat32) {
        kn::DequantizeInt8F32(qr, scale[n0 + r], wt.data_ptr<float>() + r * k, k,
                              xt == torch::kBFloat16);
      } else {
        kn::DequantizeInt8Bf16(qr, scale[n0 + r],
                               reinterpret_cast<uint16_t*>(wt.data_ptr()) + r * k, k);
      }
    }
  });
}

uint64_t StreamRead(const void* data, int64_t bytes) {
  const char* p = static_cast<const char*>(data);
  const int64_t threads = std::max(1, at::get_num_threads());
  std::vector<uint64_t> sums(threads, 0);
  uint64_t (*read)(const char*, int64_t) = kn::StreamReadPortable;
#if defined(SG_HAVE_X86_BODIES)
  if (Avx512()) read = kn::StreamReadAvx512;
  if (Avx2()) read = kn::StreamReadAvx2;
#endif
  // Parts of whole 4 KiB pages, one per thread.
  const int64_t part = (bytes / threads + 4095) / 4096 * 4096;
  at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t lo = std::min(bytes, t * part), hi = std::min(bytes, lo + part);
      sums[t] = read(p + lo, hi - lo);
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
