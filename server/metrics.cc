#include "server/metrics.h"

#include "absl/strings/str_cat.h"

namespace streamgen {
namespace {

void Header(std::string* out, absl::string_view name, absl::string_view type,
            absl::string_view help) {
  absl::StrAppend(out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
}

void Sample(std::string* out, absl::string_view name, int64_t value) {
  absl::StrAppend(out, name, " ", value, "\n");
}

}  // namespace

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

void Metrics::SetDraining(bool draining) {
  absl::MutexLock lock(&mu_);
  draining_ = draining;
}

std::string Metrics::Render(const EngineStats* engine) const {
  absl::MutexLock lock(&mu_);
  std::string out;
  Header(&out, "streamgen_requests_total", "counter",
         "Finished RPCs of streamgen.v1.TextGeneration by method and gRPC status code.");
  for (const auto& [key, count] : requests_) {
    absl::StrAppend(&out, "streamgen_requests_total{method=\"", EscapeLabelValue(key.first),
                    "\",code=\"", EscapeLabelValue(key.second), "\"} ", count, "\n");
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
