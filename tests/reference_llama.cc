#include "tests/reference_llama.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/model/model_config.h"
#include "engine/model/safetensors.h"
#include "common/status.h"

namespace streamgen {
namespace reference {

std::vector<float> RmsNorm(const std::vector<float>& x, const std::vector<float>& w, double eps) {
  double ss = 0.0;
  for (float v : x) ss += static_cast<double>(v) * v;
  const double scale = 1.0 / std::sqrt(ss / static_cast<double>(x.size()) + eps);
  std::vector<float> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = static_cast<float>(x[i] * scale * w[i]);
  return out;
}

std::vector<float> MatVec(const std::vector<float>& w, const std::vector<float>& x, int rows) {
  const size_t cols = x.size();
  std::vector<float> out(rows);
  for (int r = 0; r < rows; ++r) {
    const float* row = w.data() + static_cast<size_t>(r) * cols;
    double acc = 0.0;
    for (size_t c = 0; c < cols; ++c) acc += static_cast<double>(row[c]) * x[c];
    out[r] = static_cast<float>(acc);
  }
  return out;
}

void ApplyRope(std::vector<float>* v, int n_heads, int head_dim, int pos, double theta) {
  const int half = head_dim / 2;
  for (int h = 0; h < n_heads; ++h) {
    float* head = v->data() + static_cast<size_t>(h) * head_dim;
    for (int i = 0; i < half; ++i) {
      const double inv_freq = std::pow(theta, -2.0 * i / head_dim);
      const double angle = pos * inv_freq;
      const double c = std::cos(angle), s = std::sin(angle);
      const double a = head[i], b = head[i + half];
      // rotate_half(x) = [-x2, x1]; out = x * cos + rotate_half(x) * sin.
      head[i] = static_cast<float>(a * c - b * s);
      head[i + half] = static_cast<float>(b * c + a * s);
    }
  }
}

std::vector<float> Attend(const Shape& shape, const std::vector<float>& q,
                          const std::vector<std::vector<float>>& keys,
                          const std::vector<std::vector<float>>& values, int pos) {
  const int hd = shape.head_dim;
  const int group = shape.heads / shape.kv_heads;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  // Keys at positions > pos - sliding_window are visible (all when 0).
  const int first = shape.sliding_window > 0 ? std::max(0, pos - shape.sliding_window + 1) : 0;
  std::vector<float> out(static_cast<size_t>(shape.heads) * hd, 0.0f);
  std::vector<double> att(pos + 1);
  for (int h = 0; h < shape.heads; ++h) {
    const float* qh = q.data() + static_cast<size_t>(h) * hd;
    const size_t kv_offset = static_cast<size_t>(h / group) * hd;
    double max_score = -INFINITY;
    for (int t = first; t <= pos; ++t) {
      double dot = 0.0;
      for (int i = 0; i < hd; ++i) dot += static_cast<double>(qh[i]) * keys[t][kv_offset + i];
      att[t] = dot * scale;
      max_score = std::max(max_score, att[t]);
    }
    double sum = 0.0;
    for (int t = first; t <= pos; ++t) {
      att[t] = std::exp(att[t] - max_score);
      sum += att[t];
    }
    for (int i = 0; i < hd; ++i) {
      double acc = 0.0;
      for (int t = first; t <= pos; ++t) acc += att[t] / sum * values[t][kv_offset + i];
      out[static_cast<size_t>(h) * hd + i] = static_cast<float>(acc);
    }
  }
  return out;
}

double Silu(double x) { return x / (1.0 + std::exp(-x)); }

namespace {

// Reads tensor `name` with exactly `shape` into `out` as float32.
absl::Status ReadTensor(const WeightStore& store, const std::string& name,
                        const std::vector<int64_t>& shape, std::vector<float>* out) {
  const TensorView* view = store.Find(name);
  if (view == nullptr) {
    return absl::NotFoundError(absl::StrCat("reference: ", store.dir(), ": missing tensor ", name));
  }
  if (view->shape != shape) {
    return absl::InvalidArgumentError(absl::StrCat("reference: tensor ", name, " has shape ",
                                                   ShapeString(view->shape), ", expected ",
                                                   ShapeString(shape)));
  }
  out->resize(view->numel());
  ToFloat32(*view, out->data());
  return absl::OkStatus();
}

absl::Status ReadLayer(const WeightStore& store, const Shape& s, int index, LayerWeights* w) {
  const std::string p = absl::StrCat("model.layers.", index, ".");
  const int64_t q = static_cast<int64_t>(s.heads) * s.head_dim;
  const int64_t kv = static_cast<int64_t>(s.kv_heads) * s.head_dim;
  SG_RETURN_IF_ERROR(ReadTensor(store, p + "input_layernorm.weight", {s.hidden}, &w->attn_norm));
  SG_RETURN_IF_ERROR(ReadTensor(store, p + "self_attn.q_proj.weight", {q, s.hidden}, &w->wq));
  SG_RETURN_IF_ERROR(ReadTensor(store, p + "self_attn.k_proj.weight", {kv, s.hidden}, &w->wk));
  SG_RETURN_IF_ERROR(ReadTensor(store, p + "self_attn.v_proj.weight", {kv, s.hidden}, &w->wv));
  SG_RETURN_IF_ERROR(ReadTensor(store, p + "self_attn.o_proj.weight", {s.hidden, q}, &w->wo));
  SG_RETURN_IF_ERROR(
      ReadTensor(store, p + "post_attention_layernorm.weight", {s.hidden}, &w->ffn_norm));
  SG_RETURN_IF_ERROR(
      ReadTensor(store, p + "mlp.gate_proj.weight", {s.intermediate, s.hidden}, &w->w_gate));
  SG_RETURN_IF_ERROR(
      ReadTensor(store, p + "mlp.up_proj.weight", {s.intermediate, s.hidden}, &w->w_up));
  SG_RETURN_IF_ERROR(
      ReadTensor(store, p + "mlp.down_proj.weight", {s.hidden, s.intermediate}, &w->w_down));
  return absl::OkStatus();
}

}  // namespace
}  // namespace reference

absl::StatusOr<ReferenceLlama> ReferenceLlama::Load(const std::string& dir) {
  SG_ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(dir));
  reference::Shape s;
  s.hidden = config.hidden_size;
  s.intermediate = config.intermediate_size;
  s.layers = config.num_hidden_layers;
  s.heads = config.num_attention_heads;
  s.kv_heads = config.num_key_value_heads;
  s.head_dim = config.head_dim;
  s.vocab = config.vocab_size;
  s.eps = config.rms_norm_eps;
  s.theta = config.rope.theta;
  s.sliding_window = config.sliding_window.value_or(0);
  if (s.heads <= 0 || s.kv_heads <= 0 || s.heads % s.kv_heads != 0 || s.head_dim % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("reference: ", dir, ": unsupported heads/kv_heads/head_dim"));
  }

  SG_ASSIGN_OR_RETURN(std::unique_ptr<WeightStore> store, WeightStore::OpenDir(dir));
  reference::Weights w;
  SG_RETURN_IF_ERROR(
      reference::ReadTensor(*store, "model.embed_tokens.weight", {s.vocab, s.hidden}, &w.embed));
  w.layers.resize(s.layers);
  for (int l = 0; l < s.layers; ++l) {
    SG_RETURN_IF_ERROR(reference::ReadLayer(*store, s, l, &w.layers[l]));
  }
  SG_RETURN_IF_ERROR(reference::ReadTensor(*store, "model.norm.weight", {s.hidden}, &w.final_norm));
  if (config.tie_word_embeddings) {
    w.lm_head = w.embed;
  } else {
    SG_RETURN_IF_ERROR(
        reference::ReadTensor(*store, "lm_head.weight", {s.vocab, s.hidden}, &w.lm_head));
  }
  return ReferenceLlama(s, std::move(w));
}

