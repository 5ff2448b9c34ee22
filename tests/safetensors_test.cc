// Tests of the safetensors reader / writer: round trips, sharded directories,
// and one test per malformed input with its error message.
#include "engine/model/safetensors.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace streamgen {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A fresh directory per call.
std::string MakeTestDir() {
  const testing::TestInfo* info = testing::UnitTest::GetInstance()->current_test_info();
  static int counter = 0;
  std::string dir = testing::TempDir() + "/safetensors_test_" + std::to_string(getpid()) + "_" +
                    info->test_suite_name() + "_" + info->name() + "_" + std::to_string(++counter);
  mkdir(dir.c_str(), 0755);
  return dir;
}

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

// A raw file: 8-byte little-endian header length, header text, data bytes.
std::string RawFile(const std::string& header, const std::string& data, uint64_t length) {
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((length >> (8 * i)) & 0xff);
  return bytes + header + data;
}
std::string RawFile(const std::string& header, const std::string& data) {
  return RawFile(header, data, header.size());
}

std::string ErrorOf(const std::string& path) {
  auto file = SafetensorsFile::Open(path);
  EXPECT_FALSE(file.ok()) << path << " opened but should not have";
  return file.ok() ? "" : std::string(file.status().message());
}

TEST(SafetensorsTest, RoundTripsEachDtype) {
  const std::string path = MakeTestDir() + "/model.safetensors";
  // Values exactly representable in all three dtypes.
  const std::vector<float> values = {0.0f, -1.5f, 2.25f, 0.125f, -7.0f, 1024.0f};
  std::vector<TensorToWrite> tensors = {
      {"a.f32", StorageDtype::kF32, {2, 3}, values},
      {"b.f16", StorageDtype::kF16, {3, 2}, values},
      {"c.bf16", StorageDtype::kBF16, {6}, values},
      {"d.empty", StorageDtype::kF32, {0, 4}, {}},
  };
  ASSERT_TRUE(WriteSafetensors(path, tensors).ok());

  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_EQ((*file)->tensors().size(), 4u);
  EXPECT_EQ((*file)->metadata().at("format"), "pt");
  const std::pair<const char*, StorageDtype> expected[] = {
      {"a.f32", StorageDtype::kF32}, {"b.f16", StorageDtype::kF16}, {"c.bf16", StorageDtype::kBF16}};
  for (const auto& [name, dtype] : expected) {
    const TensorView* view = (*file)->Find(name);
    ASSERT_NE(view, nullptr) << name;
    EXPECT_EQ(view->dtype, dtype);
    EXPECT_EQ(view->nbytes, 6 * StorageDtypeSize(dtype));
    EXPECT_EQ(view->file, path);
    std::vector<float> back(6);
    ToFloat32(*view, back.data());
    EXPECT_EQ(back, values) << name;
  }
  EXPECT_THAT((*file)->Find("a.f32")->shape, ElementsAre(2, 3));
  EXPECT_THAT((*file)->Find("b.f16")->shape, ElementsAre(3, 2));
  EXPECT_THAT((*file)->Find("c.bf16")->shape, ElementsAre(6));
  EXPECT_EQ((*file)->Find("d.empty")->numel(), 0);
  EXPECT_EQ((*file)->Find("missing"), nullptr);
}

