// `streamgen-client bench`: a closed-loop load generator over gRPC.
//
// `concurrency` workers each issue Generate calls back to back until
// warmup + requests calls have been issued. Every prompt is exactly
// `prompt_tokens` ids (BOS + ids drawn deterministically from the model's
// vocabulary, different per request) and every call generates exactly
// `max_new_tokens` tokens (ignore_eos). The first `warmup` calls (in issue
// order) are left out of the figures.
//
// With `http_url` the calls go to the HTTP face instead (POST /v1/completions,
// stream: true, the same prompt ids and parameters), read as server-sent
// events; GetModelInfo still goes over gRPC. An SSE chunk does not say how
// many tokens it carries: its gaps are counted as the gRPC ones are (the
// first gap of a message, then 0 ms for each further token), with the
// call's token count from the usage chunk.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "streamgen/v1/generate.grpc.pb.h"
#include "tools/bench_prompt.h"  // BenchPrompt

namespace streamgen {

struct BenchOptions {
  int concurrency = 1;       // workers, each with one call in flight
  int requests = 8;          // measured calls (after the warm-up)
  int warmup = -1;           // calls left out first; -1: one wave (= concurrency)
  int prompt_tokens = 128;   // ids per prompt, BOS included
  int shared_prefix_tokens = 0;  // the first this many ids are the same in every prompt
  int max_new_tokens = 64;   // tokens generated per call (ignore_eos)
  double temperature = 0;    // 0: greedy
  uint64_t prompt_seed = 0;  // varies the drawn prompts
  int64_t deadline_ms = 0;   // per call; 0: none
  std::string http_url;      // "": gRPC; "http://HOST:PORT": the HTTP face over SSE
  std::string api_key;       // with http_url: sent as "Authorization: Bearer KEY"
  // Called on every call's context before it starts (API key metadata, ...).
  std::function<void(grpc::ClientContext*)> prepare;
  // Set (e.g. by Ctrl-C): no new calls are issued.
  const std::atomic<bool>* stop = nullptr;
};

// p50 / p90 / p99 of one latency, in milliseconds.
struct Percentiles {
  double p50 = 0;
  double p90 = 0;
  double p99 = 0;
  double mean = 0;  // 0 when empty
};

struct BenchReport {
  BenchOptions options;  // with warmup resolved
  std::string face;      // "grpc" | "http"
  std::string model;     // GetModelInfo's name, dtype and device
  std::string dtype;
  std::string device;
  int completed = 0;          // measured calls that ended OK with max_new_tokens tokens
  int errors = 0;             // measured and warm-up calls that did not
  std::string first_error;    // "CODE: message" of the first failure
  int64_t output_tokens = 0;  // tokens of the completed measured calls
  double duration_s = 0;      // first measured call sent -> last measured call ended
  double output_tokens_per_s = 0;
  double requests_per_s = 0;
  Percentiles ttft_ms;  // call sent -> first token received
  Percentiles itl_ms;   // gaps between consecutive tokens received
                        // (tokens merged into one message are 0 ms apart)
  Percentiles e2e_ms;   // call sent -> stream ended (p90 is computed, not printed)
};

// Linear interpolation between closest ranks (numpy's default); 0 when empty.
double Percentile(std::vector<double> values, double p);


// Runs the benchmark. INVALID_ARGUMENT for options that cannot run (naming the
// flag); the GetModelInfo call's error when the server does not answer it.
// Failed Generate calls are counted in the report, not returned.
absl::StatusOr<BenchReport> RunBench(v1::TextGeneration::Stub* stub, BenchOptions options);

// One JSON object (one line).
std::string BenchReportJson(const BenchReport& report);
// A few human-readable lines.
std::string BenchReportText(const BenchReport& report);

}  // namespace streamgen
