#include <dlfcn.h>
#include <link.h>
#include <unistd.h>

#include <climits>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/text/sentencepiece_backend.h"

#ifndef STREAMGEN_SENTENCEPIECE_SHIM
#define STREAMGEN_SENTENCEPIECE_SHIM "libstreamgen_sentencepiece.so"
#endif

namespace streamgen {
namespace {

using Factory = SentencePieceBackend* (*)();

#if defined(STREAMGEN_SENTENCEPIECE_SELF_CONTAINED)
// The shim carries sentencepiece and its protobuf-lite inside itself, linked
// from static archives with none of their symbols exported
// (-DSTREAMGEN_SENTENCEPIECE_STATIC: the sanitizer builds, engine/CMakeLists.txt).
// Its protobuf references were bound inside it at link time, so libprotobuf
// 3.21 in the process (libtorch, gRPC) cannot interpose on them, nor its copy on
// libprotobuf's: nothing to keep apart, and no RTLD_DEEPBIND, which the ASan
// and TSan runtimes abort on.
constexpr int kDlopenFlags = RTLD_NOW | RTLD_LOCAL;
#elif defined(STREAMGEN_SENTENCEPIECE_NO_DEEPBIND)
// The libFuzzer build (STREAMGEN_FUZZ, scripts/fuzz.sh) runs under ASan, whose
// runtime aborts any dlopen with RTLD_DEEPBIND ("incompatible with sanitizer
// runtime"). DEEPBIND is there only to keep sentencepiece's bundled protobuf
// 3.14 from meeting the libprotobuf 3.21 that libtorch and gRPC bring (see
// sentencepiece_backend.h). A fuzz target that tokenizes links neither, so
// with plain RTLD_LOCAL sentencepiece's protobuf symbols can only bind to its
// own copy, and the real tokenizer runs instrumented code around it. Should a
// libprotobuf be in the process after all, the load is refused below rather
// than risking the clash. Linking the shim into the fuzz target instead would
// have needed a second way of creating the backend; this changes one flag.
constexpr int kDlopenFlags = RTLD_NOW | RTLD_LOCAL;

// The first loaded object whose name contains "libprotobuf", or "".
std::string LoadedLibprotobuf() {
  std::string found;
  dl_iterate_phdr(
      [](struct dl_phdr_info* info, size_t, void* data) {
        auto* out = static_cast<std::string*>(data);
        if (info->dlpi_name != nullptr && std::string(info->dlpi_name).find("libprotobuf") !=
                                              std::string::npos) {
          *out = info->dlpi_name;
          return 1;
        }
        return 0;
      },
      &found);
  return found;
}
#else
constexpr int kDlopenFlags = RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND;
#endif

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
#if defined(STREAMGEN_SENTENCEPIECE_NO_DEEPBIND) && !defined(STREAMGEN_SENTENCEPIECE_SELF_CONTAINED)
    if (const std::string protobuf = LoadedLibprotobuf(); !protobuf.empty()) {
      error = absl::StrCat(
          "\n  built without RTLD_DEEPBIND (STREAMGEN_SENTENCEPIECE_NO_DEEPBIND), but ", protobuf,
          " is loaded: sentencepiece's own protobuf would clash with it");
      return;
    }
#endif
    const std::vector<std::string> candidates = {
        STREAMGEN_SENTENCEPIECE_SHIM,
        ExecutableDir() + "/libstreamgen_sentencepiece.so",
        "libstreamgen_sentencepiece.so",
    };
    for (const std::string& path : candidates) {
      void* handle = ::dlopen(path.c_str(), kDlopenFlags);
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
