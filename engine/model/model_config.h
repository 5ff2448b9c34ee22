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

struct ModelConfig {
  // "LlamaForCausalLM" or "MistralForCausalLM" (config.json "architectures"[0]).
  std::string architecture;
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_hidden_layers = 0;
  int num_attention_heads = 0;
  int num_key_value_heads = 0;       // default: num_attention_heads
  int head_dim = 0;                  // default: hidden_size / num_attention_heads
  int vocab_size = 0;                // embedding rows (may exceed the tokenizer's pieces)
  int max_position_embeddings = 0;   // the context length
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  bool tie_word_embeddings = false;  // lm_head shares the embedding table
  std::optional<int> sliding_window; // Mistral only; empty: full attention
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
};

// The architectures LoadModelConfig accepts.
extern const char* const kSupportedArchitectures[2];

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
