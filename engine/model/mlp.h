// TEMPORARY stub (the moe branch replaces it).
#pragma once
#include <vector>
#include <torch/types.h>
#include "engine/model/cpu_kernels.h"
#include "engine/model/model_config.h"
namespace streamgen {
torch::Tensor ApplyLinear(const torch::Tensor& x, const LinearWeight& w);
torch::Tensor GatedActivation(const torch::Tensor& gu, Activation act);
struct MoeWeights {
  torch::Tensor router;
  std::vector<LinearWeight> gate_up;
  std::vector<LinearWeight> down;
};
torch::Tensor MoeMlp(const torch::Tensor& x, const MoeWeights& w, const MoeConfig& moe,
                     Activation act);
}  // namespace streamgen
