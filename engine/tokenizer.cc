#include "engine/tokenizer.h"

#include <sys/stat.h>

#include <cstdlib>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

// sentencepiece 0.1.97 declares `namespace absl { using std::string_view; }`,
// which is ambiguous next to abseil's own absl::string_view class. Renaming its
// namespace for this one include keeps the types identical (std::string_view,
// so the library's symbols still match) without the clash.
#define absl sentencepiece_absl_shim
#include <sentencepiece_processor.h>
#undef absl

namespace streamgen {
namespace {

// "<0x0A>" -> 10; -1 when `piece` is not of that form.
int ParseBytePiece(const std::string& piece) {
  if (piece.size() != 6 || piece.compare(0, 3, "<0x") != 0 || piece[5] != '>') return -1;
  char* end = nullptr;
  const long value = std::strtol(piece.substr(3, 2).c_str(), &end, 16);
  if (end == nullptr || *end != '\0' || value < 0 || value > 255) return -1;
  return static_cast<int>(value);
}

bool FileExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

}  // namespace

Tokenizer::Tokenizer() : sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {}

Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::string& path) {
  if (!FileExists(path)) {
    return absl::NotFoundError(absl::StrCat("tokenizer model not found: ", path));
  }
  std::unique_ptr<Tokenizer> tok(new Tokenizer());
  const sentencepiece::util::Status status = tok->sp_->Load(path);
  if (!status.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot load tokenizer model ", path, ": ", status.ToString()));
  }
  const int n = tok->sp_->GetPieceSize();
  if (n <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer model ", path, " has no pieces"));
  }
  tok->byte_value_.assign(n, -1);
  tok->kind_.assign(n, kNormal);
  for (int id = 0; id < n; ++id) {
    if (tok->sp_->IsByte(id)) {
      const int value = ParseBytePiece(tok->sp_->IdToPiece(id));
      if (value < 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "tokenizer model ", path, ": byte piece ", id, " is not of the form <0xNN>"));
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
  if (!sp_->Encode(text, &ids).ok()) ids.clear();
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
