#include "common/speculative_flags.h"

#include "absl/flags/flag.h"

ABSL_FLAG(std::string, speculative, "none",
          "Speculative decoding: none; prompt-lookup (drafts are the tokens that followed the "
          "latest earlier match of the last 1-3 tokens of prompt + output); or draft (a smaller "
          "model with the same tokenizer, --draft-model, drafts greedily). Drafts are verified in "
          "one step; the output is unchanged (docs/serving.md).");
ABSL_FLAG(std::string, draft_model, "",
          "With --speculative draft: the draft model's directory (Hugging Face layout, the "
          "target's tokenizer).");
ABSL_FLAG(int, num_speculative_tokens, 0,
          "Draft tokens verified per step and sequence, 1-8; 0: adaptive per sequence (grows "
          "while drafts are accepted, shrinks on rejections).");
ABSL_FLAG(double, draft_p_min, 0.0,
          "With --speculative draft: a sequence stops drafting where the draft model's own "
          "probability of its next token is below this (0-1; 0: always the full draft length). "
          "Drafts it doubts are rarely accepted, and each costs a draft step and a verify row.");
ABSL_FLAG(int, speculative_max_batch, 4,
          "Speculation steps aside while more sequences than this decode together (a batched "
          "step is compute-bound; bench/README.md).");

namespace streamgen {

SpeculativeFlags ReadSpeculativeFlags() {
  return {absl::GetFlag(FLAGS_speculative), absl::GetFlag(FLAGS_draft_model),
          absl::GetFlag(FLAGS_num_speculative_tokens), absl::GetFlag(FLAGS_speculative_max_batch),
          absl::GetFlag(FLAGS_draft_p_min)};
}

}  // namespace streamgen
