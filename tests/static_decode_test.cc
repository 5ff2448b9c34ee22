// The static decode path's attention metadata with per-layer windows
// (engine/model/cuda_graph_decode.h): the window sets a model's layers fall
// into, each layer's set, the partition bound of each set, the CPU rows
// (DecodeGraph::Seqs) and the device metadata's layout that
// PagedDecodeAttentionCudaStatic reads, checked against positions and
// windows computed here from the definition (first = max(0, p - W + 1)).
// The decoder runs on the CPU with a body that records what the forward pass
// would be given, so this needs no model and no GPU. The forward pass itself
// (static vs eager, bit for bit) is model_test's StaticDecode.
#include <gtest/gtest.h>
#include <torch/types.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "engine/kv/kv_pool.h"
#include "engine/model/cuda/paged_attention.h"
#include "engine/model/cuda_graph_decode.h"
#include "engine/model/model_config.h"
#include "engine/model/seq_chunk.h"

namespace streamgen {
namespace {

ModelConfig Config(std::vector<int> layer_window, std::optional<int> sliding_window) {
  ModelConfig c;
  c.num_hidden_layers = static_cast<int>(std::max<size_t>(layer_window.size(), 4));
  c.layer_window = std::move(layer_window);
  c.sliding_window = sliding_window;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 16;
  c.hidden_size = 64;
  c.vocab_size = 10;
  c.max_position_embeddings = 1000;  // 4 partitions of 256 positions
  return c;
}

// What one Step handed the body, copied out of the bucket.
struct Seen {
  std::vector<int> layer_set;
  std::vector<int64_t> set_window, set_partitions, partitions_of_layer;
  std::vector<std::vector<DecodeSeq>> seqs_of_layer;  // [layer][R] (tables: don't dereference)
  std::vector<int> first_table_entry;                 // [layer]: of the last row's table
  std::vector<int32_t> meta;
  int64_t rows = 0, stride = 0;
};

// Runs one decode step of `chunks` through a StaticDecoder on the CPU.
Seen RunStep(const ModelConfig& config, const std::vector<SeqChunk>& chunks, KvPool* pool) {
  Seen seen;
  StaticDecoder decoder(config, torch::kCPU, [&](DecodeGraph& g, KvPool*) {
    seen.layer_set = g.layer_set;
    seen.set_window = g.set_window;
    seen.set_partitions = g.set_partitions;
    for (int l = 0; l < config.num_hidden_layers; ++l) {
      EXPECT_EQ(g.WindowSet(l), g.layer_set[l]);
      seen.partitions_of_layer.push_back(g.Partitions(l));
      seen.seqs_of_layer.push_back(g.Seqs(l));
      // The padding rows' table is the bucket's: read while it lives.
      seen.first_table_entry.push_back(g.Seqs(l).back().table[0]);
    }
    const int32_t* m = g.dev_meta.data_ptr<int32_t>();
    seen.meta.assign(m, m + g.dev_meta.numel());
    seen.rows = g.rows;
    seen.stride = g.stride;
    g.logits.zero_();
  });
  decoder.Step(chunks, pool);
  return seen;
}

KvPool Pool(int64_t num_blocks, int64_t block_size) {
  KvPool pool;
  pool.block_size = block_size;
  pool.num_blocks = num_blocks;
  pool.scratch_slot = num_blocks * block_size;
  return pool;
}

// Gemma 3's pattern (sliding, sliding, global, repeated) with a window of
// 300, and three sequences: a short one, one just past the window, one near
// the context's end; padded to a bucket of 4 rows.
TEST(StaticDecodeWindows, OneMetadataSetPerDistinctWindow) {
  const ModelConfig config = Config({300, 300, 0, 300, 300, 0}, 300);
  const int64_t bs = 16;
  KvPool pool = Pool(200, bs);
  std::vector<std::vector<int>> tables(3);
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 63; ++j) tables[i].push_back(199 - (i + 3 * j) % 200);
  }
  const std::vector<int64_t> pos = {7, 301, 990};
  std::vector<SeqChunk> chunks;
  for (int i = 0; i < 3; ++i) chunks.push_back(SeqChunk{{1}, pos[i], &tables[i]});
  const Seen s = RunStep(config, chunks, &pool);

