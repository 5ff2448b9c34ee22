// Each formula below follows transformers' modeling_rope_utils.py (v5:
// _compute_*_parameters and the rotary embedding's forward), op by op in the
// same dtype (float32 tensors; Python floats for the scalars), so the tables
// round as transformers' do. Two of Python's operators are not what their C++
// spelling would be: `scalar / tensor` is tensor.reciprocal() * scalar
// (torch/_tensor.py __rtruediv__), kept here where the product rounds
// differently from a division (llama3's 2 pi / inv_freq).
#include "engine/model/rope.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

namespace streamgen {

namespace {

const auto kF32 = torch::TensorOptions().dtype(torch::kFloat32);

// arange(0, dim, 2, dtype=int64).float() / dim: [dim / 2], the exponents i / dim.
torch::Tensor Exponents(int dim) {
  return torch::arange(0, dim, 2, torch::TensorOptions().dtype(torch::kInt64)).to(torch::kFloat32) /
         static_cast<double>(dim);
}

// _compute_default_rope_parameters:
// inv_freq = 1.0 / (base ** (arange(0, dim, 2).float() / dim)).
// (torch.pow(Scalar, Tensor) rounds the base to float32 first, in both.)
torch::Tensor DefaultInvFreq(double theta, int dim) {
  return torch::reciprocal(torch::pow(theta, Exponents(dim)));
}

// _compute_llama3_parameters (Llama 3.1): wavelengths shorter than
// original / high_freq_factor keep their frequency, longer than original /
// low_freq_factor are divided by factor, and those between are blended with
// smooth = (original / wavelen - low) / (high - low).
torch::Tensor Llama3InvFreq(const RopeConfig& r, int dim) {
  torch::Tensor inv_freq = DefaultInvFreq(r.theta, dim);
  const double old_context_len = r.original_max_position_embeddings;
  const double low_freq_wavelen = old_context_len / r.low_freq_factor;
  const double high_freq_wavelen = old_context_len / r.high_freq_factor;
  // wavelen = 2 * math.pi / inv_freq
  torch::Tensor wavelen = torch::reciprocal(inv_freq) * (2 * M_PI);
  torch::Tensor inv_freq_llama =
      torch::where(wavelen > low_freq_wavelen, inv_freq / r.factor, inv_freq);
  // smooth_factor = (old_context_len / wavelen - low_freq_factor)
  //                 / (high_freq_factor - low_freq_factor)
  torch::Tensor smooth_factor = (torch::reciprocal(wavelen) * old_context_len - r.low_freq_factor) /
                                (r.high_freq_factor - r.low_freq_factor);
  // (1 - smooth_factor) * inv_freq_llama / factor + smooth_factor * inv_freq_llama
  torch::Tensor smoothed =
      (1.0 - smooth_factor) * inv_freq_llama / r.factor + smooth_factor * inv_freq_llama;
  torch::Tensor is_medium_freq = torch::logical_not(wavelen < high_freq_wavelen) *
                                 torch::logical_not(wavelen > low_freq_wavelen);
  return torch::where(is_medium_freq, smoothed, inv_freq_llama);
}

// yarn's get_mscale: 0.1 * mscale * ln(scale) + 1 above scale 1.
double YarnMscale(double scale, double mscale) {
  return scale <= 1 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
}

// yarn's find_correction_dim: the dimension whose wavelength makes
// num_rotations turns over the original context.
double YarnCorrectionDim(double num_rotations, int dim, double base, double original) {
  return (dim * std::log(original / (num_rotations * 2 * M_PI))) / (2 * std::log(base));
}

// _compute_yarn_parameters (YaRN, arXiv 2309.00071): NTK-by-parts. Dimensions
// below `low` (many turns over the original context) extrapolate (keep
// inv_freq), above `high` interpolate (inv_freq / factor), a linear ramp
// between.
torch::Tensor YarnInvFreq(const RopeConfig& r, int dim, double* attention_factor) {
  const double factor = r.factor;
  if (r.attention_factor) {
    *attention_factor = *r.attention_factor;
  } else if (r.mscale.value_or(0) != 0 && r.mscale_all_dim.value_or(0) != 0) {
    *attention_factor = YarnMscale(factor, *r.mscale) / YarnMscale(factor, *r.mscale_all_dim);
  } else {
    *attention_factor = YarnMscale(factor, 1.0);
  }
  const double original = r.original_max_position_embeddings;
  // find_correction_range
  double low = YarnCorrectionDim(r.beta_fast, dim, r.theta, original);
  double high = YarnCorrectionDim(r.beta_slow, dim, r.theta, original);
  if (r.truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, static_cast<double>(dim - 1));
  // linear_ramp_factor(low, high, dim // 2)
  if (low == high) high += 0.001;  // "Prevent singularity"
  torch::Tensor ramp = torch::clamp((torch::arange(dim / 2, kF32) - low) / (high - low), 0, 1);
  torch::Tensor pos_freqs = torch::pow(r.theta, Exponents(dim));
  torch::Tensor inv_freq_extrapolation = torch::reciprocal(pos_freqs);
  torch::Tensor inv_freq_interpolation = torch::reciprocal(pos_freqs * factor);
  torch::Tensor extrapolation_factor = 1.0 - ramp;
  return inv_freq_interpolation * (1.0 - extrapolation_factor) +
         inv_freq_extrapolation * extrapolation_factor;
}

// _compute_longrope_parameters (Phi-3): inv_freq = 1 / (ext * base ** (i / dim))
// with ext the short or the long factors; attention factor
// sqrt(1 + ln(factor) / ln(original)) unless given.
torch::Tensor LongRopeInvFreq(const RopeConfig& r, int dim, int64_t positions,
                              double* attention_factor) {
  const double original = r.original_max_position_embeddings;
  if (r.attention_factor) {
    *attention_factor = *r.attention_factor;
  } else {
    *attention_factor =
        r.factor <= 1.0 ? 1.0 : std::sqrt(1 + std::log(r.factor) / std::log(original));
  }
  const std::vector<double>& ext =
      positions > r.original_max_position_embeddings ? r.long_factor : r.short_factor;
  TORCH_CHECK(static_cast<int>(ext.size()) == dim / 2, "longrope: ", ext.size(),
              " factors for rotary_dim ", dim);
  // torch.tensor(list of Python floats, dtype=float32): each rounded once.
  torch::Tensor ext_factors =
      torch::tensor(ext, torch::TensorOptions().dtype(torch::kFloat64)).to(torch::kFloat32);
  return torch::reciprocal(ext_factors * torch::pow(r.theta, Exponents(dim)));
}

}  // namespace

torch::Tensor RopeInverseFrequencies(const RopeConfig& rope, int head_dim, int64_t positions,
                                     double* attention_factor) {
  const int dim = rope.RotaryDim(head_dim);
  TORCH_CHECK(dim >= 2 && dim % 2 == 0 && dim <= head_dim, "RoPE: rotary_dim ", dim,
              " must be even, in [2, head_dim ", head_dim, "]");
  *attention_factor = 1.0;
  switch (rope.type) {
    case RopeType::kDefault:
      return DefaultInvFreq(rope.theta, dim);
    case RopeType::kLinear:
      // _compute_linear_scaling_rope_parameters: inv_freq /= factor (the
      // positions divided by factor, applied to the frequencies instead).
      return DefaultInvFreq(rope.theta, dim) / rope.factor;
    case RopeType::kLlama3:
      return Llama3InvFreq(rope, dim);
    case RopeType::kYarn:
      return YarnInvFreq(rope, dim, attention_factor);
    case RopeType::kLongRope:
      return LongRopeInvFreq(rope, dim, positions, attention_factor);
  }
  TORCH_CHECK(false, "RoPE: unknown type");
}

RopeTables MakeRopeTables(const RopeConfig& rope, int head_dim, int64_t positions) {
  double attention_factor = 1.0;
  torch::Tensor inv_freq = RopeInverseFrequencies(rope, head_dim, positions, &attention_factor);
  // The rotary embedding's forward: freqs = inv_freq @ position_ids in
  // float32, an outer product (one rounded product per element).
  torch::Tensor t = torch::arange(positions, torch::TensorOptions().dtype(torch::kInt64))
                        .to(torch::kFloat32);          // [P]
  torch::Tensor freqs = torch::outer(t, inv_freq);     // [P, rotary_dim / 2]
  torch::Tensor emb = torch::cat({freqs, freqs}, -1);  // [P, rotary_dim]
  RopeTables tables;
  tables.cos = emb.cos() * attention_factor;  // [P, rotary_dim]
  tables.sin = emb.sin() * attention_factor;  // [P, rotary_dim]
  return tables;
}

}  // namespace streamgen
