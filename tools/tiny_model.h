// Writes random-weight Llama / Mistral models in Hugging Face layout: the
// built-in tiny model, the benchmark model, and the small models of the tests.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "engine/model/safetensors.h"

namespace streamgen {

struct TinyModelSpec {
  std::string architecture = "LlamaForCausalLM";  // or "MistralForCausalLM"
  int hidden_size = 64;
  int intermediate_size = 172;
  int num_hidden_layers = 2;
  int num_attention_heads = 4;
  int num_key_value_heads = 2;
  int head_dim = 0;                  // 0: hidden_size / num_attention_heads
  int vocab_size = 0;                // 0: the tokenizer's pieces rounded up to vocab_pad_to
  int vocab_pad_to = 64;             // 1: no padding (used only when vocab_size is 0)
  int max_position_embeddings = 512;
  bool tie_word_embeddings = false;
  std::optional<int> sliding_window; // Mistral only; empty: none (written as null)
  double rope_theta = 10000.0;
  double rms_norm_eps = 1e-5;
  StorageDtype dtype = StorageDtype::kBF16;  // storage dtype of every tensor
  double init_std = 0.02;            // matrices (and embeddings) ~ N(0, init_std)
  double norm_noise_std = 0.05;      // norm weights ~ 1 + N(0, norm_noise_std)
  uint64_t seed = 0;                 // same seed and spec: byte-identical files
  int shards = 1;                    // > 1: model-0000i-of-0000n.safetensors + index
  int tokenizer_vocab_size = 1000;   // when training the tokenizer from the corpus
};

// Writes config.json, generation_config.json, tokenizer_config.json,
// tokenizer.model and the weights into `out_dir` (created if needed; stale
// weight files of the other layout are removed). The tokenizer is copied from
// `tokenizer_model_path` when non-empty, else trained on `corpus_path`.
// Errors name the bad spec field or file. Not thread-safe (tokenizer training).
absl::Status WriteTinyModel(const TinyModelSpec& spec, const std::string& out_dir,
                            const std::string& tokenizer_model_path,
                            const std::string& corpus_path);

}  // namespace streamgen
