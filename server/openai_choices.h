// OpenAI's responses for n > 1 choices: one OpenAiEncoder per choice, the
// choices' chunks interleaved as their messages come (each chunk carries its
// choice's `index`), one usage (the prompt once, the completions summed) and
// one [DONE] at the end; a body with n choices. With n 1 it writes exactly what
// one OpenAiEncoder writes. Thread-compatible.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "nlohmann/json.hpp"
#include "server/openai_encoder.h"
#include "streamgen/v1/generate.pb.h"

namespace streamgen {

class OpenAiChoicesEncoder {
 public:
  // `n` choices (>= 1); the other arguments as OpenAiEncoder's.
  OpenAiChoicesEncoder(int n, const OpenAiRequest& request, std::string id, int64_t created,
                       std::string model, std::function<std::string(int)> piece);
  void set_system_fingerprint(const std::string& fingerprint);
  void set_hidden_token(const std::function<bool(int)>& hidden);
  // OpenAiEncoder's, for every choice.
  void set_prompt_tokens(int64_t count);
  // OpenAiEncoder::finished of the one choice (tools, which take n == 1 only:
  // the face ended the output at a stop string in content).
  bool finished() const { return choices_.size() == 1 && choices_[0]->finished(); }

  // As OpenAiEncoder's; `message.index()` picks the choice, and `last` is the
  // stream's last message (the last choice's last).
  std::string StreamStart();
  std::string StreamMessage(const v1::GenerateResponse& message, bool last,
                            const absl::Status& status);
  std::string StreamError(const absl::Status& status);
  void Accumulate(const v1::GenerateResponse& message);
  nlohmann::ordered_json Body() const;

 private:
  OpenAiEncoder& Choice(const v1::GenerateResponse& message);
  // Each choice's last message's usage: the prompt once, completions summed.
  void Count(const v1::GenerateResponse& message);

  std::vector<std::unique_ptr<OpenAiEncoder>> choices_;
  int64_t prompt_tokens_ = 0;
  int64_t completion_tokens_ = 0;
};

}  // namespace streamgen
