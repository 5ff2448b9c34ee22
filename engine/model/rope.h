// Rotary tables from a RopeConfig (model_config.h), as transformers'
// modeling_rope_utils.py computes them: inv_freq per type (default, linear,
// llama3, yarn, longrope), cos/sin of position * inv_freq in float32, times
// the type's attention factor (yarn, longrope).
// Included only by engine .cc files and tests: it pulls in torch.
#pragma once

#include <cstdint>

// Not torch/torch.h: see engine/model/llama_model.h.
#include <torch/types.h>

#include "engine/model/model_config.h"

namespace streamgen {

struct RopeTables {
  torch::Tensor cos;  // [positions, rotary_dim] float32, rotate-half layout (freqs twice)
  torch::Tensor sin;  // [positions, rotary_dim] float32
};

// The inverse frequencies [rotary_dim / 2] (float32) and, in *attention_factor,
// the factor cos and sin are multiplied by (1 unless yarn / longrope).
torch::Tensor RopeInverseFrequencies(const RopeConfig& rope, int head_dim, double* attention_factor);

// Tables for positions [0, positions). Thread-safe.
RopeTables MakeRopeTables(const RopeConfig& rope, int head_dim, int64_t positions);

}  // namespace streamgen
