// The vLLM-named metrics (streamgen:*): histogram rendering, the values the
// engine's sink records, a scrape over HTTP of a server whose paused engine is
// stepped through known states, and the scheduler flags of streamgen-server
// (parsed by the binary, reported by GetModelInfo).
#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "common/cli_flags.h"
#include "server/metrics.h"
#include "tests/server_test_util.h"

namespace streamgen {
namespace {

using test::Connect;
using test::StartServer;
using test::TestOptions;
using test::WaitFor;
using ::testing::HasSubstr;
using ::testing::Not;

// The value of the sample line `series` ("name" or "name{labels}"); NaN when absent.
double Value(const std::string& text, const std::string& series) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::StartsWith(line, series + " ")) {
      return std::stod(std::string(line.substr(series.size() + 1)));
    }
  }
  return std::nan("");
}

const char* const kHistograms[] = {
    "streamgen:time_to_first_token_seconds", "streamgen:inter_token_latency_seconds",
    "streamgen:e2e_request_latency_seconds", "streamgen:request_queue_time_seconds"};

// Every histogram's buckets are cumulative and end with +Inf == _count.
void ExpectWellFormedHistograms(const std::string& text) {
  for (const char* name : kHistograms) {
    SCOPED_TRACE(name);
    EXPECT_THAT(text, HasSubstr(absl::StrCat("# TYPE ", name, " histogram\n")));
    double previous = 0;
    int buckets = 0;
    for (absl::string_view line : absl::StrSplit(text, '\n')) {
      if (!absl::StartsWith(line, absl::StrCat(name, "_bucket{le=\""))) continue;
      double cumulative = std::stod(std::string(line.substr(line.rfind(' ') + 1)));
      EXPECT_GE(cumulative, previous) << line;
      previous = cumulative;
      ++buckets;
    }
    EXPECT_GT(buckets, 10);
    EXPECT_EQ(Value(text, absl::StrCat(name, "_bucket{le=\"+Inf\"}")),
              Value(text, absl::StrCat(name, "_count")));
  }
}

TEST(HistogramTest, RendersCumulativeBucketsSumAndCount) {
  Histogram histogram({0.1, 1, 10});
  for (double v : {0.05, 0.1, 0.5, 2.0, 20.0}) histogram.Observe(v);
  std::string text;
  histogram.Render(&text, "h");
  EXPECT_EQ(text,
            "h_bucket{le=\"0.1\"} 2\n"  // 0.1 is in le="0.1"
            "h_bucket{le=\"1\"} 3\n"
            "h_bucket{le=\"10\"} 4\n"
            "h_bucket{le=\"+Inf\"} 5\n"
            "h_sum 22.65\n"
            "h_count 5\n");
  EXPECT_EQ(histogram.count(), 5);
}

