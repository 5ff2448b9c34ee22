// What the request fuzz targets (validation_fuzz.cc, openai_request_fuzz.cc)
// share: the server's limits as a real server would set them, a PromptEncoder
// over a byte vocabulary (no tokenizer: one id per byte) with the engine's own
// chat templates, and the properties every accepted GenerationRequest must
// have. Mirrors Frontend::SetEngine (server/frontend.cc).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine/text/chat_template.h"
#include "server/validation.h"
#include "tests/fuzz/byte_vocabulary.h"
#include "tests/fuzz/fuzz_util.h"

namespace streamgen::fuzz {

// Two realistic configurations, chosen by the input: 0 is a Llama-2-sized
// model behind the server's default flags; 1 is a small model behind tight
// flags, so that every limit is within the fuzzer's reach.
inline RequestLimits FuzzLimits(int which) {
  RequestLimits limits;
  if (which % 2 == 0) {
    limits.vocab_size = 32000;
    limits.context_length = 4096;
    limits.default_max_new_tokens = 256;
    limits.max_new_tokens_limit = 4096;
    limits.max_prompt_tokens = 0;
    limits.max_stop_strings = 16;
    limits.max_stop_string_bytes = 256;
    limits.max_messages = 256;
    limits.model_fingerprint = "llama-2-7b-0123456789abcdef";
  } else {
    limits.vocab_size = 300;
    limits.context_length = 64;
    limits.default_max_new_tokens = 16;
    limits.max_new_tokens_limit = 32;
    limits.max_prompt_tokens = 48;
    limits.max_stop_strings = 2;
    limits.max_stop_string_bytes = 8;
    limits.max_messages = 4;
    limits.model_fingerprint = "tiny-fedcba9876543210";
  }
  return limits;
}

// A text prompt gets BOS, as the Llama tokenizer config says. `family` kNone:
// chat is refused the way the service refuses it.
class FuzzEncoder {
 public:
  explicit FuzzEncoder(ChatTemplateFamily family) {
    encoder_.tokenize = [](const std::string& text, bool) {
      std::vector<int> ids = {1};
      for (int id : EncodeBytes(text)) ids.push_back(id);
      return ids;
    };
    if (family != ChatTemplateFamily::kNone) {
      absl::StatusOr<std::unique_ptr<ChatTemplate>> chat =
          ChatTemplate::Create(family, ByteChatVocabulary());
      FUZZ_CHECK(chat.ok(), "ChatTemplate::Create: %s", chat.status().ToString().c_str());
      chat_ = std::move(*chat);
      const ChatTemplate* raw = chat_.get();
      encoder_.render_chat = [raw](const std::vector<ChatMessage>& messages,
                                   const ChatRenderOptions& options) {
        return raw->Render(messages, options);
      };
    } else {
      encoder_.render_chat = [](const std::vector<ChatMessage>&, const ChatRenderOptions&)
          -> absl::StatusOr<std::vector<int>> {
        return absl::FailedPreconditionError(
            "messages: chat is not available for this model: the model's tokenizer_config.json "
            "has no chat_template");
      };
    }
  }
  const PromptEncoder& encoder() const { return encoder_; }

