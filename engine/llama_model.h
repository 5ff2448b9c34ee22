// Llama / Mistral forward pass in libtorch (CPU or CUDA). Included only by
// engine .cc files and tests: it pulls in torch.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "absl/status/statusor.h"
#include "engine/model_config.h"

namespace streamgen {

struct ModelOptions {
  torch::Device device = torch::kCPU;
  torch::ScalarType dtype = torch::kFloat32;  // compute dtype (weights are converted at load)
};

// One sequence's keys and values, allocated once with a fixed capacity.
struct KvCache {
  std::vector<torch::Tensor> k;  // per layer: [kv_heads, capacity, head_dim]
  std::vector<torch::Tensor> v;  // per layer: [kv_heads, capacity, head_dim]
  int64_t length = 0;            // positions filled
  int64_t capacity = 0;
};

class LlamaModel {
 public:
  // Loads and validates config.json + *.safetensors in `dir`.
  static absl::StatusOr<std::unique_ptr<LlamaModel>> Load(const std::string& dir,
                                                          const ModelOptions& options);

  ~LlamaModel();

  const ModelConfig& config() const { return config_; }
  const ModelOptions& options() const { return options_; }

  // A cache for up to `capacity` positions (<= max_position_embeddings).
  KvCache NewCache(int64_t capacity) const;

  // Runs `tokens` at positions [cache->length, cache->length + n) and appends
  // their keys/values to the cache. Returns float32 logits on the model's
  // device: [n, vocab] when all_logits, else [1, vocab] for the last position.
  // Not thread-safe (the engine's loop thread owns the model).
  torch::Tensor Forward(const std::vector<int>& tokens, KvCache* cache, bool all_logits = false);

  // One decode step for several sequences: tokens[i] goes to caches[i] at its
  // own position. Returns float32 logits [batch, vocab].
  torch::Tensor DecodeBatch(const std::vector<int>& tokens, const std::vector<KvCache*>& caches);

  // Bytes of weights the decode step reads (everything but the embedding table).
  int64_t DecodeWeightBytes() const;

  struct Layer;

 private:
  LlamaModel(ModelConfig config, ModelOptions options);
  ModelConfig config_;
  ModelOptions options_;
  std::vector<std::unique_ptr<Layer>> layers_;
  torch::Tensor embed_;      // [vocab, hidden]
  torch::Tensor final_norm_; // [hidden]
  torch::Tensor lm_head_;    // [vocab, hidden] (the embedding when tied)
  torch::Tensor cos_;        // [max_positions, head_dim] (HF rotate-half layout), compute dtype
  torch::Tensor sin_;        // [max_positions, head_dim]

  torch::Tensor Linear(const torch::Tensor& x, const torch::Tensor& w) const;
  torch::Tensor RmsNorm(const torch::Tensor& x, const torch::Tensor& w) const;
  torch::Tensor ApplyRope(const torch::Tensor& x, const torch::Tensor& positions) const;
  torch::Tensor Attend(const torch::Tensor& q, KvCache* cache, int layer, int64_t start,
                       int64_t n) const;
  torch::Tensor Logits(const torch::Tensor& h) const;
};

}  // namespace streamgen
