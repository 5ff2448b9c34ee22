#include "server/metrics.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace streamgen {
namespace {

void Header(std::string* out, absl::string_view name, absl::string_view type,
            absl::string_view help) {
  absl::StrAppend(out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
}

void Sample(std::string* out, absl::string_view name, int64_t value) {
  absl::StrAppend(out, name, " ", value, "\n");
}

void Gauge(std::string* out, absl::string_view name, double value) {
  absl::StrAppend(out, name, " ", absl::StrFormat("%.10g", value), "\n");
}

// Fraction of the KV pool's blocks in use, 0 to 1.
double KvCacheUsage(const EngineStats& engine) {
  return engine.kv_blocks_total > 0
             ? static_cast<double>(engine.kv_blocks_used) / engine.kv_blocks_total
             : 0.0;
}

// Upper bounds in seconds: vLLM's, with a few finer ones below for CPU speeds.
std::vector<double> TtftBuckets() {
  return {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
          1.0,   2.5,   5.0,  7.5,  10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0};
}
std::vector<double> InterTokenBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3,
          0.4,   0.5,    0.75,  1.0,  2.5,   5.0,  7.5,   10.0, 20.0, 40.0, 80.0};
}
std::vector<double> RequestBuckets(std::vector<double> finer) {
  for (double b : {0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0,
                   60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0}) {
    finer.push_back(b);
  }
  return finer;
}

// Label values of streamgen:request_success_total, by FinishReason - 1.
constexpr const char* kFinishedReasons[] = {"length", "eos", "stop", "cancelled", "error"};

}  // namespace

Histogram::Histogram(std::vector<double> upper_bounds)
    : upper_bounds_(std::move(upper_bounds)), counts_(upper_bounds_.size() + 1, 0) {}

void Histogram::Observe(double value) {
  // The first bucket whose bound is >= value (Prometheus buckets are le).
  size_t bucket = std::lower_bound(upper_bounds_.begin(), upper_bounds_.end(), value) -
                  upper_bounds_.begin();
  absl::MutexLock lock(&mu_);
  ++counts_[bucket];
  sum_ += value;
  ++count_;
}

int64_t Histogram::count() const {
  absl::MutexLock lock(&mu_);
  return count_;
}

void Histogram::Render(std::string* out, absl::string_view name) const {
  absl::MutexLock lock(&mu_);
  int64_t cumulative = 0;
  for (size_t i = 0; i < counts_.size(); ++i) {
    cumulative += counts_[i];
    std::string le = i < upper_bounds_.size() ? absl::StrFormat("%g", upper_bounds_[i]) : "+Inf";
    absl::StrAppend(out, name, "_bucket{le=\"", le, "\"} ", cumulative, "\n");
  }
  absl::StrAppend(out, name, "_sum ", absl::StrFormat("%.10g", sum_), "\n");
  absl::StrAppend(out, name, "_count ", count_, "\n");
}

Metrics::Metrics()
    : time_to_first_token_(TtftBuckets()),
      inter_token_latency_(InterTokenBuckets()),
      e2e_request_latency_(RequestBuckets({0.01, 0.025, 0.05, 0.1})),
      request_queue_time_(RequestBuckets({0.001, 0.005, 0.01, 0.025, 0.05, 0.1})) {}

