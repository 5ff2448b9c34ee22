// End-to-end engine tests: the golden fixture (independent reference), the
// built-in tiny model, request validation, stopping, seeds, cancellation, and
// model-directory errors. Runs from the project root (../shared/ resolves).
#include "engine/engine.h"
#include "engine/request_validation.h"
#include "tests/engine_test_util.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>
#include <functional>
#include <algorithm>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tools/tiny_model.h"
#include "tools/train_tokenizer.h"

namespace streamgen {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;


struct Result {
  std::vector<int> ids;
  std::string text;
  TokenEvent last;
};

Result Generate(Engine* engine, const GenerationRequest& request) {
  Collector c;
  auto id = engine->Submit(request, c.Sink());
  EXPECT_TRUE(id.ok()) << id.status();
  Result r;
  if (!id.ok()) return r;
  r.last = c.Wait();
  r.ids = c.ids;
  r.text = c.text;
  return r;
}

GenerationRequest Greedy(const std::string& prompt, int max_new_tokens) {
  GenerationRequest r;
  r.prompt = prompt;
  r.max_new_tokens = max_new_tokens;
  return r;
}

// ---- golden fixture: an independent fp32 implementation's greedy outputs ----

nlohmann::json LoadGolden() {
  std::ifstream in(std::string(kFixtureDir) + "/golden.json");
  return nlohmann::json::parse(in);
}

TEST(GoldenTest, GreedyOutputsMatchTheReferenceExactly) {
  if (!fs::exists(kFixtureDir)) GTEST_SKIP() << kFixtureDir << " is absent (not a dev machine)";
  auto engine = MakeEngine(kFixtureDir);
  ASSERT_NE(engine, nullptr);
  for (const auto& entry : LoadGolden()) {
    const std::string prompt = entry["prompt"];
    SCOPED_TRACE(prompt);
    EXPECT_EQ(engine->Tokenize(prompt, true), entry["prompt_token_ids"].get<std::vector<int>>());
    GenerationRequest request = Greedy(prompt, entry["max_new_tokens"]);
    Result r = Generate(engine.get(), request);
    EXPECT_EQ(r.ids, entry["generated_token_ids"].get<std::vector<int>>());
    EXPECT_EQ(r.text, entry["generated_text"].get<std::string>());
    EXPECT_EQ(r.last.finish_reason, FinishReason::kLength);
    EXPECT_EQ(r.last.completion_tokens, static_cast<int>(entry["max_new_tokens"]));
    EXPECT_EQ(r.last.prompt_tokens, static_cast<int>(entry["prompt_token_ids"].size()));
  }
}

TEST(GoldenTest, TokenIdPromptsAndConcurrentRequestsMatchToo) {
  if (!fs::exists(kFixtureDir)) GTEST_SKIP() << kFixtureDir << " is absent (not a dev machine)";
  auto engine = MakeEngine(kFixtureDir);
  ASSERT_NE(engine, nullptr);
  auto golden = LoadGolden();
  engine->Pause();  // all five start in the same batch
  std::vector<std::unique_ptr<Collector>> collectors;
  for (const auto& entry : golden) {
    GenerationRequest request;
    request.prompt_token_ids = entry["prompt_token_ids"].get<std::vector<int>>();
    request.max_new_tokens = entry["max_new_tokens"];
    collectors.push_back(std::make_unique<Collector>());
    ASSERT_TRUE(engine->Submit(request, collectors.back()->Sink()).ok());
  }
  engine->Resume();
  for (size_t i = 0; i < golden.size(); ++i) {
    collectors[i]->Wait();
    EXPECT_EQ(collectors[i]->ids, golden[i]["generated_token_ids"].get<std::vector<int>>()) << i;
    EXPECT_EQ(collectors[i]->text, golden[i]["generated_text"].get<std::string>()) << i;
  }
}

// ---- the tiny random model ----

class TinyEngineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    engine_ = MakeEngine(STREAMGEN_TINY_MODEL_DIR).release();
  }
  static void TearDownTestSuite() { delete engine_; }
  static Engine* engine_;
};
Engine* TinyEngineTest::engine_ = nullptr;

