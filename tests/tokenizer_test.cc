// Tokenizer (sentencepiece wrapper) and IncrementalDetokenizer tests.
//
// Three tokenizers: one trained here (always available, so the tests are
// self-contained), the project's built-in tiny model's (written at build time),
// and the Llama 2 model of ../shared/fixtures/tiny-llama (skipped when absent).
#include "engine/text/tokenizer.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/text/detokenizer.h"
#include "engine/text/sentencepiece_backend.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace streamgen {
namespace {

using ::testing::HasSubstr;

const char kSharedDir[] = "../shared/fixtures/tiny-llama";
const char kReplacement[] = "\xEF\xBF\xBD";  // U+FFFD

std::string TempDir() {
  const std::string dir = absl::StrCat(testing::TempDir(), "streamgen_tokenizer_test_", getpid());
  std::filesystem::create_directories(dir);
  return dir;
}

// Removes this process's temporary directory at the end.
class TempDirCleanup : public testing::Environment {
 public:
  void TearDown() override { std::filesystem::remove_all(TempDir()); }
};
testing::Environment* const kTempDirCleanup =
    testing::AddGlobalTestEnvironment(new TempDirCleanup());

// A small Llama-style tokenizer (BPE, byte fallback, <unk> 0, <s> 1, </s> 2)
// trained on generated text with ASCII, accented, Cyrillic, CJK and emoji words.
std::string TrainTokenizer() {
  const std::string dir = TempDir();
  const std::vector<std::string> words = {
      "the", "quick", "brown",  "fox", "jumps",  "over", "lazy",  "dog",   "once",  "upon",
      "a",   "time",  "there",  "was", "branch", "tree", "café",  "naïve", "Grüße", "日本",
      "語",  "中文",  "Привет", "мир", "42",     "2024", "hello", "world", ",",     "."};
  std::mt19937 rng(7);
  std::vector<std::string> lines;
  for (int line = 0; line < 2000; ++line) {
    std::string text;
    const int n = 3 + static_cast<int>(rng() % 12);
    for (int i = 0; i < n; ++i) absl::StrAppend(&text, i ? " " : "", words[rng() % words.size()]);
    if (line % 97 == 0) text += " 😀";  // rare: below the character coverage
    lines.push_back(text);
  }
  const std::unordered_map<std::string, std::string> args = {
      {"model_type", "bpe"},
      {"vocab_size", "420"},
      {"byte_fallback", "true"},
      {"split_digits", "true"},
      {"character_coverage", "0.99"},
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      {"add_dummy_prefix", "true"},
      {"allow_whitespace_only_pieces", "true"},
      {"hard_vocab_limit", "false"},
      {"unk_id", "0"},
      {"bos_id", "1"},
      {"eos_id", "2"},
      {"pad_id", "-1"},
      {"num_threads", "1"},
      {"minloglevel", "2"}};
  auto backend = NewSentencePieceBackend();
  if (!backend.ok()) {
    ADD_FAILURE() << backend.status();
    return "";
  }
  std::string model;
  const std::string error = (*backend)->Train(args, lines, &model);
  if (!error.empty()) {
    ADD_FAILURE() << "training the test tokenizer failed: " << error;
    return "";
  }
  std::ofstream(dir + "/trained.model", std::ios::binary) << model;
  return dir + "/trained.model";
}

// Tokenizers by name, loaded once; nullptr with `why` set when unavailable.
const Tokenizer* GetTokenizer(const std::string& name, std::string* why) {
  struct Entry {
    std::unique_ptr<Tokenizer> tok;
    std::string why;
  };
  static auto* cache = new std::map<std::string, Entry>();
  auto it = cache->find(name);
  if (it == cache->end()) {
    Entry entry;
    std::string path;
    if (name == "trained") path = TrainTokenizer();
    if (name == "builtin") path = std::string(STREAMGEN_TINY_MODEL_DIR) + "/tokenizer.model";
    if (name == "shared") path = std::string(kSharedDir) + "/tokenizer.model";
    if (std::filesystem::exists(path)) {
      auto loaded = Tokenizer::Load(path);
      EXPECT_TRUE(loaded.ok()) << loaded.status();
      if (loaded.ok()) entry.tok = std::move(*loaded);
    }
    if (entry.tok == nullptr) {
      entry.why = absl::StrCat("tokenizer '", name, "' is not available: ", path, " absent");
    }
    it = cache->emplace(name, std::move(entry)).first;
  }
  *why = it->second.why;
  return it->second.tok.get();
}

// ---------------------------------------------------------------- UTF-8 oracle
// Independent of the detokenizer: built by encoding every valid code point.

std::string EncodeUtf8(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xF0 | (cp >> 18));
    s += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

// Proper prefixes of the encodings of all valid code points.
const std::set<std::string>& ProperPrefixes() {
  static const auto* prefixes = [] {
    auto* set = new std::set<std::string>();
    for (uint32_t cp = 0x80; cp <= 0x10FFFF; ++cp) {
      if (cp >= 0xD800 && cp <= 0xDFFF) continue;
      const std::string s = EncodeUtf8(cp);
      for (size_t len = 1; len < s.size(); ++len) set->insert(s.substr(0, len));
    }
    return set;
  }();
  return *prefixes;
}

// Trailing byte tokens of `ids` that form a proper prefix of a valid character.
size_t OracleIncompleteTail(const Tokenizer& tok, const std::vector<int>& ids) {
  std::string bytes;
  for (size_t k = 1; k <= 3 && k <= ids.size(); ++k) {
    const int b = tok.ByteValue(ids[ids.size() - k]);
    if (b < 0) break;
    bytes.insert(bytes.begin(), static_cast<char>(b));
    if (ProperPrefixes().count(bytes)) return k;
  }
  return 0;
}

// Length of the valid character at s[i] (no overlong forms, no surrogates,
// nothing above U+10FFFF), 0 when there is none.
size_t ValidCharLength(const std::string& s, size_t i) {
  const unsigned char lead = s[i];
  const size_t len = lead < 0x80 ? 1 : lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 0;
  if (len == 0 || i + len > s.size()) return 0;
  uint32_t cp = len == 1 ? lead : lead & (0xFF >> (len + 1));
  for (size_t k = 1; k < len; ++k) {
    const unsigned char c = s[i + k];
    if ((c & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (c & 0x3F);
  }
  if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return EncodeUtf8(cp) == s.substr(i, len) ? len : 0;
}

// Whether `s` is valid UTF-8 made of complete characters.
bool IsCompleteUtf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    const size_t len = ValidCharLength(s, i);
    if (len == 0) return false;
    i += len;
  }
  return true;
}

// What the stream must deliver for `prompt` + `gen` once everything is out:
// decode(all) minus decode(prompt without its unfinished trailing character).
std::string ExpectedStream(const Tokenizer& tok, const std::vector<int>& prompt,
                           const std::vector<int>& gen) {
  std::vector<int> all = prompt;
  all.insert(all.end(), gen.begin(), gen.end());
  const std::vector<int> head_ids(prompt.begin(), prompt.end() - OracleIncompleteTail(tok, prompt));
  const std::string head = tok.Decode(head_ids);
  const std::string full = tok.Decode(all);
  EXPECT_EQ(full.substr(0, head.size()), head);
  return full.substr(std::min(head.size(), full.size()));
}

std::string Hex(const std::string& s) {
  std::string out;
  for (unsigned char c : s) absl::StrAppendFormat(&out, "%02X ", c);
  return out;
}

std::string IdList(const std::vector<int>& ids) {
  std::string out;
  for (int id : ids) absl::StrAppend(&out, id, " ");
  return out;
}

// ------------------------------------------------------------------ Load errors

TEST(TokenizerLoadTest, MissingFileNamesThePath) {
  const std::string path = "/nonexistent/streamgen/tokenizer.model";
  auto tok = Tokenizer::Load(path);
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(tok.status().message()), HasSubstr(path));
  EXPECT_THAT(std::string(tok.status().message()), HasSubstr("not found"));
}

