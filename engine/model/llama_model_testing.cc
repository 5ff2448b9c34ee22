// Private caches and inspection of LlamaModel for tests, benchmarks and tools
// (see llama_model_testing.h).
#include "engine/model/llama_model_testing.h"

#include "engine/model/cuda_graph_decode.h"

namespace streamgen {

// LlamaModel's friend: the private state the functions below read.
class LlamaModelTesting {
 public:
  static std::vector<int64_t> DecodeBuckets(const LlamaModel& model) {
    if (model.static_decoder_ == nullptr) return {};
    return model.static_decoder_->Buckets();
  }

  static int64_t DecodeWeightBytes(const LlamaModel& model) { return model.DecodeWeightBytes(); }
};

std::vector<int64_t> DecodeBuckets(const LlamaModel& model) {
  return LlamaModelTesting::DecodeBuckets(model);
}

int64_t DecodeWeightBytes(const LlamaModel& model) {
  return LlamaModelTesting::DecodeWeightBytes(model);
}

KvCache NewCache(const LlamaModel& model, int64_t capacity) {
  constexpr int64_t kBlock = 16;
  KvCache cache;
  const int64_t blocks = (capacity + kBlock - 1) / kBlock;
  cache.pool = model.NewKvPool(blocks, kBlock);
  for (int64_t i = 0; i < blocks; ++i) cache.table.push_back(static_cast<int>(i));
  cache.capacity = capacity;
  return cache;
}

torch::Tensor Forward(LlamaModel& model, const std::vector<int>& tokens, KvCache* cache,
                      bool all_logits) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  TORCH_CHECK(n > 0 && cache->length + n <= cache->capacity, "KV cache overflow: ", cache->length,
              " + ", n, " > ", cache->capacity);
  SeqChunk chunk{tokens, cache->length, &cache->table};
  torch::Tensor logits = model.Step({chunk}, &cache->pool, all_logits);
  cache->length += n;
  return logits;
}

torch::Tensor DecodeBatch(LlamaModel& model, const std::vector<int>& tokens,
                          const std::vector<KvCache*>& caches) {
  TORCH_CHECK(!tokens.empty() && caches.size() == tokens.size(), "DecodeBatch: bad batch");
  // Private caches are separate pools: batch through one shared Step only when
  // they share a pool; otherwise the linear layers still batch, attention per cache.
  std::vector<SeqChunk> chunks;
  for (size_t i = 0; i < tokens.size(); ++i) {
    TORCH_CHECK(caches[i]->length < caches[i]->capacity, "KV cache overflow in DecodeBatch");
  }
  if (tokens.size() == 1) return Forward(model, tokens, caches[0]);
  // Copy each private cache's keys into one temporary pool (tests and tools only).
  const size_t layers = static_cast<size_t>(model.config().num_hidden_layers);
  KvPool pool;
  pool.block_size = caches[0]->pool.block_size;
  std::vector<std::vector<int>> tables(tokens.size());
  int64_t offset = 0;
  for (size_t l = 0; l < layers; ++l) {
    std::vector<torch::Tensor> ks, vs;
    for (auto* c : caches) {  // (without their spare slots)
      ks.push_back(c->pool.k[l].narrow(0, 0, c->pool.num_blocks * c->pool.block_size));
      vs.push_back(c->pool.v[l].narrow(0, 0, c->pool.num_blocks * c->pool.block_size));
    }
    pool.k.push_back(torch::cat(ks, 0));
    pool.v.push_back(torch::cat(vs, 0));
  }
  for (size_t i = 0; i < tokens.size(); ++i) {
    for (int b : caches[i]->table) tables[i].push_back(b + static_cast<int>(offset));
    offset += caches[i]->pool.num_blocks;
    chunks.push_back(SeqChunk{{tokens[i]}, caches[i]->length, &tables[i]});
  }
  pool.num_blocks = offset;
  torch::Tensor logits = model.Step(chunks, &pool);
  // Write the new keys back to each private cache.
  offset = 0;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const int64_t slots = caches[i]->pool.num_blocks * pool.block_size;
    for (size_t l = 0; l < layers; ++l) {
      caches[i]->pool.k[l].narrow(0, 0, slots).copy_(pool.k[l].narrow(0, offset, slots));
      caches[i]->pool.v[l].narrow(0, 0, slots).copy_(pool.v[l].narrow(0, offset, slots));
    }
    offset += slots;
    caches[i]->length += 1;
  }
  return logits;
}

}  // namespace streamgen
