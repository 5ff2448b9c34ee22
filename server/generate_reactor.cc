#include "server/generate_reactor.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "server/logging.h"

namespace streamgen {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

// ---- StreamRegistry ----

void StreamRegistry::Add(GenerateReactor* reactor, std::weak_ptr<GenerateReactor> handle) {
  absl::MutexLock lock(&mu_);
  streams_[reactor] = std::move(handle);
}

void StreamRegistry::Remove(GenerateReactor* reactor) {
  absl::MutexLock lock(&mu_);
  streams_.erase(reactor);
}

int StreamRegistry::size() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(streams_.size());
}

bool StreamRegistry::WaitForEmpty(absl::Duration timeout) const {
  absl::MutexLock lock(&mu_);
  auto empty = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return streams_.empty(); };
  return mu_.AwaitWithTimeout(absl::Condition(&empty), timeout);
}

void StreamRegistry::AbortAll(const absl::Status& status) {
  std::vector<std::shared_ptr<GenerateReactor>> live;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [raw, handle] : streams_) {
      if (auto reactor = handle.lock()) live.push_back(std::move(reactor));
    }
  }
  for (auto& reactor : live) reactor->Abort(status);
}

// ---- GenerateReactor ----

std::shared_ptr<GenerateReactor> GenerateReactor::Create(const ReactorEnv& env,
                                                         grpc::CallbackServerContext* context,
                                                         std::string request_id,
                                                         std::string log_prompt) {
  std::shared_ptr<GenerateReactor> reactor(
      new GenerateReactor(env, context, std::move(request_id), std::move(log_prompt)));
  {
    absl::MutexLock lock(&reactor->mu_);
    reactor->self_ = reactor;
    reactor->registered_ = true;
  }
  env.registry->Add(reactor.get(), reactor);
  env.metrics->StreamStarted();
  return reactor;
}

GenerateReactor::GenerateReactor(const ReactorEnv& env, grpc::CallbackServerContext* context,
                                 std::string request_id, std::string log_prompt)
    : env_(env),
      request_id_(std::move(request_id)),
      log_prompt_(std::move(log_prompt)),
      peer_(context->peer()),
      deadline_(context->deadline()),
      start_(absl::Now()),
      stream_(request_id_) {}

GenerateReactor::~GenerateReactor() {
  bool retire;
  {
    absl::MutexLock lock(&mu_);
    retire = registered_ && !retired_;
    retired_ = true;
  }
  if (retire) Retire();
}

void GenerateReactor::Reject(const absl::Status& status) { Apply(stream_.Reject(status)); }

void GenerateReactor::Submit(Engine* engine, GenerationRequest request) {
  {
    // Before Submit: the engine may deliver every event before Submit returns.
    absl::MutexLock lock(&mu_);
    engine_ = engine;
    engine_done_ = false;
    accepted_ = true;
  }
  std::shared_ptr<GenerateReactor> self = shared_from_this();
  absl::StatusOr<uint64_t> id = engine->Submit(
      std::move(request), [self](TokenEvent&& event) { self->OnEngineEvent(std::move(event)); });
  if (!id.ok()) {
    {
      absl::MutexLock lock(&mu_);
      engine_done_ = true;
      accepted_ = false;
    }
    Apply(stream_.Reject(id.status()));
    return;
  }
  {
    absl::MutexLock lock(&mu_);
    engine_id_ = *id;
    submitted_ = true;
  }
  CancelEngineIfNeeded();  // the client may have gone while Submit ran
}

void GenerateReactor::Abort(const absl::Status& status) {
  stream_.Abort(status);
  CancelEngineIfNeeded();
}

void GenerateReactor::OnEngineEvent(TokenEvent&& event) {
  bool last = event.finish_reason != FinishReason::kNone;
  absl::Time now = absl::Now();
  if (!event.tokens.empty()) {
    env_.metrics->RecordTokens(static_cast<int>(event.tokens.size()), !got_token_,
                               absl::ToDoubleSeconds(now - last_token_at_));
    got_token_ = true;
    last_token_at_ = now;
  }
  if (last) env_.metrics->RecordFinished(event, absl::ToDoubleSeconds(now - start_));
  Apply(stream_.OnEvent(std::move(event)));
  if (!last) return;
  {
    absl::MutexLock lock(&mu_);
    engine_done_ = true;
  }
  MaybeRetire();
}

