// Speculative decoding: drafting a few tokens cheaply, and verifying them with
// one forward pass of the target model (a chunk of k + 1 rows per sequence:
// its newest token, then the k drafts; see SeqChunk::all_logits).
//
// Drafting is prompt lookup (no second model: the last n tokens of prompt +
// output, n from kMaxNgram down to 1, are searched for earlier in the same
// tokens, and the tokens that followed the latest match are proposed), or a
// draft model (DraftModel: a smaller LM with the target's tokenizer, run
// greedily, so that its proposal too is a point mass).
//
// Verification (VerifyDrafts) samples row i of the verify chunk exactly as a
// plain decode step would sample that position (the same SampleInput, output
// ids that include the drafts accepted before it, one uniform draw from the
// sequence's SequenceRng for a sampled row) and accepts draft d_{i+1} when the
// sampled token equals it. The first mismatch, or the row after the last
// draft, gives the step's last token; later rows are never sampled (no draws).
// For a draft that is a point mass q = 1{d} (prompt lookup), this IS the
// standard rejection scheme of Leviathan et al. / Chen et al.: the sample x ~ p
// equals d with probability p(d) = min(1, p(d)/q(d)), and on a mismatch x is
// distributed as p with d removed, renormalised = norm(max(0, p - q)). So the
// output distribution is unchanged, and more: every emitted token is the token
// a plain decode would have chosen with the same draw, so a seeded stream is
// the same with or without speculation (up to floating-point differences
// between a verify chunk's and a decode step's arithmetic), and the resume
// contract (one draw per delivered id) holds as it is.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <torch/types.h>

#include "absl/status/statusor.h"
#include "engine/kv/kv_cache_manager.h"
#include "engine/kv/kv_pool.h"
#include "engine/model/llama_model.h"
#include "engine/request.h"
#include "engine/sampler.h"
#include "engine/text/tokenizer.h"

namespace streamgen {

// The longest and shortest n-grams that prompt lookup matches.
inline constexpr int kMaxNgram = 3;
inline constexpr int kMinNgram = 1;
// The range of the adaptive draft length (DraftLength).
inline constexpr int kMinDraftTokens = 1;
inline constexpr int kMaxDraftTokens = 8;

// Prompt lookup: for n = max_ngram down to min_ngram, finds the latest
// earlier occurrence of the last n tokens of `tokens` (not the suffix itself)
// and returns up to `k` tokens that followed it (fewer when the match is near
// the end). Empty when no n-gram matches or k < 1. O(len * n). Thread-safe.
std::vector<int> ProposePromptLookup(const std::vector<int>& tokens, int k,
                                     int max_ngram = kMaxNgram, int min_ngram = kMinNgram);

// A sequence's draft length, adapted to its measured acceptance: one more
// after a step that accepted every draft, one fewer after a step that
// accepted fewer than half, within [kMinDraftTokens, kMaxDraftTokens].
// fixed > 0 pins it (--num-speculative-tokens). Not thread-safe.
class DraftLength {
 public:
  explicit DraftLength(int fixed = 0) : fixed_(fixed), k_(fixed > 0 ? fixed : kStart) {}
  int k() const { return k_; }
  // A verify step proposed `proposed` (>= 1) drafts, of which `accepted` were.
  void Update(int proposed, int accepted);

 private:
  static constexpr int kStart = 4;
  int fixed_;
  int k_;
};

// What one verify chunk gave: the tokens to emit, in order (accepted drafts,
// then the token sampled at the first mismatch or after the last draft).
struct VerifyResult {
  std::vector<TokenInfo> tokens;  // accepted + 1 of them
  int accepted = 0;               // drafts accepted
};

// Verifies `drafts` (k >= 0) against `logits` ([k + 1, vocab] float32, the
// rows of a verify chunk: row i predicts the token after draft i, row 0 the
// token after the sequence's newest token). `row` is what a plain decode of
// this sequence would pass to the sampler; its output_ids are extended with
// each accepted draft before the next row is sampled (penalties see them).
// Draws one uniform from row.rng per sampled row with temperature > 0, i.e.
// one per emitted token. Throws c10::Error as SampleBatch. Not thread-safe
// (the row's SequenceRng).
VerifyResult VerifyDrafts(const torch::Tensor& logits, const std::vector<int>& drafts,
                          const SampleInput& row, int valid_vocab);

// A draft model: a second, smaller causal LM with the target's tokenizer,
// its own KV pool and block tables, run by the engine's loop thread. It
// drafts greedily (argmax over the target's valid ids): q is then a point
// mass, and VerifyDrafts' scheme is exact for sampled rows too, with one draw
// per emitted token (a sampled draft would need q's probabilities and extra
// draws, breaking the resume contract). Not thread-safe.
class DraftModel {
 public:
  // Loads the draft in `dir` with the target's model options and checks its
  // tokenizer against the target's: INVALID_ARGUMENT naming the difference
  // (piece count, a piece, BOS / EOS ids). The pool holds `num_blocks`
  // blocks of `block_size` positions.
  static absl::StatusOr<std::unique_ptr<DraftModel>> Load(const std::string& dir,
                                                          const ModelOptions& model_options,
                                                          const Tokenizer& target_tokenizer,
                                                          const ModelConfig& target_config,
                                                          int num_blocks, int block_size);

  // One sequence to draft for: `k` tokens after `tokens` (prompt + output),
  // written to *drafts (fewer, or none, when the draft's pool or context is
  // full).
  struct Request {
    uint64_t id = 0;
    const std::vector<int>* tokens = nullptr;
    int k = 0;
    std::vector<int>* drafts = nullptr;
  };
  // Drafts for every request, batched: a catch-up chunk per sequence (the
  // tokens its cache lacks, the newest included), then up to k - 1 one-token
  // steps. A sequence stops drafting at the first position where the draft's
  // top probability (softmax over the valid ids) is below `p_min` (that
  // token is not proposed; 0: always k drafts), as llama.cpp's
  // --draft-p-min. Drafting stays greedy, so verification stays exact; the
  // stop only saves the draft steps and verify rows of drafts that would
  // likely be rejected. The cache keeps what it computed; the next call drops
  // the positions whose tokens differ from the sequence's (rejected drafts).
  // c10::Error as Step.
  void Propose(const std::vector<Request>& requests, int valid_vocab, float p_min = 0);
  // Forgets a finished sequence and frees its blocks. Unknown id: no-op.
  void Remove(uint64_t id);

  const ModelConfig& config() const { return model_->config(); }
  int num_free_blocks() const { return blocks_.num_free_blocks(); }

 private:
  DraftModel(std::unique_ptr<LlamaModel> model, int num_blocks, int block_size);

  std::unique_ptr<LlamaModel> model_;
  KvPool pool_;
  KvCacheManager blocks_;
  // Per sequence: the tokens whose keys and values are in the pool, in order.
  std::unordered_map<uint64_t, std::vector<int>> fed_;
};

}  // namespace streamgen
