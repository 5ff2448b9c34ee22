// Constrained decoding's cost in the engine (issue 22 §4): decode tokens/s of
// B rows with and without a JSON-schema constraint on every row, at each batch
// size, in interleaved rounds of one run, and how much of the mask work the
// forward pass hides ("mask overlap").
//
//   streamgen-bench-constrained --model DIR --schema FILE [--array-of 1000]
//       [--batches 1,16] [--new-tokens 64] [--rounds 5] [--dtype float32]
//       [--threads 0] [--prompt-tokens 16]
//
// The comparison is fair by construction: both modes run the same rows (the
// same synthetic prompts, greedy) for the same max_new_tokens, free text with
// ignore_eos. A constrained row ends where its document can end, so with
// --array-of N (default 1000) the schema is wrapped as an array of at least N
// such documents: no row can end before max_new_tokens, and every row of both
// modes generates exactly as many tokens. The figure is the decode window:
// the tokens generated after every row has its first token, over the time
// from then to the last row's end (prefill left out of both).
//
// On a loaded machine the wall-clock figures move with the load: the
// per-CPU-second figure (every generated token over the process's CPU time
// in the run, all threads) is the cost that the load does not change much;
// with --threads 1 no OpenMP worker spins at a barrier, and it is nearly
// exact.
//
// Mask overlap, from EngineStats over the constrained runs: the masks' own
// wall and CPU time per step (filled on another thread while the forward
// pass runs) against the time the loop still waited for them after the
// forward pass (its own fills of masks the worker had not started, and its
// wait for the rest); hidden = 1 - loop / mask wall time. On a machine with as many
// intra-op threads as cores the mask thread also takes CPU from the forward
// pass: the throughput ratio counts that, the overlap figure does not.
//
// Prints a line per run, a summary per batch size (min / median / max of
// each mode's tokens/s and of the per-round ratio constrained / free) and a
// final JSON line.
#include <time.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/cli_flags.h"
#include "engine/engine.h"
#include "engine/sampler.h"
#include "tools/bench_prompt.h"

ABSL_FLAG(std::string, model, "", "model directory");
ABSL_FLAG(std::string, schema, "", "JSON Schema file (e.g. tests/json_schema_suite/corpus/person.json)");
ABSL_FLAG(int, array_of, 1000,
          "> 0: constrain to an array of at least this many documents of --schema (so that no "
          "row can end before --new-tokens); 0: the schema as it is (rows may end early: the "
          "figures count the tokens actually generated)");
ABSL_FLAG(std::string, batches, "1,16", "batch sizes (rows submitted together)");
ABSL_FLAG(int, new_tokens, 64, "max_new_tokens of every row, both modes");
ABSL_FLAG(int, rounds, 5, "interleaved rounds (each: every batch size, both modes, order alternating)");
ABSL_FLAG(std::string, dtype, "float32", "compute dtype");
ABSL_FLAG(std::string, quantization, "none", "weight quantization: none or int8");
ABSL_FLAG(int, threads, 0, "intra-op threads (0: the engine's default)");
ABSL_FLAG(bool, adaptive_threads, true, "the engine's adaptive_threads (EngineOptions)");
ABSL_FLAG(int, prompt_tokens, 16, "synthetic prompt length (distinct ids per row)");
ABSL_FLAG(std::string, only, "",
          "\"free\" or \"constrained\": run that mode alone (for a profiler; no ratios)");
ABSL_FLAG(int, sampler_iters, 200, "iterations of the sampler figure (0: skip it)");
ABSL_FLAG(bool, show_output, false, "print the first row's text of each constrained run");