void GenerateReactor::Apply(const StreamAction& action) {
  switch (action.kind) {
    case StreamAction::kNone:
      break;
    case StreamAction::kWrite:
      StartWrite(action.message);
      break;
    case StreamAction::kWriteAndFinish:
      StartWriteAndFinish(action.message, grpc::WriteOptions(), ToGrpcStatus(action.status));
      break;
    case StreamAction::kFinish:
      Finish(ToGrpcStatus(action.status));
      break;
  }
}

void GenerateReactor::CancelEngineIfNeeded() {
  Engine* engine = nullptr;
  uint64_t id = 0;
  {
    absl::MutexLock lock(&mu_);
    if (!submitted_ || engine_done_ || cancel_sent_ || !stream_.NeedsEngineCancel()) return;
    cancel_sent_ = true;
    engine = engine_;
    id = engine_id_;
  }
  // Outside mu_: the engine may be calling our sink right now.
  engine->Cancel(id);
  env_.metrics->RecordEngineCancel();
}

void GenerateReactor::OnWriteDone(bool ok) {
  Apply(stream_.OnWriteDone(ok));
  if (!ok) CancelEngineIfNeeded();
}

void GenerateReactor::OnCancel() {
  // A client's own deadline timer fires a little before the server's copy of
  // it (which starts when the call arrives): allow for that (the reason only
  // goes into the log line).
  bool expired = std::chrono::system_clock::now() + std::chrono::milliseconds(100) >= deadline_;
  absl::Status reason = expired ? absl::DeadlineExceededError("the client's deadline passed")
                                : absl::CancelledError("the client cancelled the call");
  Apply(stream_.OnCancel(reason));
  CancelEngineIfNeeded();
}

void GenerateReactor::OnDone() {
  std::shared_ptr<GenerateReactor> keep;  // may be the last reference: released on return
  {
    absl::MutexLock lock(&mu_);
    call_done_ = true;
    keep = std::move(self_);
  }
  MaybeRetire();
}

void GenerateReactor::MaybeRetire() {
  {
    absl::MutexLock lock(&mu_);
    if (retired_ || !call_done_ || !engine_done_) return;
    retired_ = true;
  }
  Retire();
}

void GenerateReactor::Retire() {
  StreamOutcome outcome = stream_.outcome();
  bool submitted;
  {
    absl::MutexLock lock(&mu_);
    submitted = accepted_;
  }
  std::string code = absl::StatusCodeToString(outcome.status.code());
  env_.metrics->RecordRequest("Generate", code);
  if (submitted) {
    env_.metrics->RecordGeneration(outcome.prompt_tokens, outcome.completion_tokens,
                                   FinishReasonName(outcome.finish_reason));
  }
  env_.metrics->StreamEnded();
  env_.registry->Remove(this);

  nlohmann::ordered_json fields;
  fields["request_id"] = request_id_;
  fields["peer"] = peer_;
  fields["code"] = code;
  if (!outcome.status.ok()) fields["error"] = std::string(outcome.status.message());
  fields["prompt_tokens"] = outcome.prompt_tokens;
  fields["completion_tokens"] = outcome.completion_tokens;
  fields["finish_reason"] = FinishReasonName(outcome.finish_reason);
  fields["ttft_ms"] = outcome.ttft_ms;
  fields["tokens_per_s"] = outcome.decode_tokens_per_s;
  fields["queue_ms"] = outcome.queue_ms;
  fields["duration_ms"] = absl::ToDoubleMilliseconds(absl::Now() - start_);
  if (submitted) fields["seed"] = outcome.seed;
  if (!log_prompt_.empty()) fields["prompt"] = log_prompt_;
  bool server_fault = outcome.status.code() == absl::StatusCode::kInternal;
  LogEvent(server_fault ? spdlog::level::err : spdlog::level::info, "Generate", fields);
}

}  // namespace streamgen
