// Llama / Mistral forward pass over the paged KV pool: the eager step, and
// the static decode path's step over a bucket's buffers (the buckets, their
// buffers and CUDA graphs are in cuda_graph_decode.cc).
//
// Notation: n = tokens in this call, H = attention heads, KV = key/value heads,
// G = H / KV (queries per key/value head), D = head_dim, L = cached positions.
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

#include <torch/version.h>
#include "engine/model/device.h"
#include "engine/model/safetensors.h"
#include "common/status.h"

namespace streamgen {

struct LlamaModel::Layer {
  torch::Tensor attn_norm;  // [hidden]
  LinearWeight wqkv;        // [(H + 2 KV) * D, hidden]: q_proj, k_proj, v_proj stacked
  LinearWeight wo;          // [hidden, H * D]
  torch::Tensor mlp_norm;   // [hidden]
  LinearWeight w_gate_up;   // [2 * intermediate, hidden]: gate_proj, up_proj stacked
  LinearWeight w_down;      // [hidden, intermediate]
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
  SG_ASSIGN_OR_RETURN(auto store, WeightStore::OpenDir(dir));
  SG_RETURN_IF_ERROR(ValidateWeights(config, *store));

  std::unique_ptr<LlamaModel> model(new LlamaModel(config, options));
  c10::InferenceMode guard;
  try {
    auto get = [&](const std::string& name) { return ToTorch(*store->Find(name), options); };
    model->embed_ = get("model.embed_tokens.weight");
    model->final_norm_ = get("model.norm.weight");
    model->lm_head_ =
        MakeLinear(config.tie_word_embeddings ? model->embed_ : get("lm_head.weight"), options);
    for (int i = 0; i < config.num_hidden_layers; ++i) {
      const std::string p = absl::StrCat("model.layers.", i, ".");
      auto layer = std::make_unique<Layer>();
      layer->attn_norm = get(p + "input_layernorm.weight");
      layer->wqkv = MakeLinear(ToHugePages(torch::cat({get(p + "self_attn.q_proj.weight"),
                                                       get(p + "self_attn.k_proj.weight"),
                                                       get(p + "self_attn.v_proj.weight")},
                                                      0)
                                               .contiguous()),
                               options);
      layer->wo = MakeLinear(get(p + "self_attn.o_proj.weight"), options);
      layer->mlp_norm = get(p + "post_attention_layernorm.weight");
      layer->w_gate_up = MakeLinear(
          ToHugePages(
              torch::cat({get(p + "mlp.gate_proj.weight"), get(p + "mlp.up_proj.weight")}, 0)
                  .contiguous()),
          options);
      layer->w_down = MakeLinear(get(p + "mlp.down_proj.weight"), options);
      model->layers_.push_back(std::move(layer));
    }
    // Rotary tables, computed in float32 as Hugging Face does, then cast.
    const int64_t d = config.head_dim;
    auto f32 = torch::TensorOptions().dtype(torch::kFloat32);
    torch::Tensor inv_freq =
        1.0 / torch::pow(config.rope.theta, torch::arange(0, d, 2, f32) / static_cast<double>(d));
    torch::Tensor t = torch::arange(config.max_position_embeddings, f32);
    torch::Tensor freqs = torch::outer(t, inv_freq);     // [P, D/2]
    torch::Tensor emb = torch::cat({freqs, freqs}, -1);  // [P, D]
    model->cos_ = emb.cos().to(options.dtype).to(options.device);
    model->sin_ = emb.sin().to(options.dtype).to(options.device);
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
  int64_t bytes = final_norm_.nbytes() + lm_head_.nbytes();
  for (const auto& l : layers_) {
    bytes += l->attn_norm.nbytes() + l->wqkv.nbytes() + l->wo.nbytes() + l->mlp_norm.nbytes() +
             l->w_gate_up.nbytes() + l->w_down.nbytes();
  }
  return bytes;
}

// x: [n, in], w: [out, in] -> [n, out]. On the CPU a few rows go through the
// skinny kernel (cpu_kernels.h: it reads the weights at the bandwidth limit,
// where libtorch's bfloat16 mv read ~9 GB/s of ~30) and more through GEMM.
torch::Tensor LlamaModel::Linear(const torch::Tensor& x, const LinearWeight& w) const {
  if (x.device().is_cpu()) return CpuLinear(x, w);
  return torch::mm(x, w.w.t());  // w.t() is a transposed view: BLAS reads it in place
}

// x: [n, hidden]; statistics in float32 as Hugging Face's LlamaRMSNorm does
// (cpu_kernels.h: fused on CPUs with AVX-512, libtorch ops elsewhere).
torch::Tensor LlamaModel::RmsNorm(const torch::Tensor& x, const torch::Tensor& w) const {
  return streamgen::RmsNorm(x, w, config_.rms_norm_eps);
}

// x: [T, heads, D]; cos, sin: [T, 1, D] -> rotated x (rotate-half layout).
torch::Tensor LlamaModel::ApplyRope(const torch::Tensor& x, const torch::Tensor& cos,
                                    const torch::Tensor& sin) const {
  const int64_t half = config_.head_dim / 2;
  torch::Tensor rotated = torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * cos + rotated * sin;
}

// A group of B sequences that attend together, each with n queries (B
// decodes with n = 1, or one prefill chunk with B = 1). Keys are gathered from
// the pool a whole block at a time; key slots beyond a sequence's position
// (the rest of its last block, padding blocks) are masked.
struct LlamaModel::AttentionBatch {
  int64_t b = 0, n = 0, len = 0;  // sequences, queries each, keys each (whole blocks, padded)
  torch::Tensor blocks;           // [B * len / block_size] int64: the blocks, sequence by sequence
  torch::Tensor mask;             // [1, B, 1, n, len] bool, true = masked
  std::vector<int64_t> rows;      // rows of the step's tokens that these queries are
};

// Plans attention for sequences `seqs` (chunks' indices) that each have `n`
// queries; rows0[i] is the first row of chunk seqs[i] in the step.
LlamaModel::AttentionBatch LlamaModel::PlanAttention(const std::vector<SeqChunk>& chunks,
                                                     const std::vector<size_t>& seqs,
                                                     const std::vector<int64_t>& rows0, int64_t n,
                                                     int64_t block_size) const {
  const int64_t window = config_.sliding_window.value_or(0);
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

// q: [B * n, H, D] -> [B * n, H * D].
torch::Tensor LlamaModel::Attend(const torch::Tensor& q, const AttentionBatch& a,
                                 const KvPool& pool, int layer) const {
  const int64_t heads = config_.num_attention_heads;
  const int64_t kv = config_.num_key_value_heads;
  const int64_t g = heads / kv;
  const int64_t d = config_.head_dim;
  const int64_t b = a.b, n = a.n, len = a.len, bs = pool.block_size;
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
  // Every query sees at least its own key, so no row is fully masked.
  // (Not compiled against libtorch 1.13; not yet run on a GPU here.)
  if (q.is_cuda()) {
    torch::Tensor allowed = a.mask.logical_not()
                                .expand({kv, b, g, n, len})
                                .reshape({kv * b, g * n, len});
    torch::Tensor out = at::scaled_dot_product_attention(qg, k, v, allowed);  // [KV*B, G*n, D]
    return out.view({kv, b, g, n, d}).permute({1, 3, 0, 2, 4}).reshape({b * n, heads * d});
  }
#endif
  torch::Tensor scores = torch::bmm(qg, k.transpose(1, 2))
                             .mul_(1.0 / std::sqrt(static_cast<double>(d)));  // [KV*B, G*n, len]
  scores = scores.view({kv, b, g, n, len})
               .masked_fill(a.mask, -std::numeric_limits<float>::infinity())
               .view({kv * b, g * n, len});
  torch::Tensor probs = torch::softmax(scores.to(torch::kFloat32), -1).to(v.scalar_type());
  torch::Tensor out = torch::bmm(probs, v);  // [KV * B, G * n, D]
  return out.view({kv, b, g, n, d}).permute({1, 3, 0, 2, 4}).reshape({b * n, heads * d});
}

// h: [n, hidden] -> float32 logits [n, vocab].
torch::Tensor LlamaModel::Logits(const torch::Tensor& h) const {
  return Linear(RmsNorm(h, final_norm_), lm_head_).to(torch::kFloat32);
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
  // Host-side plan: token ids, positions, write slots, attention groups.
  std::vector<int64_t> ids, positions, write_slots, last_rows;
  std::vector<AttentionBatch> groups;
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
  const int64_t window = config_.sliding_window.value_or(0);
  std::vector<DecodeSeq> paged_seqs;   // one per paged decode
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
      write_slots.push_back(SlotOf(*c.block_table, p, bs));
    }
    last_rows.push_back(row0 + n - 1);
    if (paged && n == 1) {
      paged_seqs.push_back(DecodeRow(c, window));
      paged_rows.push_back(row0);
    } else if (n == 1) {
      decodes.push_back(ci);
      decode_rows.push_back(row0);
    } else {
      groups.push_back(PlanAttention(chunks, {ci}, {row0}, n, bs));
    }
  }
  if (!decodes.empty()) {
    groups.push_back(PlanAttention(chunks, decodes, decode_rows, 1, bs));
  }
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));

  const int64_t total = static_cast<int64_t>(ids.size());
  auto to_dev = [&](const std::vector<int64_t>& v) { return torch::tensor(v).to(options_.device); };
  torch::Tensor ids_t = to_dev(ids);
  torch::Tensor write_t = to_dev(write_slots);
  // Rotary: fused on the CPU (float32, bfloat16), libtorch ops elsewhere.
  const bool fused_rope = cpu_kernels;
  torch::Tensor cos, sin;
  if (!fused_rope) {
    torch::Tensor pos_t = to_dev(positions);
    cos = cos_.index_select(0, pos_t).unsqueeze(1);  // [T, 1, D]
    sin = sin_.index_select(0, pos_t).unsqueeze(1);  // [T, 1, D]
  }
  // A single group's rows are 0..T-1 in order; several are scattered back.
  // (Paged rows are in step order: when they are all the rows, q is used as is.)
  const bool single_group = groups.size() + (paged_seqs.empty() ? 0 : 1) == 1;
  std::vector<torch::Tensor> group_rows;
  for (const auto& a : groups) group_rows.push_back(to_dev(a.rows));
  torch::Tensor paged_rows_t = paged_seqs.empty() ? torch::Tensor() : to_dev(paged_rows);

  torch::Tensor h = embed_.index_select(0, ids_t);  // [T, hidden]
  for (size_t l = 0; l < layers_.size(); ++l) {
    const Layer& layer = *layers_[l];
    torch::Tensor qkv = Linear(RmsNorm(h, layer.attn_norm), layer.wqkv);  // [T, (H + 2KV) D]
    torch::Tensor q, k;
    if (fused_rope) {  // q and k rotated in place in qkv (cpu_kernels.h)
      RotaryInPlace(qkv, heads + kv, d, cos_, sin_, positions);
      q = qkv.narrow(1, 0, heads * d).view({total, heads, d});
      k = qkv.narrow(1, heads * d, kv * d).view({total, kv, d});
    } else {
      q = ApplyRope(qkv.narrow(1, 0, heads * d).view({total, heads, d}), cos, sin);
      k = ApplyRope(qkv.narrow(1, heads * d, kv * d).view({total, kv, d}), cos, sin);
    }
    torch::Tensor v = qkv.narrow(1, (heads + kv) * d, kv * d).view({total, kv, d});
    pool->k[l].index_copy_(0, write_t, k);  // pool: [slots, KV, D]
    pool->v[l].index_copy_(0, write_t, v);
    auto attend_paged = [&](const torch::Tensor& qp) {
      if constexpr (kCudaKernels) {  // (only defined in a CUDA build)
        if (cuda_paged) {
          return PagedDecodeAttentionCuda(qp.contiguous(), pool->k[l], pool->v[l], paged_seqs, bs,
                                          scale);
        }
      }
      return PagedDecodeAttention(qp.contiguous(), pool->k[l], pool->v[l], paged_seqs, bs, scale);
    };
    torch::Tensor attn;
    if (single_group) {
      attn = paged_seqs.empty() ? Attend(q, groups[0], *pool, static_cast<int>(l))
                                : attend_paged(q);
    } else {
      attn = torch::empty({total, heads * d}, q.options());
      for (size_t gi = 0; gi < groups.size(); ++gi) {
        attn.index_copy_(0, group_rows[gi],
                         Attend(q.index_select(0, group_rows[gi]), groups[gi], *pool,
                                static_cast<int>(l)));
      }
      if (!paged_seqs.empty()) {
        attn.index_copy_(0, paged_rows_t, attend_paged(q.index_select(0, paged_rows_t)));
      }
    }
    h = h + Linear(attn, layer.wo);
    torch::Tensor gu = Linear(RmsNorm(h, layer.mlp_norm), layer.w_gate_up);  // [T, 2I]
    h = h + Linear(SiluMul(gu), layer.w_down);
  }
  if (!all_logits && total != static_cast<int64_t>(last_rows.size())) {
    h = h.index_select(0, to_dev(last_rows));
  }
  return Logits(h);
}

