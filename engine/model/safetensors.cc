#include "engine/model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace streamgen {
namespace {

using nlohmann::json;

constexpr const char kMetadataKey[] = "__metadata__";
// A header larger than this is not a safetensors header (the format caps it at 100 MB).
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;
// A real header nests 3 levels ({name: {"shape": [...]}}). nlohmann parses
// iteratively, but dump() (error messages) and copies recurse once per level:
// a header of a few hundred KB of "[[[[" overflowed the stack (found by
// tests/fuzz/safetensors_fuzz.cc). Deeper values are discarded while parsing.
constexpr int kMaxHeaderDepth = 64;

absl::Status Invalid(const std::string& path, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
}

absl::Status TensorError(const std::string& path, const std::string& name,
                         const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": tensor '", name, "': ", what));
}

bool FileExists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// Parses the JSON header; fails on invalid JSON and on duplicate top-level
// keys (nlohmann would silently keep one of them).
absl::StatusOr<json> ParseHeader(const std::string& path, const char* begin, size_t size) {
  std::string duplicate;
  std::set<std::string> seen;
  bool too_deep = false;
  json::parser_callback_t callback = [&](int depth, json::parse_event_t event, json& parsed) {
    if (depth > kMaxHeaderDepth) {
      too_deep = true;
      return false;  // discard: nothing this deep is built
    }
    if (event == json::parse_event_t::key && depth == 1) {
      const std::string key = parsed.get<std::string>();
      if (!seen.insert(key).second && duplicate.empty()) duplicate = key;
    }
    return true;
  };
  json header = json::parse(begin, begin + size, callback, /*allow_exceptions=*/false);
  if (header.is_discarded()) {
    return Invalid(path, "safetensors header is not valid JSON");
  }
  if (too_deep) {
    return Invalid(path, absl::StrCat("safetensors header nests deeper than ", kMaxHeaderDepth,
                                      " levels"));
  }
  if (!header.is_object()) {
    return Invalid(path, "safetensors header is not a JSON object");
  }
  if (!duplicate.empty()) {
    return TensorError(path, duplicate, "duplicate tensor name in the header");
  }
  return header;
}

bool IsNonNegativeInt(const json& value) {
  return value.is_number_unsigned() || (value.is_number_integer() && value.get<int64_t>() >= 0);
}

// Builds one TensorView from its header entry; `data` / `data_size` is the
// data section. Checks dtype, shape, offsets and size.
absl::StatusOr<TensorView> ParseEntry(const std::string& path, const std::string& name,
                                      const json& entry, const char* data, uint64_t data_size,
                                      uint64_t* begin_out) {
  if (!entry.is_object()) return TensorError(path, name, "header entry is not an object");
  auto dtype_it = entry.find("dtype");
  if (dtype_it == entry.end() || !dtype_it->is_string()) {
    return TensorError(path, name, "missing or non-string \"dtype\"");
  }
  const std::string dtype_name = dtype_it->get<std::string>();
  absl::StatusOr<StorageDtype> dtype = ParseStorageDtype(dtype_name);
  if (!dtype.ok()) {
    return TensorError(path, name,
                       absl::StrCat("unsupported dtype '", dtype_name,
                                    "' (supported: F32, F16, BF16)"));
  }
  auto shape_it = entry.find("shape");
  if (shape_it == entry.end() || !shape_it->is_array()) {
    return TensorError(path, name, "missing or non-array \"shape\"");
  }
  TensorView view;
  view.name = name;
  view.dtype = *dtype;
  view.file = path;
  uint64_t numel = 1;
  for (const json& dim : *shape_it) {
    if (!IsNonNegativeInt(dim)) {
      return TensorError(path, name, absl::StrCat("shape ", shape_it->dump(),
                                                  " has a dimension that is not a "
                                                  "non-negative integer"));
    }
    const uint64_t d = dim.get<uint64_t>();
    // Guard the product against overflow: no dimension product can exceed the
    // file. Each dimension must also fit the int64 shape: after a 0 the product
    // guard lets any size through ([0, 2^64 - 1] became [0, -1]; found by fuzzing).
    if (d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return TensorError(path, name, absl::StrCat("shape ", shape_it->dump(),
                                                  " has a dimension above 2^63 - 1"));
    }
    if (d != 0 && numel > std::numeric_limits<uint64_t>::max() / 8 / d) {
      return TensorError(path, name, absl::StrCat("shape ", shape_it->dump(), " is too large"));
    }
    numel *= d;
    view.shape.push_back(static_cast<int64_t>(d));
  }
  auto offsets_it = entry.find("data_offsets");
  if (offsets_it == entry.end() || !offsets_it->is_array() || offsets_it->size() != 2 ||
      !IsNonNegativeInt((*offsets_it)[0]) || !IsNonNegativeInt((*offsets_it)[1])) {
    return TensorError(path, name, "missing or malformed \"data_offsets\" (want [begin, end])");
  }
  const uint64_t begin = (*offsets_it)[0].get<uint64_t>();
  const uint64_t end = (*offsets_it)[1].get<uint64_t>();
  if (begin > end) {
    return TensorError(path, name,
                       absl::StrCat("data_offsets [", begin, ", ", end, "] has begin > end"));
  }
  if (end > data_size) {
    return TensorError(path, name,
                       absl::StrCat("data_offsets [", begin, ", ", end,
                                    "] out of range: the data section has ", data_size,
                                    " bytes (file truncated?)"));
  }
  const uint64_t expected = numel * StorageDtypeSize(*dtype);
  if (end - begin != expected) {
    return TensorError(path, name,
                       absl::StrCat("data_offsets [", begin, ", ", end, "] span ", end - begin,
                                    " bytes but shape ", ShapeString(view.shape), " of ",
                                    dtype_name, " needs ", expected));
  }
  view.data = data + begin;
  view.nbytes = static_cast<size_t>(expected);
  *begin_out = begin;
  return view;
}

}  // namespace

