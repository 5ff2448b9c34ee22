// One generation served over HTTP: a GenerationCall whose wire is a blocking
// socket owned by one HTTP worker thread.
//
// The engine's loop thread never waits for the client: its events go into the
// ResponseStream (one pending message, merged while a write is in flight) and
// the action they produce is posted to this call's mailbox, which wakes the
// worker through an eventfd. The worker (Run) sleeps in poll() on that eventfd
// and on the client's socket (POLLRDHUP): a client that disconnects or aborts
// is seen at once, not at the next write, and its sequence is cancelled in
// the engine. A slow reader blocks only its own worker thread in write(); the
// engine meanwhile merges its events into the one pending message.
#pragma once

#include <deque>
#include <functional>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "server/generation_call.h"

namespace streamgen {

class HttpCall : public GenerationCall {
 public:
  static std::shared_ptr<HttpCall> Create(const ReactorEnv& env, CallInfo info);
  ~HttpCall() override;

  // After Reject / Submit, before anything was sent: the status the call was
  // refused with (queue full, ...), if it was.
  std::optional<absl::Status> Refused();

  // Sends one message (`last`: the final one, with the call's `status`: OK, or
  // why the server ended it early). Returns false when the client is gone.
  using Writer =
      std::function<bool(const v1::GenerateResponse& message, bool last, const absl::Status& status)>;
  // The call ended without a final message: refused, cancelled, client gone.
  using Finisher = std::function<void(const absl::Status& status)>;

  // Serves the call on the calling thread until it ends. `socket`: the
  // client's connection, watched for a disconnect (-1: not watched).
  void Run(int socket, const Writer& write, const Finisher& finish);

  // The face gave up on the call without running it (the response could not
  // be started): the client is treated as gone.
  void Abandon();

 private:
  HttpCall(const ReactorEnv& env, CallInfo info);
  void Apply(const StreamAction& action) override;
  // The next action, or nullopt when `socket` reported a disconnect.
  std::optional<StreamAction> Wait(int socket);

  const int wake_fd_;  // eventfd: Apply -> Run
  absl::Mutex mu_;
  // At most one action is ever pending (one write in flight); a deque for safety.
  std::deque<StreamAction> actions_ ABSL_GUARDED_BY(mu_);
  bool started_ ABSL_GUARDED_BY(mu_) = false;  // Run or Abandon was called
};

}  // namespace streamgen