TEST(MetricsTest, SinkRecordsTokensFinishReasonsAndLatencies) {
  Metrics metrics;
  // Request 1: 3 tokens one by one, then finished by length.
  metrics.RecordTokens(1, /*first=*/true, 0);
  metrics.RecordTokens(1, false, 0.002);
  metrics.RecordTokens(1, false, 0.004);
  TokenEvent length;
  length.finish_reason = FinishReason::kLength;
  length.prompt_tokens = 7;
  length.completion_tokens = 3;
  length.queue_ms = 5;
  length.ttft_ms = 30;
  metrics.RecordFinished(length, 0.5);
  // Request 2: cancelled while queued (never admitted, no token).
  TokenEvent cancelled;
  cancelled.finish_reason = FinishReason::kCancelled;
  cancelled.prompt_tokens = 11;
  metrics.RecordFinished(cancelled, 0.25);
  // Request 3: two tokens in one event (0 s apart), EOS.
  metrics.RecordTokens(2, true, 0);
  TokenEvent eos;
  eos.finish_reason = FinishReason::kEos;
  eos.prompt_tokens = 4;
  eos.completion_tokens = 2;
  eos.queue_ms = 1;
  eos.ttft_ms = 2;
  metrics.RecordFinished(eos, 0.01);

  std::string text = metrics.Render(nullptr);
  EXPECT_EQ(Value(text, "streamgen:generation_tokens_total"), 5);
  EXPECT_EQ(Value(text, "streamgen:prompt_tokens_total"), 11);  // 7 + 4: the admitted ones
  EXPECT_EQ(Value(text, "streamgen:request_success_total{finished_reason=\"length\"}"), 1);
  EXPECT_EQ(Value(text, "streamgen:request_success_total{finished_reason=\"eos\"}"), 1);
  EXPECT_EQ(Value(text, "streamgen:request_success_total{finished_reason=\"stop\"}"), 0);
  EXPECT_EQ(Value(text, "streamgen:request_success_total{finished_reason=\"cancelled\"}"), 1);
  EXPECT_EQ(Value(text, "streamgen:request_success_total{finished_reason=\"error\"}"), 0);
  EXPECT_EQ(Value(text, "streamgen:time_to_first_token_seconds_count"), 2);
  EXPECT_DOUBLE_EQ(Value(text, "streamgen:time_to_first_token_seconds_sum"), 0.032);
  EXPECT_EQ(Value(text, "streamgen:inter_token_latency_seconds_count"), 3);  // 2 + 1 (0 s)
  EXPECT_DOUBLE_EQ(Value(text, "streamgen:inter_token_latency_seconds_sum"), 0.006);
  EXPECT_EQ(Value(text, "streamgen:inter_token_latency_seconds_bucket{le=\"0.001\"}"), 1);
  EXPECT_EQ(Value(text, "streamgen:e2e_request_latency_seconds_count"), 3);
  EXPECT_DOUBLE_EQ(Value(text, "streamgen:e2e_request_latency_seconds_sum"), 0.76);
  EXPECT_EQ(Value(text, "streamgen:request_queue_time_seconds_count"), 2);
  ExpectWellFormedHistograms(text);
  // The engine's gauges need the engine.
  EXPECT_THAT(text, Not(HasSubstr("streamgen:num_requests_running")));
  EXPECT_THAT(text, Not(HasSubstr("streamgen:kv_cache_usage_perc")));
}

TEST(MetricsTest, EngineGaugesAtScrapeTime) {
  Metrics metrics;
  EngineStats stats;
  stats.running = 3;
  stats.waiting = 2;
  stats.preemptions = 4;
  stats.kv_blocks_used = 3;
  stats.kv_blocks_total = 12;
  stats.prefix_cache_queries = 40;
  stats.prefix_cache_hits = 16;
  std::string text = metrics.Render(&stats);
  EXPECT_THAT(text, HasSubstr("# TYPE streamgen:prefix_cache_queries_total counter\n"
                              "streamgen:prefix_cache_queries_total 40\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE streamgen:prefix_cache_hits_total counter\n"
                              "streamgen:prefix_cache_hits_total 16\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE streamgen:num_requests_running gauge\n"
                              "streamgen:num_requests_running 3\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE streamgen:num_requests_waiting gauge\n"
                              "streamgen:num_requests_waiting 2\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE streamgen:kv_cache_usage_perc gauge\n"
                              "streamgen:kv_cache_usage_perc 0.25\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE streamgen:num_preemptions_total counter\n"
                              "streamgen:num_preemptions_total 4\n"));
}

