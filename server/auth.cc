#include "server/auth.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <vector>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace streamgen {
namespace {

// A key file's bytes, wiped when it goes.
class WipedBuffer {
 public:
  WipedBuffer() = default;
  WipedBuffer(const WipedBuffer&) = delete;
  WipedBuffer& operator=(const WipedBuffer&) = delete;
  ~WipedBuffer() { OPENSSL_cleanse(bytes_.data(), bytes_.size()); }

  // Appends up to `n` bytes read from `fd`: the count, 0 at the end, -1 on error.
  // Grows by copying into a fresh buffer and wiping the old one.
  ssize_t ReadFrom(int fd, size_t n) {
    if (used_ + n > bytes_.size()) {
      std::vector<char> bigger(std::max(used_ + n, 2 * bytes_.size()));
      std::copy(bytes_.begin(), bytes_.begin() + used_, bigger.begin());
      OPENSSL_cleanse(bytes_.data(), bytes_.size());
      bytes_.swap(bigger);
    }
    ssize_t got;
    do {
      got = read(fd, bytes_.data() + used_, n);
    } while (got < 0 && errno == EINTR);
    if (got > 0) used_ += static_cast<size_t>(got);
    return got;
  }

  absl::string_view view() const { return absl::string_view(bytes_.data(), used_); }

 private:
  std::vector<char> bytes_;
  size_t used_ = 0;
};

}  // namespace

ApiKeys::Digest ApiKeys::Hash(absl::string_view key) {
  Digest digest;
  SHA256(reinterpret_cast<const unsigned char*>(key.data()), key.size(), digest.data());
  return digest;
}

absl::StatusOr<ApiKeys> ApiKeys::LoadFile(const std::string& path) {
  // POSIX reads straight into one buffer (no stream buffers holding copies).
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::NotFoundError(absl::StrCat("--api-key-file: cannot read ", path));
  WipedBuffer text;
  ssize_t got;
  while ((got = text.ReadFrom(fd, 4096)) > 0) {
  }
  close(fd);
  if (got < 0) return absl::NotFoundError(absl::StrCat("--api-key-file: cannot read ", path));
  return FromText(text.view(), path);
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
    keys.digests_.push_back(Hash(line));
  }
  if (keys.digests_.empty()) {
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
  // Digests have one length whatever the key's: every comparison takes the
  // same time, and all of them are made (no early exit on a match).
  Digest presented = Hash(*token);
  int matched = 0;
  for (const Digest& digest : digests_) {
    matched |= CRYPTO_memcmp(presented.data(), digest.data(), digest.size()) == 0;
  }
  OPENSSL_cleanse(presented.data(), presented.size());
  if (matched == 0) return absl::UnauthenticatedError("invalid API key");
  return absl::OkStatus();
}

}  // namespace streamgen
