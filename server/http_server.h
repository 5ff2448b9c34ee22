// The HTTP face: OpenAI's completions and chat completions (SSE or one JSON
// body), vLLM's /tokenize, /detokenize and /v1/models, the seed's
// /query-stream/, /health, /metrics and the playground page at /, over the
// same front door (frontend.h) and the same engine as the gRPC face.
//
// It owns only its wire: routes, JSON bodies, status codes, CORS, header
// limits, SSE framing. The key is checked before routing, so a request without
// a valid one is refused (401) before its body is read; an admitted request is
// admitted once (Frontend::Admit) and carries its Admission through.
//
// The connections, threads and slow-client protection are the transport's
// (http_transport.h), shared with the metrics endpoint. The checks before a
// route are in http_server.cc, the endpoints in http_routes.cc, CORS in
// http_cors.h.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/frontend.h"
#include "server/http_transport.h"
#include "server/metrics.h"

namespace streamgen {

struct HttpOptions {
  std::string listen;                   // HOST:PORT ("" : no HTTP face); port 0 picks a free one
  std::string served_model_name;        // "" : the model directory's name
  std::string tls_cert_file;            // PEM; with tls_key_file: HTTPS
  std::string tls_key_file;             // PEM
  std::string tls_client_ca_file;       // PEM; set: clients must present a cert it signed
  int max_body_bytes = 4 << 20;         // larger request bodies: 413
  int threads = 80;                     // worker threads (open connections being served)
  int max_pending_connections = 64;     // accepted connections waiting for a worker; beyond: 503
  int write_timeout_s = 30;             // a reader that takes nothing for this long is dropped
  // Request headers, checked once httplib has read them (before the key):
  // more fields or more bytes (names + values) than these: 431. httplib 0.11
  // itself refuses one header line over 8192 bytes (400) and a request URI over
  // 8192 bytes (414), but reads any number of lines before answering.
  int max_header_fields = 100;
  int max_header_bytes = 64 << 10;
  int max_json_depth = 64;              // bodies nesting arrays / objects deeper: 400
  // CORS: "" (no CORS headers at all), "*" (any origin), or a comma-separated
  // list of exact origins ("https://app.example.com,http://localhost:5173").
  std::string cors_allow_origin;
  std::string port_file;                // written with the bound port once listening
};

class HttpServer {
 public:
  // Binds and starts serving. `render_metrics` gives /metrics' text. Errors
  // name --http-listen, the TLS flags or --cors-allow-origin.
  // `frontend` (not owned) must outlive the server.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(
      const HttpOptions& options, Frontend* frontend, Metrics* metrics,
      std::function<std::string()> render_metrics);
  ~HttpServer();  // Stop()

  // Stops listening and joins the workers (streams must be over). Idempotent.
  void Stop();
  int port() const;

  class Routes;

 private:
  HttpServer() = default;

  std::unique_ptr<Routes> routes_;           // the handlers
  std::unique_ptr<HttpTransport> transport_;  // connections and threads; serves routes_
};

}  // namespace streamgen