TEST(SafetensorsTest, WriterRoundsToNearestEven) {
  const std::string path = MakeTestDir() + "/model.safetensors";
  const float bf16_half_up = 1.0f + std::ldexp(1.0f, -8);       // halfway: 1.0 is even
  const float bf16_three = 1.0f + 3 * std::ldexp(1.0f, -8);     // halfway: rounds up
  const float f16_half_up = 1.0f + std::ldexp(1.0f, -11);       // halfway: 1.0 is even
  const float f16_above = 1.0f + std::ldexp(1.0f, -11) + std::ldexp(1.0f, -20);
  ASSERT_TRUE(WriteSafetensors(path, {{"b", StorageDtype::kBF16, {2}, {bf16_half_up, bf16_three}},
                                      {"h", StorageDtype::kF16, {2}, {f16_half_up, f16_above}}})
                  .ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  float b[2], h[2];
  ToFloat32(*(*file)->Find("b"), b);
  ToFloat32(*(*file)->Find("h"), h);
  EXPECT_EQ(b[0], 1.0f);
  EXPECT_EQ(b[1], 1.0f + std::ldexp(1.0f, -6));
  EXPECT_EQ(h[0], 1.0f);
  EXPECT_EQ(h[1], 1.0f + std::ldexp(1.0f, -10));
}

TEST(SafetensorsTest, HalfConversionRoundTripsEveryFiniteValue) {
  for (uint32_t bits = 0; bits < 0x10000; ++bits) {
    const uint16_t h = static_cast<uint16_t>(bits);
    if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0) continue;  // NaN
    ASSERT_EQ(FloatToHalf(HalfToFloat(h)), h) << "bits " << bits;
  }
  EXPECT_EQ(HalfToFloat(0x3c00), 1.0f);
  EXPECT_EQ(HalfToFloat(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(FloatToHalf(65504.0f), 0x7bff);               // largest finite
  EXPECT_EQ(FloatToHalf(65519.0f), 0x7bff);
  EXPECT_EQ(FloatToHalf(65520.0f), 0x7c00);               // halfway to 65536: infinity
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -25)), 0x0000);  // halfway to 2^-24: zero (even)
  EXPECT_EQ(FloatToHalf(std::ldexp(1.5f, -25)), 0x0001);
  EXPECT_EQ(FloatToHalf(std::ldexp(3.0f, -25)), 0x0002);  // 1.5 * 2^-24: to even 2
  EXPECT_EQ(FloatToHalf(-2.0f), 0xc000);
  EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(std::numeric_limits<float>::quiet_NaN()))));
}

TEST(SafetensorsTest, Bf16ConversionIsExactUpcast) {
  for (uint32_t bits = 0; bits < 0x10000; bits += 7) {
    const uint16_t b = static_cast<uint16_t>(bits);
    if ((b & 0x7f80) == 0x7f80 && (b & 0x7f) != 0) continue;  // NaN
    ASSERT_EQ(FloatToBf16(Bf16ToFloat(b)), b) << "bits " << bits;
  }
  EXPECT_EQ(Bf16ToFloat(0x3f80), 1.0f);
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(std::numeric_limits<float>::quiet_NaN()))));
}

TEST(SafetensorsTest, WriterRefusesValueCountMismatch) {
  const std::string path = MakeTestDir() + "/model.safetensors";
  absl::Status status = WriteSafetensors(path, {{"w", StorageDtype::kF32, {2, 2}, {1, 2, 3}}});
  EXPECT_THAT(std::string(status.message()), AllOf(HasSubstr("'w'"), HasSubstr("3 values")));
}

TEST(SafetensorsTest, OpensSingleFileDirectory) {
  const std::string dir = MakeTestDir();
  ASSERT_TRUE(WriteSafetensors(dir + "/model.safetensors",
                               {{"y", StorageDtype::kF32, {1}, {2}},
                                {"x", StorageDtype::kBF16, {2}, {1, 2}}})
                  .ok());
  auto store = WeightStore::OpenDir(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_THAT((*store)->Names(), ElementsAre("x", "y"));
  EXPECT_EQ((*store)->TotalBytes(), 8u);
  EXPECT_EQ((*store)->Find("nope"), nullptr);
}

// Two shards plus an index mapping each tensor to its file.
void WriteShardedModel(const std::string& dir, const std::string& index_json) {
  ASSERT_TRUE(WriteSafetensors(dir + "/model-00001-of-00002.safetensors",
                               {{"a", StorageDtype::kF32, {2}, {1, 2}},
                                {"b", StorageDtype::kF16, {1}, {3}}})
                  .ok());
  ASSERT_TRUE(WriteSafetensors(dir + "/model-00002-of-00002.safetensors",
                               {{"c", StorageDtype::kBF16, {2, 1}, {4, 5}}})
                  .ok());
  WriteBytes(dir + "/model.safetensors.index.json", index_json);
}

TEST(SafetensorsTest, OpensShardedDirectory) {
  const std::string dir = MakeTestDir();
  WriteShardedModel(dir, R"({"metadata": {"total_size": 14}, "weight_map": {
      "a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002.safetensors",
      "c": "model-00002-of-00002.safetensors"}})");
  auto store = WeightStore::OpenDir(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_THAT((*store)->Names(), ElementsAre("a", "b", "c"));
  const TensorView* c = (*store)->Find("c");
  ASSERT_NE(c, nullptr);
  EXPECT_THAT(c->file, HasSubstr("model-00002-of-00002.safetensors"));
  float values[2];
  ToFloat32(*c, values);
  EXPECT_EQ(values[0], 4.0f);
  EXPECT_EQ(values[1], 5.0f);
}

