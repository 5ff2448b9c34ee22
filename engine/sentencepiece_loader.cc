#include <dlfcn.h>
#include <unistd.h>

#include <climits>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/sentencepiece_backend.h"

#ifndef STREAMGEN_SENTENCEPIECE_SHIM
#define STREAMGEN_SENTENCEPIECE_SHIM "libstreamgen_sentencepiece.so"
#endif

namespace streamgen {
namespace {

using Factory = SentencePieceBackend* (*)();

std::string ExecutableDir() {
  char buf[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return "";
  std::string path(buf, static_cast<size_t>(n));
  return path.substr(0, path.find_last_of('/'));
}

// dlopen once; the factory, or why it could not be had.
absl::StatusOr<Factory> LoadFactory() {
  static std::once_flag once;
  static Factory factory = nullptr;
  static std::string error;
  std::call_once(once, [] {
    const std::vector<std::string> candidates = {
        STREAMGEN_SENTENCEPIECE_SHIM,
        ExecutableDir() + "/libstreamgen_sentencepiece.so",
        "libstreamgen_sentencepiece.so",
    };
    for (const std::string& path : candidates) {
      void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
      if (handle == nullptr) {
        absl::StrAppend(&error, "\n  ", path, ": ", ::dlerror());
        continue;
      }
      factory = reinterpret_cast<Factory>(::dlsym(handle, "streamgen_new_sentencepiece_backend"));
      if (factory != nullptr) return;
      absl::StrAppend(&error, "\n  ", path, ": no streamgen_new_sentencepiece_backend");
    }
  });
  if (factory == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot load the sentencepiece backend library:", error));
  }
  return factory;
}

}  // namespace

absl::StatusOr<std::unique_ptr<SentencePieceBackend>> NewSentencePieceBackend() {
  absl::StatusOr<Factory> factory = LoadFactory();
  if (!factory.ok()) return factory.status();
  return std::unique_ptr<SentencePieceBackend>((*factory)());
}

}  // namespace streamgen
