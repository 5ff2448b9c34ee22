// The forward pass of every supported family (model_config.h's family
// description) over the paged KV pool: the eager step, and the static decode
// path's step over a bucket's buffers (the buckets, their buffers and CUDA
// graphs are in cuda_graph_decode.cc). Both run each layer through the same
// two halves, AttentionInput and LayerOutput; only the attention core between
// them differs. A family is a few branches here, never a second decoder loop:
// biases (Qwen 2), q/k norms (Qwen 3, Gemma 3), Gemma's (1 + w) norms, its
// norms after attention and MLP, embedding scale and soft-capping, per-layer
// windows and RoPE tables (Gemma 3's sliding and global layers), partial
// rotary (Phi-3), and sparse MoE MLPs (Mixtral, Qwen 3 MoE; mlp.h).
//
// Notation: n = tokens in this call, H = attention heads, KV = key/value heads,
// G = H / KV (queries per key/value head), D = head_dim, L = cached positions,
// RD = rotary dims (D unless partial rotary).
#include "engine/model/llama_model.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/model/cpu_kernels.h"
#include "engine/model/cuda/cuda_ops.h"
#include "engine/model/cuda_graph_decode.h"
#include "engine/model/cuda/paged_attention.h"
#include "engine/model/mlp.h"
#include "engine/model/rope.h"

#include <torch/version.h>
#include "engine/model/device.h"
#include "engine/model/safetensors.h"
#include "common/status.h"

namespace streamgen {

struct LlamaModel::Layer {
  torch::Tensor attn_norm;       // [hidden] input_layernorm (Gemma: 1 + w in float32)
  LinearWeight wqkv;             // [(H + 2 KV) * D, hidden]: q, k, v stacked (Phi-3: as stored)
  torch::Tensor bqkv;            // [(H + 2 KV) * D] q, k, v biases, or undefined
  torch::Tensor q_norm, k_norm;  // [D] per-head norms before RoPE, or undefined
  LinearWeight wo;               // [hidden, H * D]
  torch::Tensor bo;              // [hidden] or undefined
  torch::Tensor post_attn_norm;  // [hidden] Gemma 3: on attention's output; else undefined
  torch::Tensor mlp_norm;        // [hidden] before the MLP
  torch::Tensor post_mlp_norm;   // [hidden] Gemma 3: on the MLP's output; else undefined
  LinearWeight w_gate_up;        // dense: [2 * I, hidden]: gate_proj, up_proj stacked
  torch::Tensor b_gate_up;       // [2 * I] or undefined
  LinearWeight w_down;           // dense: [hidden, I]
  torch::Tensor b_down;          // [hidden] or undefined
  std::unique_ptr<MoeWeights> moe;  // sparse layers: the router and the experts (mlp.h)
  int window = 0;                // attention window in positions (0: full)
  int window_index = 0;          // its index in LlamaModel::windows_
  bool local_rope = false;       // RoPE from rope_local_ (Gemma 3's sliding layers)
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
  return ToHugePages(t.to(options.dtype).to(options.device).contiguous());
}

// A linear layer's weight as the model keeps it: in the compute dtype, or
// quantized (in huge pages either way).
LinearWeight MakeLinear(const torch::Tensor& w, const ModelOptions& options) {
  if (options.quantization == Quantization::kNone) return {w, {}};
  LinearWeight q = QuantizeInt8(w);
  return {ToHugePages(q.w), q.scale};
}

}  // namespace

const char* QuantizationName(Quantization q) { return q == Quantization::kInt8 ? "int8" : "none"; }

