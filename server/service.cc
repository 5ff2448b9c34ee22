#include "server/service.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/stubs/common.h>
#include <google/protobuf/wire_format_lite.h>
#include <grpcpp/impl/codegen/server_callback_handlers.h>

#include "absl/container/flat_hash_map.h"
#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "server/logging.h"

namespace streamgen {
namespace {

std::optional<absl::string_view> AuthorizationHeader(grpc::CallbackServerContext* context) {
  const auto& metadata = context->client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) return std::nullopt;
  return absl::string_view(it->second.data(), it->second.size());
}

// The vocabulary a chat template needs, from the engine's tokenizer.
ChatVocabulary MakeChatVocabulary(Engine* engine) {
  const ModelInfo& info = engine->model_info();
  ChatVocabulary vocabulary;
  vocabulary.encode = [engine](const std::string& text) { return engine->Tokenize(text, false); };
  vocabulary.piece_to_id = [engine, size = info.tokenizer_vocab_size](const std::string& piece) {
    for (int id = 0; id < size; ++id) {
      if (engine->TokenPiece(id) == piece) return id;
    }
    return -1;
  };
  vocabulary.bos_id = info.bos_token_id;
  vocabulary.eos_id = info.eos_token_ids.empty() ? -1 : info.eos_token_ids[0];
  if (vocabulary.bos_id >= 0) vocabulary.bos_piece = engine->TokenPiece(vocabulary.bos_id);
  if (vocabulary.eos_id >= 0) vocabulary.eos_piece = engine->TokenPiece(vocabulary.eos_id);
  return vocabulary;
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

std::string MakeRequestId() {
  static absl::Mutex mu(absl::kConstInit);
  static absl::BitGen* gen = new absl::BitGen();
  absl::MutexLock lock(&mu);
  return absl::StrFormat("%016x", absl::Uniform<uint64_t>(*gen));
}

TextGenerationService::TextGenerationService(ServiceOptions options, Metrics* metrics)
    : options_(std::move(options)), metrics_(metrics) {
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
  // The key comes first, as for every other refusal.
  SG_RETURN_IF_ERROR(Admit(AuthorizationHeader(context)));
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

absl::Status TextGenerationService::SetEngine(Engine* engine) {
  auto model = std::make_unique<Model>();
  model->engine = engine;
  const ModelInfo& info = engine->model_info();
  RequestLimits& limits = model->limits;
  limits.vocab_size = info.vocab_size;
  limits.context_length = info.context_length;
  limits.default_max_new_tokens = info.default_max_new_tokens;
  limits.max_new_tokens_limit = info.max_new_tokens_limit;
  limits.max_prompt_tokens = options_.max_prompt_tokens;
  limits.max_stop_strings = info.max_stop_strings;
  limits.max_stop_string_bytes = info.max_stop_string_bytes;
  limits.max_messages = options_.max_messages;
  limits.model_fingerprint = info.fingerprint;

  ChatTemplateFamily family = ChatTemplateFamily::kNone;
  if (options_.chat_template == "auto") {
    family = DetectChatTemplateFamily(info.chat_template);
    if (family == ChatTemplateFamily::kNone) {
      model->chat_error = info.chat_template.empty()
          ? "the model's tokenizer_config.json has no chat_template"
          : "the model's chat_template is of no known family (llama2, mistral, chatml)";
    }
  } else {
    SG_ASSIGN_OR_RETURN(family, ParseChatTemplateFlag(options_.chat_template));
    if (family == ChatTemplateFamily::kNone) model->chat_error = "--chat-template=none";
  }
  if (family != ChatTemplateFamily::kNone) {
    absl::StatusOr<std::unique_ptr<ChatTemplate>> chat =
        ChatTemplate::FromFlag(options_.chat_template, family, MakeChatVocabulary(engine));
    if (chat.ok()) {
      model->chat = std::move(*chat);
    } else if (options_.chat_template != "auto") {
      return absl::FailedPreconditionError(
          absl::StrCat("--chat-template=", options_.chat_template, ": ", chat.status().message()));
    } else {
      model->chat_error = std::string(chat.status().message());
    }
  }
  if (model->chat == nullptr) {
    LogEvent(spdlog::level::warn, "chat requests will be refused",
             {{"reason", model->chat_error}});
  }

  model->encoder.tokenize = [engine](const std::string& text) {
    return engine->Tokenize(text, true);
  };
  if (model->chat != nullptr) {
    const ChatTemplate* chat = model->chat.get();
    model->encoder.render_chat = [chat](const std::vector<ChatMessage>& messages) {
      return chat->Render(messages);
    };
  } else {
    std::string error = model->chat_error;
    model->encoder.render_chat = [error](const std::vector<ChatMessage>&)
        -> absl::StatusOr<std::vector<int>> {
      return absl::FailedPreconditionError(
          absl::StrCat("messages: chat is not available for this model: ", error,
                       "; send prompt or prompt_token_ids, or start the server with "
                       "--chat-template=llama2|mistral|chatml"));
    };
  }
  model_storage_ = std::move(model);
  model_.store(model_storage_.get());
  return absl::OkStatus();
}

std::string TextGenerationService::chat_family() const {
  const Model* model = model_.load();
  if (model == nullptr || model->chat == nullptr) return "";
  return ChatTemplateFamilyName(model->chat->family());
}

void TextGenerationService::BeginDrain() { draining_ = true; }

bool TextGenerationService::WaitForIdle(absl::Duration timeout) const {
  return registry_.WaitForEmpty(timeout);
}

void TextGenerationService::AbortStreams(const absl::Status& status) {
  registry_.AbortAll(status);
}

absl::Status TextGenerationService::Admit(std::optional<absl::string_view> authorization,
                                          const Model** model) const {
  SG_RETURN_IF_ERROR(options_.api_keys.Check(authorization));
  *model = model_.load();
  if (*model == nullptr) return absl::UnavailableError("the model is still loading; retry");
  return absl::OkStatus();
}

std::string TextGenerationService::LogPrompt(const v1::GenerateRequest& request) const {
  if (!options_.log_prompts) return "";
  if (!request.prompt().empty()) return request.prompt();
  if (request.prompt_token_ids_size() > 0) {
    return absl::StrCat("[", absl::StrJoin(request.prompt_token_ids(), ","), "]");
  }
  std::string out;
  for (const v1::ChatMessage& message : request.messages()) {
    absl::StrAppend(&out, out.empty() ? "" : "\n", message.role(), ": ", message.content());
  }
  return out;
}

absl::Status TextGenerationService::Admit(std::optional<absl::string_view> authorization) const {
  const Model* model = nullptr;
  return Admit(authorization, &model);
}

absl::StatusOr<GenerationRequest> TextGenerationService::PrepareGenerate(
    std::optional<absl::string_view> authorization, const v1::GenerateRequest& request) const {
  const Model* model = nullptr;
  SG_RETURN_IF_ERROR(Admit(authorization, &model));
  if (draining_) {
    return absl::UnavailableError("the server is shutting down; retry on another replica");
  }
  return ToGenerationRequest(request, model->limits, model->encoder);
}

Engine* TextGenerationService::engine() const {
  const Model* model = model_.load();
  return model == nullptr ? nullptr : model->engine;
}

absl::Status TextGenerationService::Tokenize(const v1::TokenizeRequest& request,
                                             v1::TokenizeResponse* response) const {
  const Model* model = model_.load();
  if (model == nullptr) return absl::UnavailableError("the model is still loading; retry");
  return DoTokenize(*model, request, response);
}

absl::Status TextGenerationService::GetModelInfo(v1::ModelInfo* info) const {
  const Model* model = model_.load();
  if (model == nullptr) return absl::UnavailableError("the model is still loading; retry");
  FillModelInfo(*model, info);
  return absl::OkStatus();
}

grpc::ServerWriteReactor<v1::GenerateResponse>* TextGenerationService::GenerateBytes(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* bytes) {
  // Arena-free: the request lives for this call only (Generate copies what it keeps).
  v1::GenerateRequest request;
  absl::Status parsed = ParseRequest(context, *bytes, &request);
  if (parsed.ok()) return Generate(context, &request);
  // Refused like any other request: the log line and the metrics.
  std::shared_ptr<GenerateReactor> reactor =
      GenerateReactor::Create(reactor_env(), context, MakeRequestId(), "");
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
  std::shared_ptr<GenerateReactor> reactor =
      GenerateReactor::Create(reactor_env(), context, request_id, LogPrompt(*request));
  absl::StatusOr<GenerationRequest> converted =
      PrepareGenerate(AuthorizationHeader(context), *request);
  if (!converted.ok()) {
    reactor->Reject(converted.status());
    return reactor.get();
  }
  converted->request_id = request_id;
  reactor->Submit(engine(), std::move(*converted));
  return reactor.get();
}

absl::Status TextGenerationService::DoTokenize(const Model& model,
                                               const v1::TokenizeRequest& request,
                                               v1::TokenizeResponse* response) const {
  std::vector<int> ids;
  if (request.messages_size() > 0) {
    if (!request.text().empty()) {
      return absl::InvalidArgumentError("set one of text and messages, not both");
    }
    SG_ASSIGN_OR_RETURN(std::vector<ChatMessage> messages,
                        ConvertMessages(request.messages(), model.limits));
    SG_ASSIGN_OR_RETURN(ids, model.encoder.render_chat(messages));
  } else {
    ids = model.engine->Tokenize(request.text(), request.add_special_tokens());
  }
  for (int id : ids) {
    response->add_token_ids(id);
    response->add_pieces(model.engine->TokenPiece(id));
  }
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* TextGenerationService::Tokenize(grpc::CallbackServerContext* context,
                                                          const v1::TokenizeRequest* request,
                                                          v1::TokenizeResponse* response) {
  const Model* model = nullptr;
  absl::Status status = Admit(AuthorizationHeader(context), &model);
  if (status.ok()) status = DoTokenize(*model, *request, response);
  return FinishUnary(context, "Tokenize", status);
}

void TextGenerationService::FillModelInfo(const Model& model, v1::ModelInfo* out) const {
  const ModelInfo& info = model.engine->model_info();
  out->set_name(info.name);
  out->set_architecture(info.architecture);
  out->set_vocab_size(info.vocab_size);
  out->set_context_length(info.context_length);
  out->set_dtype(info.dtype);
  out->set_quantization(info.quantization);
  out->set_device(info.device);
  out->set_tokenizer_vocab_size(info.tokenizer_vocab_size);
  out->set_bos_token_id(info.bos_token_id);
  for (int id : info.eos_token_ids) out->add_eos_token_ids(id);
  out->set_chat_template(model.chat ? ChatTemplateFamilyName(model.chat->family()) : "");
  out->set_fingerprint(info.fingerprint);
  v1::ServerLimits* limits = out->mutable_limits();
  limits->set_max_queue(info.max_queue);
  limits->set_max_batch(info.max_batch);
  limits->set_default_max_new_tokens(model.limits.default_max_new_tokens);
  limits->set_max_new_tokens_limit(model.limits.max_new_tokens_limit);
  limits->set_max_prompt_tokens(model.limits.EffectiveMaxPromptTokens());
  limits->set_max_stop_strings(model.limits.max_stop_strings);
  limits->set_max_stop_string_bytes(model.limits.max_stop_string_bytes);
  limits->set_max_messages(model.limits.max_messages);
  limits->set_max_top_logprobs(kMaxTopLogprobs);
  limits->set_max_receive_message_bytes(options_.max_receive_message_bytes);
  limits->set_max_prefill_tokens(info.max_prefill_tokens);
  limits->set_kv_block_size(info.kv_block_size);
  limits->set_kv_cache_blocks(info.kv_cache_blocks);
  limits->set_kv_cache_tokens(info.kv_cache_tokens);
  limits->set_prefix_caching(info.prefix_caching);
}

grpc::ServerUnaryReactor* TextGenerationService::GetModelInfo(
    grpc::CallbackServerContext* context, const v1::GetModelInfoRequest* /*request*/,
    v1::ModelInfo* response) {
  const Model* model = nullptr;
  absl::Status status = Admit(AuthorizationHeader(context), &model);
  if (status.ok()) FillModelInfo(*model, response);
  return FinishUnary(context, "GetModelInfo", status);
}

grpc::ServerUnaryReactor* TextGenerationService::FinishUnary(grpc::CallbackServerContext* context,
                                                             absl::string_view method,
                                                             const absl::Status& status) {
  std::string code = absl::StatusCodeToString(status.code());
  metrics_->RecordRequest(method, code);
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
