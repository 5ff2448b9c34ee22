// CORS for the HTTP face (--cors-allow-origin): which origins a browser may
// call the server from, and the headers that say so. Immutable once parsed;
// thread-safe.
#pragma once

// Debian's libcpp-httplib.so is built with OpenSSL, zlib and brotli; its
// pkg-config Cflags define the same CPPHTTPLIB_* macros for this header.
#include <httplib.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace streamgen {

class CorsPolicy {
 public:
  // `flag`: "" (off: no CORS header at all), "*" (any origin), or a
  // comma-separated list of exact origins ("https://app.example.com,
  // http://localhost:5173"). INVALID_ARGUMENT naming --cors-allow-origin and
  // the part that is not an origin.
  static absl::StatusOr<CorsPolicy> Parse(absl::string_view flag);

  bool on() const { return on_; }
  bool Allows(absl::string_view origin) const;
  // The CORS response headers for a request from `origin` ("" : none): Vary:
  // Origin whenever CORS is on, and the allowed origin and the exposed
  // headers when `origin` is allowed.
  void AddHeaders(absl::string_view origin, httplib::Headers& headers) const;
  // Access-Control-Allow-Headers for a preflight's
  // Access-Control-Request-Headers: the requested names that are allowed
  // ("" : none).
  static std::string AllowHeaders(absl::string_view requested);

 private:
  bool on_ = false;                   // else: no CORS header at all
  bool any_ = false;                  // "*"
  std::vector<std::string> origins_;  // lower case
};

}  // namespace streamgen