TEST_F(TinyEngineTest, StreamsUpToMaxNewTokens) {
  ASSERT_NE(engine_, nullptr);
  Result r = Generate(engine_, Greedy("The river runs", 20));
  EXPECT_EQ(r.ids.size(), 20u);
  EXPECT_EQ(r.last.finish_reason, FinishReason::kLength);
  EXPECT_EQ(r.last.completion_tokens, 20);
  EXPECT_FALSE(r.text.empty());
  // Greedy is deterministic.
  Result again = Generate(engine_, Greedy("The river runs", 20));
  EXPECT_EQ(again.ids, r.ids);
  EXPECT_EQ(again.text, r.text);
}

TEST_F(TinyEngineTest, PaddedVocabularyIdsAreNeverSampled) {
  ASSERT_NE(engine_, nullptr);
  const ModelInfo& info = engine_->model_info();
  ASSERT_GT(info.vocab_size, info.tokenizer_vocab_size) << "the tiny random model is padded";
  GenerationRequest r = Greedy("Numbers: 1 2 3", 64);
  r.sampling.temperature = 50.0f;  // nearly uniform over the embedding rows
  r.sampling.seed = 7;
  r.ignore_eos = true;
  Result out = Generate(engine_, r);
  ASSERT_EQ(out.ids.size(), 64u);
  for (int id : out.ids) EXPECT_LT(id, info.tokenizer_vocab_size);
}

TEST_F(TinyEngineTest, SameSeedSameTokensAndTheSeedIsReported) {
  ASSERT_NE(engine_, nullptr);
  GenerationRequest r = Greedy("Weather today", 24);
  r.sampling.temperature = 1.0f;
  r.sampling.top_p = 0.9f;
  r.sampling.seed = 1234;
  Result a = Generate(engine_, r);
  Result b = Generate(engine_, r);
  EXPECT_EQ(a.ids, b.ids);
  EXPECT_EQ(a.last.seed, 1234u);
  r.sampling.seed.reset();
  Result c = Generate(engine_, r);
  r.sampling.seed = c.last.seed;  // the server's seed reproduces the run
  Result d = Generate(engine_, r);
  EXPECT_EQ(c.ids, d.ids);
}

TEST_F(TinyEngineTest, StopStringNeverReachesTheOutput) {
  ASSERT_NE(engine_, nullptr);
  Result full = Generate(engine_, Greedy("The cook said", 40));
  ASSERT_GE(full.text.size(), 8u);
  // A stop string that starts in the middle of the output and spans tokens.
  const size_t at = full.text.size() / 2;
  std::string stop = full.text.substr(at, 3);
  GenerationRequest r = Greedy("The cook said", 40);
  r.stop = {stop};
  Result out = Generate(engine_, r);
  EXPECT_EQ(out.last.finish_reason, FinishReason::kStop);
  EXPECT_EQ(out.text, full.text.substr(0, full.text.find(stop)));
  EXPECT_EQ(out.text.find(stop), std::string::npos);
}

TEST_F(TinyEngineTest, StopTokenIdEndsWithoutItsText) {
  ASSERT_NE(engine_, nullptr);
  Result full = Generate(engine_, Greedy("Machines hum", 12));
  ASSERT_EQ(full.ids.size(), 12u);
  GenerationRequest r = Greedy("Machines hum", 12);
  r.stop_token_ids = {full.ids[5]};
  Result out = Generate(engine_, r);
  const size_t first = std::find(full.ids.begin(), full.ids.end(), full.ids[5]) - full.ids.begin();
  EXPECT_EQ(out.last.finish_reason, FinishReason::kStop);
  EXPECT_EQ(out.last.completion_tokens, static_cast<int>(first) + 1);
  EXPECT_EQ(out.ids, std::vector<int>(full.ids.begin(), full.ids.begin() + first + 1));
}