// --metrics-vllm-aliases: the engine's gauges again under vLLM's names, and
// vllm:cache_config_info as vLLM exports it (value 1, the facts as labels), the
// names the Inference Extension's endpoint picker reads by default.
TEST(MetricsTest, VllmAliasesForTheInferenceExtension) {
  Metrics metrics;
  EngineStats stats;
  stats.running = 3;
  stats.waiting = 5;
  stats.kv_blocks_used = 9;
  stats.kv_blocks_total = 12;
  EXPECT_THAT(metrics.Render(&stats), Not(HasSubstr("vllm:")));  // off by default

  metrics.EnableVllmAliases(16);
  std::string text = metrics.Render(&stats);
  EXPECT_THAT(text, HasSubstr("# TYPE vllm:num_requests_running gauge\n"
                              "vllm:num_requests_running 3\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE vllm:num_requests_waiting gauge\n"
                              "vllm:num_requests_waiting 5\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE vllm:kv_cache_usage_perc gauge\n"
                              "vllm:kv_cache_usage_perc 0.75\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE vllm:cache_config_info gauge\n"
                              "vllm:cache_config_info{block_size=\"16\",num_gpu_blocks=\"12\"} 1\n"));
  for (const char* name : {"num_requests_running", "num_requests_waiting", "kv_cache_usage_perc"}) {
    EXPECT_EQ(Value(text, absl::StrCat("vllm:", name)), Value(text, absl::StrCat("streamgen:", name)))
        << name;
    EXPECT_THAT(text, HasSubstr(absl::StrCat("# HELP vllm:", name, " ")));
  }
  // Each family once (a second # TYPE line would make the exposition invalid).
  EXPECT_EQ(text.find("# TYPE vllm:num_requests_running"),
            text.rfind("# TYPE vllm:num_requests_running"));
  // Like their streamgen: twins, they need the engine: none before the model loads.
  EXPECT_THAT(metrics.Render(nullptr), Not(HasSubstr("vllm:")));
}

TEST(ParseByteSizeTest, UnitsAndErrors) {
  EXPECT_EQ(*ParseByteSize("1048576", "f"), 1048576);
  EXPECT_EQ(*ParseByteSize("512MiB", "f"), 512LL << 20);
  EXPECT_EQ(*ParseByteSize("2GiB", "f"), 2LL << 30);
  EXPECT_EQ(*ParseByteSize("2gib", "f"), 2LL << 30);
  EXPECT_EQ(*ParseByteSize("1.5GB", "f"), 1500000000);
  EXPECT_EQ(*ParseByteSize("64 KiB", "f"), 65536);
  EXPECT_EQ(*ParseByteSize("100B", "f"), 100);
  for (const char* bad : {"", "GiB", "lots", "2XB", "0", "-1GiB", "1.2.3MB"}) {
    absl::StatusOr<int64_t> parsed = ParseByteSize(bad, "kv-cache-memory");
    ASSERT_FALSE(parsed.ok()) << bad;
    EXPECT_THAT(std::string(parsed.status().message()), HasSubstr("--kv-cache-memory=")) << bad;
  }
  EXPECT_THAT(std::string(ParseByteSize("2XB", "f").status().message()),
              HasSubstr("unknown unit 'XB'"));
}

v1::GenerateRequest IdsRequest(int prompt_tokens, int max_new_tokens, int first_id) {
  v1::GenerateRequest request;
  request.add_prompt_token_ids(1);  // BOS
  for (int i = 1; i < prompt_tokens; ++i) request.add_prompt_token_ids(first_id + i);
  request.set_max_new_tokens(max_new_tokens);
  request.set_ignore_eos(true);
  return request;
}

std::string Scrape(int port) {
  httplib::Client http("127.0.0.1", port);
  auto response = http.Get("/metrics");
  EXPECT_TRUE(response) << "no answer from /metrics";
  return response ? response->body : "";
}

