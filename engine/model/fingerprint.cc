#include "engine/model/fingerprint.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/model/safetensors.h"
#include "common/status.h"

namespace streamgen {
namespace {

constexpr uint64_t kP1 = 0x9E3779B185EBCA87ull;
constexpr uint64_t kP2 = 0xC2B2AE3D27D4EB4Full;
constexpr uint64_t kP3 = 0x165667B19E3779F9ull;

uint64_t Rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

uint64_t Avalanche(uint64_t h) {
  h ^= h >> 33;
  h *= kP2;
  h ^= h >> 29;
  h *= kP3;
  h ^= h >> 32;
  return h;
}

bool FileExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

}  // namespace

void Hasher128::Word(uint64_t word) {
  a_ = Rotl(a_ + word * kP2, 31) * kP1;
  b_ = Rotl(b_ ^ (word * kP3), 27) * kP2 + kP1;
}

void Hasher128::Update(const void* data, size_t size) {
  const unsigned char* p = static_cast<const unsigned char*>(data);
  length_ += size;
  if (tail_size_ > 0) {
    while (size > 0 && tail_size_ < 8) {
      tail_[tail_size_++] = *p++;
      --size;
    }
    if (tail_size_ < 8) return;
    uint64_t word;
    std::memcpy(&word, tail_, 8);
    Word(word);
    tail_size_ = 0;
  }
  for (; size >= 8; size -= 8, p += 8) {
    uint64_t word;
    std::memcpy(&word, p, 8);  // little-endian hosts only (x86-64, aarch64)
    Word(word);
  }
  std::memcpy(tail_, p, size);
  tail_size_ = size;
}

std::string Hasher128::HexDigest() {
  uint64_t last = 0;
  std::memcpy(&last, tail_, tail_size_);
  Word(last ^ (static_cast<uint64_t>(tail_size_) << 56));
  Word(length_);
  return absl::StrFormat("%016x%016x", Avalanche(a_ ^ Rotl(b_, 17)), Avalanche(b_ + a_));
}

absl::StatusOr<std::string> ModelFingerprint(const std::string& dir, absl::string_view dtype) {
  std::vector<std::string> files;
  for (const char* name : {"config.json", "generation_config.json", "tokenizer.model", "tokenizer.json",
                           "tokenizer_config.json", "model.safetensors.index.json"}) {
    if (FileExists(absl::StrCat(dir, "/", name))) files.push_back(name);
  }
  // The weight files the model really loads (a sharded checkpoint's shards).
  SG_ASSIGN_OR_RETURN(std::unique_ptr<WeightStore> store, WeightStore::OpenDir(dir));
  std::set<std::string> weights;
  for (const std::string& path : store->Files()) {
    weights.insert(path.substr(path.find_last_of('/') + 1));
  }
  files.insert(files.end(), weights.begin(), weights.end());

  Hasher128 hasher;
  hasher.Update(absl::StrCat("streamgen-fingerprint-1\n", dtype, "\n"));
  std::vector<char> buffer(4 << 20);
  for (const std::string& name : files) {
    const std::string path = absl::StrCat(dir, "/", name);
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      return absl::NotFoundError(
          absl::StrCat(path, ": cannot read it for the model fingerprint: ", std::strerror(errno)));
    }
    struct stat st;
    ::fstat(fd, &st);
    hasher.Update(absl::StrCat(name, "\n", static_cast<int64_t>(st.st_size), "\n"));
    for (;;) {
      const ssize_t n = ::read(fd, buffer.data(), buffer.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        const int error = errno;
        ::close(fd);
        return absl::DataLossError(absl::StrCat(path, ": reading it for the model fingerprint: ",
                                                std::strerror(error)));
      }
      if (n == 0) break;
      hasher.Update(buffer.data(), static_cast<size_t>(n));
    }
    ::close(fd);
  }
  return absl::StrCat("sg1-", hasher.HexDigest());
}

}  // namespace streamgen
