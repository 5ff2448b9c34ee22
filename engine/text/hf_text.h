// Text primitives of the Hugging Face tokenizer.json pipeline: UTF-8 walking,
// the Unicode character classes the Rust `tokenizers` library tests with
// (`char::is_whitespace`, `is_alphanumeric`, ...), normalization, lowercasing,
// `String::from_utf8_lossy`, and the split patterns (regex, literal string,
// character class) with the library's `find_matches` semantics.
//
// Libraries: regexes run on PCRE2 (UTF + UCP, JIT-compiled): the pre-tokenizer
// patterns of GPT-2 / Llama 3 / Qwen need Unicode properties and look-ahead
// (`\s+(?!\S)`), which RE2 lacks; PCRE2's UCP classes follow the same Unicode
// properties as the Oniguruma engine the Rust library uses. Normalization
// (NFC, NFKC) runs on ICU, which works on UTF-8 directly
// (Normalizer2::normalizeUTF8, after a quick "already normalized" check; on
// ASCII and already-NFC text that check is the whole cost) and also gives the
// character properties and case mappings; utf8proc would do NFC as well, but
// measured 3x (decomposed text) to 20x (text already normalized) slower than
// ICU here (bench/unicode_bench.cc, bench/README.md), and ICU is needed for
// the rest anyway, so one library covers all of it.
#pragma once

#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif
#include <pcre2.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace streamgen::hf {

// Decodes the code point at s[*pos] and advances *pos past it. `s` must be
// valid UTF-8 (see ToValidUtf8).
char32_t NextCodePoint(std::string_view s, size_t* pos);
// Appends the UTF-8 form of `c`.
void AppendUtf8(char32_t c, std::string* out);
// Byte length of the character that starts with `lead` (1 for a stray byte).
int Utf8Length(unsigned char lead);

// `bytes` as Rust's String::from_utf8_lossy makes it: each maximal invalid
// subsequence becomes one U+FFFD.
std::string ToValidUtf8(std::string_view bytes);
// Whether `bytes` is valid UTF-8 (Rust's String::from_utf8 succeeds).
bool IsValidUtf8(std::string_view bytes);

// Rust's char predicates.
bool IsWhitespace(char32_t c);    // char::is_whitespace (White_Space)
bool IsAlphanumeric(char32_t c);  // char::is_alphanumeric (Alphabetic or Nd/Nl/No)
bool IsNumeric(char32_t c);       // char::is_numeric (Nd, Nl, No)
bool IsPunctuation(char32_t c);   // ASCII punctuation or a P* general category

// Unicode normal forms; the text must be valid UTF-8.
enum class NormalForm { kNfc, kNfkc };
std::string Normalize(std::string_view text, NormalForm form);
// Lowercasing character by character, as Rust's char::to_lowercase (no
// final-sigma context: the tokenizers library maps each char alone).
std::string Lowercase(std::string_view text);

// A piece of a split: [begin, end) byte offsets and whether it is a match.
struct Span {
  size_t begin;
  size_t end;
  bool is_match;
};

// What a Split / Replace / Metaspace splits on: a regex, a literal string or
// a character class. Immutable after creation; thread-safe.
class Pattern {
 public:
  // A PCRE2 regex (UTF, UCP, JIT). INVALID_ARGUMENT with PCRE2's message and
  // offset when it does not compile.
  static absl::StatusOr<std::unique_ptr<Pattern>> Regex(const std::string& regex);
  // Every non-overlapping occurrence of `literal` (nothing when it is empty).
  static std::unique_ptr<Pattern> Literal(std::string literal);
  // Each character for which `predicate` holds is one match.
  static std::unique_ptr<Pattern> CharClass(std::function<bool(char32_t)> predicate);

  ~Pattern();
  Pattern(const Pattern&) = delete;
  Pattern& operator=(const Pattern&) = delete;

  // The tokenizers library's Pattern::find_matches: spans covering all of
  // `text` in order, matches and the gaps between them; one non-match span
  // (0, 0) for empty text. Empty matches right after a match are skipped
  // as Rust's find_iter does.
  std::vector<Span> FindMatches(std::string_view text) const;

 private:
  Pattern() = default;
  // Matches as [begin, end) pairs.
  std::vector<std::pair<size_t, size_t>> FindAll(std::string_view text) const;

  pcre2_code* code_ = nullptr;               // the compiled regex, or null
  std::string literal_;                      // the literal, when no regex or class
  std::function<bool(char32_t)> predicate_;  // the class, when set
};

}  // namespace streamgen::hf
