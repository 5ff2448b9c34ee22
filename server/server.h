// streamgen-server's pieces put together: the front door (Frontend), its two
// faces (the gRPC server with TextGeneration, health and reflection; the HTTP
// face), the engine and the metrics endpoint, with the start-up and shutdown
// order the service promises:
//   Start()      listening; health NOT_SERVING; TextGeneration answers UNAVAILABLE
//   LoadModel()  engine loaded; health SERVING
//   Drain(t)     health NOT_SERVING, new streams refused, in-flight streams get
//                up to t, the rest end with CANCELLED + UNAVAILABLE; then stop.
// main.cc runs exactly this; the tests run it in process.
#pragma once

#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/engine.h"
#include "server/frontend.h"
#include "server/http_server.h"
#include "server/metrics.h"
#include "server/metrics_http.h"
#include "server/service.h"

namespace streamgen {

struct ServerOptions {
  std::string listen = "0.0.0.0:50051";  // gRPC address; port 0 picks a free one
  std::string metrics_listen;            // "" : no metrics endpoint
  HttpOptions http;                      // the HTTP face; http.listen "" : off (its TLS
                                         // files and body limit come from the fields here)
  EngineOptions engine;                  // model_dir, device, dtype, limits
  FrontendOptions frontend;              // keys, chat template, limits (both faces)
  std::string tls_cert_file;             // PEM; with tls_key_file switches TLS on
  std::string tls_key_file;              // PEM
  std::string tls_client_ca_file;        // PEM; set: clients must present a cert it signed
  absl::Duration keepalive_time = absl::Seconds(60);     // server pings an idle transport
  absl::Duration keepalive_timeout = absl::Seconds(20);  // ...and drops it without an answer
  absl::Duration min_client_ping_interval = absl::Seconds(10);  // clients may ping this often
  absl::Duration max_connection_age = absl::Minutes(30);  // GOAWAY after this (rebalancing)
  absl::Duration max_connection_age_grace = absl::Minutes(10);  // streams may finish meanwhile
  absl::Duration max_connection_idle = absl::ZeroDuration();    // 0: never closed for idleness
  std::string port_file;                 // written with the bound port once listening
};

class StreamgenServer {
 public:
  // Listening, health NOT_SERVING, no model yet. Errors name the flag.
  static absl::StatusOr<std::unique_ptr<StreamgenServer>> Start(ServerOptions options);
  ~StreamgenServer();  // Shutdown()

  // Loads the model, then health SERVING.
  absl::Status LoadModel();

  int port() const { return port_; }
  int metrics_port() const { return metrics_http_ ? metrics_http_->port() : 0; }
  int http_port() const { return http_ ? http_->port() : 0; }
  Engine* engine() { return engine_.get(); }
  Frontend* frontend() { return frontend_.get(); }
  Metrics* metrics() { return &metrics_; }
  std::string RenderMetrics() const;

  // The steps of Drain(), for tests: health NOT_SERVING and new streams refused.
  void BeginDrain();
  // Ends the streams in progress with finish_reason CANCELLED, then `status`.
  void AbortStreams(const absl::Status& status);
  bool WaitForIdle(absl::Duration timeout);

  // BeginDrain; wait up to `timeout` for the streams; AbortStreams(UNAVAILABLE)
  // for the rest; Shutdown.
  void Drain(absl::Duration timeout);
  // Stops the gRPC server, the engine, the HTTP face and the metrics endpoint. Idempotent.
  void Shutdown();

 private:
  explicit StreamgenServer(ServerOptions options);
  absl::Status BuildGrpcServer();
  void SetServing(bool serving);

  ServerOptions options_;
  Metrics metrics_;
  std::unique_ptr<Frontend> frontend_;                // both faces go through it
  std::unique_ptr<TextGenerationService> service_;    // the gRPC face
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<MetricsHttpServer> metrics_http_;
  std::unique_ptr<HttpServer> http_;                  // the HTTP face
  std::atomic<bool> serving_{false};
  int port_ = 0;
  bool shut_down_ = false;
};

// The TLS or insecure credentials the options ask for (errors name the flag
// and the file).
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const ServerOptions& options);

}  // namespace streamgen
