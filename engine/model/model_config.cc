#include "engine/model/model_config.h"

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <functional>
#include <set>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/model/rope_config.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace streamgen {

const char* const kSupportedArchitectures[8] = {
    "LlamaForCausalLM",    "MistralForCausalLM", "Qwen2ForCausalLM",  "Qwen3ForCausalLM",
    "Qwen3MoeForCausalLM", "MixtralForCausalLM", "Gemma3ForCausalLM", "Phi3ForCausalLM"};

double ModelConfig::AttentionScale() const {
  return attention_scale > 0 ? attention_scale : 1.0 / std::sqrt(static_cast<double>(head_dim));
}

namespace {

constexpr int64_t kMaxLayers = 1024;

using nlohmann::json;

bool FileExists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

// Real configs nest a few levels. nlohmann parses iteratively, but copies and
// dump() (error messages) recurse once per level: a config of a few hundred KB
// of "[[[[" overflowed the stack (found by tests/fuzz/model_config_fuzz.cc).
// Deeper values are discarded while parsing.
constexpr int kMaxJsonDepth = 64;

// Parses a JSON object; `source` names it in errors.
absl::StatusOr<json> ParseJsonObject(const std::string& text, const std::string& source) {
  bool too_deep = false;
  json::parser_callback_t limit_depth = [&too_deep](int depth, json::parse_event_t, json&) {
    if (depth <= kMaxJsonDepth) return true;
    too_deep = true;
    return false;
  };
  json value = json::parse(text, limit_depth, /*allow_exceptions=*/false);
  if (value.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(source, ": invalid JSON"));
  if (too_deep) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": JSON nested deeper than ", kMaxJsonDepth, " levels"));
  }
  if (!value.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not a JSON object"));
  }
  return value;
}

// Reads and parses a JSON object file. Missing file: NotFound.
absl::StatusOr<json> ReadJsonObject(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    if (!FileExists(path)) return absl::NotFoundError(absl::StrCat(path, ": file not found"));
    return absl::PermissionDeniedError(absl::StrCat(path, ": cannot read"));
  }
  std::stringstream text;
  text << in.rdbuf();
  return ParseJsonObject(text.str(), path);
}

absl::Status FieldError(const std::string& source, const std::string& field,
                        const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": field \"", field, "\" ", what));
}

bool Present(const json& obj, const char* field) {
  auto it = obj.find(field);
  return it != obj.end() && !it->is_null();
}

// A positive int field; absent or null is an error only when `required`.
absl::Status ReadPositiveInt(const json& obj, const std::string& source, const char* field,
                             int* out, bool required = true, int64_t most = 1ll << 30) {
  if (!Present(obj, field)) {
    if (!required) return absl::OkStatus();
    return FieldError(source, field, "is missing");
  }
  const json& value = obj.at(field);
  if (!value.is_number_integer()) {
    return FieldError(source, field, absl::StrCat("must be an integer, got ", value.dump()));
  }
  const int64_t v = value.get<int64_t>();
  if (v <= 0 || v > (1ll << 30)) {
    return FieldError(source, field, absl::StrCat("must be a positive integer, got ", v));
  }
  if (v > most) {
    return FieldError(source, field, absl::StrCat("must be at most ", most, ", got ", v));
  }
  *out = static_cast<int>(v);
  return absl::OkStatus();
}

absl::Status ReadPositiveDouble(const json& obj, const std::string& source, const char* field,
                                double* out) {
  if (!Present(obj, field)) return absl::OkStatus();
  const json& value = obj.at(field);
  if (!value.is_number() || value.get<double>() <= 0) {
    return FieldError(source, field, absl::StrCat("must be a positive number, got ", value.dump()));
  }
  *out = value.get<double>();
  return absl::OkStatus();
}

absl::Status ReadBool(const json& obj, const std::string& source, const char* field, bool* out) {
  if (!Present(obj, field)) return absl::OkStatus();
  if (!obj.at(field).is_boolean()) {
    return FieldError(source, field, absl::StrCat("must be true or false, got ", obj.at(field).dump()));
  }
  *out = obj.at(field).get<bool>();
  return absl::OkStatus();
}

// An id field that is an int or a list of ints (eos_token_id). Absent or null: empty.
absl::StatusOr<std::vector<int>> ReadIdList(const json& obj, const std::string& source,
                                            const char* field) {
  std::vector<int> ids;
  if (!Present(obj, field)) return ids;
  const json& value = obj.at(field);
  const json list = value.is_array() ? value : json::array({value});
  for (const json& id : list) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > (1ll << 30)) {
      return FieldError(source, field,
                        absl::StrCat("must be a non-negative integer or a list of them, got ",
                                     value.dump()));
    }
    ids.push_back(id.get<int>());
  }
  return ids;
}

