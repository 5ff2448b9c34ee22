// Command-line helpers shared by streamgen's programs (header-only).
#pragma once

#include <string>

namespace streamgen {

// absl flags are spelled with underscores; our documented flags use dashes
// (--max-new-tokens). Rewrites "--max-new-tokens[=v]" to "--max_new_tokens[=v]"
// in place, for every argument before a bare "--", so both spellings work.
inline void NormalizeFlagDashes(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--") break;
    if (arg.size() < 3 || arg[0] != '-' || arg[1] != '-') continue;
    for (size_t j = 2; j < arg.size() && arg[j] != '='; ++j) {
      if (arg[j] == '-') argv[i][j] = '_';
    }
  }
}

}  // namespace streamgen