const char* StorageDtypeName(StorageDtype dtype) {
  switch (dtype) {
    case StorageDtype::kF32: return "F32";
    case StorageDtype::kF16: return "F16";
    case StorageDtype::kBF16: return "BF16";
  }
  return "?";
}

size_t StorageDtypeSize(StorageDtype dtype) {
  return dtype == StorageDtype::kF32 ? 4 : 2;
}

absl::StatusOr<StorageDtype> ParseStorageDtype(absl::string_view name) {
  if (name == "F32") return StorageDtype::kF32;
  if (name == "F16") return StorageDtype::kF16;
  if (name == "BF16") return StorageDtype::kBF16;
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported dtype '", name, "' (supported: F32, F16, BF16)"));
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// ---- SafetensorsFile ----

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const std::string reason = std::strerror(errno);
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat(path, ": no such file"));
    return absl::PermissionDeniedError(absl::StrCat(path, ": cannot open: ", reason));
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return Invalid(path, "not a regular file");
  }
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8) {
    close(fd);
    return Invalid(path, absl::StrCat("truncated safetensors file: ", file_size,
                                      " bytes, shorter than the 8-byte header length"));
  }
  void* map = mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (map == MAP_FAILED) {
    return absl::InternalError(absl::StrCat(path, ": mmap failed: ", std::strerror(errno)));
  }
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->map_ = map;
  file->map_size_ = file_size;

  const auto* bytes = static_cast<const unsigned char*>(map);
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | bytes[i];
  if (header_size > file_size - 8) {
    return Invalid(path, absl::StrCat("truncated safetensors file: header length ", header_size,
                                      " is beyond the file size ", file_size));
  }
  if (header_size > kMaxHeaderBytes) {
    return Invalid(path, absl::StrCat("safetensors header length ", header_size, " is too large"));
  }
  const char* header_begin = reinterpret_cast<const char*>(bytes + 8);
  SG_ASSIGN_OR_RETURN(json header, ParseHeader(path, header_begin, header_size));

  const char* data = header_begin + header_size;
  const uint64_t data_size = file_size - 8 - header_size;
  std::vector<std::pair<uint64_t, size_t>> order;  // (begin, index) for the overlap check
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == kMetadataKey) {
      if (it->is_object()) {
        for (auto m = it->begin(); m != it->end(); ++m) {
          if (m->is_string()) file->metadata_[m.key()] = m->get<std::string>();
        }
      }
      continue;
    }
    uint64_t begin = 0;
    SG_ASSIGN_OR_RETURN(TensorView view,
                        ParseEntry(path, it.key(), *it, data, data_size, &begin));
    order.emplace_back(begin, file->tensors_.size());
    file->index_[view.name] = file->tensors_.size();
    file->tensors_.push_back(std::move(view));
  }
  std::sort(order.begin(), order.end());
  for (size_t i = 1; i < order.size(); ++i) {
    const TensorView& prev = file->tensors_[order[i - 1].second];
    const TensorView& cur = file->tensors_[order[i].second];
    if (prev.nbytes > 0 && cur.nbytes > 0 && order[i - 1].first + prev.nbytes > order[i].first) {
      return TensorError(path, cur.name,
                         absl::StrCat("data overlaps tensor '", prev.name, "' (bytes [",
                                      order[i - 1].first, ", ", order[i - 1].first + prev.nbytes,
                                      ") and [", order[i].first, ", ",
                                      order[i].first + cur.nbytes, "))"));
    }
  }
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) munmap(map_, map_size_);
}

const TensorView* SafetensorsFile::Find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