ReferenceLlama::ReferenceLlama(reference::Shape shape, reference::Weights weights)
    : shape_(shape), weights_(std::move(weights)) {}

void ReferenceLlama::RunLayer(const reference::LayerWeights& w,
                              std::vector<std::vector<float>>* x) const {
  const reference::Shape& s = shape_;
  const int n = static_cast<int>(x->size());
  const int q_rows = s.heads * s.head_dim;
  const int kv_rows = s.kv_heads * s.head_dim;

  // Attention: keys and values of all positions first, then each query.
  std::vector<std::vector<float>> queries(n), keys(n), values(n);
  for (int p = 0; p < n; ++p) {
    const std::vector<float> xn = reference::RmsNorm((*x)[p], w.attn_norm, s.eps);
    queries[p] = reference::MatVec(w.wq, xn, q_rows);
    keys[p] = reference::MatVec(w.wk, xn, kv_rows);
    values[p] = reference::MatVec(w.wv, xn, kv_rows);
    reference::ApplyRope(&queries[p], s.heads, s.head_dim, p, s.theta);
    reference::ApplyRope(&keys[p], s.kv_heads, s.head_dim, p, s.theta);
  }
  for (int p = 0; p < n; ++p) {
    const std::vector<float> att = reference::Attend(s, queries[p], keys, values, p);
    const std::vector<float> o = reference::MatVec(w.wo, att, s.hidden);
    for (int i = 0; i < s.hidden; ++i) (*x)[p][i] += o[i];
  }

  // SwiGLU MLP.
  for (int p = 0; p < n; ++p) {
    const std::vector<float> xn = reference::RmsNorm((*x)[p], w.ffn_norm, s.eps);
    const std::vector<float> gate = reference::MatVec(w.w_gate, xn, s.intermediate);
    const std::vector<float> up = reference::MatVec(w.w_up, xn, s.intermediate);
    std::vector<float> act(s.intermediate);
    for (int i = 0; i < s.intermediate; ++i) {
      act[i] = static_cast<float>(reference::Silu(gate[i]) * up[i]);
    }
    const std::vector<float> down = reference::MatVec(w.w_down, act, s.hidden);
    for (int i = 0; i < s.hidden; ++i) (*x)[p][i] += down[i];
  }
}

std::vector<std::vector<float>> ReferenceLlama::Hidden(const std::vector<int>& tokens) const {
  const int hidden = shape_.hidden;
  std::vector<std::vector<float>> x(tokens.size());
  for (size_t p = 0; p < tokens.size(); ++p) {
    const float* row = weights_.embed.data() + static_cast<size_t>(tokens[p]) * hidden;
    x[p].assign(row, row + hidden);
  }
  for (const reference::LayerWeights& layer : weights_.layers) RunLayer(layer, &x);
  for (std::vector<float>& h : x) h = reference::RmsNorm(h, weights_.final_norm, shape_.eps);
  return x;
}

std::vector<std::vector<float>> ReferenceLlama::Logits(const std::vector<int>& tokens) const {
  std::vector<std::vector<float>> logits;
  for (const std::vector<float>& h : Hidden(tokens)) {
    logits.push_back(reference::MatVec(weights_.lm_head, h, shape_.vocab));
  }
  return logits;
}

std::vector<float> ReferenceLlama::LastLogits(const std::vector<int>& tokens) const {
  return reference::MatVec(weights_.lm_head, Hidden(tokens).back(), shape_.vocab);
}

}  // namespace streamgen
