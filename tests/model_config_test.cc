// Tests of the Hugging Face config loader, the weight-set validation, and the
// tiny-model writer that produces models in that layout.
#include "engine/model/model_config.h"

#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tools/tiny_model.h"

namespace streamgen {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using json = nlohmann::json;

std::string MakeTestDir() {
  const testing::TestInfo* info = testing::UnitTest::GetInstance()->current_test_info();
  static int counter = 0;
  std::string dir = testing::TempDir() + "/model_config_test_" + std::to_string(getpid()) + "_" +
                    info->test_suite_name() + "_" + info->name() + "_" + std::to_string(++counter);
  mkdir(dir.c_str(), 0755);
  return dir;
}

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// A small valid Llama config.json.
json BaseConfig() {
  return {{"architectures", {"LlamaForCausalLM"}},
          {"model_type", "llama"},
          {"hidden_size", 32},
          {"intermediate_size", 48},
          {"num_hidden_layers", 2},
          {"num_attention_heads", 4},
          {"num_key_value_heads", 2},
          {"vocab_size", 100},
          {"max_position_embeddings", 64},
          {"hidden_act", "silu"},
          {"bos_token_id", 1},
          {"eos_token_id", 2}};
}

// Writes `config` as config.json into a fresh directory and returns it.
std::string DirWithConfig(const json& config) {
  const std::string dir = MakeTestDir();
  WriteText(dir + "/config.json", config.dump());
  return dir;
}

std::string ConfigError(const json& config) {
  auto loaded = LoadModelConfig(DirWithConfig(config));
  EXPECT_FALSE(loaded.ok()) << config.dump();
  return loaded.ok() ? "" : std::string(loaded.status().message());
}

TEST(ModelConfigTest, ParsesBaseConfigWithDefaults) {
  auto config = LoadModelConfig(DirWithConfig(BaseConfig()));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->architecture, "LlamaForCausalLM");
  EXPECT_EQ(config->hidden_size, 32);
  EXPECT_EQ(config->intermediate_size, 48);
  EXPECT_EQ(config->num_hidden_layers, 2);
  EXPECT_EQ(config->num_attention_heads, 4);
  EXPECT_EQ(config->num_key_value_heads, 2);
  EXPECT_EQ(config->head_dim, 8);  // hidden / heads
  EXPECT_EQ(config->vocab_size, 100);
  EXPECT_EQ(config->max_position_embeddings, 64);
  EXPECT_DOUBLE_EQ(config->rms_norm_eps, 1e-6);
  EXPECT_DOUBLE_EQ(config->rope.theta, 10000.0);
  EXPECT_FALSE(config->tie_word_embeddings);
  EXPECT_FALSE(config->sliding_window.has_value());
  EXPECT_EQ(config->bos_token_id, 1);
  EXPECT_THAT(config->eos_token_ids, ElementsAre(2));
  EXPECT_TRUE(config->add_bos);
  EXPECT_FALSE(config->add_eos);
  EXPECT_EQ(config->chat_template, "");
}

TEST(ModelConfigTest, OptionalFields) {
  json c = BaseConfig();
  c.erase("num_key_value_heads");
  c["head_dim"] = 16;  // differs from hidden / heads
  c["rms_norm_eps"] = 1e-5;
  c["rope_theta"] = 500000.0;
  c["tie_word_embeddings"] = true;
  c["torch_dtype"] = "bfloat16";
  c["eos_token_id"] = {2, 7};
  c["rope_scaling"] = nullptr;  // null is plain RoPE
  auto config = LoadModelConfig(DirWithConfig(c));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->num_key_value_heads, 4);
  EXPECT_EQ(config->head_dim, 16);
  EXPECT_EQ(config->q_size(), 64);
  EXPECT_EQ(config->kv_size(), 64);
  EXPECT_DOUBLE_EQ(config->rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(config->rope.theta, 500000.0);
  EXPECT_TRUE(config->tie_word_embeddings);
  EXPECT_EQ(config->torch_dtype, "bfloat16");
  EXPECT_THAT(config->eos_token_ids, ElementsAre(2, 7));
}

