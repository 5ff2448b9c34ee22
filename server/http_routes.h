// The HTTP face's internals, shared by http_server.cc (the checks before a
// route, httplib's errors, start-up) and http_routes.cc (the endpoints).
// Included by those two files only.
#pragma once

// Debian's libcpp-httplib.so is built with OpenSSL, zlib and brotli; its
// pkg-config Cflags define the same CPPHTTPLIB_* macros for this header (the
// class layouts depend on them).
#include <httplib.h>

#include <cstdint>
#include <ctime>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"
#include "server/frontend.h"
#include "server/http_call.h"
#include "server/http_cors.h"
#include "server/http_server.h"
#include "server/metrics.h"
#include "server/openai_api.h"

namespace streamgen {
namespace http_face {

using Json = nlohmann::ordered_json;
using OJson = nlohmann::ordered_json;

// A route the face knows, with its method (the rest: 404; a known route with
// another method: 405).
struct Route {
  const char* path;
  const char* method;
};
// The route of `path` (GET /v1/models/{id} for every /v1/models/...), or null.
const Route* FindRoute(const std::string& path);
// With --api-key-file, every route needs the key except the probes' /health,
// /metrics and the playground page.
bool NeedsKey(const Route& route);

// GET /v1/models/{id}: the id is the rest of the path, slashes included
// ("meta-llama/Llama-2-7b-chat-hf" is a served name like any other).
constexpr absl::string_view kModelPrefix = "/v1/models/";

void SendJson(httplib::Response& res, int status, const OJson& body);
// The error's JSON body, with Retry-After / WWW-Authenticate where it has them.
void SendError(httplib::Response& res, const HttpError& error);
// The Authorization header's value (nullopt: absent).
std::optional<absl::string_view> Authorization(const httplib::Request& req);
// The client's address as gRPC writes a peer ("ipv4:127.0.0.1:5000").
std::string Peer(const httplib::Request& req);

}  // namespace http_face

// The HTTP face's handlers. Every method runs on an HTTP worker thread, except
// AnswerWithoutWorker. The checks before a route and httplib's own errors live
// in http_server.cc; the endpoints in http_routes.cc.
class HttpServer::Routes {
 public:
  Routes(const HttpOptions& options, CorsPolicy cors, Frontend* frontend, Metrics* metrics,
         std::function<std::string()> render_metrics)
      : options_(options),
        cors_(std::move(cors)),
        frontend_(frontend),
        metrics_(metrics),
        render_metrics_(std::move(render_metrics)),
        created_(static_cast<int64_t>(std::time(nullptr))) {}

  void Install(httplib::Server& server);

  // The response the accepting thread writes itself to a connection no
  // worker takes (on the accepting thread): 503 when the workers' queue and
  // the refuser's are full, 408 when a head did not arrive in full in time.
  // `head`: what had arrived of the request. Counted and logged as httplib's.
  std::string AnswerWithoutWorker(int status, absl::string_view head, int sock) const;

 private:
  // Before routing, for a route that needs the key: the key's refusal, or
  // nullopt (the body is not read yet).
  std::optional<HttpError> KeyError(const httplib::Request& req) const;
  // The API key and the loaded model (Frontend::Admit, once per request);
  // nullopt after answering the refusal.
  std::optional<Frontend::Admission> Admit(const httplib::Request& req,
                                           httplib::Response& res) const;
  // The body as a JSON value, after the content type and nesting checks;
  // false after answering the error. Called after Admit.
  bool ParseBody(const httplib::Request& req, httplib::Response& res, http_face::Json* body) const;
  std::string ServedModelName() const;

  void Health(httplib::Response& res) const;
  void Models(const httplib::Request& req, httplib::Response& res) const;
  // GET /v1/models/{id}: the served model's object, else 404 model_not_found.
  void Model(const httplib::Request& req, httplib::Response& res) const;
  // The served model as an element of /v1/models' data.
  http_face::OJson ModelObject(const Frontend::Admission& admission) const;
  void Tokenize(const httplib::Request& req, httplib::Response& res) const;
  // llama.cpp's POST /apply-template: {"prompt": the chat template's text}.
  void ApplyTemplate(const httplib::Request& req, httplib::Response& res) const;
  void Detokenize(const httplib::Request& req, httplib::Response& res) const;
  void Completions(OpenAiRoute route, const httplib::Request& req, httplib::Response& res);
  void QueryStream(const httplib::Request& req, httplib::Response& res);

  // Validates `request` with the Frontend's checks (as every face) and hands
  // it to the engine. Returns the call, or null after answering the refusal.
  // `max_tokens_field`: the body's name for max_new_tokens (messages and params).
  std::shared_ptr<HttpCall> StartGeneration(const Frontend::Admission& admission,
                                            const httplib::Request& req, httplib::Response& res,
                                            v1::GenerateRequest request, OpenAiRoute route,
                                            absl::string_view max_tokens_field,
                                            int64_t* prompt_tokens = nullptr,
                                            bool engine_stops = true);

  // Answers a CORS preflight (OPTIONS with Origin and
  // Access-Control-Request-Method) to a known route; false for any other request.
  bool Preflight(const httplib::Request& req, httplib::Response& res) const;
  void LogResponse(absl::string_view method, absl::string_view path, int status,
                   const std::string& peer, const std::string& request_id) const;

  const HttpOptions options_;
  const CorsPolicy cors_;
  Frontend* const frontend_;
  Metrics* const metrics_;
  const std::function<std::string()> render_metrics_;
  const int64_t created_;
};

}  // namespace streamgen
