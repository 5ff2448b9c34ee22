// The KV cache's tensors: a pool of fixed-size blocks shared by all sequences,
// allocated once at start-up, and how many blocks it gets. Needs torch
// (library streamgen_kv_pool); which block holds what is torch-free
// (kv_cache_manager.h).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

// Not torch/torch.h: see engine/model/llama_model.h.
#include <torch/types.h>

#include "absl/status/statusor.h"
#include "engine/model/model_config.h"

namespace streamgen {

// The KV cache: a pool of fixed-size blocks shared by all sequences, allocated
// once. A sequence's block table maps position p to block table[p / block_size],
// slot p % block_size.
// Slot-major: a position's keys for all heads are one contiguous row, so a
// block is one contiguous run of block_size * kv_heads * head_dim values (the
// paged decode kernel streams whole blocks).
// Not thread-safe: the engine's loop thread (which owns the model) writes and
// reads it.
struct KvPool {
  std::vector<torch::Tensor> k;  // per layer: [num_blocks * block_size (+1), kv_heads, head_dim]
  std::vector<torch::Tensor> v;  // per layer: [num_blocks * block_size (+1), kv_heads, head_dim]
  int64_t block_size = 0;
  int64_t num_blocks = 0;
  // A spare slot past the last block (the +1 above), in pools made for the
  // static decode path: the padding rows of a batch-size bucket write their
  // keys and values there. -1: none (the static path is not used).
  int64_t scratch_slot = -1;
};

// A zero-filled pool of `num_blocks` blocks of `block_size` positions for a
// model of `config` (num_hidden_layers tensors each for keys and values of
// num_key_value_heads x head_dim), of `options`' dtype and device, on the CPU
// in huge-page-advised memory (engine/model/device.h, ZerosHugePages).
// `scratch_slot`: add the static decode path's spare slot. Thread-safe.
KvPool NewKvPool(const ModelConfig& config, int64_t num_blocks, int64_t block_size,
                 const torch::TensorOptions& options, bool scratch_slot);

// Bytes one block takes over all layers (keys and values) in `dtype`.
// Thread-safe.
int64_t KvBlockBytes(const ModelConfig& config, int64_t block_size, torch::ScalarType dtype);

// What sizes the pool (EngineOptions' fields of the same names, and the model).
struct KvPoolSizing {
  int64_t context_tokens = 0;      // the model's max_position_embeddings
  int64_t block_size = 16;         // tokens per block (kv_block_size)
  int64_t max_batch = 16;          // full contexts the default pool holds
  int64_t kv_cache_blocks = 0;     // > 0: exactly this many blocks
  int64_t kv_cache_bytes = 0;      // the budget when kv_cache_blocks is 0
  double gpu_memory_fraction = 0;  // > 0 (and kv_cache_blocks 0): the budget is this
                                   // share of the device's memory, less what is in use
                                   // and activation_reserve
  int64_t activation_reserve = 0;  // bytes kept for activations (kGpuActivationReserve)
  int64_t block_bytes = 0;         // KvBlockBytes(config, block_size, dtype), > 0
};

// A device's free and total memory, in bytes.
struct DeviceMemory {
  int64_t free = 0;
  int64_t total = 0;
};

// The pool's number of blocks: kv_cache_blocks, or else enough for max_batch
// full contexts within the byte budget (kv_cache_bytes, or the share of the
// device that gpu_memory_fraction gives, read from `device_memory`, which is
// called only then). RESOURCE_EXHAUSTED when that share leaves less than a
// block; INVALID_ARGUMENT when the result is outside [1, 2^30].
// Thread-safe (as far as `device_memory` is).
absl::StatusOr<int64_t> KvPoolBlocks(
    const KvPoolSizing& sizing, const std::function<absl::StatusOr<DeviceMemory>()>& device_memory);

}  // namespace streamgen