namespace {

using Clock = std::chrono::steady_clock;
double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// The process's CPU time in seconds, every thread (OpenMP workers spinning at
// a barrier count too: both modes alike).
double ProcessCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

struct RunResult {
  double tokens_per_s = 0;      // decode window (see the file comment)
  int64_t tokens = 0;           // every generated token, all rows
  int64_t window_tokens = 0;    // of them, generated after every row had its first
  double window_s = 0;
  int64_t steps = 0;            // engine steps over the run
  double cpu_s = 0;             // the process's CPU time over the run (every thread)
  double tokens_per_cpu_s = 0;  // tokens / cpu_s: the cost, robust to a loaded machine
  std::string finish;           // finish reasons of the rows, e.g. "16 length"
  std::string first_text;       // row 0's text
  streamgen::EngineStats before, after;
};

// Submits `batch` rows at once and waits for all of them.
absl::StatusOr<RunResult> RunBatch(streamgen::Engine& engine, int batch, int round,
                                   const streamgen::ConstraintSpec* constraint) {
  const streamgen::ModelInfo& info = engine.model_info();
  const int vocab = info.tokenizer_vocab_size > 0 ? std::min(info.vocab_size, info.tokenizer_vocab_size)
                                                  : info.vocab_size;
  struct Row {
    Clock::time_point first;
    std::vector<Clock::time_point> token_times;
    streamgen::FinishReason finish = streamgen::FinishReason::kNone;
    std::string text;
    absl::Status status;
  };
  std::vector<Row> rows(batch);
  std::mutex mu;
  std::condition_variable cv;
  int done = 0;
  RunResult result;
  result.before = engine.stats();
  const double cpu0 = ProcessCpuSeconds();
  const Clock::time_point start = Clock::now();
  for (int b = 0; b < batch; ++b) {
    streamgen::GenerationRequest req;
    // The same ids for row b of a round in both modes; other rows, other ids.
    req.prompt_token_ids = streamgen::BenchPrompt(round, b, absl::GetFlag(FLAGS_prompt_tokens), vocab,
                                                  info.bos_token_id, info.eos_token_ids);
    req.max_new_tokens = absl::GetFlag(FLAGS_new_tokens);
    req.sampling.temperature = 0;
    if (constraint != nullptr) {
      req.constraint = *constraint;
    } else {
      req.ignore_eos = true;
    }
    absl::StatusOr<uint64_t> id = engine.Submit(req, [&, b](streamgen::TokenEvent&& e) {
      // The loop thread: record and return.
      const Clock::time_point now = Clock::now();
      std::lock_guard<std::mutex> lock(mu);
      Row& row = rows[b];
      for (size_t i = 0; i < e.tokens.size(); ++i) row.token_times.push_back(now);
      row.text += e.text;
      if (e.finish_reason != streamgen::FinishReason::kNone) {
        row.finish = e.finish_reason;
        row.status = e.status;
        done++;
        cv.notify_all();
      }
    });
    if (!id.ok()) return id.status();
  }
  {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return done == batch; });
  }
  result.after = engine.stats();
  result.cpu_s = ProcessCpuSeconds() - cpu0;
  // The window: from the last row's first token to the last row's end.
  Clock::time_point all_first = start, end = start;
  std::vector<int> by_reason(6, 0);
  for (const Row& row : rows) {
    if (!row.status.ok()) return row.status;
    if (row.token_times.empty()) return absl::InternalError("a row generated no token");
    all_first = std::max(all_first, row.token_times.front());
    end = std::max(end, row.token_times.back());
    result.tokens += static_cast<int64_t>(row.token_times.size());
    by_reason[static_cast<int>(row.finish)]++;
  }
  for (const Row& row : rows) {
    for (const Clock::time_point t : row.token_times) result.window_tokens += t > all_first;
  }
  result.window_s = Seconds(all_first, end);
  result.tokens_per_s = result.window_s > 0 ? result.window_tokens / result.window_s : 0;
  result.steps = result.after.steps - result.before.steps;
  result.tokens_per_cpu_s = result.cpu_s > 0 ? result.tokens / result.cpu_s : 0;
  std::vector<std::string> reasons;
  for (int r = 1; r < 6; ++r) {
    if (by_reason[r] > 0) {
      reasons.push_back(absl::StrCat(by_reason[r], " ",
                                     streamgen::FinishReasonName(static_cast<streamgen::FinishReason>(r))));
    }
  }
  result.finish = absl::StrJoin(reasons, ", ");
  result.first_text = rows[0].text;
  return result;
}

// The calling thread's CPU time in seconds (robust to a loaded machine, where
// wall times include waiting for a core).
double ThreadCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

