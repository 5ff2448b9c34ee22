// The HTTP face's checks before a route (request id, header limits, CORS
// preflight, the key), its answers for what httplib refuses itself, its log
// line, and its start-up. The endpoints are in http_routes.cc.
#include "server/http_server.h"

#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iterator>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/status.h"
#include "server/http_routes.h"
#include "server/http_transport.h"
#include "server/logging.h"
#include "server/openai_api.h"
#include "server/openai_encoder.h"  // DumpJson
#include "server/playground_html.h"
#include "server/validation.h"

namespace streamgen {
namespace http_face {

namespace {

constexpr Route kRoutes[] = {
    {"/", "GET"},           {"/health", "GET"},      {"/metrics", "GET"},
    {"/v1/models", "GET"},  {"/v1/models/{id}", "GET"},
    {"/tokenize", "POST"},  {"/detokenize", "POST"},  {"/apply-template", "POST"},
    {"/v1/completions", "POST"}, {"/v1/chat/completions", "POST"},
    {"/query-stream/", "POST"},  {"/query-stream", "POST"}};

}  // namespace

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

std::optional<absl::string_view> Authorization(const httplib::Request& req) {
  if (!req.has_header("Authorization")) return std::nullopt;
  auto it = req.headers.find("Authorization");
  return absl::string_view(it->second);
}

std::string Peer(const httplib::Request& req) {
  bool v6 = req.remote_addr.find(':') != std::string::npos;
  return absl::StrCat(v6 ? "ipv6:[" : "ipv4:", req.remote_addr, v6 ? "]:" : ":", req.remote_port);
}

}  // namespace http_face

namespace {

using http_face::Authorization;
using http_face::FindRoute;
using http_face::Json;
using http_face::NeedsKey;
using http_face::Peer;
using http_face::Route;
using http_face::SendError;
using http_face::SendJson;

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

std::string Peer(const std::string& host, int port) {
  bool v6 = host.find(':') != std::string::npos;
  return absl::StrCat(v6 ? "ipv6:[" : "ipv4:", host, v6 ? "]:" : ":", port);
}

// ---- request heads seen before httplib reads them ----

// The value of header `name` in a request head ("" : none).
std::string HeadHeader(absl::string_view head, absl::string_view name) {
  size_t end = head.find("\n\n");
  size_t crlf = head.find("\r\n\r\n");
  head = head.substr(0, std::min(end, crlf));
  bool first = true;
  for (absl::string_view line : absl::StrSplit(head, '\n')) {
    if (first) {  // the request line
      first = false;
      continue;
    }
    absl::string_view field = absl::StripTrailingAsciiWhitespace(line);
    size_t colon = field.find(':');
    if (colon != absl::string_view::npos && absl::EqualsIgnoreCase(field.substr(0, colon), name)) {
      return std::string(absl::StripAsciiWhitespace(field.substr(colon + 1)));
    }
  }
  return "";
}

}  // namespace

bool HttpServer::Routes::Preflight(const httplib::Request& req, httplib::Response& res) const {
  if (!cors_.on() || req.method != "OPTIONS" || !req.has_header("Origin") ||
      !req.has_header("Access-Control-Request-Method")) {
    return false;
  }
  const Route* route = FindRoute(req.path);
  if (route == nullptr) return false;  // 404 as for any method
  std::string origin = req.get_header_value("Origin");
  if (!cors_.Allows(origin)) {
    SendError(res, MakeHttpError(403, "permission_error",
                                 absl::StrCat("CORS: the origin ", origin,
                                              " is not allowed; --cors-allow-origin lists the "
                                              "origins browsers may call this server from"),
                                 "cors_origin_not_allowed"));
    return true;
  }
  res.status = 204;
  res.set_header("Access-Control-Allow-Methods", absl::StrCat(route->method, ", OPTIONS"));
  std::string allowed = req.has_header("Access-Control-Request-Headers")
                            ? CorsPolicy::AllowHeaders(req.get_header_value("Access-Control-Request-Headers"))
                            : "authorization, content-type";
  if (!allowed.empty()) res.set_header("Access-Control-Allow-Headers", allowed);
  res.set_header("Access-Control-Max-Age", "600");
  return true;
}

void HttpServer::Routes::LogResponse(absl::string_view method, absl::string_view path, int status,
                                     const std::string& peer, const std::string& request_id) const {
  const Route* route = FindRoute(std::string(path));
  metrics_->RecordHttpResponse(route == nullptr ? "other" : route->path, status);
  if (status >= 400) {
    LogEvent(spdlog::level::info, "http",
             {{"method", std::string(method)}, {"path", std::string(path)}, {"status", status},
              {"peer", peer}, {"request_id", request_id}});
  }
}

std::string HttpServer::Routes::AnswerWithoutWorker(int status, absl::string_view head,
                                                    int sock) const {
  HttpError error;
  if (status == 503) {
    error = MakeHttpError(503, "service_unavailable", "too many open connections; retry",
                          "too_many_connections");
    error.retry_after_s = 1;
  } else {
    error = MakeHttpError(408, "invalid_request_error",
                          absl::StrCat("the request head did not arrive in full within ",
                                       HttpTransport::kReadTimeoutS, " s"),
                          "request_timeout");
  }
  absl::string_view line = head.substr(0, head.find('\n'));
  std::vector<absl::string_view> words = absl::StrSplit(line, ' ', absl::SkipEmpty());
  absl::string_view method = words.size() > 0 ? words[0] : "";
  absl::string_view path = words.size() > 1 ? words[1].substr(0, words[1].find('?')) : "";
  std::string id = HeadHeader(head, "X-Request-Id");
  if (id.empty() || id.size() > static_cast<size_t>(kMaxRequestIdBytes) ||
      !std::all_of(id.begin(), id.end(), [](char c) { return c >= 0x20 && c < 0x7f; })) {
    id = MakeRequestId();
  }
  httplib::Headers headers;
  cors_.AddHeaders(HeadHeader(head, "Origin"), headers);
  std::string body = DumpJson(ErrorBody(error)) + "\n";
  std::string out = absl::StrCat("HTTP/1.1 ", status,
                                 status == 503 ? " Service Unavailable" : " Request Timeout",
                                 "\r\nContent-Type: application/json\r\nContent-Length: ",
                                 body.size(), "\r\nConnection: close\r\nX-Request-Id: ", id,
                                 "\r\n");
  if (error.retry_after_s > 0) absl::StrAppend(&out, "Retry-After: ", error.retry_after_s, "\r\n");
  for (const auto& [name, value] : headers) absl::StrAppend(&out, name, ": ", value, "\r\n");
  absl::StrAppend(&out, "\r\n", body);
  int port = 0;
  std::string host = HttpTransport::PeerHost(sock, &port);
  LogResponse(method, path, status, Peer(host, port), id);
  return out;
}

std::string HttpServer::Routes::ServedModelName() const {
  if (!options_.served_model_name.empty()) return options_.served_model_name;
  return frontend_->model_name();
}

bool HttpServer::Routes::ParseBody(const httplib::Request& req, httplib::Response& res,
                                   Json* body) const {
  // No Content-Type is taken as JSON (curl -d without -H); another one is refused.
  if (req.has_header("Content-Type")) {
    std::string header = req.get_header_value("Content-Type");
    std::string media_type = absl::AsciiStrToLower(
        absl::StripAsciiWhitespace(absl::string_view(header).substr(0, header.find(';'))));
    if (media_type != "application/json") {
      SendError(res,
             MakeHttpError(415, "invalid_request_error",
                           absl::StrCat("Content-Type must be application/json, got ", header)));
      return false;
    }
  }
  if (JsonDepth(req.body, options_.max_json_depth) > options_.max_json_depth) {
    SendError(res,
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
    SendError(res,
           MakeHttpError(400, "invalid_request_error",
                         absl::StrCat("the body is not valid JSON: ", error.what())));
    return false;
  }
  return true;
}

std::optional<HttpError> HttpServer::Routes::KeyError(const httplib::Request& req) const {
  // A known path asked with another method gets its 405 (as before the key).
  const Route* route = FindRoute(req.path);
  if (route == nullptr || !NeedsKey(*route) || req.method != route->method) return std::nullopt;
  absl::Status key = frontend_->CheckKey(Authorization(req));
  if (key.ok()) return std::nullopt;
  return ToHttpError(key);
}

std::optional<Frontend::Admission> HttpServer::Routes::Admit(const httplib::Request& req,
                                                             httplib::Response& res) const {
  absl::StatusOr<Frontend::Admission> admission = frontend_->Admit(Authorization(req));
  if (admission.ok()) return *admission;
  SendError(res, ToHttpError(admission.status()));
  return std::nullopt;
}

void HttpServer::Routes::Install(httplib::Server& server) {
  server.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    // Before the route, the key and the body (which is not read yet).
    std::string id = req.get_header_value("X-Request-Id");
    bool id_too_long = id.size() > static_cast<size_t>(kMaxRequestIdBytes);
    res.set_header("X-Request-Id", id.empty() || id_too_long ? MakeRequestId() : id);
    std::optional<HttpError> refused;
    bool keep_alive = false;  // the connection may carry another request
    if (HttpTransport::CurrentConnectionOverloaded()) {
      res.set_header("Retry-After", "1");
      refused = MakeHttpError(503, "service_unavailable", "too many open connections; retry",
                              "too_many_connections");
    } else if ((refused = HeaderLimitError(req, options_))) {
    } else if (id_too_long) {
      refused = MakeHttpError(400, "invalid_request_error",
                              absl::StrCat("X-Request-Id is ", id.size(), " bytes; at most ",
                                           kMaxRequestIdBytes, " are allowed"));
    } else if (Preflight(req, res)) {
      // Before the key: browsers send none with a preflight.
      return httplib::Server::HandlerResponse::Handled;
    } else if ((refused = KeyError(req))) {
      // The key before the body, as on every face: a request without one is
      // refused before a byte of its body is read, let alone parsed. A
      // request without a body leaves nothing unread.
      std::string length = req.get_header_value("Content-Length");
      keep_alive = !req.has_header("Transfer-Encoding") && (length.empty() || length == "0");
    } else {
      return httplib::Server::HandlerResponse::Unhandled;
    }
    // The body (if any) is left unread: this connection cannot carry another request.
    if (!keep_alive) res.set_header("Connection", "close");
    SendError(res, *refused);
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
  server.Post("/apply-template", [this](const httplib::Request& req, httplib::Response& res) {
    ApplyTemplate(req, res);
  });
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
      absl::Status key = frontend_->CheckKey(Authorization(req));
      if (route != nullptr && NeedsKey(*route) && !key.ok()) {
        SendError(res, ToHttpError(key));
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
  // Every response httplib writes (routed, refused before routing, or its
  // own 400 / 413 / 414), before its headers are: the CORS headers, streams
  // included.
  server.set_post_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    cors_.AddHeaders(req.get_header_value("Origin"), res.headers);
    // httplib gives every empty response "Content-Length: 0"; a 204 (a
    // preflight's) has no body and must not say so.
    if (res.status == 204) res.headers.erase("Content-Length");
  });
  server.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    // Written: a response that says "Connection: close" (a refusal that left
    // the body unread) ends the connection, where httplib would wait for
    // another request on it (and read the body as one).
    int sock = HttpTransport::CurrentSocket();
    if (res.get_header_value("Connection") == "close" && sock >= 0) {
      shutdown(sock, SHUT_RD);
    }
    LogResponse(req.method, req.path, res.status, Peer(req), res.get_header_value("X-Request-Id"));
  });
}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(
    const HttpOptions& options, Frontend* frontend, Metrics* metrics,
    std::function<std::string()> render_metrics) {
  absl::StatusOr<CorsPolicy> cors = CorsPolicy::Parse(options.cors_allow_origin);
  if (!cors.ok()) return cors.status();
  HttpTransportOptions transport;
  transport.listen = options.listen;
  transport.listen_flag = "http-listen";
  transport.tls_cert_file = options.tls_cert_file;
  transport.tls_key_file = options.tls_key_file;
  transport.tls_client_ca_file = options.tls_client_ca_file;
  transport.max_body_bytes = options.max_body_bytes;
  transport.threads = options.threads;
  transport.max_pending_connections = options.max_pending_connections;
  transport.write_timeout_s = options.write_timeout_s;
  std::unique_ptr<HttpServer> http(new HttpServer());
  SG_ASSIGN_OR_RETURN(http->transport_, HttpTransport::Create(std::move(transport)));
  http->routes_ = std::make_unique<Routes>(options, std::move(*cors), frontend, metrics,
                                           std::move(render_metrics));
  http->routes_->Install(http->transport_->server());
  const Routes* routes = http->routes_.get();
  SG_RETURN_IF_ERROR(http->transport_->Start([routes](int status, absl::string_view head, int sock) {
    return routes->AnswerWithoutWorker(status, head, sock);
  }));
  if (!options.port_file.empty()) {
    std::ofstream file(options.port_file);
    file << http->port() << "\n";
    if (!file) {
      return absl::UnavailableError(absl::StrCat("--http-port-file: cannot write ", options.port_file));
    }
  }
  return http;
}

HttpServer::~HttpServer() { Stop(); }

int HttpServer::port() const { return transport_->port(); }

void HttpServer::Stop() {
  if (transport_ != nullptr) transport_->Stop();
}

}  // namespace streamgen
