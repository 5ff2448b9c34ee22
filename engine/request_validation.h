// The one set of request rules. Every face (gRPC, HTTP), the engine's Submit,
// the sampler's precondition and the tools check a request's fields here: one
// table of ranges and limits, one message per rule. No torch, no protobuf.
//
// A refusal is INVALID_ARGUMENT whose message names the field as the engine
// request spells it ("top_p must be in (0, 1], got 1.5"), and which carries
// that field's name as a payload (FieldOf): a face names it in its own
// vocabulary (OpenAI's `param`, max_new_tokens -> max_tokens) without reading
// the message. vLLM's SamplingParams._verify_args is the model.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "engine/request.h"

namespace streamgen {

inline constexpr int kMaxTopLogprobs = 20;      // alternatives per token
inline constexpr int kMaxRequestIdBytes = 128;  // request_id
inline constexpr int kMaxLogitBias = 300;       // logit_bias entries (OpenAI's limit)
inline constexpr float kMaxAbsLogitBias = 100;  // each bias in [-100, 100]
inline constexpr int kMaxChoices = 8;           // n
inline constexpr int kMaxConstraintBytes = 1 << 16;  // a constraint's text, or its choices together
inline constexpr int kMaxConstraintChoices = 256;    // entries of a choice constraint

// The field a refusal is about, as a status payload.
inline constexpr char kFieldPayloadUrl[] = "type.streamgen.dev/field";

// INVALID_ARGUMENT with `message`, naming `field` in the payload.
absl::Status InvalidField(absl::string_view field, absl::string_view message);
// `status` with `field` as its payload (any code).
absl::Status WithField(absl::Status status, absl::string_view field);
// The field the status names ("" when it names none).
std::string FieldOf(const absl::Status& status);

// The ranges (each message "<field> must be in <range>, got <value>"; NaN is
// refused everywhere):
//   temperature [0, 100] (0: greedy)     top_k >= 0 (0: off)
//   top_p (0, 1] (1: off)                min_p [0, 1) (0: off)
//   repetition_penalty (0, 10] (1: off)  presence_penalty, frequency_penalty [-2, 2]
//   top_logprobs [0, kMaxTopLogprobs]
absl::Status ValidateSampling(const SamplingParams& sampling, int top_logprobs);

// Limits on stop strings and stop ids: at most `max_strings` strings, none
// empty or longer than `max_string_bytes`; every stop id in [0, vocab_size).
struct StopLimits {
  int vocab_size = 0;
  int max_strings = 16;
  int max_string_bytes = 256;
};
absl::Status ValidateStops(const std::vector<std::string>& stop,
                           const std::vector<int>& stop_token_ids, const StopLimits& limits);

// logit_bias: at most kMaxLogitBias entries, each id in [0, vocab_size) and
// each bias in [-kMaxAbsLogitBias, kMaxAbsLogitBias], no id twice:
// "logit_bias[9000]: the token id is outside the vocabulary [0, 4096)",
// "logit_bias[5]: the bias must be in [-100, 100], got 150". Names field
// "logit_bias".
absl::Status ValidateLogitBias(const std::vector<std::pair<int, float>>& bias, int vocab_size);

// n in [1, kMaxChoices]: "n must be in [1, 8], got 9".
absl::Status ValidateChoiceCount(int n);

// The constraint's shape, before it is compiled (the compiler checks the
// text itself): kinds with text need non-empty text of at most
// kMaxConstraintBytes; choice needs 1..kMaxConstraintChoices non-empty
// strings; json_object needs neither. Names field "constraint"; the message
// starts with the kind ("regex: the expression is empty").
absl::Status ValidateConstraintShape(const ConstraintSpec& constraint);

// Every id in [0, vocab_size): "prompt_token_ids[3] = 9000 is outside the
// vocabulary [0, 4096)", naming `field`.
absl::Status ValidateIds(const std::vector<int>& ids, absl::string_view field, int vocab_size);

}  // namespace streamgen
