// Continuous-batching scheduler over a paged KV cache: a policy object with no
// torch in it. The engine's loop thread calls Schedule() once per iteration,
// runs the planned prefill chunks and decodes, then reports each sampled token
// with OnTokenAppended() and each finished / cancelled sequence with Remove().
//
// Token accounting, per sequence:
//   known  = prompt tokens + generated tokens (the engine knows their ids);
//   cached = tokens whose K/V are in the cache (positions [0, cached)).
// Position p lives in block BlockTable(id)[p / block_size], slot p % block_size.
//
// Policy of one Schedule() call:
//  1. Decodes first. Every running sequence with cached == known - 1 (its
//     newest token is the input) decodes one token at position known - 1,
//     oldest admitted first. When that position starts a new block, a block is
//     taken from the free blocks that no prefill has reserved (see 2). If there
//     is none, the most recently admitted running sequence is preempted: all
//     its blocks are freed, it goes back to the FRONT of the waiting queue
//     (state kPreempted) and is listed in `preempted`; this repeats until a
//     block is there. Since sequences are visited oldest first, the victim is
//     never one already planned to decode; it may be the sequence itself (the
//     newest yields), but never when it runs alone (Add's fit check
//     guarantees that one sequence fits in the whole pool). So the oldest
//     running sequence always advances: no deadlock, no livelock.
//  2. Prefills, limited to max_prefill_tokens positions in all (chunked
//     prefill; decodes do not count against it). First the sequences already
//     prefilling continue, oldest first; then waiting sequences are admitted
//     from the queue front, in FCFS order, while running < max_batch, prompt
//     budget is left, and the free blocks not reserved by other prefills are
//     at least ceil((known + 1) / block_size): all its known tokens plus the
//     first decode (one block of headroom when known is a multiple of the
//     block size). Admission never preempts, and the queue head blocks those
//     behind it (no overtaking, so no starvation). A sequence preempted in
//     this very iteration is not readmitted before the next one.
//     A chunk covers positions [cached, min(known, cached + budget left)); the
//     chunk that reaches `known` is the last one (last_chunk): the engine
//     samples a new token from its logits. A preempted sequence is recomputed
//     over ALL its known tokens (prompt + generated), then goes on decoding.
//     An admitted sequence reserves the blocks for its known tokens until its
//     prefill is done; decodes never take reserved blocks, so a started
//     prefill always finishes (unless its sequence is preempted).
//  Blocks are allocated lazily for the positions planned, so at every moment
//  blocks in use == sum over sequences of ceil(cached / block_size).
//  Schedule() updates the bookkeeping as if the step runs: planned positions
//  count as cached at once.
//
// A sequence whose generated tokens reached max_new_tokens is not decoded
// again: the engine is expected to Remove() it.
//
// Speculative decoding (engine/speculative.h): before Schedule() the engine
// may ProposeDraftTokens(id, k) for a decoding sequence. Its decode then
// covers 1 + g positions [known - 1, known - 1 + g] in one chunk (the newest
// token and g drafts), where g <= k is what fits: never past max_new_tokens
// (1 + g new tokens at most) and only into free blocks not reserved by
// prefills (speculation never preempts; its first position follows rule 1 as
// any decode). SchedulerStep::decode_drafts says g. The engine then appends
// the tokens it accepted (OnTokenAppended, 1 to g + 1 of them) and calls
// RollBack(id): the positions of rejected drafts stop counting as cached
// (cached = known - 1) and the blocks beyond are freed.
//
// Prefix caching (options.prefix_caching, and Add() given the prompt's ids):
// admitted sequences share the published full blocks that match their prompt
// from the start, get a copy of the block after them that agrees longest with
// their next tokens (SchedulerStep::kv_copies), and publish their own full
// blocks, prompt and generated; cached blocks that no sequence uses count as
// free and are evicted least recently released first. The rules are the KV
// cache manager's (engine/kv/kv_cache_manager.h, whose blocks this policy
// uses). Hits and queries are counted in prompt tokens, for fresh admissions
// only.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/kv/kv_cache_manager.h"