absl::StatusOr<Quantization> ParseQuantization(const std::string& name) {
  if (name.empty() || name == "none") return Quantization::kNone;
  if (name == "int8") return Quantization::kInt8;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown quantization '", name, "': want none or int8"));
}

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
  if (options.quantization != Quantization::kNone && !options.device.is_cpu()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "quantization ", QuantizationName(options.quantization),
        " is implemented for the CPU only (its kernels are AVX-512 / portable C++): on ",
        options.device.str(), " use --quantization none"));
  }
  SG_ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(dir));
  if (options.max_model_len < 0 || options.max_model_len > config.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_model_len ", options.max_model_len, " must be in [1, ", config.max_position_embeddings,
        "] (config.json max_position_embeddings), or 0 for that"));
  }
  if (options.max_model_len > 0) config.max_position_embeddings = options.max_model_len;
  SG_ASSIGN_OR_RETURN(auto store, WeightStore::OpenDir(dir));
  SG_RETURN_IF_ERROR(ValidateWeights(config, *store));

  std::unique_ptr<LlamaModel> model(new LlamaModel(config, options));
  c10::InferenceMode guard;
  try {
    auto get = [&](const std::string& name) { return ToTorch(*store->Find(name), options); };
    // Gemma's norms multiply by (1 + w) in float32 (Gemma3RMSNorm); kept so.
    auto norm = [&](const std::string& name) {
      torch::Tensor w = get(name);
      if (config.norm_style == NormStyle::kWeight) return w;
      return (w.to(torch::kFloat32) + 1.0).contiguous();
    };
    auto stacked = [&](std::vector<torch::Tensor> parts) {
      return ToHugePages(torch::cat(parts, 0).contiguous());
    };
    model->embed_ = get("model.embed_tokens.weight");
    model->final_norm_ = norm("model.norm.weight");
    model->lm_head_ =
        MakeLinear(config.tie_word_embeddings ? model->embed_ : get("lm_head.weight"), options);
    for (int i = 0; i < config.num_hidden_layers; ++i) {
      const std::string p = absl::StrCat("model.layers.", i, ".");
      const std::string a = p + "self_attn.";
      auto layer = std::make_unique<Layer>();
      layer->attn_norm = norm(p + "input_layernorm.weight");
      layer->wqkv = MakeLinear(
          config.fused_checkpoint
              ? get(a + "qkv_proj.weight")
              : stacked({get(a + "q_proj.weight"), get(a + "k_proj.weight"),
                         get(a + "v_proj.weight")}),
          options);
      if (config.attention_qkv_bias) {
        layer->bqkv = torch::cat({get(a + "q_proj.bias"), get(a + "k_proj.bias"),
                                  get(a + "v_proj.bias")}, 0);
      }
      if (config.qk_norm) {
        layer->q_norm = norm(a + "q_norm.weight");
        layer->k_norm = norm(a + "k_norm.weight");
      }
      layer->wo = MakeLinear(get(a + "o_proj.weight"), options);
      if (config.attention_o_bias) layer->bo = get(a + "o_proj.bias");
      if (config.sandwich_norms) {  // Gemma 3: post_attention_layernorm is on attention's output
        layer->post_attn_norm = norm(p + "post_attention_layernorm.weight");
        layer->mlp_norm = norm(p + "pre_feedforward_layernorm.weight");
        layer->post_mlp_norm = norm(p + "post_feedforward_layernorm.weight");
      } else {
        layer->mlp_norm = norm(p + "post_attention_layernorm.weight");
      }
      if (config.IsMoeLayer(i)) {
        const MoeConfig& m = config.moe;
        const std::string b = p + m.block + ".";
        layer->moe = std::make_unique<MoeWeights>();
        layer->moe->router = get(b + "gate.weight");  // never quantized: routing must not move
        for (int e = 0; e < m.num_experts; ++e) {
          const std::string x = absl::StrCat(b, "experts.", e, ".");
          layer->moe->gate_up.push_back(MakeLinear(
              stacked({get(x + m.gate + ".weight"), get(x + m.up + ".weight")}), options));
          layer->moe->down.push_back(MakeLinear(get(x + m.down + ".weight"), options));
        }
      } else if (config.fused_checkpoint) {
        layer->w_gate_up = MakeLinear(get(p + "mlp.gate_up_proj.weight"), options);
        layer->w_down = MakeLinear(get(p + "mlp.down_proj.weight"), options);
      } else {
        layer->w_gate_up = MakeLinear(
            stacked({get(p + "mlp.gate_proj.weight"), get(p + "mlp.up_proj.weight")}), options);
        layer->w_down = MakeLinear(get(p + "mlp.down_proj.weight"), options);
        if (config.mlp_bias) {
          layer->b_gate_up = torch::cat({get(p + "mlp.gate_proj.bias"), get(p + "mlp.up_proj.bias")}, 0);
          layer->b_down = get(p + "mlp.down_proj.bias");
        }
      }
      layer->window = config.LayerWindow(i);
      auto w = std::find(model->windows_.begin(), model->windows_.end(), layer->window);
      if (w == model->windows_.end()) w = model->windows_.insert(w, layer->window);
      layer->window_index = static_cast<int>(w - model->windows_.begin());
      layer->local_rope = config.rope_local.has_value() && layer->window > 0;
      model->layers_.push_back(std::move(layer));
    }
    // Rotary tables (rope.h: computed in float32 as transformers does), then cast.
    auto tables = [&](const RopeConfig& rope) {
      RopeTables t = MakeRopeTables(rope, config.head_dim, config.max_position_embeddings);
      return RopeTables{t.cos.to(options.dtype).to(options.device).contiguous(),
                        t.sin.to(options.dtype).to(options.device).contiguous()};
    };
    if (config.rope.type == RopeType::kLongRope) {
      // Phi-3's longrope: transformers rotates with the short factors while the
      // sequence is within original_max_position_embeddings and with the long
      // ones past it (cached keys keep the rotation they were made with). Both
      // tables, stacked: rows [P, 2P) are the long factors' (RopeRow).
      RopeConfig short_rope = config.rope, long_rope = config.rope;
      short_rope.long_factor = short_rope.short_factor;
      long_rope.short_factor = long_rope.long_factor;
      RopeTables s = tables(short_rope), l = tables(long_rope);
      model->rope_ = {torch::cat({s.cos, l.cos}, 0), torch::cat({s.sin, l.sin}, 0)};
      model->long_rope_from_ = config.rope.original_max_position_embeddings;
    } else {
      model->rope_ = tables(config.rope);
    }
    if (config.rope_local) model->rope_local_ = tables(*config.rope_local);
    if (config.embedding_scale != 1.0) {
      // Gemma3TextScaledWordEmbedding: sqrt(hidden) rounded to the weights' dtype.
      model->embed_scale_ = torch::scalar_tensor(config.embedding_scale, torch::kFloat32)
                                .to(options.dtype)
                                .to(options.device);
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("loading ", dir, ": ", e.what_without_backtrace()));
  }
  if (StaticDecodeEnabled(model->config_, options)) {
    LlamaModel* m = model.get();
    model->static_decoder_ = std::make_unique<StaticDecoder>(
        model->config_, options.device,
        [m](DecodeGraph& g, KvPool* pool) { m->RunDecodeBody(g, pool); });
  }
  return model;
}

