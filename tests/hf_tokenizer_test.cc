// HfTokenizer (tokenizer.json): what is refused at load, by message, and the
// choices of LoadTokenizerFromDirectory. Exactness against Hugging Face's own
// library is tests/tokenizers/ (real files, the Rust reference).
#include "engine/text/hf_tokenizer.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/text/detokenizer.h"
#include "engine/text/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace streamgen {
namespace {

using ::nlohmann::json;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A small byte-level BPE tokenizer.json: bytes "a", "b", "c", " " (as Ġ),
// merges a b -> ab, Ġ ab -> Ġab; one special and one plain added token;
// BOS from a TemplateProcessing.
json SmallTokenizer() {
  return json::parse(R"({
    "version": "1.0",
    "added_tokens": [
      {"id": 6, "content": "<|im_start|>", "special": true, "normalized": false,
       "lstrip": false, "rstrip": false, "single_word": false},
      {"id": 7, "content": "<think>", "special": false, "normalized": false,
       "lstrip": false, "rstrip": false, "single_word": false},
      {"id": 8, "content": "<bos>", "special": true, "normalized": false,
       "lstrip": false, "rstrip": false, "single_word": false}
    ],
    "normalizer": {"type": "NFC"},
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
    "post_processor": {"type": "TemplateProcessing",
      "single": [{"SpecialToken": {"id": "<bos>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
      "special_tokens": {"<bos>": {"id": "<bos>", "ids": [8], "tokens": ["<bos>"]}}},
    "decoder": {"type": "ByteLevel"},
    "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "c": 2, "Ġ": 3, "ab": 4, "Ġab": 5},
              "merges": ["a b", ["Ġ", "ab"]]}
  })");
}

class HfTokenizerTest : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = absl::StrCat(testing::TempDir(), "streamgen_hf_tokenizer_test_", getpid(), "_",
                        testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string Write(const std::string& name, const std::string& text) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path) << text;
    return path;
  }
  absl::StatusOr<std::unique_ptr<HfTokenizer>> LoadJson(const json& j) {
    return HfTokenizer::Load(Write("tokenizer.json", j.dump()));
  }
  // The load error of SmallTokenizer() with `edit` applied.
  std::string ErrorOf(const std::function<void(json*)>& edit) {
    json j = SmallTokenizer();
    edit(&j);
    auto tok = LoadJson(j);
    EXPECT_FALSE(tok.ok());
    return tok.ok() ? "" : std::string(tok.status().message());
  }

  std::string dir_;
};

TEST_F(HfTokenizerTest, EncodesAndDecodes) {
  auto tok = LoadJson(SmallTokenizer());
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_THAT((*tok)->Encode("ab ab", false, false), ElementsAre(4, 5));
  EXPECT_THAT((*tok)->Encode("ab ab", true, false), ElementsAre(8, 4, 5));
  EXPECT_EQ((*tok)->Decode({8, 4, 5}, /*skip_special_tokens=*/false), "<bos>ab ab");
  EXPECT_EQ((*tok)->Decode({8, 4, 5}, /*skip_special_tokens=*/true), "ab ab");
  EXPECT_EQ((*tok)->vocab_size(), 9);
  EXPECT_TRUE((*tok)->adds_special_tokens());
}

