// A pool of KV-cache block ids, created once at start-up. Torch-free: the
// tensors are kv_pool.h's; this only says which block ids are in use.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

namespace streamgen {

// Hands out ids in [0, num_blocks). Freed ids are reused first (LIFO), and a
// fresh allocator hands out 0, 1, 2, ... in order.
//
// Each block carries a reference count (0: free). Allocate() hands a block out
// with one reference; Retain() adds one (a block shared by several sequences,
// or held by the prefix cache); Free() drops one and returns the block to the
// pool when none is left. A bad Free() (double free, or an id outside the
// pool) is refused: the pool is never corrupted.
// A refused Free() is written to stderr and counted (num_rejected_frees());
// debug builds (no NDEBUG) also assert, since it is a caller's bug.
//
// Not thread-safe: owned by the engine's loop thread (through the Scheduler's
// KvCacheManager, kv_cache_manager.h).
class BlockAllocator {
 public:
  // num_blocks < 0 is taken as 0.
  explicit BlockAllocator(int num_blocks);

  // A free block id, or nullopt when the pool is exhausted.
  std::optional<int> Allocate();

  // Drops one reference to `block`; at none it goes back to the pool. Refused
  // (see above) unless it is allocated.
  void Free(int block);

  // One more reference to allocated `block` (refused like Free otherwise).
  void Retain(int block);

  bool IsAllocated(int block) const;
  int RefCount(int block) const;  // 0 for a free block or an id outside the pool
  int num_free() const { return static_cast<int>(free_list_.size()); }
  int num_blocks() const { return static_cast<int>(refs_.size()); }
  int num_used() const { return num_blocks() - num_free(); }
  int64_t num_rejected_frees() const { return rejected_frees_; }  // Free and Retain

 private:
  void Reject(int block, const char* what);  // counts, logs and (debug) asserts
  std::vector<int> free_list_;   // top (back) is handed out next
  std::vector<int> refs_;        // [num_blocks]: references, 0 when free
  int64_t rejected_frees_ = 0;
};

}  // namespace streamgen
