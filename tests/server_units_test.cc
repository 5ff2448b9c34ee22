// The server's small pieces: API keys, metrics text, log lines, flag spelling.
#include <unistd.h>

#include <algorithm>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/auth.h"
#include "common/cli_flags.h"
#include "server/logging.h"
#include "server/metrics.h"

namespace streamgen {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

// ---- API keys ----

TEST(AuthTest, ParsesBearerTokens) {
  EXPECT_EQ(ParseBearerToken("Bearer abc"), absl::string_view("abc"));
  EXPECT_EQ(ParseBearerToken("bearer   abc  "), absl::string_view("abc"));
  EXPECT_EQ(ParseBearerToken("BEARER\tabc"), absl::string_view("abc"));
  EXPECT_FALSE(ParseBearerToken("Bearer").has_value());
  EXPECT_FALSE(ParseBearerToken("Bearer   ").has_value());
  EXPECT_FALSE(ParseBearerToken("Basic abc").has_value());
  EXPECT_FALSE(ParseBearerToken("Bearerabc").has_value());
  EXPECT_FALSE(ParseBearerToken("abc").has_value());
}

TEST(AuthTest, ChecksKeys) {
  absl::StatusOr<ApiKeys> keys = ApiKeys::FromText("# keys\n  key-one \n\nkey-two\n", "keys.txt");
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_EQ(keys->size(), 2u);
  EXPECT_TRUE(keys->Check("Bearer key-one").ok());
  EXPECT_TRUE(keys->Check("Bearer key-two").ok());
  absl::Status missing = keys->Check(std::nullopt);
  EXPECT_EQ(missing.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(std::string(missing.message()), HasSubstr("missing API key"));
  absl::Status wrong = keys->Check("Bearer key-three");
  EXPECT_EQ(wrong.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(std::string(wrong.message()), HasSubstr("invalid API key"));
  EXPECT_EQ(keys->Check("Bearer key-on").code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(keys->Check("Bearer key-one1").code(), absl::StatusCode::kUnauthenticated);
  absl::Status malformed = keys->Check("key-one");
  EXPECT_THAT(std::string(malformed.message()), HasSubstr("expected 'Bearer <key>'"));
}

TEST(AuthTest, NoKeysAllowsEverything) {
  ApiKeys keys;
  EXPECT_FALSE(keys.enabled());
  EXPECT_TRUE(keys.Check(std::nullopt).ok());
}

TEST(AuthTest, BadKeyFiles) {
  absl::StatusOr<ApiKeys> empty = ApiKeys::FromText("# only a comment\n\n", "k.txt");
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(empty.status().message()), HasSubstr("k.txt: no API key"));
  absl::StatusOr<ApiKeys> spaced = ApiKeys::FromText("good\nbad key\n", "k.txt");
  EXPECT_THAT(std::string(spaced.status().message()), HasSubstr("k.txt:2"));
  absl::StatusOr<ApiKeys> absent = ApiKeys::LoadFile("/nonexistent/keys.txt");
  EXPECT_EQ(absent.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(absent.status().message()),
              HasSubstr("--api-key-file: cannot read /nonexistent/keys.txt"));
}

TEST(AuthTest, LoadsAFile) {
  std::string path = ::testing::TempDir() + "/server_units_keys." + std::to_string(getpid());
  std::ofstream(path) << "alpha\n";
  absl::StatusOr<ApiKeys> keys = ApiKeys::LoadFile(path);
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_TRUE(keys->Check("Bearer alpha").ok());
}

// ---- metrics ----

TEST(MetricsTest, RendersPrometheusText) {
  Metrics metrics;
  metrics.RecordRequest("Generate", "OK");
  metrics.RecordRequest("Generate", "OK");
  metrics.RecordRequest("Generate", "INVALID_ARGUMENT");
  metrics.RecordRequest("Tokenize", "OK");
  metrics.RecordGeneration(5, 7, "length");
  metrics.RecordGeneration(3, 1, "eos");
  metrics.StreamStarted();
  metrics.SetModelLoaded(true);
  std::string text = metrics.Render(nullptr);
  EXPECT_THAT(text, HasSubstr("# TYPE streamgen_requests_total counter\n"));
  EXPECT_THAT(text, HasSubstr("streamgen_requests_total{method=\"Generate\",code=\"OK\"} 2\n"));
  EXPECT_THAT(text, HasSubstr(
      "streamgen_requests_total{method=\"Generate\",code=\"INVALID_ARGUMENT\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("streamgen_requests_total{method=\"Tokenize\",code=\"OK\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("streamgen_prompt_tokens_total 8\n"));
  EXPECT_THAT(text, HasSubstr("streamgen_completion_tokens_total 8\n"));
  EXPECT_THAT(text, HasSubstr("streamgen_generations_total{finish_reason=\"length\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE streamgen_active_streams gauge\nstreamgen_active_streams 1\n"));
  EXPECT_THAT(text, HasSubstr("streamgen_model_loaded 1\n"));
  EXPECT_THAT(text, Not(HasSubstr("streamgen_engine_")));
  // Every line is a comment or "name[{labels}] value".
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    if (line[0] == '#') {
      EXPECT_TRUE(absl::StartsWith(line, "# HELP ") || absl::StartsWith(line, "# TYPE ")) << line;
    } else {
      EXPECT_EQ(std::count(line.begin(), line.end(), ' ') -
                    std::count(line.begin(), line.begin() + line.find('}') + 1, ' '),
                1)
          << line;
    }
  }
}

TEST(MetricsTest, EngineStatsAreRendered) {
  Metrics metrics;
  EngineStats stats;
  stats.waiting = 2;
  stats.running = 3;
  stats.cancelled = 4;
  stats.generated_tokens = 99;
  std::string text = metrics.Render(&stats);
  EXPECT_THAT(text, HasSubstr("streamgen_engine_waiting_requests 2\n"));
  EXPECT_THAT(text, HasSubstr("streamgen_engine_running_requests 3\n"));
  EXPECT_THAT(text, HasSubstr("streamgen_engine_cancelled_total 4\n"));
  EXPECT_THAT(text, HasSubstr("streamgen_engine_generated_tokens_total 99\n"));
}

TEST(MetricsTest, EscapesLabelValues) {
  EXPECT_EQ(EscapeLabelValue("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
}

// ---- log lines ----

TEST(LoggingTest, PlainPayloads) {
  EXPECT_EQ(FormatPayload(LogFormat::kText, "hello"), "hello");
  EXPECT_EQ(FormatPayload(LogFormat::kJson, "say \"hi\"\n"), "{\"msg\":\"say \\\"hi\\\"\\n\"}");
}

TEST(LoggingTest, StructuredPayloads) {
  std::string payload = "\x1f{\"msg\":\"Generate\",\"request_id\":\"r 1\",\"prompt_tokens\":5}";
  EXPECT_EQ(FormatPayload(LogFormat::kText, payload),
            "Generate request_id=\"r 1\" prompt_tokens=5");
  EXPECT_EQ(FormatPayload(LogFormat::kJson, payload),
            "{\"msg\":\"Generate\",\"request_id\":\"r 1\",\"prompt_tokens\":5}");
}

TEST(LoggingTest, ParsesTheFormatFlag) {
  EXPECT_EQ(*ParseLogFormat("json"), LogFormat::kJson);
  EXPECT_EQ(*ParseLogFormat("text"), LogFormat::kText);
  EXPECT_THAT(std::string(ParseLogFormat("xml").status().message()), HasSubstr("--log-format=xml"));
}

// ---- flags ----

TEST(CliFlagsTest, DashesInFlagNamesBecomeUnderscores) {
  const char* argv[] = {"prog", "--max-queue=3", "--api-key-file", "/a-b/c-d", "gen-erate",
                        "-max-batch=2", "--", "--not-a-flag"};
  std::vector<std::string> out = NormalizeFlagNames(8, const_cast<char**>(argv));
  EXPECT_THAT(out, ElementsAre("prog", "--max_queue=3", "--api_key_file", "/a-b/c-d",
                               "gen-erate", "-max_batch=2", "--", "--not-a-flag"));
  EXPECT_EQ(NormalizeFlagNames(2, const_cast<char**>(
                                      std::vector<const char*>{"p", "--stop=a-b"}.data()))[1],
            "--stop=a-b");
}

TEST(CliFlagsTest, ParsesHostPort) {
  EXPECT_EQ(ParseHostPort("0.0.0.0:9090", "x")->port, 9090);
  EXPECT_EQ(ParseHostPort(":0", "x")->host, "");
  EXPECT_EQ(ParseHostPort("[::1]:80", "x")->host, "::1");
  absl::StatusOr<HostPort> bad = ParseHostPort("localhost", "metrics-listen");
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("--metrics-listen=\"localhost\""));
  EXPECT_FALSE(ParseHostPort("h:99999", "x").ok());
  EXPECT_FALSE(ParseHostPort("h:abc", "x").ok());
}

}  // namespace
}  // namespace streamgen