TEST_F(TinyEngineTest, DefaultMaxNewTokensIsClampedToTheContext) {
  ASSERT_NE(engine_, nullptr);
  const int context = engine_->model_info().context_length;
  GenerationRequest r;
  r.prompt_token_ids.assign(context - 5, 5);
  r.ignore_eos = true;
  Result out = Generate(engine_, r);
  EXPECT_EQ(out.last.finish_reason, FinishReason::kLength);
  EXPECT_EQ(out.last.completion_tokens, 5);
}

TEST_F(TinyEngineTest, InvalidRequestsNameTheField) {
  ASSERT_NE(engine_, nullptr);
  const int context = engine_->model_info().context_length;
  struct Case {
    std::function<void(GenerationRequest*)> mutate;
    std::string message;
  };
  std::vector<Case> cases = {
      {[](GenerationRequest* r) { r->prompt.clear(); }, "one of prompt and prompt_token_ids"},
      {[](GenerationRequest* r) { r->prompt_token_ids = {1, 2}; }, "not both"},
      {[](GenerationRequest* r) { r->prompt.clear(); r->prompt_token_ids = {1, 99999}; },
       "prompt_token_ids[1] = 99999 is outside the vocabulary"},
      {[](GenerationRequest* r) { r->prompt.clear(); r->prompt_token_ids = {-1}; },
       "prompt_token_ids[0] = -1"},
      {[](GenerationRequest* r) { r->sampling.temperature = -1; }, "temperature"},
      {[](GenerationRequest* r) { r->sampling.top_p = 0; }, "top_p"},
      {[](GenerationRequest* r) { r->sampling.top_p = 1.5; }, "top_p"},
      {[](GenerationRequest* r) { r->sampling.min_p = 1; }, "min_p"},
      {[](GenerationRequest* r) { r->sampling.top_k = -3; }, "top_k"},
      {[](GenerationRequest* r) { r->sampling.repetition_penalty = 0; }, "repetition_penalty"},
      {[](GenerationRequest* r) { r->sampling.presence_penalty = 3; }, "presence_penalty"},
      {[](GenerationRequest* r) { r->sampling.frequency_penalty = -2.5; }, "frequency_penalty"},
      {[](GenerationRequest* r) { r->top_logprobs = 21; }, "top_logprobs"},
      {[](GenerationRequest* r) { r->stop = {""}; }, "stop[0] is empty"},
      {[](GenerationRequest* r) { r->stop.assign(17, "x"); }, "stop has 17 strings; at most 16"},
      {[](GenerationRequest* r) { r->stop = {std::string(300, 'x')}; }, "stop[0] is 300 bytes; at most 256"},
      {[](GenerationRequest* r) { r->stop_token_ids = {1 << 20}; }, "stop_token_ids[0]"},
      {[](GenerationRequest* r) { r->max_new_tokens = -1; }, "max_new_tokens"},
      {[](GenerationRequest* r) { r->max_new_tokens = 5000; }, "above the server's limit"},
      {[context](GenerationRequest* r) { r->max_new_tokens = context; },
       "exceeds the model's context"},
      {[context](GenerationRequest* r) { r->prompt.clear(); r->prompt_token_ids.assign(context, 5); },
       "leave no room in the model's context"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    GenerationRequest r = Greedy("hello", 4);
    cases[i].mutate(&r);
    auto id = engine_->Submit(r, [](TokenEvent&&) {});
    ASSERT_FALSE(id.ok()) << "case " << i;
    EXPECT_EQ(id.status().code(), absl::StatusCode::kInvalidArgument) << "case " << i;
    EXPECT_THAT(std::string(id.status().message()), HasSubstr(cases[i].message)) << "case " << i;
    // The field travels as a payload (engine/request_validation.h), and the
    // message starts with it.
    const std::string field = FieldOf(id.status());
    EXPECT_FALSE(field.empty()) << "case " << i;
    EXPECT_EQ(std::string(id.status().message()).rfind(field, 0), 0u) << "case " << i;
  }
}

TEST(EngineControlTest, FullQueueIsResourceExhaustedAndCancelFreesTheSequence) {
  EngineOptions options;
  options.max_queue = 2;
  options.max_batch = 1;
  options.start_paused = true;
  auto engine = MakeEngine(STREAMGEN_TINY_MODEL_DIR, options);
  ASSERT_NE(engine, nullptr);
  Collector a, b;
  auto ida = engine->Submit(Greedy("one", 50), a.Sink());
  auto idb = engine->Submit(Greedy("two", 50), b.Sink());
  ASSERT_TRUE(ida.ok() && idb.ok());
  auto full = engine->Submit(Greedy("three", 50), [](TokenEvent&&) {});
  ASSERT_FALSE(full.ok());
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(full.status().message()), HasSubstr("queue is full"));
  EXPECT_EQ(engine->stats().waiting, 2);

  engine->Step(3);  // admits `a` (batch of one) and decodes a little
  while (engine->stats().steps < 3) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(engine->stats().running, 1);
  EXPECT_EQ(engine->stats().waiting, 1);
  engine->Cancel(*ida);
  engine->Cancel(*idb);
  engine->Step(1);
  TokenEvent la = a.Wait();
  TokenEvent lb = b.Wait();
  EXPECT_EQ(la.finish_reason, FinishReason::kCancelled);
  EXPECT_EQ(lb.finish_reason, FinishReason::kCancelled);
  EXPECT_GT(la.completion_tokens, 0);
  EXPECT_EQ(lb.completion_tokens, 0);
  while (engine->stats().steps < 4) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(engine->stats().running, 0);
  EXPECT_EQ(engine->stats().waiting, 0);
  EXPECT_EQ(engine->stats().cancelled, 2);
  engine->Resume();
  Result next = Generate(engine.get(), Greedy("after", 5));  // the engine goes on
  EXPECT_EQ(next.last.finish_reason, FinishReason::kLength);
}