KvPool LlamaModel::NewKvPool(int64_t num_blocks, int64_t block_size) const {
  // The static decode path's padding rows write to one spare slot past the
  // last block.
  return streamgen::NewKvPool(config_, num_blocks, block_size,
                              torch::TensorOptions().dtype(options_.dtype).device(options_.device),
                              /*scratch_slot=*/StaticDecodeEnabled(config_, options_));
}

int64_t LlamaModel::KvBlockBytes(int64_t block_size) const {
  return streamgen::KvBlockBytes(config_, block_size, options_.dtype);
}

int64_t LlamaModel::DecodeWeightBytes() const {
  auto bytes_of = [](const torch::Tensor& t) { return t.defined() ? t.nbytes() : int64_t{0}; };
  int64_t bytes = final_norm_.nbytes() + lm_head_.nbytes();
  for (const auto& l : layers_) {
    bytes += bytes_of(l->attn_norm) + l->wqkv.nbytes() + bytes_of(l->bqkv) +
             bytes_of(l->q_norm) + bytes_of(l->k_norm) + l->wo.nbytes() + bytes_of(l->bo) +
             bytes_of(l->post_attn_norm) + bytes_of(l->mlp_norm) + bytes_of(l->post_mlp_norm);
    if (l->moe != nullptr) {
      // A token reads the router and its top-k experts: the experts' mean size times k.
      int64_t experts = 0;
      for (size_t e = 0; e < l->moe->gate_up.size(); ++e) {
        experts += l->moe->gate_up[e].nbytes() + l->moe->down[e].nbytes();
      }
      bytes += l->moe->router.nbytes() +
               experts / static_cast<int64_t>(l->moe->gate_up.size()) * config_.moe.top_k;
    } else {
      bytes += l->w_gate_up.nbytes() + bytes_of(l->b_gate_up) + l->w_down.nbytes() +
               bytes_of(l->b_down);
    }
  }
  return bytes;
}

// x: [n, in], w: [out, in] -> [n, out] (mlp.h: the skinny kernel for a few
// rows on the CPU, GEMM above), plus the bias where there is one.
torch::Tensor LlamaModel::Linear(const torch::Tensor& x, const LinearWeight& w,
                                 const torch::Tensor& bias) const {
  torch::Tensor y = ApplyLinear(x, w);
  return bias.defined() ? y.add_(bias) : y;
}

// RMSNorm over the last dim of x [n, dim] with weight w [dim]. Llama's
// (LlamaRMSNorm: statistics in float32, the normalised value cast to x's dtype,
// then times w in that dtype) goes through the fused kernel (cpu_kernels.h) on
// the CPU; Gemma's (Gemma3RMSNorm: everything in float32 times the stored
// (1 + w), one rounding at the end) is the same kernel on x in float32, then
// one rounding to x's dtype (3 ops instead of 8 libtorch ops per norm: Gemma 3
// runs 6 norms a layer, and in bfloat16 the 8-op form cost ~20% of its decode
// step; bench/README.md, "Model families").
torch::Tensor LlamaModel::Norm(const torch::Tensor& x, const torch::Tensor& w) const {
  if (config_.norm_style == NormStyle::kWeight || x.scalar_type() == torch::kFloat32) {
    return streamgen::RmsNorm(x.contiguous(), w, config_.rms_norm_eps);
  }
  return streamgen::RmsNorm(x.to(torch::kFloat32).contiguous(), w, config_.rms_norm_eps)
      .to(x.scalar_type());
}

