#include "server/metrics_http.h"

#include <httplib.h>

#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/cli_flags.h"

namespace streamgen {

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(
    const std::string& address, std::function<std::string()> render,
    std::function<bool()> healthy) {
  absl::StatusOr<HostPort> host_port = ParseHostPort(address, "metrics-listen");
  if (!host_port.ok()) return host_port.status();
  std::string host = host_port->host.empty() ? "0.0.0.0" : host_port->host;
  std::unique_ptr<MetricsHttpServer> metrics(new MetricsHttpServer());
  metrics->server_ = std::make_unique<httplib::Server>();
  httplib::Server& server = *metrics->server_;
  server.Get("/metrics", [render](const httplib::Request&, httplib::Response& response) {
    response.set_content(render(), "text/plain; version=0.0.4; charset=utf-8");
  });
  server.Get("/healthz", [healthy](const httplib::Request&, httplib::Response& response) {
    bool ok = healthy();
    response.status = ok ? 200 : 503;
    response.set_content(ok ? "ok\n" : "not serving\n", "text/plain");
  });
  if (host_port->port == 0) {
    metrics->port_ = server.bind_to_any_port(host);
  } else {
    metrics->port_ = server.bind_to_port(host, host_port->port) ? host_port->port : -1;
  }
  if (metrics->port_ <= 0) {
    return absl::UnavailableError(
        absl::StrCat("--metrics-listen=", address, ": cannot listen there (in use?)"));
  }
  metrics->thread_ = std::thread([&server] { server.listen_after_bind(); });
  // stop() before the loop runs would be lost: wait until it runs.
  for (int i = 0; i < 5000 && !server.is_running(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (!server.is_running()) {
    return absl::UnavailableError(absl::StrCat("--metrics-listen=", address,
                                               ": the HTTP server did not start"));
  }
  return metrics;
}

MetricsHttpServer::~MetricsHttpServer() { Stop(); }

void MetricsHttpServer::Stop() {
  if (server_ != nullptr) server_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace streamgen
