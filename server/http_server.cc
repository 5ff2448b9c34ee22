#include "server/http_server.h"

// Debian's libcpp-httplib.so is built with OpenSSL, zlib and brotli; its
// pkg-config Cflags define the same CPPHTTPLIB_* macros for this header (the
// class layouts depend on them).
#include <httplib.h>

#include <dirent.h>
#include <netdb.h>
#include <sys/socket.h>

#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <ctime>
#include <deque>
#include <fstream>
#include <mutex>

#include "absl/random/random.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/cli_flags.h"
#include "server/http_call.h"
#include "server/logging.h"
#include "server/openai_api.h"
#include "server/playground_html.h"
#include "server/validation.h"

namespace streamgen {
namespace {

using Json = nlohmann::json;
using OJson = nlohmann::ordered_json;

// Set on a thread that serves a connection the pool had no room for.
thread_local bool tls_overloaded = false;

// httplib's ThreadPool queues connections without a bound; this one holds at
// most `max_waiting` and answers the rest 503 on the accepting thread.
class BoundedThreadPool : public httplib::TaskQueue {
 public:
  BoundedThreadPool(size_t threads, size_t max_waiting) : max_waiting_(max_waiting) {
    for (size_t i = 0; i < threads; ++i) workers_.emplace_back([this] { Work(); });
  }
  ~BoundedThreadPool() override = default;

  void enqueue(std::function<void()> fn) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (jobs_.size() < max_waiting_) {
        jobs_.push_back(std::move(fn));
        cv_.notify_one();
        return;
      }
    }
    tls_overloaded = true;
    fn();  // reads the request and answers 503 (pre-routing handler)
    tls_overloaded = false;
  }

  void shutdown() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      shutdown_ = true;
    }
    cv_.notify_all();
    for (std::thread& worker : workers_) worker.join();
  }

 private:
  void Work() {
    while (true) {
      std::function<void()> fn;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return shutdown_ || !jobs_.empty(); });
        if (jobs_.empty()) return;  // shut down
        fn = std::move(jobs_.front());
        jobs_.pop_front();
      }
      fn();
    }
  }

  const size_t max_waiting_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool shutdown_ = false;
  std::vector<std::thread> workers_;
};

std::string NumericHost(const sockaddr_storage& address, socklen_t length, int* port) {
  char host[NI_MAXHOST] = "", service[NI_MAXSERV] = "";
  if (getnameinfo(reinterpret_cast<const sockaddr*>(&address), length, host, sizeof(host), service,
                  sizeof(service), NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
    return "";
  }
  *port = std::atoi(service);
  return host;
}

// The connection's socket. httplib 0.11 does not hand it to handlers (the
// method that receives it is private), so it is found by its address pair
// among the process's descriptors (a few hundred getpeername calls at most,
// once per generation): it is what lets a stream notice a client that
// disconnects while no token is being written. -1 when not found.
int ConnectionSocket(const httplib::Request& req) {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  int found = -1;
  while (dirent* entry = readdir(dir)) {
    char* end = nullptr;
    long fd = std::strtol(entry->d_name, &end, 10);
    if (end == entry->d_name || *end != '\0' || fd == dirfd(dir)) continue;
    sockaddr_storage peer{}, local{};
    socklen_t peer_length = sizeof(peer), local_length = sizeof(local);
    if (getpeername(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&peer), &peer_length) != 0 ||
        getsockname(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&local), &local_length) != 0) {
      continue;
    }
    int peer_port = 0, local_port = 0;
    if (NumericHost(peer, peer_length, &peer_port) == req.remote_addr &&
        peer_port == req.remote_port && NumericHost(local, local_length, &local_port) == req.local_addr &&
        local_port == req.local_port) {
      found = static_cast<int>(fd);
      break;
    }
  }
  closedir(dir);
  return found;
}

// The routes the face knows, with their methods (the rest: 404; a known
// route with another method: 405).
struct Route {
  const char* path;
  const char* method;
};
constexpr Route kRoutes[] = {
    {"/", "GET"},           {"/health", "GET"},      {"/metrics", "GET"},
    {"/v1/models", "GET"},  {"/v1/models/{id}", "GET"},
    {"/tokenize", "POST"},  {"/detokenize", "POST"},
    {"/v1/completions", "POST"}, {"/v1/chat/completions", "POST"},
    {"/query-stream/", "POST"},  {"/query-stream", "POST"}};

