// TEMPORARY stub (the rope branch replaces it).
#include "engine/model/rope.h"
namespace streamgen {
torch::Tensor RopeInverseFrequencies(const RopeConfig& rope, int head_dim, double* attention_factor) {
  *attention_factor = 1.0;
  const int rd = rope.RotaryDim(head_dim);
  auto f32 = torch::TensorOptions().dtype(torch::kFloat32);
  return 1.0 / torch::pow(rope.theta, torch::arange(0, rd, 2, f32) / static_cast<double>(rd));
}
RopeTables MakeRopeTables(const RopeConfig& rope, int head_dim, int64_t positions) {
  double af = 1.0;
  torch::Tensor inv = RopeInverseFrequencies(rope, head_dim, &af);
  torch::Tensor t = torch::arange(positions, torch::TensorOptions().dtype(torch::kFloat32));
  torch::Tensor freqs = torch::outer(t, inv);
  torch::Tensor emb = torch::cat({freqs, freqs}, -1);
  return {emb.cos() * af, emb.sin() * af};
}
}  // namespace streamgen
