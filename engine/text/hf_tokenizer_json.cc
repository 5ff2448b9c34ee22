#include "engine/text/hf_tokenizer_json.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace streamgen::hf {
namespace {

using nlohmann::json;

// SAX events: model.vocab's entries and model.merges' items go to `out`,
// everything else to a DOM parser.
class Reader {
 public:
  explicit Reader(TokenizerJson* out) : out_(out), dom_(out->rest, /*allow_exceptions=*/true) {}

  const std::string& error() const { return error_; }

  bool null() { return Scalar() && dom_.null(); }
  bool boolean(bool v) { return Scalar() && dom_.boolean(v); }
  bool number_integer(json::number_integer_t v) {
    if (mode_ == kVocab) return VocabId(v);
    return Scalar() && dom_.number_integer(v);
  }
  bool number_unsigned(json::number_unsigned_t v) {
    if (mode_ == kVocab)
      return VocabId(static_cast<int64_t>(std::min<json::number_unsigned_t>(v, 1LL << 40)));
    return Scalar() && dom_.number_unsigned(v);
  }
  bool number_float(json::number_float_t v, const json::string_t& s) {
    return Scalar() && dom_.number_float(v, s);
  }
  bool binary(json::binary_t& v) { return Scalar() && dom_.binary(v); }
  bool string(json::string_t& s) {
    if (mode_ == kMerges) {
      const size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
        return Fail(absl::StrCat("model: merges[", out_->merges.size(), "]: '", s,
                                 "' is not two pieces split by a space"));
      }
      out_->merges.emplace_back(s.substr(0, space), s.substr(space + 1));
      return true;
    }
    if (mode_ == kPair) {
      pair_.push_back(std::move(s));
      return true;
    }
    return Scalar() && dom_.string(s);
  }
  bool start_object(std::size_t n) {
    if (mode_ != kDom) return Shape();
    if (At("vocab")) {
      mode_ = kVocab;
      out_->has_vocab = true;
      return dom_.start_object(0) && dom_.end_object();
    }
    keys_.emplace_back();
    return dom_.start_object(n);
  }
  bool key(json::string_t& k) {
    if (mode_ == kVocab) {
      pending_ = std::move(k);
      return true;
    }
    if (mode_ != kDom) return Shape();
    keys_.back() = k;
    return dom_.key(k);
  }
  bool end_object() {
    if (mode_ == kVocab) {
      mode_ = kDom;
      return true;
    }
    keys_.pop_back();
    return dom_.end_object();
  }
  bool start_array(std::size_t n) {
    if (mode_ == kMerges) {
      mode_ = kPair;
      pair_.clear();
      return true;
    }
    if (mode_ != kDom) return Shape();
    if (At("merges")) {
      mode_ = kMerges;
      out_->has_merges = true;
      return dom_.start_array(0) && dom_.end_array();
    }
    keys_.emplace_back();  // arrays have no keys; keeps the depth
    return dom_.start_array(n);
  }
  bool end_array() {
    if (mode_ == kPair) {
      if (pair_.size() != 2) {
        return Fail(absl::StrCat("model: merges[", out_->merges.size(),
                                 "] must be \"a b\" or [\"a\", \"b\"]"));
      }
      out_->merges.emplace_back(std::move(pair_[0]), std::move(pair_[1]));
      mode_ = kMerges;
      return true;
    }
    if (mode_ == kMerges) {
      mode_ = kDom;
      return true;
    }
    keys_.pop_back();
    return dom_.end_array();
  }
  bool parse_error(std::size_t position, const std::string& last_token,
                   const nlohmann::detail::exception& ex) {
    return dom_.parse_error(position, last_token, ex);  // throws
  }

 private:
  enum Mode { kDom, kVocab, kMerges, kPair };

  // Directly inside the top-level "model" object, at key `name`.
  bool At(const char* name) const {
    return keys_.size() == 2 && keys_[0] == "model" && keys_[1] == name;
  }
  bool Scalar() {
    if (mode_ == kDom) return true;
    return Shape();
  }
  bool VocabId(int64_t id) {
    if (id < 0) return Fail(absl::StrCat("model: vocab: piece '", pending_, "' has no valid id"));
    out_->vocab.emplace_back(std::move(pending_), id);
    return true;
  }
  bool Shape() {
    if (mode_ == kVocab)
      return Fail(absl::StrCat("model: vocab: piece '", pending_, "' has no valid id"));
    return Fail(
        absl::StrCat("model: merges[", out_->merges.size(), "] must be \"a b\" or [\"a\", \"b\"]"));
  }
  bool Fail(std::string message) {
    error_ = std::move(message);
    return false;
  }

  TokenizerJson* out_;
  nlohmann::detail::json_sax_dom_parser<json> dom_;
  Mode mode_ = kDom;
  std::vector<std::string> keys_;  // per open object / array: the current key
  std::string pending_;            // the vocab piece whose id comes next
  std::vector<std::string> pair_;  // a merge given as an array
  std::string error_;
};

}  // namespace

absl::StatusOr<TokenizerJson> ReadTokenizerJson(std::string_view text) {
  TokenizerJson out;
  Reader reader(&out);
  bool ok = false;
  try {
    ok = json::sax_parse(text.begin(), text.end(), &reader);
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("malformed JSON: ", e.what()));
  }
  if (!ok) {
    return absl::InvalidArgumentError(reader.error().empty() ? "malformed JSON" : reader.error());
  }
  return out;
}

}  // namespace streamgen::hf
