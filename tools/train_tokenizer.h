// Trains a small Llama-style sentencepiece tokenizer (BPE, byte fallback,
// <unk> 0, <s> 1, </s> 2) for the tiny models. Thread-compatible: the
// sentencepiece trainer uses process-wide state, so train one at a time.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace streamgen {

// Trains on the UTF-8 text file `corpus_path` (one sentence per line) and
// writes the model to `out_model_path`. Deterministic for a given corpus and
// vocab_size. The vocabulary holds <unk>, <s>, </s>, the 256 byte pieces
// <0x00>..<0xFF>, and BPE pieces up to `vocab_size` in all.
absl::Status TrainTokenizer(const std::string& corpus_path, const std::string& out_model_path,
                            int vocab_size);

// The number of pieces of the sentencepiece model at `model_path`.
absl::StatusOr<int> TokenizerPieceCount(const std::string& model_path);

}  // namespace streamgen
