// The engine's own request and result types (no protobuf, no gRPC, no torch).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "engine/grammar/constraint.h"

namespace streamgen {

// How the next token is chosen. Neutral values switch a stage off.
struct SamplingParams {
  float temperature = 0.0f;         // 0: greedy (argmax); otherwise logits / T
  int top_k = 0;                    // 0: off; keep the k most likely tokens
  float top_p = 1.0f;               // 1: off; nucleus mass in (0, 1]
  float min_p = 0.0f;               // 0: off; drop tokens below min_p * max prob
  float repetition_penalty = 1.0f;  // 1: off; HF-style, over prompt + output
  float presence_penalty = 0.0f;    // 0: off; OpenAI-style, over output tokens
  float frequency_penalty = 0.0f;   // 0: off; OpenAI-style, over output tokens
  std::optional<uint64_t> seed;     // empty: the engine picks one (< 2^53) and reports it
  // Added to a token's logit after the penalties and before temperature /
  // greedy (vLLM's order); each bias in [-100, 100], ids in the vocabulary,
  // at most kMaxLogitBias entries (request_validation.h). -100 bans a token in
  // practice, +100 all but forces it. Logprobs do not see it.
  std::vector<std::pair<int, float>> logit_bias;
};

// One generation. Exactly one of `prompt` / `prompt_token_ids` is set.
struct GenerationRequest {
  std::string request_id;              // echoed in logs; free-form
  std::string prompt;                  // text; BOS added as the tokenizer config says
  std::vector<int> prompt_token_ids;   // used as given (no BOS added)
  int max_new_tokens = 0;              // 0: the engine's default, clamped to context
  SamplingParams sampling;
  std::vector<std::string> stop;       // stop strings: never reach the output
  std::vector<int> stop_token_ids;     // like EOS, but always honoured
  bool ignore_eos = false;             // keep going past EOS ids
  int top_logprobs = 0;                // alternatives reported per token, 0..20
  // What the output must match (engine/grammar/constraint.h): kind kNone is
  // free text. Compiled in Submit (INVALID_ARGUMENT naming "constraint" and
  // the position or schema keyword); per step the sampler only sees the
  // tokens the grammar allows, EOS only where it can end, and a completed
  // match ends the sequence with kStop. Stop strings and stop ids still end
  // the output, even inside the grammar. Refused with ignore_eos.
  ConstraintSpec constraint;
  // Resuming a stream: the ids already delivered for this same request (same
  // prompt, parameters and seed). The engine prefills prompt + these, advances
  // the sampler's random numbers by one draw per id (temperature > 0), counts
  // them as output for the penalties, max_new_tokens and completion_tokens,
  // and replays the detokenizer and stop strings over them without emitting:
  // the first event's text starts where their text ended. Submit refuses
  // (INVALID_ARGUMENT) ids outside the vocabulary, as many ids as
  // max_new_tokens or more, an EOS / stop id or a stop string within them (the
  // stream ended there), and temperature > 0 without a seed.
  std::vector<int> resume_token_ids;
  // "": not checked; otherwise must equal ModelInfo::fingerprint
  // (FAILED_PRECONDITION).
  std::string model_fingerprint;
  // The sampling fields the caller left unset (its wire or command line had
  // no value for them). Submit fills each from the model's
  // generation_config.json (ModelInfo::generation_defaults, see
  // ApplyGenerationDefaults) and keeps the neutral value above where the
  // model says nothing. A field set explicitly is never replaced. (An unset
  // max_new_tokens is max_new_tokens == 0, resolved the same way.)
  struct Unset {
    bool temperature = false;
    bool top_k = false;
    bool top_p = false;
    bool min_p = false;
    bool repetition_penalty = false;
  } unset;
};

enum class FinishReason {
  kNone = 0,    // not finished (every event but the last)
  kLength,      // max_new_tokens or the model's context reached
  kEos,         // an EOS id was generated
  kStop,        // a stop string or stop token id
  kCancelled,   // Cancel(), or the engine shut down before the end
  kError,       // the engine failed; `status` says why
};

// "length", "eos", "stop", "cancelled", "error" ("" for kNone).
const char* FinishReasonName(FinishReason reason);

struct TokenLogprob {
  int id = 0;
  float logprob = 0.0f;  // log-softmax of the raw logits (before sampling filters)
};

struct TokenInfo {
  int id = 0;
  float logprob = 0.0f;
  std::vector<TokenLogprob> top_logprobs;  // request.top_logprobs entries, best first
};

// What the engine reports for a request, in order. `text` is UTF-8-safe: it
// never ends inside a character. The last event has finish_reason != kNone.
struct TokenEvent {
  std::string text;              // new text since the previous event
  std::vector<TokenInfo> tokens; // tokens generated since the previous event
  FinishReason finish_reason = FinishReason::kNone;
  bool first = false;            // the request's first event (it may also be the last)
  uint64_t seed = 0;             // every event: the seed used (the engine's when the request had none)
  // Set on the last event only:
  absl::Status status;           // non-OK with kError
  int prompt_tokens = 0;
  int completion_tokens = 0;     // every generated token, EOS / stop tokens included
                                 // (and a resumed stream's resume_token_ids)
  double queue_ms = 0;           // submit -> admitted
  double ttft_ms = 0;            // submit -> first token
  double decode_tokens_per_s = 0;
  double prefill_ms = 0;
};

// Receives a request's events. Called on the engine's loop thread: it must not
// block (copy, post, return).
using TokenSink = std::function<void(TokenEvent&&)>;

}  // namespace streamgen
