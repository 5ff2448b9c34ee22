#include "server/http_cors.h"

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace streamgen {
namespace {

// The response headers a browser script may read besides the safelisted ones.
constexpr char kCorsExposedHeaders[] = "X-Request-Id, X-Seed, Retry-After";

// scheme://host[:port], the scheme http or https, nothing after the authority.
bool IsOrigin(absl::string_view text) {
  absl::string_view rest = text;
  if (!absl::ConsumePrefix(&rest, "https://") && !absl::ConsumePrefix(&rest, "http://")) {
    return false;
  }
  if (rest.empty() || rest.front() == ':' || rest.back() == ':') return false;
  for (char c : rest) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.' && c != ':' &&
        c != '[' && c != ']') {
      return false;
    }
  }
  return true;
}

// The request headers a preflight may ask for: what the face reads, and what
// the official OpenAI JavaScript client sends (X-Stainless-*, OpenAI-*).
bool AllowedRequestHeader(absl::string_view lower_name) {
  for (absl::string_view name : {"authorization", "content-type", "accept", "x-request-id",
                                 "openai-organization", "openai-project"}) {
    if (lower_name == name) return true;
  }
  return absl::StartsWith(lower_name, "x-stainless-");
}

void AddVaryOrigin(httplib::Headers& headers) {
  auto it = headers.find("Vary");
  if (it == headers.end()) {
    headers.emplace("Vary", "Origin");
  } else if (!absl::StrContains(absl::AsciiStrToLower(it->second), "origin")) {
    it->second += ", Origin";
  }
}

}  // namespace

absl::StatusOr<CorsPolicy> CorsPolicy::Parse(absl::string_view flag) {
  CorsPolicy policy;
  if (absl::StripAsciiWhitespace(flag).empty()) return policy;
  policy.on_ = true;
  for (absl::string_view part : absl::StrSplit(flag, ',')) {
    part = absl::StripAsciiWhitespace(part);
    if (part == "*") {
      policy.any_ = true;
    } else if (IsOrigin(part)) {
      policy.origins_.push_back(absl::AsciiStrToLower(part));
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "--cors-allow-origin: '", part,
          "' is not an origin: give scheme://host[:port] "
          "(like https://app.example.com, no path and no trailing slash), a comma-separated "
          "list of them, or *"));
    }
  }
  if (policy.any_ && !policy.origins_.empty()) {
    return absl::InvalidArgumentError(
        "--cors-allow-origin: * allows every origin; give it alone, not in a list");
  }
  return policy;
}

bool CorsPolicy::Allows(absl::string_view origin) const {
  if (any_) return true;
  for (const std::string& allowed : origins_) {
    if (absl::EqualsIgnoreCase(origin, allowed)) return true;
  }
  return false;
}

void CorsPolicy::AddHeaders(absl::string_view origin, httplib::Headers& headers) const {
  if (!on_) return;
  // The answer depends on Origin: caches must keep one per origin.
  AddVaryOrigin(headers);
  if (origin.empty() || !Allows(origin)) return;
  headers.erase("Access-Control-Allow-Origin");
  headers.emplace("Access-Control-Allow-Origin", any_ ? "*" : std::string(origin));
  headers.erase("Access-Control-Expose-Headers");
  headers.emplace("Access-Control-Expose-Headers", kCorsExposedHeaders);
}

std::string CorsPolicy::AllowHeaders(absl::string_view requested) {
  std::vector<std::string> allowed;
  for (absl::string_view name : absl::StrSplit(requested, ',')) {
    std::string lower = absl::AsciiStrToLower(absl::StripAsciiWhitespace(name));
    if (!lower.empty() && AllowedRequestHeader(lower)) allowed.push_back(std::move(lower));
  }
  return absl::StrJoin(allowed, ", ");
}

}  // namespace streamgen
