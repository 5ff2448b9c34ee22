#include "server/service.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/stubs/common.h>
#include <google/protobuf/wire_format_lite.h>
#include <grpcpp/impl/codegen/server_callback_handlers.h>

#include <optional>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "engine/grammar/json_schema.h"
#include "server/generate_reactor.h"
#include "server/logging.h"
#include "server/tool_calls.h"

namespace streamgen {
namespace {

std::optional<absl::string_view> AuthorizationHeader(grpc::CallbackServerContext* context) {
  const auto& metadata = context->client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) return std::nullopt;
  return absl::string_view(it->second.data(), it->second.size());
}

using google::protobuf::internal::WireFormatLite;

// InvalidUtf8Field over one message's fields; true once `*found` is set, false
// at the end of the message or on bytes that are not one.
bool FindInvalidUtf8(google::protobuf::io::CodedInputStream* in,
                     const google::protobuf::Descriptor* type, const std::string& prefix,
                     int depth, std::string* found) {
  absl::flat_hash_map<int, int> seen;  // repeated fields: entries so far
  while (uint32_t tag = in->ReadTag()) {
    const google::protobuf::FieldDescriptor* field =
        type->FindFieldByNumber(WireFormatLite::GetTagFieldNumber(tag));
    const bool delimited =
        WireFormatLite::GetTagWireType(tag) == WireFormatLite::WIRETYPE_LENGTH_DELIMITED;
    const bool text =
        field != nullptr && field->type() == google::protobuf::FieldDescriptor::TYPE_STRING;
    const bool message =
        field != nullptr && field->type() == google::protobuf::FieldDescriptor::TYPE_MESSAGE;
    if (!delimited || !(text || message)) {
      if (!WireFormatLite::SkipField(in, tag)) return false;
      continue;
    }
    std::string path = prefix + field->name();
    if (field->is_repeated()) absl::StrAppend(&path, "[", seen[field->number()]++, "]");
    uint32_t length = 0;
    if (!in->ReadVarint32(&length)) return false;
    if (text) {
      std::string value;
      if (!in->ReadString(&value, static_cast<int>(length))) return false;
      if (!google::protobuf::internal::IsStructurallyValidUTF8(value)) {
        *found = path;
        return true;
      }
      continue;
    }
    if (depth >= 16) return false;  // deeper than any streamgen message
    const auto limit = in->PushLimit(static_cast<int>(length));
    if (FindInvalidUtf8(in, field->message_type(), path + ".", depth + 1, found)) return true;
    if (!in->ConsumedEntireMessage()) return false;
    in->PopLimit(limit);
  }
  return false;
}

}  // namespace

std::string InvalidUtf8Field(absl::string_view bytes, const google::protobuf::Descriptor* type) {
  google::protobuf::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(bytes.data()),
                                            static_cast<int>(bytes.size()));
  std::string found;
  FindInvalidUtf8(&in, type, "", 0, &found);
  return found;
}

TextGenerationService::TextGenerationService(Frontend* frontend) : frontend_(frontend) {
  RegisterRawRequests();
}

void TextGenerationService::RegisterRawRequests() {
  // The generated code numbers the methods in the order of the proto's service.
  const google::protobuf::ServiceDescriptor* service =
      v1::GenerateRequest::descriptor()->file()->FindServiceByName("TextGeneration");
  MarkMethodRawCallback(
      service->FindMethodByName("Generate")->index(),
      new grpc::internal::CallbackServerStreamingHandler<grpc::ByteBuffer, v1::GenerateResponse>(
          [this](grpc::CallbackServerContext* context, const grpc::ByteBuffer* bytes) {
            return GenerateBytes(context, bytes);
          }));
  MarkMethodRawCallback(
      service->FindMethodByName("Tokenize")->index(),
      new grpc::internal::CallbackUnaryHandler<grpc::ByteBuffer, v1::TokenizeResponse>(
          [this](grpc::CallbackServerContext* context, const grpc::ByteBuffer* bytes,
                 v1::TokenizeResponse* response) { return TokenizeBytes(context, bytes, response); }));
}

absl::Status TextGenerationService::ParseRequest(grpc::CallbackServerContext* context,
                                                 const grpc::ByteBuffer& bytes,
                                                 google::protobuf::Message* request) const {
  std::string data;
  std::vector<grpc::Slice> slices;
  const bool valid = bytes.Valid() && bytes.Dump(&slices).ok();
  for (const grpc::Slice& slice : slices) {
    data.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  // The strings first (one pass over a few KiB): protobuf's parser would log
  // a plain-text ERROR line of its own for each, outside the server's log.
  const std::string field = valid ? InvalidUtf8Field(data, request->GetDescriptor()) : "";
  if (valid && field.empty() && request->ParseFromString(data)) return absl::OkStatus();
  // The key (and the model) come first, as for every other refusal.
  SG_RETURN_IF_ERROR(frontend_->Admit(AuthorizationHeader(context)).status());
  const std::string type = request->GetDescriptor()->full_name();
  if (!valid) return absl::InvalidArgumentError("the call carried no request message");
  if (!field.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " is not valid UTF-8 (protobuf string fields must hold UTF-8 text)"));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("the request is not a ", type, " message (its bytes do not parse)"));
}