namespace streamgen {

struct SchedulerOptions {
  int max_batch = 16;            // running sequences (prefilling or decoding), >= 1
  int max_queue = 64;            // waiting fresh requests (preempted ones don't count), >= 1
  int block_size = 16;           // tokens per KV block, >= 1
  int num_blocks = 1024;         // KV blocks in the pool, >= 1
  int max_prefill_tokens = 128;  // prompt positions computed per iteration over all prefills, >= 1
  bool prefix_caching = false;   // share full prompt blocks between sequences (see above)
};

struct ScheduledPrefill {
  uint64_t id = 0;
  int start = 0;            // first token position of this chunk (== cached before it)
  int length = 0;           // tokens in this chunk (>= 1)
  bool last_chunk = false;  // the chunk ends at the last known token: sample from its logits
};

struct SchedulerStep {
  // Prefix caching: blocks the engine copies, in order, before the step's
  // forward pass: slots of `from` into `to` (a sequence admitted with a
  // partial match computes the rest of `to`).
  std::vector<KvCacheManager::BlockCopy> kv_copies;
  // Preempted this iteration: their blocks were freed; they wait at the queue
  // front and are recomputed over all their known tokens when readmitted.
  std::vector<uint64_t> preempted;
  std::vector<ScheduledPrefill> prefills;  // chunks to run this iteration, in order
  // Sequences that decode one token this iteration: the input is their last
  // known token, at position known - 1 (== CachedTokens(id) - 1 after Schedule).
  std::vector<uint64_t> decodes;
  // Parallel to `decodes`: draft tokens planned after the input token (0: a
  // plain decode; g > 0: positions known - 1 .. known - 1 + g, see above).
  std::vector<int> decode_drafts;
};

// Not thread-safe: owned by the engine's loop thread.
class Scheduler {
 public:
  enum class State {
    kWaiting,     // added, never admitted
    kPrefilling,  // admitted, prompt (or recompute) chunks still to run
    kDecoding,    // all known tokens cached or planned; decodes one token per iteration
    kPreempted,   // waiting again, to be recomputed
  };

  // OK, or INVALID_ARGUMENT naming the first field out of range.
  static absl::Status Validate(const SchedulerOptions& options);

  // Fields out of range (see Validate) are raised to 1.
  explicit Scheduler(SchedulerOptions options);

  // Queues a fresh sequence of `prompt_tokens` known tokens. INVALID_ARGUMENT
  // when prompt_tokens < 1, max_new_tokens < 1, or prompt_tokens +
  // max_new_tokens exceeds the pool's capacity (num_blocks * block_size
  // tokens); RESOURCE_EXHAUSTED when max_queue fresh requests already wait;
  // ALREADY_EXISTS for an id that is already here.
  // With prefix caching, `prompt_ids` (prompt_tokens ids) lets the sequence
  // share and publish prompt blocks; without them it does neither.
  absl::Status Add(uint64_t id, int prompt_tokens, int max_new_tokens,
                   std::vector<int> prompt_ids = {});

  // n > 1 choices: `child` (a new id) continues from where `parent` is now,
  // its prompt computed once: right after the parent's last prefill chunk
  // was planned (state kDecoding, no token appended yet), the child gets
  // the parent's known and cached tokens, shares its full KV blocks and gets
  // a private copy of the partial last one (KvCacheManager::Fork), and is
  // running (kDecoding) at the back of the running list. Returns the blocks
  // whose slots the caller must copy ({parent's, child's}, or {-1, -1}).
  // RESOURCE_EXHAUSTED when max_batch sequences run already or the block to
  // copy into is not free (the caller then Add()s the child to prefill on
  // its own); FAILED_PRECONDITION when the parent is not in that state;
  // ALREADY_EXISTS for a known child id.
  absl::StatusOr<std::pair<int, int>> Fork(uint64_t parent, uint64_t child, int max_new_tokens);

