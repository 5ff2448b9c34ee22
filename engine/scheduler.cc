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
    : options_(Sanitized(options)),
      kv_(options_.num_blocks, options_.block_size, options_.prefix_caching) {}

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
  sequences_.emplace(id, seq);
  kv_.AddSequence(id, prompt_tokens, std::move(prompt_ids));
  waiting_.push_back(id);
  ++num_waiting_fresh_;
  return absl::OkStatus();
}

absl::StatusOr<std::pair<int, int>> Scheduler::Fork(uint64_t parent, uint64_t child,
                                                    int max_new_tokens) {
  if (sequences_.count(child) != 0) {
    return absl::AlreadyExistsError(absl::StrFormat("sequence %d already exists", child));
  }
  auto it = sequences_.find(parent);
  if (it == sequences_.end() || it->second.state != State::kDecoding ||
      it->second.cached != it->second.known) {
    return absl::FailedPreconditionError(
        absl::StrFormat("sequence %d has not just finished its prefill", parent));
  }
  const Sequence& from = it->second;
  if (static_cast<int>(running_.size()) >= options_.max_batch) {
    return absl::ResourceExhaustedError("max_batch sequences are running");
  }
  if (from.cached % options_.block_size != 0 && UnreservedFreeBlocks() == 0) {
    return absl::ResourceExhaustedError("no free KV block to copy the last prompt block into");
  }
  Sequence seq;
  seq.prompt_tokens = from.prompt_tokens;
  seq.max_new_tokens = max_new_tokens;
  seq.known = from.known;
  seq.cached = from.cached;
  seq.state = State::kDecoding;
  const std::pair<int, int> copy = kv_.Fork(parent, child, from.cached);
  sequences_.emplace(child, seq);
  running_.push_back(child);
  return copy;
}

void Scheduler::Remove(uint64_t id) {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) return;
  Sequence& seq = it->second;
  kv_.RemoveSequence(id);
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
  kv_.BeginStep();
  PlanDecodes(step);
  PlanPrefills(step);
  for (auto& [id, seq] : sequences_) seq.drafts = 0;
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
    const bool needs_block =
        kv_.BlocksFor(seq.cached + 1) > static_cast<int>(kv_.BlockTable(id).size());
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
      kv_.AllocateSlots(id, seq.cached + 1);
    }
    ++seq.cached;
    step.decodes.push_back(id);
  }
  // Drafts take only the blocks left after every plain decode (a draft must
  // never make a decode preempt), oldest first.
  for (uint64_t id : step.decodes) step.decode_drafts.push_back(PlanDrafts(id, sequences_.at(id)));
}

int Scheduler::PlanDrafts(uint64_t id, Sequence& seq) {
  // 1 + g new tokens at most: never past max_new_tokens.
  const int left = seq.prompt_tokens + seq.max_new_tokens - seq.known;
  int g = std::min(seq.drafts, left - 1);
  const int have = static_cast<int>(kv_.BlockTable(id).size());
  const int spare = UnreservedFreeBlocks();
  while (g > 0 && kv_.BlocksFor(seq.cached + g) - have > spare) --g;
  if (g <= 0) return 0;
  kv_.AllocateSlots(id, seq.cached + g);
  seq.cached += g;
  return g;
}

void Scheduler::ProposeDraftTokens(uint64_t id, int k) {
  auto it = sequences_.find(id);
  if (it != sequences_.end()) it->second.drafts = std::max(k, 0);
}

void Scheduler::RollBack(uint64_t id) {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) return;
  Sequence& seq = it->second;
  if (seq.state != State::kDecoding || seq.cached <= seq.known - 1) return;
  seq.cached = seq.known - 1;
  kv_.TruncateSlots(id, seq.cached);
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
    KvCacheManager::PrefixMatch shared = kv_.MatchPrefix(id);
    auto fits = [&] {
      return UnreservedFreeBlocks() - shared.evictable >=
             kv_.BlocksFor(tokens) - static_cast<int>(shared.blocks.size());
    };
    // Keeping the partial copy's source from eviction costs a free block
    // when only the cache holds it: without the copy it may fit.
    if (!fits()) kv_.DropPartial(&shared);
    if (!fits()) break;
    KvCacheManager::BlockCopy copy;
    seq.cached = kv_.SharePrefix(id, shared, &copy);
    if (copy.from >= 0) step.kv_copies.push_back(copy);
    if (seq.state == State::kWaiting && kv_.Keyed(id)) {
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
  kv_.AllocateSlots(id, end);  // reserved at admission, so there are enough
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
  kv_.Publish(id, seq.cached);
  if (chunk.last_chunk) seq.state = State::kDecoding;
  return length;
}

void Scheduler::Preempt(uint64_t id, SchedulerStep& step) {
  Sequence& seq = sequences_.at(id);
  kv_.FreeBlocks(id);
  seq.cached = 0;
  seq.state = State::kPreempted;
  running_.erase(std::find(running_.begin(), running_.end(), id));
  waiting_.push_front(id);
  step.preempted.push_back(id);
  ++num_preemptions_;
}

void Scheduler::OnTokenAppended(uint64_t id, int token) {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) return;
  Sequence& seq = it->second;
  // cached == known after a plain decode; up to known + g after a speculative
  // one whose drafts are being accepted (RollBack follows).
  const bool expects_token = seq.state == State::kDecoding && seq.cached >= seq.known;
  assert(expects_token && "OnTokenAppended for a sequence that has no token to receive");
  if (!expects_token) return;
  ++seq.known;
  kv_.AppendToken(id, token);
  // Positions [0, known - 1) hold accepted tokens whose K/V the step just
  // run computed (the newest token's are computed by the next step; a
  // rejected draft's position is never below known - 1).
  kv_.Publish(id, std::min(seq.cached, seq.known - 1));
}

const std::vector<int>& Scheduler::BlockTable(uint64_t id) const { return kv_.BlockTable(id); }

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

int Scheduler::UnreservedFreeBlocks() const {
  int reserved = 0;
  for (uint64_t id : running_) {
    const Sequence& seq = sequences_.at(id);
    if (seq.state == State::kPrefilling) {
      reserved += kv_.BlocksFor(seq.known) - static_cast<int>(kv_.BlockTable(id).size());
    }
  }
  return num_free_blocks() - reserved;
}

}  // namespace streamgen
