// Fuzz target: engine/model/safetensors.cc's readers. SafetensorsFile::Open on one
// file, and WeightStore::OpenDir on a model directory: model.safetensors alone,
// or model.safetensors.index.json with up to three shards.
//
// Input: byte 0 picks the mode; the rest (split at "\n=====\n" lines for mode 2):
//   mode % 3 == 0  the whole rest is one .safetensors file -> SafetensorsFile::Open
//   mode % 3 == 1  the whole rest is model.safetensors -> WeightStore::OpenDir
//   mode % 3 == 2  part 0 is model.safetensors.index.json, parts 1..3 are the
//                  shards a.safetensors, b.safetensors, c.safetensors -> OpenDir
//
// Properties: never a crash; errors name the file or the directory; every
// tensor of an opened file or store has non-negative dimensions whose product
// (no overflow) times the dtype's size is its byte count, fits in its file's
// data section, can be read to its last byte (and converted to float32), and
// overlaps no other tensor of that file; lookups by name find each tensor; a
// store's names are sorted and unique and its byte total is their sum.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "engine/model/safetensors.h"
#include "tests/fuzz/fuzz_util.h"

namespace streamgen {
namespace {

constexpr char kSeparator[] = "\n=====\n";

std::vector<std::string> Split(const std::string& text) {
  std::vector<std::string> parts;
  size_t begin = 0;
  for (size_t at; (at = text.find(kSeparator, begin)) != std::string::npos;) {
    parts.push_back(text.substr(begin, at - begin));
    begin = at + sizeof(kSeparator) - 1;
  }
  parts.push_back(text.substr(begin));
  return parts;
}

// The data section's size of a file's bytes: what follows the 8-byte length and the header.
uint64_t DataSectionSize(const std::string& bytes) {
  if (bytes.size() < 8) return 0;
  uint64_t header = 0;
  for (int i = 7; i >= 0; --i) header = (header << 8) | static_cast<unsigned char>(bytes[i]);
  return header > bytes.size() - 8 ? 0 : bytes.size() - 8 - header;
}

void CheckTensor(const TensorView& t, uint64_t data_section) {
  uint64_t numel = 1;
  for (int64_t d : t.shape) {
    FUZZ_CHECK(d >= 0, "tensor '%s': dimension %lld", t.name.c_str(), static_cast<long long>(d));
    FUZZ_CHECK(!__builtin_mul_overflow(numel, static_cast<uint64_t>(d), &numel),
               "tensor '%s': the shape's product overflows", t.name.c_str());
  }
  FUZZ_CHECK(numel <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) &&
                 t.numel() == static_cast<int64_t>(numel),
             "tensor '%s': numel() %lld, the shape's product %llu", t.name.c_str(),
             static_cast<long long>(t.numel()), static_cast<unsigned long long>(numel));
  FUZZ_CHECK(numel * StorageDtypeSize(t.dtype) == t.nbytes,
             "tensor '%s': %zu bytes for %llu elements", t.name.c_str(), t.nbytes,
             static_cast<unsigned long long>(numel));
  FUZZ_CHECK(t.nbytes <= data_section, "tensor '%s': %zu bytes, the data section has %llu",
             t.name.c_str(), t.nbytes, static_cast<unsigned long long>(data_section));
  // Read every byte: a view beyond the mapping faults here.
  const auto* bytes = static_cast<const unsigned char*>(t.data);
  volatile unsigned sum = 0;
  for (size_t i = 0; i < t.nbytes; ++i) sum = sum + bytes[i];
  if (t.nbytes <= (1u << 16)) {
    std::vector<float> values(static_cast<size_t>(numel));
    ToFloat32(t, values.data());
  }
}

// Non-empty tensors of one file do not overlap.
void CheckNoOverlap(std::vector<const TensorView*> views) {
  views.erase(std::remove_if(views.begin(), views.end(),
                             [](const TensorView* t) { return t->nbytes == 0; }),
              views.end());
  std::sort(views.begin(), views.end(),
            [](const TensorView* a, const TensorView* b) { return a->data < b->data; });
  for (size_t i = 1; i < views.size(); ++i) {
    FUZZ_CHECK(static_cast<const char*>(views[i - 1]->data) + views[i - 1]->nbytes <=
                   static_cast<const char*>(views[i]->data),
               "tensors '%s' and '%s' overlap", views[i - 1]->name.c_str(),
               views[i]->name.c_str());
  }
}

void CheckError(const absl::Status& status, const std::string& path) {
  FUZZ_CHECK(!status.message().empty(), "an error without a message");
  FUZZ_CHECK(absl::StrContains(status.message(), path), "the error does not name %s: %s",
             path.c_str(), status.ToString().c_str());
}

void OpenOneFile(const std::string& bytes) {
  const std::string path = fuzz::ScratchDir::Write("one.safetensors", bytes);
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  if (!file.ok()) return CheckError(file.status(), path);
  const std::vector<TensorView>& tensors = (*file)->tensors();
  std::vector<const TensorView*> views;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorView& t = tensors[i];
    if (i > 0) FUZZ_CHECK(tensors[i - 1].name < t.name, "tensors() not sorted by unique name");
    FUZZ_CHECK((*file)->Find(t.name) == &t, "Find('%s')", t.name.c_str());
    FUZZ_CHECK(t.file == path, "tensor '%s' names the file %s", t.name.c_str(), t.file.c_str());
    CheckTensor(t, DataSectionSize(bytes));
    views.push_back(&t);
  }
  CheckNoOverlap(views);
}

