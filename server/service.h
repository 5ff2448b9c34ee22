// streamgen.v1.TextGeneration on gRPC's callback API: checks the API key and
// the request, then hands Generate streams to GenerateReactor and answers
// Tokenize / GetModelInfo directly. The HTTP face (http_server.h) goes through
// the same checks with Admit / PrepareGenerate. Thread-safe.
#pragma once

#include <atomic>
#include <memory>
#include <optional>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "engine/text/chat_template.h"
#include "engine/engine.h"
#include "server/auth.h"
#include "server/generate_reactor.h"
#include "server/metrics.h"
#include "server/validation.h"
#include "streamgen/v1/generate.grpc.pb.h"

namespace streamgen {

struct ServiceOptions {
  ApiKeys api_keys;                    // none: no key needed
  bool log_prompts = false;            // put prompts in the per-request log line
  std::string chat_template = "auto";  // auto | llama2 | mistral | chatml | none | a Jinja file
  int max_prompt_tokens = 0;           // 0: the model's context length - 1
  int max_messages = 256;              // entries of GenerateRequest.messages
  int max_receive_message_bytes = 4 << 20;  // reported by GetModelInfo
};

// Generate and Tokenize receive their request's bytes and parse them here
// (RegisterRawRequests): gRPC's own parsing refuses a proto3 string that is not
// UTF-8 as a failed deserialization, which it answers UNIMPLEMENTED with no
// message, before the service or its log see the call. Parsed here, such a
// request gets INVALID_ARGUMENT naming the field ("messages[1].content is not
// valid UTF-8 ...") after the API key check, with the log line and the metrics
// of any other refused request.
class TextGenerationService final : public v1::TextGeneration::CallbackService {
 public:
  TextGenerationService(ServiceOptions options, Metrics* metrics);
  ~TextGenerationService() override;

  // Serves `engine` from now on (not owned; it must outlive every call).
  // Sets up the chat template: FAILED_PRECONDITION when --chat-template names a
  // family the model's vocabulary cannot render. Call once.
  absl::Status SetEngine(Engine* engine);

  // New Generate calls get UNAVAILABLE from now on.
  void BeginDrain();
  // True when no Generate stream is left within `timeout`.
  bool WaitForIdle(absl::Duration timeout) const;
  // Ends the streams in progress (see GenerateReactor::Abort).
  void AbortStreams(const absl::Status& status);
  int active_streams() const { return registry_.size(); }

  // The chat family in use ("" when chat requests are refused) and why not.
  std::string chat_family() const;

  // ---- for the other faces (HTTP): the gRPC face's own checks, in the same order ----
  // The API key (`authorization`: the header's value, nullopt when absent),
  // then the model: UNAUTHENTICATED, or UNAVAILABLE while loading.
  absl::Status Admit(std::optional<absl::string_view> authorization) const;
  // Admit, then UNAVAILABLE while draining, then the request's validation:
  // the engine request, or the status to answer with (INVALID_ARGUMENT names
  // the proto field).
  absl::StatusOr<GenerationRequest> PrepareGenerate(
      std::optional<absl::string_view> authorization, const v1::GenerateRequest& request) const;
  // Tokenize and GetModelInfo without the call (after Admit).
  absl::Status Tokenize(const v1::TokenizeRequest& request, v1::TokenizeResponse* response) const;
  absl::Status GetModelInfo(v1::ModelInfo* info) const;
  // The loaded engine (null while loading).
  Engine* engine() const;
  bool draining() const { return draining_; }
  // What a face's GenerationCall needs.
  ReactorEnv reactor_env() { return ReactorEnv{metrics_, &registry_}; }
  // The prompt for the log line ("" unless --log-prompts).
  std::string LogPrompt(const v1::GenerateRequest& request) const;

  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* context, const v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const v1::TokenizeRequest* request,
                                     v1::TokenizeResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const v1::GetModelInfoRequest* request,
                                         v1::ModelInfo* response) override;

 private:
  // Everything that exists once the model is loaded (immutable after).
  struct Model {
    Engine* engine = nullptr;
    RequestLimits limits;
    std::unique_ptr<ChatTemplate> chat;  // null: chat refused with chat_error
    std::string chat_error;
    PromptEncoder encoder;
  };

  // The key, then the model: OK and the model, or the status to answer with.
  absl::Status Admit(std::optional<absl::string_view> authorization, const Model** model) const;
  absl::Status DoTokenize(const Model& model, const v1::TokenizeRequest& request,
                          v1::TokenizeResponse* response) const;
  void FillModelInfo(const Model& model, v1::ModelInfo* info) const;
  grpc::ServerUnaryReactor* FinishUnary(grpc::CallbackServerContext* context,
                                        absl::string_view method, const absl::Status& status);

  // Replaces the generated handlers of Generate and Tokenize with ones that
  // take the request's bytes (same wire, same responses), parsed by
  // ParseRequest. Called by the constructor.
  void RegisterRawRequests();
  // The request in `bytes`, or (after the key, as for any request) the
  // INVALID_ARGUMENT that names the field that is not UTF-8.
  absl::Status ParseRequest(grpc::CallbackServerContext* context, const grpc::ByteBuffer& bytes,
                            google::protobuf::Message* request) const;
  grpc::ServerWriteReactor<v1::GenerateResponse>* GenerateBytes(
      grpc::CallbackServerContext* context, const grpc::ByteBuffer* bytes);
  grpc::ServerUnaryReactor* TokenizeBytes(grpc::CallbackServerContext* context,
                                          const grpc::ByteBuffer* bytes,
                                          v1::TokenizeResponse* response);

  const ServiceOptions options_;
  Metrics* const metrics_;
  StreamRegistry registry_;
  std::unique_ptr<Model> model_storage_;
  std::atomic<const Model*> model_{nullptr};
  std::atomic<bool> draining_{false};
};

// A fresh request id: 16 random hex digits.
std::string MakeRequestId();

// The first string field of the serialized `type` message in `bytes` (nested
// messages included) that is not valid UTF-8, as a path: "prompt",
// "messages[1].content", "stop[0]"; "" when there is none (or when the bytes
// are not a message of that type at all).
std::string InvalidUtf8Field(absl::string_view bytes, const google::protobuf::Descriptor* type);

}  // namespace streamgen
