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

// The inverse frequencies [rotary_dim / 2] (float32, on the CPU) and, in
// *attention_factor, the factor cos and sin are multiplied by (1 unless yarn /
// longrope). `positions` is the context the engine serves (the tables'
// length): longrope uses its long factors iff it exceeds
// original_max_position_embeddings. transformers switches per forward call
// on the sequence's length, but cached keys must not change rules
// mid-sequence; llama.cpp decides the same way on its n_ctx. Thread-safe.
torch::Tensor RopeInverseFrequencies(const RopeConfig& rope, int head_dim, int64_t positions,
                                     double* attention_factor);

// Tables for positions [0, positions), on the CPU: row p is
// cos/sin(p * inv_freq) * attention_factor, the frequencies twice
// (transformers' rotate-half layout). Thread-safe.
RopeTables MakeRopeTables(const RopeConfig& rope, int head_dim, int64_t positions);

}  // namespace streamgen
