// Speculative decoding's benchmark (engine only, no server): generated
// tokens/s with --speculative none against prompt-lookup, per workload and
// stream count, in interleaved rounds (a fresh engine per measurement, so
// neither inherits the other's threads or caches), greedy.
//
//   streamgen-bench-spec [--model DIR] [--threads 0] [--new-tokens 128]
//       [--rounds 3] [--streams 1,4,16] [--speculative-max-batch 16]
//       [--draft-model DIR[,DIR...]]   # also --speculative draft, per draft
//       [--workloads copy,prose]
//
// Workloads (text prompts, the demo model's tokenizer):
//   copy:  text the model is asked to repeat; the demo model (3M parameters)
//          copies little from its prompt but falls into loops of its own
//          output, which prompt lookup drafts as well;
//   prose: the start of a sentence, nothing to copy.
// Prints one line per figure and a final JSON line.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <future>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "common/cli_flags.h"
#include "engine/engine.h"

ABSL_FLAG(std::string, model, "models/demo-brown", "model directory");
ABSL_FLAG(int, threads, 0, "intra-op threads; 0: the engine's default");
ABSL_FLAG(int, new_tokens, 128, "tokens generated per request (ignore_eos)");
ABSL_FLAG(int, rounds, 3, "interleaved rounds (none, prompt-lookup) per figure");
ABSL_FLAG(std::string, streams, "1,16", "comma-separated concurrent request counts");
ABSL_FLAG(int, speculative_max_batch, 4,
          "EngineOptions::speculative_max_batch of the prompt-lookup engine");
ABSL_FLAG(int, num_speculative_tokens, 0, "0: adaptive");
ABSL_FLAG(std::string, draft_model, "",
          "also measure --speculative draft with this draft model (e.g. "
          "build/models/demo-brown-draft, tools/demo_model/train_draft.sh); a comma-separated "
          "list measures each, interleaved in the same rounds");
ABSL_FLAG(std::string, workloads, "copy,prose", "comma-separated workloads to measure");

namespace {

using Clock = std::chrono::steady_clock;

const std::map<std::string, std::vector<std::string>>& Workloads() {
  static const auto* w = new std::map<std::string, std::vector<std::string>>{
      {"copy",
       {"Repeat the following text: he said , `` i am going home '' . he said , `` i am going "
        "home '' . he said ,",
        "Repeat the following text: the man . the man . the man . the man . the man . the",
        "Repeat the following text: the old man walked to the river and sat down by the water . "
        "the old man walked to the river and sat down by the water . the old man walked",
        "Repeat the following text: one two three four five six seven eight nine ten . one two "
        "three four five six seven eight nine ten . one two three"}},
      {"prose",
       {"The committee said that the new plan", "In the morning the men went out to",
        "She had never seen the city so", "It was a good year for the farmers of"}},
  };
  return *w;
}

struct Figure {
  double tokens_per_s = 0;
  int64_t drafts = 0;
  int64_t accepted = 0;
  int64_t steps = 0;
};

// One fresh engine, `streams` requests at once (the workload's prompts in
// turn), all generating new_tokens greedy tokens.
Figure Measure(const std::string& speculative, const std::string& draft_model,
               const std::vector<std::string>& prompts, int streams) {
  streamgen::EngineOptions options;
  options.model_dir = absl::GetFlag(FLAGS_model);
  options.dtype = "float32";
  options.threads = absl::GetFlag(FLAGS_threads);
  options.max_batch = std::max(16, streams);
  options.speculative = speculative;
  options.draft_model = draft_model;
  options.speculative_max_batch = absl::GetFlag(FLAGS_speculative_max_batch);
  options.num_speculative_tokens = absl::GetFlag(FLAGS_num_speculative_tokens);
  auto engine = streamgen::Engine::Create(options);
  if (!engine.ok()) {
    std::fprintf(stderr, "%s\n", std::string(engine.status().message()).c_str());
    std::exit(1);
  }
  // Warm-up: one short request.
  {
    streamgen::GenerationRequest r;
    r.prompt = prompts[0];
    r.max_new_tokens = 4;
    std::promise<void> done;
    (void)(*engine)->Submit(r, [&](streamgen::TokenEvent&& e) {
      if (e.finish_reason != streamgen::FinishReason::kNone) done.set_value();
    });
    done.get_future().wait();
  }
  const streamgen::EngineStats before = (*engine)->stats();
  std::vector<std::promise<void>> done(streams);
  const auto start = Clock::now();
  for (int i = 0; i < streams; ++i) {
    streamgen::GenerationRequest r;
    r.prompt = prompts[i % prompts.size()];
    r.max_new_tokens = absl::GetFlag(FLAGS_new_tokens);
    r.ignore_eos = true;
    auto id = (*engine)->Submit(r, [&done, i](streamgen::TokenEvent&& e) {
      if (e.finish_reason != streamgen::FinishReason::kNone) done[i].set_value();
    });
    if (!id.ok()) {
      std::fprintf(stderr, "%s\n", std::string(id.status().message()).c_str());
      std::exit(1);
    }
  }
  for (auto& d : done) d.get_future().wait();
  const double s = std::chrono::duration<double>(Clock::now() - start).count();
  const streamgen::EngineStats after = (*engine)->stats();
  Figure f;
  f.tokens_per_s = (after.generated_tokens - before.generated_tokens) / s;
  f.drafts = after.draft_tokens - before.draft_tokens;
  f.accepted = after.accepted_draft_tokens - before.accepted_draft_tokens;
  f.steps = after.steps - before.steps;
  return f;
}

}  // namespace

