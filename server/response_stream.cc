#include "server/response_stream.h"

namespace streamgen {

v1::FinishReason ToProtoFinishReason(FinishReason reason) {
  switch (reason) {
    case FinishReason::kNone: return v1::FINISH_REASON_UNSPECIFIED;
    case FinishReason::kLength: return v1::FINISH_REASON_LENGTH;
    case FinishReason::kEos: return v1::FINISH_REASON_EOS;
    case FinishReason::kStop: return v1::FINISH_REASON_STOP;
    case FinishReason::kCancelled: return v1::FINISH_REASON_CANCELLED;
    case FinishReason::kError: return v1::FINISH_REASON_ERROR;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

void AppendEvent(const TokenEvent& event, v1::GenerateResponse* message) {
  message->mutable_text()->append(event.text);
  for (const TokenInfo& info : event.tokens) {
    v1::Token* token = message->add_tokens();
    token->set_id(info.id);
    token->set_logprob(info.logprob);
    for (const TokenLogprob& alt : info.top_logprobs) {
      v1::TokenLogprob* top = token->add_top_logprobs();
      top->set_id(alt.id);
      top->set_logprob(alt.logprob);
    }
  }
  if (event.first) message->set_seed(event.seed);
  if (event.finish_reason == FinishReason::kNone) return;
  message->set_finish_reason(ToProtoFinishReason(event.finish_reason));
  message->mutable_usage()->set_prompt_tokens(event.prompt_tokens);
  message->mutable_usage()->set_completion_tokens(event.completion_tokens);
  message->set_seed(event.seed);
  v1::Timings* timings = message->mutable_timings();
  timings->set_queue_ms(event.queue_ms);
  timings->set_prefill_ms(event.prefill_ms);
  timings->set_ttft_ms(event.ttft_ms);
  timings->set_decode_tokens_per_s(event.decode_tokens_per_s);
}

StreamAction ResponseStream::OnEvent(TokenEvent&& event) {
  absl::MutexLock lock(&mu_);
  bool last = event.finish_reason != FinishReason::kNone;
  if (last) {
    final_event_seen_ = true;
    outcome_.prompt_tokens = event.prompt_tokens;
    outcome_.completion_tokens = event.completion_tokens;
    outcome_.ttft_ms = event.ttft_ms;
    outcome_.decode_tokens_per_s = event.decode_tokens_per_s;
    outcome_.queue_ms = event.queue_ms;
    outcome_.seed = event.seed;
    if (!client_gone_) outcome_.finish_reason = event.finish_reason;
  }
  if (client_gone_ || call_finished_) return {};
  AppendEvent(event, &pending_);
  if (event.first && !model_fingerprint_.empty()) pending_.set_model_fingerprint(model_fingerprint_);
  if (event.first && !constraint_.empty()) pending_.set_constraint(constraint_);
  has_pending_ = true;
  if (last) {
    pending_is_last_ = true;
    outcome_.status = FinalStatusLocked(event);
  }
  if (write_in_flight_) return {};
  return TakeWriteLocked();
}

StreamAction ResponseStream::TakeWriteLocked() {
  in_flight_.Clear();
  in_flight_.Swap(&pending_);
  in_flight_.set_request_id(request_id_);
  has_pending_ = false;
  write_in_flight_ = true;
  StreamAction action;
  action.message = &in_flight_;
  if (pending_is_last_) {
    call_finished_ = true;
    outcome_.finished = true;
    action.kind = StreamAction::kWriteAndFinish;
    action.status = outcome_.status;
  } else {
    action.kind = StreamAction::kWrite;
  }
  return action;
}

absl::Status ResponseStream::FinalStatusLocked(const TokenEvent& event) const {
  switch (event.finish_reason) {
    case FinishReason::kError:
      return absl::InternalError(event.status.ok() ? "the engine failed"
                                                   : std::string(event.status.message()));
    case FinishReason::kCancelled:
      if (abort_status_.has_value()) return *abort_status_;
      return absl::UnavailableError("generation was cancelled: the server is shutting down");
    default:
      return absl::OkStatus();
  }
}

StreamAction ResponseStream::OnWriteDone(bool ok) {
  absl::MutexLock lock(&mu_);
  write_in_flight_ = false;
  if (!ok) {
    client_gone_ = true;
    outcome_.client_cancelled = true;
  }
  if (client_gone_) {
    if (call_finished_) return {};
    call_finished_ = true;
    outcome_.finished = true;
    outcome_.finish_reason = FinishReason::kCancelled;
    if (outcome_.status.ok()) outcome_.status = absl::CancelledError("the client went away");
    return {StreamAction::kFinish, nullptr, outcome_.status};
  }
  if (has_pending_) return TakeWriteLocked();
  return {};
}

StreamAction ResponseStream::OnCancel(absl::Status reason) {
  absl::MutexLock lock(&mu_);
  if (call_finished_ || client_gone_) return {};
  client_gone_ = true;
  outcome_.client_cancelled = true;
  outcome_.finish_reason = FinishReason::kCancelled;
  outcome_.status = reason;
  if (write_in_flight_) return {};
  call_finished_ = true;
  outcome_.finished = true;
  return {StreamAction::kFinish, nullptr, outcome_.status};
}

StreamAction ResponseStream::Reject(absl::Status status) {
  absl::MutexLock lock(&mu_);
  if (call_finished_) return {};
  call_finished_ = true;
  outcome_.finished = true;
  outcome_.status = status;
  return {StreamAction::kFinish, nullptr, std::move(status)};
}

void ResponseStream::SetConstraint(std::string kind) {
  absl::MutexLock lock(&mu_);
  constraint_ = std::move(kind);
}

void ResponseStream::SetModelFingerprint(std::string fingerprint) {
  absl::MutexLock lock(&mu_);
  model_fingerprint_ = std::move(fingerprint);
}

void ResponseStream::Abort(absl::Status status) {
  absl::MutexLock lock(&mu_);
  if (final_event_seen_ || call_finished_ || abort_status_.has_value()) return;
  abort_status_ = std::move(status);
}

bool ResponseStream::NeedsEngineCancel() const {
  absl::MutexLock lock(&mu_);
  return (client_gone_ || abort_status_.has_value()) && !final_event_seen_;
}

StreamOutcome ResponseStream::outcome() const {
  absl::MutexLock lock(&mu_);
  return outcome_;
}

}  // namespace streamgen
