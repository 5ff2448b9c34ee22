#include "engine/text/tokenizer.h"

#include <sys/stat.h>

#include <cstdlib>
#include <exception>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace streamgen {
namespace {

// "<0x0A>" -> 10; -1 when `piece` is not of that form.
int ParseBytePiece(const std::string& piece) {
  if (piece.size() != 6 || piece.compare(0, 3, "<0x") != 0 || piece[5] != '>') return -1;
  // `end` points into `digits`, which must outlive the check (ASan in the fuzz
  // build caught a read of a destroyed temporary here).
  const std::string digits = piece.substr(3, 2);
  char* end = nullptr;
  const long value = std::strtol(digits.c_str(), &end, 16);
  if (end == nullptr || *end != '\0' || value < 0 || value > 255) return -1;
  return static_cast<int>(value);
}

}  // namespace

Tokenizer::Tokenizer(std::unique_ptr<SentencePieceBackend> sp) : sp_(std::move(sp)) {}

Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat("tokenizer model not found: ", path));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot load tokenizer model ", path, ": not a regular file"));
  }
  absl::StatusOr<std::unique_ptr<SentencePieceBackend>> backend = NewSentencePieceBackend();
  if (!backend.ok()) return backend.status();
  std::unique_ptr<Tokenizer> tok(new Tokenizer(std::move(*backend)));
  const std::string error = tok->sp_->Load(path);
  if (!error.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("cannot load tokenizer model ", path,
                                                   " (not a sentencepiece model file?): ", error));
  }
  const int n = tok->sp_->GetPieceSize();
  if (n <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer model ", path, " has no pieces"));
  }
  tok->byte_value_.assign(n, -1);
  tok->kind_.assign(n, kNormal);
  for (int id = 0; id < n; ++id) {
    if (tok->sp_->IsByte(id)) {
      const int value = ParseBytePiece(tok->sp_->IdToPiece(id));
      if (value < 0) {
        return absl::InvalidArgumentError(absl::StrCat("tokenizer model ", path, ": byte piece ",
                                                       id, " is not of the form <0xNN>"));
      }
      tok->byte_value_[id] = static_cast<int16_t>(value);
    } else if (tok->sp_->IsControl(id)) {
      tok->kind_[id] = kControl;
    } else if (tok->sp_->IsUnknown(id)) {
      tok->kind_[id] = kUnknown;
    }
  }
  tok->bos_id_ = tok->sp_->bos_id();
  tok->eos_id_ = tok->sp_->eos_id();
  return tok;
}

std::vector<int> Tokenizer::Encode(std::string_view text) const {
  std::vector<int> ids;
  if (!sp_->Encode(text, &ids)) ids.clear();
  return ids;
}

std::string Tokenizer::Decode(const std::vector<int>& ids) const { return sp_->DecodeIds(ids); }

std::string Tokenizer::IdToPiece(int id) const {
  if (id < 0 || id >= piece_count()) return "";
  return sp_->IdToPiece(id);
}

int Tokenizer::PieceToId(std::string_view piece) const {
  const int id = sp_->PieceToId(piece);
  // sentencepiece answers the unknown id for a piece it does not have.
  if (id < 0 || id >= piece_count() || sp_->IdToPiece(id) != piece) return -1;
  return id;
}

}  // namespace streamgen
