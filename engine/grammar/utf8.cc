#include "engine/grammar/utf8.h"

namespace streamgen {
namespace grammar {

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

int32_t DecodeUtf8(std::string_view s, size_t* pos) {
  const size_t p = *pos;
  if (p >= s.size()) return -1;
  const uint8_t b0 = static_cast<uint8_t>(s[p]);
  int len;
  uint32_t cp;
  uint32_t min;
  if (b0 < 0x80) {
    *pos = p + 1;
    return b0;
  } else if ((b0 & 0xE0) == 0xC0) {
    len = 2, cp = b0 & 0x1F, min = 0x80;
  } else if ((b0 & 0xF0) == 0xE0) {
    len = 3, cp = b0 & 0x0F, min = 0x800;
  } else if ((b0 & 0xF8) == 0xF0) {
    len = 4, cp = b0 & 0x07, min = 0x10000;
  } else {
    return -1;
  }
  if (p + len > s.size()) return -1;
  for (int i = 1; i < len; ++i) {
    const uint8_t b = static_cast<uint8_t>(s[p + i]);
    if ((b & 0xC0) != 0x80) return -1;
    cp = (cp << 6) | (b & 0x3F);
  }
  if (cp < min || cp > kMaxCodePoint || (cp >= 0xD800 && cp <= 0xDFFF)) return -1;
  *pos = p + len;
  return static_cast<int32_t>(cp);
}

uint32_t DecodeUtf8Lenient(std::string_view s, size_t* pos) {
  const int32_t cp = DecodeUtf8(s, pos);
  if (cp >= 0) return static_cast<uint32_t>(cp);
  return static_cast<uint8_t>(s[(*pos)++]);
}

bool IsValidUtf8(std::string_view s) {
  for (size_t pos = 0; pos < s.size();) {
    if (DecodeUtf8(s, &pos) < 0) return false;
  }
  return true;
}

namespace {

// [lo, hi] within one encoding length, no surrogates.
void SplitSameLength(uint32_t lo, uint32_t hi, std::vector<ByteRangeSequence>* out) {
  if (lo > hi) return;
  std::string a;
  AppendUtf8(lo, &a);
  const int n = static_cast<int>(a.size());
  // Split until each trailing group of continuation bytes spans its full
  // range [80, BF] or the leading parts agree, so that the set is a product
  // of byte ranges.
  for (int i = 1; i < n; ++i) {
    const uint32_t m = (1u << (6 * i)) - 1;
    if ((lo & ~m) != (hi & ~m)) {
      if ((lo & m) != 0) {
        SplitSameLength(lo, lo | m, out);
        SplitSameLength((lo | m) + 1, hi, out);
        return;
      }
      if ((hi & m) != m) {
        SplitSameLength(lo, (hi & ~m) - 1, out);
        SplitSameLength(hi & ~m, hi, out);
        return;
      }
    }
  }
  std::string b;
  AppendUtf8(hi, &b);
  ByteRangeSequence seq;
  seq.length = n;
  for (int i = 0; i < n; ++i) {
    seq.lo[i] = static_cast<uint8_t>(a[i]);
    seq.hi[i] = static_cast<uint8_t>(b[i]);
  }
  out->push_back(seq);
}

}  // namespace

void SplitUtf8Range(uint32_t lo, uint32_t hi, std::vector<ByteRangeSequence>* out) {
  if (hi > kMaxCodePoint) hi = kMaxCodePoint;
  if (lo > hi) return;
  // Surrogates have no UTF-8 encoding.
  if (lo <= 0xDFFF && hi >= 0xD800) {
    if (lo < 0xD800) SplitUtf8Range(lo, 0xD7FF, out);
    if (hi > 0xDFFF) SplitUtf8Range(0xE000, hi, out);
    return;
  }
  static constexpr uint32_t kLengthEnds[] = {0x7F, 0x7FF, 0xFFFF, kMaxCodePoint};
  for (uint32_t end : kLengthEnds) {
    if (lo <= end) {
      if (hi <= end) {
        SplitSameLength(lo, hi, out);
      } else {
        SplitSameLength(lo, end, out);
        SplitUtf8Range(end + 1, hi, out);
      }
      return;
    }
  }
}

}  // namespace grammar
}  // namespace streamgen