int main(int argc, char** argv) {
  constexpr const char* kUsage =
      "streamgen-bench-spec [--model DIR] [--streams 1,16] [--rounds 3]: tokens/s without and "
      "with prompt-lookup speculation";
  absl::SetProgramUsageMessage(kUsage);
  streamgen::ArgvHolder args(streamgen::NormalizeFlagNames(argc, argv));
  argc = args.argc();
  argv = args.argv();
  absl::ParseCommandLine(argc, argv);
  std::vector<int> stream_counts;
  for (absl::string_view part : absl::StrSplit(absl::GetFlag(FLAGS_streams), ',')) {
    int n = 0;
    if (!absl::SimpleAtoi(part, &n) || n < 1) {
      std::fprintf(stderr, "--streams: '%s' is not a positive integer\n", std::string(part).c_str());
      return 1;
    }
    stream_counts.push_back(n);
  }
  // Modes: a label, the --speculative value and its draft model.
  struct Mode {
    std::string label, speculative, draft;
  };
  std::vector<Mode> modes = {{"none", "none", ""}, {"prompt-lookup", "prompt-lookup", ""}};
  const std::vector<std::string> drafts =
      absl::StrSplit(absl::GetFlag(FLAGS_draft_model), ',', absl::SkipEmpty());
  for (const std::string& d : drafts) {
    modes.push_back({drafts.size() == 1 ? "draft" : "draft:" + d, "draft", d});
  }
  const std::vector<std::string> workloads = absl::StrSplit(absl::GetFlag(FLAGS_workloads), ',');
  for (const std::string& w : workloads) {
    if (Workloads().count(w) == 0) {
      std::fprintf(stderr, "--workloads: unknown workload '%s' (copy, prose)\n", w.c_str());
      return 1;
    }
  }
  std::string json = "{";
  for (const auto& [name, prompts] : Workloads()) {
    if (std::find(workloads.begin(), workloads.end(), name) == workloads.end()) continue;
    for (int streams : stream_counts) {
      std::vector<double> mean(modes.size(), 0);
      std::vector<Figure> last(modes.size());
      const int rounds = absl::GetFlag(FLAGS_rounds);
      for (int round = 0; round < rounds; ++round) {
        for (size_t m = 0; m < modes.size(); ++m) {
          last[m] = Measure(modes[m].speculative, modes[m].draft, prompts, streams);
          mean[m] += last[m].tokens_per_s / rounds;
        }
      }
      std::printf("%-5s streams %2d: none %7.1f tok/s", name.c_str(), streams, mean[0]);
      if (json.size() > 1) json += ",";
      json += "\"" + name + "_" + std::to_string(streams) + "\":{\"none\":" + std::to_string(mean[0]);
      for (size_t m = 1; m < modes.size(); ++m) {
        const Figure& f = last[m];
        const double acceptance = f.drafts > 0 ? double(f.accepted) / f.drafts : 0;
        std::printf("; %s %7.1f tok/s (x%.2f), accepted %lld/%lld (%.0f%%), %lld steps",
                    modes[m].label.c_str(), mean[m], mean[m] / mean[0],
                    static_cast<long long>(f.accepted), static_cast<long long>(f.drafts),
                    100 * acceptance, static_cast<long long>(f.steps));
        json += ",\"" + modes[m].label + "\":" + std::to_string(mean[m]) + ",\"" + modes[m].label +
                "_acceptance\":" + std::to_string(acceptance);
      }
      json += "}";
      std::printf("\n");
      std::fflush(stdout);
    }
  }
  std::printf("%s}\n", json.c_str());
  return 0;
}
