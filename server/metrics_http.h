// A tiny HTTP endpoint for Prometheus: GET /metrics (and GET /healthz), on
// the same HTTP transport as the HTTP face (http_transport.h): its own
// listener and a few worker threads, with the same protection from slow and
// too many clients.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/http_transport.h"

namespace streamgen {

class MetricsHttpServer {
 public:
  // Binds `address` ("host:port", port 0 for any free port) and starts serving
  // `render()` at /metrics. /healthz answers 200 "ok" while `healthy()` is
  // true, 503 otherwise. INVALID_ARGUMENT / UNAVAILABLE naming --metrics-listen.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(
      const std::string& address, std::function<std::string()> render,
      std::function<bool()> healthy);
  ~MetricsHttpServer();  // Stop()

  // Thread-safe, idempotent.
  void Stop();
  int port() const { return transport_->port(); }

 private:
  MetricsHttpServer() = default;

  std::unique_ptr<HttpTransport> transport_;
};

}  // namespace streamgen
