#include "server/http_call.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>

namespace streamgen {

std::shared_ptr<HttpCall> HttpCall::Create(const ReactorEnv& env, CallInfo info) {
  std::shared_ptr<HttpCall> call(new HttpCall(env, std::move(info)));
  Register(call);
  return call;
}

HttpCall::HttpCall(const ReactorEnv& env, CallInfo info)
    : GenerationCall(env, std::move(info)), wake_fd_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}

HttpCall::~HttpCall() {
  if (wake_fd_ >= 0) close(wake_fd_);
}

void HttpCall::Apply(const StreamAction& action) {
  if (action.kind == StreamAction::kNone) return;
  {
    absl::MutexLock lock(&mu_);
    actions_.push_back(action);
  }
  uint64_t one = 1;
  // Never blocks (EFD_NONBLOCK; the counter cannot overflow at one per action).
  [[maybe_unused]] ssize_t written = write(wake_fd_, &one, sizeof(one));
}

std::optional<absl::Status> HttpCall::Refused() {
  std::optional<absl::Status> refused;
  {
    absl::MutexLock lock(&mu_);
    if (started_ || actions_.empty()) return std::nullopt;
    const StreamAction& front = actions_.front();
    if (front.kind != StreamAction::kFinish || front.status.ok()) return std::nullopt;
    refused = front.status;
    actions_.pop_front();
    started_ = true;
  }
  CallDone();
  return refused;
}

std::optional<StreamAction> HttpCall::Wait(int socket) {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (!actions_.empty()) {
        StreamAction action = actions_.front();
        actions_.pop_front();
        return action;
      }
    }
    pollfd fds[2] = {{wake_fd_, POLLIN, 0}, {socket, POLLRDHUP, 0}};
    int count = socket >= 0 ? 2 : 1;
    // The timeout only guards against a lost wake-up; every event signals.
    int ready = poll(fds, count, 1000);
    if (ready < 0 && errno != EINTR) return std::nullopt;
    if (fds[0].revents & POLLIN) {
      uint64_t value;
      [[maybe_unused]] ssize_t got = read(wake_fd_, &value, sizeof(value));
    }
    if (count == 2 && (fds[1].revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL))) {
      return std::nullopt;
    }
  }
}

void HttpCall::Run(int socket, const Writer& write, const Finisher& finish) {
  {
    absl::MutexLock lock(&mu_);
    started_ = true;
  }
  int watched = socket;
  bool done = false;
  while (!done) {
    std::optional<StreamAction> action = Wait(watched);
    if (!action.has_value()) {
      watched = -1;  // reported once; the socket stays readable
      ClientGone(absl::CancelledError("the client disconnected"));
      continue;
    }
    switch (action->kind) {
      case StreamAction::kNone:
        break;
      case StreamAction::kWrite:
        WriteDone(write(*action->message, false, absl::OkStatus()));
        break;
      case StreamAction::kWriteAndFinish:
        write(*action->message, true, action->status);
        done = true;
        break;
      case StreamAction::kFinish:
        finish(action->status);
        done = true;
        break;
    }
  }
  CallDone();
}

void HttpCall::Abandon() {
  {
    absl::MutexLock lock(&mu_);
    if (started_) return;
    started_ = true;
  }
  ClientGone(absl::CancelledError("the response could not be started"));
  CallDone();
}

}  // namespace streamgen
