// The KV cache's blocks: which blocks each sequence holds (its block table),
// which are free, and the prefix cache over them. Torch-free; the tensors are
// in kv_pool.h, and the policy of what to admit, decode and preempt is the
// Scheduler's (engine/scheduler.h), which calls this for blocks.
//
// A sequence's block table maps position p to block BlockTable(id)[p /
// block_size], slot p % block_size. Blocks are handed out by a BlockAllocator
// (block_allocator.h) with reference counts: one per sequence that holds a
// block, plus one while the prefix cache holds it.
//
// Prefix caching (prefix_caching, and AddSequence given the prompt's ids):
// every full block of a sequence's tokens, prompt and generated, is published
// under a key that chains the keys of the blocks before it with its own token
// ids: a prompt block once planned, a generated block once its last token's
// K/V are computed (AppendToken). A sequence being admitted shares the longest
// run of published blocks that match its tokens from the start (token ids
// compared, not only keys), at most (tokens - 1) / block_size of them, and
// nothing is ever written into a shared block. Past them, the published block
// (after the same run) that agrees with its next tokens for the longest
// stretch, if its K/V were written before this step, is copied into a fresh
// block of the sequence's own (copy-on-write at admission: SharePrefix returns
// the copy for the engine to make before the step's forward pass), so only the
// rest is computed; at least one token always is (its logits give the next
// token). The cache holds one reference to each published block: when no
// sequence uses it any more it stays cached and counts as free ("evictable"),
// and is evicted, least recently released first, only when a block is needed
// and none is free. Preempted sequences match again when readmitted, their
// generated tokens included. A multi-turn chat's next request thus finds the
// previous prompt and answer cached, up to the token where they differ.
#pragma once

#include <cstdint>
#include <set>
#include <unordered_map>
#include <utility>
#include <vector>

#include "engine/kv/block_allocator.h"

namespace streamgen {

// Not thread-safe: owned by the engine's loop thread (through the Scheduler).
class KvCacheManager {
 public:
  // The published blocks that match a sequence's prompt from its start.
  struct PrefixMatch {
    std::vector<int> blocks;  // block ids, in prompt order
    int evictable = 0;        // of them (and of partial_block), held by the
                              // cache alone: sharing them takes them out of
                              // num_free_blocks()
    // A published block after `blocks` whose first partial_tokens (1 to
    // block_size - 1) ids are the prompt's next ones: copied, not shared.
    // -1: none.
    int partial_block = -1;
    int partial_tokens = 0;
  };
  // A block copy SharePrefix asks for: slots [0, tokens) of `from` into `to`.
  struct BlockCopy {
    int from = -1;
    int to = -1;
  };

  // num_blocks and block_size below 1 are raised to 1.
  KvCacheManager(int num_blocks, int block_size, bool prefix_caching);

  // Starts an empty block table for `id` (not already added). With prefix
  // caching on and exactly `prompt_tokens` ids in `prompt_ids`, the sequence
  // will share and publish prompt blocks; otherwise it does neither.
  void AddSequence(uint64_t id, int prompt_tokens, std::vector<int> prompt_ids);
  // Frees the blocks of `id` and forgets it. Unknown id: no-op.
  void RemoveSequence(uint64_t id);
  // Frees the blocks of `id` (its table becomes empty; preemption) but keeps
  // its prompt, so that it matches again. Cached blocks that no sequence holds
  // any more become evictable, in the order of the table.
  void FreeBlocks(uint64_t id);

  // Grows the table of `id` to cover positions [0, tokens), taking a free
  // block, or evicting the least recently released cached block when none is
  // free. The caller has checked num_free_blocks() (debug builds assert).
  void AllocateSlots(uint64_t id, int64_t tokens);
  // Shrinks the table of `id` to the blocks that positions [0, tokens) take,
  // freeing the rest (speculative decoding's rejected positions). A freed
  // block that the prefix cache holds becomes evictable, as in FreeBlocks.
  void TruncateSlots(uint64_t id, int64_t tokens);

