// Llama / Mistral forward pass over a per-sequence KV cache.
//
// Notation: n = tokens in this call, H = attention heads, KV = key/value heads,
// G = H / KV (queries per key/value head), D = head_dim, L = cached positions.
#include "engine/llama_model.h"

#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/safetensors.h"
#include "engine/status.h"

namespace streamgen {

struct LlamaModel::Layer {
  torch::Tensor attn_norm;  // [hidden]
  torch::Tensor wqkv;       // [(H + 2 KV) * D, hidden]: q_proj, k_proj, v_proj stacked
  torch::Tensor wo;         // [hidden, H * D]
  torch::Tensor mlp_norm;   // [hidden]
  torch::Tensor w_gate_up;  // [2 * intermediate, hidden]: gate_proj, up_proj stacked
  torch::Tensor w_down;     // [hidden, intermediate]
};

namespace {

torch::ScalarType TorchDtype(StorageDtype dtype) {
  switch (dtype) {
    case StorageDtype::kF32:
      return torch::kFloat32;
    case StorageDtype::kF16:
      return torch::kFloat16;
    case StorageDtype::kBF16:
      return torch::kBFloat16;
  }
  return torch::kFloat32;
}

// Copies a stored tensor into a new tensor of the compute dtype on `device`
// (never aliasing the memory map).
torch::Tensor ToTorch(const TensorView& view, const ModelOptions& options) {
  auto stored = torch::from_blob(const_cast<void*>(view.data), view.shape,
                                 torch::TensorOptions().dtype(TorchDtype(view.dtype)));
  // F16 storage on CPU is upcast in float32 first: libtorch 1.13 has few Half CPU kernels.
  // copy=true: with F32 storage and float32 compute .to() would otherwise return
  // the memory-mapped tensor itself, which dies with the map when Load returns.
  torch::Tensor t = stored.to(torch::kFloat32, /*non_blocking=*/false, /*copy=*/true);
  return t.to(options.dtype).to(options.device).contiguous();
}

}  // namespace

LlamaModel::LlamaModel(ModelConfig config, ModelOptions options)
    : config_(std::move(config)), options_(options) {}
LlamaModel::~LlamaModel() = default;

absl::StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::Load(const std::string& dir,
                                                             const ModelOptions& options) {
  if (options.device.is_cpu() && options.dtype == torch::kFloat16) {
    return absl::InvalidArgumentError(
        "dtype float16 is not supported on CPU (libtorch has no float16 CPU kernels): use "
        "float32 or bfloat16");
  }
  SG_ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(dir));
  SG_ASSIGN_OR_RETURN(auto store, WeightStore::OpenDir(dir));
  SG_RETURN_IF_ERROR(ValidateWeights(config, *store));

  std::unique_ptr<LlamaModel> model(new LlamaModel(config, options));
  c10::InferenceMode guard;
  try {
    auto get = [&](const std::string& name) { return ToTorch(*store->Find(name), options); };
    model->embed_ = get("model.embed_tokens.weight");
    model->final_norm_ = get("model.norm.weight");
    model->lm_head_ = config.tie_word_embeddings ? model->embed_ : get("lm_head.weight");
    for (int i = 0; i < config.num_hidden_layers; ++i) {
      const std::string p = absl::StrCat("model.layers.", i, ".");
      auto layer = std::make_unique<Layer>();
      layer->attn_norm = get(p + "input_layernorm.weight");
      layer->wqkv = torch::cat({get(p + "self_attn.q_proj.weight"),
                                get(p + "self_attn.k_proj.weight"),
                                get(p + "self_attn.v_proj.weight")},
                               0)
                        .contiguous();
      layer->wo = get(p + "self_attn.o_proj.weight");
      layer->mlp_norm = get(p + "post_attention_layernorm.weight");
      layer->w_gate_up =
          torch::cat({get(p + "mlp.gate_proj.weight"), get(p + "mlp.up_proj.weight")}, 0)
              .contiguous();
      layer->w_down = get(p + "mlp.down_proj.weight");
      model->layers_.push_back(std::move(layer));
    }
    // Rotary tables, computed in float32 as Hugging Face does, then cast.
    const int64_t d = config.head_dim;
    auto f32 = torch::TensorOptions().dtype(torch::kFloat32);
    torch::Tensor inv_freq =
        1.0 / torch::pow(config.rope_theta, torch::arange(0, d, 2, f32) / static_cast<double>(d));
    torch::Tensor t = torch::arange(config.max_position_embeddings, f32);
    torch::Tensor freqs = torch::outer(t, inv_freq);     // [P, D/2]
    torch::Tensor emb = torch::cat({freqs, freqs}, -1);  // [P, D]
    model->cos_ = emb.cos().to(options.dtype).to(options.device);
    model->sin_ = emb.sin().to(options.dtype).to(options.device);
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("loading ", dir, ": ", e.what_without_backtrace()));
  }
  return model;
}