TEST(TokenizerLoadTest, GarbageFileNamesThePathAndTheReason) {
  const std::string path = TempDir() + "/garbage.model";
  std::ofstream(path) << "this is not a sentencepiece model\n";
  auto tok = Tokenizer::Load(path);
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(tok.status().message()), HasSubstr(path));
  EXPECT_THAT(std::string(tok.status().message()), HasSubstr("cannot load tokenizer model"));
}

TEST(TokenizerLoadTest, EmptyFileIsNotAModel) {
  const std::string path = TempDir() + "/empty.model";
  std::ofstream(path).close();
  auto tok = Tokenizer::Load(path);
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(tok.status().message()), HasSubstr(path));
}

TEST(TokenizerLoadTest, DirectoryIsNotAModel) {
  const std::string path = TempDir();
  auto tok = Tokenizer::Load(path);
  ASSERT_FALSE(tok.ok());
  EXPECT_THAT(std::string(tok.status().message()), HasSubstr(path));
}

// ------------------------------------------------------ Tokenizer on its own

class TokenizerTest : public testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    std::string why;
    tok_ = GetTokenizer(GetParam(), &why);
    if (tok_ == nullptr) GTEST_SKIP() << why;
  }
  // The id of byte piece <0xNN>.
  int Byte(int b) const {
    const int id = tok_->PieceToId(absl::StrFormat("<0x%02X>", b));
    EXPECT_GE(id, 0) << "no byte piece for " << b;
    return id;
  }
  const Tokenizer* tok_ = nullptr;
};