// The metrics endpoint answers from Start() on, on its own thread, while
// LoadModel() sets the engine on this one: a scrape must not look at the engine
// before it is set. (It did: a data race that the TSan job found, in a scrape
// during start-up; under TSan this test reports it every time.)
TEST(MetricsHttpTest, ScrapesWhileTheModelLoads) {
  ServerOptions options = TestOptions();
  options.metrics_listen = "127.0.0.1:0";
  std::unique_ptr<StreamgenServer> server = StartServer(options, /*load=*/false);
  ASSERT_NE(server, nullptr);
  std::atomic<bool> loaded{false};
  std::atomic<int> scrapes{0};
  std::vector<double> values;  // streamgen_model_loaded per scrape (the scraper's)
  std::thread scraper([&] {
    while (!loaded) {
      values.push_back(Value(Scrape(server->metrics_port()), "streamgen_model_loaded"));
      ++scrapes;
    }
  });
  // A scrape before the model loads, then more while it loads.
  ASSERT_TRUE(WaitFor([&] { return scrapes > 0; }));
  ASSERT_TRUE(server->LoadModel().ok());
  loaded = true;
  scraper.join();
  ASSERT_FALSE(values.empty());
  EXPECT_EQ(values.front(), 0);
  for (size_t i = 1; i < values.size(); ++i) EXPECT_GE(values[i], values[i - 1]) << i;
  const std::string loaded_text = Scrape(server->metrics_port());
  EXPECT_EQ(Value(loaded_text, "streamgen_model_loaded"), 1);
  // The CPU kernels' ISA, as an info label (the tiny model runs on the CPU).
  int isa_labels = 0;
  for (const char* isa : {"avx512", "avx2", "portable"}) {
    const std::string series = std::string("streamgen_cpu_kernel_isa_info{isa=\"") + isa + "\"}";
    if (Value(loaded_text, series) == 1) ++isa_labels;
  }
  EXPECT_EQ(isa_labels, 1) << loaded_text;
}

