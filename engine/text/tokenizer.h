// The model's tokenizer behind one small interface, with two backends:
//  - SentencePiece (Llama / Mistral `tokenizer.model`). No header here includes
//    sentencepiece: it is reached through SentencePieceBackend, a locally loaded
//    shared library (its headers clash with abseil's, and its bundled protobuf
//    with libtorch's; see sentencepiece_backend.h).
//  - Hugging Face `tokenizer.json` (HfTokenizer, hf_tokenizer.h): byte-level BPE
//    (Llama 3, Qwen) and byte-fallback BPE (Llama 2, Gemma).
// LoadTokenizerFromDirectory chooses between them as transformers'
// AutoTokenizer does.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/text/sentencepiece_backend.h"

namespace streamgen {

class HfTokenizer;

// Which tokenizer file of a model directory to load.
enum class TokenizerKind {
  kAuto,           // tokenizer.json when present, else tokenizer.model
  kHf,             // tokenizer.json (with tokenizer_config.json's bos/eos tokens)
  kSentencePiece,  // tokenizer.model
};

// "auto", "hf" or "sentencepiece"; INVALID_ARGUMENT naming the value otherwise.
absl::StatusOr<TokenizerKind> ParseTokenizerKind(std::string_view name);

// How Encode treats special tokens.
struct EncodeOptions {
  // Add what the tokenizer's post-processor adds around a text (tokenizer.json:
  // the TemplateProcessing BOS / EOS, as HF's add_special_tokens=True). The
  // sentencepiece backend adds nothing here (the engine adds BOS from the
  // model's tokenizer config).
  bool add_special_tokens = false;
  // Match special tokens written in the text ("<|im_start|>", "<s>") to their
  // ids, as HF's encode does by default. Off by default: prompt text from a
  // client must not be able to forge control tokens; the chat template and
  // trusted callers turn it on. Non-special added tokens always match.
  // (sentencepiece never matches control tokens in text.)
  bool parse_special = false;
};

class Tokenizer;

// Loads the tokenizer of a Hugging Face model directory: with kAuto,
// `dir`/tokenizer.json when it exists, else `dir`/tokenizer.model (NOT_FOUND
// naming both when neither does). Errors name the file.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizerFromDirectory(const std::string& dir,
                                                                      TokenizerKind kind);

// Immutable after Load: every method is const and thread-safe.
class Tokenizer {
 public:
  // Loads a sentencepiece model file. Errors name `path`: NOT_FOUND when the
  // file does not exist, INVALID_ARGUMENT (with sentencepiece's message) when
  // it cannot be read or parsed.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::string& path);
  // Loads a tokenizer.json (and, when it exists, the tokenizer_config.json
  // beside it for bos_token / eos_token). Errors name the file and component.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> LoadHf(const std::string& tokenizer_json);

  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Text -> ids, without BOS / EOS and without matching special tokens in the
  // text (sentencepiece's dummy prefix space is added as the model says).
  std::vector<int> Encode(std::string_view text) const { return Encode(text, EncodeOptions()); }
  std::vector<int> Encode(std::string_view text, const EncodeOptions& options) const;

  // Ids -> text. sentencepiece: exactly its DecodeIds: control pieces give "",
  // the leading space of the first piece is dropped, byte pieces are decoded as
  // UTF-8 with one U+FFFD per invalid byte; any id outside [0, piece_count())
  // makes the whole result "" (as sentencepiece does). tokenizer.json: HF's
  // decode(ids, skip_special_tokens=True) (ids out of range are skipped).
  std::string Decode(const std::vector<int>& ids) const;

  // Number of pieces (the vocabulary size); valid ids are [0, piece_count()).
  int piece_count() const;

  // The piece's text ("▁the", "<0x0A>", "<s>"); "" for an id out of range.
  std::string IdToPiece(int id) const;

  // The id of `piece`, or -1 when the vocabulary has no such piece.
  int PieceToId(std::string_view piece) const;

  // Piece kinds; all false for an id out of range. tokenizer.json: control
  // pieces are the special added tokens.
  bool IsByte(int id) const { return ByteValue(id) >= 0; }
  bool IsControl(int id) const;
  bool IsUnknown(int id) const { return HasKind(id, kUnknown); }

  // The byte of a byte-fallback piece `<0xNN>` (0..255), or -1 for any other id.
  int ByteValue(int id) const;

  // The raw bytes of a piece that need not be whole UTF-8 characters (byte
  // pieces; every model piece of a byte-level tokenizer.json), else false.
  // The incremental detokenizer holds such pieces back while they end inside
  // a character.
  bool TokenBytes(int id, std::string* bytes) const;

  // Whether a run of byte pieces decodes as a whole (tokenizer.json's
  // ByteFallback decoder: one U+FFFD per byte when any of the run is
  // invalid), so that a stream holds the run back until it ends.
  bool DecodesByteRunsWhole() const;

  // -1 when the model has none.
  int bos_id() const { return bos_id_; }
  int eos_id() const { return eos_id_; }

  // The tokenizer.json backend, or null for sentencepiece.
  const HfTokenizer* hf() const { return hf_.get(); }

 private:
  enum Kind : uint8_t { kNormal = 0, kControl = 1, kUnknown = 2 };

  explicit Tokenizer(std::unique_ptr<SentencePieceBackend> sp);
  explicit Tokenizer(std::unique_ptr<HfTokenizer> hf);
  bool HasKind(int id, Kind kind) const {
    return hf_ == nullptr && id >= 0 && id < static_cast<int>(kind_.size()) && kind_[id] == kind;
  }

  std::unique_ptr<SentencePieceBackend>
      sp_;                           // sentencepiece, loaded locally (see sentencepiece_backend.h)
  std::unique_ptr<HfTokenizer> hf_;  // or tokenizer.json (exactly one of the two is set)
  std::vector<int16_t> byte_value_;  // sentencepiece, per id: 0..255 for byte pieces, else -1
  std::vector<Kind> kind_;           // sentencepiece, per id
  int bos_id_ = -1;
  int eos_id_ = -1;
};

}  // namespace streamgen
