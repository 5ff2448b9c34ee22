// The BPE model of tokenizer.json, as the Rust `tokenizers` library runs it:
// characters of a pre-tokenized word -> vocabulary ids (byte fallback
// `<0xNN>` pieces, or the unknown token, for characters the vocabulary lacks),
// then the lowest-ranked merge first (leftmost on ties) until none applies.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace streamgen::hf {

class BpeModel {
 public:
  // Parses the "model" object (type BPE) whose vocab and merges were read
  // apart (hf_tokenizer_json.h; `has_vocab` / `has_merges`: they were there).
  // INVALID_ARGUMENT naming the field for anything it does not support
  // (dropout, a continuing-subword prefix or end-of-word suffix) or a bad
  // vocabulary / merge list.
  static absl::StatusOr<std::unique_ptr<BpeModel>> Parse(
      const nlohmann::json& j, std::vector<std::pair<std::string, int64_t>> vocab, bool has_vocab,
      const std::vector<std::pair<std::string, std::string>>& merges, bool has_merges);

  // Appends the ids of one pre-tokenized word. Thread-safe.
  void Tokenize(std::string_view word, std::vector<int>* ids) const;

  // The vocabulary: piece -> id (-1 when absent), id -> piece ("" when absent).
  int PieceToId(std::string_view piece) const;
  const std::string& IdToPiece(int id) const;
  // One more than the largest id of the vocabulary.
  int size() const { return static_cast<int>(pieces_.size()); }
  bool byte_fallback() const { return byte_fallback_; }

 private:
  BpeModel() = default;
  void MergeWord(std::string_view word, std::vector<int>* ids) const;

  absl::flat_hash_map<std::string, int> vocab_;  // piece -> id
  std::vector<std::string> pieces_;              // id -> piece
  // (left id << 32 | right id) -> (rank, merged id)
  absl::flat_hash_map<uint64_t, std::pair<int, int>> merges_;
  int unk_id_ = -1;             // -1: no unk_token
  bool fuse_unk_ = false;       // consecutive unknown characters give one unk
  bool byte_fallback_ = false;  // unknown characters as <0xNN> pieces
  bool ignore_merges_ = false;  // a word that is a piece is that piece
  int byte_ids_[256];           // the <0xNN> ids, -1 where absent

  // Words seen before (the Rust library keeps such a cache too); bounded.
  mutable std::mutex cache_mu_;
  mutable absl::flat_hash_map<std::string, std::vector<int>> cache_;
};

}  // namespace streamgen::hf
