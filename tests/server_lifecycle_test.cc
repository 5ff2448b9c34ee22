// The server's life cycle with a held engine (EngineOptions::start_paused and
// Engine::Step), so nothing depends on timing: health transitions, client
// cancel and deadlines freeing the engine's sequence, draining, the metrics
// endpoint, TLS and mutual TLS.
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <thread>

#include <httplib.h>

#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/server_test_util.h"

namespace streamgen {
namespace {

using ::grpc::health::v1::Health;
using ::grpc::health::v1::HealthCheckRequest;
using ::grpc::health::v1::HealthCheckResponse;
using ::testing::HasSubstr;
using test::Collect;
using test::Connect;
using test::Generate;
using test::PromptRequest;
using test::StartServer;
using test::StreamResult;
using test::TestOptions;
using test::WaitFor;

HealthCheckResponse::ServingStatus HealthOf(const std::shared_ptr<grpc::Channel>& channel,
                                            const std::string& service) {
  HealthCheckRequest request;
  request.set_service(service);
  HealthCheckResponse response;
  grpc::ClientContext context;
  grpc::Status status = Health::NewStub(channel)->Check(&context, request, &response);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return response.status();
}

ServerOptions PausedOptions() {
  ServerOptions options = TestOptions();
  options.engine.start_paused = true;
  return options;
}

TEST(LifecycleTest, HealthIsNotServingUntilTheModelLoadsAndWhileDraining) {
  std::unique_ptr<StreamgenServer> server = StartServer(TestOptions(), /*load=*/false);
  ASSERT_NE(server, nullptr);
  auto channel = Connect(server->port());
  EXPECT_EQ(HealthOf(channel, ""), HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(HealthOf(channel, "streamgen.v1.TextGeneration"), HealthCheckResponse::NOT_SERVING);
  auto stub = v1::TextGeneration::NewStub(channel);
  StreamResult early = Generate(stub.get(), PromptRequest("a", 2));
  EXPECT_EQ(early.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(early.status.error_message(), HasSubstr("still loading"));

  ASSERT_TRUE(server->LoadModel().ok());
  EXPECT_EQ(HealthOf(channel, ""), HealthCheckResponse::SERVING);
  EXPECT_EQ(HealthOf(channel, "streamgen.v1.TextGeneration"), HealthCheckResponse::SERVING);
  EXPECT_TRUE(Generate(stub.get(), PromptRequest("a", 2)).status.ok());

  server->BeginDrain();
  EXPECT_EQ(HealthOf(channel, ""), HealthCheckResponse::NOT_SERVING);
  StreamResult late = Generate(stub.get(), PromptRequest("a", 2));
  EXPECT_EQ(late.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(late.status.error_message(), HasSubstr("shutting down"));
}

TEST(LifecycleTest, CancelMidStreamFreesTheSequence) {
  std::unique_ptr<StreamgenServer> server = StartServer(PausedOptions());
  ASSERT_NE(server, nullptr);
  Engine* engine = server->engine();
  auto stub = v1::TextGeneration::NewStub(Connect(server->port()));
  grpc::ClientContext context;
  auto reader = stub->Generate(&context, PromptRequest("Once upon a time", 200));
  ASSERT_TRUE(WaitFor([&] { return engine->stats().waiting == 1; }));
  engine->Step(1);  // admit, prefill, first token(s)
  v1::GenerateResponse first;
  ASSERT_TRUE(reader->Read(&first));
  ASSERT_TRUE(WaitFor([&] { return engine->stats().running == 1; }));

  context.TryCancel();
  ASSERT_TRUE(WaitFor([&] { return server->metrics()->engine_cancels() == 1; }));
  engine->Step(1);  // the engine honours the cancel within one iteration
  ASSERT_TRUE(WaitFor([&] {
    EngineStats stats = engine->stats();
    return stats.cancelled == 1 && stats.running == 0;
  }));
  EXPECT_LT(engine->stats().generated_tokens, 200);
  v1::GenerateResponse rest;
  while (reader->Read(&rest)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  ASSERT_TRUE(WaitFor([&] { return server->frontend()->active_streams() == 0; }));

  engine->Resume();
  StreamResult next = Generate(stub.get(), PromptRequest("next", 5));
  ASSERT_TRUE(next.status.ok()) << next.status.error_message();
  EXPECT_EQ(next.last().usage().completion_tokens(), 5u);
  EXPECT_THAT(server->RenderMetrics(), HasSubstr("streamgen_cancel_requests_total 1\n"));
  EXPECT_THAT(server->RenderMetrics(), HasSubstr("streamgen_engine_cancelled_total 1\n"));
}

TEST(LifecycleTest, DeadlineWhileQueuedFreesTheRequest) {
  std::unique_ptr<StreamgenServer> server = StartServer(PausedOptions());
  ASSERT_NE(server, nullptr);
  Engine* engine = server->engine();
  auto stub = v1::TextGeneration::NewStub(Connect(server->port()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(200));
  auto reader = stub->Generate(&context, PromptRequest("Once upon a time", 50));
  // The engine is held: the deadline passes while the request waits.
  StreamResult result = Collect(reader.get());
  EXPECT_EQ(result.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_TRUE(result.messages.empty());
  ASSERT_TRUE(WaitFor([&] { return server->metrics()->engine_cancels() == 1; }));
  engine->Step(1);
  ASSERT_TRUE(WaitFor([&] {
    EngineStats stats = engine->stats();
    return stats.cancelled == 1 && stats.waiting == 0 && stats.running == 0;
  }));
  EXPECT_EQ(engine->stats().generated_tokens, 0);
  engine->Resume();
  EXPECT_TRUE(Generate(stub.get(), PromptRequest("next", 3)).status.ok());
}

TEST(LifecycleTest, DeadlineMidStreamFreesTheSequence) {
  std::unique_ptr<StreamgenServer> server = StartServer(PausedOptions());
  ASSERT_NE(server, nullptr);
  Engine* engine = server->engine();
  auto stub = v1::TextGeneration::NewStub(Connect(server->port()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(3));
  auto reader = stub->Generate(&context, PromptRequest("Once upon a time", 200));
  ASSERT_TRUE(WaitFor([&] { return engine->stats().waiting == 1; }));
  engine->Step(1);
  v1::GenerateResponse first;
  ASSERT_TRUE(reader->Read(&first));
  // The engine stays held until the deadline has passed.
  StreamResult rest = Collect(reader.get());
  EXPECT_EQ(rest.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  ASSERT_TRUE(WaitFor([&] { return server->metrics()->engine_cancels() == 1; }));
  engine->Step(1);
  ASSERT_TRUE(WaitFor([&] {
    EngineStats stats = engine->stats();
    return stats.cancelled == 1 && stats.running == 0;
  }));
  engine->Resume();
}

// A client that does not read: the engine still finishes (it never waits for a
// client), and what it produced while the transport was full arrives merged
// into fewer, larger messages with nothing lost.
TEST(LifecycleTest, SlowReaderGetsMergedMessagesAndTheEngineNeverWaits) {
  std::unique_ptr<StreamgenServer> server = StartServer(TestOptions());
  ASSERT_NE(server, nullptr);
  Engine* engine = server->engine();
  // A small HTTP/2 window and no BDP probing: the transport fills up quickly.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 1024);
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  auto channel = grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(server->port()),
                                           grpc::InsecureChannelCredentials(), args);
  auto stub = v1::TextGeneration::NewStub(channel);
  const int kTokens = 400;
  grpc::ClientContext context;
  auto reader = stub->Generate(&context, PromptRequest("Once upon a time", kTokens));
  // Nobody reads until the engine is done with the request.
  ASSERT_TRUE(WaitFor([&] { return engine->stats().finished == 1; }));
  EXPECT_EQ(engine->stats().generated_tokens, kTokens);
  StreamResult result = Collect(reader.get());
  ASSERT_TRUE(result.status.ok()) << result.status.error_message();
  EXPECT_EQ(result.ids.size(), static_cast<size_t>(kTokens));
  EXPECT_EQ(result.last().usage().completion_tokens(), static_cast<uint32_t>(kTokens));
  EXPECT_LT(result.messages.size(), static_cast<size_t>(kTokens) / 2);
  std::cerr << kTokens << " tokens arrived in " << result.messages.size() << " messages\n";
  GenerationRequest direct;
  direct.prompt = "Once upon a time";
  direct.max_new_tokens = kTokens;
  test::EngineResult expected = test::RunEngine(engine, direct);
  EXPECT_EQ(result.text, expected.text);
  EXPECT_EQ(result.ids, expected.ids);
}

TEST(LifecycleTest, DrainTimeoutEndsStreamsWithCancelledThenUnavailable) {
  std::unique_ptr<StreamgenServer> server = StartServer(PausedOptions());
  ASSERT_NE(server, nullptr);
  Engine* engine = server->engine();
  auto stub = v1::TextGeneration::NewStub(Connect(server->port()));
  grpc::ClientContext context;
  auto reader = stub->Generate(&context, PromptRequest("Once upon a time", 200));
  ASSERT_TRUE(WaitFor([&] { return engine->stats().waiting == 1; }));
  engine->Step(1);
  v1::GenerateResponse first;
  ASSERT_TRUE(reader->Read(&first));

  std::thread drain([&] { server->Drain(absl::Milliseconds(100)); });
  ASSERT_TRUE(WaitFor([&] { return server->metrics()->engine_cancels() == 1; }));
  engine->Step(1);
  StreamResult rest = Collect(reader.get());
  drain.join();
  ASSERT_FALSE(rest.messages.empty());
  const v1::GenerateResponse& last = rest.last();
  EXPECT_EQ(last.finish_reason(), v1::FINISH_REASON_CANCELLED);
  EXPECT_GE(last.usage().completion_tokens(), 1u);
  EXPECT_GT(last.usage().prompt_tokens(), 0u);
  EXPECT_EQ(rest.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(rest.status.error_message(), HasSubstr("drain timeout"));
}

TEST(LifecycleTest, DrainLetsStreamsInFlightFinish) {
  std::unique_ptr<StreamgenServer> server = StartServer(PausedOptions());
  ASSERT_NE(server, nullptr);
  Engine* engine = server->engine();
  auto channel = Connect(server->port());
  auto stub = v1::TextGeneration::NewStub(channel);
  grpc::ClientContext context;
  auto reader = stub->Generate(&context, PromptRequest("Once upon a time", 8));
  ASSERT_TRUE(WaitFor([&] { return engine->stats().waiting == 1; }));

  std::thread drain([&] { server->Drain(absl::Seconds(60)); });
  ASSERT_TRUE(WaitFor([&] { return HealthOf(channel, "") == HealthCheckResponse::NOT_SERVING; }));
  StreamResult refused = Generate(stub.get(), PromptRequest("new", 2));
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  engine->Resume();
  StreamResult result = Collect(reader.get());
  drain.join();
  ASSERT_TRUE(result.status.ok()) << result.status.error_message();
  EXPECT_EQ(result.last().finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(result.last().usage().completion_tokens(), 8u);
  EXPECT_EQ(server->metrics()->engine_cancels(), 0);
}

TEST(LifecycleTest, MetricsOverHttp) {
  ServerOptions options = TestOptions();
  options.metrics_listen = "127.0.0.1:0";
  std::unique_ptr<StreamgenServer> server = StartServer(options);
  ASSERT_NE(server, nullptr);
  ASSERT_GT(server->metrics_port(), 0);
  auto stub = v1::TextGeneration::NewStub(Connect(server->port()));
  ASSERT_TRUE(Generate(stub.get(), PromptRequest("Once upon a time", 6)).status.ok());
  EXPECT_EQ(Generate(stub.get(), PromptRequest("x", 100000)).status.error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  // The log line and the metrics are written when the stream retires, just
  // after the client sees the end.
  ASSERT_TRUE(WaitFor([&] { return server->frontend()->active_streams() == 0; }));

  httplib::Client http("127.0.0.1", server->metrics_port());
  auto response = http.Get("/metrics");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 200);
  EXPECT_THAT(response->get_header_value("Content-Type"), HasSubstr("text/plain"));
  EXPECT_THAT(response->body,
              HasSubstr("streamgen_requests_total{method=\"Generate\",code=\"OK\"} 1\n"));
  EXPECT_THAT(response->body, HasSubstr(
      "streamgen_requests_total{method=\"Generate\",code=\"INVALID_ARGUMENT\"} 1\n"));
  EXPECT_THAT(response->body, HasSubstr("streamgen_completion_tokens_total 6\n"));
  EXPECT_THAT(response->body, HasSubstr("streamgen_engine_generated_tokens_total 6\n"));
  EXPECT_THAT(response->body, HasSubstr("streamgen_generations_total{finish_reason=\"length\"} 1\n"));
  auto health = http.Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  server->BeginDrain();
  EXPECT_EQ(http.Get("/healthz")->status, 503);
}

// ---- TLS ----

// Writes a self-signed certificate for localhost / 127.0.0.1 with openssl.
bool MakeCertificate(const std::string& dir, const std::string& name) {
  std::string command = "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost "
                        "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout " +
                        dir + "/" + name + ".key -out " + dir + "/" + name +
                        ".crt >/dev/null 2>&1";
  return std::system(command.c_str()) == 0;
}

std::string Read(const std::string& path) {
  std::ifstream file(path);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

grpc::Status InfoOver(const std::shared_ptr<grpc::Channel>& channel) {
  v1::ModelInfo info;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  return v1::TextGeneration::NewStub(channel)->GetModelInfo(&context, v1::GetModelInfoRequest(),
                                                           &info);
}

TEST(TlsTest, ServesTlsAndMutualTls) {
  std::string dir = ::testing::TempDir() + "/streamgen_tls." + std::to_string(getpid());
  std::system(("mkdir -p " + dir).c_str());
  if (!MakeCertificate(dir, "server") || !MakeCertificate(dir, "client")) {
    GTEST_SKIP() << "openssl is not available to make test certificates";
  }
  ServerOptions options = TestOptions();
  options.tls_cert_file = dir + "/server.crt";
  options.tls_key_file = dir + "/server.key";
  std::unique_ptr<StreamgenServer> server = StartServer(options);
  ASSERT_NE(server, nullptr);
  std::string target = "127.0.0.1:" + std::to_string(server->port());
  grpc::SslCredentialsOptions trust;
  trust.pem_root_certs = Read(dir + "/server.crt");
  EXPECT_TRUE(InfoOver(grpc::CreateChannel(target, grpc::SslCredentials(trust))).ok());
  EXPECT_FALSE(InfoOver(grpc::CreateChannel(target, grpc::InsecureChannelCredentials())).ok());
  server.reset();

  options.tls_client_ca_file = dir + "/client.crt";  // self-signed: its own CA
  server = StartServer(options);
  ASSERT_NE(server, nullptr);
  target = "127.0.0.1:" + std::to_string(server->port());
  EXPECT_FALSE(InfoOver(grpc::CreateChannel(target, grpc::SslCredentials(trust))).ok());
  grpc::SslCredentialsOptions mutual = trust;
  mutual.pem_cert_chain = Read(dir + "/client.crt");
  mutual.pem_private_key = Read(dir + "/client.key");
  grpc::Status status = InfoOver(grpc::CreateChannel(target, grpc::SslCredentials(mutual)));
  EXPECT_TRUE(status.ok()) << status.error_message();
}

TEST(TlsTest, BadTlsFlagsAreStartupErrors) {
  ServerOptions options = TestOptions();
  options.tls_cert_file = "/nonexistent/server.crt";
  absl::StatusOr<std::unique_ptr<StreamgenServer>> missing = StreamgenServer::Start(options);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("--tls-cert and --tls-key"));
  options.tls_key_file = "/nonexistent/server.key";
  missing = StreamgenServer::Start(options);
  EXPECT_THAT(std::string(missing.status().message()),
              HasSubstr("--tls-cert: cannot read /nonexistent/server.crt"));
}

TEST(LifecycleTest, ListenErrorsNameTheFlag) {
  ServerOptions options = TestOptions();
  options.listen = "256.1.1.1:1";
  absl::StatusOr<std::unique_ptr<StreamgenServer>> server = StreamgenServer::Start(options);
  EXPECT_FALSE(server.ok());
  EXPECT_THAT(std::string(server.status().message()), HasSubstr("--listen=256.1.1.1:1"));
}

}  // namespace
}  // namespace streamgen
