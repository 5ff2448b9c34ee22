// The causal LM forward pass of every supported family (model_config.h) in
// libtorch (CPU or CUDA). Included only by
// engine .cc files and tests: it pulls in torch.
#pragma once

#include <memory>
#include <string>
#include <vector>

// torch/types.h and torch/utils.h, not torch/torch.h: the whole C++ frontend
// (nn, optim, data, jit) doubles the compile time of every file that includes this.
#include <torch/types.h>
#include <torch/utils.h>

#include "absl/status/statusor.h"
#include "engine/kv/kv_pool.h"
#include "engine/model/cpu_kernels.h"
#include "engine/model/model_config.h"
#include "engine/model/rope.h"
#include "engine/model/seq_chunk.h"

namespace streamgen {

struct DecodeGraph;    // cuda_graph_decode.h
class StaticDecoder;   // cuda_graph_decode.h

// Weight-only quantization of the linear layers (q, k, v, o, gate, up, down,
// lm_head; the embedding and the norms stay in the compute dtype).
enum class Quantization { kNone, kInt8 };

struct ModelOptions {
  torch::Device device = torch::kCPU;
  torch::ScalarType dtype = torch::kFloat32;  // compute dtype (weights are converted at load)
  // kInt8 (CPU only): symmetric per-output-channel int8 computed at load from
  // the checkpoint's weights (cpu_kernels.h, QuantizeInt8); activations stay
  // in `dtype`.
  Quantization quantization = Quantization::kNone;
  // CUDA (a build with the CUDA kernels): decode-only steps of up to
  // kMaxGraphRows sequences run from static buffers, padded to a batch-size
  // bucket (1, 2, 4, ..., 256), and each bucket's step is captured in a CUDA
  // graph the first time it is used, then replayed (cuda_graph_decode.h).
  // false: every step eager.
  bool cuda_graphs = true;
  // Test hook: the same static-buffer, bucket-padded decode path on the CPU,
  // without capture (tests/model_test.cc checks it against the eager path).
  bool static_decode_on_cpu = false;
  // The context served, in positions (vLLM's --max-model-len): at most
  // config.json's max_position_embeddings, which it replaces in the model's
  // config (the KV cache, the rotary tables and Phi-3's longrope choice of
  // factors follow it). 0: max_position_embeddings.
  int max_model_len = 0;
};

// The largest decode batch a static-buffer step (a CUDA graph) covers.
inline constexpr int64_t kMaxGraphRows = 256;

// "none" | "int8" (flags, GetModelInfo).
const char* QuantizationName(Quantization q);
absl::StatusOr<Quantization> ParseQuantization(const std::string& name);

class LlamaModel {
 public:
  // Loads and validates config.json + *.safetensors in `dir`.
  static absl::StatusOr<std::unique_ptr<LlamaModel>> Load(const std::string& dir,
                                                          const ModelOptions& options);

  ~LlamaModel();

  const ModelConfig& config() const { return config_; }
  const ModelOptions& options() const { return options_; }

  // A pool (engine/kv/kv_pool.h) of `num_blocks` blocks of `block_size`
  // positions in the model's dtype on its device, with the static decode
  // path's spare slot when that path is on.
  KvPool NewKvPool(int64_t num_blocks, int64_t block_size) const;
  // Bytes one KV block takes over all layers (keys and values) in the model's dtype.
  int64_t KvBlockBytes(int64_t block_size) const;

  // One forward pass over every chunk (prefill chunks and decodes together):
  // the linear layers run on all tokens at once, attention per sequence
  // (decodes batched). Writes the chunks' keys/values into `pool`. Returns
  // float32 logits on the model's device: one row for the last token of each
  // chunk, or one per token for a chunk with SeqChunk::all_logits, in chunk
  // order ([chunks + extra rows, vocab]); [total tokens, vocab] when all_logits.
  // Chunks with SeqChunk::all_logits always take the eager path (the static
  // decode path and its CUDA graphs take one-token chunks only).
  // Not thread-safe (the engine's loop thread owns the model).
  torch::Tensor Step(const std::vector<SeqChunk>& chunks, KvPool* pool, bool all_logits = false);