TEST(ModelConfigTest, GenerationConfigExtendsEos) {
  const std::string dir = DirWithConfig(BaseConfig());
  WriteText(dir + "/generation_config.json", R"({"bos_token_id": 1, "eos_token_id": [2, 9]})");
  auto config = LoadModelConfig(dir);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_THAT(config->eos_token_ids, ElementsAre(2, 9));

  json c = BaseConfig();
  c.erase("eos_token_id");
  const std::string dir2 = DirWithConfig(c);
  WriteText(dir2 + "/generation_config.json", R"({"eos_token_id": 5})");
  config = LoadModelConfig(dir2);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_THAT(config->eos_token_ids, ElementsAre(5));
}

TEST(ModelConfigTest, EosDefaultsToTwo) {
  json c = BaseConfig();
  c.erase("eos_token_id");
  auto config = LoadModelConfig(DirWithConfig(c));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_THAT(config->eos_token_ids, ElementsAre(2));
}

TEST(ModelConfigTest, MistralSlidingWindow) {
  json c = BaseConfig();
  c["architectures"] = {"MistralForCausalLM"};
  c["sliding_window"] = 16;
  auto config = LoadModelConfig(DirWithConfig(c));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->architecture, "MistralForCausalLM");
  ASSERT_TRUE(config->sliding_window.has_value());
  EXPECT_EQ(*config->sliding_window, 16);

  c["sliding_window"] = nullptr;
  config = LoadModelConfig(DirWithConfig(c));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_FALSE(config->sliding_window.has_value());
}

TEST(ModelConfigTest, TokenizerConfig) {
  const std::string dir = DirWithConfig(BaseConfig());
  WriteText(dir + "/tokenizer_config.json",
            R"({"add_bos_token": false, "add_eos_token": true, "chat_template": "{{ x }}"})");
  auto config = LoadModelConfig(dir);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_FALSE(config->add_bos);
  EXPECT_TRUE(config->add_eos);
  EXPECT_EQ(config->chat_template, "{{ x }}");

  WriteText(dir + "/tokenizer_config.json",
            R"({"chat_template": [{"name": "tool_use", "template": "T"},
                                  {"name": "default", "template": "D"}]})");
  config = LoadModelConfig(dir);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(config->add_bos);
  EXPECT_EQ(config->chat_template, "D");
}

TEST(ModelConfigTest, MissingConfigJson) {
  const std::string dir = MakeTestDir();
  auto config = LoadModelConfig(dir);
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(config.status().message()), HasSubstr(dir + "/config.json"));
}

TEST(ModelConfigTest, InvalidJson) {
  const std::string dir = MakeTestDir();
  WriteText(dir + "/config.json", R"({"hidden_size": 32,)");
  auto config = LoadModelConfig(dir);
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(std::string(config.status().message()),
              AllOf(HasSubstr(dir + "/config.json"), HasSubstr("invalid JSON")));
}

TEST(ModelConfigTest, InvalidOptionalFilesAreNamed) {
  const std::string dir = DirWithConfig(BaseConfig());
  WriteText(dir + "/generation_config.json", "{oops");
  auto config = LoadModelConfig(dir);
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(std::string(config.status().message()), HasSubstr("generation_config.json"));

  const std::string dir2 = DirWithConfig(BaseConfig());
  WriteText(dir2 + "/tokenizer_config.json", R"({"add_bos_token": "yes"})");
  config = LoadModelConfig(dir2);
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(std::string(config.status().message()),
              AllOf(HasSubstr("tokenizer_config.json"), HasSubstr("add_bos_token")));
}

