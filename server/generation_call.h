// One generation as a face (gRPC, HTTP) serves it, without the wire: the
// engine request's lifecycle that every face shares. A face derives from
// GenerationCall and carries out the StreamActions its ResponseStream returns
// on its own wire (Apply); everything else lives here:
//   Submit      hands the request to the engine; a refusal ends the call
//   engine sink one pending message per stream (ResponseStream), token metrics
//   cancel      client gone / aborted -> Engine::Cancel, once
//   retire      when both the face is done and the engine's last event came:
//               the log line, the request metrics, out of the registry
//
// Lifetime: shared between the face (until it calls CallDone) and the
// engine's sink (until the engine drops it).
#pragma once

#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "engine/engine.h"
#include "server/metrics.h"
#include "server/response_stream.h"

namespace streamgen {

class GenerationCall;

// The generations in progress, of every face. Thread-safe.
class StreamRegistry {
 public:
  void Add(GenerationCall* call, std::weak_ptr<GenerationCall> handle);
  void Remove(GenerationCall* call);
  int size() const;
  // True when no stream is left within `timeout`.
  bool WaitForEmpty(absl::Duration timeout) const;
  // Ends every stream in progress with `status` (see GenerationCall::Abort).
  void AbortAll(const absl::Status& status);

 private:
  mutable absl::Mutex mu_;
  absl::flat_hash_map<GenerationCall*, std::weak_ptr<GenerationCall>> streams_
      ABSL_GUARDED_BY(mu_);
};

// What every call shares (owned by the service).
struct ReactorEnv {
  Metrics* metrics = nullptr;
  StreamRegistry* registry = nullptr;
};

// Who the call is, for the log line and the metrics.
struct CallInfo {
  std::string method;      // "Generate", "POST /v1/chat/completions", ...
  std::string request_id;
  std::string peer;
  std::string log_prompt;  // goes into the log line when non-empty
};

class GenerationCall : public std::enable_shared_from_this<GenerationCall> {
 public:
  virtual ~GenerationCall();

  // Ends the call now with `status` (a request refused before the engine saw it).
  void Reject(const absl::Status& status);
  // Hands `request` to `engine`; a refusal (queue full, ...) ends the call.
  void Submit(Engine* engine, GenerationRequest request);
  // The server ends the stream early: the engine's last event goes out with
  // finish_reason CANCELLED and the usage so far, then the call ends with `status`.
  void Abort(const absl::Status& status);

  const std::string& request_id() const { return info_.request_id; }
  StreamOutcome outcome() const { return stream_.outcome(); }

 protected:
  GenerationCall(const ReactorEnv& env, CallInfo info);
  // Puts the call into the registry and counts the stream (call once, from the
  // face's factory, before anything else).
  static void Register(const std::shared_ptr<GenerationCall>& call);

  // Carries out `action` on the face's wire. May be called on any thread,
  // the engine's loop thread included: it must not block.
  virtual void Apply(const StreamAction& action) = 0;

  // The face reports its wire's progress:
  // the previous write finished (`ok` false: the client is gone);
  void WriteDone(bool ok);
  // the client cancelled, its deadline passed or it disconnected;
  void ClientGone(absl::Status reason);
  // the face will not touch the call again (the call may retire now).
  void CallDone();

  ResponseStream& stream() { return stream_; }

 private:
  void OnEngineEvent(TokenEvent&& event);
  void CancelEngineIfNeeded();
  // Called after CallDone and after the engine's last event; the second call retires.
  void MaybeRetire();
  void Retire();

  const ReactorEnv env_;
  const CallInfo info_;
  const absl::Time start_;
  ResponseStream stream_;
  // Touched only by the engine's sink (one loop thread): for inter-token latency.
  bool got_token_ = false;
  absl::Time last_token_at_;
  int choices_left_ = 1;  // engine thread (set in Submit before the engine has the request)

  absl::Mutex mu_;
  Engine* engine_ ABSL_GUARDED_BY(mu_) = nullptr;
  uint64_t engine_id_ ABSL_GUARDED_BY(mu_) = 0;
  bool accepted_ ABSL_GUARDED_BY(mu_) = false;   // handed to the engine (metrics, log)
  int resumed_tokens_ ABSL_GUARDED_BY(mu_) = 0;  // the request's resume_token_ids (log)
  bool submitted_ ABSL_GUARDED_BY(mu_) = false;  // engine_id_ is known
  bool cancel_sent_ ABSL_GUARDED_BY(mu_) = false;
  bool engine_done_ ABSL_GUARDED_BY(mu_) = true;  // false from Submit until the last event
  bool call_done_ ABSL_GUARDED_BY(mu_) = false;
  bool retired_ ABSL_GUARDED_BY(mu_) = false;
  bool registered_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace streamgen