std::string JsonTypeName(const json& value) { return value.type_name(); }

absl::Status ReadArchitecture(const json& obj, const std::string& source, std::string* out) {
  if (!Present(obj, "architectures")) return FieldError(source, "architectures", "is missing");
  const json& value = obj.at("architectures");
  if (!value.is_array() || value.empty() || !value[0].is_string()) {
    return FieldError(source, "architectures",
                      absl::StrCat("must be a non-empty list of strings, got ", value.dump()));
  }
  *out = value[0].get<std::string>();
  for (const char* supported : kSupportedArchitectures) {
    if (*out == supported) return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat(source, ": unsupported architecture '", *out, "' (supported: ",
                   absl::StrJoin(kSupportedArchitectures, ", "), ")"));
}

// Keys that change the math and that no supported family implements.
absl::Status RefuseUnsupported(const json& obj, const std::string& source) {
  if (Present(obj, "quantization_config")) {
    const json& q = obj.at("quantization_config");
    std::string method = "unknown";
    if (q.is_object() && q.contains("quant_method") && q.at("quant_method").is_string()) {
      method = q.at("quant_method").get<std::string>();
    }
    return FieldError(source, "quantization_config",
                      absl::StrCat("names quantization method '", method,
                                   "', which is not supported: serve the unquantized checkpoint "
                                   "(streamgen quantizes it with --quantization int8)"));
  }
  if (Present(obj, "use_bidirectional_attention") &&
      obj.at("use_bidirectional_attention").is_boolean() &&
      obj.at("use_bidirectional_attention").get<bool>()) {
    return FieldError(source, "use_bidirectional_attention",
                      "is true (an embedding model's attention); only causal models are supported");
  }
  return absl::OkStatus();
}

absl::Status ReadSizes(const json& obj, const std::string& source, ModelConfig* config) {
  SG_RETURN_IF_ERROR(ReadPositiveInt(obj, source, "hidden_size", &config->hidden_size));
  SG_RETURN_IF_ERROR(ReadPositiveInt(obj, source, "intermediate_size", &config->intermediate_size));
  // Per-layer tables are sized from num_hidden_layers before any weight is
  // read; the deepest public checkpoints have under 200 layers.
  SG_RETURN_IF_ERROR(ReadPositiveInt(obj, source, "num_hidden_layers", &config->num_hidden_layers,
                                     /*required=*/true, kMaxLayers));
  SG_RETURN_IF_ERROR(
      ReadPositiveInt(obj, source, "num_attention_heads", &config->num_attention_heads));
  config->num_key_value_heads = config->num_attention_heads;
  SG_RETURN_IF_ERROR(ReadPositiveInt(obj, source, "num_key_value_heads",
                                     &config->num_key_value_heads, /*required=*/false));
  SG_RETURN_IF_ERROR(ReadPositiveInt(obj, source, "vocab_size", &config->vocab_size));
  SG_RETURN_IF_ERROR(ReadPositiveInt(obj, source, "max_position_embeddings",
                                     &config->max_position_embeddings));
  // Phi-3 derives head_dim from the sizes whatever config.json says; Qwen 3
  // and Gemma 3 have class defaults of their own (128, 256) when it is absent.
  const bool own_head_dim = config->architecture != "Phi3ForCausalLM";
  if (own_head_dim && Present(obj, "head_dim")) {
    SG_RETURN_IF_ERROR(ReadPositiveInt(obj, source, "head_dim", &config->head_dim));
  } else if (config->architecture == "Qwen3ForCausalLM") {
    config->head_dim = 128;
  } else if (config->architecture == "Gemma3ForCausalLM") {
    config->head_dim = 256;
  } else {
    if (config->hidden_size % config->num_attention_heads != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          source, ": hidden_size ", config->hidden_size, " is not divisible by num_attention_heads ",
          config->num_attention_heads, " (and no head_dim is given)"));
    }
    config->head_dim = config->hidden_size / config->num_attention_heads;
  }
  if (config->num_attention_heads % config->num_key_value_heads != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": num_attention_heads ", config->num_attention_heads,
                     " is not divisible by num_key_value_heads ", config->num_key_value_heads));
  }
  if (config->head_dim % 2 != 0) {
    return FieldError(source, "head_dim",
                      absl::StrCat("must be even for rotary embeddings, got ", config->head_dim));
  }
  // The query projection's rows (q_size(), an int) are bounded like the
  // fields: 2^30 heads of head_dim 2^30 overflowed it (found by fuzzing).
  const int64_t q_rows = int64_t{config->num_attention_heads} * config->head_dim;
  if (q_rows > (1ll << 30)) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": num_attention_heads ", config->num_attention_heads,
                     " * head_dim ", config->head_dim, " = ", q_rows, " exceeds 2^30"));
  }
  return absl::OkStatus();
}