// x: [T, heads, D]; cos, sin: [T, 1, RD] -> x with its first RD dims rotated
// (rotate-half layout; Phi-3's partial rotary passes the rest through).
torch::Tensor LlamaModel::ApplyRope(const torch::Tensor& x, const torch::Tensor& cos,
                                    const torch::Tensor& sin) const {
  const int64_t d = x.size(-1);
  const int64_t rd = cos.size(-1);
  const torch::Tensor r = rd == d ? x : x.narrow(-1, 0, rd);
  const int64_t half = rd / 2;
  torch::Tensor rotated = torch::cat({-r.narrow(-1, half, half), r.narrow(-1, 0, half)}, -1);
  torch::Tensor out = r * cos + rotated * sin;
  return rd == d ? out : torch::cat({out, x.narrow(-1, rd, d - rd)}, -1);
}

// A group of B sequences that attend together, each with n queries (B
// decodes with n = 1, or one prefill chunk with B = 1). Keys are gathered from
// the pool a whole block at a time; key slots beyond a sequence's position
// (the rest of its last block, padding blocks) and before its window are masked.
struct LlamaModel::AttentionBatch {
  int64_t b = 0, n = 0, len = 0;  // sequences, queries each, keys each (whole blocks, padded)
  torch::Tensor blocks;           // [B * len / block_size] int64: the blocks, sequence by sequence
  torch::Tensor mask;             // [1, B, 1, n, len] bool, true = masked
  std::vector<int64_t> rows;      // rows of the step's tokens that these queries are
};

// Plans attention under `window` (0: full) for sequences `seqs` (chunks'
// indices) that each have `n` queries; rows0[i] is the first row of chunk
// seqs[i] in the step.
LlamaModel::AttentionBatch LlamaModel::PlanAttention(const std::vector<SeqChunk>& chunks,
                                                     const std::vector<size_t>& seqs,
                                                     const std::vector<int64_t>& rows0, int64_t n,
                                                     int64_t block_size, int64_t window) const {
  AttentionBatch a;
  a.b = static_cast<int64_t>(seqs.size());
  a.n = n;
  std::vector<int64_t> first_block(a.b), num_blocks(a.b);
  int64_t max_blocks = 0;
  for (int64_t i = 0; i < a.b; ++i) {
    const SeqChunk& c = chunks[seqs[i]];
    first_block[i] = FirstKey(c.start, window) / block_size;
    num_blocks[i] = (c.start + n - 1) / block_size - first_block[i] + 1;
    max_blocks = std::max(max_blocks, num_blocks[i]);
  }
  a.len = max_blocks * block_size;
  std::vector<int64_t> blocks(a.b * max_blocks, 0);
  std::vector<uint8_t> masked(a.b * n * a.len, 1);
  for (int64_t i = 0; i < a.b; ++i) {
    const SeqChunk& c = chunks[seqs[i]];
    for (int64_t j = 0; j < num_blocks[i]; ++j) {
      blocks[i * max_blocks + j] = (*c.block_table)[first_block[i] + j];
    }
    const int64_t kpos0 = first_block[i] * block_size;
    const int64_t valid = num_blocks[i] * block_size;
    for (int64_t q = 0; q < n; ++q) {
      const int64_t qpos = c.start + q;
      uint8_t* row = &masked[(i * n + q) * a.len];
      for (int64_t j = 0; j < valid; ++j) {
        const int64_t kpos = kpos0 + j;
        row[j] = kpos > qpos || (window > 0 && qpos - kpos >= window);
      }
    }
    for (int64_t q = 0; q < n; ++q) a.rows.push_back(rows0[i] + q);
  }
  // One dim-0 gather of whole blocks (all heads): index_select along dim 0 is
  // a row memcpy, ~15x faster here than gathering along an inner dim.
  a.blocks = torch::tensor(blocks).to(options_.device);
  a.mask = torch::from_blob(masked.data(), {1, a.b, 1, n, a.len}, torch::kUInt8)
               .to(torch::kBool)
               .to(options_.device);
  return a;
}

