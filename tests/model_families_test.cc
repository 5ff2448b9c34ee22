// The family description (model_config.h) each supported architecture's
// config.json gives, as transformers' configuration_<family>.py and
// modeling_<family>.py define it; the tensors each family's checkpoint must
// hold; and the refusals of what is not implemented, by message.
#include <string>
#include <vector>

#include "engine/model/model_config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace streamgen {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using json = nlohmann::json;

json Base(const std::string& arch) {
  return {{"architectures", {arch}},  {"hidden_size", 64},
          {"intermediate_size", 96},  {"num_hidden_layers", 4},
          {"num_attention_heads", 4}, {"num_key_value_heads", 2},
          {"vocab_size", 100},        {"max_position_embeddings", 256}};
}

ModelConfig Parse(const json& c) {
  auto config = ParseModelConfig(c.dump(), "config.json");
  EXPECT_TRUE(config.ok()) << config.status() << "\n" << c.dump();
  return config.ok() ? *config : ModelConfig{};
}

std::string Error(const json& c) {
  auto config = ParseModelConfig(c.dump(), "config.json");
  EXPECT_FALSE(config.ok()) << c.dump();
  return config.ok() ? "" : std::string(config.status().message());
}

std::vector<std::string> LayerTensors(const ModelConfig& c, int layer) {
  std::vector<std::string> names;
  const std::string p = "model.layers." + std::to_string(layer) + ".";
  for (const ExpectedTensor& e : ExpectedTensors(c)) {
    if (e.name.rfind(p, 0) == 0) names.push_back(e.name.substr(p.size()));
  }
  return names;
}

bool HasTensor(const ModelConfig& c, const std::string& name, std::vector<int64_t> shape) {
  for (const ExpectedTensor& e : ExpectedTensors(c)) {
    if (e.name == name) return e.shape == shape;
  }
  return false;
}

TEST(ModelFamiliesTest, LlamaIsThePlainFamily) {
  ModelConfig c = Parse(Base("LlamaForCausalLM"));
  EXPECT_FALSE(c.attention_qkv_bias || c.attention_o_bias || c.mlp_bias || c.qk_norm ||
               c.sandwich_norms || c.fused_checkpoint);
  EXPECT_EQ(c.norm_style, NormStyle::kWeight);
  EXPECT_EQ(c.activation, Activation::kSilu);
  EXPECT_EQ(c.moe.num_experts, 0);
  EXPECT_DOUBLE_EQ(c.AttentionScale(), 1.0 / 4.0);  // head_dim 16
  EXPECT_FALSE(c.sliding_window.has_value());
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_THAT(LayerTensors(c, 0),
              ElementsAre("self_attn.q_proj.weight", "self_attn.k_proj.weight",
                          "self_attn.v_proj.weight", "self_attn.o_proj.weight",
                          "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
                          "input_layernorm.weight", "post_attention_layernorm.weight"));
}

TEST(ModelFamiliesTest, LlamaAttentionAndMlpBiases) {
  json j = Base("LlamaForCausalLM");
  j["attention_bias"] = true;
  j["mlp_bias"] = true;
  ModelConfig c = Parse(j);
  EXPECT_TRUE(c.attention_qkv_bias && c.attention_o_bias && c.mlp_bias);
  EXPECT_TRUE(HasTensor(c, "model.layers.1.self_attn.k_proj.bias", {32}));
  EXPECT_TRUE(HasTensor(c, "model.layers.1.self_attn.o_proj.bias", {64}));
  EXPECT_TRUE(HasTensor(c, "model.layers.1.mlp.down_proj.bias", {64}));
}

TEST(ModelFamiliesTest, Qwen2HasQkvBiasesButNotO) {
  ModelConfig c = Parse(Base("Qwen2ForCausalLM"));
  EXPECT_TRUE(c.attention_qkv_bias);
  EXPECT_FALSE(c.attention_o_bias);
  EXPECT_TRUE(HasTensor(c, "model.layers.0.self_attn.q_proj.bias", {64}));
  EXPECT_TRUE(HasTensor(c, "model.layers.0.self_attn.v_proj.bias", {32}));
  EXPECT_FALSE(HasTensor(c, "model.layers.0.self_attn.o_proj.bias", {64}));
  // use_sliding_window false (its default): sliding_window is ignored.
  EXPECT_FALSE(c.sliding_window.has_value());
}

