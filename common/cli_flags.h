// Command-line helpers shared by every program of streamgen: the server, the
// clients, the tools and the benchmarks. No gRPC, no torch, no engine: a
// client may include it and still depend on the wire contract only.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace streamgen {

// abseil flag names are C++ identifiers (max_queue); the documented spelling
// uses dashes (--max-queue). Returns argv with the dashes in each flag's name
// turned into underscores ("--max-queue=3" -> "--max_queue=3"); values, the
// program name, positional arguments and everything after "--" are kept.
std::vector<std::string> NormalizeFlagNames(int argc, char** argv);

// Rewrites one argument's flag name in place: "--max-new-tokens=8" ->
// "--max_new_tokens=8" (single-dash names too); values and non-flag arguments
// are left alone. NormalizeFlagNames applies it to every flag before "--".
void NormalizeFlagArg(std::string* arg);

// --help as users type flags: when argv (before NormalizeFlagNames) holds
// --help, -help, -h or --helpfull, prints `usage`, then every flag defined in a
// source file whose path ends with one of `files`, sorted, each as
//   --max-new-tokens=VALUE  (default: 0)
//       Tokens to generate ...
// to stdout and returns true (the caller exits 0). The flag reference in
// docs/ is this output (scripts/flag-docs.sh). Not thread-safe (call from main).
bool PrintHelpIfAsked(int argc, char** argv, absl::string_view usage,
                      const std::vector<std::string>& files);
// The flags part of that help text (no usage line).
std::string FlagsHelp(const std::vector<std::string>& files);

// Keeps the strings alive and gives the char* array that absl::ParseCommandLine wants.
class ArgvHolder {
 public:
  explicit ArgvHolder(std::vector<std::string> args);
  int argc() const { return static_cast<int>(args_.size()); }
  char** argv() { return pointers_.data(); }

 private:
  std::vector<std::string> args_;
  std::vector<char*> pointers_;
};

// A listen address "host:port", "[v6]:port" or ":port" (any address).
struct HostPort {
  std::string host;  // "" for ":port"; brackets removed for IPv6
  int port = 0;
};
// INVALID_ARGUMENT naming `flag` when `address` is not host:port with a port in [0, 65535].
absl::StatusOr<HostPort> ParseHostPort(absl::string_view address, absl::string_view flag);

// A size in bytes: "1073741824", "512MiB", "2GiB", "1.5GB", "64KiB" (units B,
// KB/MB/GB/TB = powers of 1000, KiB/MiB/GiB/TiB = powers of 1024, case-insensitive).
// INVALID_ARGUMENT naming `flag` when it is not a positive size.
absl::StatusOr<int64_t> ParseByteSize(absl::string_view text, absl::string_view flag);

}  // namespace streamgen
