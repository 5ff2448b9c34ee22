// Command-line helpers shared by streamgen's programs (header-only).
#pragma once

#include <string>

namespace streamgen {

// absl flags are spelled with underscores; our documented flags use dashes
// (--max-new-tokens). Rewrites one argument's flag name in place:
// "--max-new-tokens=8" -> "--max_new_tokens=8" ("-" prefixed names too);
// values and non-flag arguments are left alone.
inline void NormalizeFlagArg(std::string* arg) {
  if (arg->size() < 3 || (*arg)[0] != '-') return;
  const size_t start = (*arg)[1] == '-' ? 2 : 1;
  size_t end = arg->find('=');
  if (end == std::string::npos) end = arg->size();
  for (size_t k = start; k < end; ++k) {
    if ((*arg)[k] == '-') (*arg)[k] = '_';
  }
}

// NormalizeFlagArg for every argument before a bare "--", in place (names
// only shrink or keep their length, so argv's buffers suffice).
inline void NormalizeFlagDashes(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--") break;
    NormalizeFlagArg(&arg);
    arg.copy(argv[i], arg.size());
  }
}

}  // namespace streamgen
