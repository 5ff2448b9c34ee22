#include "server/server.h"

#include "common/cpu_quota.h"

#include <fstream>
#include <sstream>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "grpc/health/v1/health.pb.h"
#include "server/logging.h"

namespace streamgen {
namespace {

constexpr char kServiceName[] = "streamgen.v1.TextGeneration";

absl::StatusOr<std::string> ReadPem(const std::string& path, absl::string_view flag) {
  std::ifstream file(path);
  if (!file) return absl::NotFoundError(absl::StrCat("--", flag, ": cannot read ", path));
  std::stringstream text;
  text << file.rdbuf();
  if (text.str().find("-----BEGIN") == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag, ": ", path, " is not PEM"));
  }
  return text.str();
}

int Millis(absl::Duration d) {
  return static_cast<int>(std::min<int64_t>(absl::ToInt64Milliseconds(d), INT32_MAX));
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const ServerOptions& options) {
  bool has_cert = !options.tls_cert_file.empty(), has_key = !options.tls_key_file.empty();
  if (has_cert != has_key) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key must be given together");
  }
  if (!has_cert) {
    if (!options.tls_client_ca_file.empty()) {
      return absl::InvalidArgumentError("--tls-client-ca needs --tls-cert and --tls-key");
    }
    return grpc::InsecureServerCredentials();
  }
  grpc::SslServerCredentialsOptions ssl;
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  SG_ASSIGN_OR_RETURN(pair.cert_chain, ReadPem(options.tls_cert_file, "tls-cert"));
  SG_ASSIGN_OR_RETURN(pair.private_key, ReadPem(options.tls_key_file, "tls-key"));
  ssl.pem_key_cert_pairs.push_back(std::move(pair));
  if (!options.tls_client_ca_file.empty()) {
    SG_ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadPem(options.tls_client_ca_file, "tls-client-ca"));
    ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(ssl);
}

StreamgenServer::StreamgenServer(ServerOptions options) : options_(std::move(options)) {}

absl::StatusOr<std::unique_ptr<StreamgenServer>> StreamgenServer::Start(ServerOptions options) {
  std::unique_ptr<StreamgenServer> server(new StreamgenServer(std::move(options)));
  SG_RETURN_IF_ERROR(server->BuildGrpcServer());
  if (!server->options_.metrics_listen.empty()) {
    StreamgenServer* raw = server.get();
    SG_ASSIGN_OR_RETURN(server->metrics_http_,
                        MetricsHttpServer::Start(
                            server->options_.metrics_listen, [raw] { return raw->RenderMetrics(); },
                            [raw] { return raw->serving_.load(); }));
  }
  if (!server->options_.http.listen.empty()) {
    HttpOptions http = server->options_.http;
    http.tls_cert_file = server->options_.tls_cert_file;
    http.tls_key_file = server->options_.tls_key_file;
    http.tls_client_ca_file = server->options_.tls_client_ca_file;
    http.max_body_bytes = server->options_.frontend.max_receive_message_bytes;
    StreamgenServer* raw = server.get();
    SG_ASSIGN_OR_RETURN(server->http_,
                        HttpServer::Start(http, server->frontend_.get(), &server->metrics_,
                                          [raw] { return raw->RenderMetrics(); }));
  }
  if (!server->options_.port_file.empty()) {
    std::ofstream file(server->options_.port_file);
    file << server->port_ << "\n";
    if (!file) {
      return absl::UnavailableError(
          absl::StrCat("--port-file: cannot write ", server->options_.port_file));
    }
  }
  LogEvent(spdlog::level::info, "listening",
           {{"address", server->options_.listen}, {"port", server->port_},
            {"metrics_port", server->metrics_port()}, {"http_port", server->http_port()},
            {"tls", !server->options_.tls_cert_file.empty()},
            {"api_keys", server->options_.frontend.api_keys.size()}});
  return server;
}

