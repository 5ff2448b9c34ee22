// The static decode path (issue 13): decode-only steps run from a batch-size
// bucket's static buffers, each bucket's step captured in a CUDA graph.
//
// A decode-only step of B <= kMaxGraphRows sequences is padded to a bucket of
// R >= B rows (the next power of two) and runs entirely from the bucket's
// static buffers: token ids, positions, write slots and the attention
// metadata (block tables padded to the model's context, first and last key
// positions) are written on the host, copied to the device in two
// asynchronous copies, and the step reads them from there, so its kernels and
// their arguments are the same on every step of that bucket. On CUDA that
// step is captured once per bucket (CaptureCudaGraph: first use, warm-up,
// capture) and replayed; the launch overhead of ~15 kernels per layer goes.
// Padding rows decode token 0 at position 0 and write their keys and values
// to the pool's spare slot; the attention kernel gives them zeros
// (last = -1), and their logits are dropped. Rotary uses the libtorch ops
// over position tensors (the fused CPU pass needs host positions). Prefill,
// mixed steps and larger batches stay eager.
//
// Host buffers are reused each step: the previous step's copies have run by
// then, because its logits were read on the host (the sampler's copy) before
// the engine plans the next step.
//
// This file owns the buckets, their buffers and graphs; the forward pass over
// a bucket's buffers (LlamaModel::RunDecodeBody) stays with the model in
// llama_model.cc. Included only by engine/model .cc files: it pulls in torch.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <vector>

// Not torch/torch.h: see engine/model/llama_model.h.
#include <torch/types.h>

#include "engine/kv/kv_pool.h"
#include "engine/model/cpu_kernels.h"  // DecodeSeq
#include "engine/model/llama_model.h"  // ModelOptions, kMaxGraphRows
#include "engine/model/model_config.h"
#include "engine/model/seq_chunk.h"

namespace streamgen {

struct CudaGraphHandle;  // engine/model/cuda/cuda_ops.h

// Per-layer attention windows (ModelConfig::layer_window: Gemma 3's sliding
// and global layers, Qwen 2's max_window_layers, Mistral's one window): the
// layers are grouped into window sets, one per distinct window, numbered in
// the order the layers first use them (set 0 is layer 0's window). Rows of
// different sets differ only in their first key position, so a bucket holds
// the block tables and last positions once and one `first` row per set:
//
//   host_meta / dev_meta, int32: tables [R, stride] | first of set 0 [R] |
//                                last [R] | first of set 1 [R] | ... set W-1
//
// The first R * (stride + 2) elements are exactly the one-window layout
// (tables, first, last), so a one-window model costs what it did before.
// The forward pass picks layer l's rows with WindowSet(l) (CUDA:
// PagedDecodeAttentionCudaStatic's window_set), Partitions(l) and Seqs(l)
// (the CPU kernel).
//
// One batch-size bucket's static buffers (and CUDA graph): what the decode
// body reads (dev, dev_meta, seqs, workspace) and writes (logits).
struct DecodeGraph {
  int64_t rows = 0;             // R
  int64_t block_size = 0;       // of the pool it was made for
  int64_t stride = 0;           // block-table entries per row: ceil(context / block_size)
  int64_t partitions = 0;       // cuda::PagedDecodePartitions(context): the workspace's bound
  torch::Tensor host;           // int64 [3R]: ids, positions, write slots (pinned on CUDA)
  torch::Tensor host_meta;      // int32 [R * (stride + 1 + W)]: see above (pinned on CUDA)
  torch::Tensor dev, dev_meta;  // their device copies (the same tensors on the CPU)
  torch::Tensor workspace;      // the attention kernel's scratch (CUDA)
  torch::Tensor logits;         // [R, vocab] float32: the step's output
  std::vector<DecodeSeq> seqs;  // the CPU path's attention rows of window set 0 (host pointers)
  // Window sets 1 .. W-1's rows for the CPU path: set_seqs[w - 1] is set w's [R] rows.
  std::vector<std::vector<DecodeSeq>> set_seqs;
  std::vector<int> scratch_table;
  // Per window set: its window (0: full attention) and the partitions a
  // row of it needs at most (fewer than `partitions` under a window).
  std::vector<int64_t> set_window, set_partitions;
  std::vector<int> layer_set;  // [layers]: each layer's window set

  // Layer l's window set, the partition bound of its launch and its CPU
  // rows. Thread-compatible (the loop thread's).
  int WindowSet(int64_t layer) const { return layer_set[layer]; }
  int64_t Partitions(int64_t layer) const { return set_partitions[layer_set[layer]]; }
  const std::vector<DecodeSeq>& Seqs(int64_t layer) const {
    const int w = layer_set[layer];
    return w == 0 ? seqs : set_seqs[w - 1];
  }
  std::shared_ptr<CudaGraphHandle> graph;
  // The pool the graph was captured with: a graph bakes in the pool's
  // addresses, so a step on another pool (a tool's private caches) captures
  // again.
  const void* graph_pool = nullptr;
};

// Whether a model of `config` loaded with `options` uses the static decode
// path: on CUDA in a build with the CUDA kernels, with cuda_graphs and
// head_dim <= cuda::kMaxHeadDim and no MoE layers; on the CPU only with the test hook
// static_decode_on_cpu, in float32 or bfloat16. Thread-safe.
bool StaticDecodeEnabled(const ModelConfig& config, const ModelOptions& options);

// The buckets of one model's static decode path. Not thread-safe (the
// engine's loop thread owns the model, and with it this).
class StaticDecoder {
 public:
  // Runs the decode forward pass over `g`'s device buffers and `pool`,
  // writing g.logits (LlamaModel::RunDecodeBody). What a graph captures.
  using Body = std::function<void(DecodeGraph& g, KvPool* pool)>;

  // `config` must outlive this (the model's own).
  StaticDecoder(const ModelConfig& config, torch::Device device, Body body);
  ~StaticDecoder();

  // Whether a step of `chunks` on `pool` takes this path: decodes only (one
  // token each), at most kMaxGraphRows of them, on a pool with the spare slot.
  bool Accepts(const std::vector<SeqChunk>& chunks, const KvPool& pool) const;

  // One decode step of `chunks` (Accepts is true) on `pool`: pads them to
  // their bucket, writes the bucket's buffers, and runs its body (on CUDA:
  // captures it on first use, then replays it). Returns float32 logits
  // [chunks, vocab] on the model's device.
  torch::Tensor Step(const std::vector<SeqChunk>& chunks, KvPool* pool);

  // Buckets captured or set up so far (tests, logs).
  std::vector<int64_t> Buckets() const;

 private:
  // The bucket of `rows` rows for a pool of `block_size`, made on first use.
  DecodeGraph& GetGraph(int64_t rows, int64_t block_size);

  const ModelConfig& config_;
  const torch::Device device_;
  const Body body_;
  std::map<int64_t, std::unique_ptr<DecodeGraph>> graphs_;
};

}  // namespace streamgen
