#include "server/auth.h"

#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace streamgen {
namespace {

// Constant-time for equal lengths; the length itself is not secret.
bool SameKey(absl::string_view a, absl::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

}  // namespace

absl::StatusOr<ApiKeys> ApiKeys::LoadFile(const std::string& path) {
  std::ifstream file(path);
  if (!file) return absl::NotFoundError(absl::StrCat("--api-key-file: cannot read ", path));
  std::stringstream text;
  text << file.rdbuf();
  return FromText(text.str(), path);
}

absl::StatusOr<ApiKeys> ApiKeys::FromText(absl::string_view text, absl::string_view origin) {
  ApiKeys keys;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    for (char c : line) {
      if (absl::ascii_isspace(static_cast<unsigned char>(c))) {
        return absl::InvalidArgumentError(absl::StrCat(
            origin, ":", line_number, ": an API key must not contain whitespace"));
      }
    }
    keys.keys_.emplace_back(line);
  }
  if (keys.keys_.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(origin, ": no API key in the file"));
  }
  return keys;
}

std::optional<absl::string_view> ParseBearerToken(absl::string_view authorization) {
  authorization = absl::StripAsciiWhitespace(authorization);
  constexpr absl::string_view kScheme = "bearer";
  if (authorization.size() <= kScheme.size() ||
      !absl::EqualsIgnoreCase(authorization.substr(0, kScheme.size()), kScheme) ||
      !absl::ascii_isspace(static_cast<unsigned char>(authorization[kScheme.size()]))) {
    return std::nullopt;
  }
  absl::string_view token = absl::StripAsciiWhitespace(authorization.substr(kScheme.size()));
  if (token.empty()) return std::nullopt;
  return token;
}

absl::Status ApiKeys::Check(std::optional<absl::string_view> authorization) const {
  if (!enabled()) return absl::OkStatus();
  if (!authorization.has_value()) {
    return absl::UnauthenticatedError(
        "missing API key: send 'authorization: Bearer <key>' (gRPC metadata or HTTP header)");
  }
  std::optional<absl::string_view> token = ParseBearerToken(*authorization);
  if (!token.has_value()) {
    return absl::UnauthenticatedError(
        "malformed 'authorization' (gRPC metadata or HTTP header): expected 'Bearer <key>'");
  }
  bool found = false;
  for (const std::string& key : keys_) found |= SameKey(*token, key);
  if (!found) return absl::UnauthenticatedError("invalid API key");
  return absl::OkStatus();
}

}  // namespace streamgen
