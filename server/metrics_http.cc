#include "server/metrics_http.h"

#include <httplib.h>

#include "common/status.h"

namespace streamgen {
namespace {

// Scrapers and probes: a few connections at a time.
constexpr int kThreads = 2;
constexpr int kPendingConnections = 16;

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(
    const std::string& address, std::function<std::string()> render,
    std::function<bool()> healthy) {
  HttpTransportOptions options;
  options.listen = address;
  options.listen_flag = "metrics-listen";
  options.max_body_bytes = 64 << 10;  // GET only
  options.threads = kThreads;
  options.max_pending_connections = kPendingConnections;
  std::unique_ptr<MetricsHttpServer> metrics(new MetricsHttpServer());
  SG_ASSIGN_OR_RETURN(metrics->transport_, HttpTransport::Create(std::move(options)));
  httplib::Server& server = metrics->transport_->server();
  server.set_pre_routing_handler([](const httplib::Request&, httplib::Response& response) {
    if (!HttpTransport::CurrentConnectionOverloaded()) {
      return httplib::Server::HandlerResponse::Unhandled;
    }
    response.status = 503;
    response.set_header("Retry-After", "1");
    response.set_header("Connection", "close");
    response.set_content("too many open connections; retry\n", "text/plain");
    return httplib::Server::HandlerResponse::Handled;
  });
  server.Get("/metrics", [render](const httplib::Request&, httplib::Response& response) {
    response.set_content(render(), "text/plain; version=0.0.4; charset=utf-8");
  });
  server.Get("/healthz", [healthy](const httplib::Request&, httplib::Response& response) {
    bool ok = healthy();
    response.status = ok ? 200 : 503;
    response.set_content(ok ? "ok\n" : "not serving\n", "text/plain");
  });
  SG_RETURN_IF_ERROR(metrics->transport_->Start(nullptr));
  return metrics;
}

MetricsHttpServer::~MetricsHttpServer() { Stop(); }

void MetricsHttpServer::Stop() {
  if (transport_ != nullptr) transport_->Stop();
}

}  // namespace streamgen