// A string-valued key; absent or null leaves *out as it is.
absl::Status ReadString(const json& obj, const std::string& source, const char* field,
                        std::string* out) {
  if (!Present(obj, field)) return absl::OkStatus();
  if (!obj.at(field).is_string()) {
    return FieldError(source, field, absl::StrCat("must be a string, got ", obj.at(field).dump()));
  }
  *out = obj.at(field).get<std::string>();
  return absl::OkStatus();
}

// A non-negative number key (0 allowed); absent or null leaves *out as it is.
absl::Status ReadNonNegativeDouble(const json& obj, const std::string& source, const char* field,
                                   double* out) {
  if (!Present(obj, field)) return absl::OkStatus();
  const json& value = obj.at(field);
  if (!value.is_number() || value.get<double>() < 0) {
    return FieldError(source, field,
                      absl::StrCat("must be a non-negative number, got ", value.dump()));
  }
  *out = value.get<double>();
  return absl::OkStatus();
}

// The MLP activation: transformers' ACT2FN names this engine computes exactly.
absl::Status ReadActivation(const json& obj, const std::string& source, const char* field,
                            ModelConfig* config) {
  std::string act = config->activation == Activation::kSilu ? "silu" : "gelu_pytorch_tanh";
  SG_RETURN_IF_ERROR(ReadString(obj, source, field, &act));
  if (act == "silu" || act == "swish") {
    config->activation = Activation::kSilu;
  } else if (act == "gelu_pytorch_tanh") {
    config->activation = Activation::kGeluTanh;
  } else {
    return FieldError(source, field,
                      absl::StrCat("is \"", act,
                                   "\"; supported: \"silu\" (\"swish\") and \"gelu_pytorch_tanh\""));
  }
  return absl::OkStatus();
}

// Per layer windows from config.json's "layer_types" ("full_attention" /
// "sliding_attention", transformers >= 4.53) when given, else from the
// family's rule: `sliding(i)` says whether layer i slides. `window` 0: none.
absl::Status ReadLayerWindows(const json& obj, const std::string& source, int window,
                              const std::function<bool(int)>& sliding, ModelConfig* config) {
  const int layers = config->num_hidden_layers;
  config->layer_window.assign(layers, 0);
  if (Present(obj, "layer_types")) {
    const json& types = obj.at("layer_types");
    if (!types.is_array() || static_cast<int>(types.size()) != layers) {
      return FieldError(source, "layer_types",
                        absl::StrCat("must be a list of ", layers,
                                     " strings (one per layer), got ", types.dump()));
    }
    for (int i = 0; i < layers; ++i) {
      const json& t = types[i];
      if (t == "full_attention") continue;
      if (t == "sliding_attention") {
        if (window <= 0) {
          return FieldError(source, "layer_types",
                            absl::StrCat("names a sliding_attention layer (", i,
                                         ") but sliding_window is not set"));
        }
        config->layer_window[i] = window;
        continue;
      }
      return FieldError(source, "layer_types",
                        absl::StrCat("has ", t.dump(), " at layer ", i,
                                     "; supported: \"full_attention\", \"sliding_attention\""));
    }
  } else if (window > 0) {
    for (int i = 0; i < layers; ++i) config->layer_window[i] = sliding(i) ? window : 0;
  }
  int largest = 0;
  for (int w : config->layer_window) largest = std::max(largest, w);
  if (largest > 0) config->sliding_window = largest;
  return absl::OkStatus();
}

// The "sliding_window" key: a positive int; null: no window (0); absent: the
// configuration class's default `absent` (4096 for Mistral, Qwen 2/3, Gemma 3;
// none for Mixtral and Phi-3).
absl::Status ReadWindow(const json& obj, const std::string& source, int absent, int* window) {
  if (obj.contains("sliding_window") && obj.at("sliding_window").is_null()) {
    *window = 0;
    return absl::OkStatus();
  }
  *window = absent;
  return ReadPositiveInt(obj, source, "sliding_window", window, /*required=*/false);
}