// q: [B * n, H, D] -> [B * n, H * D]: softmax(scale * q k^T) v, with Gemma's
// soft-capping of the scores where the config asks for it.
torch::Tensor LlamaModel::Attend(const torch::Tensor& q, const AttentionBatch& a,
                                 const KvPool& pool, int layer) const {
  const int64_t heads = config_.num_attention_heads;
  const int64_t kv = config_.num_key_value_heads;
  const int64_t g = heads / kv;
  const int64_t d = config_.head_dim;
  const int64_t b = a.b, n = a.n, len = a.len, bs = pool.block_size;
  const double scale = config_.AttentionScale();
  const double softcap = config_.attn_logit_softcapping;
  // Pool [blocks * bs, KV, D] -> gathered blocks [B * len / bs, bs * KV * D] = [B, len, KV, D]
  // -> [KV * B, len, D] (one copy; prefill chunks only on the CPU, where decodes
  // use the paged kernel).
  auto gather = [&](const torch::Tensor& p) {
    return p.narrow(0, 0, pool.num_blocks * bs)  // (not the spare slot)
        .view({pool.num_blocks, bs * kv * d})
        .index_select(0, a.blocks)
        .view({b, len, kv, d})
        .permute({2, 0, 1, 3})
        .reshape({kv * b, len, d});
  };
  torch::Tensor k = gather(pool.k[layer]);
  torch::Tensor v = gather(pool.v[layer]);
  // [B * n, H, D] -> [KV * B, G * n, D], query heads grouped by their key/value head.
  torch::Tensor qg =
      q.view({b, n, kv, g, d}).permute({2, 0, 3, 1, 4}).reshape({kv * b, g * n, d});
#if TORCH_VERSION_MAJOR >= 2
  // On CUDA with libtorch 2.x: one fused kernel (the memory-efficient
  // backend, which takes a mask) instead of bmm, masked softmax and bmm.
  // Every query sees at least its own key, so no row is fully masked. Its
  // scale is 1/sqrt(D): another scale is folded into q. Soft-capping needs
  // the scores, so it takes the bmm path below.
  // (Not compiled against libtorch 1.13; not yet run on a GPU here.)
  if (q.is_cuda() && softcap == 0) {
    torch::Tensor allowed = a.mask.logical_not()
                                .expand({kv, b, g, n, len})
                                .reshape({kv * b, g * n, len});
    const double fold = scale * std::sqrt(static_cast<double>(d));
    torch::Tensor qs = std::abs(fold - 1.0) < 1e-12 ? qg : qg * fold;
    torch::Tensor out = at::scaled_dot_product_attention(qs, k, v, allowed);  // [KV*B, G*n, D]
    return out.view({kv, b, g, n, d}).permute({1, 3, 0, 2, 4}).reshape({b * n, heads * d});
  }
#endif
  // Without native bfloat16 dot products (an AVX2 CPU; ActiveIsaHasNativeBf16),
  // libtorch's bfloat16 bmm is a scalar fallback: a 128-token bfloat16 prompt
  // prefilled at a tenth of float32's speed. The chunk's attention runs in
  // float32 there (as CpuLinear's float32 tiles do), back to bfloat16 at the end.
  const torch::ScalarType out_dtype = q.scalar_type();
  if (q.is_cpu() && out_dtype == torch::kBFloat16 && !ActiveIsaHasNativeBf16()) {
    qg = qg.to(torch::kFloat32);
    k = k.to(torch::kFloat32);
    v = v.to(torch::kFloat32);
  }
  torch::Tensor scores = torch::bmm(qg, k.transpose(1, 2)).mul_(scale);  // [KV*B, G*n, len]
  if (softcap > 0) scores = torch::tanh(scores / softcap) * softcap;
  scores = scores.view({kv, b, g, n, len})
               .masked_fill(a.mask, -std::numeric_limits<float>::infinity())
               .view({kv * b, g * n, len});
  torch::Tensor probs = torch::softmax(scores.to(torch::kFloat32), -1).to(v.scalar_type());
  torch::Tensor out = torch::bmm(probs, v);  // [KV * B, G * n, D]
  return out.view({kv, b, g, n, d}).permute({1, 3, 0, 2, 4}).reshape({b * n, heads * d}).to(out_dtype);
}

// h: [n, hidden] -> float32 logits [n, vocab] (Gemma's final soft-capping in
// the compute dtype, as transformers applies it before the float cast).
torch::Tensor LlamaModel::Logits(const torch::Tensor& h) const {
  torch::Tensor logits = Linear(Norm(h, final_norm_), lm_head_);
  const double cap = config_.final_logit_softcapping;
  if (cap > 0) logits = torch::tanh(logits / cap) * cap;
  return logits.to(torch::kFloat32);
}

