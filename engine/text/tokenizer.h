// A SentencePiece tokenizer (Llama / Mistral `tokenizer.model`) behind a small
// interface. No header here includes sentencepiece: it is reached through
// SentencePieceBackend, a locally loaded shared library (its headers clash with
// abseil's, and its bundled protobuf with libtorch's; see sentencepiece_backend.h).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/text/sentencepiece_backend.h"

namespace streamgen {

// Immutable after Load: every method is const and thread-safe.
class Tokenizer {
 public:
  // Loads a sentencepiece model file. Errors name `path`: NOT_FOUND when the
  // file does not exist, INVALID_ARGUMENT (with sentencepiece's message) when
  // it cannot be read or parsed.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::string& path);

  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Text -> ids, without BOS / EOS (sentencepiece's dummy prefix space is added
  // as the model says).
  std::vector<int> Encode(std::string_view text) const;

  // Ids -> text, exactly sentencepiece's DecodeIds: control pieces give "", the
  // leading space of the first piece is dropped, byte pieces are decoded as
  // UTF-8 with one U+FFFD per invalid byte. Any id outside [0, piece_count())
  // makes the whole result "" (as sentencepiece does).
  std::string Decode(const std::vector<int>& ids) const;

  // Number of pieces (the vocabulary size); valid ids are [0, piece_count()).
  int piece_count() const { return static_cast<int>(byte_value_.size()); }

  // The piece's text ("▁the", "<0x0A>", "<s>"); "" for an id out of range.
  std::string IdToPiece(int id) const;

  // The id of `piece`, or -1 when the vocabulary has no such piece.
  int PieceToId(std::string_view piece) const;

  // Piece kinds; all false for an id out of range.
  bool IsByte(int id) const { return ByteValue(id) >= 0; }
  bool IsControl(int id) const { return HasKind(id, kControl); }
  bool IsUnknown(int id) const { return HasKind(id, kUnknown); }

  // The byte of a byte-fallback piece `<0xNN>` (0..255), or -1 for any other id.
  int ByteValue(int id) const { return id >= 0 && id < piece_count() ? byte_value_[id] : -1; }

  // -1 when the model has none.
  int bos_id() const { return bos_id_; }
  int eos_id() const { return eos_id_; }

 private:
  enum Kind : uint8_t { kNormal = 0, kControl = 1, kUnknown = 2 };

  explicit Tokenizer(std::unique_ptr<SentencePieceBackend> sp);
  bool HasKind(int id, Kind kind) const {
    return id >= 0 && id < piece_count() && kind_[id] == kind;
  }

  std::unique_ptr<SentencePieceBackend>
      sp_;                           // sentencepiece, loaded locally (see sentencepiece_backend.h)
  std::vector<int16_t> byte_value_;  // per id: 0..255 for byte pieces, else -1
  std::vector<Kind> kind_;           // per id
  int bos_id_ = -1;
  int eos_id_ = -1;
};

}  // namespace streamgen