TEST(ModelConfigTest, MissingOrWrongTypedField) {
  json c = BaseConfig();
  c.erase("hidden_size");
  EXPECT_THAT(ConfigError(c), AllOf(HasSubstr("config.json"), HasSubstr("\"hidden_size\""),
                                    HasSubstr("missing")));
  c = BaseConfig();
  c["num_hidden_layers"] = "2";
  EXPECT_THAT(ConfigError(c), AllOf(HasSubstr("\"num_hidden_layers\""), HasSubstr("integer")));
  c = BaseConfig();
  c["vocab_size"] = 0;
  EXPECT_THAT(ConfigError(c), AllOf(HasSubstr("\"vocab_size\""), HasSubstr("positive")));
  c = BaseConfig();
  c["eos_token_id"] = "two";
  EXPECT_THAT(ConfigError(c), HasSubstr("\"eos_token_id\""));
  c = BaseConfig();
  c.erase("architectures");
  EXPECT_THAT(ConfigError(c), HasSubstr("\"architectures\""));
}

TEST(ModelConfigTest, UnsupportedArchitectureIsNamed) {
  json c = BaseConfig();
  c["architectures"] = {"GPT2LMHeadModel"};
  EXPECT_THAT(ConfigError(c), AllOf(HasSubstr("'GPT2LMHeadModel'"), HasSubstr("LlamaForCausalLM"),
                                    HasSubstr("MistralForCausalLM")));
}

// The loader reads RoPE through ReadRopeConfig (tests/rope_config_test.cc
// covers its keys and refusals).
TEST(ModelConfigTest, RopeScalingReadOrRefused) {
  json c = BaseConfig();
  c["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  auto config = LoadModelConfig(DirWithConfig(c));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->rope.type, RopeType::kLinear);
  EXPECT_DOUBLE_EQ(config->rope.factor, 2.0);
  c["rope_scaling"] = {{"rope_type", "dynamic"}, {"factor", 2.0}};
  const std::string dir = DirWithConfig(c);
  auto refused = LoadModelConfig(dir);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().message(),
            dir + "/config.json: field \"rope_scaling\" has rope_type \"dynamic\", which is not "
                  "supported (supported: default, linear, llama3, yarn, longrope)");
}

TEST(ModelConfigTest, OtherUnsupportedSettings) {
  json c = BaseConfig();
  c["hidden_act"] = "gelu";
  EXPECT_THAT(ConfigError(c), AllOf(HasSubstr("hidden_act"), HasSubstr("gelu")));
  c = BaseConfig();
  c["quantization_config"] = {{"quant_method", "awq"}, {"bits", 4}};
  EXPECT_THAT(ConfigError(c), AllOf(HasSubstr("\"quantization_config\""),
                                    HasSubstr("quantization method 'awq'")));
}

TEST(ModelConfigTest, HeadsNotDivisible) {
  json c = BaseConfig();
  c["num_key_value_heads"] = 3;
  EXPECT_THAT(ConfigError(c), AllOf(HasSubstr("num_attention_heads 4"),
                                    HasSubstr("not divisible by num_key_value_heads 3")));
  c = BaseConfig();
  c["num_attention_heads"] = 6;
  c["num_key_value_heads"] = 6;
  EXPECT_THAT(ConfigError(c), AllOf(HasSubstr("hidden_size 32"),
                                    HasSubstr("not divisible by num_attention_heads 6")));
  c["head_dim"] = 8;  // an explicit head_dim lifts the divisibility rule
  EXPECT_TRUE(LoadModelConfig(DirWithConfig(c)).ok());
}

// Found by tests/fuzz/model_config_fuzz.cc: each field is at most 2^30, but
// their product q_size() = heads * head_dim overflowed an int.
TEST(ModelConfigTest, QueryRowsBounded) {
  json c = BaseConfig();
  c["num_attention_heads"] = 1 << 30;
  c["num_key_value_heads"] = 1;
  c["head_dim"] = 1 << 30;
  EXPECT_THAT(ConfigError(c), AllOf(HasSubstr("config.json"),
                                    HasSubstr("num_attention_heads 1073741824 * head_dim "
                                              "1073741824 = 1152921504606846976 exceeds 2^30")));
  c["num_attention_heads"] = 1 << 15;
  c["head_dim"] = 1 << 15;  // exactly 2^30
  EXPECT_TRUE(LoadModelConfig(DirWithConfig(c)).ok());
}