KvCache LlamaModel::NewCache(int64_t capacity) const {
  KvCache cache;
  cache.capacity = capacity;
  auto opts = torch::TensorOptions().dtype(options_.dtype).device(options_.device);
  for (int i = 0; i < config_.num_hidden_layers; ++i) {
    cache.k.push_back(
        torch::zeros({config_.num_key_value_heads, capacity, config_.head_dim}, opts));
    cache.v.push_back(
        torch::zeros({config_.num_key_value_heads, capacity, config_.head_dim}, opts));
  }
  return cache;
}

int64_t LlamaModel::DecodeWeightBytes() const {
  int64_t bytes = final_norm_.nbytes() + lm_head_.nbytes();
  for (const auto& l : layers_) {
    bytes += l->attn_norm.nbytes() + l->wqkv.nbytes() + l->wo.nbytes() + l->mlp_norm.nbytes() +
             l->w_gate_up.nbytes() + l->w_down.nbytes();
  }
  return bytes;
}

// x: [n, in], w: [out, in] -> [n, out]. One row goes through matrix-vector
// (on this CPU float32 mv reads weights ~2.5x faster than a 1-row GEMM).
torch::Tensor LlamaModel::Linear(const torch::Tensor& x, const torch::Tensor& w) const {
  if (x.size(0) == 1 && x.device().is_cpu()) return torch::mv(w, x[0]).unsqueeze(0);
  return torch::matmul(x, w.t());
}

// x: [n, hidden]; statistics in float32 as Hugging Face's LlamaRMSNorm does.
torch::Tensor LlamaModel::RmsNorm(const torch::Tensor& x, const torch::Tensor& w) const {
  torch::Tensor xf = x.to(torch::kFloat32);
  torch::Tensor normed = xf * torch::rsqrt(xf.pow(2).mean(-1, true) + config_.rms_norm_eps);
  return w * normed.to(x.scalar_type());
}

// x: [n, heads, D]; positions: [n] int64 -> rotated x (rotate-half layout).
torch::Tensor LlamaModel::ApplyRope(const torch::Tensor& x, const torch::Tensor& positions) const {
  const int64_t half = config_.head_dim / 2;
  torch::Tensor cos = cos_.index_select(0, positions).unsqueeze(1);  // [n, 1, D]
  torch::Tensor sin = sin_.index_select(0, positions).unsqueeze(1);  // [n, 1, D]
  torch::Tensor x1 = x.narrow(-1, 0, half);
  torch::Tensor x2 = x.narrow(-1, half, half);
  torch::Tensor rotated = torch::cat({-x2, x1}, -1);
  return x * cos + rotated * sin;
}