 private:
  std::unique_ptr<ChatTemplate> chat_;
  PromptEncoder encoder_;
};

// The properties of ToGenerationRequest's answer for `request`.
inline void CheckConversion(const v1::GenerateRequest& request, const RequestLimits& limits,
                            const absl::StatusOr<GenerationRequest>& result) {
  if (!result.ok()) {
    const absl::StatusCode code = result.status().code();
    FUZZ_CHECK(code == absl::StatusCode::kInvalidArgument ||
                   code == absl::StatusCode::kFailedPrecondition,
               "unexpected code: %s", result.status().ToString().c_str());
    FUZZ_CHECK(!result.status().message().empty(), "an error without a message");
    return;
  }
  const GenerationRequest& out = *result;
  FUZZ_CHECK(out.request_id == request.request_id(), "request_id changed");
  FUZZ_CHECK(out.request_id.size() <= static_cast<size_t>(kMaxRequestIdBytes),
             "request_id of %zu bytes accepted", out.request_id.size());
  FUZZ_CHECK(request.model_fingerprint().empty() ||
                 request.model_fingerprint() == limits.model_fingerprint,
             "a foreign model_fingerprint accepted");
  // The prompt.
  const int prompt = static_cast<int>(out.prompt_token_ids.size());
  FUZZ_CHECK(prompt >= 1, "an empty prompt accepted");
  FUZZ_CHECK(prompt <= limits.EffectiveMaxPromptTokens(), "prompt of %d tokens accepted (max %d)",
             prompt, limits.EffectiveMaxPromptTokens());
  for (int id : out.prompt_token_ids) {
    FUZZ_CHECK(id >= 0 && id < limits.vocab_size, "prompt id %d outside [0, %d)", id,
               limits.vocab_size);
  }
  if (request.prompt_token_ids_size() > 0) {
    FUZZ_CHECK(std::vector<int>(request.prompt_token_ids().begin(),
                                request.prompt_token_ids().end()) == out.prompt_token_ids,
               "prompt_token_ids not used as given");
  }
  // The length.
  FUZZ_CHECK(out.max_new_tokens >= 1, "max_new_tokens %d", out.max_new_tokens);
  FUZZ_CHECK(out.max_new_tokens <= limits.max_new_tokens_limit, "max_new_tokens %d above %d",
             out.max_new_tokens, limits.max_new_tokens_limit);
  FUZZ_CHECK(prompt + out.max_new_tokens <= limits.context_length,
             "prompt %d + max_new_tokens %d exceed the context %d", prompt, out.max_new_tokens,
             limits.context_length);
  if (request.max_new_tokens() != 0) {
    FUZZ_CHECK(static_cast<uint32_t>(out.max_new_tokens) == request.max_new_tokens(),
               "max_new_tokens %u became %d", request.max_new_tokens(), out.max_new_tokens);
  }
  // Sampling: within the documented ranges, zeros replaced by the neutral values.
  const SamplingParams& s = out.sampling;
  FUZZ_CHECK(s.temperature >= 0.0f && s.temperature <= 100.0f, "temperature %g", s.temperature);
  FUZZ_CHECK(s.top_p > 0.0f && s.top_p <= 1.0f, "top_p %g", s.top_p);
  FUZZ_CHECK(s.min_p >= 0.0f && s.min_p < 1.0f, "min_p %g", s.min_p);
  FUZZ_CHECK(s.repetition_penalty > 0.0f && s.repetition_penalty <= 10.0f,
             "repetition_penalty %g", s.repetition_penalty);
  FUZZ_CHECK(s.presence_penalty >= -2.0f && s.presence_penalty <= 2.0f, "presence_penalty %g",
             s.presence_penalty);
  FUZZ_CHECK(s.frequency_penalty >= -2.0f && s.frequency_penalty <= 2.0f,
             "frequency_penalty %g", s.frequency_penalty);
  FUZZ_CHECK(s.top_k >= 0 && s.top_k <= limits.vocab_size, "top_k %d", s.top_k);
  FUZZ_CHECK(s.seed.has_value() == request.has_seed(), "seed presence changed");
  FUZZ_CHECK(out.top_logprobs >= 0 && out.top_logprobs <= kMaxTopLogprobs, "top_logprobs %d",
             out.top_logprobs);
  // Stops.
  FUZZ_CHECK(static_cast<int>(out.stop.size()) <= limits.max_stop_strings, "%zu stop strings",
             out.stop.size());
  for (const std::string& stop : out.stop) {
    FUZZ_CHECK(!stop.empty() && static_cast<int>(stop.size()) <= limits.max_stop_string_bytes,
               "stop string of %zu bytes", stop.size());
  }
  for (int id : out.stop_token_ids) {
    FUZZ_CHECK(id >= 0 && id < limits.vocab_size, "stop id %d outside the vocabulary", id);
  }
}

}  // namespace streamgen::fuzz
