// UTF-8 helpers of the grammar engine: decoding, encoding, and the split of
// code point ranges into byte-range sequences that the byte-level matcher runs.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace streamgen {
namespace grammar {

inline constexpr uint32_t kMaxCodePoint = 0x10FFFF;

// Appends the UTF-8 encoding of `cp` (<= kMaxCodePoint).
void AppendUtf8(uint32_t cp, std::string* out);

// Decodes the code point at *pos and advances *pos past it; -1 (and *pos
// unchanged) when the bytes there are not a valid UTF-8 character (overlong
// forms, surrogates and code points above U+10FFFF are invalid).
int32_t DecodeUtf8(std::string_view s, size_t* pos);

// DecodeUtf8, but an invalid byte decodes as itself (one byte), so that
// every string has a decoding. For builders given arbitrary strings.
uint32_t DecodeUtf8Lenient(std::string_view s, size_t* pos);

bool IsValidUtf8(std::string_view s);

// A sequence of 1 to 4 byte ranges: the UTF-8 encodings of a run of code
// points, byte i in [lo[i], hi[i]].
struct ByteRangeSequence {
  int length = 0;
  std::array<uint8_t, 4> lo{};
  std::array<uint8_t, 4> hi{};
};

// The UTF-8 encodings of the code points in [lo, hi] (surrogates excluded)
// as disjoint byte-range sequences (RE2's / Go's utf8 range split).
void SplitUtf8Range(uint32_t lo, uint32_t hi, std::vector<ByteRangeSequence>* out);

}  // namespace grammar
}  // namespace streamgen
