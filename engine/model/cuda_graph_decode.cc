// The static decode path: buckets, their buffers, CUDA graph capture and
// replay (see cuda_graph_decode.h).
#include "engine/model/cuda_graph_decode.h"

#include <algorithm>
#include <utility>

#include "engine/model/cuda/cuda_ops.h"
#include "engine/model/cuda/paged_attention.h"

namespace streamgen {

bool StaticDecodeEnabled(const ModelConfig& config, const ModelOptions& options) {
  if (options.device.is_cpu()) {
    return options.static_decode_on_cpu &&
           (options.dtype == torch::kFloat32 || options.dtype == torch::kBFloat16);
  }
  // MoE layers plan their expert groups on the host (mlp.h: one copy of the
  // routing to the host per layer), which a CUDA graph cannot capture: MoE
  // models decode eagerly on CUDA.
  return kCudaKernels && options.device.is_cuda() && options.cuda_graphs &&
         config.head_dim <= cuda::kMaxHeadDim && config.moe.num_experts == 0;
}

StaticDecoder::StaticDecoder(const ModelConfig& config, torch::Device device, Body body)
    : config_(config), device_(device), body_(std::move(body)) {}
StaticDecoder::~StaticDecoder() = default;

bool StaticDecoder::Accepts(const std::vector<SeqChunk>& chunks, const KvPool& pool) const {
  if (pool.scratch_slot < 0 || static_cast<int64_t>(chunks.size()) > kMaxGraphRows) {
    return false;
  }
  for (const SeqChunk& c : chunks) {
    if (c.tokens.size() != 1) return false;
  }
  return true;
}

std::vector<int64_t> StaticDecoder::Buckets() const {
  std::vector<int64_t> buckets;
  for (const auto& [rows, g] : graphs_) buckets.push_back(rows);
  return buckets;
}

namespace {

// Layer l's attention window (0: full). A config that names no per-layer
// windows but a sliding window (Mistral as LoadModelConfig reads it today)
// applies it to every layer, as the eager step does.
int64_t LayerWindowOf(const ModelConfig& config, int layer) {
  if (config.layer_window.empty()) return config.sliding_window.value_or(0);
  return config.LayerWindow(layer);
}

}  // namespace

DecodeGraph& StaticDecoder::GetGraph(int64_t rows, int64_t block_size) {
  std::unique_ptr<DecodeGraph>& slot = graphs_[rows];
  if (slot != nullptr && slot->block_size == block_size) return *slot;
  auto g = std::make_unique<DecodeGraph>();
  g->rows = rows;
  g->block_size = block_size;
  const int64_t context = config_.max_position_embeddings;
  g->stride = (context + block_size - 1) / block_size;
  g->partitions = cuda::PagedDecodePartitions(context);
  // The window sets, in the order the layers first use them.
  for (int l = 0; l < config_.num_hidden_layers; ++l) {
    const int64_t w = LayerWindowOf(config_, l);
    auto it = std::find(g->set_window.begin(), g->set_window.end(), w);
    if (it == g->set_window.end()) {
      g->set_window.push_back(w);
      g->set_partitions.push_back(w > 0 ? cuda::PagedDecodePartitions(std::min(w, context))
                                        : g->partitions);
      it = g->set_window.end() - 1;
    }
    g->layer_set.push_back(static_cast<int>(it - g->set_window.begin()));
  }
  if (g->set_window.empty()) {  // no layers: one set, so that the layout stays whole
    g->set_window.push_back(0);
    g->set_partitions.push_back(g->partitions);
  }
  const int64_t sets = static_cast<int64_t>(g->set_window.size());
  g->set_seqs.resize(sets - 1);
  const int64_t meta_size = rows * (g->stride + 1 + sets);
  const bool cuda = device_.is_cuda();
  auto host_opts = [&](torch::ScalarType t) {
    return torch::TensorOptions().dtype(t).pinned_memory(cuda);
  };
  g->host = torch::zeros({3 * rows}, host_opts(torch::kInt64));
  g->host_meta = torch::zeros({meta_size}, host_opts(torch::kInt32));
  if (cuda) {
    g->dev = torch::zeros({3 * rows}, g->host.options().device(device_).pinned_memory(false));
    g->dev_meta =
        torch::zeros({meta_size}, g->host_meta.options().device(device_).pinned_memory(false));
    g->workspace = torch::empty(
        {cuda::PagedDecodeWorkspaceFloats(static_cast<int>(rows), config_.num_attention_heads,
                                          config_.head_dim, static_cast<int>(g->partitions))},
        torch::TensorOptions().dtype(torch::kFloat32).device(device_));
  } else {
    g->dev = g->host;
    g->dev_meta = g->host_meta;
  }
  g->logits = torch::empty({rows, config_.vocab_size},
                           torch::TensorOptions().dtype(torch::kFloat32).device(device_));
  slot = std::move(g);
  return *slot;
}

torch::Tensor StaticDecoder::Step(const std::vector<SeqChunk>& chunks, KvPool* pool) {
  const int64_t b = static_cast<int64_t>(chunks.size());
  const int64_t bs = pool->block_size;
  int64_t rows = 1;
  while (rows < b) rows *= 2;
  DecodeGraph& g = GetGraph(rows, bs);
  const int64_t sets = static_cast<int64_t>(g.set_window.size());
  int64_t* host = g.host.data_ptr<int64_t>();
  int32_t* meta = g.host_meta.data_ptr<int32_t>();
  int32_t* last = meta + rows * (g.stride + 1);
  // Set w's first positions (the layout in cuda_graph_decode.h).
  auto first_of = [&](int64_t w) { return meta + rows * (w == 0 ? g.stride : g.stride + 1 + w); };
  std::fill(meta, meta + rows * g.stride, 0);
  g.seqs.assign(rows, DecodeSeq{});
  for (auto& set : g.set_seqs) set.assign(rows, DecodeSeq{});
  auto seqs_of = [&](int64_t w) -> std::vector<DecodeSeq>& {
    return w == 0 ? g.seqs : g.set_seqs[w - 1];
  };
  // The CPU kernel's padding rows attend to the spare slot alone: position 0
  // of a table whose one block is the spare slot's (num_blocks).
  g.scratch_table.assign(1, static_cast<int>(pool->num_blocks));
  for (int64_t i = 0; i < rows; ++i) {
    if (i < b) {
      const SeqChunk& c = chunks[i];
      CheckChunk(c, bs, config_.max_position_embeddings);
      const int64_t p = c.start;
      host[i] = c.tokens[0];
      host[rows + i] = p;
      host[2 * rows + i] = SlotOf(*c.block_table, p, bs);
      std::copy(c.block_table->begin(), c.block_table->begin() + p / bs + 1, meta + i * g.stride);
      for (int64_t w = 0; w < sets; ++w) {
        DecodeSeq& row = seqs_of(w)[i];
        row = DecodeRow(c, g.set_window[w]);
        first_of(w)[i] = static_cast<int32_t>(row.first);
      }
      last[i] = static_cast<int32_t>(p);
    } else {
      host[i] = 0;
      host[rows + i] = 0;
      host[2 * rows + i] = pool->scratch_slot;
      for (int64_t w = 0; w < sets; ++w) {
        first_of(w)[i] = 0;
        seqs_of(w)[i] = DecodeSeq{g.scratch_table.data(), 0, 0};
      }
      last[i] = -1;
    }
  }
  bool replayed = false;
  if constexpr (kCudaKernels) {
    if (device_.is_cuda()) {
      g.dev.copy_(g.host, /*non_blocking=*/true);
      g.dev_meta.copy_(g.host_meta, /*non_blocking=*/true);
      if (g.graph == nullptr || g.graph_pool != pool->k[0].data_ptr()) {
        g.graph.reset();
        g.graph = CaptureCudaGraph([&] { body_(g, pool); }, device_.index());
        g.graph_pool = pool->k[0].data_ptr();
      }
      ReplayCudaGraph(*g.graph);
      replayed = true;
    }
  }
  if (!replayed) body_(g, pool);  // the CPU (the test hook): no capture
  return g.logits.narrow(0, 0, b).clone();
}

}  // namespace streamgen