// Reads what makes the family differ from Llama (model_config.h's family
// description), as each transformers configuration_<family>.py and
// modeling_<family>.py define it. Needs ReadSizes first.
absl::Status ReadFamily(const json& obj, const std::string& source, ModelConfig* config) {
  const std::string& arch = config->architecture;
  const int layers = config->num_hidden_layers;
  int window = 0;
  if (arch == "LlamaForCausalLM" || arch == "MistralForCausalLM") {
    SG_RETURN_IF_ERROR(ReadActivation(obj, source, "hidden_act", config));
    if (arch == "LlamaForCausalLM") {
      // LlamaAttention: attention_bias gives q, k, v and o biases; LlamaMLP: mlp_bias.
      bool bias = false;
      SG_RETURN_IF_ERROR(ReadBool(obj, source, "attention_bias", &bias));
      config->attention_qkv_bias = config->attention_o_bias = bias;
      SG_RETURN_IF_ERROR(ReadBool(obj, source, "mlp_bias", &config->mlp_bias));
    } else {
      SG_RETURN_IF_ERROR(ReadWindow(obj, source, /*absent=*/4096, &window));
      SG_RETURN_IF_ERROR(ReadLayerWindows(obj, source, window, [](int) { return true; }, config));
    }
  } else if (arch == "Qwen2ForCausalLM" || arch == "Qwen3ForCausalLM" ||
             arch == "Qwen3MoeForCausalLM") {
    SG_RETURN_IF_ERROR(ReadActivation(obj, source, "hidden_act", config));
    if (arch == "Qwen2ForCausalLM") {
      config->attention_qkv_bias = true;  // Qwen2Attention: q/k/v bias=True, o_proj bias=False
    } else {
      bool bias = false;  // Qwen3Attention: attention_bias on q, k, v and o
      SG_RETURN_IF_ERROR(ReadBool(obj, source, "attention_bias", &bias));
      config->attention_qkv_bias = config->attention_o_bias = bias;
      config->qk_norm = true;
    }
    // Sliding window only with use_sliding_window, on layers >= max_window_layers.
    bool use_window = false;
    SG_RETURN_IF_ERROR(ReadBool(obj, source, "use_sliding_window", &use_window));
    if (use_window) {
      SG_RETURN_IF_ERROR(ReadWindow(obj, source, /*absent=*/4096, &window));
    }
    int max_window_layers = 28;
    if (Present(obj, "max_window_layers")) {
      const json& v = obj.at("max_window_layers");
      if (!v.is_number_integer() || v.get<int64_t>() < 0) {
        return FieldError(source, "max_window_layers",
                          absl::StrCat("must be a non-negative integer, got ", v.dump()));
      }
      max_window_layers = static_cast<int>(std::min<int64_t>(v.get<int64_t>(), 1 << 30));
    }
    SG_RETURN_IF_ERROR(ReadLayerWindows(
        obj, source, window, [&](int i) { return i >= max_window_layers; }, config));
    if (arch == "Qwen3MoeForCausalLM") {
      MoeConfig& moe = config->moe;
      moe.num_experts = 128, moe.top_k = 8, moe.expert_intermediate_size = 768;
      moe.norm_topk_prob = false;
      SG_RETURN_IF_ERROR(ReadPositiveInt(obj, source, "num_experts", &moe.num_experts, false));
      SG_RETURN_IF_ERROR(ReadPositiveInt(obj, source, "num_experts_per_tok", &moe.top_k, false));
      SG_RETURN_IF_ERROR(ReadPositiveInt(obj, source, "moe_intermediate_size",
                                         &moe.expert_intermediate_size, false));
      SG_RETURN_IF_ERROR(ReadBool(obj, source, "norm_topk_prob", &moe.norm_topk_prob));
      int step = 1;
      SG_RETURN_IF_ERROR(ReadPositiveInt(obj, source, "decoder_sparse_step", &step, false));
      std::set<int> dense;
      if (Present(obj, "mlp_only_layers")) {
        const json& list = obj.at("mlp_only_layers");
        if (!list.is_array()) {
          return FieldError(source, "mlp_only_layers",
                            absl::StrCat("must be a list of layer indices, got ", list.dump()));
        }
        for (const json& i : list) {
          if (!i.is_number_integer() || i.get<int64_t>() < 0 || i.get<int64_t>() >= layers) {
            return FieldError(source, "mlp_only_layers",
                              absl::StrCat("must hold layer indices in [0, ", layers, "), got ",
                                           list.dump()));
          }
          dense.insert(i.get<int>());
        }
      }
      // Qwen3MoeDecoderLayer: sparse where not in mlp_only_layers and (i + 1) % step == 0.
      config->moe_layers.assign(layers, false);
      for (int i = 0; i < layers; ++i) {
        config->moe_layers[i] = dense.count(i) == 0 && (i + 1) % step == 0;
      }
    }
  } else if (arch == "MixtralForCausalLM") {
    SG_RETURN_IF_ERROR(ReadActivation(obj, source, "hidden_act", config));
    SG_RETURN_IF_ERROR(ReadWindow(obj, source, /*absent=*/0, &window));
    SG_RETURN_IF_ERROR(ReadLayerWindows(obj, source, window, [](int) { return true; }, config));
    MoeConfig& moe = config->moe;
    moe.num_experts = 8, moe.top_k = 2;
    moe.expert_intermediate_size = config->intermediate_size;  // MixtralBlockSparseTop2MLP
    moe.norm_topk_prob = true;  // MixtralSparseMoeBlock always renormalises the top-k
    moe.block = "block_sparse_moe", moe.gate = "w1", moe.up = "w3", moe.down = "w2";
    SG_RETURN_IF_ERROR(ReadPositiveInt(obj, source, "num_local_experts", &moe.num_experts, false));
    SG_RETURN_IF_ERROR(ReadPositiveInt(obj, source, "num_experts_per_tok", &moe.top_k, false));
    config->moe_layers.assign(layers, true);
  } else if (arch == "Gemma3ForCausalLM") {
    config->activation = Activation::kGeluTanh;
    SG_RETURN_IF_ERROR(ReadActivation(obj, source, "hidden_activation", config));
    bool bias = false;
    SG_RETURN_IF_ERROR(ReadBool(obj, source, "attention_bias", &bias));
    config->attention_qkv_bias = config->attention_o_bias = bias;
    config->qk_norm = true;
    config->sandwich_norms = true;
    config->norm_style = NormStyle::kOnePlusWeight;
    config->embedding_scale = std::sqrt(static_cast<double>(config->hidden_size));
    double scalar = 256;  // query_pre_attn_scalar's class default
    SG_RETURN_IF_ERROR(ReadPositiveDouble(obj, source, "query_pre_attn_scalar", &scalar));
    config->attention_scale = 1.0 / std::sqrt(scalar);
    SG_RETURN_IF_ERROR(ReadNonNegativeDouble(obj, source, "final_logit_softcapping",
                                             &config->final_logit_softcapping));
    SG_RETURN_IF_ERROR(ReadNonNegativeDouble(obj, source, "attn_logit_softcapping",
                                             &config->attn_logit_softcapping));
    SG_RETURN_IF_ERROR(ReadWindow(obj, source, /*absent=*/4096, &window));
    // Without layer_types: sliding unless (i + 1) % sliding_window_pattern == 0.
    int pattern = 6;
    SG_RETURN_IF_ERROR(ReadPositiveInt(obj, source, "sliding_window_pattern", &pattern, false));
    SG_RETURN_IF_ERROR(ReadLayerWindows(
        obj, source, window, [pattern](int i) { return (i + 1) % pattern != 0; }, config));
  } else if (arch == "Phi3ForCausalLM") {
    SG_RETURN_IF_ERROR(ReadActivation(obj, source, "hidden_act", config));
    config->fused_checkpoint = true;  // qkv_proj and gate_up_proj, no biases
    SG_RETURN_IF_ERROR(ReadWindow(obj, source, /*absent=*/0, &window));
    SG_RETURN_IF_ERROR(ReadLayerWindows(obj, source, window, [](int) { return true; }, config));
  }
  // A window at least the context changes nothing: full attention.
  for (int& w : config->layer_window) {
    if (w >= config->max_position_embeddings) w = 0;
  }
  config->sliding_window.reset();
  for (int w : config->layer_window) {
    if (w > 0) config->sliding_window = std::max(config->sliding_window.value_or(0), w);
  }
  if (config->moe.num_experts > 0) {
    if (config->moe.top_k > config->moe.num_experts) {
      return FieldError(source, "num_experts_per_tok",
                        absl::StrCat("is ", config->moe.top_k, ", more than the ",
                                     config->moe.num_experts, " experts"));
    }
  }
  return absl::OkStatus();
}