// The sampler alone, on one intra-op thread: SampleBatch (greedy) over
// [batch, vocab] random logits, every row free against every row masked by a
// mask allowing every tenth id. The thread's CPU microseconds per call, the
// best of five passes of `iters` calls.
std::pair<double, double> SamplerMicros(int batch, int vocab, int iters) {
  c10::InferenceMode guard;
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  torch::Tensor logits = torch::randn({batch, vocab});  // [batch, vocab]
  std::vector<uint32_t> mask((vocab + 31) / 32, 0);
  for (int i = 0; i < vocab; i += 10) mask[i / 32] |= uint32_t{1} << (i % 32);
  streamgen::SamplingParams params;  // greedy
  std::vector<streamgen::SampleInput> free_rows(batch), masked_rows(batch);
  for (int b = 0; b < batch; ++b) {
    free_rows[b].params = masked_rows[b].params = &params;
    masked_rows[b].allowed = mask.data();
  }
  auto time = [&](const std::vector<streamgen::SampleInput>& rows) {
    double best = 1e30;
    for (int pass = 0; pass < 5; ++pass) {
      const double t0 = ThreadCpuSeconds();
      for (int i = 0; i < iters; ++i) streamgen::SampleBatch(logits, rows, vocab);
      best = std::min(best, (ThreadCpuSeconds() - t0) / iters);
    }
    return best * 1e6;
  };
  std::pair<double, double> us = {time(free_rows), time(masked_rows)};
  at::set_num_threads(threads);
  return us;
}

struct Summary {
  double min = 0, median = 0, max = 0;
};
Summary Summarize(std::vector<double> v) {
  if (v.empty()) return {};
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  const double median = n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
  return {v.front(), median, v.back()};
}

}  // namespace