// ---- WeightStore ----

absl::Status WeightStore::AddFile(std::unique_ptr<SafetensorsFile> file) {
  for (const TensorView& view : file->tensors()) {
    auto [it, inserted] = by_name_.emplace(view.name, &view);
    if (!inserted) {
      return TensorError(file->path(), view.name,
                         absl::StrCat("also present in ", it->second->file));
    }
  }
  files_.push_back(std::move(file));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<WeightStore>> WeightStore::OpenDir(const std::string& dir) {
  struct stat st;
  if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::NotFoundError(absl::StrCat(dir, ": model directory does not exist"));
  }
  std::unique_ptr<WeightStore> store(new WeightStore());
  store->dir_ = dir;
  const std::string single = absl::StrCat(dir, "/model.safetensors");
  const std::string index_path = absl::StrCat(dir, "/model.safetensors.index.json");
  if (FileExists(single)) {
    SG_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(single));
    SG_RETURN_IF_ERROR(store->AddFile(std::move(file)));
    return store;
  }
  if (!FileExists(index_path)) {
    return absl::NotFoundError(absl::StrCat(
        dir, ": no weights found: expected model.safetensors, or model.safetensors.index.json "
             "with its model-0000i-of-0000n.safetensors shards"));
  }
  std::ifstream in(index_path);
  json index = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (index.is_discarded() || !index.is_object()) {
    return Invalid(index_path, "not a valid JSON object");
  }
  auto map_it = index.find("weight_map");
  if (map_it == index.end() || !map_it->is_object()) {
    return Invalid(index_path, "missing or non-object \"weight_map\"");
  }
  if (map_it->empty()) {  // found by safetensors_fuzz: it opened as a store without files
    return Invalid(index_path, "\"weight_map\" is empty: the index lists no tensors");
  }
  std::map<std::string, std::vector<std::string>> by_shard;  // shard -> tensor names
  for (auto it = map_it->begin(); it != map_it->end(); ++it) {
    if (!it->is_string() || it->get<std::string>().empty()) {
      return Invalid(index_path,
                     absl::StrCat("weight_map entry for tensor '", it.key(), "' is not a file name"));
    }
    by_shard[it->get<std::string>()].push_back(it.key());
  }
  for (const auto& [shard, names] : by_shard) {
    const std::string shard_path = absl::StrCat(dir, "/", shard);
    if (!FileExists(shard_path)) {
      return absl::NotFoundError(absl::StrCat(index_path, ": shard '", shard, "' (holding tensor '",
                                              names.front(), "') not found: ", shard_path));
    }
    SG_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(shard_path));
    for (const std::string& name : names) {
      if (file->Find(name) == nullptr) {
        return Invalid(index_path, absl::StrCat("maps tensor '", name, "' to ", shard_path,
                                                " but that file does not hold it"));
      }
    }
    for (const TensorView& view : file->tensors()) {
      auto mapped = map_it->find(view.name);
      if (mapped == map_it->end() || mapped->get<std::string>() != shard) {
        return TensorError(shard_path, view.name,
                           absl::StrCat("present in this shard but ", index_path,
                                        mapped == map_it->end()
                                            ? std::string(" does not list it")
                                            : absl::StrCat(" maps it to ",
                                                           mapped->get<std::string>())));
      }
    }
    SG_RETURN_IF_ERROR(store->AddFile(std::move(file)));
  }
  return store;
}

const TensorView* WeightStore::Find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

std::vector<std::string> WeightStore::Names() const {
  std::vector<std::string> names;
  names.reserve(by_name_.size());
  for (const auto& entry : by_name_) names.push_back(entry.first);
  return names;
}

std::vector<std::string> WeightStore::Files() const {
  std::vector<std::string> paths;
  for (const auto& file : files_) paths.push_back(file->path());
  return paths;
}

size_t WeightStore::TotalBytes() const {
  size_t total = 0;
  for (const auto& entry : by_name_) total += entry.second->nbytes;
  return total;
}

// ---- conversions ----

