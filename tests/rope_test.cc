// Tests of the rotary tables (engine/model/rope.h) against numbers computed
// independently with python3 + numpy, following transformers'
// modeling_rope_utils.py formulas op by op in float32 (the script below).
//
// Tolerances: inverse frequencies within 1e-6 relative (about 8 float32
// ulps): libtorch's float32 pow (Sleef, 1 ulp) and numpy's (libm) may differ
// by an ulp, and llama3 / yarn blend a few rounded values; attention factors
// (double arithmetic on both sides) within 1e-12; table entries within 4e-6
// absolute (float32 cos/sin of the same float32 angle, within an ulp or two
// on each side, times a factor <= 1.2).
//
// The reference script (python3 with Debian's python3-numpy 1.24):
//
// clang-format off
//   import math
//   import numpy as np
//   f32 = np.float32
//   def default(theta, dim):
//       return f32(1) / (f32(theta) ** (np.arange(0, dim, 2).astype(f32) / f32(dim)))
//   def llama3(theta, dim, factor, low, high, old):
//       inv = default(theta, dim)
//       low_wl, high_wl = old / low, old / high
//       wavelen = (f32(1) / inv) * f32(2 * math.pi)
//       inv_l = np.where(wavelen > f32(low_wl), inv / f32(factor), inv)
//       smooth = ((f32(1) / wavelen) * f32(old) - f32(low)) / f32(high - low)
//       smoothed = (f32(1) - smooth) * inv_l / f32(factor) + smooth * inv_l
//       medium = ~(wavelen < f32(high_wl)) & ~(wavelen > f32(low_wl))
//       return np.where(medium, smoothed, inv_l).astype(f32)
//   def yarn(theta, dim, factor, original, beta_fast=32, beta_slow=1, truncate=True,
//            attention_factor=None, mscale=None, mscale_all_dim=None):
//       def get_mscale(scale, m=1):
//           return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0
//       if attention_factor is None:
//           if mscale and mscale_all_dim:
//               attention_factor = get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim)
//           else:
//               attention_factor = get_mscale(factor)
//       def corr(n):
//           return (dim * math.log(original / (n * 2 * math.pi))) / (2 * math.log(theta))
//       lo, hi = corr(beta_fast), corr(beta_slow)
//       if truncate:
//           lo, hi = math.floor(lo), math.ceil(hi)
//       lo, hi = max(lo, 0), min(hi, dim - 1)
//       if lo == hi:
//           hi += 0.001
//       ramp = np.clip((np.arange(dim // 2).astype(f32) - f32(lo)) / f32(hi - lo), 0, 1).astype(f32)
//       pos = f32(theta) ** (np.arange(0, dim, 2).astype(f32) / f32(dim))
//       extra, inter = f32(1) / pos, f32(1) / (pos * f32(factor))
//       ef = f32(1) - ramp
//       return (inter * (f32(1) - ef) + extra * ef).astype(f32), attention_factor, (lo, hi)
//   def longrope(theta, dim, ext, factor, original, attention_factor=None):
//       if attention_factor is None:
//           attention_factor = (1.0 if factor <= 1 else
//                               math.sqrt(1 + math.log(factor) / math.log(original)))
//       e = np.array(ext, dtype=f32)
//       return (f32(1) / (e * f32(theta) ** (np.arange(0, dim, 2).astype(f32) / f32(dim)))
//               ).astype(f32), attention_factor
//   def table(inv, att, ps, idx):  # (cos, sin) at positions ps, frequencies idx
//       return [[(float(np.cos(f32(p) * inv[i]) * f32(att)),
//                 float(np.sin(f32(p) * inv[i]) * f32(att))) for i in idx] for p in ps]
//
// clang-format on
//
// and the calls that printed each case's numbers are above its test.
#include "engine/model/rope.h"

#include <torch/torch.h>

