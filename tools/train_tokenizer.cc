#include "tools/train_tokenizer.h"

#include <cstdio>
#include <fstream>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

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
namespace {

// Feeds the corpus lines to the trainer, so that no file path ends up in the
// trained model (its trainer_spec records `input` and `model_prefix`).
class LineIterator : public sentencepiece::SentenceIterator {
 public:
  explicit LineIterator(std::vector<std::string> lines) : lines_(std::move(lines)) {}
  bool done() const override { return next_ >= lines_.size(); }
  void Next() override { ++next_; }
  const std::string& value() const override { return lines_[next_]; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  std::vector<std::string> lines_;
  size_t next_ = 0;
};

}  // namespace

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
  LineIterator iterator(std::move(lines));
  std::string model;
  const sentencepiece::util::Status status =
      sentencepiece::SentencePieceTrainer::Train(args, &iterator, &model);
  if (!status.ok()) {
    return absl::InternalError(absl::StrCat("training the tokenizer on ", corpus_path,
                                            " failed: ", status.ToString()));
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
  sentencepiece::SentencePieceProcessor processor;
  const sentencepiece::util::Status status = processor.Load(model_path);
  if (!status.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(model_path, ": cannot load the sentencepiece model: ", status.ToString()));
  }
  return processor.GetPieceSize();
}

}  // namespace streamgen