  // Finish / cancel / deadline: forgets `id` and frees its blocks at once,
  // whatever its state. Unknown id: no-op.
  void Remove(uint64_t id);

  // Plans one iteration (see the policy above).
  SchedulerStep Schedule();

  // The engine appended sampled token `token` to `id` (after its last_chunk
  // prefill or a decode): known grows by one, and with prefix caching the
  // blocks its computed tokens fill are published. Ignored for an unknown id
  // or a sequence that has no token to receive (debug builds assert on the
  // latter). With speculation, up to 1 + g tokens follow one decode (see
  // above).
  void OnTokenAppended(uint64_t id, int token);

  // Speculation (see above): the next Schedule() may plan up to k (>= 0)
  // draft positions after the decode of `id`. Reset by every Schedule().
  // Unknown id: no-op.
  void ProposeDraftTokens(uint64_t id, int k);
  // After a speculative decode and the appends of its accepted tokens: the
  // positions past known - 1 are dropped from the cache and their blocks
  // freed. No-op for an unknown id or one with nothing to roll back.
  void RollBack(uint64_t id);

  // Block ids holding positions [0, CachedTokens(id)) of `id`, in order; empty
  // for an unknown id. Valid until the next Schedule() or Remove().
  const std::vector<int>& BlockTable(uint64_t id) const;

  // For tests and metrics: the state and token counts of one sequence.
  std::optional<State> StateOf(uint64_t id) const;
  int KnownTokens(uint64_t id) const;   // 0 for an unknown id
  int CachedTokens(uint64_t id) const;  // 0 for an unknown id

  int num_waiting() const { return static_cast<int>(waiting_.size()); }  // fresh + preempted
  int num_waiting_fresh() const { return num_waiting_fresh_; }
  int num_running() const { return static_cast<int>(running_.size()); }
  // Free blocks include cached blocks no sequence uses (they can be evicted).
  int num_free_blocks() const { return kv_.num_free_blocks(); }
  int num_used_blocks() const { return kv_.num_used_blocks(); }
  int num_cached_blocks() const { return kv_.num_cached_blocks(); }  // published
  int64_t prefix_cache_queries() const { return prefix_queries_; }   // prompt tokens admitted
  int64_t prefix_cache_hits() const { return prefix_hits_; }         // of them, found cached
  int num_blocks() const { return kv_.num_blocks(); }
  int64_t num_preemptions() const { return num_preemptions_; }
  const SchedulerOptions& options() const { return options_; }

 private:
  // The blocks of a sequence (its table, its prompt's ids) are kv_'s.
  struct Sequence {
    int prompt_tokens = 0;
    int max_new_tokens = 0;
    int known = 0;
    int cached = 0;
    int drafts = 0;  // ProposeDraftTokens for the next Schedule()
    State state = State::kWaiting;
  };

  // Free blocks minus those reserved by running prefills.
  int UnreservedFreeBlocks() const;
  void PlanDecodes(SchedulerStep& step);
  // The draft positions of a planned decode of `id` (see ProposeDraftTokens):
  // allocates them and returns how many.
  int PlanDrafts(uint64_t id, Sequence& seq);
  void PlanPrefills(SchedulerStep& step);
  // Plans the next chunk of `id` within `budget`; returns its length.
  int PlanChunk(uint64_t id, Sequence& seq, int budget, SchedulerStep& step);
  // Frees the blocks of running `id` and puts it at the queue front.
  void Preempt(uint64_t id, SchedulerStep& step);

  SchedulerOptions options_;
  KvCacheManager kv_;  // blocks, block tables, prefix cache
  std::unordered_map<uint64_t, Sequence> sequences_;
  std::deque<uint64_t> waiting_;   // front is admitted next
  std::vector<uint64_t> running_;  // admission order: back is the newest
  int num_waiting_fresh_ = 0;
  int64_t num_preemptions_ = 0;
  int64_t prefix_queries_ = 0;
  int64_t prefix_hits_ = 0;
};

}  // namespace streamgen
