// The sentencepiece calls streamgen makes, behind an interface whose
// implementation lives in its own shared library, libstreamgen_sentencepiece.so,
// loaded with dlopen(RTLD_LOCAL | RTLD_DEEPBIND).
//
// Why: Debian's libsentencepiece.so.0 (0.1.97) carries its own copy of
// protobuf-lite 3.14 and exports all of its symbols, while libtorch and gRPC
// load the system libprotobuf.so.32 (3.21). Linked into one process normally,
// whichever comes first in the global symbol scope wins for both: libprotobuf's
// start-up then runs sentencepiece's MergeFromImpl and crashes (SIGSEGV before
// main), or, the other way round, sentencepiece fails its version check
// ("compiled against 3.14.0 ... installed version 3.21.12"). Loaded locally
// with DEEPBIND, sentencepiece binds to its own protobuf and stays out of the
// global scope. No header here includes sentencepiece (its headers also clash
// with abseil's).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"

namespace streamgen {

// Mirrors sentencepiece::SentencePieceProcessor (and its trainer). Thread-safe
// for const calls after Load, like the processor itself.
class SentencePieceBackend {
 public:
  virtual ~SentencePieceBackend() = default;
  // "" on success, else sentencepiece's error text.
  virtual std::string Load(const std::string& path) = 0;
  virtual int GetPieceSize() const = 0;
  virtual bool IsByte(int id) const = 0;
  virtual bool IsControl(int id) const = 0;
  virtual bool IsUnknown(int id) const = 0;
  virtual std::string IdToPiece(int id) const = 0;
  virtual int PieceToId(std::string_view piece) const = 0;
  virtual int bos_id() const = 0;
  virtual int eos_id() const = 0;
  // false on failure.
  virtual bool Encode(std::string_view text, std::vector<int>* ids) const = 0;
  virtual std::string DecodeIds(const std::vector<int>& ids) const = 0;
  // Trains a model from `lines` with trainer `args`; "" on success, else the error.
  virtual std::string Train(const std::unordered_map<std::string, std::string>& args,
                            const std::vector<std::string>& lines, std::string* model) = 0;
};

// Loads libstreamgen_sentencepiece.so (once per process) and makes a backend.
// Looked up at the build tree's path, then beside the executable, then by name.
// Thread-safe.
absl::StatusOr<std::unique_ptr<SentencePieceBackend>> NewSentencePieceBackend();

}  // namespace streamgen

// The shim's one exported symbol.
extern "C" streamgen::SentencePieceBackend* streamgen_new_sentencepiece_backend();