TextGenerationService::~TextGenerationService() = default;

grpc::ServerWriteReactor<v1::GenerateResponse>* TextGenerationService::GenerateBytes(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* bytes) {
  // Arena-free: the request lives for this call only (Generate copies what it keeps).
  v1::GenerateRequest request;
  absl::Status parsed = ParseRequest(context, *bytes, &request);
  if (parsed.ok()) return Generate(context, &request);
  // Refused like any other request: the log line and the metrics.
  std::shared_ptr<GenerateReactor> reactor =
      GenerateReactor::Create(frontend_->reactor_env(), context, MakeRequestId(), "");
  reactor->Reject(parsed);
  return reactor.get();
}

grpc::ServerUnaryReactor* TextGenerationService::TokenizeBytes(grpc::CallbackServerContext* context,
                                                               const grpc::ByteBuffer* bytes,
                                                               v1::TokenizeResponse* response) {
  v1::TokenizeRequest request;
  absl::Status parsed = ParseRequest(context, *bytes, &request);
  if (parsed.ok()) return Tokenize(context, &request, response);
  return FinishUnary(context, "Tokenize", parsed);
}

grpc::ServerWriteReactor<v1::GenerateResponse>* TextGenerationService::Generate(
    grpc::CallbackServerContext* context, const v1::GenerateRequest* request) {
  std::string request_id = request->request_id().empty() ? MakeRequestId() : request->request_id();
  std::shared_ptr<GenerateReactor> reactor = GenerateReactor::Create(
      frontend_->reactor_env(), context, request_id, frontend_->LogPrompt(*request));
  absl::StatusOr<Frontend::Admission> admission = frontend_->Admit(AuthorizationHeader(context));
  // Tool calls (server/tool_calls.h, as the HTTP face serves them): parsed in
  // the chat template's format, or constrained to calls by a grammar, which
  // goes into a copy of the request.
  absl::StatusOr<ToolCallPlan> tools = ToolCallPlan();
  std::optional<v1::GenerateRequest> with_tools;
  if (admission.ok() && (!request->tool_choice().empty() || request->has_parallel_tool_calls())) {
    with_tools = *request;
    tools = PrepareGenerateToolCalls(
        frontend_->tool_call_format(*admission),
        [](const nlohmann::ordered_json& schema) { return JsonSchemaToGrammar(schema); },
        &*with_tools);
  }
  absl::StatusOr<GenerationRequest> converted =
      !admission.ok() ? absl::StatusOr<GenerationRequest>(admission.status())
      : !tools.ok()   ? absl::StatusOr<GenerationRequest>(tools.status())
                      : frontend_->PrepareGenerate(*admission, with_tools ? *with_tools : *request);
  if (!converted.ok()) {
    reactor->Reject(converted.status());
    return reactor.get();
  }
  converted->request_id = request_id;
  if (tools->format != ToolCallFormat::kNone) {
    // The stop strings, validated, are the parser's (content only).
    if (!tools->engine_stops) converted->stop.clear();
    reactor->ParseToolCalls(ToolParserOptions(*tools));
  }
  reactor->Submit(admission->engine(), std::move(*converted));
  return reactor.get();
}

grpc::ServerUnaryReactor* TextGenerationService::Tokenize(grpc::CallbackServerContext* context,
                                                          const v1::TokenizeRequest* request,
                                                          v1::TokenizeResponse* response) {
  absl::StatusOr<Frontend::Admission> admission = frontend_->Admit(AuthorizationHeader(context));
  absl::Status status = admission.status();
  if (status.ok()) status = frontend_->Tokenize(*admission, *request, response);
  return FinishUnary(context, "Tokenize", status);
}

grpc::ServerUnaryReactor* TextGenerationService::GetModelInfo(
    grpc::CallbackServerContext* context, const v1::GetModelInfoRequest* /*request*/,
    v1::ModelInfo* response) {
  absl::StatusOr<Frontend::Admission> admission = frontend_->Admit(AuthorizationHeader(context));
  if (admission.ok()) frontend_->GetModelInfo(*admission, response);
  return FinishUnary(context, "GetModelInfo", admission.status());
}

grpc::ServerUnaryReactor* TextGenerationService::FinishUnary(grpc::CallbackServerContext* context,
                                                             absl::string_view method,
                                                             const absl::Status& status) {
  std::string code = absl::StatusCodeToString(status.code());
  frontend_->metrics()->RecordRequest(method, code);
  nlohmann::ordered_json fields;
  fields["peer"] = context->peer();
  fields["code"] = code;
  if (!status.ok()) fields["error"] = std::string(status.message());
  LogEvent(status.ok() ? spdlog::level::debug : spdlog::level::info, std::string(method), fields);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

}  // namespace streamgen