// Special tokens in text are matched only when asked (the default of
// Tokenizer::Encode is not to); non-special added tokens always are.
TEST_F(HfTokenizerTest, SpecialTokensInTextOnlyWhenAsked) {
  auto tok = LoadJson(SmallTokenizer());
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_THAT((*tok)->Encode("<|im_start|>ab", false, /*parse_special=*/true), ElementsAre(6, 4));
  const std::vector<int> unparsed =
      (*tok)->Encode("<|im_start|>ab", false, /*parse_special=*/false);
  EXPECT_THAT(unparsed, testing::Not(testing::Contains(6)));
  EXPECT_THAT((*tok)->Encode("<think>", false, /*parse_special=*/false), ElementsAre(7));

  std::unique_ptr<Tokenizer> facade;
  const std::string path = Write("tokenizer.json", SmallTokenizer().dump());
  auto loaded = Tokenizer::LoadHf(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_THAT((*loaded)->Encode("<|im_start|>"), testing::Not(testing::Contains(6)));
  EXPECT_THAT((*loaded)->Encode("<|im_start|>", {false, true}), ElementsAre(6));
}

TEST_F(HfTokenizerTest, RefusesWhatItDoesNotSupport) {
  EXPECT_THAT(ErrorOf([](json* j) { (*j)["model"]["type"] = "Unigram"; }),
              AllOf(HasSubstr("tokenizer.json"), HasSubstr("model"),
                    HasSubstr("unsupported model type 'Unigram'")));
  EXPECT_THAT(ErrorOf([](json* j) { (*j)["model"]["type"] = "WordPiece"; }),
              HasSubstr("unsupported model type 'WordPiece'"));
  EXPECT_THAT(ErrorOf([](json* j) {
                (*j)["pre_tokenizer"] = {{"type", "BertPreTokenizer"}};
              }),
              AllOf(HasSubstr("tokenizer.json: pre_tokenizer"),
                    HasSubstr("unsupported pre-tokenizer type 'BertPreTokenizer'")));
  EXPECT_THAT(ErrorOf([](json* j) {
                (*j)["pre_tokenizer"] = {
                    {"type", "Sequence"},
                    {"pretokenizers", {{{"type", "ByteLevel"}}, {{"type", "Nope"}}}}};
              }),
              HasSubstr("pre_tokenizer.pretokenizers[1]: unsupported pre-tokenizer type 'Nope'"));
  EXPECT_THAT(ErrorOf([](json* j) {
                (*j)["normalizer"] = {{"type", "NFD"}};
              }),
              HasSubstr("normalizer: unsupported normalizer type 'NFD'"));
  EXPECT_THAT(ErrorOf([](json* j) {
                (*j)["decoder"] = {{"type", "WordPiece"}};
              }),
              HasSubstr("decoder: unsupported decoder type 'WordPiece'"));
  EXPECT_THAT(ErrorOf([](json* j) {
                (*j)["post_processor"] = {{"type", "BertProcessing"}};
              }),
              HasSubstr("post_processor: unsupported post-processor type 'BertProcessing'"));
  EXPECT_THAT(ErrorOf([](json* j) {
                (*j)["pre_tokenizer"] = {{"type", "Split"},
                                         {"pattern", {{"Regex", "(unclosed"}}},
                                         {"behavior", "Isolated"}};
              }),
              AllOf(HasSubstr("pre_tokenizer: bad regex '(unclosed'"), HasSubstr("offset")));
  EXPECT_THAT(ErrorOf([](json* j) {
                (*j)["pre_tokenizer"] = {
                    {"type", "Split"}, {"pattern", {{"String", " "}}}, {"behavior", "Sideways"}};
              }),
              HasSubstr("unknown split behavior 'Sideways'"));
  EXPECT_THAT(ErrorOf([](json* j) { (*j)["pre_tokenizer"]["shiny"] = true; }),
              HasSubstr("pre_tokenizer: unsupported option 'shiny' of ByteLevel"));
  EXPECT_THAT(ErrorOf([](json* j) { (*j)["model"]["dropout"] = 0.1; }),
              HasSubstr("BPE dropout is not supported"));
  EXPECT_THAT(ErrorOf([](json* j) { (*j)["model"]["continuing_subword_prefix"] = "##"; }),
              HasSubstr("BPE continuing_subword_prefix is not supported"));
  EXPECT_THAT(ErrorOf([](json* j) { j->at("model").erase("vocab"); }),
              HasSubstr("model: 'vocab' is missing or not an object"));
  EXPECT_THAT(ErrorOf([](json* j) { (*j)["model"]["merges"].push_back("a c"); }),
              HasSubstr("model: merges[2]: 'ac' is not in the vocabulary"));
  EXPECT_THAT(ErrorOf([](json* j) { (*j)["model"]["merges"].push_back("abc"); }),
              HasSubstr("merges[2]: 'abc' is not two pieces split by a space"));
  EXPECT_THAT(ErrorOf([](json* j) { (*j)["model"]["unk_token"] = "<unk>"; }),
              HasSubstr("unk_token '<unk>' is not in the vocabulary"));
  EXPECT_THAT(
      ErrorOf([](json* j) { (*j)["post_processor"]["single"][0]["SpecialToken"]["id"] = "<x>"; }),
      HasSubstr("post_processor.single[0]: special token '<x>' is not in the vocabulary"));
  EXPECT_THAT(ErrorOf([](json* j) { (*j)["added_tokens"][0].erase("content"); }),
              HasSubstr("added_tokens[0]: needs an id and a non-empty content"));
  EXPECT_THAT(ErrorOf([](json* j) { (*j)["surprise"] = 1; }),
              HasSubstr("unsupported field 'surprise'"));
}

TEST_F(HfTokenizerTest, RefusesMalformedFiles) {
  auto tok = HfTokenizer::Load(Write("tokenizer.json", "{\"model\": "));
  ASSERT_FALSE(tok.ok());
  EXPECT_THAT(tok.status().message(), AllOf(HasSubstr("tokenizer.json: malformed JSON")));
  tok = HfTokenizer::Load(Write("tokenizer.json", "[1, 2]"));
  EXPECT_THAT(tok.status().message(), HasSubstr("tokenizer.json: not a JSON object"));
  tok = HfTokenizer::Load(dir_ + "/missing.json");
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(tok.status().message(), HasSubstr("missing.json"));
  // tokenizer_config.json naming a token the tokenizer lacks.
  const std::string json_path = Write("tokenizer.json", SmallTokenizer().dump());
  tok = HfTokenizer::Load(json_path, Write("tokenizer_config.json", R"({"bos_token": "<nope>"})"));
  EXPECT_THAT(tok.status().message(),
              AllOf(HasSubstr("tokenizer_config.json: bos_token '<nope>' is not a token")));
  tok = HfTokenizer::Load(json_path, Write("tokenizer_config.json", "{"));
  EXPECT_THAT(tok.status().message(), HasSubstr("tokenizer_config.json: not a JSON object"));
  tok = HfTokenizer::Load(
      json_path, Write("tokenizer_config.json",
                       R"({"bos_token": {"content": "<bos>"}, "eos_token": "<|im_start|>"})"));
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->bos_id(), 8);
  EXPECT_EQ((*tok)->eos_id(), 6);
}