  EXPECT_EQ(s.set_window, (std::vector<int64_t>{300, 0}));
  EXPECT_EQ(s.layer_set, (std::vector<int>{0, 0, 1, 0, 0, 1}));
  // 300 positions span 2 partitions; the full context 4.
  EXPECT_EQ(s.set_partitions, (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(s.partitions_of_layer, (std::vector<int64_t>{2, 2, 4, 2, 2, 4}));
  ASSERT_EQ(s.rows, 4);
  ASSERT_EQ(s.stride, (1000 + bs - 1) / bs);
  const int64_t r = s.rows, stride = s.stride;
  // tables [R, stride] | first of set 0 [R] | last [R] | first of set 1 [R]
  ASSERT_EQ(static_cast<int64_t>(s.meta.size()), r * (stride + 3));
  for (int l = 0; l < config.num_hidden_layers; ++l) {
    const int64_t window = config.layer_window[l];
    const int set = s.layer_set[l];
    const int64_t first_at = set == 0 ? r * stride : r * (stride + 2);
    ASSERT_EQ(static_cast<int64_t>(s.seqs_of_layer[l].size()), r);
    for (int i = 0; i < 3; ++i) {
      const int64_t want_first = window > 0 ? std::max<int64_t>(0, pos[i] - window + 1) : 0;
      const DecodeSeq& row = s.seqs_of_layer[l][i];
      EXPECT_EQ(row.first, want_first) << "layer " << l << " row " << i;
      EXPECT_EQ(row.last, pos[i]) << "layer " << l << " row " << i;
      EXPECT_EQ(row.table, tables[i].data());
      EXPECT_EQ(s.meta[first_at + i], want_first) << "layer " << l << " row " << i;
      EXPECT_EQ(s.meta[r * (stride + 1) + i], pos[i]);
      // The partition bound holds for every real row of the layer's set.
      EXPECT_LE(cuda::PagedDecodePartitions(pos[i] - want_first + 1), s.partitions_of_layer[l]);
    }
    // The padding row: no keys (last -1) in the device metadata, the spare
    // slot alone for the CPU kernel.
    EXPECT_EQ(s.meta[r * (stride + 1) + 3], -1);
    EXPECT_EQ(s.meta[first_at + 3], 0);
    EXPECT_EQ(s.seqs_of_layer[l][3].first, 0);
    EXPECT_EQ(s.seqs_of_layer[l][3].last, 0);
    EXPECT_EQ(s.first_table_entry[l], pool.num_blocks);
  }
  // Each row's block table up to its last position, then zeros.
  for (int i = 0; i < 3; ++i) {
    for (int64_t j = 0; j < stride; ++j) {
      const int want = j <= pos[i] / bs ? tables[i][j] : 0;
      EXPECT_EQ(s.meta[i * stride + j], want) << "row " << i << " entry " << j;
    }
  }
}

// One window for every layer (Mistral as read today: sliding_window, no
// layer_window) and no window at all: one set, and the metadata keeps the
// one-window layout and size, rows * (stride + 2).
TEST(StaticDecodeWindows, OneWindowKeepsTheOneSetLayout) {
  for (const ModelConfig& config : {Config({}, 5), Config({}, std::nullopt)}) {
    KvPool pool = Pool(8, 4);
    std::vector<int> table = {3, 1, 2};
    const Seen s = RunStep(config, {SeqChunk{{1}, 9, &table}}, &pool);
    const int64_t window = config.sliding_window.value_or(0);
    EXPECT_EQ(s.set_window, (std::vector<int64_t>{window}));
    EXPECT_EQ(s.layer_set, std::vector<int>(config.num_hidden_layers, 0));
    ASSERT_EQ(s.rows, 1);
    ASSERT_EQ(static_cast<int64_t>(s.meta.size()), s.stride + 2);
    EXPECT_EQ(s.meta[s.stride], window > 0 ? 9 - window + 1 : 0);  // first
    EXPECT_EQ(s.meta[s.stride + 1], 9);                            // last
    EXPECT_EQ(s.seqs_of_layer[0][0].first, window > 0 ? 5 : 0);
    EXPECT_EQ(s.set_partitions, (std::vector<int64_t>{window > 0 ? 1 : 4}));
  }
}

// Qwen 2's max_window_layers: the first layers full, the rest windowed (set
// 0 is layer 0's window, whichever it is); a window longer than the context
// is bounded by the context's partitions.
TEST(StaticDecodeWindows, SetsInTheOrderLayersFirstUseThem) {
  const ModelConfig config = Config({0, 0, 4096, 4096}, 4096);
  KvPool pool = Pool(8, 4);
  std::vector<int> table = {0, 1, 2, 3};
  const Seen s = RunStep(config, {SeqChunk{{1}, 12, &table}}, &pool);
  EXPECT_EQ(s.set_window, (std::vector<int64_t>{0, 4096}));
  EXPECT_EQ(s.layer_set, (std::vector<int>{0, 0, 1, 1}));
  EXPECT_EQ(s.set_partitions, (std::vector<int64_t>{4, 4}));
  EXPECT_EQ(s.seqs_of_layer[3][0].first, 0);
}

}  // namespace
}  // namespace streamgen
