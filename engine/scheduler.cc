#include "engine/scheduler.h"

#include <algorithm>
#include <cassert>
#include <utility>

#include "absl/strings/str_format.h"

namespace streamgen {
namespace {

SchedulerOptions Sanitized(SchedulerOptions options) {
  options.max_batch = std::max(options.max_batch, 1);
  options.max_queue = std::max(options.max_queue, 1);
  options.block_size = std::max(options.block_size, 1);
  options.num_blocks = std::max(options.num_blocks, 1);
  options.max_prefill_tokens = std::max(options.max_prefill_tokens, 1);
  return options;
}

}  // namespace

absl::Status Scheduler::Validate(const SchedulerOptions& options) {
  const std::pair<const char*, int> fields[] = {
      {"max_batch", options.max_batch},
      {"max_queue", options.max_queue},
      {"block_size", options.block_size},
      {"num_blocks", options.num_blocks},
      {"max_prefill_tokens", options.max_prefill_tokens},
  };
  for (const auto& [name, value] : fields) {
    if (value < 1) {
      return absl::InvalidArgumentError(
          absl::StrFormat("scheduler option %s must be >= 1, got %d", name, value));
    }
  }
  return absl::OkStatus();
}

Scheduler::Scheduler(SchedulerOptions options)
    : options_(Sanitized(options)), allocator_(options_.num_blocks) {}

absl::Status Scheduler::Add(uint64_t id, int prompt_tokens, int max_new_tokens,
                            std::vector<int> prompt_ids) {
  if (prompt_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("prompt must have at least 1 token, got %d", prompt_tokens));
  }
  if (max_new_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("max_new_tokens must be >= 1, got %d", max_new_tokens));
  }
  const int64_t capacity = int64_t{options_.num_blocks} * options_.block_size;
  const int64_t total = int64_t{prompt_tokens} + max_new_tokens;
  if (total > capacity) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "prompt (%d tokens) + max_new_tokens (%d) = %d tokens can never fit in the KV cache, "
        "which holds %d tokens (%d blocks of %d tokens)",
        prompt_tokens, max_new_tokens, total, capacity, options_.num_blocks, options_.block_size));
  }
  if (sequences_.count(id) != 0) {
    return absl::AlreadyExistsError(absl::StrFormat("sequence id %d is already scheduled", id));
  }
  if (num_waiting_fresh_ >= options_.max_queue) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("the request queue is full: %d requests already wait (max_queue = %d)",
                        num_waiting_fresh_, options_.max_queue));
  }
  Sequence seq;
  seq.prompt_tokens = prompt_tokens;
  seq.max_new_tokens = max_new_tokens;
  seq.known = prompt_tokens;
  if (options_.prefix_caching && static_cast<int>(prompt_ids.size()) == prompt_tokens) {
    // Key of full block i: FNV-1a over (key of block i - 1, its ids), then a
    // splitmix64 finaliser. Matches also compare the ids, so a collision
    // can only make a block not match.
    const int bs = options_.block_size;
    uint64_t key = 0;
    for (int b = 0; (b + 1) * bs <= prompt_tokens; ++b) {
      uint64_t h = 1469598103934665603ULL ^ key;
      for (int i = b * bs; i < (b + 1) * bs; ++i) {
        h = (h ^ static_cast<uint32_t>(prompt_ids[i])) * 1099511628211ULL;
      }
      h ^= h >> 30;
      h *= 0xbf58476d1ce4e5b9ULL;
      h ^= h >> 27;
      h *= 0x94d049bb133111ebULL;
      h ^= h >> 31;
      key = h == 0 ? 1 : h;  // 0 means "no parent"
      seq.block_keys.push_back(key);
    }
    seq.prompt_ids = std::move(prompt_ids);
  }
  sequences_.emplace(id, std::move(seq));
  waiting_.push_back(id);
  ++num_waiting_fresh_;
  return absl::OkStatus();
}

void Scheduler::Remove(uint64_t id) {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) return;
  Sequence& seq = it->second;
  FreeBlocks(seq);
  if (seq.state == State::kWaiting || seq.state == State::kPreempted) {
    waiting_.erase(std::find(waiting_.begin(), waiting_.end(), id));
    if (seq.state == State::kWaiting) --num_waiting_fresh_;
  } else {
    running_.erase(std::find(running_.begin(), running_.end(), id));
  }
  sequences_.erase(it);
}

SchedulerStep Scheduler::Schedule() {
  SchedulerStep step;
  PlanDecodes(step);
  PlanPrefills(step);
  return step;
}