TEST_P(TokenizerTest, PieceKinds) {
  EXPECT_GT(tok_->piece_count(), 259);
  EXPECT_EQ(tok_->bos_id(), 1);
  EXPECT_EQ(tok_->eos_id(), 2);
  EXPECT_TRUE(tok_->IsControl(1));
  EXPECT_TRUE(tok_->IsControl(2));
  EXPECT_TRUE(tok_->IsUnknown(0));
  EXPECT_FALSE(tok_->IsControl(0));
  EXPECT_EQ(tok_->IdToPiece(1), "<s>");
  int bytes = 0;
  for (int id = 0; id < tok_->piece_count(); ++id) {
    if (!tok_->IsByte(id)) continue;
    ++bytes;
    EXPECT_EQ(tok_->IdToPiece(id), absl::StrFormat("<0x%02X>", tok_->ByteValue(id)));
    EXPECT_EQ(tok_->PieceToId(tok_->IdToPiece(id)), id);
    EXPECT_FALSE(tok_->IsControl(id));
  }
  EXPECT_EQ(bytes, 256);
  EXPECT_EQ(tok_->ByteValue(Byte(0xF0)), 0xF0);
  EXPECT_EQ(tok_->ByteValue(1), -1);
  EXPECT_EQ(tok_->PieceToId("no such piece, surely"), -1);
  // Ids out of range are nothing, and never crash.
  for (int id : {-1, tok_->piece_count(), 1 << 30}) {
    EXPECT_FALSE(tok_->IsByte(id));
    EXPECT_FALSE(tok_->IsControl(id));
    EXPECT_FALSE(tok_->IsUnknown(id));
    EXPECT_EQ(tok_->ByteValue(id), -1);
    EXPECT_EQ(tok_->IdToPiece(id), "");
  }
}

TEST_P(TokenizerTest, EncodeDecodeRoundTrip) {
  for (const std::string text :
       {"Once upon a time", "Grüße aus 日本, naïve café", "emoji 😀 and \u00e9", "x  y\n z"}) {
    const std::vector<int> ids = tok_->Encode(text);
    ASSERT_FALSE(ids.empty());
    EXPECT_NE(ids.front(), tok_->bos_id()) << "Encode adds no BOS";
    EXPECT_NE(ids.back(), tok_->eos_id()) << "Encode adds no EOS";
    EXPECT_EQ(tok_->Decode(ids), text);
  }
  EXPECT_TRUE(tok_->Encode("").empty());
}

TEST_P(TokenizerTest, DecodeFollowsSentencepiece) {
  const std::vector<int> branch = tok_->Encode("branch");
  ASSERT_FALSE(branch.empty());
  ASSERT_EQ(tok_->IdToPiece(branch[0]).rfind("\u2581", 0), 0u) << "dummy prefix space";
  EXPECT_EQ(tok_->Decode(branch), "branch");  // leading space of the first piece dropped
  std::vector<int> with_bos = {tok_->bos_id()};
  with_bos.insert(with_bos.end(), branch.begin(), branch.end());
  EXPECT_EQ(tok_->Decode(with_bos), "branch");  // control pieces are invisible
  EXPECT_EQ(tok_->Decode({Byte(0xF0), Byte(0x9F), Byte(0x98), Byte(0x80)}), "😀");
  EXPECT_EQ(tok_->Decode({Byte(0xF0), Byte(0x9F)}), absl::StrCat(kReplacement, kReplacement));
  EXPECT_EQ(tok_->Decode({Byte(0x99)}), kReplacement);
  EXPECT_EQ(tok_->Decode({Byte(0x41), tok_->piece_count()}), "") << "an id out of range";
}

INSTANTIATE_TEST_SUITE_P(Tokenizers, TokenizerTest,
                         testing::Values("trained", "builtin", "shared"));