TEST(SafetensorsTest, ShardedDirectoryMissingShardFile) {
  const std::string dir = MakeTestDir();
  WriteShardedModel(dir, R"({"weight_map": {
      "a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002.safetensors",
      "c": "model-00002-of-00002.safetensors", "d": "model-00003-of-00003.safetensors"}})");
  auto store = WeightStore::OpenDir(dir);
  ASSERT_FALSE(store.ok());
  EXPECT_THAT(std::string(store.status().message()),
              AllOf(HasSubstr("model-00003-of-00003.safetensors"), HasSubstr("'d'"),
                    HasSubstr("not found")));
}

TEST(SafetensorsTest, ShardedDirectoryTensorNotInIndex) {
  const std::string dir = MakeTestDir();
  WriteShardedModel(dir, R"({"weight_map": {
      "a": "model-00001-of-00002.safetensors", "c": "model-00002-of-00002.safetensors"}})");
  auto store = WeightStore::OpenDir(dir);
  ASSERT_FALSE(store.ok());
  EXPECT_THAT(std::string(store.status().message()),
              AllOf(HasSubstr("'b'"), HasSubstr("does not list it"),
                    HasSubstr("model-00001-of-00002.safetensors")));
}

TEST(SafetensorsTest, ShardedDirectoryIndexNamesAbsentTensor) {
  const std::string dir = MakeTestDir();
  WriteShardedModel(dir, R"({"weight_map": {
      "a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002.safetensors",
      "c": "model-00002-of-00002.safetensors", "e": "model-00002-of-00002.safetensors"}})");
  auto store = WeightStore::OpenDir(dir);
  ASSERT_FALSE(store.ok());
  EXPECT_THAT(std::string(store.status().message()),
              AllOf(HasSubstr("'e'"), HasSubstr("does not hold it")));
}

TEST(SafetensorsTest, ShardedDirectoryEmptyWeightMap) {
  const std::string dir = MakeTestDir();
  WriteShardedModel(dir, R"({"metadata": {"total_size": 0}, "weight_map": {}})");
  auto store = WeightStore::OpenDir(dir);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(store.status().message()),
              AllOf(HasSubstr("model.safetensors.index.json"), HasSubstr("\"weight_map\" is empty"),
                    HasSubstr("lists no tensors")));
}

TEST(SafetensorsTest, DirectoryWithoutWeights) {
  const std::string dir = MakeTestDir();
  auto store = WeightStore::OpenDir(dir);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(store.status().message()),
              AllOf(HasSubstr(dir), HasSubstr("model.safetensors"),
                    HasSubstr("model.safetensors.index.json")));
  EXPECT_THAT(std::string(WeightStore::OpenDir(dir + "/absent").status().message()),
              HasSubstr("does not exist"));
}

TEST(SafetensorsTest, TruncatedInTheMiddleOfData) {
  const std::string path = MakeTestDir() + "/model.safetensors";
  ASSERT_TRUE(WriteSafetensors(path, {{"first", StorageDtype::kF32, {4}, {1, 2, 3, 4}},
                                      {"second", StorageDtype::kF32, {4}, {5, 6, 7, 8}}})
                  .ok());
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  ASSERT_EQ(truncate(path.c_str(), st.st_size - 6), 0);  // cuts into "second"
  EXPECT_THAT(ErrorOf(path), AllOf(HasSubstr(path), HasSubstr("'second'"),
                                   HasSubstr("out of range"), HasSubstr("truncated")));
}

TEST(SafetensorsTest, ShorterThanHeaderLength) {
  const std::string path = MakeTestDir() + "/model.safetensors";
  WriteBytes(path, "abc");
  EXPECT_THAT(ErrorOf(path), AllOf(HasSubstr(path), HasSubstr("truncated")));
}

