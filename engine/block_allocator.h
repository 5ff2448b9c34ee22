// A pool of KV-cache block ids, created once at start-up. Torch-free: the
// engine owns the tensors; this only says which block ids are in use.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

namespace streamgen {

// Hands out ids in [0, num_blocks). Freed ids are reused first (LIFO), and a
// fresh allocator hands out 0, 1, 2, ... in order.
//
// Each block carries its state (free or allocated), so a bad Free() (double
// free, or an id outside the pool) is refused: the pool is never corrupted.
// A refused Free() is written to stderr and counted (num_rejected_frees());
// debug builds (no NDEBUG) also assert, since it is a caller's bug.
//
// Not thread-safe: owned by the engine's loop thread (through the Scheduler).
class BlockAllocator {
 public:
  // num_blocks < 0 is taken as 0.
  explicit BlockAllocator(int num_blocks);

  // A free block id, or nullopt when the pool is exhausted.
  std::optional<int> Allocate();

  // Returns `block` to the pool. Refused (see above) unless it is allocated.
  void Free(int block);

  bool IsAllocated(int block) const;
  int num_free() const { return static_cast<int>(free_list_.size()); }
  int num_blocks() const { return static_cast<int>(allocated_.size()); }
  int num_used() const { return num_blocks() - num_free(); }
  int64_t num_rejected_frees() const { return rejected_frees_; }

 private:
  std::vector<int> free_list_;   // top (back) is handed out next
  std::vector<bool> allocated_;  // [num_blocks]
  int64_t rejected_frees_ = 0;
};

}  // namespace streamgen