TEST(ModelFamiliesTest, Qwen2SlidingWindowFromMaxWindowLayers) {
  json j = Base("Qwen2ForCausalLM");
  j["sliding_window"] = 32;
  EXPECT_THAT(Parse(j).layer_window, ElementsAre(0, 0, 0, 0));  // use_sliding_window absent
  j["use_sliding_window"] = true;
  j["max_window_layers"] = 2;  // layers >= 2 slide (Qwen2Config's layer_types rule)
  ModelConfig c = Parse(j);
  EXPECT_THAT(c.layer_window, ElementsAre(0, 0, 32, 32));
  EXPECT_EQ(c.sliding_window, 32);
  // An explicit layer_types wins.
  j["layer_types"] = {"sliding_attention", "full_attention", "sliding_attention",
                      "full_attention"};
  EXPECT_THAT(Parse(j).layer_window, ElementsAre(32, 0, 32, 0));
  j["layer_types"] = {"sliding_attention", "chunked_attention", "full_attention",
                      "full_attention"};
  EXPECT_THAT(Error(j), AllOf(HasSubstr("\"layer_types\""), HasSubstr("\"chunked_attention\""),
                              HasSubstr("layer 1")));
  j["layer_types"] = {"full_attention"};
  EXPECT_THAT(Error(j), AllOf(HasSubstr("\"layer_types\""), HasSubstr("list of 4 strings")));
  // A window as long as the context is full attention.
  j.erase("layer_types");
  j["sliding_window"] = 256;
  EXPECT_THAT(Parse(j).layer_window, ElementsAre(0, 0, 0, 0));
}

TEST(ModelFamiliesTest, Qwen3HasQkNormsAndItsOwnHeadDim) {
  json j = Base("Qwen3ForCausalLM");
  j["head_dim"] = 32;  // != hidden / heads
  ModelConfig c = Parse(j);
  EXPECT_TRUE(c.qk_norm);
  EXPECT_FALSE(c.attention_qkv_bias);
  EXPECT_EQ(c.head_dim, 32);
  EXPECT_TRUE(HasTensor(c, "model.layers.3.self_attn.q_proj.weight", {128, 64}));
  EXPECT_TRUE(HasTensor(c, "model.layers.3.self_attn.q_norm.weight", {32}));
  EXPECT_TRUE(HasTensor(c, "model.layers.3.self_attn.k_norm.weight", {32}));
  EXPECT_DOUBLE_EQ(c.AttentionScale(), 1.0 / std::sqrt(32.0));
  j.erase("head_dim");
  EXPECT_EQ(Parse(j).head_dim, 128);  // Qwen3Config's default
}

TEST(ModelFamiliesTest, Qwen3MoeSparseLayers) {
  json j = Base("Qwen3MoeForCausalLM");
  j["head_dim"] = 16;
  j["num_experts"] = 8;
  j["num_experts_per_tok"] = 2;
  j["moe_intermediate_size"] = 24;
  j["norm_topk_prob"] = true;
  j["decoder_sparse_step"] = 2;  // layers 1 and 3
  j["mlp_only_layers"] = {3};
  ModelConfig c = Parse(j);
  EXPECT_EQ(c.moe.num_experts, 8);
  EXPECT_EQ(c.moe.top_k, 2);
  EXPECT_TRUE(c.moe.norm_topk_prob);
  EXPECT_THAT(c.moe_layers, ElementsAre(false, true, false, false));
  EXPECT_TRUE(HasTensor(c, "model.layers.0.mlp.gate_proj.weight", {96, 64}));
  EXPECT_TRUE(HasTensor(c, "model.layers.1.mlp.gate.weight", {8, 64}));
  EXPECT_TRUE(HasTensor(c, "model.layers.1.mlp.experts.7.up_proj.weight", {24, 64}));
  EXPECT_TRUE(HasTensor(c, "model.layers.1.mlp.experts.0.down_proj.weight", {64, 24}));
  EXPECT_FALSE(HasTensor(c, "model.layers.1.mlp.gate_proj.weight", {96, 64}));
  j.erase("norm_topk_prob");
  EXPECT_FALSE(Parse(j).moe.norm_topk_prob);  // Qwen3MoeConfig's default
  j["mlp_only_layers"] = {4};
  EXPECT_THAT(Error(j), AllOf(HasSubstr("\"mlp_only_layers\""), HasSubstr("[0, 4)")));
  j["mlp_only_layers"] = json::array();
  j["num_experts_per_tok"] = 9;
  EXPECT_THAT(Error(j), AllOf(HasSubstr("\"num_experts_per_tok\""), HasSubstr("8 experts")));
}

TEST(ModelFamiliesTest, MixtralExpertsAndWindow) {
  json j = Base("MixtralForCausalLM");
  j["num_local_experts"] = 4;
  j["sliding_window"] = 16;
  ModelConfig c = Parse(j);
  EXPECT_EQ(c.moe.num_experts, 4);
  EXPECT_EQ(c.moe.top_k, 2);
  EXPECT_TRUE(c.moe.norm_topk_prob);
  EXPECT_THAT(c.moe_layers, ElementsAre(true, true, true, true));
  EXPECT_THAT(c.layer_window, ElementsAre(16, 16, 16, 16));
  EXPECT_TRUE(HasTensor(c, "model.layers.2.block_sparse_moe.gate.weight", {4, 64}));
  EXPECT_TRUE(HasTensor(c, "model.layers.2.block_sparse_moe.experts.3.w1.weight", {96, 64}));
  EXPECT_TRUE(HasTensor(c, "model.layers.2.block_sparse_moe.experts.3.w3.weight", {96, 64}));
  EXPECT_TRUE(HasTensor(c, "model.layers.2.block_sparse_moe.experts.3.w2.weight", {64, 96}));
  j["sliding_window"] = nullptr;
  EXPECT_FALSE(Parse(j).sliding_window.has_value());
}