TEST(SafetensorsTest, HeaderLengthBeyondFile) {
  const std::string path = MakeTestDir() + "/model.safetensors";
  WriteBytes(path, RawFile("{}", "", 1000));
  EXPECT_THAT(ErrorOf(path), AllOf(HasSubstr(path), HasSubstr("header length 1000"),
                                   HasSubstr("beyond the file size")));
}

TEST(SafetensorsTest, HeaderNotJson) {
  const std::string path = MakeTestDir() + "/model.safetensors";
  WriteBytes(path, RawFile(R"({"w": {"dtype": "F32", )", ""));
  EXPECT_THAT(ErrorOf(path), AllOf(HasSubstr(path), HasSubstr("not valid JSON")));
  WriteBytes(path, RawFile("[1, 2]", ""));
  EXPECT_THAT(ErrorOf(path), HasSubstr("not a JSON object"));
}

TEST(SafetensorsTest, OffsetsOutOfRange) {
  const std::string path = MakeTestDir() + "/model.safetensors";
  WriteBytes(path, RawFile(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
                           std::string(8, '\0')));
  EXPECT_THAT(ErrorOf(path), AllOf(HasSubstr(path), HasSubstr("'w'"), HasSubstr("[4, 12]"),
                                   HasSubstr("out of range")));
}

TEST(SafetensorsTest, OffsetsBeginAfterEnd) {
  const std::string path = MakeTestDir() + "/model.safetensors";
  WriteBytes(path, RawFile(R"({"w": {"dtype": "F32", "shape": [0], "data_offsets": [8, 4]}})",
                           std::string(8, '\0')));
  EXPECT_THAT(ErrorOf(path), AllOf(HasSubstr("'w'"), HasSubstr("begin > end")));
}

TEST(SafetensorsTest, SizeDoesNotMatchShape) {
  const std::string path = MakeTestDir() + "/model.safetensors";
  WriteBytes(path, RawFile(R"({"w": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 8]}})",
                           std::string(16, '\0')));
  EXPECT_THAT(ErrorOf(path), AllOf(HasSubstr(path), HasSubstr("'w'"), HasSubstr("[2, 3]"),
                                   HasSubstr("needs 12")));
}

TEST(SafetensorsTest, OverlappingTensors) {
  const std::string path = MakeTestDir() + "/model.safetensors";
  WriteBytes(path, RawFile(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                              "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
                           std::string(12, '\0')));
  EXPECT_THAT(ErrorOf(path), AllOf(HasSubstr(path), HasSubstr("'b'"), HasSubstr("overlaps"),
                                   HasSubstr("'a'")));
}

TEST(SafetensorsTest, DuplicateNames) {
  const std::string path = MakeTestDir() + "/model.safetensors";
  WriteBytes(path, RawFile(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                              "w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
                           std::string(8, '\0')));
  EXPECT_THAT(ErrorOf(path), AllOf(HasSubstr(path), HasSubstr("'w'"), HasSubstr("duplicate")));
}

TEST(SafetensorsTest, DuplicateKeysInsideAnEntryAreNotTensorNames) {
  // Only top-level keys are tensor names; metadata may hold anything.
  const std::string path = MakeTestDir() + "/model.safetensors";
  WriteBytes(path, RawFile(R"({"__metadata__": {"k": "1", "k": "2"},
                              "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})",
                           std::string(4, '\0')));
  auto file = SafetensorsFile::Open(path);
  EXPECT_TRUE(file.ok()) << file.status();
}

TEST(SafetensorsTest, UnsupportedDtype) {
  const std::string path = MakeTestDir() + "/model.safetensors";
  WriteBytes(path, RawFile(R"({"q": {"dtype": "I8", "shape": [4], "data_offsets": [0, 4]}})",
                           std::string(4, '\0')));
  EXPECT_THAT(ErrorOf(path), AllOf(HasSubstr(path), HasSubstr("'q'"), HasSubstr("'I8'"),
                                   HasSubstr("F32, F16, BF16")));
  WriteBytes(path, RawFile(R"({"d": {"dtype": "F64", "shape": [1], "data_offsets": [0, 8]}})",
                           std::string(8, '\0')));
  EXPECT_THAT(ErrorOf(path), AllOf(HasSubstr("'d'"), HasSubstr("'F64'")));
}

