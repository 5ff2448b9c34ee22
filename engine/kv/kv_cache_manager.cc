#include "engine/kv/kv_cache_manager.h"

#include <algorithm>
#include <cassert>
#include <optional>

namespace streamgen {

KvCacheManager::KvCacheManager(int num_blocks, int block_size, bool prefix_caching)
    : block_size_(std::max(block_size, 1)),
      prefix_caching_(prefix_caching),
      allocator_(std::max(num_blocks, 1)) {}

void KvCacheManager::AddSequence(uint64_t id, int prompt_tokens, std::vector<int> prompt_ids) {
  assert(sequences_.count(id) == 0 && "KvCacheManager::AddSequence: id already added");
  SequenceBlocks seq;
  if (prefix_caching_ && prompt_tokens > 0 && static_cast<int>(prompt_ids.size()) == prompt_tokens) {
    seq.keyed = true;
    seq.ids.reserve(prompt_ids.size());
    for (int token : prompt_ids) Extend(seq, token);
  }
  sequences_.emplace(id, std::move(seq));
}

void KvCacheManager::Extend(SequenceBlocks& seq, int token) const {
  seq.ids.push_back(token);
  if (seq.ids.size() % block_size_ == 0) KeyLastBlock(seq);
}

void KvCacheManager::KeyLastBlock(SequenceBlocks& seq) const {
  // Key of full block i: FNV-1a over (key of block i - 1, its ids), then a
  // splitmix64 finaliser. Matches also compare the ids, so a collision can
  // only make a block not match.
  const size_t end = seq.ids.size();
  uint64_t h = 1469598103934665603ULL ^ (seq.block_keys.empty() ? 0 : seq.block_keys.back());
  for (size_t i = end - block_size_; i < end; ++i) {
    h = (h ^ static_cast<uint32_t>(seq.ids[i])) * 1099511628211ULL;
  }
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ULL;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebULL;
  h ^= h >> 31;
  seq.block_keys.push_back(h == 0 ? 1 : h);  // 0 means "no parent"
}

void KvCacheManager::AppendToken(uint64_t id, int token) {
  auto it = sequences_.find(id);
  if (it == sequences_.end() || !it->second.keyed) return;
  Extend(it->second, token);
}

void KvCacheManager::RemoveSequence(uint64_t id) {
  if (sequences_.count(id) == 0) return;
  FreeBlocks(id);
  sequences_.erase(id);
}

void KvCacheManager::FreeBlocks(uint64_t id) {
  auto seq = sequences_.find(id);
  if (seq == sequences_.end()) return;
  for (int block : seq->second.blocks) {
    allocator_.Free(block);
    auto it = cache_.find(block);
    if (it != cache_.end() && allocator_.RefCount(block) == 1) {  // only the cache holds it
      it->second.released = ++tick_;
      evictable_.insert({it->second.released, block});
    }
  }
  seq->second.blocks.clear();
  seq->second.published = 0;
}

void KvCacheManager::AllocateSlots(uint64_t id, int64_t tokens) {
  auto seq = sequences_.find(id);
  if (seq == sequences_.end()) return;
  std::vector<int>& blocks = seq->second.blocks;
  while (static_cast<int>(blocks.size()) < BlocksFor(tokens)) blocks.push_back(AllocateBlock());
}

void KvCacheManager::TruncateSlots(uint64_t id, int64_t tokens) {
  auto seq = sequences_.find(id);
  if (seq == sequences_.end()) return;
  std::vector<int>& blocks = seq->second.blocks;
  while (static_cast<int>(blocks.size()) > BlocksFor(tokens)) {
    const int block = blocks.back();
    blocks.pop_back();
    allocator_.Free(block);
    auto it = cache_.find(block);
    if (it != cache_.end() && allocator_.RefCount(block) == 1) {  // only the cache holds it
      it->second.released = ++tick_;
      evictable_.insert({it->second.released, block});
    }
  }
  seq->second.published = std::min(seq->second.published, static_cast<int>(blocks.size()));
}

int KvCacheManager::AllocateBlock() {
  if (allocator_.num_free() == 0 && !evictable_.empty()) {
    const int victim = evictable_.begin()->second;
    evictable_.erase(evictable_.begin());
    const CachedBlock& cached = cache_.at(victim);
    cache_by_key_.erase(cached.key);
    auto [first, last] = children_.equal_range(cached.parent_key);
    for (auto child = first; child != last; ++child) {
      if (child->second == victim) {
        children_.erase(child);
        break;
      }
    }
    cache_.erase(victim);
    allocator_.Free(victim);  // the cache's reference: back to the free list
  }
  std::optional<int> block = allocator_.Allocate();
  assert(block.has_value() && "AllocateBlock without a free or evictable block");
  return block.value_or(0);
}

KvCacheManager::PrefixMatch KvCacheManager::MatchPrefix(uint64_t id) const {
  PrefixMatch match;
  auto it = sequences_.find(id);
  if (it == sequences_.end()) return match;
  const SequenceBlocks& seq = it->second;
  if (!seq.keyed || !seq.blocks.empty()) return match;
  const int bs = block_size_;
  const int tokens = static_cast<int>(seq.ids.size());
  const int most = std::min(static_cast<int>(seq.block_keys.size()), (tokens - 1) / bs);
  int b = 0;
  for (; b < most; ++b) {
    auto found = cache_by_key_.find(seq.block_keys[b]);
    if (found == cache_by_key_.end()) break;
    const CachedBlock& cached = cache_.at(found->second);
    const uint64_t parent = b == 0 ? 0 : seq.block_keys[b - 1];
    if (cached.parent_key != parent ||
        !std::equal(cached.tokens.begin(), cached.tokens.end(), seq.ids.begin() + b * bs)) {
      break;
    }
    match.blocks.push_back(found->second);
    match.evictable += allocator_.RefCount(found->second) == 1 ? 1 : 0;
  }
  // The partial block: among the published children of the last shared
  // block, the one that agrees longest with the next ids (at most up to the
  // last token, which is computed), written before this step.
  const int limit = std::min(bs - 1, tokens - 1 - b * bs);
  if (limit < 1) return match;
  const auto next = seq.ids.begin() + b * bs;
  auto [first, last] = children_.equal_range(b == 0 ? 0 : seq.block_keys[b - 1]);
  for (auto child = first; child != last; ++child) {
    const CachedBlock& cached = cache_.at(child->second);
    if (cached.ready_step > step_) continue;
    const int agree = static_cast<int>(
        std::mismatch(cached.tokens.begin(), cached.tokens.begin() + limit, next).first -
        cached.tokens.begin());
    if (agree > match.partial_tokens) {
      match.partial_block = child->second;
      match.partial_tokens = agree;
    }
  }
  if (match.partial_block >= 0 && IsEvictable(match.partial_block)) {
    ++match.evictable;  // kept from eviction while its copy's block is taken
  }
  return match;
}

void KvCacheManager::DropPartial(PrefixMatch* match) const {
  if (match->partial_block < 0) return;
  if (IsEvictable(match->partial_block)) --match->evictable;
  match->partial_block = -1;
  match->partial_tokens = 0;
}

int KvCacheManager::SharePrefix(uint64_t id, const PrefixMatch& match, BlockCopy* copy) {
  if (copy != nullptr) *copy = BlockCopy{};
  auto it = sequences_.find(id);
  if (it == sequences_.end()) return 0;
  SequenceBlocks& seq = it->second;
  for (int block : match.blocks) {
    // Reviving an evictable block takes it out of the free count.
    if (allocator_.RefCount(block) == 1) evictable_.erase({cache_.at(block).released, block});
    allocator_.Retain(block);
    seq.blocks.push_back(block);
  }
  seq.published = static_cast<int>(match.blocks.size());
  int covered = seq.published * block_size_;
  if (match.partial_block >= 0 && match.partial_tokens > 0) {
    // The source must not be the block that AllocateBlock evicts for its
    // copy. Afterwards it may be evicted (and even reused) within this same
    // step's planning: the engine makes the step's copies, in order, before
    // anything of the step writes the pool.
    const int source = match.partial_block;
    const bool evictable = IsEvictable(source);
    const uint64_t released = cache_.at(source).released;
    if (evictable) evictable_.erase({released, source});
    const int block = AllocateBlock();
    if (evictable) evictable_.insert({released, source});
    seq.blocks.push_back(block);
    covered += match.partial_tokens;
    if (copy != nullptr) *copy = BlockCopy{source, block};
  }
  return covered;
}

void KvCacheManager::Publish(uint64_t id, int cached_tokens) {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) return;
  SequenceBlocks& seq = it->second;
  const int bs = block_size_;
  while (seq.published < static_cast<int>(seq.block_keys.size()) &&
         seq.published < static_cast<int>(seq.blocks.size()) &&
         (seq.published + 1) * bs <= cached_tokens) {
    const int b = seq.published++;
    const int block = seq.blocks[b];
    const uint64_t key = seq.block_keys[b];
    // Another sequence may have published the same block first (both
    // computed it): this copy stays private.
    if (cache_by_key_.count(key) != 0 || cache_.count(block) != 0) continue;
    CachedBlock cached;
    cached.key = key;
    cached.parent_key = b == 0 ? 0 : seq.block_keys[b - 1];
    cached.tokens.assign(seq.ids.begin() + b * bs, seq.ids.begin() + (b + 1) * bs);
    // Published while a step is planned (prompt chunks: written by that
    // step) or after one ran (generated tokens): copyable from the next.
    cached.ready_step = step_ + 1;
    children_.emplace(cached.parent_key, block);
    cache_by_key_[key] = block;
    cache_.emplace(block, std::move(cached));
    allocator_.Retain(block);  // the cache's reference
  }
}

