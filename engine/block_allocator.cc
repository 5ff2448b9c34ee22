#include "engine/block_allocator.h"

#include <cassert>
#include <cstdio>

namespace streamgen {

BlockAllocator::BlockAllocator(int num_blocks) {
  if (num_blocks < 0) num_blocks = 0;
  allocated_.assign(num_blocks, false);
  free_list_.reserve(num_blocks);
  // Reverse order, so that the first Allocate() calls return 0, 1, 2, ...
  for (int block = num_blocks - 1; block >= 0; --block) free_list_.push_back(block);
}

std::optional<int> BlockAllocator::Allocate() {
  if (free_list_.empty()) return std::nullopt;
  const int block = free_list_.back();
  free_list_.pop_back();
  allocated_[block] = true;
  return block;
}

void BlockAllocator::Free(int block) {
  if (!IsAllocated(block)) {
    ++rejected_frees_;
    std::fprintf(stderr,
                 "BlockAllocator::Free: refused block %d: %s (pool of %d blocks); "
                 "the pool is unchanged\n",
                 block,
                 block < 0 || block >= num_blocks() ? "not a block id of this pool"
                                                    : "not allocated (double free?)",
                 num_blocks());
    assert(false && "BlockAllocator::Free of a block that is not allocated");
    return;
  }
  allocated_[block] = false;
  free_list_.push_back(block);
}

bool BlockAllocator::IsAllocated(int block) const {
  return block >= 0 && block < num_blocks() && allocated_[block];
}

}  // namespace streamgen