// generation_config.json's sampling keys, each checked against the range the
// request validator allows (null counts as absent, as in transformers).
absl::Status ReadGenerationDefaults(const json& obj, const std::string& source,
                                    GenerationDefaults* out) {
  auto present = [&](const char* key) { return obj.contains(key) && !obj.at(key).is_null(); };
  if (present("do_sample")) {
    if (!obj.at("do_sample").is_boolean()) return FieldError(source, "do_sample", "must be true or false");
    out->do_sample = obj.at("do_sample").get<bool>();
  }
  struct Range {
    const char* key;
    double lo, hi;
    bool lo_open, hi_open;
    std::optional<float>* out;
  };
  const Range ranges[] = {
      {"temperature", 0, 100, false, false, &out->temperature},
      {"top_p", 0, 1, true, false, &out->top_p},
      {"min_p", 0, 1, false, true, &out->min_p},
      {"repetition_penalty", 0, 10, true, false, &out->repetition_penalty},
  };
  for (const Range& r : ranges) {
    if (!present(r.key)) continue;
    const json& v = obj.at(r.key);
    if (!v.is_number()) return FieldError(source, r.key, "must be a number");
    const double x = v.get<double>();
    const bool above = r.lo_open ? x > r.lo : x >= r.lo;
    const bool below = r.hi_open ? x < r.hi : x <= r.hi;
    if (!(above && below)) {
      return FieldError(source, r.key,
                        absl::StrCat("must be in ", r.lo_open ? "(" : "[", r.lo, ", ", r.hi,
                                     r.hi_open ? ")" : "]", ", got ", x));
    }
    *r.out = static_cast<float>(x);
  }
  for (const char* key : {"top_k", "max_new_tokens"}) {
    if (!present(key)) continue;
    const json& v = obj.at(key);
    const bool is_int = v.is_number_integer() || v.is_number_unsigned();
    const int64_t lo = std::string(key) == "top_k" ? 0 : 1;
    if (!is_int || v.get<int64_t>() < lo || v.get<int64_t>() > (1 << 30)) {
      return FieldError(source, key, absl::StrCat("must be an integer in [", lo, ", 2^30]"));
    }
    (std::string(key) == "top_k" ? out->top_k : out->max_new_tokens) =
        static_cast<int>(v.get<int64_t>());
  }
  return absl::OkStatus();
}