// Found by tests/fuzz/model_config_fuzz.cc: copies and dump() of a deeply
// nested value overflowed the stack (here while printing rope_scaling).
TEST(ModelConfigTest, DeeplyNestedJsonRefused) {
  const int depth = 200000;
  std::string text = BaseConfig().dump();
  text.pop_back();  // the closing brace
  text += ", \"rope_scaling\": " + std::string(depth, '[') + std::string(depth, ']') + "}";
  const std::string dir = MakeTestDir();
  WriteText(dir + "/config.json", text);
  auto config = LoadModelConfig(dir);
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(std::string(config.status().message()),
              AllOf(HasSubstr(dir + "/config.json"), HasSubstr("JSON nested deeper than 64 levels")));
  // The other files are read the same way.
  const std::string dir2 = DirWithConfig(BaseConfig());
  WriteText(dir2 + "/generation_config.json",
            "{\"eos_token_id\": " + std::string(depth, '[') + std::string(depth, ']') + "}");
  config = LoadModelConfig(dir2);
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(std::string(config.status().message()),
              AllOf(HasSubstr("generation_config.json"), HasSubstr("nested deeper than 64")));
}

// ---- ValidateWeights ----

ModelConfig SmallConfig(bool tied) {
  json c = BaseConfig();
  c["tie_word_embeddings"] = tied;
  auto config = ParseModelConfig(c.dump(), "test config");
  EXPECT_TRUE(config.ok()) << config.status();
  return *config;
}

// Writes the given tensors (zero-filled) as dir/model.safetensors.
void WriteWeights(const std::string& dir, const std::vector<ExpectedTensor>& tensors) {
  std::vector<TensorToWrite> out;
  for (const ExpectedTensor& t : tensors) {
    int64_t numel = 1;
    for (int64_t d : t.shape) numel *= d;
    out.push_back({t.name, StorageDtype::kBF16, t.shape, std::vector<float>(numel, 0.0f)});
  }
  ASSERT_TRUE(WriteSafetensors(dir + "/model.safetensors", out).ok());
}

absl::Status Validate(const ModelConfig& config, const std::vector<ExpectedTensor>& tensors,
                      std::string* dir_out = nullptr) {
  const std::string dir = MakeTestDir();
  WriteWeights(dir, tensors);
  if (dir_out != nullptr) *dir_out = dir;
  auto store = WeightStore::OpenDir(dir);
  if (!store.ok()) return store.status();
  return ValidateWeights(config, **store);
}

TEST(ValidateWeightsTest, ExpectedTensorsMatchHuggingFaceNames) {
  const std::vector<ExpectedTensor> expected = ExpectedTensors(SmallConfig(false));
  ASSERT_EQ(expected.size(), 1u + 2 * 9 + 2);
  EXPECT_EQ(expected.front().name, "model.embed_tokens.weight");
  EXPECT_THAT(expected.front().shape, ElementsAre(100, 32));
  EXPECT_EQ(expected[2].name, "model.layers.0.self_attn.k_proj.weight");
  EXPECT_THAT(expected[2].shape, ElementsAre(16, 32));  // kv_heads 2 * head_dim 8
  EXPECT_EQ(expected.back().name, "lm_head.weight");
  EXPECT_EQ(ExpectedTensors(SmallConfig(true)).size(), expected.size() - 1);
}

TEST(ValidateWeightsTest, AcceptsExactSet) {
  const ModelConfig config = SmallConfig(false);
  EXPECT_TRUE(Validate(config, ExpectedTensors(config)).ok());
  const ModelConfig tied = SmallConfig(true);
  EXPECT_TRUE(Validate(tied, ExpectedTensors(tied)).ok());
  // A tied checkpoint that still carries lm_head.weight is accepted.
  EXPECT_TRUE(Validate(tied, ExpectedTensors(config)).ok());
}

