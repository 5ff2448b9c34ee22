#include "server/cli_flags.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace streamgen {

std::vector<std::string> NormalizeFlagNames(int argc, char** argv) {
  std::vector<std::string> out;
  bool flags_ended = false;
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--") flags_ended = true;
    if (i == 0 || flags_ended || arg.size() < 3 || arg[0] != '-') {
      out.push_back(std::move(arg));
      continue;
    }
    size_t start = arg[1] == '-' ? 2 : 1;
    size_t end = arg.find('=');
    if (end == std::string::npos) end = arg.size();
    for (size_t k = start; k < end; ++k) {
      if (arg[k] == '-') arg[k] = '_';
    }
    out.push_back(std::move(arg));
  }
  return out;
}

ArgvHolder::ArgvHolder(std::vector<std::string> args) : args_(std::move(args)) {
  for (std::string& arg : args_) pointers_.push_back(arg.data());
  pointers_.push_back(nullptr);
}

absl::StatusOr<HostPort> ParseHostPort(absl::string_view address, absl::string_view flag) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, "=\"", address, "\": ", why, " (expected HOST:PORT)"));
  };
  size_t colon = address.rfind(':');
  if (colon == absl::string_view::npos) return bad("no port");
  HostPort result;
  absl::string_view host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  result.host = std::string(host);
  if (!absl::SimpleAtoi(address.substr(colon + 1), &result.port) || result.port < 0 ||
      result.port > 65535) {
    return bad("the port is not a number in [0, 65535]");
  }
  return result;
}

}  // namespace streamgen
