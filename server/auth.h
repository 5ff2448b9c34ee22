// API keys: bearer tokens in the `authorization` metadata (gRPC) or header (HTTP)
// ("authorization: Bearer <key>"). Health and reflection never ask for one.
//
// Only the keys' SHA-256 digests are kept: a presented key is hashed and its
// digest compared with every configured digest by OpenSSL's CRYPTO_memcmp,
// with no early exit, so the time taken depends on neither which key matched
// nor where a wrong key differs (only on how many keys are configured).
#pragma once

#include <array>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace streamgen {

class ApiKeys {
 public:
  using Digest = std::array<unsigned char, 32>;  // SHA-256

  // Reads keys from `path`: one per line; blank lines and lines starting with
  // '#' are skipped, surrounding whitespace is trimmed. NOT_FOUND when the file
  // cannot be read, INVALID_ARGUMENT (naming the file and line, never a key)
  // when it holds no key or a key with inner whitespace. The file's bytes are
  // wiped from memory once hashed.
  static absl::StatusOr<ApiKeys> LoadFile(const std::string& path);
  // The same from `text` (which stays the caller's; no copy of a key is kept).
  static absl::StatusOr<ApiKeys> FromText(absl::string_view text, absl::string_view origin);

  // No keys: every call is allowed.
  ApiKeys() = default;

  bool enabled() const { return !digests_.empty(); }
  size_t size() const { return digests_.size(); }

  // Thread-safe (const). OK when keys are off or `authorization` (the
  // metadata's value; nullopt when absent) is "Bearer <a configured key>";
  // UNAUTHENTICATED with a message saying what was wrong otherwise (the
  // message never contains the presented value).
  absl::Status Check(std::optional<absl::string_view> authorization) const;

  // SHA-256 of `key`.
  static Digest Hash(absl::string_view key);
  // What is kept: one digest per configured key, in file order (for tests).
  const std::vector<Digest>& digests() const { return digests_; }

 private:
  std::vector<Digest> digests_;
};

// "Bearer <token>" (scheme case-insensitive, spaces around trimmed) -> token.
std::optional<absl::string_view> ParseBearerToken(absl::string_view authorization);

}  // namespace streamgen
