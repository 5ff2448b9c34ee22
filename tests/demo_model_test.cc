// The demo model (models/demo-brown, trained by tools/demo_model/train.py):
// the engine reproduces, token for token in float32, the greedy continuations
// the trainer's own forward pass wrote next to the model (greedy.json); the
// scalar reference forward pass (tests/reference_llama.cc) agrees; the
// continuations are English-looking text (no U+FFFD, mostly words); and
// streamgen-generate serves it when no --model is given.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/engine_test_util.h"
#include "tests/reference_llama.h"

namespace streamgen {
namespace {

const std::string kDemoDir = STREAMGEN_DEMO_MODEL_DIR;

nlohmann::json LoadGreedy() {
  std::ifstream in(kDemoDir + "/greedy.json");
  EXPECT_TRUE(in.good()) << kDemoDir << "/greedy.json is missing";
  return nlohmann::json::parse(in);
}

TEST(DemoModelTest, EngineReproducesTheTrainersGreedyContinuations) {
  auto engine = MakeEngine(kDemoDir);  // float32
  ASSERT_NE(engine, nullptr);
  const nlohmann::json greedy = LoadGreedy();
  ASSERT_GE(greedy["outputs"].size(), 3u);
  for (const nlohmann::json& entry : greedy["outputs"]) {
    const std::string prompt = entry["prompt"];
    SCOPED_TRACE(prompt);
    EXPECT_EQ(engine->Tokenize(prompt, true), entry["prompt_ids"].get<std::vector<int>>());
    GenerationRequest request;
    request.prompt = prompt;
    request.max_new_tokens = greedy["new_tokens"];
    Collector collector;
    ASSERT_TRUE(engine->Submit(request, collector.Sink()).ok());
    collector.Wait();
    EXPECT_EQ(collector.ids, entry["ids"].get<std::vector<int>>());
    // The trainer decoded with sentencepiece; the engine drops the EOS piece.
    EXPECT_EQ(collector.text, entry["text"].get<std::string>());
  }
}

TEST(DemoModelTest, ScalarReferenceAgreesWithTheTrainer) {
  auto reference = ReferenceLlama::Load(kDemoDir);
  ASSERT_TRUE(reference.ok()) << reference.status();
  // Not `: LoadGreedy()["outputs"]`: the temporary would be destroyed before
  // the loop runs (ASan: heap-use-after-free).
  const nlohmann::json greedy = LoadGreedy();
  for (const nlohmann::json& entry : greedy["outputs"]) {
    SCOPED_TRACE(entry["prompt"].get<std::string>());
    std::vector<int> tokens = entry["prompt_ids"].get<std::vector<int>>();
    const size_t prompt = tokens.size();
    const std::vector<int> generated = entry["ids"].get<std::vector<int>>();
    tokens.insert(tokens.end(), generated.begin(), generated.end() - 1);
    const std::vector<std::vector<float>> logits = reference->Logits(tokens);  // teacher-forced
    for (size_t i = 0; i < generated.size(); ++i) {
      const std::vector<float>& row = logits[prompt - 1 + i];
      int argmax = static_cast<int>(std::max_element(row.begin(), row.end()) - row.begin());
      ASSERT_EQ(argmax, generated[i]) << "step " << i;
    }
  }
}

// The words of `text` (runs of letters) that are at least two letters long or "a"/"I".
int CountWords(const std::string& text, int* letters_in_words) {
  int words = 0;
  *letters_in_words = 0;
  size_t i = 0;
  while (i < text.size()) {
    if (!std::isalpha(static_cast<unsigned char>(text[i]))) {
      ++i;
      continue;
    }
    size_t start = i;
    while (i < text.size() && (std::isalpha(static_cast<unsigned char>(text[i])) || text[i] == '\'')) ++i;
    ++words;
    *letters_in_words += static_cast<int>(i - start);
  }
  return words;
}

TEST(DemoModelTest, EverydayPromptsGiveTextWithoutReplacementCharacters) {
  // Not `: LoadGreedy()["outputs"]`: the temporary would be destroyed before
  // the loop runs (ASan: heap-use-after-free).
  const nlohmann::json greedy = LoadGreedy();
  for (const nlohmann::json& entry : greedy["outputs"]) {
    const std::string text = entry["text"];
    SCOPED_TRACE(entry["prompt"].get<std::string>() + " -> " + text);
    EXPECT_EQ(text.find("\xEF\xBF\xBD"), std::string::npos) << "U+FFFD in the output";
    int letters = 0;
    int words = CountWords(text, &letters);
    EXPECT_GE(words, 5);
    // Mostly words separated by spaces: at least half of the characters are in words.
    EXPECT_GE(2 * letters, static_cast<int>(text.size()));
  }
}

TEST(DemoModelTest, StreamgenGenerateServesItByDefault) {
  const nlohmann::json greedy = LoadGreedy();
  const nlohmann::json& entry = greedy["outputs"][0];
  const std::string bin = std::string(STREAMGEN_BINARY_DIR) + "/tools/streamgen-generate";
  std::string command = bin + " --prompt '" + entry["prompt"].get<std::string>() +
                        "' --temperature 0 --max-new-tokens " + std::to_string(greedy["new_tokens"].get<int>()) +
                        " --json 2>/dev/null";
  FILE* pipe = popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string out;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) out.append(buffer, n);
  ASSERT_EQ(pclose(pipe), 0) << out;
  nlohmann::json json = nlohmann::json::parse(out);
  EXPECT_EQ(json["token_ids"], entry["ids"]);  // float32 is the CPU default
  EXPECT_EQ(json["text"], entry["text"]);
}

}  // namespace
}  // namespace streamgen
