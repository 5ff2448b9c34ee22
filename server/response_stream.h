// The write side of one Generate stream, without gRPC: engine events come in on
// the engine's loop thread, at most one write is in flight, and events that
// arrive while a write is in flight are merged into the next message (text
// appended, tokens appended, final fields taken from the last event), so a
// slow reader costs one pending message, never an unbounded queue.
//
// The reactor (generate_reactor.cc) feeds it and carries out the returned
// Action. Thread-safe: every method may be called from any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "engine/request.h"
#include "streamgen/v1/generate.pb.h"

namespace streamgen {

// FinishReason (engine) -> FinishReason (proto).
v1::FinishReason ToProtoFinishReason(FinishReason reason);

// Adds `event` to `message`: text and tokens appended; for the first event the
// seed; for the last event finish_reason, usage, seed and timings.
void AppendEvent(const TokenEvent& event, v1::GenerateResponse* message);

// What the caller must do next with the gRPC stream.
struct StreamAction {
  enum Kind { kNone, kWrite, kWriteAndFinish, kFinish };
  Kind kind = kNone;
  // kWrite / kWriteAndFinish: stays valid and unchanged until the write is done
  // (OnWriteDone, or the end of the call for kWriteAndFinish).
  const v1::GenerateResponse* message = nullptr;
  absl::Status status;  // kWriteAndFinish / kFinish
};

// A summary of how the stream ended (for the log line and the metrics).
struct StreamOutcome {
  bool finished = false;          // a final status was chosen
  absl::Status status;            // the call's status
  FinishReason finish_reason = FinishReason::kNone;
  int prompt_tokens = 0;
  int completion_tokens = 0;
  double ttft_ms = 0;
  double decode_tokens_per_s = 0;
  double queue_ms = 0;
  uint64_t seed = 0;
  bool client_cancelled = false;  // cancel, deadline or disconnect
};

class ResponseStream {
 public:
  explicit ResponseStream(std::string request_id) : request_id_(std::move(request_id)) {}

  // An engine event. Returns kWrite / kWriteAndFinish when no write was in
  // flight; otherwise the event waits in the pending message (kNone). Events
  // after the client went away are dropped.
  StreamAction OnEvent(TokenEvent&& event);

  // The previous write finished (`ok` false: the client is gone). Returns the
  // next write, a finish, or kNone.
  StreamAction OnWriteDone(bool ok);

  // The client cancelled, its deadline passed or it disconnected: nothing more
  // is sent. Returns kFinish when no write is in flight (otherwise the
  // in-flight write's OnWriteDone finishes the call). `reason` is the status
  // recorded for the log (CANCELLED or DEADLINE_EXCEEDED).
  StreamAction OnCancel(absl::Status reason);

  // Reported on the first message (GenerateResponse.model_fingerprint). Set
  // before the engine's first event.
  void SetModelFingerprint(std::string fingerprint);
  // Reported on the first message (GenerateResponse.constraint): the kind of
  // constraint the engine accepted ("" for none). Set before the engine's
  // first event.
  void SetConstraint(std::string kind);

  // The call is refused before anything was sent: kFinish with `status`.
  StreamAction Reject(absl::Status status);

  // The server ends the stream early (drain timeout): once the engine's last
  // (cancelled) event arrives, it is sent with finish_reason CANCELLED and the
  // usage so far, then the call ends with `status`.
  void Abort(absl::Status status);

  // Whether the engine request should be cancelled: true once the client is
  // gone or Abort() was called, and the final event has not arrived yet.
  bool NeedsEngineCancel() const;

  StreamOutcome outcome() const;

 private:
  StreamAction TakeWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status FinalStatusLocked(const TokenEvent& event) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string request_id_;
  mutable absl::Mutex mu_;
  std::string model_fingerprint_ ABSL_GUARDED_BY(mu_);
  std::string constraint_ ABSL_GUARDED_BY(mu_);
  v1::GenerateResponse pending_ ABSL_GUARDED_BY(mu_);
  bool has_pending_ ABSL_GUARDED_BY(mu_) = false;
  bool pending_is_last_ ABSL_GUARDED_BY(mu_) = false;
  v1::GenerateResponse in_flight_ ABSL_GUARDED_BY(mu_);
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool final_event_seen_ ABSL_GUARDED_BY(mu_) = false;
  bool call_finished_ ABSL_GUARDED_BY(mu_) = false;  // Finish / WriteAndFinish issued
  bool client_gone_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<absl::Status> abort_status_ ABSL_GUARDED_BY(mu_);
  StreamOutcome outcome_ ABSL_GUARDED_BY(mu_);
};

}  // namespace streamgen
