#include "engine/text/detokenizer.h"

#include <algorithm>

namespace streamgen {
namespace {

// Ids a window starts with before the read offset, doubled until the window
// decodes to something (see ChooseWindowStart).
constexpr size_t kInitialWindow = 4;

bool IsContinuationByte(int b) { return b >= 0x80 && b <= 0xBF; }

// Total length of the character that lead byte `b` starts, 0 if `b` can never
// start a valid character (continuation bytes, C0, C1, F5..FF).
int SequenceLength(int b) {
  if (b >= 0xC2 && b <= 0xDF) return 2;
  if (b >= 0xE0 && b <= 0xEF) return 3;
  if (b >= 0xF0 && b <= 0xF4) return 4;
  return 0;
}

// Whether `second` may follow `lead` (RFC 3629 table: excludes overlong forms,
// surrogates and code points above U+10FFFF, as sentencepiece's decoder does).
bool SecondByteFits(int lead, int second) {
  switch (lead) {
    case 0xE0:
      return second >= 0xA0 && second <= 0xBF;
    case 0xED:
      return second >= 0x80 && second <= 0x9F;
    case 0xF0:
      return second >= 0x90 && second <= 0xBF;
    case 0xF4:
      return second >= 0x80 && second <= 0x8F;
    default:
      return IsContinuationByte(second);
  }
}

}  // namespace

size_t IncompleteUtf8TailLength(const Tokenizer& tok, const std::vector<int>& ids) {
  // Walk back over at most 3 continuation bytes to the byte that starts them.
  size_t begin = ids.size();
  while (begin > 0 && ids.size() - begin < 3 && IsContinuationByte(tok.ByteValue(ids[begin - 1]))) {
    --begin;
  }
  if (begin == 0) return 0;
  const int lead = tok.ByteValue(ids[begin - 1]);
  const size_t have = ids.size() - begin + 1;  // lead + continuations
  const int need = SequenceLength(lead);
  if (need == 0 || have >= static_cast<size_t>(need)) return 0;
  if (have >= 2 && !SecondByteFits(lead, tok.ByteValue(ids[begin]))) return 0;
  return have;
}

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer* tok,
                                               const std::vector<int>& prompt_ids)
    : tok_(tok) {
  ids_.reserve(prompt_ids.size() + 64);
  for (int id : prompt_ids) {
    if (id >= 0 && id < tok_->piece_count()) ids_.push_back(id);
  }
  read_ = ids_.size() - IncompleteUtf8TailLength(*tok_, ids_);
  // The window must decode to non-empty text before read_ (or start at 0):
  // then sentencepiece's "drop the first piece's leading space" has already
  // happened inside the window, exactly as in the full decode.
  size_t back = kInitialWindow;
  while (true) {
    prefix_ = read_ > back ? read_ - back : 0;
    prefix_text_ = DecodeRange(prefix_, read_);
    if (!prefix_text_.empty() || prefix_ == 0) break;
    back *= 2;
  }
}

std::string IncrementalDetokenizer::DecodeRange(size_t begin, size_t end) const {
  return tok_->Decode(std::vector<int>(ids_.begin() + begin, ids_.begin() + end));
}

std::string IncrementalDetokenizer::Append(int id) {
  if (flushed_ || id < 0 || id >= tok_->piece_count()) return "";
  ids_.push_back(id);
  // An unfinished character at the end is held; anything before it goes out.
  const size_t end = ids_.size() - IncompleteUtf8TailLength(*tok_, ids_);
  if (end <= read_) return "";
  return EmitTo(end);
}

std::string IncrementalDetokenizer::Flush() {
  flushed_ = true;
  if (read_ == ids_.size()) return "";
  return EmitTo(ids_.size());
}

// ids_[prefix_, read_) and ids_[prefix_, end) end on character boundaries, so
// the decode of ids_[prefix_, end) starts with prefix_text_ and the rest is the
// text of ids_[read_, end) as the full decode has it.
std::string IncrementalDetokenizer::EmitTo(size_t end) {
  const std::string window_text = DecodeRange(prefix_, end);
  size_t common = 0;
  const size_t limit = std::min(window_text.size(), prefix_text_.size());
  while (common < limit && window_text[common] == prefix_text_[common]) ++common;
  std::string out = window_text.substr(common);

  // Slide the window to start at the old read offset when the new ids decode
  // to something on their own; otherwise widen it to cover them.
  std::string new_text = DecodeRange(read_, end);
  if (!new_text.empty()) {
    prefix_ = read_;
    prefix_text_ = std::move(new_text);
  } else {
    prefix_text_ = window_text;
  }
  read_ = end;
  return out;
}

}  // namespace streamgen