TEST(ModelFamiliesTest, Gemma3) {
  json j = Base("Gemma3ForCausalLM");
  j["num_hidden_layers"] = 6;
  j["head_dim"] = 16;
  j["query_pre_attn_scalar"] = 64;
  j["sliding_window"] = 8;
  j["final_logit_softcapping"] = 30.0;
  ModelConfig c = Parse(j);
  EXPECT_EQ(c.norm_style, NormStyle::kOnePlusWeight);
  EXPECT_EQ(c.activation, Activation::kGeluTanh);
  EXPECT_TRUE(c.qk_norm && c.sandwich_norms && c.tie_word_embeddings);
  EXPECT_DOUBLE_EQ(c.embedding_scale, 8.0);
  EXPECT_DOUBLE_EQ(c.AttentionScale(), 1.0 / 8.0);
  EXPECT_DOUBLE_EQ(c.final_logit_softcapping, 30.0);
  // sliding_window_pattern 6 (the default): every sixth layer is global.
  EXPECT_THAT(c.layer_window, ElementsAre(8, 8, 8, 8, 8, 0));
  EXPECT_THAT(LayerTensors(c, 0),
              ElementsAre("self_attn.q_proj.weight", "self_attn.k_proj.weight",
                          "self_attn.v_proj.weight", "self_attn.o_proj.weight",
                          "self_attn.q_norm.weight", "self_attn.k_norm.weight",
                          "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
                          "input_layernorm.weight", "post_attention_layernorm.weight",
                          "pre_feedforward_layernorm.weight",
                          "post_feedforward_layernorm.weight"));
  j["sliding_window_pattern"] = 2;
  EXPECT_THAT(Parse(j).layer_window, ElementsAre(8, 0, 8, 0, 8, 0));
  j["hidden_activation"] = "gelu";
  EXPECT_THAT(Error(j), AllOf(HasSubstr("\"hidden_activation\""), HasSubstr("\"gelu\"")));
  j.erase("hidden_activation");
  j["use_bidirectional_attention"] = true;
  EXPECT_THAT(Error(j), HasSubstr("\"use_bidirectional_attention\" is true"));
}

TEST(ModelFamiliesTest, Phi3FusedCheckpoint) {
  json j = Base("Phi3ForCausalLM");
  j["head_dim"] = 32;  // Phi-3 derives head_dim from the sizes
  j["sliding_window"] = 2047;
  ModelConfig c = Parse(j);
  EXPECT_TRUE(c.fused_checkpoint);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_FALSE(c.sliding_window.has_value());  // 2047 >= 256 positions: full attention
  EXPECT_THAT(LayerTensors(c, 1),
              ElementsAre("self_attn.qkv_proj.weight", "self_attn.o_proj.weight",
                          "mlp.gate_up_proj.weight", "mlp.down_proj.weight",
                          "input_layernorm.weight", "post_attention_layernorm.weight"));
  EXPECT_TRUE(HasTensor(c, "model.layers.1.self_attn.qkv_proj.weight", {128, 64}));
  EXPECT_TRUE(HasTensor(c, "model.layers.1.mlp.gate_up_proj.weight", {192, 64}));
}

TEST(ModelFamiliesTest, QuantizedCheckpointsAreRefusedByMethod) {
  for (const char* method : {"awq", "gptq", "fp8", "bitsandbytes"}) {
    json j = Base("Qwen2ForCausalLM");
    j["quantization_config"] = {{"quant_method", method}};
    EXPECT_THAT(Error(j), AllOf(HasSubstr("\"quantization_config\""),
                                HasSubstr(std::string("quantization method '") + method + "'")));
  }
}

TEST(ModelFamiliesTest, UnsupportedArchitectureListsAllEight) {
  json j = Base("DeepseekV3ForCausalLM");
  EXPECT_THAT(Error(j), AllOf(HasSubstr("'DeepseekV3ForCausalLM'"), HasSubstr("Qwen3MoeForCausalLM"),
                              HasSubstr("Gemma3ForCausalLM"), HasSubstr("Phi3ForCausalLM")));
}

TEST(ModelFamiliesTest, TransformersV5DtypeKey) {
  json j = Base("Qwen3ForCausalLM");
  j["dtype"] = "bfloat16";
  EXPECT_EQ(Parse(j).torch_dtype, "bfloat16");
}

}  // namespace
}  // namespace streamgen