TEST(ValidateWeightsTest, MissingTensor) {
  const ModelConfig config = SmallConfig(false);
  std::vector<ExpectedTensor> tensors = ExpectedTensors(config);
  tensors.erase(tensors.begin() + 5);  // model.layers.0.mlp.gate_proj.weight
  std::string dir;
  absl::Status status = Validate(config, tensors, &dir);
  EXPECT_THAT(std::string(status.message()),
              AllOf(HasSubstr(dir), HasSubstr("missing tensor 'model.layers.0.mlp.gate_proj.weight'"),
                    HasSubstr("[48, 32]")));
  // An untied model needs lm_head.weight.
  status = Validate(config, ExpectedTensors(SmallConfig(true)));
  EXPECT_THAT(std::string(status.message()), HasSubstr("'lm_head.weight'"));
}

// Found by tests/fuzz/model_config_fuzz.cc: 2^30 layers made ValidateWeights
// build a list of 9.6e9 expected names before looking at the weights. It now
// stops at the first missing tensor.
TEST(ModelConfigTest, LayerCountBounded) {
  json c = BaseConfig();
  c["num_hidden_layers"] = 1025;
  EXPECT_THAT(ConfigError(c),
              HasSubstr("field \"num_hidden_layers\" must be at most 1024, got 1025"));
  // A Mistral's per-layer window table is sized from it before any weight is read.
  c["architectures"] = {"MistralForCausalLM"};
  c["num_hidden_layers"] = 1 << 30;
  EXPECT_THAT(ConfigError(c), HasSubstr("must be at most 1024, got 1073741824"));
}

TEST(ValidateWeightsTest, HugeLayerCountFailsFast) {
  json c = BaseConfig();
  c["num_hidden_layers"] = 1024;
  auto config = ParseModelConfig(c.dump(), "test config");
  ASSERT_TRUE(config.ok()) << config.status();
  const std::vector<ExpectedTensor> small = ExpectedTensors(SmallConfig(false));
  std::string dir;
  absl::Status status = Validate(*config, small, &dir);
  EXPECT_THAT(std::string(status.message()),
              AllOf(HasSubstr(dir), HasSubstr("missing tensor 'model.layers.2.self_attn.q_proj.weight'")));
}

TEST(ValidateWeightsTest, UnexpectedTensor) {
  const ModelConfig config = SmallConfig(false);
  std::vector<ExpectedTensor> tensors = ExpectedTensors(config);
  tensors.push_back({"model.layers.0.self_attn.q_proj.bias", {32}});
  std::string dir;
  absl::Status status = Validate(config, tensors, &dir);
  EXPECT_THAT(std::string(status.message()),
              AllOf(HasSubstr(dir + "/model.safetensors"),
                    HasSubstr("unexpected tensor 'model.layers.0.self_attn.q_proj.bias'")));

  tensors = ExpectedTensors(config);
  tensors.push_back({"model.layers.2.input_layernorm.weight", {32}});  // only 2 layers
  status = Validate(config, tensors);
  EXPECT_THAT(std::string(status.message()),
              AllOf(HasSubstr("'model.layers.2.input_layernorm.weight'"), HasSubstr("2 layers")));
}

TEST(ValidateWeightsTest, WrongShape) {
  const ModelConfig config = SmallConfig(false);
  std::vector<ExpectedTensor> tensors = ExpectedTensors(config);
  for (ExpectedTensor& t : tensors) {
    if (t.name == "model.layers.1.self_attn.v_proj.weight") t.shape = {32, 32};
  }
  std::string dir;
  absl::Status status = Validate(config, tensors, &dir);
  EXPECT_THAT(std::string(status.message()),
              AllOf(HasSubstr(dir + "/model.safetensors"),
                    HasSubstr("'model.layers.1.self_attn.v_proj.weight'"),
                    HasSubstr("has shape [32, 32]"), HasSubstr("expected [16, 32]")));
}

TEST(ValidateWeightsTest, SharedFixtureIsValid) {
  const std::string dir = std::string(STREAMGEN_SOURCE_DIR) + "/../shared/fixtures/tiny-llama";
  if (access((dir + "/config.json").c_str(), R_OK) != 0) {
    GTEST_SKIP() << dir << " is absent (shared fixtures are only on development machines)";
  }
  auto config = LoadModelConfig(dir);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->head_dim, 16);
  EXPECT_EQ(config->num_key_value_heads, 2);
  EXPECT_TRUE(config->add_bos);  // no tokenizer_config.json
  auto store = WeightStore::OpenDir(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_TRUE(ValidateWeights(*config, **store).ok());
}

