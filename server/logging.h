// The server's log: spdlog, one line per event, as text or JSON lines.
// Structured events (LogEvent) keep their fields as JSON keys in JSON mode and
// as key=value pairs in text mode; plain spdlog lines (the engine's) work too.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"

namespace streamgen {

enum class LogFormat { kText, kJson };

// "text" | "json"; INVALID_ARGUMENT naming --log-format otherwise.
absl::StatusOr<LogFormat> ParseLogFormat(absl::string_view name);

// Makes spdlog's default logger an asynchronous stderr logger in `format`
// (a full queue drops the oldest line: logging never blocks the engine).
void InitLogging(LogFormat format);
// Flushes and stops the logger (call before exit).
void ShutdownLogging();

// Logs `message` with `fields` (a JSON object) at `level`. Thread-safe.
void LogEvent(spdlog::level::level_enum level, absl::string_view message,
              const nlohmann::ordered_json& fields);

// The line LogEvent writes for a payload (without the time and level prefix
// in text mode, without "ts"/"level" in JSON mode): exposed for tests.
std::string FormatPayload(LogFormat format, absl::string_view payload);

}  // namespace streamgen