void Scheduler::PlanDecodes(SchedulerStep& step) {
  const std::vector<uint64_t> snapshot = running_;  // oldest first
  for (uint64_t id : snapshot) {
    auto it = sequences_.find(id);
    if (it == sequences_.end() || it->second.state != State::kDecoding) continue;
    Sequence& seq = it->second;                 // still running: victims are always newer
    if (seq.cached != seq.known - 1) continue;  // no token appended since its last step
    if (seq.known - seq.prompt_tokens >= seq.max_new_tokens) continue;  // done: awaits Remove
    const bool needs_block = BlocksFor(seq.cached + 1) > static_cast<int>(seq.blocks.size());
    bool preempted_self = false;
    while (needs_block && UnreservedFreeBlocks() == 0) {
      const uint64_t victim = running_.back();
      if (victim == id && running_.size() == 1) break;  // cannot happen (Add's fit check)
      Preempt(victim, step);
      if (victim == id) {
        preempted_self = true;
        break;
      }
    }
    if (preempted_self) continue;
    if (needs_block) {
      if (UnreservedFreeBlocks() == 0) continue;  // alone and no block: skip, never corrupt
      seq.blocks.push_back(AllocateBlock());
    }
    ++seq.cached;
    step.decodes.push_back(id);
  }
}

void Scheduler::PlanPrefills(SchedulerStep& step) {
  int budget = options_.max_prefill_tokens;
  // Sequences already prefilling continue, oldest first.
  for (uint64_t id : running_) {
    if (budget == 0) break;
    Sequence& seq = sequences_.at(id);
    if (seq.state == State::kPrefilling) budget -= PlanChunk(id, seq, budget, step);
  }
  // Then admissions from the queue front, FCFS; the head blocks the rest.
  while (budget > 0 && !waiting_.empty() &&
         static_cast<int>(running_.size()) < options_.max_batch) {
    const uint64_t id = waiting_.front();
    if (std::find(step.preempted.begin(), step.preempted.end(), id) != step.preempted.end()) {
      // Preempted in this iteration: readmitted from the next one on. (A guard:
      // with the headroom rule below, its freed blocks never suffice anyway.)
      break;
    }
    Sequence& seq = sequences_.at(id);
    // Its known tokens plus the first decode (never beyond what Add checked),
    // less the cached prompt blocks it shares; reviving an evictable one
    // takes it out of the free count.
    const int64_t tokens = std::min(seq.known + 1, seq.prompt_tokens + seq.max_new_tokens);
    const std::vector<int> shared = MatchPrefix(seq);
    int revived = 0;
    for (int block : shared) revived += allocator_.RefCount(block) == 1 ? 1 : 0;
    if (UnreservedFreeBlocks() - revived <
        BlocksFor(tokens) - static_cast<int>(shared.size())) {
      break;
    }
    for (int block : shared) {
      if (allocator_.RefCount(block) == 1) evictable_.erase({cache_.at(block).released, block});
      allocator_.Retain(block);
      seq.blocks.push_back(block);
    }
    seq.cached = static_cast<int>(shared.size()) * options_.block_size;
    seq.published = static_cast<int>(shared.size());
    if (seq.state == State::kWaiting && !seq.block_keys.empty()) {
      prefix_queries_ += seq.prompt_tokens;
      prefix_hits_ += seq.cached;
    }
    waiting_.pop_front();
    if (seq.state == State::kWaiting) --num_waiting_fresh_;
    seq.state = State::kPrefilling;
    running_.push_back(id);
    budget -= PlanChunk(id, seq, budget, step);
  }
}

int Scheduler::PlanChunk(uint64_t id, Sequence& seq, int budget, SchedulerStep& step) {
  const int length = std::min(budget, seq.known - seq.cached);
  const int end = seq.cached + length;
  while (static_cast<int>(seq.blocks.size()) < BlocksFor(end)) {
    // Reserved at admission, so there is always one.
    seq.blocks.push_back(AllocateBlock());
  }
  ScheduledPrefill chunk;
  chunk.id = id;
  chunk.start = seq.cached;
  chunk.length = length;
  chunk.last_chunk = end == seq.known;
  step.prefills.push_back(chunk);
  seq.cached = end;
  // Published as soon as planned: in the step that computes them, every
  // token's K/V are written before any attention reads the pool, so a
  // sequence admitted in this same step may already share them.
  PublishBlocks(seq);
  if (chunk.last_chunk) seq.state = State::kDecoding;
  return length;
}

