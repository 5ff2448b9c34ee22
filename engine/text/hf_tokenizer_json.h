// Reading tokenizer.json fast: the file of a large vocabulary (Gemma 3: 33 MB,
// 262k pieces, 515k merges) is mostly model.vocab and model.merges. Building
// a JSON DOM for them costs more than the rest of loading together, so one
// SAX pass (nlohmann::json::sax_parse) takes those two straight into vectors
// and builds the DOM only for everything else (where they are left empty).
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace streamgen::hf {

struct TokenizerJson {
  nlohmann::json rest;  // the file, with model.vocab = {} and model.merges = []
  std::vector<std::pair<std::string, int64_t>> vocab;       // model.vocab, in file order
  std::vector<std::pair<std::string, std::string>> merges;  // model.merges, in rank order
  bool has_vocab = false;                                   // model.vocab was an object
  bool has_merges = false;                                  // model.merges was an array
};

// INVALID_ARGUMENT (without the path: the caller adds it) for malformed JSON
// or a vocab / merges entry of the wrong shape.
absl::StatusOr<TokenizerJson> ReadTokenizerJson(std::string_view text);

}  // namespace streamgen::hf