  // The published blocks that match the tokens of `id` from its start (at
  // most (tokens - 1) / block_size of them), and the partial block after
  // them (see above). Empty when `id` has no token ids or already holds
  // blocks.
  PrefixMatch MatchPrefix(uint64_t id) const;
  // Starts the (empty) table of `id` with `match`'s blocks, one reference
  // each; they count as published. With a partial block, a fresh block
  // follows them, and `copy` (if not null) says which block to copy into it
  // (the engine copies before running the step; {-1, -1}: none). The caller
  // has checked that a block is free for it (num_free_blocks() less
  // match.evictable). Returns the positions covered.
  int SharePrefix(uint64_t id, const PrefixMatch& match, BlockCopy* copy = nullptr);
  // `match` without its partial block (and the free block that keeping the
  // block's source from eviction would cost).
  void DropPartial(PrefixMatch* match) const;
  // Publishes the full blocks of `id` that positions [0, cached_tokens) now
  // fill and that are not published yet. A block whose key another sequence
  // published first stays private.
  void Publish(uint64_t id, int cached_tokens);
  // A token generated for `id` (prefix caching: its ids grow, and each block
  // they fill gets a key). No-op for an unknown id or one that is not keyed.
  void AppendToken(uint64_t id, int token);
  // Marks the start of a scheduler step: blocks published before it are
  // written by the time it runs, and may be copied (partial matches).
  void BeginStep() { ++step_; }

  // n > 1 choices: starts `child`'s table (not added yet) as a copy of the
  // first BlocksFor(tokens) blocks of `parent`: the full blocks shared (one
  // more reference each), the last partial block (tokens not a multiple of
  // the block size) replaced by a fresh block that the caller fills with a
  // copy of the parent's (copy-on-write done at once: the child's next
  // position lands in it). Returns {parent's block, child's block} to copy,
  // or {-1, -1} when every block is shared. The child neither shares nor
  // publishes prefix-cache blocks of its own. The caller has checked that a
  // block is free when one is needed.
  std::pair<int, int> Fork(uint64_t parent, uint64_t child, int64_t tokens);

  // Full blocks of `id`'s tokens that prefix caching keys; 0 for a prompt
  // shorter than a block or a sequence that is not keyed.
  int KeyedPromptBlocks(uint64_t id) const;
  // Whether `id` shares and publishes blocks (caching on and its token ids
  // given).
  bool Keyed(uint64_t id) const;
  // Whether only the prefix cache holds `block` (it counts as free).
  bool IsEvictable(int block) const { return allocator_.RefCount(block) == 1 && cache_.count(block) != 0; }
  // Block ids for the positions of `id`, in order; empty for an unknown id.
  // Valid until the next call that changes the table of `id`.
  const std::vector<int>& BlockTable(uint64_t id) const;
  // Blocks that `tokens` positions take: ceil(tokens / block_size).
  int BlocksFor(int64_t tokens) const;

  // Free blocks include cached blocks no sequence uses (they can be evicted).
  int num_free_blocks() const {
    return allocator_.num_free() + static_cast<int>(evictable_.size());
  }
  int num_used_blocks() const { return num_blocks() - num_free_blocks(); }
  int num_cached_blocks() const { return static_cast<int>(cache_.size()); }  // published
  int num_blocks() const { return allocator_.num_blocks(); }
  int block_size() const { return block_size_; }
  bool prefix_caching() const { return prefix_caching_; }

 private:
  struct SequenceBlocks {
    std::vector<int> blocks;  // the block table
    // Prefix caching only: the token ids (prompt, then generated), their full
    // blocks' keys, and how many of its leading blocks are shared or
    // published already.
    bool keyed = false;
    std::vector<int> ids;
    std::vector<uint64_t> block_keys;
    int published = 0;
  };
  struct CachedBlock {
    uint64_t key = 0;
    uint64_t parent_key = 0;  // 0 for a prompt's first block
    std::vector<int> tokens;  // block_size ids
    uint64_t released = 0;    // tick when it became evictable
    uint64_t ready_step = 0;  // the first step that may copy it (its K/V written)
  };

  // A free block, evicting the least recently released cached block when the
  // free list is empty.
  int AllocateBlock();
  // Appends `token` to the ids of keyed `seq`, keying the block it fills.
  void Extend(SequenceBlocks& seq, int token) const;
  // Adds the key of the block that ends at ids.size() (a multiple of the
  // block size) to `seq`.
  void KeyLastBlock(SequenceBlocks& seq) const;

  int block_size_;
  bool prefix_caching_;
  BlockAllocator allocator_;
  std::unordered_map<uint64_t, SequenceBlocks> sequences_;
  // Prefix cache: published blocks by key and by block id; the evictable ones
  // (only the cache holds them) ordered by release tick.
  std::unordered_map<uint64_t, int> cache_by_key_;
  std::unordered_map<int, CachedBlock> cache_;
  // Published blocks by their parent's key (0: a first block): the
  // candidates for a partial match.
  std::unordered_multimap<uint64_t, int> children_;
  std::set<std::pair<uint64_t, int>> evictable_;
  uint64_t tick_ = 0;
  uint64_t step_ = 0;
};

}  // namespace streamgen
