#include "server/openai_choices.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace streamgen {

OpenAiChoicesEncoder::OpenAiChoicesEncoder(int n, const OpenAiRequest& request, std::string id,
                                           int64_t created, std::string model,
                                           std::function<std::string(int)> piece) {
  for (int i = 0; i < std::max(n, 1); ++i) {
    choices_.push_back(std::make_unique<OpenAiEncoder>(request, id, created, model, piece));
    choices_.back()->set_index(i);
  }
}

void OpenAiChoicesEncoder::set_system_fingerprint(const std::string& fingerprint) {
  for (auto& choice : choices_) choice->set_system_fingerprint(fingerprint);
}

void OpenAiChoicesEncoder::set_hidden_token(const std::function<bool(int)>& hidden) {
  for (auto& choice : choices_) choice->set_hidden_token(hidden);
}

void OpenAiChoicesEncoder::set_prompt_tokens(int64_t count) {
  for (auto& choice : choices_) choice->set_prompt_tokens(count);
}

OpenAiEncoder& OpenAiChoicesEncoder::Choice(const v1::GenerateResponse& message) {
  // The engine's indices are below n; a bad one cannot come from it.
  return *choices_[std::min<size_t>(message.index(), choices_.size() - 1)];
}

void OpenAiChoicesEncoder::Count(const v1::GenerateResponse& message) {
  if (message.finish_reason() == v1::FINISH_REASON_UNSPECIFIED) return;
  prompt_tokens_ = message.usage().prompt_tokens();
  completion_tokens_ += message.usage().completion_tokens();
}

std::string OpenAiChoicesEncoder::StreamStart() {
  std::string out;
  for (auto& choice : choices_) absl::StrAppend(&out, choice->StreamStart());
  return out;
}

std::string OpenAiChoicesEncoder::StreamMessage(const v1::GenerateResponse& message, bool last,
                                                const absl::Status& status) {
  if (choices_.size() == 1) return choices_[0]->StreamMessage(message, last, status);
  const bool done = message.finish_reason() != v1::FINISH_REASON_UNSPECIFIED;
  Count(message);
  std::string out = Choice(message).StreamChoice(message, done, /*finish=*/!last || status.ok());
  if (!last) return out;
  if (!status.ok()) return absl::StrCat(out, StreamError(status));
  return absl::StrCat(out, choices_[0]->StreamEnd(prompt_tokens_, completion_tokens_));
}

std::string OpenAiChoicesEncoder::StreamError(const absl::Status& status) {
  return choices_[0]->StreamError(status);
}

void OpenAiChoicesEncoder::Accumulate(const v1::GenerateResponse& message) {
  Count(message);
  Choice(message).Accumulate(message);
}

nlohmann::ordered_json OpenAiChoicesEncoder::Body() const {
  nlohmann::ordered_json body = choices_[0]->Body();
  if (choices_.size() == 1) return body;
  nlohmann::ordered_json all = nlohmann::ordered_json::array();
  for (const auto& choice : choices_) all.push_back(choice->Body()["choices"][0]);
  body["choices"] = std::move(all);
  body["usage"] = OpenAiEncoder::UsageOf(prompt_tokens_, completion_tokens_);
  return body;
}

}  // namespace streamgen
