#include "engine/text/hf_text.h"

#include <unicode/bytestream.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace streamgen::hf {
namespace {

bool IsContinuation(unsigned char b) { return (b & 0xC0) == 0x80; }

// Length of the valid character at bytes[i], or 0 with *bad set to the
// length of the maximal invalid subpart there (Unicode's "substitution of
// maximal subparts", which Rust's Utf8Chunks follows).
int ValidCharAt(std::string_view bytes, size_t i, int* bad) {
  const auto at = [&](size_t k) -> int {
    return k < bytes.size() ? static_cast<unsigned char>(bytes[k]) : -1;
  };
  const int b = at(i);
  if (b < 0x80) return 1;
  int width = 0;
  int lo = 0x80, hi = 0xBF;  // range of the second byte
  if (b >= 0xC2 && b <= 0xDF) {
    width = 2;
  } else if (b >= 0xE0 && b <= 0xEF) {
    width = 3;
    if (b == 0xE0) lo = 0xA0;
    if (b == 0xED) hi = 0x9F;
  } else if (b >= 0xF0 && b <= 0xF4) {
    width = 4;
    if (b == 0xF0) lo = 0x90;
    if (b == 0xF4) hi = 0x8F;
  } else {
    *bad = 1;
    return 0;
  }
  const int second = at(i + 1);
  if (second < lo || second > hi) {
    *bad = 1;
    return 0;
  }
  for (int k = 2; k < width; ++k) {
    const int next = at(i + k);
    if (next < 0 || !IsContinuation(static_cast<unsigned char>(next))) {
      *bad = k;
      return 0;
    }
  }
  return width;
}

}  // namespace

int Utf8Length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead & 0xE0) == 0xC0) return 2;
  if ((lead & 0xF0) == 0xE0) return 3;
  if ((lead & 0xF8) == 0xF0) return 4;
  return 1;
}

char32_t NextCodePoint(std::string_view s, size_t* pos) {
  const unsigned char lead = static_cast<unsigned char>(s[*pos]);
  const int n = std::min<int>(Utf8Length(lead), static_cast<int>(s.size() - *pos));
  char32_t c = n == 1 ? lead : lead & (0x7F >> n);
  for (int k = 1; k < n; ++k) c = (c << 6) | (static_cast<unsigned char>(s[*pos + k]) & 0x3F);
  *pos += n;
  return c;
}

void AppendUtf8(char32_t c, std::string* out) {
  if (c < 0x80) {
    out->push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (c >> 6)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (c >> 12)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (c >> 18)));
    out->push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

bool IsValidUtf8(std::string_view bytes) {
  for (size_t i = 0; i < bytes.size();) {
    int bad = 0;
    const int n = ValidCharAt(bytes, i, &bad);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

std::string ToValidUtf8(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (size_t i = 0; i < bytes.size();) {
    int bad = 0;
    const int n = ValidCharAt(bytes, i, &bad);
    if (n > 0) {
      out.append(bytes.data() + i, n);
      i += n;
    } else {
      out.append("\xEF\xBF\xBD");
      i += bad;
    }
  }
  return out;
}

bool IsWhitespace(char32_t c) { return u_isUWhiteSpace(static_cast<UChar32>(c)); }

bool IsNumeric(char32_t c) {
  const int8_t type = u_charType(static_cast<UChar32>(c));
  return type == U_DECIMAL_DIGIT_NUMBER || type == U_LETTER_NUMBER || type == U_OTHER_NUMBER;
}

bool IsAlphanumeric(char32_t c) { return u_isUAlphabetic(static_cast<UChar32>(c)) || IsNumeric(c); }

bool IsPunctuation(char32_t c) {
  if (c < 0x80)
    return (c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x40) || (c >= 0x5B && c <= 0x60) ||
           (c >= 0x7B && c <= 0x7E);
  switch (u_charType(static_cast<UChar32>(c))) {
    case U_CONNECTOR_PUNCTUATION:
    case U_DASH_PUNCTUATION:
    case U_START_PUNCTUATION:
    case U_END_PUNCTUATION:
    case U_INITIAL_PUNCTUATION:
    case U_FINAL_PUNCTUATION:
    case U_OTHER_PUNCTUATION:
      return true;
    default:
      return false;
  }
}

std::string Normalize(std::string_view text, NormalForm form) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* norm = form == NormalForm::kNfc
                                     ? icu::Normalizer2::getNFCInstance(status)
                                     : icu::Normalizer2::getNFKCInstance(status);
  if (U_FAILURE(status)) return std::string(text);
  const icu::StringPiece piece(text.data(), static_cast<int32_t>(text.size()));
  if (norm->isNormalizedUTF8(piece, status) && U_SUCCESS(status)) return std::string(text);
  status = U_ZERO_ERROR;
  std::string out;
  icu::StringByteSink<std::string> sink(&out, static_cast<int32_t>(text.size()));
  norm->normalizeUTF8(0, piece, sink, nullptr, status);
  if (U_FAILURE(status)) return std::string(text);
  return out;
}

std::string Lowercase(std::string_view text) {
  // Character by character, as the library's NormalizedString::lowercase
  // (Rust's char::to_lowercase: full mappings, no context, so no final
  // sigma). The one unconditional multi-character lowercase mapping of
  // SpecialCasing.txt is U+0130; every other one is ICU's simple mapping.
  std::string out;
  out.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    const char32_t c = NextCodePoint(text, &pos);
    if (c == 0x130) {
      out.append("i\xCC\x87");
    } else {
      AppendUtf8(static_cast<char32_t>(u_tolower(static_cast<UChar32>(c))), &out);
    }
  }
  return out;
}

