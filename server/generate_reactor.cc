#include "server/generate_reactor.h"

namespace streamgen {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

std::shared_ptr<GenerateReactor> GenerateReactor::Create(const ReactorEnv& env,
                                                         grpc::CallbackServerContext* context,
                                                         std::string request_id,
                                                         std::string log_prompt) {
  std::shared_ptr<GenerateReactor> reactor(
      new GenerateReactor(env, context, std::move(request_id), std::move(log_prompt)));
  {
    absl::MutexLock lock(&reactor->mu_);
    reactor->self_ = reactor;
  }
  Register(reactor);
  return reactor;
}

GenerateReactor::GenerateReactor(const ReactorEnv& env, grpc::CallbackServerContext* context,
                                 std::string request_id, std::string log_prompt)
    : GenerationCall(env, CallInfo{"Generate", std::move(request_id), context->peer(),
                                   std::move(log_prompt)}),
      deadline_(context->deadline()) {}

void GenerateReactor::ParseToolCalls(ToolCallParser::Options options) {
  absl::MutexLock lock(&tools_mu_);
  tools_ = std::make_unique<GenerateToolCallRewriter>(std::move(options));
}

void GenerateReactor::Apply(const StreamAction& action) {
  const v1::GenerateResponse* message = action.message;
  bool stopped = false;
  if (message != nullptr) {
    absl::MutexLock lock(&tools_mu_);
    if (tools_ != nullptr) {
      // The stream's message stays the stream's: the rewritten copy goes out.
      rewritten_ = *message;
      stopped = tools_->Rewrite(&rewritten_);
      message = &rewritten_;
    }
  }
  switch (action.kind) {
    case StreamAction::kNone:
      break;
    case StreamAction::kWrite:
      StartWrite(message);
      break;
    case StreamAction::kWriteAndFinish:
      StartWriteAndFinish(message, grpc::WriteOptions(), ToGrpcStatus(action.status));
      break;
    case StreamAction::kFinish:
      Finish(ToGrpcStatus(action.status));
      break;
  }
  // A stop string in content ended the output: the engine's generation ends
  // now, its last event goes out (rewritten: STOP) and the call ends OK.
  if (stopped) Abort(absl::OkStatus());
}

void GenerateReactor::OnWriteDone(bool ok) { WriteDone(ok); }

void GenerateReactor::OnCancel() {
  // A client's own deadline timer fires a little before the server's copy of
  // it (which starts when the call arrives): allow for that (the reason only
  // goes into the log line).
  bool expired = std::chrono::system_clock::now() + std::chrono::milliseconds(100) >= deadline_;
  ClientGone(expired ? absl::DeadlineExceededError("the client's deadline passed")
                     : absl::CancelledError("the client cancelled the call"));
}

void GenerateReactor::OnDone() {
  std::shared_ptr<GenerateReactor> keep;  // may be the last reference: released on return
  {
    absl::MutexLock lock(&mu_);
    keep = std::move(self_);
  }
  CallDone();
}

}  // namespace streamgen