// q: [n, H, D] for positions [start, start + n), whose keys/values are already
// in the cache. Returns [n, H * D].
torch::Tensor LlamaModel::Attend(const torch::Tensor& q, KvCache* cache, int layer, int64_t start,
                                 int64_t n) const {
  const int64_t heads = config_.num_attention_heads;
  const int64_t kv = config_.num_key_value_heads;
  const int64_t g = heads / kv;
  const int64_t d = config_.head_dim;
  const int64_t total = start + n;
  // With a sliding window only the last `window` keys of the newest query matter.
  int64_t first = 0;
  if (config_.sliding_window && *config_.sliding_window > 0) {
    first = std::max<int64_t>(0, start - *config_.sliding_window + 1);
  }
  const int64_t len = total - first;
  torch::Tensor k = cache->k[layer].narrow(1, first, len);  // [KV, len, D]
  torch::Tensor v = cache->v[layer].narrow(1, first, len);  // [KV, len, D]
  // [n, H, D] -> [KV, G * n, D], query heads grouped by their key/value head.
  torch::Tensor qg = q.view({n, kv, g, d}).permute({1, 2, 0, 3}).reshape({kv, g * n, d});
  torch::Tensor scores =
      torch::bmm(qg, k.transpose(1, 2)).mul_(1.0 / std::sqrt(static_cast<double>(d)));
  // scores: [KV, G * n, len]
  if (n > 1 || first > 0) {
    // Query i (position start + i) sees key j (position first + j) when
    // j <= start + i - first and, with a window W, start + i - (first + j) < W.
    auto idx = torch::TensorOptions().dtype(torch::kInt64).device(q.device());
    torch::Tensor qpos = torch::arange(start, total, idx).unsqueeze(1);  // [n, 1]
    torch::Tensor kpos = torch::arange(first, total, idx).unsqueeze(0);  // [1, len]
    torch::Tensor masked = kpos > qpos;                                   // [n, len]
    if (config_.sliding_window && *config_.sliding_window > 0) {
      masked = masked.logical_or(qpos - kpos >= *config_.sliding_window);
    }
    scores = scores.view({kv, g, n, len})
                 .masked_fill(masked, -std::numeric_limits<float>::infinity())
                 .view({kv, g * n, len});
  }
  torch::Tensor probs = torch::softmax(scores.to(torch::kFloat32), -1).to(v.scalar_type());
  torch::Tensor out = torch::bmm(probs, v);  // [KV, G * n, D]
  return out.view({kv, g, n, d}).permute({2, 0, 1, 3}).reshape({n, heads * d});
}

// h: [n, hidden] -> float32 logits [n, vocab].
torch::Tensor LlamaModel::Logits(const torch::Tensor& h) const {
  return Linear(RmsNorm(h, final_norm_), lm_head_).to(torch::kFloat32);
}

torch::Tensor LlamaModel::Forward(const std::vector<int>& tokens, KvCache* cache,
                                  bool all_logits) {
  c10::InferenceMode guard;
  const int64_t n = static_cast<int64_t>(tokens.size());
  const int64_t start = cache->length;
  TORCH_CHECK(n > 0 && start + n <= cache->capacity, "KV cache overflow: ", start, " + ", n,
              " > ", cache->capacity);
  const int64_t heads = config_.num_attention_heads;
  const int64_t kv = config_.num_key_value_heads;
  const int64_t d = config_.head_dim;
  auto idx = torch::TensorOptions().dtype(torch::kInt64);
  torch::Tensor ids =
      torch::tensor(std::vector<int64_t>(tokens.begin(), tokens.end()), idx).to(options_.device);
  torch::Tensor positions = torch::arange(start, start + n, idx.device(options_.device));
  torch::Tensor h = embed_.index_select(0, ids);  // [n, hidden]
  for (size_t l = 0; l < layers_.size(); ++l) {
    const Layer& layer = *layers_[l];
    torch::Tensor qkv = Linear(RmsNorm(h, layer.attn_norm), layer.wqkv);  // [n, (H + 2KV) D]
    torch::Tensor q = qkv.narrow(1, 0, heads * d).view({n, heads, d});
    torch::Tensor k = qkv.narrow(1, heads * d, kv * d).view({n, kv, d});
    torch::Tensor v = qkv.narrow(1, (heads + kv) * d, kv * d).view({n, kv, d});
    q = ApplyRope(q, positions);
    k = ApplyRope(k, positions);
    cache->k[l].narrow(1, start, n).copy_(k.transpose(0, 1));
    cache->v[l].narrow(1, start, n).copy_(v.transpose(0, 1));
    h = h + Linear(Attend(q, cache, static_cast<int>(l), start, n), layer.wo);
    torch::Tensor gu = Linear(RmsNorm(h, layer.mlp_norm), layer.w_gate_up);  // [n, 2I]
    const int64_t inter = config_.intermediate_size;
    h = h + Linear(torch::silu(gu.narrow(1, 0, inter)) * gu.narrow(1, inter, inter),
                   layer.w_down);
  }
  cache->length = start + n;
  if (!all_logits) h = h.narrow(0, n - 1, 1);
  return Logits(h);
}