// The static decode path's step over bucket g's device buffers (see
// cuda_graph_decode.h): the eager step's layers, with rotary over position
// tensors and the attention metadata read from the device.
void LlamaModel::RunDecodeBody(DecodeGraph& g, KvPool* pool) {
  const int64_t heads = config_.num_attention_heads;
  const int64_t kv = config_.num_key_value_heads;
  const int64_t d = config_.head_dim;
  const int64_t r = g.rows;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  torch::Tensor ids = g.dev.narrow(0, 0, r);
  torch::Tensor positions = g.dev.narrow(0, r, r);
  torch::Tensor slots = g.dev.narrow(0, 2 * r, r);
  torch::Tensor cos = cos_.index_select(0, positions).unsqueeze(1);  // [R, 1, D]
  torch::Tensor sin = sin_.index_select(0, positions).unsqueeze(1);
  torch::Tensor h = embed_.index_select(0, ids);
  for (size_t l = 0; l < layers_.size(); ++l) {
    const Layer& layer = *layers_[l];
    torch::Tensor qkv = Linear(RmsNorm(h, layer.attn_norm), layer.wqkv);
    torch::Tensor q = ApplyRope(qkv.narrow(1, 0, heads * d).view({r, heads, d}), cos, sin);
    torch::Tensor k = ApplyRope(qkv.narrow(1, heads * d, kv * d).view({r, kv, d}), cos, sin);
    torch::Tensor v = qkv.narrow(1, (heads + kv) * d, kv * d).view({r, kv, d});
    pool->k[l].index_copy_(0, slots, k);
    pool->v[l].index_copy_(0, slots, v);
    torch::Tensor attn;
    if constexpr (kCudaKernels) {
      if (options_.device.is_cuda()) {
        attn = PagedDecodeAttentionCudaStatic(q.contiguous(), pool->k[l], pool->v[l], g.dev_meta,
                                              g.stride, g.partitions, g.workspace,
                                              pool->block_size, scale);
      }
    }
    if (!attn.defined()) {
      attn = PagedDecodeAttention(q.contiguous(), pool->k[l], pool->v[l], g.seqs,
                                  pool->block_size, scale);
    }
    h = h + Linear(attn, layer.wo);
    torch::Tensor gu = Linear(RmsNorm(h, layer.mlp_norm), layer.w_gate_up);
    h = h + Linear(SiluMul(gu), layer.w_down);
  }
  g.logits.copy_(Logits(h));
}

}  // namespace streamgen
