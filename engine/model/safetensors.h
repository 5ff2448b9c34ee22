// Memory-mapped safetensors reader (single file or Hugging Face shards) and a
// small writer used by the tiny-model tool and the tests. No torch here.
//
// File layout: u64 little-endian header length N, N bytes of JSON header
// ({"name": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, ...,
// "__metadata__": {...}}), then the data section that the offsets index into.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace streamgen {

// The storage dtypes the engine accepts. Others (I8, F64, ...) are refused.
enum class StorageDtype { kF32, kF16, kBF16 };

// "F32", "F16", "BF16" (the safetensors spelling).
const char* StorageDtypeName(StorageDtype dtype);
// Bytes per element: 4, 2, 2.
size_t StorageDtypeSize(StorageDtype dtype);
// Parses the safetensors spelling ("F32", "F16", "BF16"); anything else is
// InvalidArgument naming it.
absl::StatusOr<StorageDtype> ParseStorageDtype(absl::string_view name);

// One tensor inside a mapped file. `data` stays valid while the owning
// SafetensorsFile / WeightStore lives. Data is little-endian, row-major.
struct TensorView {
  std::string name;
  StorageDtype dtype = StorageDtype::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  size_t nbytes = 0;
  std::string file;  // path of the file that holds it (for error messages)

  int64_t numel() const;
};

// "[4, 64]"
std::string ShapeString(const std::vector<int64_t>& shape);

// One read-only mapped .safetensors file, validated at Open. Immutable after
// Open: all const methods are thread-safe.
class SafetensorsFile {
 public:
  // Maps and validates `path`: header length and JSON, each entry's dtype,
  // shape, data_offsets (inside the data section, size == numel * dtype size),
  // no overlaps, no duplicate names. Errors name the file and the tensor.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  // Sorted by name.
  const std::vector<TensorView>& tensors() const { return tensors_; }
  // nullptr when absent.
  const TensorView* Find(const std::string& name) const;
  // String entries of "__metadata__" (non-string values are skipped).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  SafetensorsFile() = default;
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  std::vector<TensorView> tensors_;
  std::map<std::string, size_t> index_;  // name -> position in tensors_
  std::map<std::string, std::string> metadata_;
};

// All weights of a model directory: `model.safetensors`, or the shards listed
// in `model.safetensors.index.json` (weight_map: tensor -> shard file).
// Immutable after OpenDir: all const methods are thread-safe.
class WeightStore {
 public:
  static absl::StatusOr<std::unique_ptr<WeightStore>> OpenDir(const std::string& dir);

  const std::string& dir() const { return dir_; }
  // nullptr when absent.
  const TensorView* Find(const std::string& name) const;
  // Sorted.
  std::vector<std::string> Names() const;
  // Sum of the tensors' nbytes.
  size_t TotalBytes() const;
  // The .safetensors files opened, in the order they were opened.
  std::vector<std::string> Files() const;

 private:
  WeightStore() = default;
  absl::Status AddFile(std::unique_ptr<SafetensorsFile> file);
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorView*> by_name_;
};

// Scalar conversions (exact upcasts; downcasts round to nearest even).
float Bf16ToFloat(uint16_t bits);
uint16_t FloatToBf16(float value);
float HalfToFloat(uint16_t bits);
uint16_t FloatToHalf(float value);

// Copies view.numel() values into `out` (which may be null when there are
// none), upcasting F16/BF16 exactly.
void ToFloat32(const TensorView& view, float* out);

// A tensor to write: `values` (numel of `shape`) are converted to `dtype`.
struct TensorToWrite {
  std::string name;
  StorageDtype dtype = StorageDtype::kF32;
  std::vector<int64_t> shape;
  std::vector<float> values;
};

// Writes a safetensors file (tensors laid out in the given order, header
// padded with spaces to a multiple of 8, little-endian host assumed). String
// metadata goes into "__metadata__" ({"format": "pt"} when none is given, as
// Hugging Face loaders expect). Written to `path`.partial, then renamed.
// Fails on a values/shape size mismatch or an I/O error. Thread-safe.
absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

}  // namespace streamgen