float Bf16ToFloat(uint16_t bits) {
  const uint32_t x = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

uint16_t FloatToBf16(float value) {
  uint32_t x;
  std::memcpy(&x, &value, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40);  // NaN
  x += 0x7fffu + ((x >> 16) & 1u);  // round to nearest, ties to even
  return static_cast<uint16_t>(x >> 16);
}

float HalfToFloat(uint16_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  const uint32_t exponent = (bits >> 10) & 0x1fu;
  const uint32_t mantissa = bits & 0x3ffu;
  uint32_t x;
  if (exponent == 0) {
    // Zero or subnormal: mantissa * 2^-24, exact in float.
    const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    std::memcpy(&x, &magnitude, 4);
    x |= sign;
  } else if (exponent == 31) {
    x = sign | 0x7f800000u | (mantissa << 13);
  } else {
    x = sign | ((exponent + 112) << 23) | (mantissa << 13);
  }
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

uint16_t FloatToHalf(float value) {
  uint32_t x;
  std::memcpy(&x, &value, 4);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t abs = x & 0x7fffffffu;
  if (abs > 0x7f800000u) return sign | 0x7e00;       // NaN
  if (abs >= 0x477ff000u) return sign | 0x7c00;      // >= 65520 rounds to infinity
  if (abs >= 0x38800000u) {                          // normal half (>= 2^-14)
    const uint32_t rebased = abs - 0x38000000u;      // exponent bias 127 -> 15
    const uint32_t rounded = rebased + 0xfffu + ((rebased >> 13) & 1u);
    return static_cast<uint16_t>(sign | (rounded >> 13));
  }
  if (abs <= 0x33000000u) return sign;               // <= 2^-25 rounds to zero
  // Subnormal half: value / 2^-24, rounded to nearest even.
  const uint32_t exponent = abs >> 23;
  const uint32_t mantissa = (abs & 0x7fffffu) | 0x800000u;
  const uint32_t shift = 126 - exponent;             // 14..24
  uint32_t h = mantissa >> shift;
  const uint32_t rest = mantissa & ((1u << shift) - 1);
  const uint32_t halfway = 1u << (shift - 1);
  if (rest > halfway || (rest == halfway && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}

void ToFloat32(const TensorView& view, float* out) {
  const int64_t n = view.numel();
  // An empty tensor's destination may be null, which memcpy must not get.
  if (n == 0) return;
  if (view.dtype == StorageDtype::kF32) {
    std::memcpy(out, view.data, static_cast<size_t>(n) * 4);
    return;
  }
  const auto* src = static_cast<const unsigned char*>(view.data);
  for (int64_t i = 0; i < n; ++i) {
    uint16_t bits;
    std::memcpy(&bits, src + 2 * i, 2);
    out[i] = view.dtype == StorageDtype::kBF16 ? Bf16ToFloat(bits) : HalfToFloat(bits);
  }
}

// ---- writer ----

absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  nlohmann::ordered_json meta = nlohmann::ordered_json::object();
  if (metadata.empty()) meta["format"] = "pt";
  for (const auto& [key, value] : metadata) meta[key] = value;
  header[kMetadataKey] = meta;
  uint64_t offset = 0;
  for (const TensorToWrite& t : tensors) {
    int64_t numel = 1;
    for (int64_t d : t.shape) numel *= d;
    if (numel != static_cast<int64_t>(t.values.size())) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor '", t.name, "' has ", t.values.size(),
                       " values but shape ", ShapeString(t.shape), " needs ", numel));
    }
    const uint64_t nbytes = static_cast<uint64_t>(numel) * StorageDtypeSize(t.dtype);
    header[t.name] = {{"dtype", StorageDtypeName(t.dtype)},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  std::string header_text = header.dump();
  header_text.append((8 - header_text.size() % 8) % 8, ' ');

  // Written next to `path` and renamed into place, so a failed write leaves no partial file.
  const std::string temp_path = absl::StrCat(path, ".partial");
  std::FILE* out = std::fopen(temp_path.c_str(), "wb");
  if (out == nullptr) {
    return absl::PermissionDeniedError(
        absl::StrCat(path, ": cannot create: ", std::strerror(errno)));
  }
  unsigned char length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<unsigned char>(header_text.size() >> (8 * i));
  bool ok = std::fwrite(length, 1, 8, out) == 8 &&
            std::fwrite(header_text.data(), 1, header_text.size(), out) == header_text.size();
  std::vector<uint16_t> buffer;
  for (const TensorToWrite& t : tensors) {
    if (!ok) break;
    // An empty vector's data() may be null, and fwrite's buffer must not be
    // even for 0 items (UBSan's nonnull-attribute; an empty tensor is legal).
    if (t.values.empty()) continue;
    if (t.dtype == StorageDtype::kF32) {
      ok = std::fwrite(t.values.data(), 4, t.values.size(), out) == t.values.size();
      continue;
    }
    buffer.resize(t.values.size());
    for (size_t i = 0; i < t.values.size(); ++i) {
      buffer[i] = t.dtype == StorageDtype::kBF16 ? FloatToBf16(t.values[i])
                                                 : FloatToHalf(t.values[i]);
    }
    ok = std::fwrite(buffer.data(), 2, buffer.size(), out) == buffer.size();
  }
  if (std::fclose(out) != 0) ok = false;
  if (!ok || std::rename(temp_path.c_str(), path.c_str()) != 0) {
    std::remove(temp_path.c_str());
    return absl::InternalError(absl::StrCat(path, ": write failed: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace streamgen