// Two requests run to their length and a third is cancelled while queued; the
// paused engine is stepped so that the gauges are scraped in known states.
TEST(MetricsHttpTest, VllmNamedMetricsOverHttp) {
  ServerOptions options = TestOptions();
  options.metrics_listen = "127.0.0.1:0";
  options.engine.start_paused = true;
  options.engine.max_batch = 2;
  std::unique_ptr<StreamgenServer> server = StartServer(options);
  ASSERT_NE(server, nullptr);
  Engine* engine = server->engine();
  auto stub = v1::TextGeneration::NewStub(Connect(server->port()));

  grpc::ClientContext a_context, b_context, c_context;
  auto a = stub->Generate(&a_context, IdsRequest(20, 4, 10));
  ASSERT_TRUE(WaitFor([&] { return engine->stats().waiting == 1; }));
  auto b = stub->Generate(&b_context, IdsRequest(30, 5, 100));
  ASSERT_TRUE(WaitFor([&] { return engine->stats().waiting == 2; }));
  auto c = stub->Generate(&c_context, IdsRequest(40, 200, 300));
  ASSERT_TRUE(WaitFor([&] { return engine->stats().waiting == 3; }));

  std::string queued = Scrape(server->metrics_port());
  EXPECT_EQ(Value(queued, "streamgen:num_requests_waiting"), 3);
  EXPECT_EQ(Value(queued, "streamgen:num_requests_running"), 0);
  EXPECT_EQ(Value(queued, "streamgen:kv_cache_usage_perc"), 0);

  engine->Step(1);  // admits A and B (max_batch 2), prefills them, first tokens
  ASSERT_TRUE(WaitFor([&] { return engine->stats().running == 2; }));
  EngineStats stats = engine->stats();
  ASSERT_GT(stats.kv_blocks_used, 0);
  std::string running = Scrape(server->metrics_port());
  EXPECT_EQ(Value(running, "streamgen:num_requests_running"), 2);
  EXPECT_EQ(Value(running, "streamgen:num_requests_waiting"), 1);
  double usage = Value(running, "streamgen:kv_cache_usage_perc");
  EXPECT_GT(usage, 0);
  EXPECT_LT(usage, 1);
  EXPECT_NEAR(usage, static_cast<double>(stats.kv_blocks_used) / stats.kv_blocks_total, 1e-9);
  EXPECT_EQ(stats.kv_blocks_total, engine->model_info().kv_cache_blocks);

  c_context.TryCancel();  // C is still queued
  ASSERT_TRUE(WaitFor([&] { return server->metrics()->engine_cancels() == 1; }));
  engine->Resume();
  test::StreamResult a_result = test::Collect(a.get());
  test::StreamResult b_result = test::Collect(b.get());
  test::StreamResult c_result = test::Collect(c.get());
  ASSERT_TRUE(a_result.status.ok()) << a_result.status.error_message();
  ASSERT_TRUE(b_result.status.ok()) << b_result.status.error_message();
  EXPECT_EQ(c_result.status.error_code(), grpc::StatusCode::CANCELLED);
  ASSERT_EQ(a_result.ids.size(), 4u);
  ASSERT_EQ(b_result.ids.size(), 5u);

  std::string text;
  ASSERT_TRUE(WaitFor([&] {
    text = Scrape(server->metrics_port());
    return Value(text, "streamgen:e2e_request_latency_seconds_count") == 3 &&
           Value(text, "streamgen:num_requests_running") == 0;
  })) << text;
  for (const char* name : {"streamgen:num_requests_running", "streamgen:num_requests_waiting",
                           "streamgen:kv_cache_usage_perc"}) {
    EXPECT_THAT(text, HasSubstr(absl::StrCat("# TYPE ", name, " gauge\n")));
    EXPECT_THAT(text, HasSubstr(absl::StrCat("# HELP ", name, " ")));
    EXPECT_EQ(Value(text, name), 0) << name;
  }
  for (const char* name : {"streamgen:prompt_tokens_total", "streamgen:generation_tokens_total",
                           "streamgen:request_success_total", "streamgen:num_preemptions_total"}) {
    EXPECT_THAT(text, HasSubstr(absl::StrCat("# TYPE ", name, " counter\n")));
    EXPECT_THAT(text, HasSubstr(absl::StrCat("# HELP ", name, " ")));
  }
  EXPECT_EQ(Value(text, "streamgen:generation_tokens_total"), 9);  // 4 + 5 received
  EXPECT_EQ(Value(text, "streamgen:prompt_tokens_total"), 50);     // 20 + 30; C never ran
  EXPECT_EQ(Value(text, "streamgen:num_preemptions_total"), 0);
  EXPECT_EQ(Value(text, "streamgen:request_success_total{finished_reason=\"length\"}"), 2);
  EXPECT_EQ(Value(text, "streamgen:request_success_total{finished_reason=\"cancelled\"}"), 1);
  for (const char* reason : {"eos", "stop", "error"}) {
    EXPECT_EQ(Value(text, absl::StrCat("streamgen:request_success_total{finished_reason=\"", reason,
                                       "\"}")),
              0)
        << reason;
  }
  EXPECT_EQ(Value(text, "streamgen:time_to_first_token_seconds_count"), 2);
  EXPECT_EQ(Value(text, "streamgen:request_queue_time_seconds_count"), 2);
  EXPECT_EQ(Value(text, "streamgen:inter_token_latency_seconds_count"), 9 - 2);
  EXPECT_GT(Value(text, "streamgen:time_to_first_token_seconds_sum"), 0);
  ExpectWellFormedHistograms(text);
}