absl::Status ReadTokenizerConfig(const std::string& path, ModelConfig* config) {
  SG_ASSIGN_OR_RETURN(json obj, ReadJsonObject(path));
  SG_RETURN_IF_ERROR(ReadBool(obj, path, "add_bos_token", &config->add_bos));
  SG_RETURN_IF_ERROR(ReadBool(obj, path, "add_eos_token", &config->add_eos));
  if (!Present(obj, "chat_template")) return absl::OkStatus();
  const json& tmpl = obj.at("chat_template");
  if (tmpl.is_string()) {
    config->chat_template = tmpl.get<std::string>();
    return absl::OkStatus();
  }
  if (tmpl.is_array()) {
    for (const json& entry : tmpl) {
      if (entry.is_object() && entry.value("name", "") == "default" && entry.contains("template") &&
          entry["template"].is_string()) {
        config->chat_template = entry["template"].get<std::string>();
      }
    }
    return absl::OkStatus();
  }
  return FieldError(path, "chat_template",
                    absl::StrCat("must be a string or a list of {name, template}, got a ",
                                 JsonTypeName(tmpl)));
}

}  // namespace

absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& json_text,
                                             const std::string& source) {
  SG_ASSIGN_OR_RETURN(json obj, ParseJsonObject(json_text, source));
  ModelConfig config;
  SG_RETURN_IF_ERROR(ReadArchitecture(obj, source, &config.architecture));
  SG_RETURN_IF_ERROR(RefuseUnsupported(obj, source));
  SG_RETURN_IF_ERROR(ReadSizes(obj, source, &config));
  SG_RETURN_IF_ERROR(ReadFamily(obj, source, &config));
  SG_RETURN_IF_ERROR(
      ReadRopeConfig(obj, source, config.architecture == "Gemma3ForCausalLM", &config));
  SG_RETURN_IF_ERROR(ReadPositiveDouble(obj, source, "rms_norm_eps", &config.rms_norm_eps));
  // Gemma3TextConfig ties by default (and save_pretrained omits the key then);
  // the other families' classes default to untied.
  config.tie_word_embeddings = config.architecture == "Gemma3ForCausalLM";
  SG_RETURN_IF_ERROR(ReadBool(obj, source, "tie_word_embeddings", &config.tie_word_embeddings));
  SG_ASSIGN_OR_RETURN(std::vector<int> bos, ReadIdList(obj, source, "bos_token_id"));
  if (bos.size() > 1) return FieldError(source, "bos_token_id", "must be a single integer");
  if (!bos.empty()) config.bos_token_id = bos[0];
  SG_ASSIGN_OR_RETURN(config.eos_token_ids, ReadIdList(obj, source, "eos_token_id"));
  // transformers v5 writes "dtype" where v4 wrote "torch_dtype".
  for (const char* key : {"torch_dtype", "dtype"}) {
    if (!Present(obj, key)) continue;
    if (!obj.at(key).is_string()) return FieldError(source, key, "must be a string");
    config.torch_dtype = obj.at(key).get<std::string>();
  }
  return config;
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& dir) {
  const std::string config_path = absl::StrCat(dir, "/config.json");
  std::ifstream in(config_path);
  if (!in) {
    if (!FileExists(config_path)) {
      return absl::NotFoundError(absl::StrCat(config_path, ": file not found (", dir,
                                              " is not a Hugging Face model directory?)"));
    }
    return absl::PermissionDeniedError(absl::StrCat(config_path, ": cannot read"));
  }
  std::stringstream text;
  text << in.rdbuf();
  SG_ASSIGN_OR_RETURN(ModelConfig config, ParseModelConfig(text.str(), config_path));

  const std::string generation_path = absl::StrCat(dir, "/generation_config.json");
  if (FileExists(generation_path)) {
    SG_ASSIGN_OR_RETURN(json gen, ReadJsonObject(generation_path));
    SG_ASSIGN_OR_RETURN(std::vector<int> eos, ReadIdList(gen, generation_path, "eos_token_id"));
    for (int id : eos) {
      if (std::find(config.eos_token_ids.begin(), config.eos_token_ids.end(), id) ==
          config.eos_token_ids.end()) {
        config.eos_token_ids.push_back(id);
      }
    }
    SG_ASSIGN_OR_RETURN(std::vector<int> bos, ReadIdList(gen, generation_path, "bos_token_id"));
    if (bos.size() == 1) config.bos_token_id = bos[0];
    SG_RETURN_IF_ERROR(ReadGenerationDefaults(gen, generation_path, &config.generation));
  }
  if (config.eos_token_ids.empty()) config.eos_token_ids.push_back(2);

  const std::string tokenizer_path = absl::StrCat(dir, "/tokenizer_config.json");
  if (FileExists(tokenizer_path)) SG_RETURN_IF_ERROR(ReadTokenizerConfig(tokenizer_path, &config));
  return config;
}