TEST(EngineControlTest, ShutdownCancelsWhatIsLeftAndRefusesNewWork) {
  EngineOptions options;
  options.start_paused = true;
  auto engine = MakeEngine(STREAMGEN_TINY_MODEL_DIR, options);
  ASSERT_NE(engine, nullptr);
  Collector a;
  ASSERT_TRUE(engine->Submit(Greedy("one", 50), a.Sink()).ok());
  engine->Shutdown();
  EXPECT_EQ(a.Wait().finish_reason, FinishReason::kCancelled);
  auto late = engine->Submit(Greedy("late", 5), [](TokenEvent&&) {});
  EXPECT_EQ(late.status().code(), absl::StatusCode::kUnavailable);
}

// ---- model directories that are wrong ----

class BadModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) /
           ("bad_model_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    fs::copy(STREAMGEN_TINY_MODEL_DIR, dir_, fs::copy_options::recursive);
  }
  absl::Status Load(EngineOptions options = {}) {
    options.model_dir = dir_.string();
    return Engine::Create(options).status();
  }
  fs::path dir_;
};

TEST_F(BadModelTest, MissingTokenizerIsNamed) {
  fs::remove(dir_ / "tokenizer.model");
  absl::Status s = Load();
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), HasSubstr("tokenizer.model"));
}

TEST_F(BadModelTest, TokenizerLargerThanTheEmbeddingIsRefused) {
  // The tiny random model has 1024 embedding rows; a 1500-piece tokenizer does not fit.
  absl::Status trained = TrainTokenizer(std::string(STREAMGEN_SOURCE_DIR) + "/tools/data/corpus.txt",
                                        (dir_ / "tokenizer.model").string(), 1500);
  ASSERT_TRUE(trained.ok()) << trained;
  absl::Status s = Load();
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), HasSubstr("tokenizer.model: the tokenizer has 1500 pieces"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("vocab_size"));
}

TEST_F(BadModelTest, MissingConfigIsNamed) {
  fs::remove(dir_ / "config.json");
  absl::Status s = Load();
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), HasSubstr("config.json"));
}

TEST_F(BadModelTest, TruncatedWeightsAreNamed) {
  fs::resize_file(dir_ / "model.safetensors", fs::file_size(dir_ / "model.safetensors") / 2);
  absl::Status s = Load();
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), HasSubstr("model.safetensors"));
}

