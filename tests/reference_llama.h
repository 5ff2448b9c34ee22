// A plain scalar Llama / Mistral forward pass for the tests: loops over
// std::vector<float>, no libtorch, in the style of karpathy/llama2.c run.c.
// It recomputes everything for every call (the test models are tiny) and
// accumulates in double, so it is an independent check of the engine's
// libtorch forward pass.
//
// Conventions (Hugging Face Llama / Mistral):
// - RMSNorm: x * rsqrt(mean(x^2) + eps) * w.
// - Rotary embeddings in the rotate-half layout: for each head, dim i pairs
//   with dim i + head_dim/2; inv_freq[i] = theta^(-2i/head_dim); the angle at
//   position p is p * inv_freq[i].
// - Grouped-query attention: query head h reads kv head h / (heads / kv_heads).
// - Causal softmax attention, scale 1/sqrt(head_dim); with a Mistral
//   sliding_window W, a query at position p sees keys at positions > p - W.
// - SwiGLU MLP: down(silu(gate x) * up x). lm_head is the embedding when tied.
//
// Not thread-safe for mutation; Logits() is const and may run concurrently.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace streamgen {
namespace reference {

// The shape of a model, as the reference needs it.
struct Shape {
  int hidden = 0;          // hidden_size
  int intermediate = 0;    // intermediate_size
  int layers = 0;          // num_hidden_layers
  int heads = 0;           // num_attention_heads
  int kv_heads = 0;        // num_key_value_heads
  int head_dim = 0;        // per-head size (need not be hidden / heads)
  int vocab = 0;           // vocab_size
  double eps = 1e-6;       // rms_norm_eps
  double theta = 10000.0;  // rope_theta
  int sliding_window = 0;  // 0: full causal attention
};

// All weights as float32, row-major, in Hugging Face's [out, in] layout.
struct LayerWeights {
  std::vector<float> attn_norm;  // (hidden)  input_layernorm
  std::vector<float> wq;         // (heads * head_dim, hidden)  q_proj
  std::vector<float> wk;         // (kv_heads * head_dim, hidden)  k_proj
  std::vector<float> wv;         // (kv_heads * head_dim, hidden)  v_proj
  std::vector<float> wo;         // (hidden, heads * head_dim)  o_proj
  std::vector<float> ffn_norm;   // (hidden)  post_attention_layernorm
  std::vector<float> w_gate;     // (intermediate, hidden)  gate_proj
  std::vector<float> w_up;       // (intermediate, hidden)  up_proj
  std::vector<float> w_down;     // (hidden, intermediate)  down_proj
};

struct Weights {
  std::vector<float> embed;          // (vocab, hidden)  embed_tokens
  std::vector<LayerWeights> layers;  // (layers)
  std::vector<float> final_norm;     // (hidden)  model.norm
  std::vector<float> lm_head;        // (vocab, hidden); a copy of embed when tied
};

// ---- the building blocks, exposed for hand-computed unit tests ----

// out[i] = x[i] / sqrt(mean(x^2) + eps) * w[i].
std::vector<float> RmsNorm(const std::vector<float>& x, const std::vector<float>& w, double eps);

// out[r] = sum_c w[r, c] * x[c], w: (rows, x.size()).
std::vector<float> MatVec(const std::vector<float>& w, const std::vector<float>& x, int rows);

// Rotates each of the `n_heads` heads of `v` (n_heads * head_dim values) in
// place for position `pos`, rotate-half layout.
void ApplyRope(std::vector<float>* v, int n_heads, int head_dim, int pos, double theta);

// Attention output for one query position `pos` (all heads concatenated,
// heads * head_dim values), given the query (heads * head_dim) and the keys
// and values of positions [0, pos] (each kv_heads * head_dim).
std::vector<float> Attend(const Shape& shape, const std::vector<float>& q,
                          const std::vector<std::vector<float>>& keys,
                          const std::vector<std::vector<float>>& values, int pos);

// x / (1 + exp(-x)).
double Silu(double x);

}  // namespace reference

class ReferenceLlama {
 public:
  // Reads config.json and the safetensors weights of `dir` (through
  // engine/model/model_config.h and engine/model/safetensors.h), upcast to float32.
  static absl::StatusOr<ReferenceLlama> Load(const std::string& dir);

  // From weights in memory (the hand-computed tests).
  ReferenceLlama(reference::Shape shape, reference::Weights weights);

  const reference::Shape& shape() const { return shape_; }

  // Logits for every position: [tokens.size()][vocab]. Tokens must be in
  // [0, vocab). Full recompute on each call.
  std::vector<std::vector<float>> Logits(const std::vector<int>& tokens) const;

  // Logits of the last position only: [vocab] (skips lm_head elsewhere).
  std::vector<float> LastLogits(const std::vector<int>& tokens) const;

 private:
  // Final hidden states (after the final norm): [tokens.size()][hidden].
  std::vector<std::vector<float>> Hidden(const std::vector<int>& tokens) const;
  // Runs one decoder layer over all positions of `x` in place.
  void RunLayer(const reference::LayerWeights& w, std::vector<std::vector<float>>* x) const;

  reference::Shape shape_;
  reference::Weights weights_;
};

}  // namespace streamgen
