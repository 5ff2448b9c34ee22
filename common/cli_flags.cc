#include "common/cli_flags.h"

#include <cmath>
#include <utility>

#include <algorithm>
#include <cstdio>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace streamgen {

void NormalizeFlagArg(std::string* arg) {
  if (arg->size() < 3 || (*arg)[0] != '-') return;
  const size_t start = (*arg)[1] == '-' ? 2 : 1;
  size_t end = arg->find('=');
  if (end == std::string::npos) end = arg->size();
  for (size_t k = start; k < end; ++k) {
    if ((*arg)[k] == '-') (*arg)[k] = '_';
  }
}

std::vector<std::string> NormalizeFlagNames(int argc, char** argv) {
  std::vector<std::string> out;
  bool flags_ended = false;
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--") flags_ended = true;
    if (i > 0 && !flags_ended) NormalizeFlagArg(&arg);
    out.push_back(std::move(arg));
  }
  return out;
}

std::string FlagsHelp(const std::vector<std::string>& files) {
  std::vector<const absl::CommandLineFlag*> flags;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    const std::string file = flag->Filename();
    for (const std::string& suffix : files) {
      if (absl::EndsWith(file, suffix)) {
        flags.push_back(flag);
        break;
      }
    }
  }
  std::sort(flags.begin(), flags.end(), [](const auto* a, const auto* b) { return a->Name() < b->Name(); });
  std::string out;
  for (const absl::CommandLineFlag* flag : flags) {
    const std::string name = absl::StrReplaceAll(flag->Name(), {{"_", "-"}});
    std::string value = flag->DefaultValue();
    if (value.empty()) value = "\"\"";
    absl::StrAppend(&out, "  --", name, "  (default: ", value, ")\n      ", flag->Help(), "\n");
  }
  return out;
}

bool PrintHelpIfAsked(int argc, char** argv, absl::string_view usage,
                      const std::vector<std::string>& files) {
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (arg == "--") break;
    if (arg == "--help" || arg == "-help" || arg == "-h" || arg == "--helpfull") {
      std::fputs(absl::StrCat(usage, "\n\nFlags (--name=VALUE or --name VALUE; booleans "
                              "--name / --noname):\n", FlagsHelp(files)).c_str(), stdout);
      return true;
    }
  }
  return false;
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

absl::StatusOr<int64_t> ParseByteSize(absl::string_view text, absl::string_view flag) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--", flag, "=\"", text, "\": ", why, " (expected bytes, or e.g. 512MiB, 2GiB, 1.5GB)"));
  };
  absl::string_view number = absl::StripAsciiWhitespace(text);
  size_t unit_start = number.find_first_not_of("0123456789.");
  absl::string_view unit;
  if (unit_start != absl::string_view::npos) {
    unit = absl::StripAsciiWhitespace(number.substr(unit_start));
    number = number.substr(0, unit_start);
  }
  static const std::pair<const char*, double> kUnits[] = {{"", 1.0},
                                                          {"b", 1.0},
                                                          {"kb", 1e3},
                                                          {"mb", 1e6},
                                                          {"gb", 1e9},
                                                          {"tb", 1e12},
                                                          {"kib", 1024.0},
                                                          {"mib", 1048576.0},
                                                          {"gib", 1073741824.0},
                                                          {"tib", 1099511627776.0}};
  double scale = 0;
  std::string lower = absl::AsciiStrToLower(unit);
  for (const auto& [name, factor] : kUnits) {
    if (lower == name) scale = factor;
  }
  if (scale == 0) return bad(absl::StrCat("unknown unit '", unit, "'"));
  double value = 0;
  if (number.empty() || !absl::SimpleAtod(number, &value)) return bad("not a number");
  double bytes = std::floor(value * scale);
  if (!(bytes >= 1) || bytes > 9.0e18) return bad("not a positive size");
  return static_cast<int64_t>(bytes);
}

}  // namespace streamgen
