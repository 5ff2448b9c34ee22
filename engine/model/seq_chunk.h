// One sequence's part of a forward step, and where its positions live in the
// paged KV pool (engine/kv/kv_pool.h): shared by the eager step
// (llama_model.cc) and the static decode path (cuda_graph_decode.cc).
// Included only by engine .cc files and tests: it pulls in torch.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

// Not torch/torch.h: see engine/model/llama_model.h.
#include <torch/types.h>

#include "engine/model/cpu_kernels.h"  // DecodeSeq

namespace streamgen {

// One sequence's part of a Step: `tokens` at positions [start, start + n).
// Keys/values of positions [0, start) are already in the pool.
struct SeqChunk {
  std::vector<int> tokens;                        // n >= 1 tokens (n == 1: a decode step)
  int64_t start = 0;                              // position of tokens[0]
  const std::vector<int>* block_table = nullptr;  // covers positions [0, start + n)
  // Logits for every token of the chunk, not only the last: a speculative
  // verify chunk (engine/speculative.h), whose row i checks draft i + 1.
  bool all_logits = false;
};

// The pool slot of position p under a block table. Thread-safe.
inline int64_t SlotOf(const std::vector<int>& table, int64_t p, int64_t block_size) {
  return static_cast<int64_t>(table[p / block_size]) * block_size + p % block_size;
}

// The first key position a query at `start` attends to: 0, or under a
// sliding window (window > 0) the window's first position. Thread-safe.
inline int64_t FirstKey(int64_t start, int64_t window) {
  return window > 0 ? std::max<int64_t>(0, start - window + 1) : 0;
}

// A decode chunk's row for the paged attention kernels: keys [first, start].
// Thread-safe.
inline DecodeSeq DecodeRow(const SeqChunk& c, int64_t window) {
  return {c.block_table->data(), FirstKey(c.start, window), c.start};
}

// Step's check of one chunk: non-empty, inside its block table and the
// model's context of `context` positions (c10::Error otherwise). Thread-safe.
inline void CheckChunk(const SeqChunk& c, int64_t block_size, int64_t context) {
  const int64_t n = static_cast<int64_t>(c.tokens.size());
  TORCH_CHECK(n > 0 && c.block_table != nullptr, "Step: empty chunk");
  TORCH_CHECK(c.start + n <= static_cast<int64_t>(c.block_table->size()) * block_size &&
                  c.start + n <= context,
              "Step: positions ", c.start, " + ", n, " beyond the block table or context");
}

}  // namespace streamgen