// GET /v1/models/{id}: the id is the rest of the path, slashes included
// ("meta-llama/Llama-2-7b-chat-hf" is a served name like any other).
constexpr absl::string_view kModelPrefix = "/v1/models/";

const Route* FindRoute(const std::string& path) {
  const absl::string_view match = absl::StartsWith(path, kModelPrefix)
                                      ? absl::string_view("/v1/models/{id}")
                                      : absl::string_view(path);
  for (const Route& route : kRoutes) {
    if (match == route.path) return &route;
  }
  return nullptr;
}

// With --api-key-file, every route needs the key except the probes' /health,
// /metrics (open like vLLM's: counts only, and what the Inference Extension's
// endpoint picker scrapes) and the playground page (static; it asks for the key).
bool NeedsKey(const Route& route) {
  absl::string_view path = route.path;
  return path != "/health" && path != "/metrics" && path != "/";
}

void SendJson(httplib::Response& res, int status, const OJson& body) {
  res.status = status;
  res.set_content(DumpJson(body) + "\n", "application/json");
}

void SendError(httplib::Response& res, const HttpError& error) {
  if (error.retry_after_s > 0) res.set_header("Retry-After", std::to_string(error.retry_after_s));
  if (error.status == 401) res.set_header("WWW-Authenticate", "Bearer");
  SendJson(res, error.status, ErrorBody(error));
}

// How deep `body` nests arrays and objects, stopping once past `limit` (a
// pre-scan: the parser and every later walk over the value never meet a
// deeper one). Brackets inside strings do not count.
int JsonDepth(absl::string_view body, int limit) {
  int depth = 0, deepest = 0;
  bool in_string = false;
  for (size_t i = 0; i < body.size() && deepest <= limit; ++i) {
    char c = body[i];
    if (in_string) {
      if (c == '\\') {
        ++i;  // the escaped character
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return deepest;
}

// Request headers over the face's limits: the 431 to answer, or nullopt.
// Counts the client's fields: httplib adds REMOTE_ADDR, REMOTE_PORT,
// LOCAL_ADDR and LOCAL_PORT (the last of each name) to req.headers itself.
std::optional<HttpError> HeaderLimitError(const httplib::Request& req, const HttpOptions& options) {
  size_t fields = req.headers.size(), bytes = 0;
  for (const auto& [name, value] : req.headers) bytes += name.size() + value.size();
  for (const char* added : {"REMOTE_ADDR", "REMOTE_PORT", "LOCAL_ADDR", "LOCAL_PORT"}) {
    auto [first, last] = req.headers.equal_range(added);
    if (first == last) continue;
    --fields;
    bytes -= std::strlen(added) + std::prev(last)->second.size();
  }
  if (fields > static_cast<size_t>(options.max_header_fields)) {
    return MakeHttpError(431, "invalid_request_error",
                         absl::StrCat("the request has ", fields,
                                      " header fields; at most ", options.max_header_fields,
                                      " are allowed"),
                         "request_header_fields_too_large");
  }
  if (bytes > static_cast<size_t>(options.max_header_bytes)) {
    return MakeHttpError(431, "invalid_request_error",
                         absl::StrCat("the request's header fields are ", bytes,
                                      " bytes; at most ", options.max_header_bytes,
                                      " are allowed"),
                         "request_header_fields_too_large");
  }
  return std::nullopt;
}

// The bytes a stream sends: at its start, for each merged message, and when
// it ends without a final message ("" : nothing).
struct StreamEncoding {
  std::function<std::string()> start;
  std::function<std::string(const v1::GenerateResponse&, bool last, const absl::Status&)> message;
  std::function<std::string(const absl::Status&)> finish;
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
              return send(encoding.message(message, last, status));
            },
            [&](const absl::Status& status) { send(encoding.finish(status)); });
        sink.done();
        return true;
      },
      [call](bool) { call->Abandon(); });
}

