#include "engine/text/tokenizer.h"

#include <sys/stat.h>

#include <cstdlib>
#include <exception>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "engine/text/hf_tokenizer.h"

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

absl::StatusOr<TokenizerKind> ParseTokenizerKind(std::string_view name) {
  if (name == "auto") return TokenizerKind::kAuto;
  if (name == "hf") return TokenizerKind::kHf;
  if (name == "sentencepiece") return TokenizerKind::kSentencePiece;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown tokenizer kind '", std::string(name), "' (want auto, hf or sentencepiece)"));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizerFromDirectory(const std::string& dir,
                                                                      TokenizerKind kind) {
  const std::string json = dir + "/tokenizer.json";
  const std::string model = dir + "/tokenizer.model";
  struct stat st;
  if (kind == TokenizerKind::kAuto) {
    if (::stat(json.c_str(), &st) == 0) {
      kind = TokenizerKind::kHf;
    } else if (::stat(model.c_str(), &st) == 0) {
      kind = TokenizerKind::kSentencePiece;
    } else {
      return absl::NotFoundError(absl::StrCat("no tokenizer in ", dir, ": neither ", json,
                                              " nor ", model, " exists"));
    }
  }
  if (kind == TokenizerKind::kHf) return Tokenizer::LoadHf(json);
  return Tokenizer::Load(model);
}

Tokenizer::Tokenizer(std::unique_ptr<SentencePieceBackend> sp) : sp_(std::move(sp)) {}
Tokenizer::Tokenizer(std::unique_ptr<HfTokenizer> hf) : hf_(std::move(hf)) {}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::LoadHf(const std::string& tokenizer_json) {
  const size_t slash = tokenizer_json.find_last_of('/');
  const std::string config =
      (slash == std::string::npos ? std::string() : tokenizer_json.substr(0, slash + 1)) +
      "tokenizer_config.json";
  SG_ASSIGN_OR_RETURN(auto hf, HfTokenizer::Load(tokenizer_json, config));
  std::unique_ptr<Tokenizer> tok(new Tokenizer(std::move(hf)));
  tok->bos_id_ = tok->hf_->bos_id();
  tok->eos_id_ = tok->hf_->eos_id();
  return tok;
}

int Tokenizer::piece_count() const {
  return hf_ != nullptr ? hf_->vocab_size() : static_cast<int>(byte_value_.size());
}

bool Tokenizer::IsControl(int id) const {
  return hf_ != nullptr ? hf_->IsSpecial(id) : HasKind(id, kControl);
}

int Tokenizer::ByteValue(int id) const {
  if (hf_ != nullptr) return hf_->ByteValue(id);
  return id >= 0 && id < piece_count() ? byte_value_[id] : -1;
}

bool Tokenizer::DecodesByteRunsWhole() const {
  return hf_ != nullptr && hf_->decodes_byte_runs_whole();
}

bool Tokenizer::TokenBytes(int id, std::string* bytes) const {
  if (hf_ != nullptr) return hf_->TokenBytes(id, bytes);
  bytes->clear();
  const int b = ByteValue(id);
  if (b < 0) return false;
  bytes->push_back(static_cast<char>(b));
  return true;
}

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

std::vector<int> Tokenizer::Encode(std::string_view text, const EncodeOptions& options) const {
  if (hf_ != nullptr) return hf_->Encode(text, options.add_special_tokens, options.parse_special);
  std::vector<int> ids;
  if (!sp_->Encode(text, &ids)) ids.clear();
  return ids;
}

std::string Tokenizer::Decode(const std::vector<int>& ids) const {
  if (hf_ != nullptr) return hf_->Decode(ids, /*skip_special_tokens=*/true);
  return sp_->DecodeIds(ids);
}

std::string Tokenizer::IdToPiece(int id) const {
  if (id < 0 || id >= piece_count()) return "";
  if (hf_ != nullptr) return hf_->IdToPiece(id);
  return sp_->IdToPiece(id);
}

int Tokenizer::PieceToId(std::string_view piece) const {
  if (hf_ != nullptr) return hf_->PieceToId(piece);
  const int id = sp_->PieceToId(piece);
  // sentencepiece answers the unknown id for a piece it does not have.
  if (id < 0 || id >= piece_count() || sp_->IdToPiece(id) != piece) return -1;
  return id;
}

}  // namespace streamgen
