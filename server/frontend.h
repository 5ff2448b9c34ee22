// The front door that every face (gRPC: service.h, HTTP: http_server.h) goes
// through, and that belongs to none of them: admission (the API key, the
// loaded model, the drain), the mapping of a wire request (v1::GenerateRequest)
// to the validated engine request (validation.h, then the engine's one
// validator), Tokenize, the model's description, the chat template, and the
// registry of the generations in progress.
//
// A face owns only its wire: it reads the key and the request off it, asks
// the Frontend, and writes the answer back (its status codes, its framing).
// The order is the same on every face:
//   CheckKey (optional: before reading a body) -> Admit (key, model loaded)
//   -> parse the wire -> PrepareGenerate (draining, validation) / Tokenize ...
// so that every face refuses the same requests with the same messages.
//
// Thread-safe: every method may be called from any thread once constructed;
// SetEngine once, before or while calls arrive.
#pragma once

#include <atomic>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "engine/engine.h"
#include "engine/text/chat_template.h"
#include "server/auth.h"
#include "server/generation_call.h"
#include "server/metrics.h"
#include "server/validation.h"
#include "streamgen/v1/generate.pb.h"

namespace streamgen {

struct FrontendOptions {
  ApiKeys api_keys;                         // none: no key needed
  bool log_prompts = false;                 // put prompts in the per-request log line
  // auto (the model's own Jinja template, else the built-in family its
  // template shows) | llama2 | mistral | chatml | none | a Jinja file
  std::string chat_template = "auto";
  int max_prompt_tokens = 0;                // 0: the model's context length - 1
  int max_messages = 256;                   // entries of GenerateRequest.messages
  int max_receive_message_bytes = 4 << 20;  // the faces' request size limit (ModelInfo reports it)
};

class Frontend {
 private:
  struct Model;

 public:
  // A request that passed Admit: its key is good and the model is loaded.
  // Cheap to copy; valid as long as the Frontend.
  class Admission {
   public:
    // The loaded engine (never null).
    Engine* engine() const;
    const ModelInfo& model_info() const { return engine()->model_info(); }

   private:
    friend class Frontend;
    explicit Admission(const Model* model) : model_(model) {}
    const Model* model_;
  };

  Frontend(FrontendOptions options, Metrics* metrics);
  ~Frontend();
  Frontend(const Frontend&) = delete;
  Frontend& operator=(const Frontend&) = delete;

  // Serves `engine` from now on (not owned; it must outlive every call).
  // Sets up the chat template: FAILED_PRECONDITION when --chat-template names a
  // family the model's vocabulary cannot render. Call once.
  absl::Status SetEngine(Engine* engine);

  // ---- admission, in this order ----
  // The API key alone (`authorization`: the header's value, nullopt when
  // absent): UNAUTHENTICATED naming what is wrong. For a face that can refuse
  // a request before it reads its body.
  absl::Status CheckKey(std::optional<absl::string_view> authorization) const;
  // The key, then the model: UNAUTHENTICATED, or UNAVAILABLE while loading.
  absl::StatusOr<Admission> Admit(std::optional<absl::string_view> authorization) const;

  // ---- what an admitted request may ask for ----
  // UNAVAILABLE while draining, then the request's validation: the engine
  // request, or INVALID_ARGUMENT (and the like) naming the proto field.
  absl::StatusOr<GenerationRequest> PrepareGenerate(const Admission& admission,
                                                    const v1::GenerateRequest& request) const;
  // The text's (or the chat messages') token ids and pieces.
  absl::Status Tokenize(const Admission& admission, const v1::TokenizeRequest& request,
                        v1::TokenizeResponse* response) const;
  // The chat template's rendered text for request.messages (with its tools,
  // documents, add_generation_prompt): llama.cpp's /apply-template.
  // INVALID_ARGUMENT with the template's message when it raises;
  // FAILED_PRECONDITION when the model has no chat template.
  absl::StatusOr<std::string> ApplyTemplate(const Admission& admission,
                                            const v1::TokenizeRequest& request) const;
  // The model and the server's limits.
  void GetModelInfo(const Admission& admission, v1::ModelInfo* info) const;

  // ---- for the faces' calls and probes ----
  // What a face's GenerationCall needs: the metrics and the stream registry.
  ReactorEnv reactor_env() { return ReactorEnv{metrics_, &registry_}; }
  Metrics* metrics() const { return metrics_; }
  // The prompt for the log line ("" unless --log-prompts).
  std::string LogPrompt(const v1::GenerateRequest& request) const;
  // The model is loaded (SetEngine has run).
  bool loaded() const { return model_.load() != nullptr; }
  bool draining() const { return draining_; }
  // The model's name ("" while loading).
  std::string model_name() const;
  // The chat family in use ("" when chat requests are refused).
  std::string chat_family() const;
  // The format the model's chat template writes tool calls in (kNone for a
  // built-in family or a template that shows none).
  ToolCallFormat tool_call_format(const Admission& admission) const;

  // ---- the drain ----
  // New generations get UNAVAILABLE from now on (PrepareGenerate).
  void BeginDrain();
  // True when no generation is left within `timeout`.
  bool WaitForIdle(absl::Duration timeout) const;
  // Ends the generations in progress (see GenerationCall::Abort).
  void AbortStreams(const absl::Status& status);
  int active_streams() const { return registry_.size(); }

 private:
  // Everything that exists once the model is loaded (immutable after).
  struct Model {
    Engine* engine = nullptr;
    RequestLimits limits;
    std::unique_ptr<ChatTemplate> chat;  // null: chat refused with chat_error
    std::string chat_source;             // the Jinja template's file (and field), or "built-in"
    std::string chat_error;
    PromptEncoder encoder;
  };

  // A Tokenize / ApplyTemplate request's messages and render options;
  // FAILED_PRECONDITION when the model has no chat template.
  absl::StatusOr<std::vector<ChatMessage>> ChatOf(const Model& model,
                                                  const v1::TokenizeRequest& request,
                                                  ChatRenderOptions* options) const;

  const FrontendOptions options_;
  Metrics* const metrics_;
  StreamRegistry registry_;
  std::unique_ptr<Model> model_storage_;
  std::atomic<const Model*> model_{nullptr};
  std::atomic<bool> draining_{false};
};

// A fresh request id: 16 random hex digits.
std::string MakeRequestId();

}  // namespace streamgen
