// The server's small pieces: API keys, metrics text, log lines, flag spelling.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
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

std::string Hex(const ApiKeys::Digest& digest) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char byte : digest) {
    out += kDigits[byte >> 4];
    out += kDigits[byte & 15];
  }
  return out;
}

TEST(AuthTest, KeepsOnlySha256Digests) {
  // FIPS 180-2's test vector.
  EXPECT_EQ(Hex(ApiKeys::Hash("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  absl::StatusOr<ApiKeys> keys = ApiKeys::FromText("abc\nsk-second-key\n", "k.txt");
  ASSERT_TRUE(keys.ok()) << keys.status();
  ASSERT_EQ(keys->digests().size(), 2u);
  EXPECT_EQ(keys->digests()[0], ApiKeys::Hash("abc"));
  EXPECT_EQ(keys->digests()[1], ApiKeys::Hash("sk-second-key"));
}

TEST(AuthTest, ComparesAgainstEveryKey) {
  // 300 keys (a file bigger than one 4 KiB read): each one is accepted,
  // the last as well as the first; near misses of each are not.
  std::string text;
  for (int i = 0; i < 300; ++i) text += "key-" + std::to_string(i) + "-0123456789abcdef\n";
  std::string path = ::testing::TempDir() + "/server_units_many_keys." + std::to_string(getpid());
  std::ofstream(path) << text;
  absl::StatusOr<ApiKeys> keys = ApiKeys::LoadFile(path);
  ASSERT_TRUE(keys.ok()) << keys.status();
  ASSERT_EQ(keys->size(), 300u);
  for (int i : {0, 1, 150, 299}) {
    std::string key = "key-" + std::to_string(i) + "-0123456789abcdef";
    EXPECT_TRUE(keys->Check("Bearer " + key).ok()) << key;
    std::string last_byte_differs = key;
    last_byte_differs.back() = 'g';
    for (const std::string& wrong : {last_byte_differs, key.substr(0, key.size() - 1), key + "0",
                                     std::string("x") + key.substr(1)}) {
      absl::Status status = keys->Check("Bearer " + wrong);
      EXPECT_EQ(status.code(), absl::StatusCode::kUnauthenticated) << wrong;
      EXPECT_EQ(status.message(), "invalid API key") << wrong;
    }
  }
  // The messages never carry what was presented.
  for (const char* presented : {"Bearer key-7-secret", "key-7-secret", "Basic key-7-secret"}) {
    EXPECT_THAT(std::string(keys->Check(presented).message()), Not(HasSubstr("key-7-secret")));
  }
  std::remove(path.c_str());
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
