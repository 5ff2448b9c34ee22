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
  vocabulary.encode_special = [engine](const std::string& text) {
    return engine->Tokenize(text, false, /*parse_special=*/true);
  };
  vocabulary.piece_to_id = [engine](const std::string& piece) { return engine->PieceId(piece); };
  vocabulary.is_special = [engine](int id) { return engine->IsSpecialToken(id); };
  vocabulary.bos_id = info.bos_token_id;
  vocabulary.eos_id = info.eos_token_ids.empty() ? -1 : info.eos_token_ids[0];
  if (vocabulary.bos_id >= 0) vocabulary.bos_piece = engine->TokenPiece(vocabulary.bos_id);
  if (vocabulary.eos_id >= 0) vocabulary.eos_piece = engine->TokenPiece(vocabulary.eos_id);
  return vocabulary;
}

// The chat template --chat-template asks for, and where it comes from.
// auto: the model's own Jinja template (chat_template.jinja or
// tokenizer_config.json), else the built-in family its template shows
// (NOT_FOUND with the reason when there is none); a family; a Jinja file,
// rendered with the model's special tokens (tokenizer_config.json).
absl::StatusOr<std::unique_ptr<ChatTemplate>> MakeChatTemplate(const std::string& flag,
                                                               Engine* engine,
                                                               std::string* source) {
  const ModelInfo& info = engine->model_info();
  std::string dir = info.model_dir.empty() ? "." : info.model_dir;
  if (flag == "auto") {
    absl::StatusOr<std::unique_ptr<JinjaChatTemplate>> jinja = JinjaChatTemplate::FromModelDir(dir);
    if (jinja.ok()) {
      *source = (*jinja)->name();
      return ChatTemplate::CreateJinja(std::move(*jinja), MakeChatVocabulary(engine));
    }
    if (!absl::IsNotFound(jinja.status())) {
      // Present but not ours to render (it does not parse here): the family
      // it shows, if any, else the reason.
      LogEvent(spdlog::level::warn, "the model's chat template cannot be used",
               {{"reason", std::string(jinja.status().message())}});
    }
    ChatTemplateFamily family = DetectChatTemplateFamily(info.chat_template);
    if (family == ChatTemplateFamily::kNone) {
      if (!jinja.ok() && !absl::IsNotFound(jinja.status())) return jinja.status();
      return absl::NotFoundError(
          info.chat_template.empty()
              ? "the model has no chat template (no chat_template in tokenizer_config.json, no "
                "chat_template.jinja)"
              : "the model's chat_template is of no known family (llama2, mistral, chatml)");
    }
    *source = "built-in";
    return ChatTemplate::Create(family, MakeChatVocabulary(engine));
  }
  SG_ASSIGN_OR_RETURN(ChatTemplateFamily family, ParseChatTemplateFlag(flag));
  if (family == ChatTemplateFamily::kNone) return absl::NotFoundError("--chat-template=none");
  if (family != ChatTemplateFamily::kJinja) {
    *source = "built-in";
    return ChatTemplate::Create(family, MakeChatVocabulary(engine));
  }
  std::vector<std::string> added;
  SG_ASSIGN_OR_RETURN(auto tokens,
                      JinjaChatTemplate::SpecialTokensOf(dir + "/tokenizer_config.json", &added));
  SG_ASSIGN_OR_RETURN(std::unique_ptr<JinjaChatTemplate> jinja,
                      JinjaChatTemplate::FromFile(flag, std::move(tokens), std::move(added)));
  *source = flag;
  return ChatTemplate::CreateJinja(std::move(jinja), MakeChatVocabulary(engine));
}

absl::Status NoChat(const std::string& error) {
  return WithField(
      absl::FailedPreconditionError(
          absl::StrCat("messages: chat is not available for this model: ", error,
                       "; send prompt or prompt_token_ids, or start the server with "
                       "--chat-template=llama2|mistral|chatml|FILE")),
      "messages");
}

// A rendering's error is about `messages` unless it names another field.
absl::Status AboutMessages(const absl::Status& status) {
  return status.ok() || !FieldOf(status).empty() ? status : WithField(status, "messages");
}

