#include "server/generation_call.h"

#include <vector>

#include "server/logging.h"

namespace streamgen {

// ---- StreamRegistry ----

void StreamRegistry::Add(GenerationCall* call, std::weak_ptr<GenerationCall> handle) {
  absl::MutexLock lock(&mu_);
  streams_[call] = std::move(handle);
}

void StreamRegistry::Remove(GenerationCall* call) {
  absl::MutexLock lock(&mu_);
  streams_.erase(call);
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
  std::vector<std::shared_ptr<GenerationCall>> live;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [raw, handle] : streams_) {
      if (auto call = handle.lock()) live.push_back(std::move(call));
    }
  }
  for (auto& call : live) call->Abort(status);
}

// ---- GenerationCall ----

GenerationCall::GenerationCall(const ReactorEnv& env, CallInfo info)
    : env_(env), info_(std::move(info)), start_(absl::Now()), stream_(info_.request_id) {}

void GenerationCall::Register(const std::shared_ptr<GenerationCall>& call) {
  {
    absl::MutexLock lock(&call->mu_);
    call->registered_ = true;
  }
  call->env_.registry->Add(call.get(), call);
  call->env_.metrics->StreamStarted();
}

GenerationCall::~GenerationCall() {
  bool retire;
  {
    absl::MutexLock lock(&mu_);
    retire = registered_ && !retired_;
    retired_ = true;
  }
  if (retire) Retire();
}

void GenerationCall::Reject(const absl::Status& status) { Apply(stream_.Reject(status)); }

void GenerationCall::Submit(Engine* engine, GenerationRequest request) {
  {
    // Before Submit: the engine may deliver every event before Submit returns.
    absl::MutexLock lock(&mu_);
    engine_ = engine;
    engine_done_ = false;
    accepted_ = true;
    resumed_tokens_ = static_cast<int>(request.resume_token_ids.size());
  }
  stream_.SetModelFingerprint(engine->model_info().fingerprint);
  if (request.constraint.kind != ConstraintSpec::Kind::kNone) {
    stream_.SetConstraint(ConstraintKindName(request.constraint.kind));
  }
  std::shared_ptr<GenerationCall> self = shared_from_this();
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

void GenerationCall::Abort(const absl::Status& status) {
  stream_.Abort(status);
  CancelEngineIfNeeded();
}

void GenerationCall::OnEngineEvent(TokenEvent&& event) {
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

void GenerationCall::CancelEngineIfNeeded() {
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

void GenerationCall::WriteDone(bool ok) {
  Apply(stream_.OnWriteDone(ok));
  if (!ok) CancelEngineIfNeeded();
}

void GenerationCall::ClientGone(absl::Status reason) {
  Apply(stream_.OnCancel(std::move(reason)));
  CancelEngineIfNeeded();
}

void GenerationCall::CallDone() {
  {
    absl::MutexLock lock(&mu_);
    call_done_ = true;
  }
  MaybeRetire();
}

void GenerationCall::MaybeRetire() {
  {
    absl::MutexLock lock(&mu_);
    if (retired_ || !call_done_ || !engine_done_) return;
    retired_ = true;
  }
  Retire();
}

void GenerationCall::Retire() {
  StreamOutcome outcome = stream_.outcome();
  bool submitted;
  int resumed_tokens;
  {
    absl::MutexLock lock(&mu_);
    submitted = accepted_;
    resumed_tokens = resumed_tokens_;
  }
  std::string code = absl::StatusCodeToString(outcome.status.code());
  env_.metrics->RecordRequest(info_.method, code);
  if (submitted) {
    env_.metrics->RecordGeneration(outcome.prompt_tokens, outcome.completion_tokens,
                                   FinishReasonName(outcome.finish_reason));
  }
  env_.metrics->StreamEnded();
  env_.registry->Remove(this);

  nlohmann::ordered_json fields;
  fields["request_id"] = info_.request_id;
  fields["peer"] = info_.peer;
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
  if (resumed_tokens > 0) fields["resumed_tokens"] = resumed_tokens;  // a resumed stream
  if (!info_.log_prompt.empty()) fields["prompt"] = info_.log_prompt;
  bool server_fault = outcome.status.code() == absl::StatusCode::kInternal;
  LogEvent(server_fault ? spdlog::level::err : spdlog::level::info, info_.method, fields);
}

}  // namespace streamgen
