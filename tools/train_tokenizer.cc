#include "tools/train_tokenizer.h"

#include <cstdio>
#include <fstream>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

#include "engine/text/sentencepiece_backend.h"
#include "engine/text/tokenizer.h"

namespace streamgen {

absl::Status TrainTokenizer(const std::string& corpus_path, const std::string& out_model_path,
                            int vocab_size) {
  if (vocab_size < 300) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tokenizer vocab size ", vocab_size, " is too small: need at least 300 (3 special "
        "pieces, 256 byte pieces and some merges)"));
  }
  std::ifstream in(corpus_path);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(corpus_path, ": corpus file not found or unreadable"));
  }
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) lines.push_back(line);
  }
  if (lines.empty()) return absl::InvalidArgumentError(absl::StrCat(corpus_path, ": corpus is empty"));
  const std::unordered_map<std::string, std::string> args = {
      {"model_type", "bpe"},
      {"vocab_size", std::to_string(vocab_size)},
      {"byte_fallback", "true"},
      {"split_digits", "true"},
      {"character_coverage", "0.9995"},  // rare characters fall back to bytes
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      {"add_dummy_prefix", "true"},
      {"allow_whitespace_only_pieces", "true"},
      {"unk_id", "0"},
      {"bos_id", "1"},
      {"eos_id", "2"},
      {"pad_id", "-1"},
      {"input_sentence_size", "0"},  // all lines, no sampling
      {"shuffle_input_sentence", "false"},
      {"num_threads", "1"},
      {"minloglevel", "2"},
  };
  // The corpus lines are fed directly, so that no file path ends up in the model.
  absl::StatusOr<std::unique_ptr<SentencePieceBackend>> backend = NewSentencePieceBackend();
  if (!backend.ok()) return backend.status();
  std::string model;
  const std::string error = (*backend)->Train(args, lines, &model);
  if (!error.empty()) {
    return absl::InternalError(
        absl::StrCat("training the tokenizer on ", corpus_path, " failed: ", error));
  }
  // Written beside the target and renamed, so a failure leaves no partial model.
  const std::string temp_path = absl::StrCat(out_model_path, ".partial");
  std::ofstream out(temp_path, std::ios::binary | std::ios::trunc);
  out << model;
  out.close();
  if (!out || std::rename(temp_path.c_str(), out_model_path.c_str()) != 0) {
    std::remove(temp_path.c_str());
    return absl::InternalError(absl::StrCat(out_model_path, ": cannot write the tokenizer model"));
  }
  return absl::OkStatus();
}

absl::StatusOr<int> TokenizerPieceCount(const std::string& model_path) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::Load(model_path);
  if (!tokenizer.ok()) return tokenizer.status();
  return (*tokenizer)->piece_count();
}

}  // namespace streamgen