torch::Tensor LlamaModel::DecodeBatch(const std::vector<int>& tokens,
                                      const std::vector<KvCache*>& caches) {
  c10::InferenceMode guard;
  const int64_t b = static_cast<int64_t>(tokens.size());
  TORCH_CHECK(b > 0 && caches.size() == tokens.size(), "DecodeBatch: bad batch");
  if (b == 1) return Forward(tokens, caches[0]);
  const int64_t heads = config_.num_attention_heads;
  const int64_t kv = config_.num_key_value_heads;
  const int64_t d = config_.head_dim;
  std::vector<int64_t> pos(b);
  for (int64_t i = 0; i < b; ++i) {
    TORCH_CHECK(caches[i]->length < caches[i]->capacity, "KV cache overflow in DecodeBatch");
    pos[i] = caches[i]->length;
  }
  auto idx = torch::TensorOptions().dtype(torch::kInt64);
  torch::Tensor ids =
      torch::tensor(std::vector<int64_t>(tokens.begin(), tokens.end()), idx).to(options_.device);
  torch::Tensor positions = torch::tensor(pos, idx).to(options_.device);
  torch::Tensor h = embed_.index_select(0, ids);  // [B, hidden]
  for (size_t l = 0; l < layers_.size(); ++l) {
    const Layer& layer = *layers_[l];
    torch::Tensor qkv = Linear(RmsNorm(h, layer.attn_norm), layer.wqkv);  // [B, (H + 2KV) D]
    torch::Tensor q = ApplyRope(qkv.narrow(1, 0, heads * d).view({b, heads, d}), positions);
    torch::Tensor k = ApplyRope(qkv.narrow(1, heads * d, kv * d).view({b, kv, d}), positions);
    torch::Tensor v = qkv.narrow(1, (heads + kv) * d, kv * d).view({b, kv, d});
    std::vector<torch::Tensor> outs;
    outs.reserve(b);
    for (int64_t i = 0; i < b; ++i) {
      caches[i]->k[l].narrow(1, pos[i], 1).copy_(k[i].unsqueeze(1));
      caches[i]->v[l].narrow(1, pos[i], 1).copy_(v[i].unsqueeze(1));
      outs.push_back(Attend(q.narrow(0, i, 1), caches[i], static_cast<int>(l), pos[i], 1));
    }
    h = h + Linear(torch::cat(outs, 0), layer.wo);
    torch::Tensor gu = Linear(RmsNorm(h, layer.mlp_norm), layer.w_gate_up);
    const int64_t inter = config_.intermediate_size;
    h = h + Linear(torch::silu(gu.narrow(1, 0, inter)) * gu.narrow(1, inter, inter),
                   layer.w_down);
  }
  for (int64_t i = 0; i < b; ++i) caches[i]->length = pos[i] + 1;
  return Logits(h);
}

}  // namespace streamgen