// ids [T] -> embeddings [T, hidden] (Gemma: times sqrt(hidden) in the dtype).
torch::Tensor LlamaModel::Embed(const torch::Tensor& ids) const {
  torch::Tensor h = embed_.index_select(0, ids);
  return embed_scale_.defined() ? h * embed_scale_ : h;
}

// The first half of layer l: h [T, hidden] -> qkv [T, (H + 2 KV) * D] with
// biases added, q and k normed per head (Qwen 3, Gemma 3) and rotated.
torch::Tensor LlamaModel::AttentionInput(size_t l, const torch::Tensor& h,
                                         const Rotary& rot) const {
  const Layer& layer = *layers_[l];
  const int64_t heads = config_.num_attention_heads;
  const int64_t kv = config_.num_key_value_heads;
  const int64_t d = config_.head_dim;
  const int64_t t = h.size(0);
  torch::Tensor qkv = Linear(Norm(h, layer.attn_norm), layer.wqkv, layer.bqkv);
  if (layer.q_norm.defined()) {
    torch::Tensor q = Norm(qkv.narrow(1, 0, heads * d).reshape({t * heads, d}), layer.q_norm);
    torch::Tensor k = Norm(qkv.narrow(1, heads * d, kv * d).reshape({t * kv, d}), layer.k_norm);
    qkv.narrow(1, 0, heads * d).copy_(q.view({t, heads * d}));
    qkv.narrow(1, heads * d, kv * d).copy_(k.view({t, kv * d}));
  }
  const RopeTables& table = layer.local_rope ? rope_local_ : rope_;
  if (rot.positions != nullptr) {  // q and k rotated in place in qkv (cpu_kernels.h)
    RotaryInPlace(qkv, heads + kv, d, table.cos, table.sin,
                  layer.local_rope ? *rot.positions : *rot.rope_positions, table.cos.size(1));
    return qkv;
  }
  const int which = layer.local_rope ? 1 : 0;
  torch::Tensor q = ApplyRope(qkv.narrow(1, 0, heads * d).view({t, heads, d}), rot.cos[which],
                              rot.sin[which]);
  torch::Tensor k = ApplyRope(qkv.narrow(1, heads * d, kv * d).view({t, kv, d}), rot.cos[which],
                              rot.sin[which]);
  return torch::cat({q.reshape({t, heads * d}), k.reshape({t, kv * d}),
                     qkv.narrow(1, (heads + kv) * d, kv * d)},
                    1);
}

// The op path's rotary rows for positions `pos` [T] (device int64): the
// global table's, and the local table's when the model has one.
LlamaModel::Rotary LlamaModel::RotaryRows(const torch::Tensor& pos,
                                          const torch::Tensor& rope_rows) const {
  Rotary rot;
  rot.cos[0] = rope_.cos.index_select(0, rope_rows).unsqueeze(1);  // [T, 1, RD]
  rot.sin[0] = rope_.sin.index_select(0, rope_rows).unsqueeze(1);
  if (rope_local_.cos.defined()) {
    rot.cos[1] = rope_local_.cos.index_select(0, pos).unsqueeze(1);
    rot.sin[1] = rope_local_.sin.index_select(0, pos).unsqueeze(1);
  }
  return rot;
}

// The second half of layer l: h [T, hidden] and attention's output
// attn [T, H * D] -> the layer's output [T, hidden].
torch::Tensor LlamaModel::LayerOutput(size_t l, const torch::Tensor& h,
                                      const torch::Tensor& attn) const {
  const Layer& layer = *layers_[l];
  torch::Tensor a = Linear(attn, layer.wo, layer.bo);
  if (layer.post_attn_norm.defined()) a = Norm(a, layer.post_attn_norm);
  torch::Tensor x = h + a;
  torch::Tensor m = Norm(x, layer.mlp_norm);
  if (layer.moe != nullptr) {
    m = MoeMlp(m, *layer.moe, config_.moe, config_.activation);
  } else {
    torch::Tensor gu = Linear(m, layer.w_gate_up, layer.b_gate_up);  // [T, 2I]
    m = Linear(GatedActivation(gu, config_.activation), layer.w_down, layer.b_down);
  }
  if (layer.post_mlp_norm.defined()) m = Norm(m, layer.post_mlp_norm);
  return x + m;
}