std::optional<absl::string_view> Authorization(const httplib::Request& req) {
  if (!req.has_header("Authorization")) return std::nullopt;
  auto it = req.headers.find("Authorization");
  return absl::string_view(it->second);
}

std::string Peer(const httplib::Request& req) {
  bool v6 = req.remote_addr.find(':') != std::string::npos;
  return absl::StrCat(v6 ? "ipv6:[" : "ipv4:", req.remote_addr, v6 ? "]:" : ":", req.remote_port);
}

}  // namespace

// The handlers. Every method runs on an HTTP worker thread.
class HttpServer::Routes {
 public:
  Routes(const HttpOptions& options, TextGenerationService* service, Metrics* metrics,
         std::function<std::string()> render_metrics)
      : options_(options),
        service_(service),
        metrics_(metrics),
        render_metrics_(std::move(render_metrics)),
        created_(static_cast<int64_t>(std::time(nullptr))) {}

  void Install(httplib::Server& server);

 private:
  // The body as a JSON value, after the content type and nesting checks;
  // false after answering the error (the key's, when it is refused too).
  bool ParseBody(const httplib::Request& req, httplib::Response& res, Json* body) const;
  // The API key and the loaded model; false after answering the error.
  bool Admit(const httplib::Request& req, httplib::Response& res) const;
  // Refuses a request with `error`, unless its API key is refused first (as
  // the gRPC face checks the key before the request).
  void Refuse(const httplib::Request& req, httplib::Response& res, const HttpError& error) const;
  std::string ServedModelName() const;

  void Health(httplib::Response& res) const;
  void Models(const httplib::Request& req, httplib::Response& res) const;
  // GET /v1/models/{id}: the served model's object, else 404 model_not_found.
  void Model(const httplib::Request& req, httplib::Response& res) const;
  // The served model as an element of /v1/models' data (after Admit).
  OJson ModelObject() const;
  void Tokenize(const httplib::Request& req, httplib::Response& res) const;
  void Detokenize(const httplib::Request& req, httplib::Response& res) const;
  void Completions(OpenAiRoute route, const httplib::Request& req, httplib::Response& res);
  void QueryStream(const httplib::Request& req, httplib::Response& res);

  // Validates `request` with the gRPC face's checks and hands it to the
  // engine. Returns the call, or null after answering the refusal.
  // `max_tokens_field`: the body's name for max_new_tokens (messages and params).
  std::shared_ptr<HttpCall> StartGeneration(const httplib::Request& req, httplib::Response& res,
                                            v1::GenerateRequest request, OpenAiRoute route,
                                            absl::string_view max_tokens_field);

  const HttpOptions options_;
  TextGenerationService* const service_;
  Metrics* const metrics_;
  const std::function<std::string()> render_metrics_;
  const int64_t created_;
};

std::string HttpServer::Routes::ServedModelName() const {
  if (!options_.served_model_name.empty()) return options_.served_model_name;
  Engine* engine = service_->engine();
  return engine == nullptr ? "" : engine->model_info().name;
}

bool HttpServer::Routes::ParseBody(const httplib::Request& req, httplib::Response& res,
                                   Json* body) const {
  // No Content-Type is taken as JSON (curl -d without -H); another one is refused.
  if (req.has_header("Content-Type")) {
    std::string header = req.get_header_value("Content-Type");
    std::string media_type = absl::AsciiStrToLower(
        absl::StripAsciiWhitespace(absl::string_view(header).substr(0, header.find(';'))));
    if (media_type != "application/json") {
      Refuse(req, res,
             MakeHttpError(415, "invalid_request_error",
                           absl::StrCat("Content-Type must be application/json, got ", header)));
      return false;
    }
  }
  if (JsonDepth(req.body, options_.max_json_depth) > options_.max_json_depth) {
    Refuse(req, res,
           MakeHttpError(400, "invalid_request_error",
                         absl::StrCat("the body nests arrays and objects more than ",
                                      options_.max_json_depth, " levels deep")));
    return false;
  }
  try {
    // A lone surrogate escape is taken as U+FFFD (openai_api.h).
    std::optional<std::string> replaced = ReplaceLoneSurrogates(req.body);
    *body = Json::parse(replaced.has_value() ? *replaced : req.body);
  } catch (const Json::exception& error) {
    Refuse(req, res,
           MakeHttpError(400, "invalid_request_error",
                         absl::StrCat("the body is not valid JSON: ", error.what())));
    return false;
  }
  return true;
}

