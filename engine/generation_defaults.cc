#include "engine/generation_defaults.h"

namespace streamgen {

void ApplyGenerationDefaults(const GenerationDefaults& d, GenerationRequest* request) {
  const GenerationRequest::Unset& unset = request->unset;
  SamplingParams& s = request->sampling;
  if (unset.temperature) {
    s.temperature = d.do_sample.value_or(false) ? d.temperature.value_or(1.0f) : 0.0f;
  }
  if (unset.top_p && d.top_p) s.top_p = *d.top_p;
  if (unset.top_k && d.top_k) s.top_k = *d.top_k;
  if (unset.min_p && d.min_p) s.min_p = *d.min_p;
  if (unset.repetition_penalty && d.repetition_penalty) s.repetition_penalty = *d.repetition_penalty;
}

}  // namespace streamgen