torch::Tensor LlamaModel::Step(const std::vector<SeqChunk>& chunks, KvPool* pool,
                               bool all_logits) {
  c10::InferenceMode guard;
  TORCH_CHECK(!chunks.empty(), "Step: no chunks");
  if (static_decoder_ != nullptr && static_decoder_->Accepts(chunks, *pool)) {
    return static_decoder_->Step(chunks, pool);
  }
  const int64_t heads = config_.num_attention_heads;
  const int64_t kv = config_.num_key_value_heads;
  const int64_t d = config_.head_dim;
  const int64_t bs = pool->block_size;
  const size_t num_windows = windows_.size();
  // Host-side plan: token ids, positions, write slots, attention groups (per
  // distinct layer window: the same rows, other blocks and masks).
  std::vector<int64_t> ids, positions, rope_rows, write_slots, last_rows;
  std::vector<std::vector<AttentionBatch>> groups(num_windows);
  // Decodes attend together. The paged kernel (cpu_kernels.h on the CPU,
  // engine/model/cuda on CUDA) reads their keys and values in place; elsewhere
  // (a CPU float16 pool is refused at load; a CUDA libtorch without the
  // kernels) they are gathered as one group. Prefill chunks are gathered and go through bmm: the paged
  // kernel, one query at a time, measured slower for them (a 128-token chunk
  // plus 15 decodes in bfloat16, `streamgen-bench-engine --batch 15
  // --mixed-prefill 128 --profile`: 18-22 ms of paged attention per step
  // against ~10 ms for bmm, softmax and the decodes' paged attention).
  // On CUDA (a build against a CUDA libtorch) decodes use the CUDA paged
  // kernel (engine/model/cuda/paged_attention.h) in every dtype.
  const bool cpu_kernels =
      options_.device.is_cpu() &&
      (options_.dtype == torch::kFloat32 || options_.dtype == torch::kBFloat16);
  const bool cuda_paged = kCudaKernels && options_.device.is_cuda() && d <= cuda::kMaxHeadDim;
  const bool paged = cpu_kernels || cuda_paged;
  std::vector<std::vector<DecodeSeq>> paged_seqs(num_windows);  // one per paged decode
  std::vector<int64_t> paged_rows;     // its row in the step
  std::vector<size_t> decodes;         // gathered decodes (not paged)
  std::vector<int64_t> decode_rows;
  for (size_t ci = 0; ci < chunks.size(); ++ci) {
    const SeqChunk& c = chunks[ci];
    const int64_t n = static_cast<int64_t>(c.tokens.size());
    CheckChunk(c, bs, config_.max_position_embeddings);
    const int64_t row0 = static_cast<int64_t>(ids.size());
    for (int64_t i = 0; i < n; ++i) {
      const int64_t p = c.start + i;
      ids.push_back(c.tokens[i]);
      positions.push_back(p);
      rope_rows.push_back(RopeRow(p, c.start + n - 1));
      write_slots.push_back(SlotOf(*c.block_table, p, bs));
    }
    for (int64_t i = c.all_logits ? 0 : n - 1; i < n; ++i) last_rows.push_back(row0 + i);
    if (paged && n == 1) {
      for (size_t w = 0; w < num_windows; ++w) paged_seqs[w].push_back(DecodeRow(c, windows_[w]));
      paged_rows.push_back(row0);
    } else if (n == 1) {
      decodes.push_back(ci);
      decode_rows.push_back(row0);
    } else {
      for (size_t w = 0; w < num_windows; ++w) {
        groups[w].push_back(PlanAttention(chunks, {ci}, {row0}, n, bs, windows_[w]));
      }
    }
  }
  if (!decodes.empty()) {
    for (size_t w = 0; w < num_windows; ++w) {
      groups[w].push_back(PlanAttention(chunks, decodes, decode_rows, 1, bs, windows_[w]));
    }
  }
  const float scale = static_cast<float>(config_.AttentionScale());
  const float softcap = static_cast<float>(config_.attn_logit_softcapping);

  const int64_t total = static_cast<int64_t>(ids.size());
  auto to_dev = [&](const std::vector<int64_t>& v) { return torch::tensor(v).to(options_.device); };
  torch::Tensor ids_t = to_dev(ids);
  torch::Tensor write_t = to_dev(write_slots);
  // Rotary: fused on the CPU (float32, bfloat16), libtorch ops elsewhere.
  Rotary rot;
  if (cpu_kernels) {
    rot.positions = &positions;
    rot.rope_positions = &rope_rows;
  } else {
    rot = RotaryRows(to_dev(positions), to_dev(rope_rows));
  }
  // A single group's rows are 0..T-1 in order; several are scattered back.
  // (Paged rows are in step order: when they are all the rows, q is used as is.)
  const bool single_group = groups[0].size() + (paged_rows.empty() ? 0 : 1) == 1;
  std::vector<torch::Tensor> group_rows;
  for (const auto& a : groups[0]) group_rows.push_back(to_dev(a.rows));
  torch::Tensor paged_rows_t = paged_rows.empty() ? torch::Tensor() : to_dev(paged_rows);

  torch::Tensor h = Embed(ids_t);  // [T, hidden]
  for (size_t l = 0; l < layers_.size(); ++l) {
    const int wi = layers_[l]->window_index;
    torch::Tensor qkv = AttentionInput(l, h, rot);  // [T, (H + 2KV) D]
    torch::Tensor q = qkv.narrow(1, 0, heads * d).view({total, heads, d});
    torch::Tensor k = qkv.narrow(1, heads * d, kv * d).view({total, kv, d});
    torch::Tensor v = qkv.narrow(1, (heads + kv) * d, kv * d).view({total, kv, d});
    pool->k[l].index_copy_(0, write_t, k);  // pool: [slots, KV, D]
    pool->v[l].index_copy_(0, write_t, v);
    auto attend_paged = [&](const torch::Tensor& qp) {
      if constexpr (kCudaKernels) {  // (only defined in a CUDA build)
        if (cuda_paged) {
          return PagedDecodeAttentionCuda(qp.contiguous(), pool->k[l], pool->v[l], paged_seqs[wi],
                                          bs, scale, softcap);
        }
      }
      return PagedDecodeAttention(qp.contiguous(), pool->k[l], pool->v[l], paged_seqs[wi], bs,
                                  scale, softcap);
    };
    torch::Tensor attn;
    if (single_group) {
      attn = paged_rows.empty() ? Attend(q, groups[wi][0], *pool, static_cast<int>(l))
                                : attend_paged(q);
    } else {
      attn = torch::empty({total, heads * d}, q.options());
      for (size_t gi = 0; gi < groups[wi].size(); ++gi) {
        attn.index_copy_(0, group_rows[gi],
                         Attend(q.index_select(0, group_rows[gi]), groups[wi][gi], *pool,
                                static_cast<int>(l)));
      }
      if (!paged_rows.empty()) {
        attn.index_copy_(0, paged_rows_t, attend_paged(q.index_select(0, paged_rows_t)));
      }
    }
    h = LayerOutput(l, h, attn);
  }
  if (!all_logits && total != static_cast<int64_t>(last_rows.size())) {
    h = h.index_select(0, to_dev(last_rows));
  }
  return Logits(h);
}

