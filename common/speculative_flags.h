// The speculative-decoding flags of streamgen-server and streamgen-generate:
// one definition (speculative_flags.cc), read with ReadSpeculativeFlags and
// copied into EngineOptions by each program. No gRPC, no torch, no engine.
#pragma once

#include <string>

namespace streamgen {

struct SpeculativeFlags {
  std::string speculative;     // --speculative none|prompt-lookup|draft
  std::string draft_model;     // --draft-model DIR
  int num_speculative_tokens;  // --num-speculative-tokens (0: adaptive)
  int speculative_max_batch;   // --speculative-max-batch
  double draft_p_min;          // --draft-p-min
};

// The flags' values after absl::ParseCommandLine; the engine validates them.
SpeculativeFlags ReadSpeculativeFlags();

}  // namespace streamgen