TEST_F(BadModelTest, DeviceAndDtypeErrors) {
  EngineOptions options;
  options.dtype = "float16";
  EXPECT_THAT(std::string(Load(options).message()), HasSubstr("float16 is not supported on CPU"));
  options.dtype = "int8";
  EXPECT_THAT(std::string(Load(options).message()), HasSubstr("'int8' is not float32"));
  options.dtype = "";
  options.device = "tpu";
  EXPECT_THAT(std::string(Load(options).message()), HasSubstr("'tpu' is not cpu, cuda"));
#if !defined(STREAMGEN_CUDA)
  options.device = "cuda:0";
  EXPECT_THAT(std::string(Load(options).message()), HasSubstr("CUDA is not available"));
#endif
}

TEST_F(BadModelTest, GpuMemoryFractionIsForCudaAndInRange) {
  EngineOptions options;
  options.gpu_memory_fraction = 0.9;
  EXPECT_THAT(std::string(Load(options).message()),
              HasSubstr("gpu_memory_fraction applies to a CUDA device, not cpu"));
  for (double bad : {-0.5, 1.01, std::nan("")}) {
    options.gpu_memory_fraction = bad;
    EXPECT_THAT(std::string(Load(options).message()),
                HasSubstr("gpu_memory_fraction must be in (0, 1]"))
        << bad;
  }
}

// ---- EOS: a model whose EOS is the token greedy decoding picks ----

TEST(EosTest, EosEndsTheStreamUnlessIgnored) {
  fs::path dir = fs::path(::testing::TempDir()) / "eos_model";
  fs::remove_all(dir);
  fs::copy(STREAMGEN_TINY_MODEL_DIR, dir, fs::copy_options::recursive);
  int eos = -1;
  {
    auto engine = MakeEngine(dir.string());
    ASSERT_NE(engine, nullptr);
    eos = Generate(engine.get(), Greedy("The", 3)).ids.at(2);
  }
  std::ofstream(dir / "generation_config.json") << "{\"eos_token_id\": [" << eos << "]}";
  auto engine = MakeEngine(dir.string());
  ASSERT_NE(engine, nullptr);
  Result r = Generate(engine.get(), Greedy("The", 10));
  EXPECT_EQ(r.last.finish_reason, FinishReason::kEos);
  EXPECT_EQ(r.ids.back(), eos);
  GenerationRequest keep = Greedy("The", 10);
  keep.ignore_eos = true;
  EXPECT_EQ(Generate(engine.get(), keep).last.finish_reason, FinishReason::kLength);
}

// ---- generation_config.json sampling defaults for unset fields ----

// A copy of the tiny model whose generation_config.json says `generation`.
fs::path ModelWithGenerationConfig(const std::string& name, const std::string& generation) {
  fs::path dir = fs::path(::testing::TempDir()) / name;
  fs::remove_all(dir);
  fs::copy(STREAMGEN_TINY_MODEL_DIR, dir, fs::copy_options::recursive);
  std::ofstream(dir / "generation_config.json") << generation;
  return dir;
}

GenerationRequest Unset(const std::string& prompt, int max_new_tokens, uint64_t seed) {
  GenerationRequest r = Greedy(prompt, max_new_tokens);
  r.sampling.seed = seed;
  r.unset = {true, true, true, true, true};
  return r;
}