std::string EscapeLabelValue(absl::string_view value) {
  std::string out;
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

void Metrics::RecordRequest(absl::string_view method, absl::string_view code) {
  absl::MutexLock lock(&mu_);
  ++requests_[{std::string(method), std::string(code)}];
}

void Metrics::RecordHttpResponse(absl::string_view path, int status) {
  absl::MutexLock lock(&mu_);
  ++http_responses_[{std::string(path), status}];
}

void Metrics::RecordGeneration(int prompt_tokens, int completion_tokens,
                               absl::string_view finish_reason) {
  absl::MutexLock lock(&mu_);
  prompt_tokens_ += prompt_tokens;
  completion_tokens_ += completion_tokens;
  ++finish_reasons_[std::string(finish_reason)];
}

void Metrics::RecordEngineCancel() {
  absl::MutexLock lock(&mu_);
  ++engine_cancels_;
}

int64_t Metrics::engine_cancels() const {
  absl::MutexLock lock(&mu_);
  return engine_cancels_;
}

void Metrics::RecordTokens(int tokens, bool first, double gap_seconds) {
  if (tokens <= 0) return;
  generation_tokens_.fetch_add(tokens, std::memory_order_relaxed);
  // Tokens that arrive together are 0 s apart.
  for (int i = first ? 1 : 0; i < tokens; ++i) {
    inter_token_latency_.Observe(i == 0 ? std::max(gap_seconds, 0.0) : 0.0);
  }
}

void Metrics::RecordFinished(const TokenEvent& last, double e2e_seconds) {
  int reason = static_cast<int>(last.finish_reason) - 1;
  if (reason >= 0 && reason < static_cast<int>(finished_by_reason_.size())) {
    finished_by_reason_[reason].fetch_add(1, std::memory_order_relaxed);
  }
  // Reached the model: admitted (queue_ms is set then) or generated something.
  bool admitted = last.queue_ms > 0 || last.completion_tokens > 0;
  if (admitted) {
    admitted_prompt_tokens_.fetch_add(last.prompt_tokens, std::memory_order_relaxed);
    request_queue_time_.Observe(last.queue_ms / 1000.0);
  }
  if (last.completion_tokens > 0) time_to_first_token_.Observe(last.ttft_ms / 1000.0);
  e2e_request_latency_.Observe(e2e_seconds);
}

void Metrics::StreamStarted() {
  absl::MutexLock lock(&mu_);
  ++active_streams_;
}

void Metrics::StreamEnded() {
  absl::MutexLock lock(&mu_);
  --active_streams_;
}

void Metrics::SetModelLoaded(bool loaded) {
  absl::MutexLock lock(&mu_);
  model_loaded_ = loaded;
}

void Metrics::SetCpuKernelIsa(std::string isa) {
  absl::MutexLock lock(&mu_);
  cpu_kernel_isa_ = std::move(isa);
}

void Metrics::SetDraining(bool draining) {
  absl::MutexLock lock(&mu_);
  draining_ = draining;
}

void Metrics::EnableVllmAliases(int kv_block_size) {
  vllm_aliases_block_size_.store(std::max(kv_block_size, 1), std::memory_order_release);
}

// vLLM's names for the quantities the Inference Extension's endpoint picker
// scrapes by default; the values are those of streamgen:num_requests_running,
// streamgen:num_requests_waiting and streamgen:kv_cache_usage_perc.
void Metrics::RenderVllmAliases(const EngineStats& engine, std::string* out) const {
  Header(out, "vllm:num_requests_running", "gauge",
         "Number of requests in model execution batches (streamgen:num_requests_running).");
  Sample(out, "vllm:num_requests_running", engine.running);
  Header(out, "vllm:num_requests_waiting", "gauge",
         "Number of requests waiting to be processed (streamgen:num_requests_waiting).");
  Sample(out, "vllm:num_requests_waiting", engine.waiting);
  Header(out, "vllm:kv_cache_usage_perc", "gauge",
         "KV-cache usage. 1 means 100 percent usage (streamgen:kv_cache_usage_perc).");
  Gauge(out, "vllm:kv_cache_usage_perc", KvCacheUsage(engine));
  Header(out, "vllm:cache_config_info", "gauge",
         "Information of the KV cache: tokens per block and blocks in the pool.");
  absl::StrAppend(out, "vllm:cache_config_info{block_size=\"",
                  vllm_aliases_block_size_.load(std::memory_order_acquire),
                  "\",num_gpu_blocks=\"", engine.kv_blocks_total, "\"} 1\n");
}

void Metrics::RenderVllmNamed(const EngineStats* engine, std::string* out) const {
  if (engine != nullptr && vllm_aliases_block_size_.load(std::memory_order_acquire) > 0) {
    RenderVllmAliases(*engine, out);
  }
  if (engine != nullptr) {
    Header(out, "streamgen:num_requests_running", "gauge",
           "Number of requests in the engine's running batch (prefilling or decoding).");
    Sample(out, "streamgen:num_requests_running", engine->running);
    Header(out, "streamgen:num_requests_waiting", "gauge",
           "Number of requests waiting for a batch slot or KV blocks (preempted ones included).");
    Sample(out, "streamgen:num_requests_waiting", engine->waiting);
    Header(out, "streamgen:kv_cache_usage_perc", "gauge",
           "Fraction of the KV-cache pool's blocks in use, 0 to 1 (1 means 100 percent).");
    Gauge(out, "streamgen:kv_cache_usage_perc", KvCacheUsage(*engine));
    Header(out, "streamgen:num_preemptions_total", "counter",
           "Sequences preempted (to be recomputed later) for lack of KV blocks.");
    Sample(out, "streamgen:num_preemptions_total", engine->preemptions);
    Header(out, "streamgen:prefix_cache_queries_total", "counter",
           "Prompt tokens of admitted requests, with --enable-prefix-caching.");
    Sample(out, "streamgen:prefix_cache_queries_total", engine->prefix_cache_queries);
    Header(out, "streamgen:prefix_cache_hits_total", "counter",
           "Of those prompt tokens, the ones found in the prefix cache (not recomputed).");
    Sample(out, "streamgen:prefix_cache_hits_total", engine->prefix_cache_hits);
    Header(out, "streamgen:cpu_threads", "gauge",
           "Intra-op CPU threads the model runs on now (fewer than --threads while other "
           "processes take the cores, with --adaptive-threads); 0 on a GPU.");
    Sample(out, "streamgen:cpu_threads", engine->cpu_threads);
    Header(out, "streamgen:cpu_thread_changes_total", "counter",
           "Times --adaptive-threads changed the thread count.");
    Sample(out, "streamgen:cpu_thread_changes_total", engine->cpu_thread_changes);
    Header(out, "streamgen:spec_decode_num_draft_tokens_total", "counter",
           "Speculative draft tokens verified (--speculative).");
    Sample(out, "streamgen:spec_decode_num_draft_tokens_total", engine->draft_tokens);
    Header(out, "streamgen:spec_decode_num_accepted_tokens_total", "counter",
           "Of those draft tokens, the ones the model accepted.");
    Sample(out, "streamgen:spec_decode_num_accepted_tokens_total", engine->accepted_draft_tokens);
  }
  Header(out, "streamgen:prompt_tokens_total", "counter",
         "Prompt tokens of finished requests that were admitted to the model.");
  Sample(out, "streamgen:prompt_tokens_total", admitted_prompt_tokens_.load());
  Header(out, "streamgen:generation_tokens_total", "counter",
         "Generated tokens, counted as they are generated (EOS and stop tokens included).");
  Sample(out, "streamgen:generation_tokens_total", generation_tokens_.load());
  Header(out, "streamgen:request_success_total", "counter",
         "Finished requests by finish reason (length, eos, stop, cancelled, error).");
  for (size_t i = 0; i < finished_by_reason_.size(); ++i) {
    absl::StrAppend(out, "streamgen:request_success_total{finished_reason=\"",
                    kFinishedReasons[i], "\"} ", finished_by_reason_[i].load(), "\n");
  }
  Header(out, "streamgen:time_to_first_token_seconds", "histogram",
         "Time to first token in seconds (the engine's: submitted to first token generated).");
  time_to_first_token_.Render(out, "streamgen:time_to_first_token_seconds");
  Header(out, "streamgen:inter_token_latency_seconds", "histogram",
         "Time between a request's consecutive tokens in seconds, as the engine emits them.");
  inter_token_latency_.Render(out, "streamgen:inter_token_latency_seconds");
  Header(out, "streamgen:e2e_request_latency_seconds", "histogram",
         "End-to-end request latency in seconds (call arrived to last token generated).");
  e2e_request_latency_.Render(out, "streamgen:e2e_request_latency_seconds");
  Header(out, "streamgen:request_queue_time_seconds", "histogram",
         "Time spent waiting before admission to the model in seconds.");
  request_queue_time_.Render(out, "streamgen:request_queue_time_seconds");
}

std::string Metrics::Render(const EngineStats* engine) const {
  std::string out;
  RenderVllmNamed(engine, &out);
  absl::MutexLock lock(&mu_);
  Header(&out, "streamgen_requests_total", "counter",
         "Finished requests by method (a streamgen.v1.TextGeneration RPC, or the HTTP "
         "face's generation routes) and gRPC status code name.");
  for (const auto& [key, count] : requests_) {
    absl::StrAppend(&out, "streamgen_requests_total{method=\"", EscapeLabelValue(key.first),
                    "\",code=\"", EscapeLabelValue(key.second), "\"} ", count, "\n");
  }
  Header(&out, "streamgen_http_responses_total", "counter",
         "Responses of the HTTP face by route and HTTP status code.");
  for (const auto& [key, count] : http_responses_) {
    absl::StrAppend(&out, "streamgen_http_responses_total{path=\"", EscapeLabelValue(key.first),
                    "\",code=\"", key.second, "\"} ", count, "\n");
  }
  Header(&out, "streamgen_generations_total", "counter",
         "Finished generations by finish reason.");
  for (const auto& [reason, count] : finish_reasons_) {
    absl::StrAppend(&out, "streamgen_generations_total{finish_reason=\"",
                    EscapeLabelValue(reason), "\"} ", count, "\n");
  }
  Header(&out, "streamgen_prompt_tokens_total", "counter", "Prompt tokens of finished generations.");
  Sample(&out, "streamgen_prompt_tokens_total", prompt_tokens_);
  Header(&out, "streamgen_completion_tokens_total", "counter",
         "Generated tokens of finished generations (EOS and stop tokens included).");
  Sample(&out, "streamgen_completion_tokens_total", completion_tokens_);
  Header(&out, "streamgen_active_streams", "gauge", "Generate calls in progress.");
  Sample(&out, "streamgen_active_streams", active_streams_);
  Header(&out, "streamgen_cancel_requests_total", "counter",
         "Generations the server cancelled in the engine (client cancel, deadline, "
         "disconnect, drain timeout).");
  Sample(&out, "streamgen_cancel_requests_total", engine_cancels_);
  Header(&out, "streamgen_model_loaded", "gauge", "1 once the model is loaded.");
  Sample(&out, "streamgen_model_loaded", model_loaded_ ? 1 : 0);
  if (!cpu_kernel_isa_.empty()) {
    Header(&out, "streamgen_cpu_kernel_isa_info", "gauge",
           "The CPU kernels' instruction set (avx512, avx2, portable), as a label.");
    absl::StrAppend(&out, "streamgen_cpu_kernel_isa_info{isa=\"", cpu_kernel_isa_, "\"} 1\n");
  }
  Header(&out, "streamgen_draining", "gauge", "1 while the server drains before exiting.");
  Sample(&out, "streamgen_draining", draining_ ? 1 : 0);
  if (engine == nullptr) return out;
  Header(&out, "streamgen_engine_waiting_requests", "gauge", "Requests queued in the engine.");
  Sample(&out, "streamgen_engine_waiting_requests", engine->waiting);
  Header(&out, "streamgen_engine_running_requests", "gauge", "Sequences in the engine's batch.");
  Sample(&out, "streamgen_engine_running_requests", engine->running);
  Header(&out, "streamgen_engine_submitted_total", "counter", "Requests the engine accepted.");
  Sample(&out, "streamgen_engine_submitted_total", engine->submitted);
  Header(&out, "streamgen_engine_finished_total", "counter",
         "Requests the engine retired, whatever the reason.");
  Sample(&out, "streamgen_engine_finished_total", engine->finished);
  Header(&out, "streamgen_engine_cancelled_total", "counter",
         "Requests the engine retired because they were cancelled.");
  Sample(&out, "streamgen_engine_cancelled_total", engine->cancelled);
  Header(&out, "streamgen_engine_prompt_tokens_total", "counter", "Prompt tokens prefilled.");
  Sample(&out, "streamgen_engine_prompt_tokens_total", engine->prompt_tokens);
  Header(&out, "streamgen_engine_generated_tokens_total", "counter", "Tokens generated.");
  Sample(&out, "streamgen_engine_generated_tokens_total", engine->generated_tokens);
  Header(&out, "streamgen_engine_steps_total", "counter", "Engine loop iterations that ran the model.");
  Sample(&out, "streamgen_engine_steps_total", engine->steps);
  return out;
}

}  // namespace streamgen
