#include "common/sampling_flags.h"

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

ABSL_FLAG(int, max_new_tokens, 0,
          "Tokens to generate; not given: the model's generation_config.json max_new_tokens, "
          "else the server's default; clamped to the context left.");
ABSL_FLAG(double, temperature, 0,
          "Sampling temperature in [0, 100], 0: greedy. Not given: the model's default "
          "(generation_config.json: do_sample and temperature; greedy when it says nothing).");
ABSL_FLAG(int, top_k, 0, "Keep the k most likely tokens; 0: off. Not given: the model's default.");
ABSL_FLAG(double, top_p, 1, "Nucleus mass in (0, 1]; 1: off. Not given: the model's default.");
ABSL_FLAG(double, min_p, 0, "In [0, 1); 0: off. Not given: the model's default.");
ABSL_FLAG(double, repetition_penalty, 1,
          "In (0, 10]; 1: off. Not given: the model's default.");
ABSL_FLAG(double, presence_penalty, 0, "In [-2, 2]; 0: off.");
ABSL_FLAG(double, frequency_penalty, 0, "In [-2, 2]; 0: off.");
ABSL_FLAG(std::string, seed, "",
          "Sampling seed (unsigned integer); not given: the server picks one and reports it.");
ABSL_FLAG(std::string, stop, "",
          "A stop string (never part of the text); repeat the flag for several.");
ABSL_FLAG(std::vector<std::string>, stop_token_ids, {},
          "Stop token ids, comma-separated (like EOS, always honoured).");
ABSL_FLAG(bool, ignore_eos, false, "Keep generating past EOS.");
ABSL_FLAG(int, top_logprobs, 0, "Alternatives reported per token, 0..20.");

namespace streamgen {
namespace {

template <typename T>
std::optional<T> IfGiven(const std::set<std::string>& given, const char* name, T value) {
  return given.count(name) ? std::optional<T>(value) : std::nullopt;
}

}  // namespace

SamplingArgs TakeSamplingArgs(int* argc, char** argv) {
  SamplingArgs args;
  int out = 1;
  for (int i = 1; i < *argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--") {  // everything after it is positional
      while (i < *argc) argv[out++] = argv[i++];
      break;
    }
    const size_t dashes = arg.rfind("--", 0) == 0 ? 2 : (arg.rfind('-', 0) == 0 ? 1 : 0);
    const std::string name = dashes == 0 ? "" : arg.substr(dashes, arg.find('=') - dashes);
    if (name == "stop" && arg.find('=') == std::string::npos && i + 1 < *argc) {
      args.stops.push_back(argv[++i]);
    } else if (name == "stop" && arg.find('=') != std::string::npos) {
      args.stops.push_back(arg.substr(arg.find('=') + 1));
    } else {
      if (!name.empty()) args.given.insert(name);
      argv[out++] = argv[i];
    }
  }
  *argc = out;
  return args;
}

absl::StatusOr<SamplingFlags> ReadSamplingFlags(SamplingArgs args) {
  SamplingFlags f;
  f.max_new_tokens = IfGiven(args.given, "max_new_tokens", absl::GetFlag(FLAGS_max_new_tokens));
  f.temperature = IfGiven(args.given, "temperature", absl::GetFlag(FLAGS_temperature));
  f.top_k = IfGiven(args.given, "top_k", absl::GetFlag(FLAGS_top_k));
  f.top_p = IfGiven(args.given, "top_p", absl::GetFlag(FLAGS_top_p));
  f.min_p = IfGiven(args.given, "min_p", absl::GetFlag(FLAGS_min_p));
  f.repetition_penalty = IfGiven(args.given, "repetition_penalty", absl::GetFlag(FLAGS_repetition_penalty));
  f.presence_penalty = absl::GetFlag(FLAGS_presence_penalty);
  f.frequency_penalty = absl::GetFlag(FLAGS_frequency_penalty);
  const std::string seed = absl::GetFlag(FLAGS_seed);
  if (!seed.empty()) {
    uint64_t value = 0;
    if (!absl::SimpleAtoi(seed, &value)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--seed: '", seed, "' is not an unsigned integer"));
    }
    f.seed = value;
  }
  f.stop = std::move(args.stops);
  for (const std::string& value : absl::GetFlag(FLAGS_stop_token_ids)) {
    int id = 0;
    if (!absl::SimpleAtoi(value, &id)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--stop-token-ids: '", value, "' is not an integer"));
    }
    f.stop_token_ids.push_back(id);
  }
  f.ignore_eos = absl::GetFlag(FLAGS_ignore_eos);
  f.top_logprobs = absl::GetFlag(FLAGS_top_logprobs);
  return f;
}

}  // namespace streamgen