// With prefix caching, a second request with the same 40-token prompt shares
// its first two 16-token blocks: the counters say so over HTTP.
TEST(MetricsHttpTest, PrefixCacheCountersOverHttp) {
  ServerOptions options = TestOptions();
  options.metrics_listen = "127.0.0.1:0";
  options.engine.prefix_caching = true;
  options.engine.kv_block_size = 16;
  std::unique_ptr<StreamgenServer> server = StartServer(options);
  ASSERT_NE(server, nullptr);
  auto stub = v1::TextGeneration::NewStub(Connect(server->port()));
  for (int i = 0; i < 2; ++i) {
    grpc::ClientContext context;
    auto reader = stub->Generate(&context, IdsRequest(40, 3, 10));
    v1::GenerateResponse response;
    while (reader->Read(&response)) {
    }
    ASSERT_TRUE(reader->Finish().ok());
  }
  std::string text;
  ASSERT_TRUE(WaitFor([&] {
    text = Scrape(server->metrics_port());
    return Value(text, "streamgen:prefix_cache_queries_total") == 80;
  })) << text;
  EXPECT_EQ(Value(text, "streamgen:prefix_cache_hits_total"), 32);
  EXPECT_THAT(text, HasSubstr("# TYPE streamgen:prefix_cache_hits_total counter\n"));
}

// ---- streamgen-server's scheduler flags, through the binary ----

std::string ServerPath() { return std::string(STREAMGEN_BINARY_DIR) + "/server/streamgen-server"; }

