// The HTTP face: OpenAI's completions and chat completions (SSE or one JSON
// body), vLLM's /tokenize, /detokenize and /v1/models, the seed's
// /query-stream/, /health, /metrics and the playground page at /, over the
// same TextGenerationService checks and the same engine as the gRPC face.
//
// cpp-httplib (Debian's libcpp-httplib 0.11) on a bounded pool of worker
// threads: one thread per open connection while it is being served, so a
// stream costs one worker thread (blocked in poll()/write(), a few tens of KiB
// of touched stack) for its whole life. The pool has max_batch + max_queue +
// 16 threads by default, so every stream the engine can hold is carried;
// connections beyond the pool wait in a bounded queue, and beyond that are
// answered 503 at once.
//
// The face accepts connections itself (not httplib's accept loop): one thread
// accepts, and waits for each connection's request head to arrive in full
// (looking at it with MSG_PEEK, never reading it, for many connections at once
// with epoll) before a worker takes the connection (over TLS: the client's
// first record). A client that trickles its head costs a descriptor and a few
// bytes, never a worker or the accepting thread; a head must arrive within the
// read timeout (10 s).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "server/metrics.h"
#include "server/service.h"

namespace httplib {
class Server;
}

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
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(
      const HttpOptions& options, TextGenerationService* service, Metrics* metrics,
      std::function<std::string()> render_metrics);
  ~HttpServer();  // Stop()

  // Stops listening and joins the workers (streams must be over). Idempotent.
  void Stop();
  int port() const { return port_; }

  class Routes;
  class ConnectionPool;
  class Acceptor;

 private:
  HttpServer() = default;

  std::unique_ptr<Routes> routes_;
  std::unique_ptr<httplib::Server> server_;
  std::unique_ptr<ConnectionPool> workers_;  // serve connections
  std::unique_ptr<ConnectionPool> refuser_;  // answers 503 when the workers' queue is full
  std::unique_ptr<Acceptor> acceptor_;       // accepts; waits for request heads
  int port_ = 0;
};

}  // namespace streamgen
