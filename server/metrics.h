// The server's counters and gauges, rendered in Prometheus' text exposition
// format (version 0.0.4). Thread-safe: Record* may be called from any thread,
// including the engine's loop thread (a short mutex, no I/O).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "engine/engine.h"

namespace streamgen {

// Escapes a label value: backslash, double quote and newline.
std::string EscapeLabelValue(absl::string_view value);

class Metrics {
 public:
  // One finished RPC of `method` ("Generate", ...) with gRPC status `code` ("OK", ...).
  void RecordRequest(absl::string_view method, absl::string_view code);
  // One finished generation: its token counts and finish reason ("length", ...).
  void RecordGeneration(int prompt_tokens, int completion_tokens,
                        absl::string_view finish_reason);
  // The server asked the engine to cancel a request (client gone, deadline,
  // drain timeout). Tests wait on this before stepping a paused engine.
  void RecordEngineCancel();
  int64_t engine_cancels() const;
  void StreamStarted();
  void StreamEnded();
  void SetModelLoaded(bool loaded);
  void SetDraining(bool draining);

  // The exposition text. `engine` (may be null before the model loads) adds the
  // engine's gauges and counters.
  std::string Render(const EngineStats* engine) const;

 private:
  mutable absl::Mutex mu_;
  std::map<std::pair<std::string, std::string>, int64_t> requests_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int64_t> finish_reasons_ ABSL_GUARDED_BY(mu_);
  int64_t prompt_tokens_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t completion_tokens_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t active_streams_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t engine_cancels_ ABSL_GUARDED_BY(mu_) = 0;
  bool model_loaded_ ABSL_GUARDED_BY(mu_) = false;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace streamgen