TEST(SharedFixtureTokenizerTest, EncodesTheGoldenPrompt) {
  std::string why;
  const Tokenizer* tok = GetTokenizer("shared", &why);
  if (tok == nullptr) GTEST_SKIP() << why;
  EXPECT_EQ(tok->piece_count(), 32000);
  std::vector<int> ids = {tok->bos_id()};
  for (int id : tok->Encode("I believe the meaning of life is")) ids.push_back(id);
  EXPECT_EQ(ids, std::vector<int>({1, 306, 4658, 278, 6593, 310, 2834, 338}));
  EXPECT_EQ(tok->PieceToId("<0x99>"), 156);
  EXPECT_EQ(tok->PieceToId("\u2581branch"), 5443);
}

// ---------------------------------------------------------------- Detokenizer

using DetokenizerTest = TokenizerTest;

// Streams `gen` after `prompt`; returns each Append output, then Flush's.
std::vector<std::string> Stream(const Tokenizer& tok, const std::vector<int>& prompt,
                                const std::vector<int>& gen) {
  IncrementalDetokenizer detok(&tok, prompt);
  std::vector<std::string> outs;
  for (int id : gen) outs.push_back(detok.Append(id));
  outs.push_back(detok.Flush());
  return outs;
}

std::string Join(const std::vector<std::string>& parts) {
  std::string out;
  for (const std::string& p : parts) out += p;
  return out;
}

TEST_P(DetokenizerTest, EmojiBytesAreHeldUntilTheCharacterIsComplete) {
  const std::vector<int> prompt = tok_->Encode("Hi");
  const std::vector<std::string> outs =
      Stream(*tok_, prompt, {Byte(0xF0), Byte(0x9F), Byte(0x98), Byte(0x80)});
  EXPECT_EQ(outs, std::vector<std::string>({"", "", "", "😀", ""}));
}

TEST_P(DetokenizerTest, PromptEndingInsideACharacterStreamsItCompleted) {
  std::vector<int> prompt = tok_->Encode("Hi");
  prompt.push_back(Byte(0xF0));
  prompt.push_back(Byte(0x9F));
  EXPECT_EQ(Stream(*tok_, prompt, {Byte(0x98), Byte(0x80), Byte(0x41)}),
            std::vector<std::string>({"", "😀", "A", ""}));
  // Never completed: the prompt's two bytes come out as U+FFFD each, once.
  EXPECT_EQ(Join(Stream(*tok_, prompt, {Byte(0x41)})),
            absl::StrCat(kReplacement, kReplacement, "A"));
}

TEST_P(DetokenizerTest, BytesThatCanNeverCompleteComeOutAtOnce) {
  const std::vector<int> prompt = tok_->Encode("Hi");
  // A lone continuation byte, C0 / C1 / F5 leads: U+FFFD at once.
  for (int b : {0x99, 0xC0, 0xC1, 0xF5, 0xFF}) {
    EXPECT_EQ(Stream(*tok_, prompt, {Byte(b)}), std::vector<std::string>({kReplacement, ""}))
        << "byte " << b;
  }
  // A lead held, then a byte that cannot follow it: both come out.
  const std::string two = absl::StrCat(kReplacement, kReplacement);
  EXPECT_EQ(Stream(*tok_, prompt, {Byte(0xE2), Byte(0x41)}),
            std::vector<std::string>({"", absl::StrCat(kReplacement, "A"), ""}));
  EXPECT_EQ(Stream(*tok_, prompt, {Byte(0xE0), Byte(0x80)}),  // overlong
            std::vector<std::string>({"", two, ""}));
  EXPECT_EQ(Stream(*tok_, prompt, {Byte(0xED), Byte(0xA0)}),  // surrogate
            std::vector<std::string>({"", two, ""}));
  EXPECT_EQ(Stream(*tok_, prompt, {Byte(0xF4), Byte(0x90)}),  // above U+10FFFF
            std::vector<std::string>({"", two, ""}));
  // A non-byte piece ends the byte run.
  const int eos = tok_->eos_id();
  EXPECT_EQ(Stream(*tok_, prompt, {Byte(0xF0), eos}),
            std::vector<std::string>({"", kReplacement, ""}));
}

TEST_P(DetokenizerTest, FlushReleasesAnUnfinishedCharacter) {
  IncrementalDetokenizer detok(tok_, tok_->Encode("Hi"));
  EXPECT_EQ(detok.Append(Byte(0xF0)), "");
  EXPECT_EQ(detok.Append(Byte(0x9F)), "");
  EXPECT_EQ(detok.Flush(), absl::StrCat(kReplacement, kReplacement));
  EXPECT_EQ(detok.Flush(), "");
  EXPECT_EQ(detok.Append(Byte(0x98)), "") << "the stream is over";
  EXPECT_EQ(detok.Flush(), "");
}

