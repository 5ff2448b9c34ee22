// TEMPORARY stub (the moe branch replaces it).
#include "engine/model/mlp.h"
namespace streamgen {
torch::Tensor ApplyLinear(const torch::Tensor& x, const LinearWeight& w) {
  if (x.device().is_cpu()) return CpuLinear(x, w);
  return torch::mm(x, w.w.t());
}
torch::Tensor GatedActivation(const torch::Tensor& gu, Activation act) {
  if (act == Activation::kSilu && gu.device().is_cpu()) return SiluMul(gu);
  const int64_t i = gu.size(1) / 2;
  torch::Tensor g = gu.narrow(1, 0, i), u = gu.narrow(1, i, i);
  return (act == Activation::kSilu ? torch::silu(g) : torch::gelu(g, "tanh")) * u;
}
torch::Tensor MoeMlp(const torch::Tensor& x, const MoeWeights& w, const MoeConfig& moe,
                     Activation act) {
  torch::Tensor probs = torch::softmax(torch::mm(x, w.router.t()).to(torch::kFloat32), -1);
  auto top = probs.topk(moe.top_k, -1);
  torch::Tensor weights = std::get<0>(top), idx = std::get<1>(top);
  if (moe.norm_topk_prob) weights = weights / weights.sum(-1, true);
  weights = weights.to(x.scalar_type());
  torch::Tensor out = torch::zeros_like(x);
  for (int64_t t = 0; t < x.size(0); ++t) {
    for (int64_t j = 0; j < moe.top_k; ++j) {
      const int64_t e = idx[t][j].item<int64_t>();
      torch::Tensor row = x.narrow(0, t, 1).contiguous();
      torch::Tensor y = ApplyLinear(GatedActivation(ApplyLinear(row, w.gate_up[e]), act), w.down[e]);
      out.narrow(0, t, 1).add_(y * weights[t][j]);
    }
  }
  return out;
}
}  // namespace streamgen