// ---- the tiny-model writer ----

const char* CorpusPath() { return STREAMGEN_SOURCE_DIR "/tools/data/corpus.txt"; }

TEST(TinyModelTest, WritesALoadableLlamaWithPaddedVocab) {
  const std::string dir = MakeTestDir() + "/model";
  TinyModelSpec spec;
  ASSERT_TRUE(WriteTinyModel(spec, dir, "", CorpusPath()).ok());
  auto config = LoadModelConfig(dir);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->vocab_size, 1024);  // 1000 pieces rounded up to 64
  EXPECT_EQ(config->hidden_size, 64);
  EXPECT_EQ(config->num_key_value_heads, 2);
  EXPECT_TRUE(config->add_bos);
  EXPECT_FALSE(config->add_eos);
  EXPECT_THAT(config->chat_template, HasSubstr("[INST]"));
  auto store = WeightStore::OpenDir(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_TRUE(ValidateWeights(*config, **store).ok());
  EXPECT_EQ((*store)->Find("model.norm.weight")->dtype, StorageDtype::kBF16);
}

TEST(TinyModelTest, ShardedMistralIsDeterministic) {
  const std::string base = MakeTestDir();
  TinyModelSpec spec;
  spec.architecture = "MistralForCausalLM";
  spec.sliding_window = 8;
  spec.tie_word_embeddings = true;
  spec.dtype = StorageDtype::kF16;
  spec.shards = 3;
  spec.seed = 7;
  ASSERT_TRUE(WriteTinyModel(spec, base + "/a", "", CorpusPath()).ok());
  ASSERT_TRUE(WriteTinyModel(spec, base + "/b", base + "/a/tokenizer.model", "").ok());
  for (const char* file : {"model-00001-of-00003.safetensors", "model-00003-of-00003.safetensors",
                           "model.safetensors.index.json", "tokenizer.model", "config.json"}) {
    const std::string a = ReadText(base + "/a/" + file);
    EXPECT_FALSE(a.empty()) << file;
    EXPECT_EQ(a, ReadText(base + "/b/" + file)) << file;
  }
  auto config = LoadModelConfig(base + "/a");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->architecture, "MistralForCausalLM");
  EXPECT_EQ(config->sliding_window.value_or(0), 8);
  auto store = WeightStore::OpenDir(base + "/a");
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_TRUE(ValidateWeights(*config, **store).ok());
  EXPECT_EQ((*store)->Find("lm_head.weight"), nullptr);

  spec.seed = 8;  // another seed, other weights
  ASSERT_TRUE(WriteTinyModel(spec, base + "/c", base + "/a/tokenizer.model", "").ok());
  EXPECT_NE(ReadText(base + "/a/model-00001-of-00003.safetensors"),
            ReadText(base + "/c/model-00001-of-00003.safetensors"));
}

TEST(TinyModelTest, RefusesBadSpecs) {
  const std::string dir = MakeTestDir();
  TinyModelSpec spec;
  spec.num_key_value_heads = 3;
  EXPECT_THAT(std::string(WriteTinyModel(spec, dir, "", CorpusPath()).message()),
              HasSubstr("num_key_value_heads"));
  spec = TinyModelSpec();
  spec.vocab_size = 10;  // fewer rows than tokenizer pieces
  EXPECT_THAT(std::string(WriteTinyModel(spec, dir, "", CorpusPath()).message()),
              AllOf(HasSubstr("vocab_size"), HasSubstr("1000 pieces")));
  spec = TinyModelSpec();
  EXPECT_THAT(std::string(WriteTinyModel(spec, dir, dir + "/absent.model", "").message()),
              HasSubstr("absent.model"));
  EXPECT_THAT(std::string(WriteTinyModel(spec, dir, "", dir + "/absent.txt").message()),
              HasSubstr("absent.txt"));
}

}  // namespace
}  // namespace streamgen
