// Incremental detokenization: turns generated ids into text one token at a
// time, never emitting half a UTF-8 character.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "engine/text/tokenizer.h"

namespace streamgen {

// Number of trailing ids of `ids` whose bytes (Tokenizer::TokenBytes: byte
// pieces, byte-level pieces) end in an incomplete but still completable UTF-8
// character (a lead byte followed by fewer continuation bytes than it needs,
// with the ranges sentencepiece accepts: no overlong forms, no surrogates,
// nothing above U+10FFFF), counted from the piece that holds the lead byte
// (and, when that piece starts inside an earlier character, from that one's).
// 0 when the ids do not end inside a character. Thread-safe.
size_t IncompleteUtf8TailLength(const Tokenizer& tok, const std::vector<int>& ids);

// Streams the text of generated ids after a prompt.
//
// The concatenation of every Append() plus Flush() equals
//   Decode(prompt + generated) with Decode(prompt') removed from its front,
// where prompt' is the prompt without trailing byte pieces that end inside a
// UTF-8 character (those bytes belong to the stream: a prompt ending in the
// bytes F0 9F followed by generated 98 80 streams "😀"). Leading spaces come
// out as they do in the full decode (a first generated "▁branch" after a
// prompt streams " branch"), invalid bytes come out as sentencepiece's U+FFFD.
// For a tokenizer.json, Decode is HF's decode(ids, skip_special_tokens=True),
// and with a ByteFallback decoder a whole trailing run of <0xNN> pieces is
// held until it ends (HF decodes such a run as a whole), in the prompt as in
// the stream.
//
// Work per token is bounded by a small window of recent ids (vLLM-style
// prefix / read offsets), not by the length of the sequence.
//
// Not thread-safe: one per request, used by one thread. `tok` must outlive it.
class IncrementalDetokenizer {
 public:
  IncrementalDetokenizer(const Tokenizer* tok, const std::vector<int>& prompt_ids);

  // Adds one generated id and returns the new text that is safe to emit
  // (possibly ""). Bytes of an unfinished character are held back until the
  // character completes or can no longer complete; text before them goes out. Ids outside
  // [0, piece_count()) are ignored.
  std::string Append(int id);

  // Ends the stream and returns what was held back: an unfinished character
  // comes out as sentencepiece decodes it (U+FFFD per byte). Append after
  // Flush returns "" (the stream is over).
  std::string Flush();

 private:
  // Decode(ids_[begin, end)).
  std::string DecodeRange(size_t begin, size_t end) const;
  // Emits the text of ids_[read_, end) and moves the window forward.
  std::string EmitTo(size_t end);

  const Tokenizer* tok_;
  std::vector<int> ids_;     // prompt ids, then generated ids
  size_t prefix_ = 0;        // window start: Decode(ids_[prefix_, ...)) is computed
  size_t read_ = 0;          // text of ids_[0, read_) has been emitted (or is prompt)
  std::string prefix_text_;  // DecodeRange(prefix_, read_)
  bool flushed_ = false;     // Flush() was called
};

}  // namespace streamgen
