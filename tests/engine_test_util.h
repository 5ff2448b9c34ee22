// Helpers shared by the engine-level tests: collect a request's events, make
// a float32 engine.
#pragma once

#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "engine/engine.h"

namespace streamgen {

inline constexpr char kFixtureDir[] = "../shared/fixtures/tiny-llama";

// Collects one request's events; Wait() returns once the last event arrived.
struct Collector {
  std::mutex mu;
  std::vector<int> ids;
  std::string text;
  std::vector<std::string> chunks;
  std::promise<TokenEvent> done;
  std::future<TokenEvent> future = done.get_future();

  TokenSink Sink() {
    return [this](TokenEvent&& e) {
      std::lock_guard<std::mutex> lock(mu);
      for (const auto& t : e.tokens) ids.push_back(t.id);
      text += e.text;
      chunks.push_back(e.text);
      if (e.finish_reason != FinishReason::kNone) done.set_value(std::move(e));
    };
  }
  // Returns the last event once the sink has returned from it (the lock), so
  // the collector may be destroyed right after.
  TokenEvent Wait() {
    TokenEvent last = future.get();
    std::lock_guard<std::mutex> lock(mu);
    return last;
  }
};

// A float32 engine on `dir` (nullptr, with a test failure, when it can't load).
inline std::unique_ptr<Engine> MakeEngine(const std::string& dir, EngineOptions options = {}) {
  options.model_dir = dir;
  options.dtype = "float32";
  auto engine = Engine::Create(options);
  EXPECT_TRUE(engine.ok()) << engine.status();
  return engine.ok() ? std::move(*engine) : nullptr;
}

}  // namespace streamgen
