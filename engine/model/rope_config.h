// Reading a checkpoint's RoPE settings from config.json: "rope_theta" +
// "rope_scaling" (transformers v4), or "rope_parameters" (transformers v5),
// with "partial_rotary_factor", and Gemma 3's per-layer-type variants
// ("rope_local_base_freq", or rope_parameters keyed by layer type). Every
// type transformers' modeling_rope_utils.py knows is either read exactly or
// refused naming the key. No torch here.
#pragma once

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "engine/model/model_config.h"
#include "nlohmann/json.hpp"

namespace streamgen {

// Fills config->rope (and config->rope_local when `local_layers` is true: the
// family has sliding layers with a RoPE of their own, Gemma 3) from config.json
// object `obj`. Needs config->head_dim and config->max_position_embeddings
// already read. Errors name `source` and the key. Thread-safe.
absl::Status ReadRopeConfig(const nlohmann::json& obj, const std::string& source,
                            bool local_layers, ModelConfig* config);

}  // namespace streamgen
