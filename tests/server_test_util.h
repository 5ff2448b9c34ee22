// Helpers for the server's integration tests: an in-process streamgen server on
// an ephemeral loopback port, clients, and waiting on observable state (engine
// counters, server metrics) instead of on wall-clock luck.
#pragma once

#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/server.h"
#include "streamgen/v1/generate.grpc.pb.h"

namespace streamgen {
namespace test {

// The tiny random model, written at build time.
inline std::string TinyModelDir() { return STREAMGEN_TINY_MODEL_DIR; }

// The shared golden fixture (tests run from the project root).
inline std::string FixtureDir() { return "../shared/fixtures/tiny-llama"; }
inline bool FixturePresent() {
  return std::filesystem::exists(FixtureDir() + "/golden.json");
}
#define SKIP_WITHOUT_FIXTURE()                                                   \
  if (!::streamgen::test::FixturePresent())                                     \
  GTEST_SKIP() << "../shared/fixtures/tiny-llama is absent (it exists only in " \
                  "the project's CI and development machines)"

inline nlohmann::json Golden() {
  std::ifstream file(FixtureDir() + "/golden.json");
  return nlohmann::json::parse(file);
}

// Options for a test server: loopback, any port, no metrics endpoint, float32.
inline ServerOptions TestOptions(const std::string& model_dir = TinyModelDir()) {
  ServerOptions options;
  options.listen = "127.0.0.1:0";
  options.metrics_listen = "";
  options.engine.model_dir = model_dir;
  options.engine.dtype = "float32";
  return options;
}

// Starts a server (and loads the model unless `load` is false); fails the test
// on error.
inline std::unique_ptr<StreamgenServer> StartServer(ServerOptions options, bool load = true) {
  absl::StatusOr<std::unique_ptr<StreamgenServer>> server = StreamgenServer::Start(options);
  EXPECT_TRUE(server.ok()) << server.status();
  if (!server.ok()) return nullptr;
  if (load) {
    absl::Status loaded = (*server)->LoadModel();
    EXPECT_TRUE(loaded.ok()) << loaded;
    if (!loaded.ok()) return nullptr;
  }
  return std::move(*server);
}

inline std::shared_ptr<grpc::Channel> Connect(int port) {
  return grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                             grpc::InsecureChannelCredentials());
}

// Polls `done` every millisecond until it holds or `timeout` passes. The
// timeout is a generous upper bound, not a timing assumption.
inline bool WaitFor(const std::function<bool()>& done,
                    absl::Duration timeout = absl::Seconds(60)) {
  absl::Time end = absl::Now() + timeout;
  while (!done()) {
    if (absl::Now() > end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

// A finished Generate stream.
struct StreamResult {
  std::vector<v1::GenerateResponse> messages;
  grpc::Status status;
  std::string text;      // all messages' text
  std::vector<int> ids;  // all messages' token ids

  const v1::GenerateResponse& last() const { return messages.back(); }
};

inline StreamResult Collect(grpc::ClientReader<v1::GenerateResponse>* reader) {
  StreamResult result;
  v1::GenerateResponse message;
  while (reader->Read(&message)) {
    result.text += message.text();
    for (const v1::Token& token : message.tokens()) result.ids.push_back(token.id());
    result.messages.push_back(message);
  }
  result.status = reader->Finish();
  return result;
}

inline StreamResult Generate(v1::TextGeneration::Stub* stub, const v1::GenerateRequest& request,
                             const std::string& api_key = "") {
  grpc::ClientContext context;
  if (!api_key.empty()) context.AddMetadata("authorization", "Bearer " + api_key);
  auto reader = stub->Generate(&context, request);
  return Collect(reader.get());
}

inline v1::GenerateRequest PromptRequest(const std::string& prompt, int max_new_tokens) {
  v1::GenerateRequest request;
  request.set_prompt(prompt);
  request.set_max_new_tokens(max_new_tokens);
  return request;
}

// The engine's own events for `request` (no gRPC), for comparisons.
struct EngineResult {
  std::string text;
  std::vector<int> ids;
  TokenEvent last;
};

inline EngineResult RunEngine(Engine* engine, GenerationRequest request) {
  auto result = std::make_shared<EngineResult>();
  auto done = std::make_shared<std::atomic<bool>>(false);
  absl::StatusOr<uint64_t> id = engine->Submit(std::move(request), [result, done](TokenEvent&& e) {
    result->text += e.text;
    for (const TokenInfo& t : e.tokens) result->ids.push_back(t.id);
    if (e.finish_reason != FinishReason::kNone) {
      result->last = e;
      *done = true;
    }
  });
  EXPECT_TRUE(id.ok()) << id.status();
  if (!id.ok()) return {};
  EXPECT_TRUE(WaitFor([&] { return done->load(); }));
  return *result;
}

}  // namespace test
}  // namespace streamgen
