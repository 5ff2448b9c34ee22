// Speculative decoding's benchmark (engine only, no server): generated
// tokens/s with --speculative none against prompt-lookup (and draft models),
// per workload and stream count, in interleaved rounds (a fresh engine per
// measurement, so neither inherits the other's threads or caches), greedy.
// A measurement runs every prompt of the workload at least once, at most
// `streams` at a time.
//
//   streamgen-bench-spec [--model DIR] [--threads 0] [--new-tokens 128]
//       [--rounds 3] [--streams 1,4,16] [--speculative-max-batch 16]
//       [--draft-model DIR[,DIR...]]   # also --speculative draft, per draft
//       [--draft-p-min 0,0.05,...]     # per draft, each confidence stop
//       [--positions]                  # acceptance by draft position, time split
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
#include <condition_variable>
#include <cstdio>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/cli_flags.h"
#include "engine/engine.h"

ABSL_FLAG(std::string, model, "models/demo-brown", "model directory");
ABSL_FLAG(int, threads, 0, "intra-op threads; 0: the engine's default");
ABSL_FLAG(int, new_tokens, 128, "tokens generated per request (ignore_eos)");
ABSL_FLAG(int, rounds, 3, "interleaved rounds (every mode once each) per figure");
ABSL_FLAG(std::string, streams, "1,16", "comma-separated concurrent request counts");
ABSL_FLAG(int, speculative_max_batch, 4,
          "EngineOptions::speculative_max_batch of the prompt-lookup engine");
ABSL_FLAG(int, num_speculative_tokens, 0, "0: adaptive");
ABSL_FLAG(std::string, draft_model, "",
          "also measure --speculative draft with this draft model (e.g. "
          "build/models/demo-brown-draft, tools/demo_model/train_draft.sh); a comma-separated "
          "list measures each, interleaved in the same rounds");
ABSL_FLAG(std::string, workloads, "copy,prose", "comma-separated workloads to measure");
ABSL_FLAG(std::string, draft_p_min, "",
          "with --draft-model: EngineOptions::draft_p_min, a comma-separated list measures each "
          "(per draft model, interleaved in the same rounds); empty: the engine's default");
ABSL_FLAG(bool, positions, false,
          "also print, per draft mode, drafts and acceptance by draft position and the share "
          "of the wall time spent drafting");

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
  double seconds = 0;
  int64_t drafts = 0;
  int64_t accepted = 0;
  int64_t steps = 0;
  int64_t verify_steps = 0;
  int64_t draft_ns = 0;
  std::vector<int64_t> drafted_at, reached_at, accepted_at;  // by draft position
};

// A measured configuration: a label, the --speculative value, its draft
// model and draft_p_min (negative: the engine's default).
struct Mode {
  std::string label, speculative, draft;
  float p_min = -1;
};