// ---- weights ----

namespace {

// Calls `visit` with each tensor of ExpectedTensors(c), in order, until it
// returns false. ValidateWeights stops at the first tensor the weights lack,
// so its work is bounded by the weights, not by num_hidden_layers (a config
// asking for 2^30 layers made a list of 9.6e9 names; found by fuzzing).
template <typename Visit>
void ForEachExpectedTensor(const ModelConfig& c, Visit visit) {
  const int64_t hidden = c.hidden_size, inter = c.intermediate_size, vocab = c.vocab_size;
  const int64_t d = c.head_dim;
  if (!visit(ExpectedTensor{"model.embed_tokens.weight", {vocab, hidden}})) return;
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    std::vector<ExpectedTensor> layer;
    if (c.fused_checkpoint) {  // Phi-3
      layer.push_back({p + "self_attn.qkv_proj.weight", {c.q_size() + 2 * c.kv_size(), hidden}});
    } else {
      layer.push_back({p + "self_attn.q_proj.weight", {c.q_size(), hidden}});
      layer.push_back({p + "self_attn.k_proj.weight", {c.kv_size(), hidden}});
      layer.push_back({p + "self_attn.v_proj.weight", {c.kv_size(), hidden}});
    }
    if (c.attention_qkv_bias) {
      layer.push_back({p + "self_attn.q_proj.bias", {c.q_size()}});
      layer.push_back({p + "self_attn.k_proj.bias", {c.kv_size()}});
      layer.push_back({p + "self_attn.v_proj.bias", {c.kv_size()}});
    }
    layer.push_back({p + "self_attn.o_proj.weight", {hidden, c.q_size()}});
    if (c.attention_o_bias) layer.push_back({p + "self_attn.o_proj.bias", {hidden}});
    if (c.qk_norm) {
      layer.push_back({p + "self_attn.q_norm.weight", {d}});
      layer.push_back({p + "self_attn.k_norm.weight", {d}});
    }
    if (c.IsMoeLayer(i)) {
      const MoeConfig& m = c.moe;
      const int64_t e_inter = m.expert_intermediate_size;
      const std::string b = p + m.block + ".";
      layer.push_back({b + "gate.weight", {m.num_experts, hidden}});
      for (int e = 0; e < m.num_experts; ++e) {
        const std::string x = absl::StrCat(b, "experts.", e, ".");
        layer.push_back({x + m.gate + ".weight", {e_inter, hidden}});
        layer.push_back({x + m.up + ".weight", {e_inter, hidden}});
        layer.push_back({x + m.down + ".weight", {hidden, e_inter}});
      }
    } else if (c.fused_checkpoint) {
      layer.push_back({p + "mlp.gate_up_proj.weight", {2 * inter, hidden}});
      layer.push_back({p + "mlp.down_proj.weight", {hidden, inter}});
    } else {
      layer.push_back({p + "mlp.gate_proj.weight", {inter, hidden}});
      layer.push_back({p + "mlp.up_proj.weight", {inter, hidden}});
      layer.push_back({p + "mlp.down_proj.weight", {hidden, inter}});
      if (c.mlp_bias) {
        layer.push_back({p + "mlp.gate_proj.bias", {inter}});
        layer.push_back({p + "mlp.up_proj.bias", {inter}});
        layer.push_back({p + "mlp.down_proj.bias", {hidden}});
      }
    }
    layer.push_back({p + "input_layernorm.weight", {hidden}});
    layer.push_back({p + "post_attention_layernorm.weight", {hidden}});
    if (c.sandwich_norms) {  // Gemma 3
      layer.push_back({p + "pre_feedforward_layernorm.weight", {hidden}});
      layer.push_back({p + "post_feedforward_layernorm.weight", {hidden}});
    }
    for (const ExpectedTensor& e : layer) {
      if (!visit(e)) return;
    }
  }
  if (!visit(ExpectedTensor{"model.norm.weight", {hidden}})) return;
  if (!c.tie_word_embeddings) visit(ExpectedTensor{"lm_head.weight", {vocab, hidden}});
}

}  // namespace

