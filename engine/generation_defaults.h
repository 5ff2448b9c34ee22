// The model's sampling defaults (generation_config.json) applied to a request's
// unset fields: one rule for every face, client and tool. No torch here.
#pragma once

#include "engine/model/model_config.h"
#include "engine/request.h"

namespace streamgen {

// Fills the fields `request->unset` names from `defaults`, as Hugging Face's
// generate() reads generation_config.json:
//   temperature: do_sample true -> the file's temperature (1.0 when it gives
//                none); do_sample false or absent -> 0 (greedy), whatever
//                temperature the file gives;
//   top_p, top_k, min_p, repetition_penalty: the file's value when it has one;
//                otherwise the neutral value already in the request.
// Like vLLM's --generation-config auto, only keys present in the file apply
// (transformers' implicit top_k = 50 is not added). Explicit fields are never
// touched. max_new_tokens is resolved by the engine (ModelInfo::
// default_max_new_tokens). Thread-safe.
void ApplyGenerationDefaults(const GenerationDefaults& defaults, GenerationRequest* request);

}  // namespace streamgen
