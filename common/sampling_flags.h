// The sampling flags every command-line program of streamgen shares
// (streamgen-client generate and bench, streamgen-generate), with one
// convention: values are the API's own (top_p 1 and repetition_penalty 1 are
// "off"), and a flag that is not given stays unset, so that the server or
// engine applies the model's generation_config.json default for it. The flags
// themselves are defined in sampling_flags.cc; a program gets them by calling
// ReadSamplingFlags. No gRPC, no torch, no engine.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace streamgen {

struct SamplingFlags {
  std::optional<int> max_new_tokens;         // --max-new-tokens
  std::optional<double> temperature;         // --temperature (0: greedy)
  std::optional<int> top_k;                  // --top-k (0: off)
  std::optional<double> top_p;               // --top-p (1: off)
  std::optional<double> min_p;               // --min-p (0: off)
  std::optional<double> repetition_penalty;  // --repetition-penalty (1: off)
  double presence_penalty = 0;               // --presence-penalty
  double frequency_penalty = 0;              // --frequency-penalty
  std::optional<uint64_t> seed;              // --seed (unset: the server picks and reports one)
  std::vector<std::string> stop;             // --stop, repeatable (a stop string may hold commas)
  std::vector<int> stop_token_ids;           // --stop-token-ids 2,13
  bool ignore_eos = false;                   // --ignore-eos
  int top_logprobs = 0;                      // --top-logprobs
};

// What the command line said before absl parses it: the --stop values (absl's
// flags keep only a flag's last value) and which flags were given at all
// (abseil 20220623 does not tell whether a flag was set on the command line).
struct SamplingArgs {
  std::vector<std::string> stops;
  std::set<std::string> given;  // flag names as abseil spells them (top_p)
};

// Removes every --stop VALUE / --stop=VALUE from argv and notes every flag
// name that appears. Call it on the normalized argv (NormalizeFlagNames)
// before absl::ParseCommandLine, then pass the result to ReadSamplingFlags.
SamplingArgs TakeSamplingArgs(int* argc, char** argv);

// The flags' values after absl::ParseCommandLine. INVALID_ARGUMENT naming the
// flag for a seed or a stop id that is not a number.
absl::StatusOr<SamplingFlags> ReadSamplingFlags(SamplingArgs args);

}  // namespace streamgen
