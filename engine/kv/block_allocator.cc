#include "engine/kv/block_allocator.h"

#include <cassert>
#include <cstdio>

namespace streamgen {

BlockAllocator::BlockAllocator(int num_blocks) {
  if (num_blocks < 0) num_blocks = 0;
  refs_.assign(num_blocks, 0);
  free_list_.reserve(num_blocks);
  // Reverse order, so that the first Allocate() calls return 0, 1, 2, ...
  for (int block = num_blocks - 1; block >= 0; --block) free_list_.push_back(block);
}

std::optional<int> BlockAllocator::Allocate() {
  if (free_list_.empty()) return std::nullopt;
  const int block = free_list_.back();
  free_list_.pop_back();
  refs_[block] = 1;
  return block;
}

void BlockAllocator::Free(int block) {
  if (!IsAllocated(block)) {
    Reject(block, "Free");
    return;
  }
  if (--refs_[block] == 0) free_list_.push_back(block);
}

void BlockAllocator::Retain(int block) {
  if (!IsAllocated(block)) {
    Reject(block, "Retain");
    return;
  }
  ++refs_[block];
}

void BlockAllocator::Reject(int block, const char* what) {
  ++rejected_frees_;
  std::fprintf(stderr,
               "BlockAllocator::%s: refused block %d: %s (pool of %d blocks); "
               "the pool is unchanged\n",
               what, block,
               block < 0 || block >= num_blocks() ? "not a block id of this pool"
                                                  : "not allocated (double free?)",
               num_blocks());
  assert(false && "BlockAllocator: Free or Retain of a block that is not allocated");
}

bool BlockAllocator::IsAllocated(int block) const { return RefCount(block) > 0; }

int BlockAllocator::RefCount(int block) const {
  return block >= 0 && block < num_blocks() ? refs_[block] : 0;
}

}  // namespace streamgen
