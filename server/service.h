// streamgen.v1.TextGeneration on gRPC's callback API: the gRPC face over the
// Frontend (frontend.h). It owns only its wire: it reads the key off the
// call's metadata and the request off its bytes, asks the Frontend, maps the
// status to gRPC's, and hands Generate streams to GenerateReactor. Thread-safe.
#pragma once

#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "server/frontend.h"
#include "streamgen/v1/generate.grpc.pb.h"

namespace streamgen {

// Generate and Tokenize receive their request's bytes and parse them here
// (RegisterRawRequests): gRPC's own parsing refuses a proto3 string that is not
// UTF-8 as a failed deserialization, which it answers UNIMPLEMENTED with no
// message, before the service or its log see the call. Parsed here, such a
// request gets INVALID_ARGUMENT naming the field ("messages[1].content is not
// valid UTF-8 ...") after the API key check, with the log line and the metrics
// of any other refused request.
class TextGenerationService final : public v1::TextGeneration::CallbackService {
 public:
  // `frontend` (not owned) must outlive the service and every call.
  explicit TextGenerationService(Frontend* frontend);
  ~TextGenerationService() override;

  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* context, const v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const v1::TokenizeRequest* request,
                                     v1::TokenizeResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const v1::GetModelInfoRequest* request,
                                         v1::ModelInfo* response) override;

 private:
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

  Frontend* const frontend_;
};

// The first string field of the serialized `type` message in `bytes` (nested
// messages included) that is not valid UTF-8, as a path: "prompt",
// "messages[1].content", "stop[0]"; "" when there is none (or when the bytes
// are not a message of that type at all).
std::string InvalidUtf8Field(absl::string_view bytes, const google::protobuf::Descriptor* type);

}  // namespace streamgen
