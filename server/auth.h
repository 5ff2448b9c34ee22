// API keys: bearer tokens in the `authorization` metadata (gRPC) or header (HTTP)
// ("authorization: Bearer <key>"). Health and reflection never ask for one.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace streamgen {

class ApiKeys {
 public:
  // Reads keys from `path`: one per line; blank lines and lines starting with
  // '#' are skipped, surrounding whitespace is trimmed. NOT_FOUND when the file
  // cannot be read, INVALID_ARGUMENT (naming the file and line) when it holds
  // no key or a key with inner whitespace.
  static absl::StatusOr<ApiKeys> LoadFile(const std::string& path);
  static absl::StatusOr<ApiKeys> FromText(absl::string_view text, absl::string_view origin);

  // No keys: every call is allowed.
  ApiKeys() = default;

  bool enabled() const { return !keys_.empty(); }
  size_t size() const { return keys_.size(); }

  // Thread-safe (const). OK when keys are off or `authorization` (the
  // metadata's value; nullopt when absent) is "Bearer <a configured key>";
  // UNAUTHENTICATED with a message saying what was wrong otherwise. Compares in
  // time independent of where the key differs.
  absl::Status Check(std::optional<absl::string_view> authorization) const;

 private:
  std::vector<std::string> keys_;
};

// "Bearer <token>" (scheme case-insensitive, spaces around trimmed) -> token.
std::optional<absl::string_view> ParseBearerToken(absl::string_view authorization);

}  // namespace streamgen
