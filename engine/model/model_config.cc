#include "engine/model/model_config.h"

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "engine/model/rope_config.h"
#include "nlohmann/json.hpp"

namespace streamgen {

const char* const kSupportedArchitectures[8] = {
    "LlamaForCausalLM",    "MistralForCausalLM", "Qwen2ForCausalLM",  "Qwen3ForCausalLM",
    "Qwen3MoeForCausalLM", "MixtralForCausalLM", "Gemma3ForCausalLM", "Phi3ForCausalLM"};

double ModelConfig::AttentionScale() const {
  return attention_scale > 0 ? attention_scale : 1.0 / std::sqrt(static_cast<double>(head_dim));
}

namespace {

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
                             int* out, bool required = true) {
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
      absl::StrCat(source, ": unsupported architecture '", *out,
                   "' (supported: LlamaForCausalLM, MistralForCausalLM)"));
}

// Fields that select behaviour this engine does not implement.
absl::Status RefuseUnsupported(const json& obj, const std::string& source) {
  if (Present(obj, "hidden_act")) {
    const json& act = obj.at("hidden_act");
    if (!act.is_string() || act.get<std::string>() != "silu") {
      return FieldError(source, "hidden_act",
                        absl::StrCat("is ", act.dump(), "; only \"silu\" is supported"));
    }
  }
  for (const char* field : {"attention_bias", "mlp_bias"}) {
    if (Present(obj, field) && obj.at(field).is_boolean() && obj.at(field).get<bool>()) {
      return FieldError(source, field, "is true; biases are not supported");
    }
  }
  return absl::OkStatus();
}

absl::Status ReadSizes(const json& obj, const std::string& source, ModelConfig* config) {
  SG_RETURN_IF_ERROR(ReadPositiveInt(obj, source, "hidden_size", &config->hidden_size));
  SG_RETURN_IF_ERROR(ReadPositiveInt(obj, source, "intermediate_size", &config->intermediate_size));
  SG_RETURN_IF_ERROR(ReadPositiveInt(obj, source, "num_hidden_layers", &config->num_hidden_layers));
  SG_RETURN_IF_ERROR(
      ReadPositiveInt(obj, source, "num_attention_heads", &config->num_attention_heads));
  config->num_key_value_heads = config->num_attention_heads;
  SG_RETURN_IF_ERROR(ReadPositiveInt(obj, source, "num_key_value_heads",
                                     &config->num_key_value_heads, /*required=*/false));
  SG_RETURN_IF_ERROR(ReadPositiveInt(obj, source, "vocab_size", &config->vocab_size));
  SG_RETURN_IF_ERROR(ReadPositiveInt(obj, source, "max_position_embeddings",
                                     &config->max_position_embeddings));
  if (Present(obj, "head_dim")) {
    SG_RETURN_IF_ERROR(ReadPositiveInt(obj, source, "head_dim", &config->head_dim));
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
  SG_RETURN_IF_ERROR(
      ReadRopeConfig(obj, source, config.architecture == "Gemma3ForCausalLM", &config));
  SG_RETURN_IF_ERROR(ReadPositiveDouble(obj, source, "rms_norm_eps", &config.rms_norm_eps));
  SG_RETURN_IF_ERROR(ReadBool(obj, source, "tie_word_embeddings", &config.tie_word_embeddings));
  if (config.architecture == "MistralForCausalLM" && Present(obj, "sliding_window")) {
    int window = 0;
    SG_RETURN_IF_ERROR(ReadPositiveInt(obj, source, "sliding_window", &window));
    config.sliding_window = window;
  }
  SG_ASSIGN_OR_RETURN(std::vector<int> bos, ReadIdList(obj, source, "bos_token_id"));
  if (bos.size() > 1) return FieldError(source, "bos_token_id", "must be a single integer");
  if (!bos.empty()) config.bos_token_id = bos[0];
  SG_ASSIGN_OR_RETURN(config.eos_token_ids, ReadIdList(obj, source, "eos_token_id"));
  if (Present(obj, "torch_dtype")) {
    if (!obj.at("torch_dtype").is_string()) {
      return FieldError(source, "torch_dtype", "must be a string");
    }
    config.torch_dtype = obj.at("torch_dtype").get<std::string>();
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
  if (!visit(ExpectedTensor{"model.embed_tokens.weight", {vocab, hidden}})) return;
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    const ExpectedTensor layer[] = {
        {p + "self_attn.q_proj.weight", {c.q_size(), hidden}},
        {p + "self_attn.k_proj.weight", {c.kv_size(), hidden}},
        {p + "self_attn.v_proj.weight", {c.kv_size(), hidden}},
        {p + "self_attn.o_proj.weight", {hidden, c.q_size()}},
        {p + "mlp.gate_proj.weight", {inter, hidden}},
        {p + "mlp.up_proj.weight", {inter, hidden}},
        {p + "mlp.down_proj.weight", {hidden, inter}},
        {p + "input_layernorm.weight", {hidden}},
        {p + "post_attention_layernorm.weight", {hidden}},
    };
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
