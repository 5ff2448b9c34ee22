// What tests, the benchmarks and tools use of LlamaModel beyond what the
// engine does: private per-sequence caches that run without a scheduler
// (the reference comparisons, perplexity, single-sequence timings), the
// static decode path's buckets and the decode step's weight bytes. Library
// streamgen_model_testing, which only tests/, bench/ and tools/ link.
// Included only by .cc files: it pulls in torch.
#pragma once

#include <cstdint>
#include <vector>

// Not torch/torch.h: see engine/model/llama_model.h.
#include <torch/types.h>

#include "engine/kv/kv_pool.h"
#include "engine/model/llama_model.h"

namespace streamgen {

// A private cache for one sequence (a pool with an identity block table), for
// tests, tools and benchmarks that do not schedule. Not thread-safe, like
// KvPool.
struct KvCache {
  KvPool pool;
  std::vector<int> table;  // 0, 1, 2, ...
  int64_t length = 0;      // positions filled
  int64_t capacity = 0;
};

// A private cache for up to `capacity` positions (<= max_position_embeddings)
// in `model`'s dtype on its device (LlamaModel::NewKvPool, blocks of 16).
// Thread-safe.
KvCache NewCache(const LlamaModel& model, int64_t capacity);

// LlamaModel::Step over one private cache: runs `tokens` at positions
// [cache->length, cache->length + n) and advances cache->length. Returns
// float32 logits [n, vocab] when all_logits, else [1, vocab]. c10::Error
// ("KV cache overflow") when the tokens do not fit. Not thread-safe.
torch::Tensor Forward(LlamaModel& model, const std::vector<int>& tokens, KvCache* cache,
                      bool all_logits = false);

// One decode step for several private caches: tokens[i] goes to caches[i] at
// its own position. Returns float32 logits [batch, vocab]. Not thread-safe.
torch::Tensor DecodeBatch(LlamaModel& model, const std::vector<int>& tokens,
                          const std::vector<KvCache*>& caches);

// Buckets of `model`'s static decode path captured or set up so far (empty
// when the path is off). Not thread-safe.
std::vector<int64_t> DecodeBuckets(const LlamaModel& model);

// Bytes of weights `model`'s decode step reads (everything but the embedding
// table). Thread-safe.
int64_t DecodeWeightBytes(const LlamaModel& model);

}  // namespace streamgen