absl::Status StreamgenServer::BuildGrpcServer() {
  SG_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials,
                      MakeServerCredentials(options_));
  frontend_ = std::make_unique<Frontend>(options_.frontend, &metrics_);
  service_ = std::make_unique<TextGenerationService>(frontend_.get());
  // grpc's health service is built on upb; linking the protobuf messages (a
  // call the linker cannot drop) puts grpc.health.v1 in the generated pool,
  // so reflection can describe it (grpcurl ... grpc.health.v1.Health/Check).
  if (grpc::health::v1::HealthCheckRequest::descriptor() == nullptr) {
    return absl::InternalError("grpc.health.v1 descriptors are missing");
  }
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options_.listen, credentials, &port_);
  builder.RegisterService(service_.get());
  builder.SetMaxReceiveMessageSize(options_.frontend.max_receive_message_bytes);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, Millis(options_.keepalive_time));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, Millis(options_.keepalive_timeout));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                             Millis(options_.min_client_ping_interval));
  if (options_.max_connection_age > absl::ZeroDuration()) {
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS, Millis(options_.max_connection_age));
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS,
                               Millis(options_.max_connection_age_grace));
  }
  if (options_.max_connection_idle > absl::ZeroDuration()) {
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS,
                               Millis(options_.max_connection_idle));
  }
  server_ = builder.BuildAndStart();
  if (server_ == nullptr || port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("--listen=", options_.listen, ": cannot listen there (in use, or not HOST:PORT)"));
  }
  SetServing(false);
  return absl::OkStatus();
}

void StreamgenServer::SetServing(bool serving) {
  serving_ = serving;
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  if (health == nullptr) return;
  health->SetServingStatus(serving);
  health->SetServingStatus(kServiceName, serving);
}

absl::Status StreamgenServer::LoadModel() {
  absl::Time start = absl::Now();
  LogEvent(spdlog::level::info, "loading model",
           {{"model", options_.engine.model_dir}, {"device", options_.engine.device}});
  SG_ASSIGN_OR_RETURN(engine_, Engine::Create(options_.engine));
  SG_RETURN_IF_ERROR(frontend_->SetEngine(engine_.get()));
  metrics_.SetModelLoaded(true);
  SetServing(true);
  const ModelInfo& info = engine_->model_info();
  metrics_.SetCpuKernelIsa(info.cpu_isa);
  LogEvent(spdlog::level::info, "serving",
           {{"model", info.name}, {"architecture", info.architecture},
            {"context_length", info.context_length}, {"dtype", info.dtype},
            {"quantization", info.quantization}, {"device", info.device}, {"cpu_isa", info.cpu_isa},
            {"threads", info.threads}, {"default_threads", DescribeDefaultThreads()},
            {"chat_template", frontend_->chat_family()},
            {"load_s", absl::ToDoubleSeconds(absl::Now() - start)}});
  return absl::OkStatus();
}

std::string StreamgenServer::RenderMetrics() const {
  // serving_ first: scrapes run on the metrics and HTTP threads from Start()
  // on, while LoadModel() assigns engine_ on another thread; serving_ turns
  // true only after that assignment, so engine_ is read only once it is set
  // (reading it first was a data race, found by TSan).
  if (!serving_ || engine_ == nullptr) return metrics_.Render(nullptr);
  EngineStats stats = engine_->stats();
  return metrics_.Render(&stats);
}

void StreamgenServer::BeginDrain() {
  SetServing(false);
  metrics_.SetDraining(true);
  frontend_->BeginDrain();
}

void StreamgenServer::AbortStreams(const absl::Status& status) {
  frontend_->AbortStreams(status);
}

bool StreamgenServer::WaitForIdle(absl::Duration timeout) {
  return frontend_->WaitForIdle(timeout);
}

void StreamgenServer::Drain(absl::Duration timeout) {
  LogEvent(spdlog::level::info, "draining",
           {{"streams", frontend_->active_streams()},
            {"timeout_s", absl::ToDoubleSeconds(timeout)}});
  BeginDrain();
  if (!WaitForIdle(timeout)) {
    LogEvent(spdlog::level::warn, "drain timeout: ending the streams left",
             {{"streams", frontend_->active_streams()}});
    AbortStreams(absl::UnavailableError(
        "the server is shutting down (drain timeout); retry on another replica"));
    WaitForIdle(absl::Seconds(10));
  }
  Shutdown();
}

void StreamgenServer::Shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  serving_ = false;
  if (server_ != nullptr) {
    if (auto* health = server_->GetHealthCheckService()) health->Shutdown();
    // Streams still open get cancelled after this deadline (their OnCancel
    // cancels the engine request).
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  }
  if (engine_ != nullptr) engine_->Shutdown();
  // Sinks the engine dropped have retired their streams by now.
  if (frontend_ != nullptr) frontend_->WaitForIdle(absl::Seconds(5));
  // After the engine: every HTTP stream has had its last event and returns.
  if (http_ != nullptr) http_->Stop();
  if (metrics_http_ != nullptr) metrics_http_->Stop();
}

StreamgenServer::~StreamgenServer() {
  Shutdown();
  // The gRPC server goes first: it may still hold reactors that use the
  // service and the front door.
  server_.reset();
  engine_.reset();
}

}  // namespace streamgen