TEST_F(HfTokenizerTest, DirectoryChoosesAsAutoTokenizer) {
  auto none = LoadTokenizerFromDirectory(dir_, TokenizerKind::kAuto);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(none.status().message(),
              AllOf(HasSubstr("tokenizer.json"), HasSubstr("tokenizer.model")));
  auto sp = LoadTokenizerFromDirectory(dir_, TokenizerKind::kSentencePiece);
  EXPECT_THAT(sp.status().message(), HasSubstr("tokenizer.model"));
  Write("tokenizer.json", SmallTokenizer().dump());
  auto hf = LoadTokenizerFromDirectory(dir_, TokenizerKind::kAuto);
  ASSERT_TRUE(hf.ok()) << hf.status();
  EXPECT_NE((*hf)->hf(), nullptr);
  EXPECT_THAT(ParseTokenizerKind("spm").status().message(),
              HasSubstr("unknown tokenizer kind 'spm' (want auto, hf or sentencepiece)"));
}

// The stream holds back bytes of a character split across byte-level pieces
// and never emits a half character.
TEST_F(HfTokenizerTest, DetokenizerHoldsSplitCharacters) {
  json j = SmallTokenizer();
  // "é" is C3 A9: as byte-level characters Ã (C3) and © (A9).
  j["model"]["vocab"]["Ã"] = 9;
  j["model"]["vocab"]["©"] = 10;
  auto tok = Tokenizer::LoadHf(Write("tokenizer.json", j.dump()));
  ASSERT_TRUE(tok.ok()) << tok.status();
  // The added tokens were renumbered after the model's pieces, as HF does.
  const int bos = (*tok)->PieceToId("<bos>");
  EXPECT_EQ(bos, 13);
  IncrementalDetokenizer detok(tok->get(), {});
  EXPECT_EQ(detok.Append(4), "ab");
  EXPECT_EQ(detok.Append(9), "");
  EXPECT_EQ(detok.Append(bos), "");  // a special token between the bytes: skipped
  EXPECT_EQ(detok.Append(10), "\xC3\xA9");
  EXPECT_EQ(detok.Append(9), "");
  EXPECT_EQ(detok.Flush(), "\xEF\xBF\xBD");
}

}  // namespace
}  // namespace streamgen