void OpenDirectory(const std::map<std::string, std::string>& files) {
  const std::string dir = fuzz::ScratchDir::Path();
  absl::StatusOr<std::unique_ptr<WeightStore>> store = WeightStore::OpenDir(dir);
  if (!store.ok()) return CheckError(store.status(), dir);
  std::map<std::string, std::vector<const TensorView*>> by_file;
  size_t total = 0;
  const std::vector<std::string> names = (*store)->Names();
  for (size_t i = 0; i < names.size(); ++i) {
    if (i > 0) FUZZ_CHECK(names[i - 1] < names[i], "Names() not sorted and unique");
    const TensorView* view = (*store)->Find(names[i]);
    FUZZ_CHECK(view != nullptr && view->name == names[i], "Find('%s')", names[i].c_str());
    const std::string base = view->file.substr(view->file.find_last_of('/') + 1);
    auto bytes = files.find(base);
    FUZZ_CHECK(bytes != files.end(), "tensor '%s' from an unknown file %s", names[i].c_str(),
               view->file.c_str());
    CheckTensor(*view, DataSectionSize(bytes->second));
    by_file[view->file].push_back(view);
    total += view->nbytes;
  }
  for (const auto& [file, views] : by_file) CheckNoOverlap(views);
  FUZZ_CHECK(total == (*store)->TotalBytes(), "TotalBytes()");
  FUZZ_CHECK(!(*store)->Files().empty(), "a store without files");
}

}  // namespace
}  // namespace streamgen

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace streamgen;
  if (size < 1) return 0;
  const std::string rest(reinterpret_cast<const char*>(data + 1), size - 1);
  for (const char* name : {"model.safetensors", "model.safetensors.index.json", "a.safetensors",
                           "b.safetensors", "c.safetensors", "one.safetensors"}) {
    fuzz::ScratchDir::Remove(name);
  }
  switch (data[0] % 3) {
    case 0:
      OpenOneFile(rest);
      break;
    case 1:
      fuzz::ScratchDir::Write("model.safetensors", rest);
      OpenDirectory({{"model.safetensors", rest}});
      break;
    default: {
      const std::vector<std::string> parts = Split(rest);
      std::map<std::string, std::string> files = {{"model.safetensors.index.json", parts[0]}};
      const char* const shards[] = {"a.safetensors", "b.safetensors", "c.safetensors"};
      for (size_t i = 1; i < parts.size() && i <= 3; ++i) files[shards[i - 1]] = parts[i];
      for (const auto& [name, bytes] : files) fuzz::ScratchDir::Write(name, bytes);
      OpenDirectory(files);
    }
  }
  return 0;
}
