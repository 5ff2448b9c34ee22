#include "server/frontend.h"

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "common/status.h"
#include "server/logging.h"

namespace streamgen {
namespace {

constexpr char kLoading[] = "the model is still loading; retry";

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

}  // namespace

std::string MakeRequestId() {
  static absl::Mutex mu(absl::kConstInit);
  static absl::BitGen* gen = new absl::BitGen();
  absl::MutexLock lock(&mu);
  return absl::StrFormat("%016x", absl::Uniform<uint64_t>(*gen));
}

Engine* Frontend::Admission::engine() const { return model_->engine; }

Frontend::Frontend(FrontendOptions options, Metrics* metrics)
    : options_(std::move(options)), metrics_(metrics) {}

Frontend::~Frontend() = default;

absl::Status Frontend::SetEngine(Engine* engine) {
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
      model->chat_error =
          info.chat_template.empty()
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
    LogEvent(spdlog::level::warn, "chat requests will be refused", {{"reason", model->chat_error}});
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
    model->encoder.render_chat =
        [error](const std::vector<ChatMessage>&) -> absl::StatusOr<std::vector<int>> {
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

absl::Status Frontend::CheckKey(std::optional<absl::string_view> authorization) const {
  return options_.api_keys.Check(authorization);
}

absl::StatusOr<Frontend::Admission> Frontend::Admit(
    std::optional<absl::string_view> authorization) const {
  SG_RETURN_IF_ERROR(CheckKey(authorization));
  const Model* model = model_.load();
  if (model == nullptr) return absl::UnavailableError(kLoading);
  return Admission(model);
}

absl::StatusOr<GenerationRequest> Frontend::PrepareGenerate(
    const Admission& admission, const v1::GenerateRequest& request) const {
  if (draining_) {
    return absl::UnavailableError("the server is shutting down; retry on another replica");
  }
  const Model& model = *admission.model_;
  return ToGenerationRequest(request, model.limits, model.encoder);
}

absl::Status Frontend::Tokenize(const Admission& admission, const v1::TokenizeRequest& request,
                                v1::TokenizeResponse* response) const {
  const Model& model = *admission.model_;
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

void Frontend::GetModelInfo(const Admission& admission, v1::ModelInfo* out) const {
  const Model& model = *admission.model_;
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

std::string Frontend::LogPrompt(const v1::GenerateRequest& request) const {
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

std::string Frontend::model_name() const {
  const Model* model = model_.load();
  return model == nullptr ? "" : model->engine->model_info().name;
}

std::string Frontend::chat_family() const {
  const Model* model = model_.load();
  if (model == nullptr || model->chat == nullptr) return "";
  return ChatTemplateFamilyName(model->chat->family());
}

void Frontend::BeginDrain() { draining_ = true; }

bool Frontend::WaitForIdle(absl::Duration timeout) const { return registry_.WaitForEmpty(timeout); }

void Frontend::AbortStreams(const absl::Status& status) { registry_.AbortAll(status); }

}  // namespace streamgen