TEST(SafetensorsTest, MalformedEntries) {
  const std::string path = MakeTestDir() + "/model.safetensors";
  WriteBytes(path, RawFile(R"({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}})", ""));
  EXPECT_THAT(ErrorOf(path), AllOf(HasSubstr("'w'"), HasSubstr("non-negative integer")));
  WriteBytes(path, RawFile(R"({"w": {"shape": [1], "data_offsets": [0, 4]}})", std::string(4, 0)));
  EXPECT_THAT(ErrorOf(path), AllOf(HasSubstr("'w'"), HasSubstr("dtype")));
  WriteBytes(path, RawFile(R"({"w": {"dtype": "F32", "shape": [1]}})", std::string(4, 0)));
  EXPECT_THAT(ErrorOf(path), AllOf(HasSubstr("'w'"), HasSubstr("data_offsets")));
  WriteBytes(path, RawFile(R"({"w": 3})", ""));
  EXPECT_THAT(ErrorOf(path), AllOf(HasSubstr("'w'"), HasSubstr("not an object")));
}

// Found by tests/fuzz/safetensors_fuzz.cc: after a 0 the overflow guard let
// any dimension through, and 2^64 - 1 came out of the shape as -1.
TEST(SafetensorsTest, DimensionBeyondInt64AfterZero) {
  const std::string path = MakeTestDir() + "/model.safetensors";
  WriteBytes(path, RawFile(R"({"z": {"dtype": "F32", "shape": [0, 18446744073709551615], )"
                           R"("data_offsets": [0, 0]}})", ""));
  EXPECT_THAT(ErrorOf(path), AllOf(HasSubstr(path), HasSubstr("'z'"),
                                   HasSubstr("shape [0,18446744073709551615] has a dimension "
                                             "above 2^63 - 1")));
  WriteBytes(path, RawFile(R"({"z": {"dtype": "F32", "shape": [0, 9223372036854775807], )"
                           R"("data_offsets": [0, 0]}})", ""));
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_THAT((*file)->tensors()[0].shape, ElementsAre(0, std::numeric_limits<int64_t>::max()));
}

// Found by tests/fuzz/safetensors_fuzz.cc: 100k nested arrays in a shape
// overflowed the stack while the error message printed the shape.
TEST(SafetensorsTest, HeaderNestedTooDeep) {
  const std::string path = MakeTestDir() + "/model.safetensors";
  const int depth = 200000;
  WriteBytes(path, RawFile(R"({"w": {"dtype": "F32", "shape": )" + std::string(depth, '[') +
                               std::string(depth, ']') + R"(, "data_offsets": [0, 0]}})",
                           ""));
  EXPECT_THAT(ErrorOf(path), AllOf(HasSubstr(path), HasSubstr("nests deeper than 64 levels")));
  // Moderate nesting is still read, and refused for what it is.
  WriteBytes(path, RawFile(R"({"w": {"dtype": "F32", "shape": [[[1]]], "data_offsets": [0, 0]}})",
                           ""));
  EXPECT_THAT(ErrorOf(path), HasSubstr("not a non-negative integer"));
}

TEST(SafetensorsTest, MissingFile) {
  const std::string path = MakeTestDir() + "/absent.safetensors";
  auto file = SafetensorsFile::Open(path);
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(file.status().message()), HasSubstr(path));
}

TEST(SafetensorsTest, ReadsTheSharedFixture) {
  const std::string dir = std::string(STREAMGEN_SOURCE_DIR) + "/../shared/fixtures/tiny-llama";
  if (access((dir + "/model.safetensors").c_str(), R_OK) != 0) {
    GTEST_SKIP() << dir << " is absent (shared fixtures are only on development machines)";
  }
  auto store = WeightStore::OpenDir(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->Names().size(), 30u);  // embed + 3 layers * 9 + norm + lm_head
  const TensorView* embed = (*store)->Find("model.embed_tokens.weight");
  ASSERT_NE(embed, nullptr);
  EXPECT_EQ(embed->dtype, StorageDtype::kBF16);
  EXPECT_THAT(embed->shape, ElementsAre(32000, 128));
}

}  // namespace
}  // namespace streamgen
