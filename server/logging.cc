#include "server/logging.h"

#include <atomic>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "spdlog/async.h"
#include "spdlog/formatter.h"
#include "spdlog/sinks/stdout_sinks.h"

namespace streamgen {
namespace {

// Structured payloads start with this byte, followed by a JSON object.
constexpr char kStructured = '\x1f';
std::atomic<bool> g_initialized{false};

std::string TextValue(const nlohmann::ordered_json& value) {
  // Strings are quoted (and escaped: no line can be split by a client's value).
  return value.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

class LineFormatter : public spdlog::formatter {
 public:
  explicit LineFormatter(LogFormat format) : format_(format) {}

  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    absl::Time time = absl::FromChrono(msg.time);
    std::string line;
    absl::string_view payload(msg.payload.data(), msg.payload.size());
    std::string level(spdlog::level::to_string_view(msg.level).data(),
                      spdlog::level::to_string_view(msg.level).size());
    if (format_ == LogFormat::kJson) {
      nlohmann::ordered_json head;
      head["ts"] = absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", time, absl::UTCTimeZone());
      head["level"] = level;
      nlohmann::ordered_json object = Parse(payload);
      for (const auto& [key, value] : object.items()) head[key] = value;
      line = TextValue(head);
    } else {
      line = absl::StrCat(absl::FormatTime("%Y-%m-%d %H:%M:%E3S", time, absl::LocalTimeZone()),
                          " ", level, " ", FormatPayload(LogFormat::kText, payload));
    }
    line += '\n';
    dest.append(line.data(), line.data() + line.size());
  }

  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<LineFormatter>(format_);
  }

  static nlohmann::ordered_json Parse(absl::string_view payload) {
    if (!payload.empty() && payload[0] == kStructured) {
      nlohmann::ordered_json object = nlohmann::ordered_json::parse(payload.substr(1), nullptr, false);
      if (object.is_object()) return object;
    }
    nlohmann::ordered_json object;
    object["msg"] = std::string(payload);
    return object;
  }

 private:
  LogFormat format_;
};

}  // namespace

absl::StatusOr<LogFormat> ParseLogFormat(absl::string_view name) {
  if (name == "text") return LogFormat::kText;
  if (name == "json") return LogFormat::kJson;
  return absl::InvalidArgumentError(
      absl::StrCat("--log-format=", name, ": expected \"text\" or \"json\""));
}

std::string FormatPayload(LogFormat format, absl::string_view payload) {
  nlohmann::ordered_json object = LineFormatter::Parse(payload);
  if (format == LogFormat::kJson) return TextValue(object);
  std::string line = object.value("msg", "");
  for (const auto& [key, value] : object.items()) {
    if (key == "msg") continue;
    absl::StrAppend(&line, " ", key, "=", TextValue(value));
  }
  return line;
}

void InitLogging(LogFormat format) {
  spdlog::init_thread_pool(8192, 1);
  auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  auto logger = std::make_shared<spdlog::async_logger>(
      "streamgen", sink, spdlog::thread_pool(), spdlog::async_overflow_policy::overrun_oldest);
  logger->set_formatter(std::make_unique<LineFormatter>(format));
  spdlog::set_default_logger(logger);
  g_initialized = true;
}

void ShutdownLogging() { spdlog::shutdown(); }

void LogEvent(spdlog::level::level_enum level, absl::string_view message,
              const nlohmann::ordered_json& fields) {
  nlohmann::ordered_json object;
  object["msg"] = std::string(message);
  if (fields.is_object()) {
    for (const auto& [key, value] : fields.items()) object[key] = value;
  }
  std::string payload(1, kStructured);
  payload += TextValue(object);
  // Without InitLogging (tests), spdlog's default formatter prints the text form.
  if (!g_initialized) payload = FormatPayload(LogFormat::kText, payload);
  spdlog::log(level, "{}", payload);
}

}  // namespace streamgen