  struct Layer;

 private:
  // Tests' and tools' access (llama_model_testing.h): private caches, the
  // static path's buckets, the decode step's weight bytes.
  friend class LlamaModelTesting;

  LlamaModel(ModelConfig config, ModelOptions options);
  ModelConfig config_;
  ModelOptions options_;
  std::vector<std::unique_ptr<Layer>> layers_;
  torch::Tensor embed_;        // [vocab, hidden]
  torch::Tensor embed_scale_;  // scalar in the compute dtype (Gemma), or undefined
  torch::Tensor final_norm_;   // [hidden] (Gemma: 1 + w in float32)
  LinearWeight lm_head_;       // [vocab, hidden] (the embedding when tied and not quantized)
  RopeTables rope_;            // [max_positions, RD] each, compute dtype (rotate-half layout)
  RopeTables rope_local_;      // Gemma 3's sliding layers' tables, or undefined
  // longrope: rope_ holds the short factors' rows then the long ones'; a
  // chunk whose last position is >= this uses the long rows. 0: one table.
  int64_t long_rope_from_ = 0;
  // The distinct attention windows of the layers (0: full), each layer's
  // Layer::window_index into it: a step plans attention once per window.
  std::vector<int> windows_;

  // How a step rotates q and k: the fused CPU kernel over host positions, or
  // the op path over table rows (index 0: global table, 1: local).
  struct Rotary {
    const std::vector<int64_t>* positions = nullptr;       // rows of rope_local_
    const std::vector<int64_t>* rope_positions = nullptr;  // rows of rope_
    torch::Tensor cos[2], sin[2];  // [T, 1, RD]
  };
  // positions [T] and their rows of rope_ (RopeRow) on the device.
  Rotary RotaryRows(const torch::Tensor& positions, const torch::Tensor& rope_rows) const;
  // The row of rope_ that rotates `position`, in a chunk whose last position is `last`.
  int64_t RopeRow(int64_t position, int64_t last) const {
    return long_rope_from_ > 0 && last >= long_rope_from_
               ? position + config_.max_position_embeddings
               : position;
  }

  torch::Tensor Linear(const torch::Tensor& x, const LinearWeight& w,
                       const torch::Tensor& bias = {}) const;
  torch::Tensor Norm(const torch::Tensor& x, const torch::Tensor& w) const;
  torch::Tensor ApplyRope(const torch::Tensor& x, const torch::Tensor& cos,
                          const torch::Tensor& sin) const;
  torch::Tensor Embed(const torch::Tensor& ids) const;
  torch::Tensor AttentionInput(size_t layer, const torch::Tensor& h, const Rotary& rot) const;
  torch::Tensor LayerOutput(size_t layer, const torch::Tensor& h, const torch::Tensor& attn) const;
  struct AttentionBatch;
  AttentionBatch PlanAttention(const std::vector<SeqChunk>& chunks, const std::vector<size_t>& seqs,
                               const std::vector<int64_t>& rows0, int64_t n, int64_t block_size,
                               int64_t window) const;
  torch::Tensor Attend(const torch::Tensor& q, const AttentionBatch& batch, const KvPool& pool,
                       int layer) const;
  torch::Tensor Logits(const torch::Tensor& h) const;

  // Bytes of weights the decode step reads (everything but the embedding table).
  int64_t DecodeWeightBytes() const;
  // The static decode path's forward pass over one bucket's buffers
  // (cuda_graph_decode.h: what a CUDA graph captures).
  void RunDecodeBody(DecodeGraph& g, KvPool* pool);
  // The static decode path (cuda_graph_decode.h); null when it is off
  // (StaticDecodeEnabled).
  std::unique_ptr<StaticDecoder> static_decoder_;
};

}  // namespace streamgen
