// The model's shape and token conventions, read from a Hugging Face model
// directory (config.json, generation_config.json, tokenizer_config.json), and
// the check that a WeightStore holds exactly the tensors that shape calls for.
// No torch here.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/model/safetensors.h"

namespace streamgen {

// generation_config.json's sampling defaults, as Hugging Face's generate()
// and vLLM's --generation-config auto read them. Each is empty when the file
// does not say (or says null). Applied to the fields a request leaves unset
// (ApplyGenerationDefaults in engine/request.h).
struct GenerationDefaults {
  std::optional<bool> do_sample;           // false or absent: greedy (temperature 0)
  std::optional<float> temperature;        // >= 0; used only with do_sample true
  std::optional<float> top_p;              // (0, 1]
  std::optional<int> top_k;                // >= 0 (0: off)
  std::optional<float> min_p;              // [0, 1)
  std::optional<float> repetition_penalty; // (0, 10]
  std::optional<int> max_new_tokens;       // >= 1
  bool empty() const {
    return !do_sample && !temperature && !top_p && !top_k && !min_p && !repetition_penalty &&
           !max_new_tokens;
  }
};

// How the model turns positions into rotary angles (transformers'
// modeling_rope_utils.py; config.json "rope_scaling" + "rope_theta", or
// transformers v5's "rope_parameters"). Read by MakeRopeTables (rope.h).
enum class RopeType {
  kDefault,   // inv_freq = theta^(-2i/rotary_dim)
  kLinear,    // positions divided by factor
  kLlama3,    // Llama 3.1: low/high frequency bands scaled by factor, smooth between
  kYarn,      // YaRN: NTK-by-parts interpolation + attention factor
  kLongRope,  // Phi-3: per-frequency short/long factors + attention factor
};

struct RopeConfig {
  RopeType type = RopeType::kDefault;
  double theta = 10000.0;                // rope_theta
  double partial_rotary_factor = 1.0;    // rotary_dim = head_dim * this (Phi-3, Phi-4 mini)
  double factor = 1.0;                   // linear, llama3, yarn, longrope's context ratio
  int original_max_position_embeddings = 0;  // llama3, yarn, longrope (0: not given)
  double low_freq_factor = 1.0;          // llama3
  double high_freq_factor = 4.0;         // llama3
  double beta_fast = 32.0;               // yarn
  double beta_slow = 1.0;                // yarn
  std::optional<double> attention_factor;  // yarn, longrope (empty: the type's default formula)
  std::optional<double> mscale;          // yarn (DeepSeek spelling)
  std::optional<double> mscale_all_dim;  // yarn
  bool truncate = true;                  // yarn
  std::vector<double> short_factor;      // longrope: rotary_dim / 2 values
  std::vector<double> long_factor;       // longrope: rotary_dim / 2 values