TEST(GenerationDefaultsTest, UnsetFieldsTakeTheModelsDefaultsExplicitOnesWin) {
  const fs::path dir = ModelWithGenerationConfig(
      "gen_defaults_model",
      R"({"do_sample": true, "temperature": 1.5, "top_k": 0, "max_new_tokens": 7})");
  auto engine = MakeEngine(dir.string());
  ASSERT_NE(engine, nullptr);
  EXPECT_EQ(engine->model_info().default_max_new_tokens, 7);
  ASSERT_TRUE(engine->model_info().generation_defaults.temperature.has_value());
  // Unset max_new_tokens (0) takes the file's 7.
  Result unset = Generate(engine.get(), Unset("The", 0, 11));
  EXPECT_EQ(unset.ids.size(), 7u);
  // The same request with temperature 1.5 and top_k 0 written out: the same tokens.
  GenerationRequest explicit_same = Greedy("The", 7);
  explicit_same.sampling.seed = 11;
  explicit_same.sampling.temperature = 1.5f;
  EXPECT_EQ(Generate(engine.get(), explicit_same).ids, unset.ids);
  // Explicit greedy (temperature 0 set) wins over do_sample: the greedy tokens.
  GenerationRequest greedy = Greedy("The", 7);
  greedy.sampling.seed = 11;
  std::vector<int> greedy_ids = Generate(engine.get(), greedy).ids;
  EXPECT_NE(greedy_ids, unset.ids) << "temperature 1.5 sampled exactly the greedy tokens";

  // --generation-config none: the neutral values (greedy) and the option's default.
  EngineOptions none;
  none.use_generation_config = false;
  none.default_max_new_tokens = 5;
  auto plain = MakeEngine(dir.string(), none);
  ASSERT_NE(plain, nullptr);
  EXPECT_FALSE(plain->model_info().generation_defaults.temperature.has_value());
  Result neutral = Generate(plain.get(), Unset("The", 0, 11));
  EXPECT_EQ(neutral.ids, std::vector<int>(greedy_ids.begin(), greedy_ids.begin() + 5));
}

TEST(GenerationDefaultsTest, DoSampleFalseOrAbsentIsGreedyWhateverTheTemperature) {
  auto greedy_engine = MakeEngine(STREAMGEN_TINY_MODEL_DIR);
  ASSERT_NE(greedy_engine, nullptr);
  const std::vector<int> greedy = Generate(greedy_engine.get(), Greedy("The", 6)).ids;
  for (const char* generation : {R"({"temperature": 3.0})", R"({"do_sample": false, "temperature": 3.0})"}) {
    SCOPED_TRACE(generation);
    auto engine = MakeEngine(ModelWithGenerationConfig("gen_greedy_model", generation).string());
    ASSERT_NE(engine, nullptr);
    EXPECT_EQ(Generate(engine.get(), Unset("The", 6, 3)).ids, greedy);
  }
}

TEST(GenerationDefaultsTest, BadGenerationConfigValuesAreRefusedByName) {
  const std::pair<const char*, const char*> cases[] = {
      {R"({"temperature": -1})", R"(field "temperature" must be in [0, 100], got -1)"},
      {R"({"top_p": 0})", R"(field "top_p" must be in (0, 1], got 0)"},
      {R"({"top_k": -3})", R"(field "top_k" must be an integer in [0, 2^30])"},
      {R"({"max_new_tokens": 0})", R"(field "max_new_tokens" must be an integer in [1, 2^30])"},
      {R"({"do_sample": "yes"})", R"(field "do_sample" must be true or false)"},
      {R"({"repetition_penalty": "high"})", R"(field "repetition_penalty" must be a number)"},
  };
  for (const auto& [generation, message] : cases) {
    SCOPED_TRACE(generation);
    const fs::path dir = ModelWithGenerationConfig("gen_bad_model", generation);
    EngineOptions options;
    options.model_dir = dir.string();
    auto engine = Engine::Create(options);
    ASSERT_FALSE(engine.ok());
    EXPECT_EQ(engine.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(engine.status().message()),
                AllOf(HasSubstr("generation_config.json"), HasSubstr(message)));
  }
  // null is absent, as in transformers.
  auto engine = MakeEngine(ModelWithGenerationConfig("gen_null_model", R"({"temperature": null})").string());
  EXPECT_NE(engine, nullptr);
}

// ---- stats: generated tokens count as they are produced ----