TEST_P(DetokenizerTest, KeepsTheLeadingSpaceOfTheFirstGeneratedPiece) {
  const std::vector<int> branch = tok_->Encode("branch");  // "▁branch" or "▁b" "ranch" ...
  EXPECT_EQ(Join(Stream(*tok_, tok_->Encode("Once upon a time"), branch)), " branch");
  // After BOS alone there is no text before it: sentencepiece drops the space.
  EXPECT_EQ(Join(Stream(*tok_, {tok_->bos_id()}, branch)), "branch");
  EXPECT_EQ(Join(Stream(*tok_, {}, branch)), "branch");
  // Text, then more control ids than the detokenizer's first window: the
  // space stays (the window must reach back to the text).
  std::vector<int> prompt = tok_->Encode("Hello");
  prompt.insert(prompt.end(), 9, tok_->eos_id());
  EXPECT_EQ(Join(Stream(*tok_, prompt, branch)), " branch");
}

TEST_P(DetokenizerTest, ControlAndOutOfRangeIdsGiveNothing) {
  IncrementalDetokenizer detok(tok_, tok_->Encode("Hi"));
  EXPECT_EQ(detok.Append(tok_->eos_id()), "");
  EXPECT_EQ(detok.Append(tok_->bos_id()), "");
  EXPECT_EQ(detok.Append(-1), "");
  EXPECT_EQ(detok.Append(tok_->piece_count()), "");
  EXPECT_EQ(detok.Append(Byte(0x41)), "A");
  EXPECT_EQ(detok.Flush(), "");
}

// Interesting ids: byte pieces (ASCII, leads, continuations, never-valid
// bytes, the emoji's bytes in order), ▁-pieces, control and unknown pieces.
class IdSampler {
 public:
  IdSampler(const Tokenizer& tok, uint32_t seed) : tok_(tok), rng_(seed) {
    for (int id = 0; id < tok.piece_count(); ++id) {
      if (tok.IdToPiece(id).rfind("\u2581", 0) == 0) space_pieces_.push_back(id);
    }
  }

  std::vector<int> Sample(int n) {
    std::vector<int> ids;
    while (static_cast<int>(ids.size()) < n) Add(&ids);
    return ids;
  }

 private:
  int Uniform(int n) { return static_cast<int>(rng_() % n); }
  int ByteId(int b) { return tok_.PieceToId(absl::StrFormat("<0x%02X>", b)); }

  void Add(std::vector<int>* ids) {
    static const int kSpecialBytes[] = {0xC0, 0xC1, 0xC2, 0xDF, 0xE0, 0xED, 0xEF, 0xF0, 0xF4, 0xF5,
                                        0xFF, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0x0A, 0x20, 0x41};
    const int r = Uniform(100);
    if (r < 12) {
      ids->push_back(ByteId(0x80 + Uniform(0x40)));  // continuation
    } else if (r < 20) {
      ids->push_back(ByteId(0xC0 + Uniform(0x40)));  // lead (or never valid)
    } else if (r < 30) {
      ids->push_back(ByteId(kSpecialBytes[Uniform(sizeof(kSpecialBytes) / sizeof(int))]));
    } else if (r < 34) {
      ids->push_back(ByteId(Uniform(256)));
    } else if (r < 42) {
      const int emoji[] = {0xF0, 0x9F, 0x98, 0x80};
      const int n = 1 + Uniform(4);  // a prefix, or the whole character
      for (int i = 0; i < n; ++i) ids->push_back(ByteId(emoji[i]));
    } else if (r < 60) {
      ids->push_back(space_pieces_[Uniform(space_pieces_.size())]);
    } else if (r < 66) {
      ids->push_back(Uniform(2) ? tok_.bos_id() : tok_.eos_id());
    } else if (r < 68) {
      ids->push_back(0);  // <unk>
    } else {
      ids->push_back(Uniform(tok_.piece_count()));
    }
  }

  const Tokenizer& tok_;
  std::mt19937 rng_;
  std::vector<int> space_pieces_;
};