// One fresh engine, `streams` requests at a time (the workload's prompts in
// turn, each at least once), all generating new_tokens greedy tokens.
Figure Measure(const Mode& mode, const std::vector<std::string>& prompts, int streams) {
  streamgen::EngineOptions options;
  options.model_dir = absl::GetFlag(FLAGS_model);
  options.dtype = "float32";
  options.threads = absl::GetFlag(FLAGS_threads);
  options.max_batch = std::max(16, streams);
  options.speculative = mode.speculative;
  options.draft_model = mode.draft;
  if (mode.p_min >= 0) options.draft_p_min = mode.p_min;
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
  // Every prompt of the workload runs at least once (at 1 stream too: one
  // prompt's output can accept far more or fewer drafts than another's), with
  // at most `streams` in flight: a finished request's place goes to the next.
  const int total = std::max(streams, static_cast<int>(prompts.size()));
  std::mutex mu;
  std::condition_variable finished_cv;
  int finished = 0;
  const auto start = Clock::now();
  for (int i = 0; i < total; ++i) {
    {
      std::unique_lock<std::mutex> lock(mu);
      finished_cv.wait(lock, [&] { return i - finished < streams; });
    }
    streamgen::GenerationRequest r;
    r.prompt = prompts[i % prompts.size()];
    r.max_new_tokens = absl::GetFlag(FLAGS_new_tokens);
    r.ignore_eos = true;
    auto id = (*engine)->Submit(r, [&](streamgen::TokenEvent&& e) {
      if (e.finish_reason == streamgen::FinishReason::kNone) return;
      std::lock_guard<std::mutex> lock(mu);
      ++finished;
      finished_cv.notify_all();
    });
    if (!id.ok()) {
      std::fprintf(stderr, "%s\n", std::string(id.status().message()).c_str());
      std::exit(1);
    }
  }
  {
    std::unique_lock<std::mutex> lock(mu);
    finished_cv.wait(lock, [&] { return finished == total; });
  }
  const double s = std::chrono::duration<double>(Clock::now() - start).count();
  const streamgen::EngineStats after = (*engine)->stats();
  Figure f;
  f.tokens_per_s = (after.generated_tokens - before.generated_tokens) / s;
  f.drafts = after.draft_tokens - before.draft_tokens;
  f.accepted = after.accepted_draft_tokens - before.accepted_draft_tokens;
  f.steps = after.steps - before.steps;
  f.seconds = s;
  f.verify_steps = after.verify_steps - before.verify_steps;
  f.draft_ns = after.draft_ns - before.draft_ns;
  for (int i = 0; i < streamgen::EngineStats::kDraftPositions; ++i) {
    f.drafted_at.push_back(after.drafted_at[i] - before.drafted_at[i]);
    f.reached_at.push_back(after.reached_at[i] - before.reached_at[i]);
    f.accepted_at.push_back(after.accepted_at[i] - before.accepted_at[i]);
  }
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
  std::vector<Mode> modes = {{"none", "none", ""}, {"prompt-lookup", "prompt-lookup", ""}};
  const std::vector<std::string> drafts =
      absl::StrSplit(absl::GetFlag(FLAGS_draft_model), ',', absl::SkipEmpty());
  std::vector<float> p_mins;
  for (absl::string_view part :
       absl::StrSplit(absl::GetFlag(FLAGS_draft_p_min), ',', absl::SkipEmpty())) {
    float p = 0;
    if (!absl::SimpleAtof(part, &p) || !(p >= 0 && p <= 1)) {
      std::fprintf(stderr, "--draft-p-min: '%s' is not a probability in [0, 1]\n",
                   std::string(part).c_str());
      return 1;
    }
    p_mins.push_back(p);
  }
  if (p_mins.empty()) p_mins.push_back(-1);  // the engine's default
  for (const std::string& d : drafts) {
    for (float p : p_mins) {
      std::string label = drafts.size() == 1 ? "draft" : "draft:" + d;
      if (p >= 0 && p_mins.size() > 1) label += "@p" + absl::StrFormat("%.2f", p);
      modes.push_back({label, "draft", d, p});
    }
  }
  const std::vector<std::string> workloads = absl::StrSplit(absl::GetFlag(FLAGS_workloads), ',');
  for (const std::string& w : workloads) {
    if (Workloads().count(w) == 0) {
      std::fprintf(stderr, "--workloads: unknown workload '%s' (copy, prose)\n", w.c_str());
      return 1;
    }
  }
  const int rounds = absl::GetFlag(FLAGS_rounds);
  std::string json = "{";
  for (const auto& [name, prompts] : Workloads()) {
    if (std::find(workloads.begin(), workloads.end(), name) == workloads.end()) continue;
    for (int streams : stream_counts) {
      std::vector<double> mean(modes.size(), 0);
      std::vector<std::vector<double>> ratios(modes.size());  // per round, against that round's none
      std::vector<Figure> sum(modes.size());                 // counts over all rounds
      for (int round = 0; round < rounds; ++round) {
        double none = 0;
        for (size_t m = 0; m < modes.size(); ++m) {
          const Figure f = Measure(modes[m], prompts, streams);
          if (m == 0) none = f.tokens_per_s;
          mean[m] += f.tokens_per_s / rounds;
          ratios[m].push_back(f.tokens_per_s / none);
          Figure& t = sum[m];
          t.seconds += f.seconds;
          t.drafts += f.drafts;
          t.accepted += f.accepted;
          t.steps += f.steps;
          t.verify_steps += f.verify_steps;
          t.draft_ns += f.draft_ns;
          t.drafted_at.resize(f.drafted_at.size());
          t.reached_at.resize(f.drafted_at.size());
          t.accepted_at.resize(f.drafted_at.size());
          for (size_t i = 0; i < f.drafted_at.size(); ++i) {
            t.drafted_at[i] += f.drafted_at[i];
            t.reached_at[i] += f.reached_at[i];
            t.accepted_at[i] += f.accepted_at[i];
          }
        }
      }
      std::printf("%-5s streams %2d: none %7.1f tok/s", name.c_str(), streams, mean[0]);
      if (json.size() > 1) json += ",";
      json += "\"" + name + "_" + std::to_string(streams) + "\":{\"none\":" + std::to_string(mean[0]);
      for (size_t m = 1; m < modes.size(); ++m) {
        const Figure& f = sum[m];
        const double acceptance = f.drafts > 0 ? double(f.accepted) / f.drafts : 0;
        std::vector<double> r = ratios[m];
        std::sort(r.begin(), r.end());
        std::printf("; %s %7.1f tok/s (x%.2f, per round min/median/max %.2f/%.2f/%.2f), "
                    "accepted %lld/%lld (%.0f%%), %.1f steps/round",
                    modes[m].label.c_str(), mean[m], mean[m] / mean[0], r.front(),
                    r[r.size() / 2], r.back(), static_cast<long long>(f.accepted),
                    static_cast<long long>(f.drafts), 100 * acceptance,
                    static_cast<double>(f.steps) / rounds);
        json += ",\"" + modes[m].label + "\":" + std::to_string(mean[m]) + ",\"" +
                modes[m].label + "_acceptance\":" + std::to_string(acceptance);
      }
      json += "}";
      std::printf("\n");
      if (absl::GetFlag(FLAGS_positions)) {
        // Where the time goes: a step without drafting (none), and a
        // speculative run's step outside its drafting (verify steps, mostly).
        std::printf("  none: %.2f ms/step\n", 1e3 * sum[0].seconds / sum[0].steps);
        for (size_t m = 1; m < modes.size(); ++m) {
          const Figure& f = sum[m];
          if (f.verify_steps == 0 && f.draft_ns == 0) continue;
          const double steps = std::max<int64_t>(f.verify_steps, 1);
          std::printf("  %s: %lld verify steps, %.2f drafts/step, %.2f accepted/step, drafting "
                      "%.0f%% of the wall time, %.2f ms/step outside it; by position (drafted, "
                      "compared, accepted/compared):",
                      modes[m].label.c_str(), static_cast<long long>(f.verify_steps),
                      f.drafts / steps, f.accepted / steps,
                      100 * f.draft_ns * 1e-9 / f.seconds,
                      1e3 * (f.seconds - f.draft_ns * 1e-9) / f.steps);
          for (size_t i = 0; i < f.drafted_at.size() && f.drafted_at[i] > 0; ++i) {
            std::printf(" %zu:(%lld, %lld, %.0f%%)", i + 1, static_cast<long long>(f.drafted_at[i]),
                        static_cast<long long>(f.reached_at[i]),
                        f.reached_at[i] > 0 ? 100.0 * f.accepted_at[i] / f.reached_at[i] : 0.0);
          }
          std::printf("\n");
        }
      }
      std::fflush(stdout);
    }
  }
  std::printf("%s}\n", json.c_str());
  return 0;
}