  int RotaryDim(int head_dim) const {
    return static_cast<int>(head_dim * partial_rotary_factor);
  }
};

// The normalisation of every RMSNorm weight: x * w (Llama) or x * (1 + w) (Gemma).
enum class NormStyle { kWeight, kOnePlusWeight };
// The MLP's activation of gate (times up): silu or GELU with the tanh approximation.
enum class Activation { kSilu, kGeluTanh };

// A sparse mixture-of-experts MLP (Mixtral, Qwen 3 MoE): a router picks
// `top_k` of `num_experts` expert MLPs per token; softmax over all experts in
// float32, then top-k; weights renormalised to sum 1 when `norm_topk_prob`.
struct MoeConfig {
  int num_experts = 0;            // 0: dense MLP everywhere
  int top_k = 0;                  // num_experts_per_tok
  int expert_intermediate_size = 0;  // each expert's gate/up rows
  bool norm_topk_prob = true;     // Mixtral always; Qwen 3 MoE per config
  // Checkpoint names: model.layers.N.<block>.gate.weight (the router) and
  // model.layers.N.<block>.experts.E.<gate|up|down>.weight.
  std::string block = "mlp";      // Mixtral: "block_sparse_moe"
  std::string gate = "gate_proj"; // Mixtral: "w1"
  std::string up = "up_proj";     // Mixtral: "w3"
  std::string down = "down_proj"; // Mixtral: "w2"
};

struct ModelConfig {
  // config.json "architectures"[0]: one of kSupportedArchitectures.
  std::string architecture;
  // The family's description, derived from the architecture and config.json:
  // how the forward pass differs from Llama's (one forward pass reads these).
  bool attention_qkv_bias = false;  // q_proj, k_proj, v_proj carry biases (Qwen 2; Llama attention_bias)
  bool attention_o_bias = false;    // o_proj carries a bias (Llama attention_bias)
  bool mlp_bias = false;            // gate/up/down carry biases (Llama mlp_bias)
  bool qk_norm = false;             // per-head RMSNorm of q and k before RoPE (Qwen 3, Gemma 3)
  bool sandwich_norms = false;      // Gemma 3: norms after attention and MLP too (four per layer)
  bool fused_checkpoint = false;    // Phi-3: qkv_proj and gate_up_proj stored fused
  NormStyle norm_style = NormStyle::kWeight;
  Activation activation = Activation::kSilu;
  double embedding_scale = 1.0;     // Gemma: sqrt(hidden_size) (rounded to the compute dtype)
  double attention_scale = 0.0;     // softmax scale; 0: 1/sqrt(head_dim) (Gemma: query_pre_attn_scalar^-0.5)
  double final_logit_softcapping = 0.0;  // > 0: logits = c * tanh(logits / c) (Gemma)
  double attn_logit_softcapping = 0.0;   // > 0: scores = c * tanh(scores / c) (Gemma 2 style; refused if set)
  RopeConfig rope;                  // global (full-attention) layers' RoPE
  std::optional<RopeConfig> rope_local;  // Gemma 3's sliding layers (rope_local_base_freq)
  // Per layer: the attention window in positions (0: full attention). Empty
  // or all zero: every layer attends to every earlier position.
  std::vector<int> layer_window;
  MoeConfig moe;
  // Per layer: true where the MLP is the sparse MoE block (empty: none).
  std::vector<bool> moe_layers;

  int hidden_size = 0;
  int intermediate_size = 0;
  int num_hidden_layers = 0;
  int num_attention_heads = 0;
  int num_key_value_heads = 0;       // default: num_attention_heads
  int head_dim = 0;                  // default: hidden_size / num_attention_heads
  int vocab_size = 0;                // embedding rows (may exceed the tokenizer's pieces)
  int max_position_embeddings = 0;   // the context length
  double rms_norm_eps = 1e-6;
  bool tie_word_embeddings = false;  // lm_head shares the embedding table
  std::optional<int> sliding_window; // the largest layer window (layer_window); empty: none
  int bos_token_id = 1;
  // config.json's eos_token_id (int or list), extended by generation_config.json's.
  // Default {2} when neither says.
  std::vector<int> eos_token_ids;
  std::string torch_dtype;           // storage dtype as written ("bfloat16"); informational
  bool add_bos = true;               // tokenizer_config.json add_bos_token
  bool add_eos = false;              // tokenizer_config.json add_eos_token
  std::string chat_template;         // tokenizer_config.json chat_template ("" if none)
  GenerationDefaults generation;     // generation_config.json's sampling defaults

  // Derived sizes.
  int q_size() const { return num_attention_heads * head_dim; }
  int kv_size() const { return num_key_value_heads * head_dim; }
  int LayerWindow(int layer) const {
    return layer < static_cast<int>(layer_window.size()) ? layer_window[layer] : 0;
  }
  bool IsMoeLayer(int layer) const {
    return layer < static_cast<int>(moe_layers.size()) && moe_layers[layer];
  }
  double AttentionScale() const;  // attention_scale, or 1/sqrt(head_dim)
};

// The architectures LoadModelConfig accepts.
extern const char* const kSupportedArchitectures[8];

// Reads `dir`/config.json (required) and, when present, generation_config.json
// and tokenizer_config.json. Errors name the file and the field. Thread-safe.
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& dir);

// Parses config.json text alone (no generation/tokenizer config). `source` is
// used in error messages. Thread-safe.
absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& json_text,
                                             const std::string& source);

// One expected weight: Hugging Face name and shape.
struct ExpectedTensor {
  std::string name;
  std::vector<int64_t> shape;
};

// The exact list of tensors `config` calls for (lm_head.weight omitted when tied).
std::vector<ExpectedTensor> ExpectedTensors(const ModelConfig& config);

// Checks that `weights` holds exactly ExpectedTensors(config) with those
// shapes (a tied checkpoint may also carry lm_head.weight; stale
// rotary_emb.inv_freq buffers are ignored). Errors name the tensor, the
// expected and the actual shape, and the file. Thread-safe.
absl::Status ValidateWeights(const ModelConfig& config, const WeightStore& weights);

}  // namespace streamgen
