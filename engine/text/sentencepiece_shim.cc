// libstreamgen_sentencepiece.so: the only code that includes sentencepiece's
// headers and links libsentencepiece. See sentencepiece_backend.h for why it is
// a separate, locally loaded library.
#include <exception>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/text/sentencepiece_backend.h"

// sentencepiece 0.1.97 declares `namespace absl { using std::string_view; }`,
// which clashes with abseil's own absl::string_view class. Renaming its
// namespace for these includes keeps the types identical (std::string_view).
#define absl sentencepiece_absl_shim
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>
#undef absl

namespace streamgen {
namespace {

// Feeds lines to the trainer, so that no file path ends up in the model.
class LineIterator : public sentencepiece::SentenceIterator {
 public:
  explicit LineIterator(const std::vector<std::string>* lines) : lines_(lines) {}
  bool done() const override { return next_ >= lines_->size(); }
  void Next() override { ++next_; }
  const std::string& value() const override { return (*lines_)[next_]; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  const std::vector<std::string>* lines_;
  size_t next_ = 0;
};

class Backend : public SentencePieceBackend {
 public:
  std::string Load(const std::string& path) override {
    try {
      const sentencepiece::util::Status status = sp_.Load(path);
      return status.ok() ? "" : status.ToString();
    } catch (const std::exception& e) {  // e.g. std::ios_base::failure
      return e.what();
    }
  }
  int GetPieceSize() const override { return sp_.GetPieceSize(); }
  bool IsByte(int id) const override { return sp_.IsByte(id); }
  bool IsControl(int id) const override { return sp_.IsControl(id); }
  bool IsUnknown(int id) const override { return sp_.IsUnknown(id); }
  std::string IdToPiece(int id) const override { return sp_.IdToPiece(id); }
  int PieceToId(std::string_view piece) const override { return sp_.PieceToId(piece); }
  int bos_id() const override { return sp_.bos_id(); }
  int eos_id() const override { return sp_.eos_id(); }
  bool Encode(std::string_view text, std::vector<int>* ids) const override {
    return sp_.Encode(text, ids).ok();
  }
  std::string DecodeIds(const std::vector<int>& ids) const override { return sp_.DecodeIds(ids); }
  std::string Train(const std::unordered_map<std::string, std::string>& args,
                    const std::vector<std::string>& lines, std::string* model) override {
    LineIterator iterator(&lines);
    try {
      const sentencepiece::util::Status status =
          sentencepiece::SentencePieceTrainer::Train(args, &iterator, model);
      return status.ok() ? "" : status.ToString();
    } catch (const std::exception& e) {
      return e.what();
    }
  }

 private:
  sentencepiece::SentencePieceProcessor sp_;
};

}  // namespace
}  // namespace streamgen

extern "C" __attribute__((visibility("default"))) streamgen::SentencePieceBackend*
streamgen_new_sentencepiece_backend() {
  return new streamgen::Backend();
}