TEST(EngineStatsTest, GeneratedTokensCountBeforeTheRequestEnds) {
  EngineOptions options;
  options.start_paused = true;
  auto engine = MakeEngine(STREAMGEN_TINY_MODEL_DIR, options);
  ASSERT_NE(engine, nullptr);
  Collector c;
  ASSERT_TRUE(engine->Submit(Greedy("Once upon a time", 40), c.Sink()).ok());
  engine->Step(4);  // a prefill that samples the first token, then three decode steps
  while (engine->stats().steps < 4) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const EngineStats mid = engine->stats();
  EXPECT_EQ(mid.finished, 0);
  EXPECT_GE(mid.generated_tokens, 3);
  EXPECT_LT(mid.generated_tokens, 40);
  EXPECT_GT(mid.prompt_tokens, 0);
  engine->Resume();
  TokenEvent last = c.Wait();
  EXPECT_EQ(engine->stats().generated_tokens, last.completion_tokens);
}

// ---- streamgen-generate --json contract ----

std::string RunCommand(const std::string& cmd, int* status) {
  std::string out;
  FILE* pipe = popen(cmd.c_str(), "r");
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) out.append(buf, n);
  *status = pclose(pipe);
  return out;
}

TEST(GenerateCliTest, JsonContract) {
  const std::string bin = std::string(STREAMGEN_BINARY_DIR) + "/tools/streamgen-generate";
  int status = 0;
  std::string out = RunCommand(
      bin + " --model " STREAMGEN_TINY_MODEL_DIR
            " --prompt 'Once upon a time' --max-new-tokens 12 --json 2>/dev/null",
      &status);
  ASSERT_EQ(status, 0) << out;
  auto j = nlohmann::json::parse(out);
  for (const char* key : {"prompt_token_ids", "token_ids", "text", "finish_reason", "prefill_ms",
                          "decode_tokens_per_s", "seed"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_EQ(j["token_ids"].size(), 12u);
  EXPECT_EQ(j["finish_reason"], "length");
  EXPECT_EQ(j["prompt_token_ids"][0], 1);  // BOS
}

TEST(GenerateCliTest, GoldenThroughTheCli) {
  if (!fs::exists(kFixtureDir)) GTEST_SKIP() << kFixtureDir << " is absent (not a dev machine)";
  const std::string bin = std::string(STREAMGEN_BINARY_DIR) + "/tools/streamgen-generate";
  const auto entry = LoadGolden()[2];  // the one with the U+FFFD byte token
  int status = 0;
  std::string out = RunCommand(bin + " --model " + kFixtureDir + " --prompt '" +
                                   entry["prompt"].get<std::string>() + "' --max-new-tokens " +
                                   std::to_string(entry["max_new_tokens"].get<int>()) +
                                   " --dtype float32 --json",
                               &status);
  ASSERT_EQ(status, 0) << out;
  auto j = nlohmann::json::parse(out);
  EXPECT_EQ(j["token_ids"], entry["generated_token_ids"]);
  EXPECT_EQ(j["text"], entry["generated_text"]);
  EXPECT_EQ(j["prompt_token_ids"], entry["prompt_token_ids"]);
}

TEST(GenerateCliTest, ErrorsGoToStderrWithNonZeroExit) {
  const std::string bin = std::string(STREAMGEN_BINARY_DIR) + "/tools/streamgen-generate";
  int status = 0;
  std::string out = RunCommand(bin + " --prompt hi --top-p 2 2>&1", &status);
  EXPECT_NE(status, 0);
  EXPECT_THAT(out, HasSubstr("top_p must be in (0, 1], got 2"));
  out = RunCommand(bin + " --model /nonexistent --prompt hi 2>&1", &status);
  EXPECT_NE(status, 0);
  EXPECT_THAT(out, HasSubstr("/nonexistent"));
  out = RunCommand(bin + " --prompt hi --seed abc 2>&1", &status);
  EXPECT_NE(status, 0);
  EXPECT_THAT(out, HasSubstr("--seed: 'abc'"));
  out = RunCommand(bin + " --prompt hi --stop-token-ids 2,x 2>&1", &status);
  EXPECT_NE(status, 0);
  EXPECT_THAT(out, HasSubstr("--stop-token-ids: 'x' is not an integer"));
  out = RunCommand(bin + " 2>&1", &status);
  EXPECT_NE(status, 0);
  EXPECT_THAT(out, HasSubstr("--prompt"));
}

}  // namespace
}  // namespace streamgen
