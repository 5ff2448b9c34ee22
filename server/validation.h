// GenerateRequest (proto) -> GenerationRequest (engine), with every check the
// service makes before the engine sees a request. No gRPC here: the results are
// absl::Status codes (INVALID_ARGUMENT names the field), mapped by the service.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/text/chat_template.h"
#include "engine/request.h"
#include "engine/request_validation.h"
#include "streamgen/v1/generate.pb.h"

namespace streamgen {


// The limits a request must respect (the model's and the server's flags).
struct RequestLimits {
  int vocab_size = 0;               // ids must lie in [0, vocab_size)
  int context_length = 0;           // prompt + generated tokens
  int default_max_new_tokens = 256; // for max_new_tokens 0 (clamped to the context left)
  int max_new_tokens_limit = 4096;  // an explicit max_new_tokens above this is refused
  int max_prompt_tokens = 0;        // 0: context_length - 1
  int max_stop_strings = 16;        // entries of `stop`
  int max_stop_string_bytes = 256;  // bytes per stop string
  int max_messages = 256;           // entries of `messages`
  std::string model_fingerprint;    // ModelInfo.fingerprint: a request's model_fingerprint must match

  // max_prompt_tokens, or context_length - 1 when it is 0.
  int EffectiveMaxPromptTokens() const;
};

// How prompts become token ids. Both are called on the caller's thread.
struct PromptEncoder {
  // A text prompt -> ids, BOS as the model's tokenizer config says;
  // parse_special: special tokens written in the text become their ids.
  std::function<std::vector<int>(const std::string& text, bool parse_special)> tokenize;
  // Chat messages -> ids. Empty: the model has no chat template
  // (FAILED_PRECONDITION for chat requests).
  std::function<absl::StatusOr<std::vector<int>>(const std::vector<ChatMessage>&,
                                                 const ChatRenderOptions&)>
      render_chat;
};

// Checks the sampling fields (temperature, top_p, min_p, penalties,
// top_logprobs, logit_bias) and fills `out` with the neutral defaults for
// zero values.
absl::Status ConvertSampling(const v1::GenerateRequest& request, const RequestLimits& limits,
                             GenerationRequest* out);

// The `constraint` oneof -> out->constraint, its shape checked
// (ValidateConstraintShape; the engine compiles it). json_object false is no
// constraint.
absl::Status ConvertConstraint(const v1::GenerateRequest& request, GenerationRequest* out);

// Checks stop and stop_token_ids.
absl::Status ConvertStops(const v1::GenerateRequest& request, const RequestLimits& limits,
                          GenerationRequest* out);

// Exactly one of prompt / prompt_token_ids / messages -> prompt ids.
absl::StatusOr<std::vector<int>> EncodePrompt(const v1::GenerateRequest& request,
                                              const RequestLimits& limits,
                                              const PromptEncoder& encoder);

// max_new_tokens after the default and the context are applied.
absl::StatusOr<int> ResolveMaxNewTokens(uint32_t requested, int prompt_tokens,
                                        const RequestLimits& limits);

// The whole conversion. The result carries the prompt as ids (prompt text and
// messages are encoded here) and request.request_id as given.
absl::StatusOr<GenerationRequest> ToGenerationRequest(const v1::GenerateRequest& request,
                                                      const RequestLimits& limits,
                                                      const PromptEncoder& encoder);

// What a chat template is rendered with besides the messages: tools_json and
// documents_json (each "" or a JSON array: INVALID_ARGUMENT naming the field
// otherwise), parse_special_tokens, add_generation_prompt.
absl::StatusOr<ChatRenderOptions> ConvertRenderOptions(const std::string& tools_json,
                                                       const std::string& documents_json,
                                                       bool parse_special_tokens,
                                                       bool add_generation_prompt);

// Messages of a chat request (or of a Tokenize request): count, roles (one of
// system, developer, user, assistant, tool), content or content_parts (text
// parts only), name, tool_call_id, tool_calls (their arguments as given).
// INVALID_ARGUMENT naming messages[i] and the field.
absl::StatusOr<std::vector<ChatMessage>> ConvertMessages(
    const google::protobuf::RepeatedPtrField<v1::ChatMessage>& messages,
    const RequestLimits& limits);

}  // namespace streamgen