int main(int argc, char** argv) {
  streamgen::ArgvHolder args(streamgen::NormalizeFlagNames(argc, argv));
  absl::ParseCommandLine(args.argc(), args.argv());
  const std::string schema_path = absl::GetFlag(FLAGS_schema);
  if (absl::GetFlag(FLAGS_model).empty() || schema_path.empty()) {
    std::fprintf(stderr, "--model and --schema are required\n");
    return 1;
  }
  std::ifstream in(schema_path);
  if (!in) {
    std::fprintf(stderr, "--schema=%s: cannot read the file\n", schema_path.c_str());
    return 1;
  }
  std::stringstream text;
  text << in.rdbuf();
  streamgen::ConstraintSpec spec;
  spec.kind = streamgen::ConstraintSpec::Kind::kJsonSchema;
  spec.text = text.str();
  if (const int n = absl::GetFlag(FLAGS_array_of); n > 0) {
    // A textual wrap: the schema's own "#/..." references would no longer
    // point at its root, so use a schema without them (person.json, tool_call.json).
    spec.text = absl::StrCat("{\"type\": \"array\", \"minItems\": ", n, ", \"items\": ", spec.text, "}");
  }
  if (const std::string only = absl::GetFlag(FLAGS_only);
      !only.empty() && only != "free" && only != "constrained") {
    std::fprintf(stderr, "--only=%s: want free or constrained\n", only.c_str());
    return 1;
  }
  std::vector<int> batches;
  for (absl::string_view b : absl::StrSplit(absl::GetFlag(FLAGS_batches), ',')) {
    int v = 0;
    if (!absl::SimpleAtoi(b, &v) || v < 1) {
      std::fprintf(stderr, "--batches: '%s' is not a batch size >= 1\n", std::string(b).c_str());
      return 1;
    }
    batches.push_back(v);
  }

  streamgen::EngineOptions options;
  options.model_dir = absl::GetFlag(FLAGS_model);
  options.dtype = absl::GetFlag(FLAGS_dtype);
  options.quantization = absl::GetFlag(FLAGS_quantization);
  options.threads = absl::GetFlag(FLAGS_threads);
  options.adaptive_threads = absl::GetFlag(FLAGS_adaptive_threads);
  options.max_batch = std::max(16, *std::max_element(batches.begin(), batches.end()));
  options.max_queue = std::max(options.max_queue, options.max_batch);
  auto engine = streamgen::Engine::Create(options);
  if (!engine.ok()) {
    std::fprintf(stderr, "%s\n", std::string(engine.status().message()).c_str());
    return 1;
  }
  streamgen::Engine& e = **engine;
  // Warm-up: both modes once at the largest batch (the constraint compiled,
  // the grammar's per-position caches filled as a server's would be).
  const std::vector<const streamgen::ConstraintSpec*> modes = {nullptr, &spec};
  for (const streamgen::ConstraintSpec* c : modes) {
    absl::StatusOr<RunResult> r = RunBatch(e, batches.back(), -1, c);
    if (!r.ok()) {
      std::fprintf(stderr, "warm-up (%s): %s\n", c ? "constrained" : "free",
                   std::string(r.status().message()).c_str());
      return 1;
    }
  }
  std::printf("model %s, dtype %s, threads %d, new tokens %d, schema %s%s\n", options.model_dir.c_str(),
              options.dtype.c_str(), e.model_info().threads, absl::GetFlag(FLAGS_new_tokens),
              schema_path.c_str(),
              absl::GetFlag(FLAGS_array_of) > 0
                  ? absl::StrCat(" (an array of >= ", absl::GetFlag(FLAGS_array_of), ")").c_str()
                  : "");
  std::printf("%5s %5s %-11s %10s %10s %8s %8s %10s %10s %9s %8s  %s\n", "round", "batch", "mode",
              "tok/s", "tok/cpu-s", "tokens", "steps", "mask us", "mask cpu", "loop us", "hidden", "finish");
  struct PerBatch {
    std::vector<double> free, constrained, ratio, free_cpu, constrained_cpu, cpu_ratio, mask_us,
        mask_cpu_us, wait_us, hidden, on_loop;
  };
  std::vector<PerBatch> per(batches.size());
  const int rounds = absl::GetFlag(FLAGS_rounds);
  for (int round = 0; round < rounds; ++round) {
    for (size_t bi = 0; bi < batches.size(); ++bi) {
      double tps[2] = {0, 0}, per_cpu[2] = {0, 0};
      for (int k = 0; k < 2; ++k) {
        // Alternate which mode goes first: the machine's speed drifts.
        const bool constrained = (k + round) % 2 == 1;
        const std::string only = absl::GetFlag(FLAGS_only);
        if (!only.empty() && only != (constrained ? "constrained" : "free")) continue;
        absl::StatusOr<RunResult> r = RunBatch(e, batches[bi], round, constrained ? &spec : nullptr);
        if (!r.ok()) {
          std::fprintf(stderr, "round %d batch %d: %s\n", round, batches[bi],
                       std::string(r.status().message()).c_str());
          return 1;
        }
        tps[constrained] = r->tokens_per_s;
        per_cpu[constrained] = r->tokens_per_cpu_s;
        if (constrained) {
          const double steps = std::max<int64_t>(1, r->steps);
          const double wall = (r->after.constraint_mask_wall_ns - r->before.constraint_mask_wall_ns) / 1e3;
          const double cpu = (r->after.constraint_mask_cpu_ns - r->before.constraint_mask_cpu_ns) / 1e3;
          const double wait = (r->after.constraint_mask_wait_ns - r->before.constraint_mask_wait_ns) / 1e3;
          const double hidden = wall > 0 ? 1 - std::min(1.0, wait / wall) : 1;
          const int64_t masks = r->after.constraint_masks - r->before.constraint_masks;
          const int64_t on_loop = r->after.constraint_masks_on_loop - r->before.constraint_masks_on_loop;
          per[bi].on_loop.push_back(masks > 0 ? static_cast<double>(on_loop) / masks : 0);
          per[bi].mask_us.push_back(wall / steps);
          per[bi].mask_cpu_us.push_back(cpu / steps);
          per[bi].wait_us.push_back(wait / steps);
          per[bi].hidden.push_back(hidden);
          std::printf("%5d %5d %-11s %10.1f %10.1f %8lld %8lld %10.1f %10.1f %9.1f %8.3f  %s\n", round,
                      batches[bi], "constrained", r->tokens_per_s, r->tokens_per_cpu_s,
                      static_cast<long long>(r->tokens),
                      static_cast<long long>(r->steps), wall / steps, cpu / steps, wait / steps, hidden,
                      r->finish.c_str());
          if (absl::GetFlag(FLAGS_show_output)) std::printf("      row 0: %s\n", r->first_text.c_str());
        } else {
          std::printf("%5d %5d %-11s %10.1f %10.1f %8lld %8lld %10s %10s %9s %8s  %s\n", round, batches[bi],
                      "free", r->tokens_per_s, r->tokens_per_cpu_s, static_cast<long long>(r->tokens),
                      static_cast<long long>(r->steps),
                      "-", "-", "-", "-", r->finish.c_str());
        }
        std::fflush(stdout);
      }
      per[bi].free.push_back(tps[0]);
      per[bi].constrained.push_back(tps[1]);
      per[bi].ratio.push_back(tps[0] > 0 ? tps[1] / tps[0] : 0);
      per[bi].free_cpu.push_back(per_cpu[0]);
      per[bi].constrained_cpu.push_back(per_cpu[1]);
      per[bi].cpu_ratio.push_back(per_cpu[0] > 0 ? per_cpu[1] / per_cpu[0] : 0);
    }
  }
  std::printf("\nsummary (min / median / max over %d rounds; mask figures per step)\n", rounds);
  std::vector<std::pair<double, double>> sampler(batches.size());
  if (const int iters = absl::GetFlag(FLAGS_sampler_iters); iters > 0) {
    for (size_t bi = 0; bi < batches.size(); ++bi) {
      sampler[bi] = SamplerMicros(batches[bi], e.model_info().vocab_size, iters);
    }
  }
  std::string json = "{\"batches\":[";
  for (size_t bi = 0; bi < batches.size(); ++bi) {
    const Summary f = Summarize(per[bi].free), c = Summarize(per[bi].constrained),
                  r = Summarize(per[bi].ratio), m = Summarize(per[bi].mask_us),
                  mc = Summarize(per[bi].mask_cpu_us), w = Summarize(per[bi].wait_us),
                  h = Summarize(per[bi].hidden), fc = Summarize(per[bi].free_cpu),
                  cc = Summarize(per[bi].constrained_cpu), rc = Summarize(per[bi].cpu_ratio),
                  ol = Summarize(per[bi].on_loop);
    std::printf("batch %2d: free %.1f / %.1f / %.1f tok/s, constrained %.1f / %.1f / %.1f tok/s, "
                "ratio %.3f / %.3f / %.3f;\n          per CPU-second: free %.1f / %.1f / %.1f, "
                "constrained %.1f / %.1f / %.1f tok, ratio %.3f / %.3f / %.3f;\n          mask %.1f us (cpu %.1f), loop %.1f us, hidden %.3f, filled by the loop %.3f "
                "(medians); SampleBatch %.1f us free, %.1f us masked (CPU, 1 thread)\n",
                batches[bi], f.min, f.median, f.max, c.min, c.median, c.max, r.min, r.median, r.max,
                fc.min, fc.median, fc.max, cc.min, cc.median, cc.max, rc.min, rc.median, rc.max, m.median, mc.median, w.median, h.median, ol.median, sampler[bi].first, sampler[bi].second);
    absl::StrAppend(&json, bi ? "," : "", "{\"batch\":", batches[bi], ",\"free\":[", f.min, ",", f.median,
                    ",", f.max, "],\"constrained\":[", c.min, ",", c.median, ",", c.max, "],\"ratio\":[",
                    r.min, ",", r.median, ",", r.max, "],\"cpu_ratio\":[", rc.min, ",", rc.median, ",", rc.max,
                    "],\"mask_us\":", m.median, ",\"mask_cpu_us\":",
                    mc.median, ",\"wait_us\":", w.median, ",\"hidden\":", h.median, ",\"on_loop\":", ol.median,
                    ",\"sampler_us\":[", sampler[bi].first, ",", sampler[bi].second, "]}");
  }
  std::printf("%s]}\n", json.c_str());
  e.Shutdown();
  return 0;
}
