// The HTTP face's endpoints: what each route does once the request is past
// the checks before routing (http_server.cc).
#include "server/http_routes.h"

#include <ctime>
#include <string>
#include <vector>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "server/http_transport.h"
#include "server/openai_choices.h"
#include "server/openai_encoder.h"
#include "engine/grammar/json_schema.h"
#include "server/tool_calls.h"

namespace streamgen {

using http_face::Json;
using http_face::kModelPrefix;
using http_face::OJson;
using http_face::Peer;
using http_face::SendError;
using http_face::SendJson;

namespace {

// The bytes a stream sends: at its start, for each merged message, and when
// it ends without a final message ("" : nothing).
struct StreamEncoding {
  std::function<std::string()> start;
  std::function<std::string(const v1::GenerateResponse&, bool last, const absl::Status&)> message;
  std::function<std::string(const absl::Status&)> finish;
  // Whether the face ended the output itself (a stop string the tool parser
  // found in content): the generation is then ended as if the client left.
  std::function<bool()> finished = [] { return false; };
};

// Answers with a chunked stream of `content_type` that `call` feeds on this
// worker thread, watching `socket` for a disconnect.
void StreamCall(httplib::Response& res, const char* content_type, std::shared_ptr<HttpCall> call,
                int socket, StreamEncoding encoding) {
  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Accel-Buffering", "no");  // nginx: do not buffer the stream
  res.set_chunked_content_provider(
      content_type,
      [call, socket, encoding = std::move(encoding)](size_t, httplib::DataSink& sink) {
        auto send = [&sink](const std::string& bytes) {
          return bytes.empty() || sink.write(bytes.data(), bytes.size());
        };
        send(encoding.start());
        call->Run(
            socket,
            [&](const v1::GenerateResponse& message, bool last, const absl::Status& status) {
              return send(encoding.message(message, last, status)) && !encoding.finished();
            },
            [&](const absl::Status& status) { send(encoding.finish(status)); });
        sink.done();
        return true;
      },
      [call](bool) { call->Abandon(); });
}

}  // namespace

void HttpServer::Routes::Health(httplib::Response& res) const {
  if (!frontend_->loaded() || frontend_->draining()) {
    res.set_header("Retry-After", "1");
    SendJson(res, 503, {{"status", frontend_->draining() ? "draining" : "loading"}});
    return;
  }
  SendJson(res, 200, {{"status", "serving"}});
}

http_face::OJson HttpServer::Routes::ModelObject(const Frontend::Admission& admission) const {
  const ModelInfo& info = admission.model_info();
  return {{"id", ServedModelName()},
          {"object", "model"},
          {"created", created_},
          {"owned_by", "streamgen"},
          {"root", info.name},
          {"max_model_len", info.context_length}};
}

void HttpServer::Routes::Models(const httplib::Request& req, httplib::Response& res) const {
  std::optional<Frontend::Admission> admission = Admit(req, res);
  if (!admission) return;
  SendJson(res, 200, {{"object", "list"}, {"data", OJson::array({ModelObject(*admission)})}});
}

void HttpServer::Routes::Model(const httplib::Request& req, httplib::Response& res) const {
  std::optional<Frontend::Admission> admission = Admit(req, res);
  if (!admission) return;
  // httplib has decoded the path: %2F is a slash here too.
  std::string id = req.path.substr(kModelPrefix.size());
  if (id == ServedModelName()) return SendJson(res, 200, ModelObject(*admission));
  // OpenAI's answer for an unknown model: param null, code model_not_found.
  SendError(res, MakeHttpError(404, "invalid_request_error",
                               absl::StrCat("The model `", id, "` does not exist; this server "
                                            "serves `", ServedModelName(), "`"),
                               "model_not_found"));
}

void HttpServer::Routes::Tokenize(const httplib::Request& req, httplib::Response& res) const {
  std::optional<Frontend::Admission> admission = Admit(req, res);
  Json body;
  if (!admission || !ParseBody(req, res, &body)) return;
  absl::StatusOr<v1::TokenizeRequest> request = ParseTokenizeRequest(body);
  v1::TokenizeResponse response;
  absl::Status status = request.status();
  if (status.ok()) status = frontend_->Tokenize(*admission, *request, &response);
  if (!status.ok()) return SendError(res, ToHttpError(ForHttpFace(status, OpenAiRoute::kChat)));
  OJson out;
  out["count"] = response.token_ids_size();
  out["max_model_len"] = admission->model_info().context_length;
  out["tokens"] = std::vector<int>(response.token_ids().begin(), response.token_ids().end());
  out["token_strs"] = std::vector<std::string>(response.pieces().begin(), response.pieces().end());
  if (request->messages_size() > 0) out["rendered_prompt"] = response.rendered_prompt();
  SendJson(res, 200, out);
}

void HttpServer::Routes::ApplyTemplate(const httplib::Request& req, httplib::Response& res) const {
  std::optional<Frontend::Admission> admission = Admit(req, res);
  Json body;
  if (!admission || !ParseBody(req, res, &body)) return;
  absl::StatusOr<v1::TokenizeRequest> request = ParseApplyTemplateRequest(body);
  absl::StatusOr<std::string> prompt =
      request.ok() ? frontend_->ApplyTemplate(*admission, *request)
                   : absl::StatusOr<std::string>(request.status());
  if (!prompt.ok()) {
    return SendError(res, ToHttpError(ForHttpFace(prompt.status(), OpenAiRoute::kChat)));
  }
  SendJson(res, 200, {{"prompt", *prompt}});
}

void HttpServer::Routes::Detokenize(const httplib::Request& req, httplib::Response& res) const {
  std::optional<Frontend::Admission> admission = Admit(req, res);
  Json body;
  if (!admission || !ParseBody(req, res, &body)) return;
  absl::StatusOr<std::vector<int>> ids = ParseDetokenizeRequest(body);
  if (!ids.ok()) return SendError(res, ToHttpError(ids.status()));
  Engine* engine = admission->engine();
  int pieces = engine->model_info().tokenizer_vocab_size;
  for (size_t i = 0; i < ids->size(); ++i) {
    if ((*ids)[i] < 0 || (*ids)[i] >= pieces) {
      absl::Status status = absl::InvalidArgumentError(
          absl::StrCat("tokens[", i, "] = ", (*ids)[i], " is outside the tokenizer's vocabulary [0, ",
                       pieces, ")"));
      SetErrorParam(&status, "tokens");
      return SendError(res, ToHttpError(status));
    }
  }
  SendJson(res, 200, {{"prompt", engine->Detokenize(*ids)}});
}

std::shared_ptr<HttpCall> HttpServer::Routes::StartGeneration(
    const Frontend::Admission& admission, const httplib::Request& req, httplib::Response& res,
    v1::GenerateRequest request, OpenAiRoute route, absl::string_view max_tokens_field,
    int64_t* prompt_tokens, bool engine_stops) {
  std::string request_id = res.get_header_value("X-Request-Id");  // the client's, or generated
  request.set_request_id(request_id);
  std::shared_ptr<HttpCall> call = HttpCall::Create(
      frontend_->reactor_env(), CallInfo{absl::StrCat("POST ", req.path), request_id, Peer(req),
                                         frontend_->LogPrompt(request)});
  absl::StatusOr<GenerationRequest> converted = frontend_->PrepareGenerate(admission, request);
  if (converted.ok()) {
    if (prompt_tokens != nullptr) *prompt_tokens = static_cast<int64_t>(converted->prompt_token_ids.size());
    // Tools: the stop strings, validated, are the face's (server/tool_calls.h).
    if (!engine_stops) converted->stop.clear();
    call->Submit(admission.engine(), std::move(*converted));
  } else {
    call->Reject(converted.status());
  }
  if (std::optional<absl::Status> refused = call->Refused()) {
    // The validator's (and the engine's) messages name the proto's fields:
    // the client gets its own field names.
    SendError(res, ToHttpError(ForHttpFace(*refused, route, max_tokens_field), route));
    return nullptr;
  }
  return call;
}

void HttpServer::Routes::Completions(OpenAiRoute route, const httplib::Request& req,
                                     httplib::Response& res) {
  std::optional<Frontend::Admission> admission = Admit(req, res);
  Json body;
  if (!admission || !ParseBody(req, res, &body)) return;
  absl::StatusOr<OpenAiRequest> parsed = ParseOpenAiRequest(route, body);
  if (!parsed.ok()) return SendError(res, ToHttpError(parsed.status(), route));
  if (!parsed->model.empty() && parsed->model != ServedModelName()) {
    return SendError(res, MakeHttpError(404, "invalid_request_error",
                                        absl::StrCat("The model `", parsed->model,
                                                     "` does not exist; this server serves `",
                                                     ServedModelName(), "`"),
                                        "model_not_found", "model"));
  }
  if (route == OpenAiRoute::kChat) {
    // Tools: parse the output in the template's format, or constrain it to
    // calls (server/tool_calls.h).
    absl::Status tools = PrepareToolCalls(
        frontend_->tool_call_format(*admission),
        [](const OJson& schema) { return JsonSchemaToGrammar(schema); }, &*parsed);
    if (!tools.ok()) return SendError(res, ToHttpError(tools, route));
    if (!parsed->tool_grammar.empty()) {
      if (parsed->request.constraint_case() != v1::GenerateRequest::CONSTRAINT_NOT_SET) {
        absl::Status both = absl::InvalidArgumentError(
            "tool_choice \"required\" or a named function constrains the output to calls: it "
            "cannot be combined with response_format or structured_outputs");
        SetErrorParam(&both, "tool_choice");
        return SendError(res, ToHttpError(both, route));
      }
      parsed->request.set_grammar(parsed->tool_grammar);
    }
  }
  auto request = std::make_shared<OpenAiRequest>(std::move(*parsed));
  int64_t prompt_tokens = 0;
  std::shared_ptr<HttpCall> call =
      StartGeneration(*admission, req, res, request->request, route, request->max_tokens_field,
                      &prompt_tokens, request->engine_stops);
  if (call == nullptr) return;
  Engine* engine = admission->engine();
  const char* prefix = route == OpenAiRoute::kChat ? "chatcmpl-" : "cmpl-";
  auto encoder = std::make_shared<OpenAiChoicesEncoder>(
      std::max<int>(1, request->request.n()), *request, absl::StrCat(prefix, call->request_id()), static_cast<int64_t>(std::time(nullptr)),
      ServedModelName(), [engine](int id) { return engine->TokenPiece(id); });
  encoder->set_system_fingerprint(engine->model_info().fingerprint);
  encoder->set_prompt_tokens(prompt_tokens);
  // A token whose piece has more than spaces but which decodes to nothing on
  // its own is a control token (BOS, EOS, <|im_end|>): no text of the output.
  // ("▁" alone decodes to "" too: sentencepiece drops a first piece's space.)
  encoder->set_hidden_token([engine](int id) {
    std::string text = PieceText(engine->TokenPiece(id));
    return text.find_first_not_of(' ') != std::string::npos && engine->Detokenize({id}).empty();
  });
  int socket = HttpTransport::CurrentSocket();

  if (!request->stream) {
    absl::Status final_status = absl::OkStatus();
    call->Run(
        socket,
        [&](const v1::GenerateResponse& message, bool last, const absl::Status& status) {
          encoder->Accumulate(message);
          if (last) final_status = status;
          return !encoder->finished();  // false: the face ended the output (cancels it)
        },
        [&](const absl::Status& status) { final_status = status; });
    if (!final_status.ok() && !encoder->finished()) {
      return SendError(res, ToHttpError(ForHttpFace(final_status, route, request->max_tokens_field),
                                        route));
    }
    return SendJson(res, 200, encoder->Body());
  }

  // The encoder refers to *request: both live as long as the stream.
  StreamCall(res, "text/event-stream", call, socket,
             {[encoder, request] { return encoder->StreamStart(); },
              [encoder](const v1::GenerateResponse& message, bool last, const absl::Status& status) {
                return encoder->StreamMessage(message, last, status);
              },
              [encoder](const absl::Status& status) { return encoder->StreamError(status); },
              [encoder] { return encoder->finished(); }});
}

void HttpServer::Routes::QueryStream(const httplib::Request& req, httplib::Response& res) {
  std::optional<Frontend::Admission> admission = Admit(req, res);
  Json body;
  if (!admission || !ParseBody(req, res, &body)) return;
  absl::StatusOr<QueryStreamRequest> parsed = ParseQueryStreamRequest(body);
  if (!parsed.ok()) {
    return SendError(res, ToHttpError(parsed.status(), OpenAiRoute::kQueryStream));
  }
  static absl::Mutex mu(absl::kConstInit);
  static absl::BitGen* gen = new absl::BitGen();
  uint64_t seed;
  {
    absl::MutexLock lock(&mu);
    // Below 2^53, so that JavaScript clients can send it back exactly.
    seed = absl::Uniform<uint64_t>(*gen, 0, uint64_t{1} << 53);
  }
  bool chat = !frontend_->chat_family().empty();
  std::shared_ptr<HttpCall> call =
      StartGeneration(*admission, req, res, ToGenerateRequest(*parsed, chat, seed),
                      OpenAiRoute::kQueryStream, "max_new_tokens");
  if (call == nullptr) return;
  int socket = HttpTransport::CurrentSocket();
  // httplib would gzip a text/plain body for clients that accept it (requests
  // does), and its compressor holds output back: the stream would stop
  // streaming. The request is httplib's own non-const object.
  const_cast<httplib::Request&>(req).headers.erase("Accept-Encoding");
  res.set_header("X-Seed", std::to_string(seed));
  // Plain text has no way to say "error": a stream the server ends early just
  // ends (the log line and the metrics say why).
  StreamCall(res, "text/plain; charset=utf-8", call, socket,
             {[] { return std::string(); },
              [](const v1::GenerateResponse& message, bool, const absl::Status&) {
                return message.text();
              },
              [](const absl::Status&) { return std::string(); }});
}

}  // namespace streamgen
