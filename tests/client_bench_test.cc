// `streamgen-client bench`: its percentiles and prompts, and the binary run
// against an in-process server on the tiny random model (the JSON report's
// fields and counts, checked against the server's own counters; not speeds).
#include <unistd.h>

#include <cstdio>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "client/bench.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/server_test_util.h"

namespace streamgen {
namespace {

using test::StartServer;
using test::TestOptions;
using test::WaitFor;
using ::testing::HasSubstr;

TEST(BenchTest, PercentileInterpolatesLikeNumpy) {
  EXPECT_EQ(Percentile({}, 50), 0);
  EXPECT_EQ(Percentile({7}, 99), 7);
  EXPECT_DOUBLE_EQ(Percentile({4, 1, 3, 2}, 50), 2.5);  // numpy.percentile([1,2,3,4], 50)
  EXPECT_DOUBLE_EQ(Percentile({4, 1, 3, 2}, 90), 3.7);
  EXPECT_DOUBLE_EQ(Percentile({4, 1, 3, 2}, 99), 3.97);
  EXPECT_DOUBLE_EQ(Percentile({4, 1, 3, 2}, 0), 1);
  EXPECT_DOUBLE_EQ(Percentile({4, 1, 3, 2}, 100), 4);
}

TEST(BenchTest, PromptsAreExactDeterministicAndDistinct) {
  const std::vector<int> eos = {2};
  std::vector<int> first = BenchPrompt(0, 0, 128, 1000, 1, eos);
  ASSERT_EQ(first.size(), 128u);
  EXPECT_EQ(first[0], 1);  // BOS
  for (size_t i = 1; i < first.size(); ++i) {
    EXPECT_GE(first[i], 3) << i;
    EXPECT_LT(first[i], 1000) << i;
  }
  EXPECT_EQ(BenchPrompt(0, 0, 128, 1000, 1, eos), first);
  std::set<std::vector<int>> distinct;
  for (int index = 0; index < 20; ++index)
    distinct.insert(BenchPrompt(0, index, 128, 1000, 1, eos));
  EXPECT_EQ(distinct.size(), 20u);
  EXPECT_NE(BenchPrompt(1, 0, 128, 1000, 1, eos), first);  // the seed varies them too
  // A vocabulary of 5 with BOS 1, EOS 2 and 4: only 3 can be drawn.
  std::vector<int> narrow = BenchPrompt(0, 3, 10, 5, 1, {2, 4});
  EXPECT_EQ(narrow, std::vector<int>({1, 3, 3, 3, 3, 3, 3, 3, 3, 3}));
  EXPECT_EQ(BenchPrompt(0, 0, 3, 1000, -1, eos).size(), 3u);  // no BOS
  EXPECT_EQ(BenchPrompt(0, 0, 1, 1000, 1, eos), std::vector<int>({1}));
}

TEST(BenchTest, SharedPrefixIsTheSameForEveryCallAndTheRestDiffers) {
  const std::vector<int> eos = {2};
  std::vector<int> a = BenchPromptWithSharedPrefix(0, 0, 64, 40, 1000, 1, eos);
  std::vector<int> b = BenchPromptWithSharedPrefix(0, 1, 64, 40, 1000, 1, eos);
  ASSERT_EQ(a.size(), 64u);
  ASSERT_EQ(b.size(), 64u);
  EXPECT_EQ(a[0], 1);  // BOS
  EXPECT_TRUE(std::equal(a.begin(), a.begin() + 40, b.begin()));
  EXPECT_FALSE(std::equal(a.begin() + 40, a.end(), b.begin() + 40));
  // Without a shared prefix: exactly BenchPrompt.
  EXPECT_EQ(BenchPromptWithSharedPrefix(0, 3, 64, 0, 1000, 1, eos), BenchPrompt(0, 3, 64, 1000, 1, eos));
}

std::string ClientPath() { return std::string(STREAMGEN_BINARY_DIR) + "/client/streamgen-client"; }

struct ClientRun {
  int exit_code = -1;
  std::string out;  // stdout and stderr
};

// `stderr_too`: stderr is captured with stdout (else it goes to the test's stderr).
ClientRun RunClient(const std::string& args, bool stderr_too = true) {
  ClientRun run;
  FILE* pipe = popen(absl::StrCat(ClientPath(), " ", args, stderr_too ? " 2>&1" : "").c_str(), "r");
  if (pipe == nullptr) return run;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) run.out.append(buffer, n);
  int status = pclose(pipe);
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return run;
}

TEST(BenchCliTest, JsonReportCountsMatchTheServer) {
  if (access(ClientPath().c_str(), X_OK) != 0) GTEST_SKIP() << ClientPath() << " is not built";
  ServerOptions options = TestOptions();
  options.metrics_listen = "127.0.0.1:0";
  std::unique_ptr<StreamgenServer> server = StartServer(options);
  ASSERT_NE(server, nullptr);
  ClientRun run =
      RunClient(absl::StrCat("--server=127.0.0.1:", server->port(),
                             " --json bench --concurrency 3 --requests 5 --prompt-tokens 17"
                             " --max-new-tokens 9"),
                /*stderr_too=*/false);
  ASSERT_EQ(run.exit_code, 0) << run.out;
  nlohmann::json report = nlohmann::json::parse(run.out);  // exactly one JSON object
  EXPECT_EQ(report["model"], "tiny-builtin");
  EXPECT_EQ(report["dtype"], "float32");
  EXPECT_EQ(report["concurrency"], 3);
  EXPECT_EQ(report["requests"], 5);
  EXPECT_EQ(report["warmup"], 3);  // one wave
  EXPECT_EQ(report["prompt_tokens"], 17);
  EXPECT_EQ(report["max_new_tokens"], 9);
  EXPECT_EQ(report["completed"], 5);
  EXPECT_EQ(report["errors"], 0);
  EXPECT_EQ(report["output_tokens"], 45);
  EXPECT_GT(report["duration_s"].get<double>(), 0);
  // The report rounds each figure; on a fast run (tens of ms) a rounded
  // duration_s moves the rates by ~0.01%, so compare relatively.
  const double duration = report["duration_s"].get<double>();
  EXPECT_NEAR(report["output_tokens_per_s"].get<double>(), 45 / duration, 1e-3 * 45 / duration + 0.01);
  EXPECT_NEAR(report["requests_per_s"].get<double>(), 5 / duration, 1e-3 * 5 / duration + 0.01);
  for (const char* latency : {"ttft_ms", "itl_ms"}) {
    SCOPED_TRACE(latency);
    const nlohmann::json& p = report[latency];
    EXPECT_GE(p["p50"].get<double>(), 0);
    EXPECT_LE(p["p50"].get<double>(), p["p90"].get<double>());
    EXPECT_LE(p["p90"].get<double>(), p["p99"].get<double>());
  }
  EXPECT_GT(report["ttft_ms"]["p50"].get<double>(), 0);
  EXPECT_LE(report["e2e_ms"]["p50"].get<double>(), report["e2e_ms"]["p99"].get<double>());
  EXPECT_GE(report["e2e_ms"]["p50"].get<double>(), report["ttft_ms"]["p50"].get<double>());
  // Means: every call's TTFT is below its e2e, so the means are ordered too.
  EXPECT_GT(report["ttft_ms"]["mean"].get<double>(), 0);
  EXPECT_GE(report["itl_ms"]["mean"].get<double>(), 0);
  EXPECT_LT(report["ttft_ms"]["mean"].get<double>(), report["e2e_ms"]["mean"].get<double>());

  // The server saw 3 + 5 calls of exactly 17 prompt and 9 generated tokens.
  EngineStats stats = server->engine()->stats();
  EXPECT_EQ(stats.submitted, 8);
  EXPECT_EQ(stats.prompt_tokens, 8 * 17);
  EXPECT_EQ(stats.generated_tokens, 8 * 9);
  std::string metrics = server->RenderMetrics();
  EXPECT_THAT(metrics, HasSubstr("streamgen:generation_tokens_total 72\n"));
  EXPECT_THAT(metrics, HasSubstr("streamgen:e2e_request_latency_seconds_count 8\n"));
  EXPECT_THAT(metrics,
              HasSubstr("streamgen:request_success_total{finished_reason=\"length\"} 8\n"));
}

// --http: the same calls over the HTTP face (SSE); the counts are the server's.
TEST(BenchCliTest, HttpFaceOverServerSentEvents) {
  if (access(ClientPath().c_str(), X_OK) != 0) GTEST_SKIP() << ClientPath() << " is not built";
  ServerOptions options = TestOptions();
  options.http.listen = "127.0.0.1:0";
  std::unique_ptr<StreamgenServer> server = StartServer(options);
  ASSERT_NE(server, nullptr);
  ClientRun run = RunClient(
      absl::StrCat("--server=127.0.0.1:", server->port(), " --json bench --http http://127.0.0.1:",
                   server->http_port(),
                   " --concurrency 2 --requests 4 --prompt-tokens 12 --max-new-tokens 7"),
      /*stderr_too=*/false);
  ASSERT_EQ(run.exit_code, 0) << run.out;
  nlohmann::json report = nlohmann::json::parse(run.out);
  EXPECT_EQ(report["face"], "http");
  EXPECT_EQ(report["completed"], 4);
  EXPECT_EQ(report["errors"], 0);
  EXPECT_EQ(report["output_tokens"], 28);
  EXPECT_GT(report["ttft_ms"]["p50"].get<double>(), 0);
  EXPECT_LE(report["itl_ms"]["p50"].get<double>(), report["itl_ms"]["p99"].get<double>());
  // 2 warm-up + 4 measured calls of exactly 12 prompt and 7 generated tokens,
  // all through the HTTP face.
  EngineStats stats = server->engine()->stats();
  EXPECT_EQ(stats.submitted, 6);
  EXPECT_EQ(stats.prompt_tokens, 6 * 12);
  EXPECT_EQ(stats.generated_tokens, 6 * 7);
  EXPECT_THAT(server->RenderMetrics(),
              HasSubstr("streamgen_requests_total{method=\"POST /v1/completions\",code=\"OK\"} 6\n"));
  // A refused call is counted as an error with the server's message.
  ClientRun bad = RunClient(absl::StrCat("--server=127.0.0.1:", server->port(),
                                         " --json bench --http http://127.0.0.1:", server->http_port(),
                                         " --concurrency 1 --requests 1 --warmup 0 --prompt-tokens 8"
                                         " --max-new-tokens 8 --temperature 500"),
                            /*stderr_too=*/false);
  EXPECT_EQ(bad.exit_code, 1) << bad.out;
  EXPECT_THAT(bad.out, HasSubstr("HTTP 400"));
  EXPECT_THAT(bad.out, HasSubstr("temperature must be in [0, 100], got 500"));
}

TEST(BenchCliTest, TextReportAndExplicitWarmup) {
  if (access(ClientPath().c_str(), X_OK) != 0) GTEST_SKIP() << ClientPath() << " is not built";
  std::unique_ptr<StreamgenServer> server = StartServer(TestOptions());
  ASSERT_NE(server, nullptr);
  ClientRun run = RunClient(absl::StrCat("--server=127.0.0.1:", server->port(),
                                         " bench --concurrency 2 --requests 3 --warmup 0"
                                         " --prompt-tokens 8 --max-new-tokens 4"));
  ASSERT_EQ(run.exit_code, 0) << run.out;
  EXPECT_THAT(run.out, HasSubstr("concurrency 2, 3 requests (+0 warm-up), prompt 8, output 4"));
  EXPECT_THAT(run.out, HasSubstr("completed 3, errors 0"));
  EXPECT_THAT(run.out, HasSubstr("output tokens/s "));
  EXPECT_THAT(run.out, HasSubstr("TTFT ms  p50 "));
  EXPECT_EQ(server->engine()->stats().submitted, 3);
}

TEST(BenchCliTest, RefusesWhatCannotRun) {
  if (access(ClientPath().c_str(), X_OK) != 0) GTEST_SKIP() << ClientPath() << " is not built";
  std::unique_ptr<StreamgenServer> server = StartServer(TestOptions());
  ASSERT_NE(server, nullptr);
  std::string target = absl::StrCat("--server=127.0.0.1:", server->port());
  ClientRun too_long = RunClient(target + " bench --prompt-tokens 500 --max-new-tokens 64");
  EXPECT_EQ(too_long.exit_code, 2);
  EXPECT_THAT(too_long.out, HasSubstr("exceeds the model's context (512)"));
  ClientRun no_tokens = RunClient(target + " bench --prompt-tokens 8");
  EXPECT_EQ(no_tokens.exit_code, 2);
  EXPECT_THAT(no_tokens.out, HasSubstr("--max-new-tokens must be at least 1"));
  ClientRun no_concurrency = RunClient(target + " bench --concurrency 0 --max-new-tokens 4");
  EXPECT_EQ(no_concurrency.exit_code, 2);
  EXPECT_THAT(no_concurrency.out, HasSubstr("--concurrency must be at least 1"));
  ClientRun long_prefix =
      RunClient(target + " bench --prompt-tokens 8 --shared-prefix-tokens 9 --max-new-tokens 4");
  EXPECT_EQ(long_prefix.exit_code, 2);
  EXPECT_THAT(long_prefix.out, HasSubstr("--shared-prefix-tokens must be in [0, --prompt-tokens]"));
  EXPECT_EQ(server->engine()->stats().submitted, 0);
}

TEST(BenchCliTest, FailedCallsAreCountedAndExitNonZero) {
  if (access(ClientPath().c_str(), X_OK) != 0) GTEST_SKIP() << ClientPath() << " is not built";
  ServerOptions options = TestOptions();
  options.engine.max_new_tokens_limit = 4;  // 8 new tokens are refused
  std::unique_ptr<StreamgenServer> server = StartServer(options);
  ASSERT_NE(server, nullptr);
  ClientRun run = RunClient(absl::StrCat("--server=127.0.0.1:", server->port(),
                                         " --json bench --concurrency 1 --requests 2 --warmup 1"
                                         " --prompt-tokens 8 --max-new-tokens 8"));
  EXPECT_EQ(run.exit_code, 1) << run.out;
  EXPECT_THAT(run.out, HasSubstr("\"completed\":0"));
  EXPECT_THAT(run.out, HasSubstr("\"errors\":3"));
  EXPECT_THAT(run.out, HasSubstr("INVALID_ARGUMENT"));
  EXPECT_THAT(run.out, HasSubstr("3 calls failed"));
}

}  // namespace
}  // namespace streamgen
