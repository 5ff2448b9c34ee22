// The measurement behind engine/text/hf_text.h's choice of Unicode library:
// NFC and NFKC normalization of UTF-8 text with ICU (Normalizer2, as the
// tokenizer uses it: a quick "already normalized" check, then normalizeUTF8)
// and with utf8proc (utf8proc_NFC / utf8proc_NFKC, which allocate their
// result), on English, multilingual and decomposed (non-NFC) text, one thread.
// Built only where libutf8proc-dev is installed (it is not a dependency of
// streamgen). Prints MB/s per library, text and form; bench/README.md.
#include <unicode/normalizer2.h>
#include <unicode/stringoptions.h>
#include <unicode/bytestream.h>
#include <utf8proc.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

std::string Repeat(const std::string& s, size_t bytes) {
  std::string out;
  while (out.size() < bytes) out += s;
  return out;
}

// Normalizes `text` with ICU the way hf_text.cc does: the quick check first.
size_t IcuNormalize(const icu::Normalizer2* norm, const std::string& text) {
  UErrorCode status = U_ZERO_ERROR;
  if (norm->isNormalizedUTF8(text, status) && U_SUCCESS(status)) return text.size();
  std::string out;
  icu::StringByteSink<std::string> sink(&out, static_cast<int32_t>(text.size()));
  status = U_ZERO_ERROR;
  norm->normalizeUTF8(0, text, sink, nullptr, status);
  if (U_FAILURE(status)) std::abort();
  return out.size();
}

size_t Utf8procNormalize(bool nfkc, const std::string& text) {
  const auto* in = reinterpret_cast<const utf8proc_uint8_t*>(text.c_str());
  utf8proc_uint8_t* out = nfkc ? utf8proc_NFKC(in) : utf8proc_NFC(in);
  if (out == nullptr) std::abort();
  size_t n = std::char_traits<char>::length(reinterpret_cast<char*>(out));
  std::free(out);
  return n;
}

template <typename F>
double MegabytesPerSecond(const std::string& text, F&& f) {
  using Clock = std::chrono::steady_clock;
  size_t sink = 0;
  int rounds = 0;
  const auto start = Clock::now();
  double seconds = 0;
  do {
    sink += f(text);
    ++rounds;
    seconds = std::chrono::duration<double>(Clock::now() - start).count();
  } while (seconds < 0.5);
  if (sink == 0) std::puts("");
  return static_cast<double>(text.size()) * rounds / seconds / 1e6;
}

}  // namespace

int main() {
  const size_t kBytes = 1 << 20;
  struct Text {
    const char* name;
    std::string text;
  };
  const std::vector<Text> texts = {
      {"english", Repeat("The quick brown fox jumps over the lazy dog; it's 1,234 miles away. ",
                         kBytes)},
      {"multilingual",
       Repeat("Zürich größer café 東京は日本の首都です。Москва — столица. مرحبا بالعالم "
              "नमस्ते दुनिया 🇫🇷👍🏽 ",
              kBytes)},
      // Decomposed: e + U+0301, A + U+030A, ﬁ ligature, full-width digits.
      {"decomposed", Repeat("cafe\xcc\x81 A\xcc\x8angstro\xcc\x88m \xef\xac\x81le \xef\xbc\x91\xef\xbc\x92 ",
                            kBytes)},
  };
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* nfc = icu::Normalizer2::getNFCInstance(status);
  const icu::Normalizer2* nfkc = icu::Normalizer2::getNFKCInstance(status);
  if (U_FAILURE(status)) return 1;
  std::printf("%-14s %-5s %12s %12s %8s\n", "text", "form", "ICU MB/s", "utf8proc MB/s", "ratio");
  for (const Text& t : texts) {
    for (bool k : {false, true}) {
      // Interleaved: ICU, utf8proc, ICU, utf8proc; the better of two each.
      double icu = 0, u8p = 0;
      for (int round = 0; round < 2; ++round) {
        icu = std::max(icu, MegabytesPerSecond(t.text, [&](const std::string& s) {
                         return IcuNormalize(k ? nfkc : nfc, s);
                       }));
        u8p = std::max(u8p, MegabytesPerSecond(
                                t.text, [&](const std::string& s) { return Utf8procNormalize(k, s); }));
      }
      std::printf("%-14s %-5s %12.1f %12.1f %8.2f\n", t.name, k ? "NFKC" : "NFC", icu, u8p,
                  icu / u8p);
    }
  }
  return 0;
}