// What a built-in family cannot render: tools, documents, no generation prompt.
absl::Status CheckOptionsFor(const ChatTemplate& chat, const ChatRenderOptions& options) {
  if (chat.family() == ChatTemplateFamily::kJinja) return absl::OkStatus();
  std::string family = ChatTemplateFamilyName(chat.family());
  if (!options.tools_json.empty()) {
    return InvalidField("tools_json",
                        absl::StrCat("tools_json: the chat template in use (built-in ", family,
                                     ") takes no tools"));
  }
  if (!options.documents_json.empty()) {
    return InvalidField("documents_json",
                        absl::StrCat("documents_json: the chat template in use (built-in ", family,
                                     ") takes no documents"));
  }
  if (!options.add_generation_prompt) {
    return InvalidField("add_generation_prompt",
                        absl::StrCat("add_generation_prompt: false needs a Jinja chat template; "
                                     "the built-in ",
                                     family, " always ends with the assistant's turn"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int>> RenderChat(const ChatTemplate& chat,
                                            const std::vector<ChatMessage>& messages,
                                            const ChatRenderOptions& options) {
  SG_RETURN_IF_ERROR(CheckOptionsFor(chat, options));
  return chat.Render(messages, options);
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

  absl::StatusOr<std::unique_ptr<ChatTemplate>> chat =
      MakeChatTemplate(options_.chat_template, engine, &model->chat_source);
  if (chat.ok()) {
    model->chat = std::move(*chat);
    LogEvent(spdlog::level::info, "chat template",
             {{"template", ChatTemplateFamilyName(model->chat->family())},
              {"source", model->chat_source}});
  } else if (options_.chat_template == "auto" || options_.chat_template == "none") {
    // The model has no template we can render (or chat is off): chat is refused.
    model->chat_error = std::string(chat.status().message());
    LogEvent(spdlog::level::warn, "chat requests will be refused", {{"reason", model->chat_error}});
  } else {
    // What the flag names cannot be rendered: a startup error.
    return absl::FailedPreconditionError(
        absl::StrCat("--chat-template=", options_.chat_template, ": ", chat.status().message()));
  }

  model->encoder.tokenize = [engine](const std::string& text, bool parse_special) {
    return engine->Tokenize(text, true, parse_special);
  };
  if (model->chat != nullptr) {
    const ChatTemplate* chat_template = model->chat.get();
    model->encoder.render_chat = [chat_template](const std::vector<ChatMessage>& messages,
                                                 const ChatRenderOptions& options) {
      return RenderChat(*chat_template, messages, options);
    };
  } else {
    std::string error = model->chat_error;
    model->encoder.render_chat = [error](const std::vector<ChatMessage>&, const ChatRenderOptions&)
        -> absl::StatusOr<std::vector<int>> { return NoChat(error); };
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

absl::StatusOr<std::vector<ChatMessage>> Frontend::ChatOf(const Model& model,
                                                          const v1::TokenizeRequest& request,
                                                          ChatRenderOptions* options) const {
  SG_ASSIGN_OR_RETURN(std::vector<ChatMessage> messages,
                      ConvertMessages(request.messages(), model.limits));
  SG_ASSIGN_OR_RETURN(
      *options, ConvertRenderOptions(
                    request.tools_json(), request.documents_json(), request.parse_special_tokens(),
                    !request.has_add_generation_prompt() || request.add_generation_prompt()));
  if (model.chat == nullptr) return NoChat(model.chat_error);
  SG_RETURN_IF_ERROR(CheckOptionsFor(*model.chat, *options));
  return messages;
}

absl::Status Frontend::Tokenize(const Admission& admission, const v1::TokenizeRequest& request,
                                v1::TokenizeResponse* response) const {
  const Model& model = *admission.model_;
  std::vector<int> ids;
  if (request.messages_size() > 0) {
    if (!request.text().empty()) {
      return InvalidField("messages", "set one of text and messages, not both");
    }
    ChatRenderOptions options;
    absl::StatusOr<std::vector<ChatMessage>> messages = ChatOf(model, request, &options);
    if (!messages.ok()) return AboutMessages(messages.status());
    absl::StatusOr<std::vector<int>> rendered = model.chat->Render(*messages, options);
    if (!rendered.ok()) return AboutMessages(rendered.status());
    ids = *std::move(rendered);
    absl::StatusOr<std::string> text = model.chat->RenderText(*messages, options);
    if (!text.ok()) return AboutMessages(text.status());
    *response->mutable_rendered_prompt() = *std::move(text);
  } else {
    if (!request.tools_json().empty() || !request.documents_json().empty()) {
      return InvalidField("tools_json", "tools_json and documents_json apply to messages only");
    }
    ids = model.engine->Tokenize(request.text(), request.add_special_tokens(),
                                 request.parse_special_tokens());
  }
  for (int id : ids) {
    response->add_token_ids(id);
    response->add_pieces(model.engine->TokenPiece(id));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> Frontend::ApplyTemplate(const Admission& admission,
                                                    const v1::TokenizeRequest& request) const {
  const Model& model = *admission.model_;
  if (request.messages_size() == 0) return InvalidField("messages", "messages is required");
  ChatRenderOptions options;
  absl::StatusOr<std::vector<ChatMessage>> messages = ChatOf(model, request, &options);
  if (!messages.ok()) return AboutMessages(messages.status());
  absl::StatusOr<std::string> text = model.chat->RenderText(*messages, options);
  if (!text.ok()) return AboutMessages(text.status());
  return text;
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
  if (model.chat) out->set_chat_template_source(model.chat_source);
  out->set_fingerprint(info.fingerprint);
  out->set_cpu_isa(info.cpu_isa);
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
    for (const v1::ContentPart& part : message.content_parts()) absl::StrAppend(&out, part.text());
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

ToolCallFormat Frontend::tool_call_format(const Admission& admission) const {
  const ChatTemplate* chat = admission.model_->chat.get();
  if (chat == nullptr || chat->jinja() == nullptr) return ToolCallFormat::kNone;
  return chat->jinja()->tool_call_format();
}

void Frontend::BeginDrain() { draining_ = true; }

bool Frontend::WaitForIdle(absl::Duration timeout) const { return registry_.WaitForEmpty(timeout); }

void Frontend::AbortStreams(const absl::Status& status) { registry_.AbortAll(status); }

}  // namespace streamgen