// ---- Pattern ----

Pattern::~Pattern() {
  if (code_ != nullptr) pcre2_code_free(code_);
}

absl::StatusOr<std::unique_ptr<Pattern>> Pattern::Regex(const std::string& regex) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(regex.data()), regex.size(),
                                   PCRE2_UTF | PCRE2_UCP, &error, &offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof(message));
    return absl::InvalidArgumentError(absl::StrCat("bad regex '", regex, "' at offset ", offset,
                                                   ": ", reinterpret_cast<char*>(message)));
  }
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // without JIT (unsupported CPU) it still matches
  std::unique_ptr<Pattern> p(new Pattern());
  p->code_ = code;
  return p;
}

std::unique_ptr<Pattern> Pattern::Literal(std::string literal) {
  std::unique_ptr<Pattern> p(new Pattern());
  p->literal_ = std::move(literal);
  return p;
}

std::unique_ptr<Pattern> Pattern::CharClass(std::function<bool(char32_t)> predicate) {
  std::unique_ptr<Pattern> p(new Pattern());
  p->predicate_ = std::move(predicate);
  return p;
}

namespace {

// Per-thread PCRE2 match state: match data and a JIT stack larger than the
// 32 KiB default (long runs of spaces under `\s+(?!\S)`).
struct MatchState {
  MatchState() {
    data = pcre2_match_data_create(4, nullptr);
    context = pcre2_match_context_create(nullptr);
    stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
    pcre2_jit_stack_assign(context, nullptr, stack);
  }
  ~MatchState() {
    pcre2_jit_stack_free(stack);
    pcre2_match_context_free(context);
    pcre2_match_data_free(data);
  }
  pcre2_match_data* data;
  pcre2_match_context* context;
  pcre2_jit_stack* stack;
};

}  // namespace

std::vector<std::pair<size_t, size_t>> Pattern::FindAll(std::string_view text) const {
  std::vector<std::pair<size_t, size_t>> found;
  if (code_ != nullptr) {
    thread_local MatchState state;
    size_t pos = 0;
    bool have_last = false;
    size_t last_end = 0;
    while (pos <= text.size()) {
      int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), pos,
                           PCRE2_NO_UTF_CHECK, state.data, state.context);
      if (rc < 0 && rc != PCRE2_ERROR_NOMATCH) {
        // JIT stack or other limit: retry with the interpreter.
        rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), pos,
                         PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, state.data, state.context);
      }
      if (rc < 0) break;
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(state.data);
      const size_t begin = ov[0], end = ov[1];
      if (begin == end && have_last && end == last_end) {
        if (begin >= text.size()) break;
        pos = begin + Utf8Length(static_cast<unsigned char>(text[begin]));
        continue;
      }
      found.emplace_back(begin, end);
      have_last = true;
      last_end = end;
      pos = end;
    }
  } else if (predicate_) {
    for (size_t pos = 0; pos < text.size();) {
      const size_t begin = pos;
      if (predicate_(NextCodePoint(text, &pos))) found.emplace_back(begin, pos);
    }
  } else if (!literal_.empty()) {
    for (size_t pos = text.find(literal_); pos != std::string_view::npos;
         pos = text.find(literal_, pos + literal_.size())) {
      found.emplace_back(pos, pos + literal_.size());
    }
  }
  return found;
}

std::vector<Span> Pattern::FindMatches(std::string_view text) const {
  if (text.empty()) return {{0, 0, false}};
  std::vector<Span> spans;
  size_t prev = 0;
  for (const auto& [begin, end] : FindAll(text)) {
    if (prev != begin) spans.push_back({prev, begin, false});
    spans.push_back({begin, end, true});
    prev = end;
  }
  if (prev != text.size()) spans.push_back({prev, text.size(), false});
  return spans;
}

}  // namespace streamgen::hf