#include <cmath>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace streamgen {
namespace {

constexpr double kInvFreqRel = 1e-6;
constexpr double kTableAbs = 4e-6;

std::vector<double> Ramp(int n, double step) {
  std::vector<double> v;
  for (int i = 0; i < n; ++i) v.push_back(1.0 + step * i);
  return v;
}

struct Expected {
  int index;
  double value;
};

void ExpectInvFreq(const torch::Tensor& inv_freq, int64_t size, const std::vector<Expected>& want,
                   const std::string& what) {
  ASSERT_EQ(inv_freq.dim(), 1) << what;
  ASSERT_EQ(inv_freq.size(0), size) << what;
  ASSERT_EQ(inv_freq.scalar_type(), torch::kFloat32) << what;
  for (const Expected& e : want) {
    const double got = inv_freq[e.index].item<float>();
    EXPECT_NEAR(got, e.value, e.value * kInvFreqRel) << what << " inv_freq[" << e.index << "]";
  }
}

struct TableEntry {
  int64_t position;
  int index;  // frequency index in [0, rotary_dim / 2)
  double cos, sin;
};

// Checks cos/sin at the entries, and the rotate-half layout: column index +
// rotary_dim / 2 repeats column index.
void ExpectTables(const RopeTables& t, int64_t positions, int rotary_dim,
                  const std::vector<TableEntry>& want, const std::string& what) {
  ASSERT_EQ(t.cos.sizes(), (std::vector<int64_t>{positions, rotary_dim})) << what;
  ASSERT_EQ(t.sin.sizes(), (std::vector<int64_t>{positions, rotary_dim})) << what;
  ASSERT_EQ(t.cos.scalar_type(), torch::kFloat32) << what;
  const int half = rotary_dim / 2;
  EXPECT_TRUE(torch::equal(t.cos.narrow(1, 0, half), t.cos.narrow(1, half, half))) << what;
  EXPECT_TRUE(torch::equal(t.sin.narrow(1, 0, half), t.sin.narrow(1, half, half))) << what;
  for (const TableEntry& e : want) {
    EXPECT_NEAR(t.cos[e.position][e.index].item<float>(), e.cos, kTableAbs)
        << what << " cos[" << e.position << "][" << e.index << "]";
    EXPECT_NEAR(t.sin[e.position][e.index].item<float>(), e.sin, kTableAbs)
        << what << " sin[" << e.position << "][" << e.index << "]";
  }
}

// default(1e4, 64)  -> [0, 1, 15, 31]: 1.0, 7.498942018e-01, 1.333521493e-02, 1.333521504e-04
// default(1e6, 128) -> [0, 10, 40, 63]: 1.0, 1.154782027e-01, 1.778279402e-04, 1.240937763e-06
// table(default(1e4, 64), 1.0, [1, 1000], [0, 1, 31]):
//   p 1:    (0.5403022766113281, 0.8414710164070129), (0.7317609786987305, 0.6815613508224487),
//           (1.0, 0.0001333521504420787)
//   p 1000: (0.5623790621757507, 0.8268795609474182), (-0.584592878818512, 0.8113267421722412),
//           (0.991121768951416, 0.13295726478099823)
TEST(RopeTest, Default) {
  RopeConfig rope;
  rope.theta = 1e4;
  double attention = 0;
  ExpectInvFreq(RopeInverseFrequencies(rope, 64, 2048, &attention), 32,
                {{0, 1.0}, {1, 7.498942018e-01}, {15, 1.333521493e-02}, {31, 1.333521504e-04}},
                "default 1e4");
  EXPECT_EQ(attention, 1.0);
  rope.theta = 1e6;
  ExpectInvFreq(RopeInverseFrequencies(rope, 128, 2048, &attention), 64,
                {{0, 1.0}, {10, 1.154782027e-01}, {40, 1.778279402e-04}, {63, 1.240937763e-06}},
                "default 1e6");
  rope.theta = 1e4;
  ExpectTables(MakeRopeTables(rope, 64, 1001), 1001, 64,
               {{0, 0, 1.0, 0.0},
                {0, 31, 1.0, 0.0},
                {1, 0, 0.5403022766113281, 0.8414710164070129},
                {1, 1, 0.7317609786987305, 0.6815613508224487},
                {1, 31, 1.0, 0.0001333521504420787},
                {1000, 0, 0.5623790621757507, 0.8268795609474182},
                {1000, 1, -0.584592878818512, 0.8113267421722412},
                {1000, 31, 0.991121768951416, 0.13295726478099823}},
               "default tables");
}

// default(1e6, 256) / f32(8) -> [0, 50, 127]: 1.25e-01, 5.664479104e-04, 1.392467368e-07
TEST(RopeTest, Linear) {
  RopeConfig rope;
  rope.type = RopeType::kLinear;
  rope.theta = 1e6;
  rope.factor = 8;
  double attention = 0;
  ExpectInvFreq(RopeInverseFrequencies(rope, 256, 4096, &attention), 128,
                {{0, 0.125}, {50, 5.664479104e-04}, {127, 1.392467368e-07}}, "linear");
  EXPECT_EQ(attention, 1.0);
}

// Llama 3.1 8B: llama3(500000.0, 128, 8.0, 1.0, 4.0, 8192) -> [0, 20, 29, 31, 34, 40, 63]:
//   1.0, 1.656044088e-02, 2.166570630e-03, 8.567514597e-04, 1.785077911e-04,
//   3.428102355e-05, 3.068925878e-07
// (indices 29..34 lie in the smoothed band; 40 and 63 are divided by 8.)
TEST(RopeTest, Llama3) {
  RopeConfig rope;
  rope.type = RopeType::kLlama3;
  rope.theta = 500000.0;
  rope.factor = 8;
  rope.low_freq_factor = 1;
  rope.high_freq_factor = 4;
  rope.original_max_position_embeddings = 8192;
  double attention = 0;
  torch::Tensor inv_freq = RopeInverseFrequencies(rope, 128, 131072, &attention);
  ExpectInvFreq(inv_freq, 64,
                {{0, 1.0},
                 {20, 1.656044088e-02},
                 {29, 2.166570630e-03},
                 {31, 8.567514597e-04},
                 {34, 1.785077911e-04},
                 {40, 3.428102355e-05},
                 {63, 3.068925878e-07}},
                "llama3");
  EXPECT_EQ(attention, 1.0);
  // A second reference: llama.cpp's converter (conversion/llama.py,
  // generate_extra_tensors) stores per-frequency divisors (rope_freqs), in
  // double from the float32 default frequencies; ggml rotates by freq / f.
  //   freqs = default(500000.0, 128)
  //   for i: wavelen = 2 * math.pi / float(freqs[i])
  //          f = 1 if wavelen < 2048 else 8 if wavelen > 8192 else
  //              1 / ((1 - smooth) / 8 + smooth), smooth = (8192 / wavelen - 1) / 3
  //          print(freqs[i] / float(np.float32(f)))
  // -> [29, 31, 34]: 2.166570379e-03, 8.567514937e-04, 1.785078087e-04
  //    (f = 1.207484007, 2.026313066, 5.257326603)
  ExpectInvFreq(inv_freq, 64, {{29, 2.166570379e-03}, {31, 8.567514937e-04}, {34, 1.785078087e-04}},
                "llama3 vs llama.cpp");
}

// Qwen 3 with YaRN: yarn(1e6, 128, 4.0, 32768) -> [0, 10, 20, 30, 40, 63]:
//   1.0, 1.154782027e-01, 1.333521493e-02, 1.064361073e-03, 4.445698505e-05,
//   3.102344408e-07; attention 1.138629436111989; correction range (23, 40)
// table(that, 1.138629436111989, [7, 100000], [0, 40]):
//   p 7:      (0.8584153056144714, 0.7480642795562744), (1.1386293172836304, 0.0003543402417562902)
//   p 100000: (-1.1379016637802124, 0.0407046340405941), (-0.30007457733154297,
//   -1.0983771085739136)
// yarn(1e4, 64, 16.0, 4096, beta_fast=16, beta_slow=2, truncate=False, mscale=1.0,
//      mscale_all_dim=0.5) -> [0, 5, 10, 20, 31]:
//   1.0, 2.371373922e-01, 5.623412877e-02, 2.408111177e-04, 8.334509403e-06;
//   attention 1.121751143713058; correction range (12.88..., 20.10...)
TEST(RopeTest, Yarn) {
  RopeConfig rope;
  rope.type = RopeType::kYarn;
  rope.theta = 1e6;
  rope.factor = 4;
  rope.original_max_position_embeddings = 32768;
  double attention = 0;
  ExpectInvFreq(RopeInverseFrequencies(rope, 128, 131072, &attention), 64,
                {{0, 1.0},
                 {10, 1.154782027e-01},
                 {20, 1.333521493e-02},
                 {30, 1.064361073e-03},
                 {40, 4.445698505e-05},
                 {63, 3.102344408e-07}},
                "yarn");
  EXPECT_NEAR(attention, 1.138629436111989, 1e-12);
  ExpectTables(MakeRopeTables(rope, 128, 100001), 100001, 128,
               {{0, 0, 1.138629436111989, 0.0},
                {7, 0, 0.8584153056144714, 0.7480642795562744},
                {7, 40, 1.1386293172836304, 0.0003543402417562902},
                {100000, 0, -1.1379016637802124, 0.0407046340405941},
                {100000, 40, -0.30007457733154297, -1.0983771085739136}},
               "yarn tables");

  // An explicit attention factor is used as given.
  rope.attention_factor = 1.25;
  RopeInverseFrequencies(rope, 128, 131072, &attention);
  EXPECT_EQ(attention, 1.25);

  // mscale / mscale_all_dim, no truncation of the correction range.
  RopeConfig ds;
  ds.type = RopeType::kYarn;
  ds.theta = 1e4;
  ds.factor = 16;
  ds.original_max_position_embeddings = 4096;
  ds.beta_fast = 16;
  ds.beta_slow = 2;
  ds.truncate = false;
  ds.mscale = 1.0;
  ds.mscale_all_dim = 0.5;
  ExpectInvFreq(RopeInverseFrequencies(ds, 64, 65536, &attention), 32,
                {{0, 1.0},
                 {5, 2.371373922e-01},
                 {10, 5.623412877e-02},
                 {20, 2.408111177e-04},
                 {31, 8.334509403e-06}},
                "yarn mscale");
  EXPECT_NEAR(attention, 1.121751143713058, 1e-12);
}

// Phi-3.5-mini's shape (head_dim 96, original 4096, max 131072: factor 32),
// with made-up factors short[i] = 1 + 0.01 i, long[i] = 1 + 0.5 i:
//   longrope(1e4, 96, short, 32, 4096) -> [0, 1, 20, 47]:
//     1.0, 8.172319531e-01, 1.795362309e-02, 8.241683827e-05; attention 1.1902380714238083
//   longrope(1e4, 96, long, 32, 4096)  -> [0, 1, 20, 47]:
//     1.0, 5.502694845e-01, 1.958577195e-03, 4.945010460e-06
//   table(long, 1.1902380714238083, [5000], [0, 20]):
//     (0.18409223854541779, -1.175915241241455), (-1.1105040311813354, -0.42830798029899597)
TEST(RopeTest, LongRopePicksFactorsByTheServedContext) {
  RopeConfig rope;
  rope.type = RopeType::kLongRope;
  rope.theta = 1e4;
  rope.factor = 32;
  rope.original_max_position_embeddings = 4096;
  rope.short_factor = Ramp(48, 0.01);
  rope.long_factor = Ramp(48, 0.5);
  double attention = 0;
  // Up to the original context: the short factors.
  ExpectInvFreq(RopeInverseFrequencies(rope, 96, 4096, &attention), 48,
                {{0, 1.0}, {1, 8.172319531e-01}, {20, 1.795362309e-02}, {47, 8.241683827e-05}},
                "longrope short");
  EXPECT_NEAR(attention, 1.1902380714238083, 1e-12);
  // Beyond it: the long ones (the same attention factor).
  ExpectInvFreq(RopeInverseFrequencies(rope, 96, 4097, &attention), 48,
                {{0, 1.0}, {1, 5.502694845e-01}, {20, 1.958577195e-03}, {47, 4.945010460e-06}},
                "longrope long");
  EXPECT_NEAR(attention, 1.1902380714238083, 1e-12);
  ExpectTables(MakeRopeTables(rope, 96, 5001), 5001, 96,
               {{5000, 0, 0.18409223854541779, -1.175915241241455},
                {5000, 20, -1.1105040311813354, -0.42830798029899597}},
               "longrope tables");
  // factor <= 1: attention 1; a given one as is.
  rope.factor = 1;
  RopeInverseFrequencies(rope, 96, 4096, &attention);
  EXPECT_EQ(attention, 1.0);
  rope.attention_factor = 1.5;
  RopeInverseFrequencies(rope, 96, 4096, &attention);
  EXPECT_EQ(attention, 1.5);
}

// Partial rotary (Phi-4-mini: 0.75 of 128 = 96 dims): the frequencies of a
// 96-dim RoPE (default(1e4, 96) -> [0, 1, 47]: 1.0, 8.254042268e-01,
// 1.211527488e-04), and tables 96 wide.
TEST(RopeTest, PartialRotary) {
  RopeConfig rope;
  rope.theta = 1e4;
  rope.partial_rotary_factor = 0.75;
  double attention = 0;
  ExpectInvFreq(RopeInverseFrequencies(rope, 128, 4096, &attention), 48,
                {{0, 1.0}, {1, 8.254042268e-01}, {47, 1.211527488e-04}}, "partial");
  const RopeTables t = MakeRopeTables(rope, 128, 10);
  ExpectTables(t, 10, 96, {{0, 0, 1.0, 0.0}, {1, 0, 0.5403022766113281, 0.8414710164070129}},
               "partial tables");
}

}  // namespace
}  // namespace streamgen