bool HttpServer::Routes::Admit(const httplib::Request& req, httplib::Response& res) const {
  absl::Status status = service_->Admit(Authorization(req));
  if (status.ok()) return true;
  SendError(res, ToHttpError(status));
  return false;
}

void HttpServer::Routes::Refuse(const httplib::Request& req, httplib::Response& res,
                                const HttpError& error) const {
  absl::Status admitted = service_->Admit(Authorization(req));
  SendError(res, admitted.ok() ? error : ToHttpError(admitted));
}

void HttpServer::Routes::Health(httplib::Response& res) const {
  if (service_->engine() == nullptr || service_->draining()) {
    res.set_header("Retry-After", "1");
    SendJson(res, 503, {{"status", service_->draining() ? "draining" : "loading"}});
    return;
  }
  SendJson(res, 200, {{"status", "serving"}});
}

OJson HttpServer::Routes::ModelObject() const {
  const ModelInfo& info = service_->engine()->model_info();
  return {{"id", ServedModelName()},
          {"object", "model"},
          {"created", created_},
          {"owned_by", "streamgen"},
          {"root", info.name},
          {"max_model_len", info.context_length}};
}

void HttpServer::Routes::Models(const httplib::Request& req, httplib::Response& res) const {
  if (!Admit(req, res)) return;
  SendJson(res, 200, {{"object", "list"}, {"data", OJson::array({ModelObject()})}});
}

void HttpServer::Routes::Model(const httplib::Request& req, httplib::Response& res) const {
  if (!Admit(req, res)) return;
  // httplib has decoded the path: %2F is a slash here too.
  std::string id = req.path.substr(kModelPrefix.size());
  if (id == ServedModelName()) return SendJson(res, 200, ModelObject());
  // OpenAI's answer for an unknown model: param null, code model_not_found.
  SendError(res, MakeHttpError(404, "invalid_request_error",
                               absl::StrCat("The model `", id, "` does not exist; this server "
                                            "serves `", ServedModelName(), "`"),
                               "model_not_found"));
}

void HttpServer::Routes::Tokenize(const httplib::Request& req, httplib::Response& res) const {
  Json body;
  if (!Admit(req, res) || !ParseBody(req, res, &body)) return;
  absl::StatusOr<v1::TokenizeRequest> request = ParseTokenizeRequest(body);
  v1::TokenizeResponse response;
  absl::Status status = request.status();
  if (status.ok()) status = service_->Tokenize(*request, &response);
  if (!status.ok()) return SendError(res, ToHttpError(status));
  OJson out;
  out["count"] = response.token_ids_size();
  out["max_model_len"] = service_->engine()->model_info().context_length;
  out["tokens"] = std::vector<int>(response.token_ids().begin(), response.token_ids().end());
  out["token_strs"] = std::vector<std::string>(response.pieces().begin(), response.pieces().end());
  SendJson(res, 200, out);
}

