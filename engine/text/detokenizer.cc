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

// Trailing ids to hold back: an unfinished character, or with a decoder that
// decodes byte runs whole, the whole trailing run of byte pieces.
static size_t HeldTailLength(const Tokenizer& tok, const std::vector<int>& ids) {
  size_t held = IncompleteUtf8TailLength(tok, ids);
  if (tok.DecodesByteRunsWhole()) {
    size_t run = 0;
    // Special tokens inside a run are skipped by Decode: the run goes on.
    while (run < ids.size() && (tok.IsByte(ids[ids.size() - 1 - run]) ||
                                tok.IsControl(ids[ids.size() - 1 - run]))) {
      ++run;
    }
    held = std::max(held, run);
  }
  return held;
}

// IncompleteUtf8TailLength of ids[0, len) for the character that ends the
// bytes; *mid_piece tells whether the first held piece has bytes before that
// character's lead byte (a byte-level piece that completes one character and
// starts the next), so that the ids before it may end inside a character too.
static size_t TailOnce(const Tokenizer& tok, const std::vector<int>& ids, size_t len,
                       bool* mid_piece) {
  *mid_piece = false;
  // The raw bytes of the trailing pieces that stand for bytes (sentencepiece's
  // <0xNN> pieces: one byte each; a byte-level tokenizer.json's pieces: one or
  // more), at least 4 of them when there are: enough to hold the lead byte
  // and continuations of any unfinished character.
  std::string tail;
  std::vector<size_t> starts;  // starts[k]: where ids[len - 1 - k]'s bytes begin in tail
  std::string bytes;
  size_t k = len;
  // A tokenizer.json's Decode skips special tokens before its decoder runs,
  // so bytes on either side of one belong together: count them as empty.
  const bool skips_control = tok.hf() != nullptr;
  while (k > 0 && tail.size() < 4) {
    if (skips_control && tok.IsControl(ids[k - 1])) {
      bytes.clear();
    } else if (!tok.TokenBytes(ids[k - 1], &bytes)) {
      break;
    }
    tail.insert(0, bytes);
    for (size_t& s : starts) s += bytes.size();
    starts.push_back(0);
    --k;
  }
  // Walk back over at most 3 continuation bytes to the byte that starts them.
  size_t begin = tail.size();
  const auto byte_at = [&](size_t i) { return static_cast<int>(static_cast<unsigned char>(tail[i])); };
  while (begin > 0 && tail.size() - begin < 3 && IsContinuationByte(byte_at(begin - 1))) --begin;
  if (begin == 0) return 0;
  const size_t lead_at = begin - 1;
  const int lead = byte_at(lead_at);
  const size_t have = tail.size() - lead_at;  // lead + continuations
  const int need = SequenceLength(lead);
  if (need == 0 || have >= static_cast<size_t>(need)) return 0;
  if (have >= 2 && !SecondByteFits(lead, byte_at(begin))) return 0;
  // The pieces from the one holding the lead byte to the end.
  size_t count = 0;
  while (count < starts.size() && starts[count] > lead_at) ++count;
  *mid_piece = starts[count] < lead_at;
  return count + 1;
}

size_t IncompleteUtf8TailLength(const Tokenizer& tok, const std::vector<int>& ids) {
  size_t held = 0;
  bool mid_piece = true;
  while (mid_piece) {
    const size_t n = TailOnce(tok, ids, ids.size() - held, &mid_piece);
    if (n == 0) break;
    held += n;
  }
  return held;
}

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer* tok,
                                               const std::vector<int>& prompt_ids)
    : tok_(tok) {
  ids_.reserve(prompt_ids.size() + 64);
  for (int id : prompt_ids) {
    if (id >= 0 && id < tok_->piece_count()) ids_.push_back(id);
  }
  read_ = ids_.size() - HeldTailLength(*tok_, ids_);
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
  const size_t end = ids_.size() - HeldTailLength(*tok_, ids_);
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
