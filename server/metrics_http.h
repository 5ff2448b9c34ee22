// A tiny HTTP endpoint for Prometheus: GET /metrics (and GET /healthz).
// Runs cpp-httplib's server on its own threads.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace httplib {
class Server;
}

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
  int port() const { return port_; }

 private:
  MetricsHttpServer() = default;

  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace streamgen