void HttpServer::Routes::Detokenize(const httplib::Request& req, httplib::Response& res) const {
  Json body;
  if (!Admit(req, res) || !ParseBody(req, res, &body)) return;
  absl::StatusOr<std::vector<int>> ids = ParseDetokenizeRequest(body);
  if (!ids.ok()) return SendError(res, ToHttpError(ids.status()));
  Engine* engine = service_->engine();
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

std::shared_ptr<HttpCall> HttpServer::Routes::StartGeneration(const httplib::Request& req,
                                                              httplib::Response& res,
                                                              v1::GenerateRequest request,
                                                              OpenAiRoute route,
                                                              absl::string_view max_tokens_field) {
  std::string request_id = res.get_header_value("X-Request-Id");  // the client's, or generated
  request.set_request_id(request_id);
  std::shared_ptr<HttpCall> call = HttpCall::Create(
      service_->reactor_env(),
      CallInfo{absl::StrCat("POST ", req.path), request_id, Peer(req), service_->LogPrompt(request)});
  absl::StatusOr<GenerationRequest> converted = service_->PrepareGenerate(Authorization(req), request);
  if (converted.ok()) {
    call->Submit(service_->engine(), std::move(*converted));
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
  Json body;
  if (!ParseBody(req, res, &body)) return;
  absl::StatusOr<OpenAiRequest> parsed = ParseOpenAiRequest(route, body);
  if (!parsed.ok()) return Refuse(req, res, ToHttpError(parsed.status(), route));
  if (!parsed->model.empty() && service_->engine() != nullptr && parsed->model != ServedModelName()) {
    return Refuse(req, res,
                  MakeHttpError(404, "invalid_request_error",
                                absl::StrCat("The model `", parsed->model,
                                             "` does not exist; this server serves `",
                                             ServedModelName(), "`"),
                                "model_not_found", "model"));
  }
  auto request = std::make_shared<OpenAiRequest>(std::move(*parsed));
  std::shared_ptr<HttpCall> call =
      StartGeneration(req, res, request->request, route, request->max_tokens_field);
  if (call == nullptr) return;
  Engine* engine = service_->engine();
  const char* prefix = route == OpenAiRoute::kChat ? "chatcmpl-" : "cmpl-";
  auto encoder = std::make_shared<OpenAiEncoder>(
      *request, absl::StrCat(prefix, call->request_id()), static_cast<int64_t>(std::time(nullptr)),
      ServedModelName(), [engine](int id) { return engine->TokenPiece(id); });
  encoder->set_system_fingerprint(engine->model_info().fingerprint);
  // A token whose piece has more than spaces but which decodes to nothing on
  // its own is a control token (BOS, EOS, <|im_end|>): no text of the output.
  // ("▁" alone decodes to "" too: sentencepiece drops a first piece's space.)
  encoder->set_hidden_token([engine](int id) {
    std::string text = PieceText(engine->TokenPiece(id));
    return text.find_first_not_of(' ') != std::string::npos && engine->Detokenize({id}).empty();
  });
  int socket = ConnectionSocket(req);

  if (!request->stream) {
    absl::Status final_status = absl::OkStatus();
    call->Run(
        socket,
        [&](const v1::GenerateResponse& message, bool last, const absl::Status& status) {
          encoder->Accumulate(message);
          if (last) final_status = status;
          return true;
        },
        [&](const absl::Status& status) { final_status = status; });
    if (!final_status.ok()) {
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
              [encoder](const absl::Status& status) { return encoder->StreamError(status); }});
}

void HttpServer::Routes::QueryStream(const httplib::Request& req, httplib::Response& res) {
  Json body;
  if (!ParseBody(req, res, &body)) return;
  absl::StatusOr<QueryStreamRequest> parsed = ParseQueryStreamRequest(body);
  if (!parsed.ok()) {
    return Refuse(req, res, ToHttpError(parsed.status(), OpenAiRoute::kQueryStream));
  }
  static absl::Mutex mu(absl::kConstInit);
  static absl::BitGen* gen = new absl::BitGen();
  uint64_t seed;
  {
    absl::MutexLock lock(&mu);
    // Below 2^53, so that JavaScript clients can send it back exactly.
    seed = absl::Uniform<uint64_t>(*gen, 0, uint64_t{1} << 53);
  }
  bool chat = !service_->chat_family().empty();
  std::shared_ptr<HttpCall> call =
      StartGeneration(req, res, ToGenerateRequest(*parsed, chat, seed), OpenAiRoute::kQueryStream,
                      "max_new_tokens");
  if (call == nullptr) return;
  int socket = ConnectionSocket(req);
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

void HttpServer::Routes::Install(httplib::Server& server) {
  server.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    // Before the route, the key and the body (which is not read yet).
    std::string id = req.get_header_value("X-Request-Id");
    bool id_too_long = id.size() > static_cast<size_t>(kMaxRequestIdBytes);
    res.set_header("X-Request-Id", id.empty() || id_too_long ? MakeRequestId() : id);
    std::optional<HttpError> refused;
    if (tls_overloaded) {
      res.set_header("Retry-After", "1");
      refused = MakeHttpError(503, "service_unavailable", "too many open connections; retry",
                              "too_many_connections");
    } else if ((refused = HeaderLimitError(req, options_))) {
    } else if (id_too_long) {
      refused = MakeHttpError(400, "invalid_request_error",
                              absl::StrCat("X-Request-Id is ", id.size(), " bytes; at most ",
                                           kMaxRequestIdBytes, " are allowed"));
    } else {
      return httplib::Server::HandlerResponse::Unhandled;
    }
    // The body (if any) is left unread: this connection cannot carry another request.
    res.set_header("Connection", "close");
    SendJson(res, refused->status, ErrorBody(*refused));
    return httplib::Server::HandlerResponse::Handled;
  });
  server.Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(kPlaygroundHtml, "text/html; charset=utf-8");
  });
  server.Get("/health", [this](const httplib::Request&, httplib::Response& res) { Health(res); });
  server.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(render_metrics_(), "text/plain; version=0.0.4; charset=utf-8");
  });
  server.Get("/v1/models",
             [this](const httplib::Request& req, httplib::Response& res) { Models(req, res); });
  server.Get("/v1/models/.*",
             [this](const httplib::Request& req, httplib::Response& res) { Model(req, res); });
  server.Post("/tokenize",
              [this](const httplib::Request& req, httplib::Response& res) { Tokenize(req, res); });
  server.Post("/detokenize",
              [this](const httplib::Request& req, httplib::Response& res) { Detokenize(req, res); });
  server.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
    Completions(OpenAiRoute::kCompletions, req, res);
  });
  server.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
    Completions(OpenAiRoute::kChat, req, res);
  });
  for (const char* path : {"/query-stream/", "/query-stream"}) {
    server.Post(path,
                [this](const httplib::Request& req, httplib::Response& res) { QueryStream(req, res); });
  }
  // Everything else: 405 for a known path, 404 otherwise.
  auto fallback = [](const httplib::Request& req, httplib::Response& res) {
    const Route* route = FindRoute(req.path);
    if (route == nullptr) {
      return SendError(res, MakeHttpError(404, "invalid_request_error",
                                          absl::StrCat("no route ", req.method, " ", req.path),
                                          "not_found"));
    }
    res.set_header("Allow", route->method);
    SendError(res, MakeHttpError(405, "invalid_request_error",
                                 absl::StrCat(req.path, " takes ", route->method, ", not ", req.method),
                                 "method_not_allowed"));
  };
  server.Get(".*", fallback);
  server.Post(".*", fallback);
  server.Put(".*", fallback);
  server.Patch(".*", fallback);
  server.Delete(".*", fallback);
  server.Options(".*", fallback);
  // Errors httplib answers itself (413 body too large, 400 unreadable
  // request, ...) get the same JSON body.
  server.set_error_handler(httplib::Server::HandlerWithResponse(
      [this](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    std::string message;
    if (res.status == 413) {
      // The key comes first, as for every other refusal of a route that needs one.
      const Route* route = FindRoute(req.path);
      absl::Status admitted = service_->Admit(Authorization(req));
      if (route != nullptr && NeedsKey(*route) &&
          admitted.code() == absl::StatusCode::kUnauthenticated) {
        SendError(res, ToHttpError(admitted));
        return httplib::Server::HandlerResponse::Handled;
      }
      std::string type = req.get_header_value("Content-Type");
      if (absl::StartsWithIgnoreCase(type, "application/x-www-form-urlencoded")) {
        // httplib's own cap on form bodies (8192 bytes; curl -d without -H):
        // the same 415 a smaller one gets.
        res.status = 415;
        message = absl::StrCat("Content-Type must be application/json, got ", type);
      } else {
        message = absl::StrCat("the request body is larger than --max-receive-message-bytes (",
                               options_.max_body_bytes, " bytes)");
      }
    } else if (res.status == 414) {
      message = "the request URI is longer than 8192 bytes";
    } else if (res.status == 400) {
      message = "the request could not be read: a malformed request line, header or body, or "
                "a header line longer than 8192 bytes";
    } else {
      message = absl::StrCat("the request could not be served (HTTP ", res.status, ")");
    }
    SendError(res, MakeHttpError(res.status, "invalid_request_error", message));
    return httplib::Server::HandlerResponse::Handled;
  }));
  server.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr error) {
        std::string message = "internal error";
        try {
          if (error) std::rethrow_exception(error);
        } catch (const std::exception& e) {
          message = e.what();
        } catch (...) {
        }
        SendJson(res, 500, ErrorBody(MakeHttpError(500, "server_error", message)));
      });
  server.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    const Route* route = FindRoute(req.path);
    metrics_->RecordHttpResponse(route == nullptr ? "other" : route->path, res.status);
    if (res.status >= 400) {
      LogEvent(spdlog::level::info, "http",
               {{"method", req.method}, {"path", req.path}, {"status", res.status},
                {"peer", Peer(req)}, {"request_id", res.get_header_value("X-Request-Id")}});
    }
  });
}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(
    const HttpOptions& options, TextGenerationService* service, Metrics* metrics,
    std::function<std::string()> render_metrics) {
  absl::StatusOr<HostPort> host_port = ParseHostPort(options.listen, "http-listen");
  if (!host_port.ok()) return host_port.status();
  std::string host = host_port->host.empty() ? "0.0.0.0" : host_port->host;
  std::unique_ptr<HttpServer> http(new HttpServer());
  if (!options.tls_cert_file.empty()) {
    auto tls = std::make_unique<httplib::SSLServer>(
        options.tls_cert_file.c_str(), options.tls_key_file.c_str(),
        options.tls_client_ca_file.empty() ? nullptr : options.tls_client_ca_file.c_str());
    if (!tls->is_valid()) {
      return absl::InvalidArgumentError(
          "--tls-cert / --tls-key / --tls-client-ca: the HTTP face cannot load them");
    }
    http->server_ = std::move(tls);
  } else {
    http->server_ = std::make_unique<httplib::Server>();
  }
  httplib::Server& server = *http->server_;
  size_t threads = static_cast<size_t>(std::max(1, options.threads));
  size_t pending = static_cast<size_t>(std::max(1, options.max_pending_connections));
  server.new_task_queue = [threads, pending] { return new BoundedThreadPool(threads, pending); };
  server.set_payload_max_length(static_cast<size_t>(options.max_body_bytes));
  server.set_keep_alive_max_count(1000);
  server.set_keep_alive_timeout(5);
  server.set_read_timeout(10);
  server.set_write_timeout(options.write_timeout_s);
  http->routes_ = std::make_unique<Routes>(options, service, metrics, std::move(render_metrics));
  http->routes_->Install(server);

  // httplib's default socket options set SO_REUSEPORT (a second server on the
  // same port would silently share its connections: "in use" must be an
  // error) and it listens with a backlog of 5: a burst of connections beyond
  // that was reset without an answer (bench/soak.py saw it). SO_REUSEADDR
  // only, and the kernel's maximum backlog once bound.
  auto listen_fd = std::make_shared<int>(-1);  // the server keeps the callback
  server.set_socket_options([listen_fd](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    *listen_fd = sock;
  });
  if (host_port->port == 0) {
    http->port_ = server.bind_to_any_port(host);
  } else {
    http->port_ = server.bind_to_port(host, host_port->port) ? host_port->port : -1;
  }
  if (http->port_ <= 0) {
    return absl::UnavailableError(
        absl::StrCat("--http-listen=", options.listen, ": cannot listen there (in use?)"));
  }
  if (*listen_fd >= 0 && ::listen(*listen_fd, SOMAXCONN) != 0) {
    return absl::UnavailableError(absl::StrCat("--http-listen=", options.listen,
                                               ": listen: ", std::strerror(errno)));
  }
  http->thread_ = std::thread([&server] { server.listen_after_bind(); });
  for (int i = 0; i < 5000 && !server.is_running(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (!server.is_running()) {
    return absl::UnavailableError(
        absl::StrCat("--http-listen=", options.listen, ": the HTTP server did not start"));
  }
  if (!options.port_file.empty()) {
    std::ofstream file(options.port_file);
    file << http->port_ << "\n";
    if (!file) {
      return absl::UnavailableError(absl::StrCat("--http-port-file: cannot write ", options.port_file));
    }
  }
  return http;
}

HttpServer::~HttpServer() { Stop(); }

void HttpServer::Stop() {
  if (server_ != nullptr) server_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace streamgen
