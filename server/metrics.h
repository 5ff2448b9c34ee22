// The server's counters, gauges and histograms, rendered in Prometheus' text
// exposition format (version 0.0.4): the server's own streamgen_* metrics and
// the vLLM-named streamgen:* ones (so vLLM dashboards fit); optionally, the
// engine's gauges also under vLLM's own vllm:* names (EnableVllmAliases), for
// tools that read those names only. Thread-safe:
// Record* may be called from any thread, including the engine's loop thread
// (atomics or a short mutex, no I/O).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "engine/engine.h"

namespace streamgen {

// Escapes a label value: backslash, double quote and newline.
std::string EscapeLabelValue(absl::string_view value);

// A Prometheus histogram over fixed upper bounds. Thread-safe; Observe is a
// short mutex and a binary search (cheap enough for the engine's loop thread).
class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);  // ascending; +Inf is implied
  void Observe(double value);
  int64_t count() const;
  // Appends `name`_bucket{le="..."} (cumulative), `name`_sum and `name`_count.
  void Render(std::string* out, absl::string_view name) const;

 private:
  const std::vector<double> upper_bounds_;
  mutable absl::Mutex mu_;
  std::vector<int64_t> counts_ ABSL_GUARDED_BY(mu_);  // per bucket, not cumulative; last: +Inf
  double sum_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t count_ ABSL_GUARDED_BY(mu_) = 0;
};

class Metrics {
 public:
  Metrics();

  // One finished RPC of `method` ("Generate", ...) with gRPC status `code` ("OK", ...).
  void RecordRequest(absl::string_view method, absl::string_view code);
  // One HTTP response of the HTTP face: its route ("/v1/completions", or
  // "other" for unknown paths) and status code.
  void RecordHttpResponse(absl::string_view path, int status);
  // One finished generation: its token counts and finish reason ("length", ...).
  void RecordGeneration(int prompt_tokens, int completion_tokens,
                        absl::string_view finish_reason);
  // The server asked the engine to cancel a request (client gone, deadline,
  // drain timeout). Tests wait on this before stepping a paused engine.
  void RecordEngineCancel();
  int64_t engine_cancels() const;
  // vLLM-named metrics (streamgen:...), fed from the engine's sink on its
  // loop thread. `tokens` tokens of one request arrived; `gap_seconds` since
  // that request's previous token (ignored when `first` : they start with the
  // request's first token, whose latency is the TTFT).
  void RecordTokens(int tokens, bool first, double gap_seconds);
  // A request's last event (finish reason, prompt tokens, queue_ms and ttft_ms)
  // and the seconds since its call arrived.
  void RecordFinished(const TokenEvent& last, double e2e_seconds);

  void StreamStarted();
  void StreamEnded();
  void SetModelLoaded(bool loaded);
  // The CPU kernels' ISA ("avx2", ...): streamgen_cpu_kernel_isa_info{isa} 1.
  // "" (CUDA, or not loaded yet): not rendered.
  void SetCpuKernelIsa(std::string isa);
  void SetDraining(bool draining);

  // Also renders vllm:num_requests_waiting, vllm:num_requests_running and
  // vllm:kv_cache_usage_perc (the values of their streamgen: twins) and
  // vllm:cache_config_info{block_size, num_gpu_blocks} 1, as vLLM exports
  // them: the names the Gateway API Inference Extension's endpoint picker
  // reads by default (streamgen-server --metrics-vllm-aliases). Like the
  // streamgen: gauges they need the engine (Render with a non-null `engine`).
  // `kv_block_size`: tokens per KV block, the block_size label. Thread-safe;
  // call it once, before the model loads. Off by default.
  void EnableVllmAliases(int kv_block_size);

  // The exposition text. `engine` (may be null before the model loads) adds the
  // engine's gauges and counters.
  std::string Render(const EngineStats* engine) const;

 private:
  void RenderVllmNamed(const EngineStats* engine, std::string* out) const;
  void RenderVllmAliases(const EngineStats& engine, std::string* out) const;

  mutable absl::Mutex mu_;
  std::map<std::pair<std::string, std::string>, int64_t> requests_ ABSL_GUARDED_BY(mu_);
  std::map<std::pair<std::string, int>, int64_t> http_responses_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int64_t> finish_reasons_ ABSL_GUARDED_BY(mu_);
  int64_t prompt_tokens_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t completion_tokens_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t active_streams_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t engine_cancels_ ABSL_GUARDED_BY(mu_) = 0;
  bool model_loaded_ ABSL_GUARDED_BY(mu_) = false;
  std::string cpu_kernel_isa_ ABSL_GUARDED_BY(mu_);
  bool draining_ ABSL_GUARDED_BY(mu_) = false;

  // vLLM-named.
  std::atomic<int> vllm_aliases_block_size_{0};  // 0: no vllm:* aliases
  std::atomic<int64_t> generation_tokens_{0};
  std::atomic<int64_t> admitted_prompt_tokens_{0};
  std::array<std::atomic<int64_t>, 5> finished_by_reason_{};  // kLength..kError
  Histogram time_to_first_token_;
  Histogram inter_token_latency_;
  Histogram e2e_request_latency_;
  Histogram request_queue_time_;
};

}  // namespace streamgen