// The static decode path's step over bucket g's device buffers (see
// cuda_graph_decode.h): the eager step's layer halves, with rotary over
// position tensors and the attention metadata read from the device.
void LlamaModel::RunDecodeBody(DecodeGraph& g, KvPool* pool) {
  const int64_t heads = config_.num_attention_heads;
  const int64_t kv = config_.num_key_value_heads;
  const int64_t d = config_.head_dim;
  const int64_t r = g.rows;
  const float scale = static_cast<float>(config_.AttentionScale());
  const float softcap = static_cast<float>(config_.attn_logit_softcapping);
  torch::Tensor ids = g.dev.narrow(0, 0, r);
  torch::Tensor positions = g.dev.narrow(0, r, r);
  torch::Tensor slots = g.dev.narrow(0, 2 * r, r);
  // RopeRow on the device (a decode's chunk ends at its own position).
  torch::Tensor rope_rows =
      long_rope_from_ > 0
          ? positions + positions.ge(long_rope_from_).to(torch::kLong) *
                            static_cast<int64_t>(config_.max_position_embeddings)
          : positions;
  const Rotary rot = RotaryRows(positions, rope_rows);
  torch::Tensor h = Embed(ids);
  for (size_t l = 0; l < layers_.size(); ++l) {
    torch::Tensor qkv = AttentionInput(l, h, rot);
    torch::Tensor q = qkv.narrow(1, 0, heads * d).view({r, heads, d});
    torch::Tensor k = qkv.narrow(1, heads * d, kv * d).view({r, kv, d});
    torch::Tensor v = qkv.narrow(1, (heads + kv) * d, kv * d).view({r, kv, d});
    pool->k[l].index_copy_(0, slots, k);
    pool->v[l].index_copy_(0, slots, v);
    torch::Tensor attn;
    if constexpr (kCudaKernels) {
      if (options_.device.is_cuda()) {
        attn = PagedDecodeAttentionCudaStatic(q.contiguous(), pool->k[l], pool->v[l],
                                              g.dev_meta, g.stride, g.Partitions(l), g.workspace,
                                              pool->block_size, scale, softcap, g.WindowSet(l));
      }
    }
    if (!attn.defined()) {
      attn = PagedDecodeAttention(q.contiguous(), pool->k[l], pool->v[l], g.Seqs(l),
                                  pool->block_size, scale, softcap);
    }
    h = LayerOutput(l, h, attn);
  }
  g.logits.copy_(Logits(h));
}

}  // namespace streamgen
