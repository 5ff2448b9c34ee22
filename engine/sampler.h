// The sampler: a function of (logits, params, rng). Chooses the next token of
// each sequence in a batch with libtorch ops on the logits' device (CPU or
// CUDA); only the chosen ids (and logprobs) are copied back, once per batch.
//
// Per row, in vLLM's order:
//   1. ids >= valid_vocab (padded embedding rows) are cut off (a narrowed
//      view, like a -inf mask): never chosen, never in logprobs; and with a
//      constraint (SampleInput::allowed) every id it does not allow gets -inf
//   2. penalties: repetition (HF-style, over prompt + output ids), then
//      frequency and presence (OpenAI-style, over output ids), then
//      logit_bias added (SamplingParams::logit_bias)
//   3. temperature == 0: greedy argmax (ties: the lowest id, as torch::argmax)
//   4. logits / temperature
//   5. top-k (exactly k kept; which of several ids tied at the k-th value stay
//      is torch::topk's choice: deterministic on a device, not specified)
//   6. top-p (the smallest set of most likely tokens whose mass >= top_p,
//      over the distribution renormalised after top-k; ties: lower ids first)
//   7. min-p (drop tokens with prob < min_p * max prob)
//   8. one uniform u from the row's own SequenceRng selects an id by inverse
//      CDF over the renormalised probabilities, in id order (see SelectByUniform)
//
// Errors: bad input (a wrong shape or dtype, valid_vocab outside [1, vocab], a
// null pointer, params out of range, a prompt / output id outside [0, vocab)
// where a penalty reads it) throws c10::Error with a message naming the row
// and field ("SampleBatch: rows[1]: top_p must be in (0, 1], got 1.5"), like
// the libtorch ops inside; the engine catches c10::Error at its edge.
//
// Logprobs (TokenInfo::logprob and ::top_logprobs) are log_softmax of the raw
// logits after step 1 only: before penalties, logit_bias, temperature and
// filters. They describe the model, not the sampling settings (OpenAI's and
// vLLM's default). With a constraint they are of the masked distribution
// (the model's probabilities renormalised over the allowed tokens; a
// disallowed id is never among top_logprobs), as vLLM's are: it applies the
// grammar's bitmask to the logits before its sampler reads them.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <random>
#include <vector>

#include "absl/status/status.h"
#include "engine/request.h"

namespace streamgen {

// A sequence's own random numbers: std::mt19937_64 seeded with the request's
// seed. The same seed gives the same uniforms on every platform (no
// std::uniform_real_distribution, whose output is implementation-defined).
// Not thread-safe: one per sequence, used on the engine's loop thread.
class SequenceRng {
 public:
  explicit SequenceRng(uint64_t seed) : engine_(seed), seed_(seed) {}

  // A uniform double in [0, 1): the top 53 bits of the next 64-bit output.
  double NextUniform() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; }

  uint64_t seed() const { return seed_; }

 private:
  std::mt19937_64 engine_;
  uint64_t seed_;
};

// One row of a batch. The pointers are borrowed for the duration of the call.
struct SampleInput {
  const SamplingParams* params = nullptr;        // required
  const std::vector<int>* prompt_ids = nullptr;  // nullptr: empty; for repetition_penalty
  const std::vector<int>* output_ids = nullptr;  // nullptr: empty; ids generated so far
  SequenceRng* rng = nullptr;  // required when params->temperature > 0; one draw per call
  int top_logprobs = 0;        // alternatives to report, 0..kMaxTopLogprobs
  // nullptr: every id allowed. Otherwise a constraint's bitmask
  // (TokenMatcher::FillNextTokenBitmask): id i is allowed when bit i % 32 of
  // allowed[i / 32] is set; at least (valid_vocab + 31) / 32 words. At least one id below
  // valid_vocab must be allowed.
  const uint32_t* allowed = nullptr;
};

// Chooses one token per row of `logits` ([batch, vocab], any floating dtype,
// CPU or CUDA; computed in float32). Returns batch TokenInfos in row order:
// id in [0, valid_vocab), logprob of that id (always set), and
// rows[i].top_logprobs best alternatives, best first.
// Draws exactly one NextUniform() from rows[i].rng for each row with
// temperature > 0, none for greedy rows: a row's tokens never depend on the
// other rows or their order. Greedy rows without penalties and without
// top_logprobs share one batched argmax; all rows share one device-to-host
// copy of the results. On CUDA that copy is the only host sync (penalty ids go
// up through pinned memory, non-blocking); on the CPU top-p reads a few sums
// on the host, which costs nothing there.
// Throws c10::Error on bad input (see the top of this file).
// Thread-safe as long as no two calls share a SequenceRng.
std::vector<TokenInfo> SampleBatch(const torch::Tensor& logits,
                                   const std::vector<SampleInput>& rows, int valid_vocab);

// SampleBatch for one row: `logits` is [vocab]. Returns the chosen id and,
// when `info` is not null, stores its TokenInfo there.
int SampleOne(const torch::Tensor& logits, const SampleInput& row, int valid_vocab,
              TokenInfo* info = nullptr);

// ---- The stages, exposed for tests and benchmarks (SampleBatch uses them). ----

// Step 2: `logits` [n] float32 (n <= vocab: ids outside [0, n) are ignored) with the
// penalties and params.logit_bias applied, as a new tensor. Thread-safe.
torch::Tensor ApplyPenalties(const torch::Tensor& logits, const SamplingParams& params,
                             const std::vector<int>& prompt_ids,
                             const std::vector<int>& output_ids);

// Steps 1-7 for one row: the probabilities that step 8 samples from, [vocab]
// float32 on the logits' device, summing to 1, 0 for every filtered id and
// every id >= valid_vocab. temperature == 0 gives the one-hot of the greedy
// choice. `logits` is [vocab]. Throws c10::Error as SampleBatch. Thread-safe.
torch::Tensor ComputeProbs(const torch::Tensor& logits, const SamplingParams& params,
                           const std::vector<int>& prompt_ids, const std::vector<int>& output_ids,
                           int valid_vocab);

// Step 1's constraint mask: `allowed` (SampleInput::allowed) unpacked to [n]
// bool on `device`, true for the allowed ids in [0, n). Thread-safe.
torch::Tensor AllowedMask(const uint32_t* allowed, int64_t n, const torch::Device& device);

// Step 6: true for the ids kept by top-p in `probs` ([n], >= 0, summing to
// about 1): the smallest set of most likely ids (ties: lower ids first) whose
// mass reaches top_p (within 1e-6, for rounding). by_sort: one stable sort of
// all n (SampleBatch's choice off the CPU); otherwise the candidate search
// that SampleBatch uses on the CPU (host reads, cheap there). Same result.
// Returns [n] bool on the probs' device. Thread-safe.
torch::Tensor TopPMask(const torch::Tensor& probs, double top_p, bool by_sort);

// Step 8: the smallest id i with cdf[i] > u * cdf[n-1], where cdf is the
// cumulative sum (float64) of `probs` ([n], >= 0, not necessarily
// normalised) in id order. An id with probability 0 is never chosen.
// u in [0, 1). Returns a 1-element int64 tensor on the probs' device (no sync).
// Thread-safe.
torch::Tensor SelectByUniform(const torch::Tensor& probs, double u);

}  // namespace streamgen
