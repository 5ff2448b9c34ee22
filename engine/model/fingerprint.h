// A model's fingerprint: which checkpoint, tokenizer and compute dtype a
// server runs, as one short string. Two servers with the same fingerprint give
// the same tokens for the same request; a resumed stream (resume_token_ids)
// is refused where the fingerprint differs. Torch-free.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace streamgen {

// A streaming 128-bit hash of bytes (two independent 64-bit lanes, each a
// multiply-rotate accumulator over 8-byte words, the length mixed in at the
// end). Not cryptographic: it tells checkpoints apart, it does not resist
// someone crafting a collision. Reads at memory speed, so a 13 GB checkpoint
// costs a few seconds at load. Stable across runs, machines and builds.
class Hasher128 {
 public:
  void Update(const void* data, size_t size);
  void Update(absl::string_view text) { Update(text.data(), text.size()); }
  // 32 lowercase hex digits. Ends the hash: Update after Digest is an error
  // (it would hash on from a finished state).
  std::string HexDigest();

 private:
  void Word(uint64_t word);
  uint64_t a_ = 0x9E3779B97F4A7C15ull;
  uint64_t b_ = 0xC2B2AE3D27D4EB4Full;
  uint64_t length_ = 0;
  unsigned char tail_[8] = {};
  size_t tail_size_ = 0;
};

// The fingerprint of the model in `dir` computed in `dtype` ("float32",
// "bfloat16", ...): "sg1-" + Hasher128 over the dtype and, for each file, its
// name, its size and its bytes: config.json, generation_config.json,
// tokenizer.model, tokenizer_config.json (what exists of them) and every
// weight file the model loads (model.safetensors, or the index and its
// shards). The device is not part of it: CPU and CUDA give valid
// continuations of each other, not the same float roundings (README).
// Errors name the file that could not be read.
absl::StatusOr<std::string> ModelFingerprint(const std::string& dir, absl::string_view dtype);

}  // namespace streamgen
