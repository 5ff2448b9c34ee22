// Helpers shared by the fuzz targets (tests/fuzz/*_fuzz.cc): reading the
// input, checking properties (a violation prints what broke and aborts, which
// libFuzzer and the corpus replay tests both report as a failure), and
// scratch files for the parsers that read files. Header-only, torch-free.
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "absl/strings/string_view.h"

namespace streamgen::fuzz {

// Prints "fuzz property violated: ..." and aborts.
[[noreturn]] inline void Fail(const char* format, ...) {
  std::fprintf(stderr, "fuzz property violated: ");
  va_list args;
  va_start(args, format);
  std::vfprintf(stderr, format, args);
  va_end(args);
  std::fprintf(stderr, "\n");
  std::abort();
}

#define FUZZ_CHECK(condition, ...)                                           \
  do {                                                                      \
    if (!(condition)) {                                                     \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK(%s)\n", __FILE__, __LINE__,   \
                   #condition);                                             \
      ::streamgen::fuzz::Fail(__VA_ARGS__);                                 \
    }                                                                       \
  } while (0)

// Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing above
// U+10FFFF, no truncated sequence.
inline bool IsValidUtf8(absl::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    size_t need = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // range of the second byte
    if (c < 0x80) {
      ++i;
      continue;
    } else if (c >= 0xC2 && c <= 0xDF) {
      need = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
      need = 2;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      need = 3;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return false;
    }
    if (i + need >= s.size()) return false;  // truncated
    for (size_t k = 1; k <= need; ++k) {
      const unsigned char b = static_cast<unsigned char>(s[i + k]);
      const unsigned char min = k == 1 ? lo : 0x80, max = k == 1 ? hi : 0xBF;
      if (b < min || b > max) return false;
    }
    i += need + 1;
  }
  return true;
}

// Reads an input front to back; past the end every read gives 0 / "".
class Input {
 public:
  Input(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  bool empty() const { return pos_ >= size_; }
  size_t remaining() const { return size_ - pos_; }

  uint8_t Byte() { return empty() ? 0 : data_[pos_++]; }
  // Two bytes, little-endian.
  uint16_t U16() {
    const uint16_t lo = Byte();
    return static_cast<uint16_t>(lo | (Byte() << 8));
  }
  uint32_t U32() {
    const uint32_t lo = U16();
    return lo | (static_cast<uint32_t>(U16()) << 16);
  }
  // Up to n bytes.
  std::string Bytes(size_t n) {
    if (n > remaining()) n = remaining();
    std::string out(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n;
    return out;
  }
  // A string whose length is the next byte (at most `max`).
  std::string ShortString(size_t max = 255) { return Bytes(Byte() % (max + 1)); }
  std::string Rest() { return Bytes(remaining()); }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// A per-process scratch directory under $TMPDIR (or /tmp), removed with its
// files at exit: for the parsers whose entry points take paths.
class ScratchDir {
 public:
  static const std::string& Path() {
    static ScratchDir* dir = new ScratchDir();
    return dir->path_;
  }
  // Writes `content` to Path()/name.
  static std::string Write(const std::string& name, std::string_view content) {
    const std::string path = Path() + "/" + name;
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(content.data(), static_cast<std::streamsize>(content.size()));
    out.close();
    if (!out) Fail("cannot write %s", path.c_str());
    return path;
  }
  static void Remove(const std::string& name) { ::unlink((Path() + "/" + name).c_str()); }

 private:
  ScratchDir() {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") +
                          "/streamgen-fuzz-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) Fail("mkdtemp %s failed", pattern.c_str());
    path_ = pattern;
    std::atexit([] {
      std::error_code ignored;
      std::filesystem::remove_all(Path(), ignored);
    });
  }
  std::string path_;
};

}  // namespace streamgen::fuzz