std::pair<int, int> KvCacheManager::Fork(uint64_t parent, uint64_t child, int64_t tokens) {
  assert(sequences_.count(child) == 0 && "KvCacheManager::Fork: child already added");
  const std::vector<int>& from = sequences_.at(parent).blocks;
  SequenceBlocks seq;
  const int full = static_cast<int>(tokens / block_size_);
  for (int b = 0; b < full; ++b) {
    allocator_.Retain(from[b]);  // held by the parent: never evictable here
    seq.blocks.push_back(from[b]);
  }
  std::pair<int, int> copy = {-1, -1};
  if (tokens % block_size_ != 0) {
    copy = {from[full], AllocateBlock()};
    seq.blocks.push_back(copy.second);
  }
  sequences_.emplace(child, std::move(seq));
  return copy;
}

int KvCacheManager::KeyedPromptBlocks(uint64_t id) const {
  auto it = sequences_.find(id);
  return it == sequences_.end() ? 0 : static_cast<int>(it->second.block_keys.size());
}

bool KvCacheManager::Keyed(uint64_t id) const {
  auto it = sequences_.find(id);
  return it != sequences_.end() && it->second.keyed;
}

const std::vector<int>& KvCacheManager::BlockTable(uint64_t id) const {
  static const std::vector<int> kEmpty;
  auto it = sequences_.find(id);
  return it == sequences_.end() ? kEmpty : it->second.blocks;
}

int KvCacheManager::BlocksFor(int64_t tokens) const {
  return static_cast<int>((tokens + block_size_ - 1) / block_size_);
}

}  // namespace streamgen
