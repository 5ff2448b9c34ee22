// The HTTP face's structured-output fields: OpenAI's response_format and
// logit_bias, and vLLM's structured_outputs (and its older guided_* names),
// read into the proto's `constraint` oneof and logit_bias map. JSON types and
// OpenAI's own rules only; the limits are the shared validator's
// (server/validation.h, engine/request_validation.h). Thread-compatible.
#pragma once

#include "absl/status/status.h"
#include "nlohmann/json.hpp"
#include "streamgen/v1/generate.pb.h"

namespace streamgen {

// logit_bias: an object whose keys are token ids written as integers in
// strings ("50256") and whose values are numbers (OpenAI's shape).
// INVALID_ARGUMENT with param logit_bias naming the key.
absl::Status ParseLogitBias(const nlohmann::ordered_json& body, v1::GenerateRequest* request);

// At most one constraint from:
//   response_format {"type": "text"} (none), {"type": "json_object"},
//     {"type": "json_schema", "json_schema": {"name", "schema", "strict",
//     "description"}}: name required (OpenAI's rule: a-z, A-Z, 0-9, _ and -,
//     at most 64); schema an object (absent: any JSON object); strict a
//     boolean (the grammar is always enforced)
//   structured_outputs {"json": object or JSON text, "regex": str,
//     "choice": [str], "grammar": str, "json_object": true} (vLLM), one key
//   guided_json, guided_regex, guided_choice, guided_grammar (vLLM's older
//     top-level names)
// Two of them: INVALID_ARGUMENT naming both ("response_format and
// structured_outputs.regex: set one constraint, not both").
absl::Status ParseConstraint(const nlohmann::ordered_json& body, v1::GenerateRequest* request);

}  // namespace streamgen
