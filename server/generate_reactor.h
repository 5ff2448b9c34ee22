// One Generate stream: a ServerWriteReactor fed by the engine's sink.
//
// The engine's loop thread only hands events to a ResponseStream (merging them
// while a write is in flight) and, when no write is in flight, starts one: it
// never waits for the client. OnWriteDone drives the next write. Cancellation,
// deadlines and disconnects reach OnCancel, which cancels the engine request.
//
// Lifetime: shared between gRPC (until OnDone) and the engine's sink (until
// the engine drops it). The request "retires" (log line, metrics, leaves the
// registry) when both the call is done and the engine's last event came.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "engine/engine.h"
#include "server/metrics.h"
#include "server/response_stream.h"
#include "streamgen/v1/generate.pb.h"

namespace streamgen {

class GenerateReactor;

// The Generate streams in progress. Thread-safe.
class StreamRegistry {
 public:
  void Add(GenerateReactor* reactor, std::weak_ptr<GenerateReactor> handle);
  void Remove(GenerateReactor* reactor);
  int size() const;
  // True when no stream is left within `timeout`.
  bool WaitForEmpty(absl::Duration timeout) const;
  // Ends every stream in progress with `status` (see GenerateReactor::Abort).
  void AbortAll(const absl::Status& status);

 private:
  mutable absl::Mutex mu_;
  absl::flat_hash_map<GenerateReactor*, std::weak_ptr<GenerateReactor>> streams_
      ABSL_GUARDED_BY(mu_);
};

// What every reactor shares (owned by the service).
struct ReactorEnv {
  Metrics* metrics = nullptr;
  StreamRegistry* registry = nullptr;
};

class GenerateReactor : public grpc::ServerWriteReactor<v1::GenerateResponse>,
                        public std::enable_shared_from_this<GenerateReactor> {
 public:
  // `log_prompt` goes into the log line when non-empty.
  static std::shared_ptr<GenerateReactor> Create(const ReactorEnv& env,
                                                 grpc::CallbackServerContext* context,
                                                 std::string request_id, std::string log_prompt);
  ~GenerateReactor() override;

  // Ends the call now with `status` (a request refused before the engine saw it).
  void Reject(const absl::Status& status);
  // Hands `request` to `engine`; a refusal (queue full, ...) ends the call.
  void Submit(Engine* engine, GenerationRequest request);
  // The server ends the stream early: the engine's last event goes out with
  // finish_reason CANCELLED and the usage so far, then the call ends with `status`.
  void Abort(const absl::Status& status);

  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  GenerateReactor(const ReactorEnv& env, grpc::CallbackServerContext* context,
                  std::string request_id, std::string log_prompt);

  void OnEngineEvent(TokenEvent&& event);
  void Apply(const StreamAction& action);
  void CancelEngineIfNeeded();
  // Called after OnDone and after the engine's last event; the second call retires.
  void MaybeRetire();
  void Retire();

  const ReactorEnv env_;
  const std::string request_id_;
  const std::string log_prompt_;
  const std::string peer_;
  const std::chrono::system_clock::time_point deadline_;
  const absl::Time start_;
  ResponseStream stream_;
  // Touched only by the engine's sink (one loop thread): for inter-token latency.
  bool got_token_ = false;
  absl::Time last_token_at_;

  absl::Mutex mu_;
  std::shared_ptr<GenerateReactor> self_ ABSL_GUARDED_BY(mu_);  // held until OnDone
  Engine* engine_ ABSL_GUARDED_BY(mu_) = nullptr;
  uint64_t engine_id_ ABSL_GUARDED_BY(mu_) = 0;
  bool accepted_ ABSL_GUARDED_BY(mu_) = false;   // handed to the engine (metrics, log)
  bool submitted_ ABSL_GUARDED_BY(mu_) = false;  // engine_id_ is known
  bool cancel_sent_ ABSL_GUARDED_BY(mu_) = false;
  bool engine_done_ ABSL_GUARDED_BY(mu_) = true;  // false from Submit until the last event
  bool call_done_ ABSL_GUARDED_BY(mu_) = false;
  bool retired_ ABSL_GUARDED_BY(mu_) = false;
  bool registered_ ABSL_GUARDED_BY(mu_) = false;
};

// absl::Status -> grpc::Status (the codes are the same numbers).
grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace streamgen