void Scheduler::Preempt(uint64_t id, SchedulerStep& step) {
  Sequence& seq = sequences_.at(id);
  FreeBlocks(seq);
  seq.cached = 0;
  seq.published = 0;
  seq.state = State::kPreempted;
  running_.erase(std::find(running_.begin(), running_.end(), id));
  waiting_.push_front(id);
  step.preempted.push_back(id);
  ++num_preemptions_;
}

void Scheduler::FreeBlocks(Sequence& seq) {
  for (int block : seq.blocks) {
    allocator_.Free(block);
    auto it = cache_.find(block);
    if (it != cache_.end() && allocator_.RefCount(block) == 1) {  // only the cache holds it
      it->second.released = ++tick_;
      evictable_.insert({it->second.released, block});
    }
  }
  seq.blocks.clear();
}

int Scheduler::AllocateBlock() {
  if (allocator_.num_free() == 0 && !evictable_.empty()) {
    const int victim = evictable_.begin()->second;
    evictable_.erase(evictable_.begin());
    cache_by_key_.erase(cache_.at(victim).key);
    cache_.erase(victim);
    allocator_.Free(victim);  // the cache's reference: back to the free list
  }
  std::optional<int> block = allocator_.Allocate();
  assert(block.has_value() && "AllocateBlock without a free or evictable block");
  return block.value_or(0);
}

std::vector<int> Scheduler::MatchPrefix(const Sequence& seq) const {
  std::vector<int> shared;
  if (seq.block_keys.empty() || !seq.blocks.empty()) return shared;
  const int bs = options_.block_size;
  const int most = std::min(static_cast<int>(seq.block_keys.size()), (seq.prompt_tokens - 1) / bs);
  for (int b = 0; b < most; ++b) {
    auto it = cache_by_key_.find(seq.block_keys[b]);
    if (it == cache_by_key_.end()) break;
    const CachedBlock& cached = cache_.at(it->second);
    const uint64_t parent = b == 0 ? 0 : seq.block_keys[b - 1];
    if (cached.parent_key != parent ||
        !std::equal(cached.tokens.begin(), cached.tokens.end(), seq.prompt_ids.begin() + b * bs)) {
      break;
    }
    shared.push_back(it->second);
  }
  return shared;
}

void Scheduler::PublishBlocks(Sequence& seq) {
  const int bs = options_.block_size;
  while (seq.published < static_cast<int>(seq.block_keys.size()) &&
         (seq.published + 1) * bs <= seq.cached) {
    const int b = seq.published++;
    const int block = seq.blocks[b];
    const uint64_t key = seq.block_keys[b];
    // Another sequence may have published the same prompt block first (both
    // computed it): this copy stays private.
    if (cache_by_key_.count(key) != 0 || cache_.count(block) != 0) continue;
    CachedBlock cached;
    cached.key = key;
    cached.parent_key = b == 0 ? 0 : seq.block_keys[b - 1];
    cached.tokens.assign(seq.prompt_ids.begin() + b * bs, seq.prompt_ids.begin() + (b + 1) * bs);
    cache_by_key_[key] = block;
    cache_.emplace(block, std::move(cached));
    allocator_.Retain(block);  // the cache's reference
  }
}

void Scheduler::OnTokenAppended(uint64_t id) {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) return;
  Sequence& seq = it->second;
  const bool expects_token = seq.state == State::kDecoding && seq.cached == seq.known;
  assert(expects_token && "OnTokenAppended for a sequence that has no token to receive");
  if (expects_token) ++seq.known;
}

const std::vector<int>& Scheduler::BlockTable(uint64_t id) const {
  static const std::vector<int> kEmpty;
  auto it = sequences_.find(id);
  return it == sequences_.end() ? kEmpty : it->second.blocks;
}

std::optional<Scheduler::State> Scheduler::StateOf(uint64_t id) const {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) return std::nullopt;
  return it->second.state;
}

int Scheduler::KnownTokens(uint64_t id) const {
  auto it = sequences_.find(id);
  return it == sequences_.end() ? 0 : it->second.known;
}

int Scheduler::CachedTokens(uint64_t id) const {
  auto it = sequences_.find(id);
  return it == sequences_.end() ? 0 : it->second.cached;
}

int Scheduler::BlocksFor(int64_t tokens) const {
  return static_cast<int>((tokens + options_.block_size - 1) / options_.block_size);
}

int Scheduler::UnreservedFreeBlocks() const {
  int reserved = 0;
  for (uint64_t id : running_) {
    const Sequence& seq = sequences_.at(id);
    if (seq.state == State::kPrefilling) {
      reserved += BlocksFor(seq.known) - static_cast<int>(seq.blocks.size());
    }
  }
  return num_free_blocks() - reserved;
}

}  // namespace streamgen
