#include "tools/train_tokenizer.h"

#include <unistd.h>

#include <cstdio>
#include <string>
#include <unordered_map>

#include "absl/strings/str_cat.h"

// sentencepiece 0.1.97 declares `namespace absl { using std::string_view; }`,
// which clashes with Debian's abseil (whose absl::string_view is its own
// class). Its API takes that string_view only, so its headers are read with
// `absl` renamed: the alias is still std::string_view and links the same.
#define absl sentencepiece_absl
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>
#undef absl

namespace streamgen {

absl::Status TrainTokenizer(const std::string& corpus_path, const std::string& out_model_path,
                            int vocab_size) {
  if (vocab_size < 300) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tokenizer vocab size ", vocab_size, " is too small: need at least 300 (3 special "
        "pieces, 256 byte pieces and some merges)"));
  }
  if (access(corpus_path.c_str(), R_OK) != 0) {
    return absl::NotFoundError(absl::StrCat(corpus_path, ": corpus file not found or unreadable"));
  }
  const std::string prefix = absl::StrCat(out_model_path, ".training-", getpid());
  const std::unordered_map<std::string, std::string> args = {
      {"input", corpus_path},
      {"model_prefix", prefix},
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
  const sentencepiece::util::Status status = sentencepiece::SentencePieceTrainer::Train(args);
  const std::string trained = prefix + ".model";
  std::remove((prefix + ".vocab").c_str());
  if (!status.ok()) {
    std::remove(trained.c_str());
    return absl::InternalError(absl::StrCat("training the tokenizer on ", corpus_path,
                                            " failed: ", status.ToString()));
  }
  if (std::rename(trained.c_str(), out_model_path.c_str()) != 0) {
    std::remove(trained.c_str());
    return absl::InternalError(absl::StrCat(out_model_path, ": cannot write the tokenizer model"));
  }
  return absl::OkStatus();
}

absl::StatusOr<int> TokenizerPieceCount(const std::string& model_path) {
  sentencepiece::SentencePieceProcessor processor;
  const sentencepiece::util::Status status = processor.Load(model_path);
  if (!status.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(model_path, ": cannot load the sentencepiece model: ", status.ToString()));
  }
  return processor.GetPieceSize();
}

}  // namespace streamgen