std::vector<ExpectedTensor> ExpectedTensors(const ModelConfig& c) {
  std::vector<ExpectedTensor> expected;
  ForEachExpectedTensor(c, [&expected](const ExpectedTensor& e) {
    expected.push_back(e);
    return true;
  });
  return expected;
}

absl::Status ValidateWeights(const ModelConfig& config, const WeightStore& weights) {
  std::set<std::string> expected_names;
  absl::Status status;
  ForEachExpectedTensor(config, [&](const ExpectedTensor& e) {
    expected_names.insert(e.name);
    const TensorView* view = weights.Find(e.name);
    if (view == nullptr) {
      status = absl::InvalidArgumentError(
          absl::StrCat(weights.dir(), ": missing tensor '", e.name, "' (expected shape ",
                       ShapeString(e.shape), ")"));
    } else if (view->shape != e.shape) {
      status = absl::InvalidArgumentError(absl::StrCat(
          view->file, ": tensor '", e.name, "' has shape ", ShapeString(view->shape),
          ", expected ", ShapeString(e.shape), " from config.json"));
    }
    return status.ok();
  });
  SG_RETURN_IF_ERROR(status);
  for (const std::string& name : weights.Names()) {
    if (expected_names.count(name) > 0) continue;
    const TensorView* view = weights.Find(name);
    if (absl::EndsWith(name, ".self_attn.rotary_emb.inv_freq")) continue;  // stale buffer
    if (name == "lm_head.weight" && config.tie_word_embeddings) {
      const std::vector<int64_t> want = {config.vocab_size, config.hidden_size};
      if (view->shape != want) {
        return absl::InvalidArgumentError(absl::StrCat(
            view->file, ": tensor 'lm_head.weight' has shape ", ShapeString(view->shape),
            ", expected ", ShapeString(want), " from config.json"));
      }
      continue;  // tied: the embedding is used, this copy is ignored
    }
    return absl::InvalidArgumentError(absl::StrCat(
        view->file, ": unexpected tensor '", name, "' (shape ", ShapeString(view->shape),
        "); not part of a ", config.architecture, " with ", config.num_hidden_layers,
        " layers"));
  }
  return absl::OkStatus();
}

}  // namespace streamgen
