// Tests of ReadRopeConfig (engine/model/rope_config.h): every spelling of a
// checkpoint's RoPE settings in config.json (transformers v4 "rope_theta" +
// "rope_scaling", v5 "rope_parameters", Phi-3's and Gemma 3's variants), and
// every refusal, by its message. The keys and their meaning are those of
// transformers' modeling_rope_utils.py and the families' configuration_*.py.
#include "engine/model/rope_config.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace streamgen {
namespace {

using json = nlohmann::json;
using ::testing::ElementsAre;

constexpr char kSource[] = "m/config.json";

// A config whose sizes ReadSizes has already read (ReadRopeConfig needs
// head_dim and max_position_embeddings, and the architecture for defaults).
ModelConfig Sizes(const std::string& architecture, int head_dim, int max_position_embeddings) {
  ModelConfig c;
  c.architecture = architecture;
  c.head_dim = head_dim;
  c.max_position_embeddings = max_position_embeddings;
  return c;
}

absl::StatusOr<ModelConfig> Read(const json& obj,
                                 ModelConfig c = Sizes("LlamaForCausalLM", 128, 131072)) {
  absl::Status status = ReadRopeConfig(obj, kSource, c.architecture == "Gemma3ForCausalLM", &c);
  if (!status.ok()) return status;
  return c;
}

std::string Error(const json& obj, ModelConfig c = Sizes("LlamaForCausalLM", 128, 131072)) {
  auto read = Read(obj, c);
  EXPECT_FALSE(read.ok()) << obj.dump();
  return read.ok() ? "" : std::string(read.status().message());
}

std::vector<double> Ramp(int n, double step) {
  std::vector<double> v;
  for (int i = 0; i < n; ++i) v.push_back(1.0 + step * i);
  return v;
}

// ---- What is read ----

TEST(RopeConfigTest, AbsentOrNullIsPlainRopeWithTheFamilysTheta) {
  auto c = Read(json::object());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope.type, RopeType::kDefault);
  EXPECT_DOUBLE_EQ(c->rope.theta, 1e4);  // LlamaConfig's default
  EXPECT_DOUBLE_EQ(c->rope.partial_rotary_factor, 1.0);
  EXPECT_FALSE(c->rope_local.has_value());
  // MixtralConfig's default rope_theta is 1e6.
  c = Read({{"rope_scaling", nullptr}, {"rope_parameters", nullptr}},
           Sizes("MixtralForCausalLM", 128, 32768));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope.type, RopeType::kDefault);
  EXPECT_DOUBLE_EQ(c->rope.theta, 1e6);
  // "default" spelled out (v4 "type", v5 "rope_type" with rope_theta inside).
  c = Read({{"rope_theta", 5e5}, {"rope_scaling", {{"type", "default"}}}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope.type, RopeType::kDefault);
  EXPECT_DOUBLE_EQ(c->rope.theta, 5e5);
  c = Read({{"rope_parameters", {{"rope_type", "default"}, {"rope_theta", 1e6}}}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_DOUBLE_EQ(c->rope.theta, 1e6);
}

TEST(RopeConfigTest, LinearBothSpellings) {
  auto c = Read({{"rope_theta", 1e6}, {"rope_scaling", {{"type", "linear"}, {"factor", 8}}}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope.type, RopeType::kLinear);
  EXPECT_DOUBLE_EQ(c->rope.factor, 8.0);
  EXPECT_DOUBLE_EQ(c->rope.theta, 1e6);
  c = Read({{"rope_parameters", {{"rope_type", "linear"}, {"factor", 2.5}, {"rope_theta", 1e5}}}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope.type, RopeType::kLinear);
  EXPECT_DOUBLE_EQ(c->rope.factor, 2.5);
  EXPECT_DOUBLE_EQ(c->rope.theta, 1e5);
}

// Llama 3.1's config.json (v4), and the same in v5's rope_parameters.
TEST(RopeConfigTest, Llama3BothSpellings) {
  const json scaling = {{"factor", 8.0},
                        {"low_freq_factor", 1.0},
                        {"high_freq_factor", 4.0},
                        {"original_max_position_embeddings", 8192},
                        {"rope_type", "llama3"}};
  json v5 = scaling;
  v5["rope_theta"] = 500000.0;
  for (const json& obj :
       {json{{"rope_theta", 500000.0}, {"rope_scaling", scaling}}, json{{"rope_parameters", v5}}}) {
    auto c = Read(obj);
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(c->rope.type, RopeType::kLlama3);
    EXPECT_DOUBLE_EQ(c->rope.theta, 500000.0);
    EXPECT_DOUBLE_EQ(c->rope.factor, 8.0);
    EXPECT_DOUBLE_EQ(c->rope.low_freq_factor, 1.0);
    EXPECT_DOUBLE_EQ(c->rope.high_freq_factor, 4.0);
    EXPECT_EQ(c->rope.original_max_position_embeddings, 8192);
  }
}

TEST(RopeConfigTest, Yarn) {
  // Qwen 2.5 / Qwen 3's model cards: only factor and the original context.
  auto c =
      Read({{"rope_theta", 1e6},
            {"rope_scaling",
             {{"type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 32768}}}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope.type, RopeType::kYarn);
  EXPECT_DOUBLE_EQ(c->rope.factor, 4.0);
  EXPECT_EQ(c->rope.original_max_position_embeddings, 32768);
  EXPECT_DOUBLE_EQ(c->rope.beta_fast, 32.0);
  EXPECT_DOUBLE_EQ(c->rope.beta_slow, 1.0);
  EXPECT_TRUE(c->rope.truncate);
  EXPECT_FALSE(c->rope.attention_factor.has_value());
  EXPECT_FALSE(c->rope.mscale.has_value());
  // No original context: max_position_embeddings (standardize_rope_params).
  c = Read({{"rope_scaling", {{"rope_type", "yarn"}, {"factor", 2}}}},
           Sizes("Qwen3ForCausalLM", 128, 40960));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope.original_max_position_embeddings, 40960);
  // Every optional key (v5 spelling).
  c = Read({{"rope_parameters",
             {{"rope_type", "yarn"},
              {"rope_theta", 1e4},
              {"factor", 16.0},
              {"original_max_position_embeddings", 4096},
              {"beta_fast", 16},
              {"beta_slow", 2.0},
              {"attention_factor", 1.25},
              {"mscale", 1.0},
              {"mscale_all_dim", 0.5},
              {"truncate", false}}}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_DOUBLE_EQ(c->rope.theta, 1e4);
  EXPECT_DOUBLE_EQ(c->rope.factor, 16.0);
  EXPECT_EQ(c->rope.original_max_position_embeddings, 4096);
  EXPECT_DOUBLE_EQ(c->rope.beta_fast, 16.0);
  EXPECT_DOUBLE_EQ(c->rope.beta_slow, 2.0);
  EXPECT_EQ(c->rope.attention_factor, 1.25);
  EXPECT_EQ(c->rope.mscale, 1.0);
  EXPECT_EQ(c->rope.mscale_all_dim, 0.5);
  EXPECT_FALSE(c->rope.truncate);
}

// Phi-3.5-mini: the original context at the top level, rope_scaling with the
// two factor lists and no factor (so factor = 131072 / 4096).
TEST(RopeConfigTest, LongRopePhi3) {
  json obj = {
      {"rope_theta", 10000.0},
      {"original_max_position_embeddings", 4096},
      {"rope_scaling",
       {{"type", "longrope"}, {"short_factor", Ramp(48, 0.01)}, {"long_factor", Ramp(48, 0.5)}}}};
  const ModelConfig phi3 = Sizes("Phi3ForCausalLM", 96, 131072);
  auto c = Read(obj, phi3);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope.type, RopeType::kLongRope);
  EXPECT_EQ(c->rope.original_max_position_embeddings, 4096);
  EXPECT_DOUBLE_EQ(c->rope.factor, 32.0);
  EXPECT_FALSE(c->rope.attention_factor.has_value());
  ASSERT_EQ(c->rope.short_factor.size(), 48u);
  EXPECT_DOUBLE_EQ(c->rope.short_factor[47], 1.47);
  EXPECT_DOUBLE_EQ(c->rope.long_factor[2], 2.0);
  // Phi3Config maps the legacy names "su" and "yarn" to longrope.
  for (const char* legacy : {"su", "yarn"}) {
    obj["rope_scaling"]["type"] = legacy;
    c = Read(obj, phi3);
    ASSERT_TRUE(c.ok()) << legacy << ": " << c.status();
    EXPECT_EQ(c->rope.type, RopeType::kLongRope) << legacy;
  }
  // An explicit factor and attention_factor are used as given (v5).
  obj["rope_scaling"]["factor"] = 16.0;
  obj["rope_scaling"]["attention_factor"] = 1.1;
  c = Read(obj, phi3);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_DOUBLE_EQ(c->rope.factor, 16.0);
  EXPECT_EQ(c->rope.attention_factor, 1.1);
  // v5: the original context inside rope_parameters.
  c = Read({{"rope_parameters",
             {{"rope_type", "longrope"},
              {"rope_theta", 1e4},
              {"original_max_position_embeddings", 8192},
              {"short_factor", Ramp(48, 0.0)},
              {"long_factor", Ramp(48, 0.0)}}}},
           phi3);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope.original_max_position_embeddings, 8192);
  EXPECT_DOUBLE_EQ(c->rope.factor, 16.0);
}

// Phi-4-mini: partial_rotary_factor 0.75 of head_dim 128: 96 rotary dims, so
// 48 factors. At the top level (v4) or inside rope_parameters (v5).
TEST(RopeConfigTest, PartialRotaryFactor) {
  const json lists = {
      {"type", "longrope"}, {"short_factor", Ramp(48, 0.01)}, {"long_factor", Ramp(48, 0.5)}};
  const ModelConfig phi = Sizes("Phi3ForCausalLM", 128, 131072);
  auto c = Read({{"partial_rotary_factor", 0.75},
                 {"original_max_position_embeddings", 4096},
                 {"rope_scaling", lists}},
                phi);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_DOUBLE_EQ(c->rope.partial_rotary_factor, 0.75);
  EXPECT_EQ(c->rope.RotaryDim(128), 96);
  json v5 = lists;
  v5["partial_rotary_factor"] = 0.75;
  c = Read({{"rope_parameters", v5}}, phi);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope.RotaryDim(128), 96);
  // Both, agreeing.
  c = Read({{"partial_rotary_factor", 0.75}, {"rope_parameters", v5}}, phi);
  ASSERT_TRUE(c.ok()) << c.status();
  c = Read({{"partial_rotary_factor", 0.5}}, Sizes("Phi3ForCausalLM", 80, 4096));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope.RotaryDim(80), 40);
}

// Gemma 3 (v4): rope_theta + rope_scaling for the global layers,
// rope_local_base_freq with plain RoPE for the sliding ones.
TEST(RopeConfigTest, Gemma3V4) {
  const ModelConfig gemma = Sizes("Gemma3ForCausalLM", 256, 131072);
  auto c = Read({{"rope_theta", 1000000.0},
                 {"rope_local_base_freq", 10000.0},
                 {"rope_scaling", {{"rope_type", "linear"}, {"factor", 8.0}}}},
                gemma);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope.type, RopeType::kLinear);
  EXPECT_DOUBLE_EQ(c->rope.factor, 8.0);
  EXPECT_DOUBLE_EQ(c->rope.theta, 1e6);
  ASSERT_TRUE(c->rope_local.has_value());
  EXPECT_EQ(c->rope_local->type, RopeType::kDefault);
  EXPECT_DOUBLE_EQ(c->rope_local->theta, 1e4);
  // Gemma3TextConfig's defaults: 1e6 global, 1e4 local.
  c = Read({{"rope_scaling", nullptr}, {"rope_local_base_freq", 5000}}, gemma);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope.type, RopeType::kDefault);
  EXPECT_DOUBLE_EQ(c->rope.theta, 1e6);
  EXPECT_DOUBLE_EQ(c->rope_local->theta, 5000);
  c = Read(json::object(), gemma);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_DOUBLE_EQ(c->rope_local->theta, 1e4);
}

// Gemma 3 (v5): rope_parameters keyed by layer type.
TEST(RopeConfigTest, Gemma3V5) {
  const ModelConfig gemma = Sizes("Gemma3ForCausalLM", 256, 131072);
  auto c =
      Read({{"rope_parameters",
             {{"full_attention", {{"rope_type", "linear"}, {"factor", 8.0}, {"rope_theta", 1e6}}},
              {"sliding_attention", {{"rope_type", "default"}, {"rope_theta", 10000.0}}}}}},
           gemma);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope.type, RopeType::kLinear);
  EXPECT_DOUBLE_EQ(c->rope.factor, 8.0);
  EXPECT_DOUBLE_EQ(c->rope.theta, 1e6);
  ASSERT_TRUE(c->rope_local.has_value());
  EXPECT_EQ(c->rope_local->type, RopeType::kDefault);
  EXPECT_DOUBLE_EQ(c->rope_local->theta, 1e4);
  // A layer type left out takes its defaults; thetas from the v4 keys.
  c = Read({{"rope_theta", 2e6},
            {"rope_local_base_freq", 2e4},
            {"rope_parameters", {{"full_attention", {{"rope_type", "default"}}}}}},
           gemma);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_DOUBLE_EQ(c->rope.theta, 2e6);
  EXPECT_DOUBLE_EQ(c->rope_local->theta, 2e4);
  // A v4 rope_scaling updates full_attention (Gemma3TextConfig, v5).
  c = Read(
      {{"rope_scaling", {{"rope_type", "linear"}, {"factor", 4.0}}},
       {"rope_parameters", {{"full_attention", {{"rope_type", "default"}, {"rope_theta", 3e6}}}}}},
      gemma);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope.type, RopeType::kLinear);
  EXPECT_DOUBLE_EQ(c->rope.factor, 4.0);
  EXPECT_DOUBLE_EQ(c->rope.theta, 3e6);
}

// ---- What is refused, by message ----

TEST(RopeConfigTest, UnsupportedTypesAreNamed) {
  EXPECT_EQ(
      Error({{"rope_scaling", {{"rope_type", "dynamic"}, {"factor", 2.0}}}}),
      "m/config.json: field \"rope_scaling\" has rope_type \"dynamic\", which is not supported "
      "(supported: default, linear, llama3, yarn, longrope)");
  EXPECT_EQ(
      Error({{"rope_scaling", {{"type", "dynamic"}, {"factor", 2.0}}}}),
      "m/config.json: field \"rope_scaling\" has rope_type \"dynamic\", which is not supported "
      "(supported: default, linear, llama3, yarn, longrope)");
  EXPECT_EQ(
      Error({{"rope_parameters", {{"rope_type", "ntk"}, {"factor", 2.0}}}}),
      "m/config.json: field \"rope_parameters\" has rope_type \"ntk\", which is not supported "
      "(supported: default, linear, llama3, yarn, longrope)");
  // "su" and "yarn" are longrope only for Phi-3: elsewhere "su" is longrope
  // too (no other family uses the name), and "yarn" is YaRN.
  auto c = Read({{"rope_scaling", {{"type", "yarn"}, {"factor", 2.0}}}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope.type, RopeType::kYarn);
  EXPECT_EQ(Error({{"rope_parameters",
                    {{"full_attention", {{"rope_type", "default"}}},
                     {"sliding_attention", {{"rope_type", "dynamic"}, {"factor", 2.0}}}}}},
                  Sizes("Gemma3ForCausalLM", 256, 131072)),
            "m/config.json: field \"rope_parameters.sliding_attention\" has rope_type \"dynamic\", "
            "which is not supported (supported: default, linear, llama3, yarn, longrope)");
  EXPECT_EQ(Error({{"rope_scaling", {{"rope_type", 3}}}}),
            "m/config.json: field \"rope_scaling.rope_type\" must be a string, got 3");
}

TEST(RopeConfigTest, WrongShapesAreNamed) {
  EXPECT_EQ(Error({{"rope_scaling", 8}}),
            "m/config.json: field \"rope_scaling\" must be an object or null, got a number: 8");
  EXPECT_EQ(Error({{"rope_parameters", "linear"}}),
            "m/config.json: field \"rope_parameters\" must be an object or null, got a string: "
            "\"linear\"");
  EXPECT_EQ(Error({{"rope_scaling", json::array({json::array({1})})}}),
            "m/config.json: field \"rope_scaling\" must be an object or null, got an array: [[1]]");
  EXPECT_EQ(Error({{"rope_theta", -1}}),
            "m/config.json: field \"rope_theta\" must be a positive number, got -1");
  EXPECT_EQ(Error({{"rope_theta", "1e4"}}),
            "m/config.json: field \"rope_theta\" must be a positive number, got \"1e4\"");
  EXPECT_EQ(Error({{"rope_parameters", {{"rope_type", "default"}, {"rope_theta", 0}}}}),
            "m/config.json: field \"rope_parameters.rope_theta\" must be a positive number, got 0");
  EXPECT_EQ(Error({{"original_max_position_embeddings", "4096"}}),
            "m/config.json: field \"original_max_position_embeddings\" must be a positive integer, "
            "got \"4096\"");
  // Layer-type keys belong to Gemma 3; Gemma 3 needs them in rope_parameters.
  EXPECT_EQ(Error({{"rope_parameters", {{"full_attention", {{"rope_type", "default"}}}}}}),
            "m/config.json: field \"rope_parameters\" is keyed by layer type (full_attention, "
            "sliding_attention), which only Gemma 3 uses; LlamaForCausalLM takes one RoPE dict");
  const ModelConfig gemma = Sizes("Gemma3ForCausalLM", 256, 131072);
  EXPECT_EQ(Error({{"rope_parameters", {{"rope_type", "default"}}}}, gemma),
            "m/config.json: field \"rope_parameters\" must be keyed by layer type (full_attention, "
            "sliding_attention) for Gemma3ForCausalLM, got {\"rope_type\":\"default\"}");
  EXPECT_EQ(Error({{"rope_parameters",
                    {{"full_attention", json::object()}, {"chunked", json::object()}}}},
                  gemma),
            "m/config.json: field \"rope_parameters.chunked\" is not a layer type (full_attention, "
            "sliding_attention)");
  EXPECT_EQ(
      Error({{"rope_parameters", {{"full_attention", 1e6}}}}, gemma),
      "m/config.json: field \"rope_parameters.full_attention\" must be an object or null, got "
      "a number: 1000000.0");
  EXPECT_EQ(Error({{"rope_local_base_freq", -5}}, gemma),
            "m/config.json: field \"rope_local_base_freq\" must be a positive number, got -5");
}

TEST(RopeConfigTest, MissingOrBadFactorsAreNamed) {
  EXPECT_EQ(
      Error({{"rope_scaling", {{"type", "linear"}}}}),
      "m/config.json: field \"rope_scaling.factor\" is missing (rope_type \"linear\" needs it)");
  for (const json& bad : {json(0), json(-2.0), json("2"), json(true)}) {
    EXPECT_EQ(Error({{"rope_scaling", {{"type", "linear"}, {"factor", bad}}}}),
              "m/config.json: field \"rope_scaling.factor\" must be a positive number, got " +
                  bad.dump());
  }
  EXPECT_EQ(
      Error({{"rope_parameters", {{"rope_type", "yarn"}}}}),
      "m/config.json: field \"rope_parameters.factor\" is missing (rope_type \"yarn\" needs it)");
  EXPECT_EQ(Error({{"rope_scaling", {{"type", "yarn"}, {"factor", 4}, {"beta_fast", -32}}}}),
            "m/config.json: field \"rope_scaling.beta_fast\" must be a positive number, got -32");
  EXPECT_EQ(
      Error({{"rope_scaling", {{"type", "yarn"}, {"factor", 4}, {"attention_factor", 0}}}}),
      "m/config.json: field \"rope_scaling.attention_factor\" must be a positive number, got 0");
  EXPECT_EQ(Error({{"rope_scaling", {{"type", "yarn"}, {"factor", 4}, {"mscale", "1"}}}}),
            "m/config.json: field \"rope_scaling.mscale\" must be a number, got \"1\"");
  EXPECT_EQ(Error({{"rope_scaling", {{"type", "yarn"}, {"factor", 4}, {"truncate", "no"}}}}),
            "m/config.json: field \"rope_scaling.truncate\" must be true or false, got \"no\"");
  EXPECT_EQ(
      Error({{"rope_scaling",
              {{"type", "yarn"}, {"factor", 4}, {"original_max_position_embeddings", 4096.5}}}}),
      "m/config.json: field \"rope_scaling.original_max_position_embeddings\" must be a "
      "positive integer, got 4096.5");
}

TEST(RopeConfigTest, Llama3RefusalsAreNamed) {
  const json full = {{"rope_type", "llama3"},
                     {"factor", 8.0},
                     {"low_freq_factor", 1.0},
                     {"high_freq_factor", 4.0},
                     {"original_max_position_embeddings", 8192}};
  for (const char* key : {"factor", "low_freq_factor", "high_freq_factor"}) {
    json s = full;
    s.erase(key);
    EXPECT_EQ(Error({{"rope_scaling", s}}), std::string("m/config.json: field \"rope_scaling.") +
                                                key +
                                                "\" is missing (rope_type \"llama3\" needs it)");
  }
  json s = full;
  s.erase("original_max_position_embeddings");
  EXPECT_EQ(Error({{"rope_scaling", s}}),
            "m/config.json: field \"rope_scaling.original_max_position_embeddings\" is missing "
            "(rope_type \"llama3\" needs it)");
  s = full;
  s["high_freq_factor"] = 1.0;
  EXPECT_EQ(Error({{"rope_scaling", s}}),
            "m/config.json: field \"rope_scaling.high_freq_factor\" must be greater than "
            "low_freq_factor, got 1 <= 1");
}

TEST(RopeConfigTest, LongRopeRefusalsAreNamed) {
  const ModelConfig phi3 = Sizes("Phi3ForCausalLM", 96, 131072);
  json s = {{"type", "longrope"}, {"short_factor", Ramp(48, 0.01)}, {"long_factor", Ramp(48, 0.5)}};
  for (const char* key : {"short_factor", "long_factor"}) {
    json t = s;
    t.erase(key);
    EXPECT_EQ(Error({{"rope_scaling", t}}, phi3),
              std::string("m/config.json: field \"rope_scaling.") + key +
                  "\" is missing (rope_type \"longrope\" needs it)");
  }
  json t = s;
  t["long_factor"] = Ramp(47, 0.5);
  EXPECT_EQ(Error({{"rope_scaling", t}}, phi3),
            "m/config.json: field \"rope_scaling.long_factor\" has 47 values; rotary_dim / 2 = 48 "
            "expected (head_dim times partial_rotary_factor, halved)");
  // 48 factors, but partial_rotary_factor 0.5 leaves 48 rotary dims: 24 expected.
  EXPECT_EQ(Error({{"partial_rotary_factor", 0.5}, {"rope_scaling", s}}, phi3),
            "m/config.json: field \"rope_scaling.short_factor\" has 48 values; rotary_dim / 2 = 24 "
            "expected (head_dim times partial_rotary_factor, halved)");
  t = s;
  t["short_factor"] = 1.0;
  EXPECT_EQ(Error({{"rope_scaling", t}}, phi3),
            "m/config.json: field \"rope_scaling.short_factor\" must be a list of numbers, got a "
            "number");
  t = s;
  t["short_factor"][7] = 0;
  EXPECT_EQ(Error({{"rope_scaling", t}}, phi3),
            "m/config.json: field \"rope_scaling.short_factor\" must hold positive numbers, got 0");
  t = s;
  t["factor"] = -4;
  EXPECT_EQ(Error({{"rope_scaling", t}}, phi3),
            "m/config.json: field \"rope_scaling.factor\" must be a positive number, got -4");
}

TEST(RopeConfigTest, PartialRotaryRefusalsAreNamed) {
  EXPECT_EQ(Error({{"partial_rotary_factor", 1.5}}),
            "m/config.json: field \"partial_rotary_factor\" must be in (0, 1], got 1.5");
  EXPECT_EQ(Error({{"partial_rotary_factor", 0}}),
            "m/config.json: field \"partial_rotary_factor\" must be a positive number, got 0");
  EXPECT_EQ(Error({{"partial_rotary_factor", 0.25}}, Sizes("Phi3ForCausalLM", 100, 4096)),
            "m/config.json: field \"partial_rotary_factor\" gives rotary_dim int(100 * 0.25) = 25; "
            "it must be even and at least 2");
  EXPECT_EQ(
      Error({{"rope_parameters", {{"rope_type", "default"}, {"partial_rotary_factor", 0.001}}}}),
      "m/config.json: field \"rope_parameters.partial_rotary_factor\" gives rotary_dim "
      "int(128 * 0.001) = 0; it must be even and at least 2");
  EXPECT_EQ(
      Error({{"partial_rotary_factor", 0.5},
             {"rope_parameters", {{"rope_type", "default"}, {"partial_rotary_factor", 0.75}}}}),
      "m/config.json: field \"rope_parameters.partial_rotary_factor\" is 0.75 but the "
      "top-level partial_rotary_factor is 0.5");
}

}  // namespace
}  // namespace streamgen