// After each Append the stream holds exactly the text of the ids so far minus
// an unfinished trailing character; at the end exactly the contract's text.
void CheckStream(const Tokenizer& tok, const std::vector<int>& prompt,
                 const std::vector<int>& gen) {
  IncrementalDetokenizer detok(&tok, prompt);
  std::string streamed;
  std::vector<int> all = prompt;
  const std::string expected = ExpectedStream(tok, prompt, gen);
  for (size_t i = 0; i < gen.size(); ++i) {
    const std::string out = detok.Append(gen[i]);
    streamed += out;
    all.push_back(gen[i]);
    const size_t held = OracleIncompleteTail(tok, all);
    // The cut falls inside the prompt only when all generated ids so far
    // extend the prompt's unfinished character: nothing is out yet.
    const std::string want =
        held > i + 1 ? std::string()
                     : ExpectedStream(tok, prompt,
                                      std::vector<int>(gen.begin(), gen.begin() + i + 1 - held));
    ASSERT_EQ(streamed, want) << "after " << i + 1 << " generated ids; prompt " << IdList(prompt)
                              << " gen " << IdList(gen) << "\n  streamed " << Hex(streamed)
                              << "\n  want " << Hex(want);
    ASSERT_TRUE(IsCompleteUtf8(out)) << Hex(out);
    ASSERT_EQ(expected.compare(0, streamed.size(), streamed), 0)
        << "not a prefix of the final text: " << Hex(streamed) << " vs " << Hex(expected);
  }
  streamed += detok.Flush();
  ASSERT_EQ(streamed, expected) << "prompt " << IdList(prompt) << " gen " << IdList(gen)
                                << "\n  streamed " << Hex(streamed) << "\n  expected "
                                << Hex(expected);
}

TEST_P(DetokenizerTest, RandomStreamsMatchTheFullDecode) {
  IdSampler sampler(*tok_, 1234);
  std::mt19937 rng(99);
  for (int iter = 0; iter < 3000; ++iter) {
    const std::vector<int> prompt = sampler.Sample(static_cast<int>(rng() % 9));
    const std::vector<int> gen = sampler.Sample(static_cast<int>(rng() % 17));
    ASSERT_NO_FATAL_FAILURE(CheckStream(*tok_, prompt, gen)) << "iteration " << iter;
  }
}

TEST_P(DetokenizerTest, LongStreamMatchesTheFullDecode) {
  IdSampler sampler(*tok_, 5678);
  ASSERT_NO_FATAL_FAILURE(CheckStream(*tok_, sampler.Sample(40), sampler.Sample(600)));
}

TEST_P(DetokenizerTest, IncompleteTailMatchesTheOracleForAllShortByteRuns) {
  std::vector<int> ids = tok_->Encode("x");
  const size_t base = ids.size();
  for (int a = 0; a < 256; ++a) {
    for (int b = -1; b < 256; ++b) {
      for (int c = -1; c < 256; ++c) {
        if (b < 0 && c >= 0) continue;
        if (c >= 0 && a < 0xE0) continue;  // 3-byte runs: only for 3- and 4-byte leads
        ids.resize(base);
        for (int v : {a, b, c}) {
          if (v >= 0) ids.push_back(Byte(v));
        }
        ASSERT_EQ(IncompleteUtf8TailLength(*tok_, ids), OracleIncompleteTail(*tok_, ids))
            << absl::StrFormat("bytes %02X %02X %02X", a, b, c);
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Tokenizers, DetokenizerTest,
                         testing::Values("trained", "builtin", "shared"));

// The shared fixture's golden continuations stream to exactly their text.
TEST(GoldenDetokenizerTest, StreamsTheGoldenTexts) {
  std::string why;
  const Tokenizer* tok = GetTokenizer("shared", &why);
  if (tok == nullptr) GTEST_SKIP() << why;
  std::ifstream in(std::string(kSharedDir) + "/golden.json");
  ASSERT_TRUE(in) << kSharedDir << "/golden.json";
  const nlohmann::json golden = nlohmann::json::parse(in);
  ASSERT_EQ(golden.size(), 5u);
  int saw_lone_continuation = 0;
  for (const auto& entry : golden) {
    const auto prompt = entry.at("prompt_token_ids").get<std::vector<int>>();
    const auto gen = entry.at("generated_token_ids").get<std::vector<int>>();
    const std::string text = entry.at("generated_text").get<std::string>();
    EXPECT_EQ(Join(Stream(*tok, prompt, gen)), text) << entry.at("prompt");
    for (int id : gen) saw_lone_continuation += id == 156;
  }
  EXPECT_GE(saw_lone_continuation, 1) << "the fixture's <0x99> case";
}

}  // namespace
}  // namespace streamgen
