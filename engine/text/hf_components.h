// The components of a tokenizer.json pipeline, each as the Rust `tokenizers`
// library defines it: normalizers (NFC, NFKC, Replace, Prepend, Lowercase,
// Strip, Sequence), pre-tokenizers (Split, ByteLevel, Metaspace, Digits,
// Punctuation, Whitespace, WhitespaceSplit, Sequence), decoders (ByteLevel,
// Metaspace, Replace, ByteFallback, Fuse, Strip, Sequence) and the
// post-processors that decide a prompt's BOS / EOS (TemplateProcessing,
// ByteLevel, Sequence). Anything else is refused by the Parse* functions with
// a message naming the component's place in the file (`pre_tokenizer.
// pretokenizers[1]`); the caller adds the file's path.
//
// All components are immutable after parsing and thread-safe.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace streamgen::hf {

// A piece of the text on its way through the pipeline (the library's Split
// of a PreTokenizedString).
struct Piece {
  std::string text;        // normalized (and, after ByteLevel, byte-mapped) text
  int id = -1;             // an added token's id when the piece is one, else -1
  bool at_origin = false;  // starts at offset 0 of the original input
};

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  // Rewrites `text` in place (valid UTF-8 in and out).
  virtual void Normalize(std::string* text) const = 0;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Splits and rewrites the pieces that are not added tokens; empty pieces
  // are dropped.
  virtual void PreTokenize(std::vector<Piece>* pieces) const = 0;
};

class Decoder {
 public:
  virtual ~Decoder() = default;
  // The library's decode_chain: token strings in, token strings out.
  virtual void DecodeChain(std::vector<std::string>* tokens) const = 0;
};

// What a post-processor adds around a single sequence when special tokens
// are asked for: ids before and after it.
struct PostProcessor {
  std::vector<int> prefix;  // e.g. {128000} (<|begin_of_text|>)
  std::vector<int> suffix;  // e.g. {} or {2} (</s>)
};

// Each returns INVALID_ARGUMENT naming `where` (the component's JSON path)
// for an unknown type, an unknown or unsupported option, or a bad value.
// A JSON null gives a null pointer (no component).
absl::StatusOr<std::unique_ptr<Normalizer>> ParseNormalizer(const nlohmann::json& j,
                                                            const std::string& where);
absl::StatusOr<std::unique_ptr<PreTokenizer>> ParsePreTokenizer(const nlohmann::json& j,
                                                                const std::string& where);
absl::StatusOr<std::unique_ptr<Decoder>> ParseDecoder(const nlohmann::json& j,
                                                      const std::string& where);
// `token_id` maps a token's text to its id (-1 when unknown).
absl::StatusOr<PostProcessor> ParsePostProcessor(
    const nlohmann::json& j, const std::string& where,
    const std::function<int(const std::string&)>& token_id);

// GPT-2's byte <-> character map of the ByteLevel components.
char32_t ByteToChar(unsigned char b);
int CharToByte(char32_t c);  // -1 when `c` stands for no byte

}  // namespace streamgen::hf