// Runs streamgen-server with `flags` until its port file appears; returns the
// GetModelInfo answer, then stops it with SIGTERM (exit 0 expected).
v1::ModelInfo InfoWithFlags(const std::vector<std::string>& flags) {
  std::string port_file = ::testing::TempDir() + "/metrics_test_port." + std::to_string(getpid());
  std::filesystem::remove(port_file);
  std::vector<std::string> args = {ServerPath(), "--model=" STREAMGEN_TINY_MODEL_DIR,
                                   "--listen=127.0.0.1:0",
                                   "--metrics-listen=", "--http-listen=",
                                   "--port-file=" + port_file};
  args.insert(args.end(), flags.begin(), flags.end());
  pid_t pid = fork();
  if (pid == 0) {
    std::vector<char*> argv;
    for (std::string& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  v1::ModelInfo info;
  int port = 0;
  EXPECT_TRUE(WaitFor([&] {
    std::ifstream file(port_file);
    return static_cast<bool>(file >> port) && port > 0;
  }));
  {
    auto stub = v1::TextGeneration::NewStub(Connect(port));
    grpc::Status status;
    EXPECT_TRUE(WaitFor([&] {  // UNAVAILABLE while the model loads
      grpc::ClientContext context;
      status = stub->GetModelInfo(&context, v1::GetModelInfoRequest(), &info);
      return status.error_code() != grpc::StatusCode::UNAVAILABLE;
    }));
    EXPECT_TRUE(status.ok()) << status.error_message();
  }  // the connection closes before SIGTERM (else the server waits for it)
  kill(pid, SIGTERM);
  int wait_status = 0;
  waitpid(pid, &wait_status, 0);
  EXPECT_TRUE(WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0);
  std::filesystem::remove(port_file);
  return info;
}

TEST(ServerFlagsTest, SchedulerFlagsReachGetModelInfo) {
  if (access(ServerPath().c_str(), X_OK) != 0) GTEST_SKIP() << ServerPath() << " is not built";
  v1::ModelInfo info =
      InfoWithFlags({"--max-batch=3", "--max-prefill-tokens=48", "--kv-block-size=8",
                     "--kv-cache-blocks=40", "--max-queue=5", "--enable-prefix-caching"});
  EXPECT_TRUE(info.limits().prefix_caching());
  EXPECT_FALSE(InfoWithFlags({}).limits().prefix_caching());
  EXPECT_EQ(info.limits().max_batch(), 3u);
  EXPECT_EQ(info.limits().max_queue(), 5u);
  EXPECT_EQ(info.limits().max_prefill_tokens(), 48u);
  EXPECT_EQ(info.limits().kv_block_size(), 8u);
  EXPECT_EQ(info.limits().kv_cache_blocks(), 40u);
  EXPECT_EQ(info.limits().kv_cache_tokens(), 320u);
  EXPECT_EQ(info.quantization(), "none");

  // --quantization int8 loads int8 weights, reports them, and changes the
  // fingerprint (a resume must not cross to a server with other weights).
  v1::ModelInfo int8 = InfoWithFlags({"--quantization=int8"});
  EXPECT_EQ(int8.quantization(), "int8");
  EXPECT_EQ(int8.dtype(), info.dtype());
  EXPECT_NE(int8.fingerprint(), info.fingerprint());
  EXPECT_EQ(InfoWithFlags({}).fingerprint(), info.fingerprint());

  // --kv-cache-memory sizes the pool when --kv-cache-blocks is 0 (the tiny
  // model's full-context cap is 16 x 32 blocks, far above these budgets).
  v1::ModelInfo one = InfoWithFlags({"--kv-cache-memory=1MiB"});
  v1::ModelInfo same = InfoWithFlags({"--kv-cache-memory=1048576"});
  v1::ModelInfo two = InfoWithFlags({"--kv-cache-memory=2MiB"});
  ASSERT_GT(one.limits().kv_cache_blocks(), 0u);
  EXPECT_EQ(same.limits().kv_cache_blocks(), one.limits().kv_cache_blocks());
  EXPECT_LT(one.limits().kv_cache_blocks(), 512u);
  EXPECT_GE(two.limits().kv_cache_blocks(), 2 * one.limits().kv_cache_blocks());
  EXPECT_LE(two.limits().kv_cache_blocks(), 2 * one.limits().kv_cache_blocks() + 1);
}

// The flag through the binary: /metrics of the HTTP face (the port the
// InferencePool's endpoint picker scrapes) carries the vllm: names only with
// --metrics-vllm-aliases, with the pool's real block size and block count.
std::string LoadedMetricsWithFlags(const std::vector<std::string>& flags) {
  std::string port_file =
      ::testing::TempDir() + "/metrics_test_http_port." + std::to_string(getpid());
  std::filesystem::remove(port_file);
  std::vector<std::string> args = {ServerPath(), "--model=" STREAMGEN_TINY_MODEL_DIR,
                                   "--listen=127.0.0.1:0", "--metrics-listen=",
                                   "--http-listen=127.0.0.1:0", "--http-port-file=" + port_file};
  args.insert(args.end(), flags.begin(), flags.end());
  pid_t pid = fork();
  if (pid == 0) {
    std::vector<char*> argv;
    for (std::string& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  int port = 0;
  EXPECT_TRUE(WaitFor([&] {
    std::ifstream file(port_file);
    return static_cast<bool>(file >> port) && port > 0;
  }));
  std::string text;
  EXPECT_TRUE(WaitFor([&] {  // the engine's gauges appear once the model is loaded
    text = port > 0 ? Scrape(port) : "";
    return text.find("streamgen:num_requests_running") != std::string::npos;
  })) << text;
  kill(pid, SIGTERM);
  int wait_status = 0;
  waitpid(pid, &wait_status, 0);
  EXPECT_TRUE(WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0);
  std::filesystem::remove(port_file);
  return text;
}

TEST(ServerFlagsTest, MetricsVllmAliasesFlag) {
  if (access(ServerPath().c_str(), X_OK) != 0) GTEST_SKIP() << ServerPath() << " is not built";
  std::string with = LoadedMetricsWithFlags(
      {"--metrics-vllm-aliases", "--kv-block-size=8", "--kv-cache-blocks=40"});
  EXPECT_THAT(with, HasSubstr("vllm:cache_config_info{block_size=\"8\",num_gpu_blocks=\"40\"} 1\n"));
  EXPECT_EQ(Value(with, "vllm:num_requests_waiting"), 0);
  EXPECT_EQ(Value(with, "vllm:num_requests_running"), 0);
  EXPECT_EQ(Value(with, "vllm:kv_cache_usage_perc"), 0);
  std::string without = LoadedMetricsWithFlags({});
  EXPECT_THAT(without, HasSubstr("streamgen:num_requests_waiting 0\n"));
  EXPECT_THAT(without, Not(HasSubstr("vllm:")));
}

// Runs a shell command: its wait status and its output.
std::pair<int, std::string> RunCommand(const std::string& command) {
  std::string output;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return {-1, "popen failed"};
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) output.append(buffer, n);
  return {pclose(pipe), output};
}

TEST(ServerFlagsTest, BadSchedulerFlagsAreRefusedByName) {
  if (access(ServerPath().c_str(), X_OK) != 0) GTEST_SKIP() << ServerPath() << " is not built";
  struct Case {
    std::string flag;
    std::string message;
  };
  for (const Case& c : std::vector<Case>{{"--kv-cache-memory=2XB", "--kv-cache-memory="},
                                         {"--kv-cache-blocks=-1", "--kv-cache-blocks"},
                                         {"--kv-block-size=0", "--kv-block-size"},
                                         {"--max-prefill-tokens=0", "--max-prefill-tokens"},
                                         {"--http-listen=localhost",
                                          "--http-listen=\\\"localhost\\\": no port"},
                                         {"--http-threads=-1", "--http-threads must be >= 0"},
                                         {"--quantization=int4",
                                          "unknown quantization 'int4': want none or int8"},
                                         {"--gpu-memory-fraction=1.5",
                                          "--gpu-memory-fraction must be in (0, 1]"},
                                         {"--gpu-memory-fraction=-0.1",
                                          "--gpu-memory-fraction must be in (0, 1]"},
                                         {"--generation-config=model",
                                          "--generation-config must be auto or none, got 'model'"},
                                         {"--gpu-memory-fraction=0.9",
                                          "gpu_memory_fraction applies to a CUDA device, not "
                                          "cpu"}}) {
    std::string command =
        absl::StrCat(ServerPath(), " --listen=127.0.0.1:0 --metrics-listen= --http-listen= ", c.flag, " 2>&1");
    auto [status, output] = RunCommand(command);
    EXPECT_EQ(WEXITSTATUS(status), 1) << c.flag << ": " << output;
    EXPECT_THAT(output, HasSubstr(c.message)) << c.flag;
  }
}

// A port already taken, for each HTTP listener (the HTTP face's and the
// metrics endpoint's, one transport): the server refuses to start and names
// the flag. The holder sets SO_REUSEPORT, as another streamgen would have with
// httplib's default socket options: the port must still count as taken (with
// SO_REUSEPORT on both sides, the kernel shared it silently).
TEST(ServerFlagsTest, HttpPortInUseIsRefusedByName) {
  if (access(ServerPath().c_str(), X_OK) != 0) GTEST_SKIP() << ServerPath() << " is not built";
  for (const char* flag : {"http-listen", "metrics-listen"}) {
    int taken = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(taken, 0);
    int yes = 1;
    ASSERT_EQ(setsockopt(taken, SOL_SOCKET, SO_REUSEPORT, &yes, sizeof(yes)), 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(bind(taken, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
    ASSERT_EQ(listen(taken, 1), 0);
    socklen_t length = sizeof(address);
    ASSERT_EQ(getsockname(taken, reinterpret_cast<sockaddr*>(&address), &length), 0);
    int port = ntohs(address.sin_port);
    std::string other = std::string(flag) == "http-listen" ? "metrics-listen" : "http-listen";
    std::string command = absl::StrCat(ServerPath(), " --listen=127.0.0.1:0 --", other, "= --",
                                       flag, "=127.0.0.1:", port, " 2>&1");
    auto [status, output] = RunCommand(command);
    close(taken);
    EXPECT_EQ(WEXITSTATUS(status), 1) << flag << ": " << output;
    EXPECT_THAT(output, HasSubstr(absl::StrCat("--", flag, "=127.0.0.1:", port,
                                               ": cannot listen there (in use?)")));
  }
}

}  // namespace
}  // namespace streamgen
