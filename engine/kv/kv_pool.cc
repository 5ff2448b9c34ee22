#include "engine/kv/kv_pool.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "engine/model/device.h"

namespace streamgen {

KvPool NewKvPool(const ModelConfig& config, int64_t num_blocks, int64_t block_size,
                 const torch::TensorOptions& options, bool scratch_slot) {
  KvPool pool;
  pool.block_size = block_size;
  pool.num_blocks = num_blocks;
  const int64_t slots = num_blocks * block_size + (scratch_slot ? 1 : 0);
  if (scratch_slot) pool.scratch_slot = num_blocks * block_size;
  for (int i = 0; i < config.num_hidden_layers; ++i) {
    pool.k.push_back(ZerosHugePages({slots, config.num_key_value_heads, config.head_dim}, options));
    pool.v.push_back(ZerosHugePages({slots, config.num_key_value_heads, config.head_dim}, options));
  }
  return pool;
}

int64_t KvBlockBytes(const ModelConfig& config, int64_t block_size, torch::ScalarType dtype) {
  return 2LL * config.num_hidden_layers * block_size * config.num_key_value_heads *
         config.head_dim * static_cast<int64_t>(c10::elementSize(dtype));
}

absl::StatusOr<int64_t> KvPoolBlocks(
    const KvPoolSizing& sizing,
    const std::function<absl::StatusOr<DeviceMemory>()>& device_memory) {
  const int64_t per_context = (sizing.context_tokens + sizing.block_size - 1) / sizing.block_size;
  int64_t blocks = sizing.kv_cache_blocks;
  int64_t kv_bytes = sizing.kv_cache_bytes;
  if (blocks == 0 && sizing.gpu_memory_fraction > 0) {
    SG_ASSIGN_OR_RETURN(const DeviceMemory memory, device_memory());
    const int64_t in_use = memory.total - memory.free;  // the weights, and anything else's
    kv_bytes =
        static_cast<int64_t>(sizing.gpu_memory_fraction * static_cast<double>(memory.total)) -
        in_use - sizing.activation_reserve;
    if (kv_bytes < sizing.block_bytes) {
      return absl::ResourceExhaustedError(
          absl::StrCat("gpu_memory_fraction ", sizing.gpu_memory_fraction, " of ", memory.total,
                       " bytes leaves no room for the KV cache: ", in_use,
                       " bytes are in use after loading the model and ", sizing.activation_reserve,
                       " are kept for activations"));
    }
  }
  if (blocks == 0) {
    blocks = std::min<int64_t>(per_context * sizing.max_batch, kv_bytes / sizing.block_bytes);
  }
  if (blocks < 1 || blocks > (1LL << 30)) {
    return absl::InvalidArgumentError(
        absl::StrCat("kv_cache_blocks: ", blocks, " blocks of ", sizing.block_size,
                     " tokens (raise kv_cache_bytes or set kv_cache_blocks)"));
  }
  return blocks;
}

}  // namespace streamgen
