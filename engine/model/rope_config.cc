#include "engine/model/rope_config.h"

#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace streamgen {

namespace {

using nlohmann::json;

constexpr char kSupportedTypes[] = "default, linear, llama3, yarn, longrope";

// Where a RoPE setting comes from: a dict of config.json ("rope_scaling",
// "rope_parameters", "rope_parameters.full_attention") or its top level ("").
struct Dict {
  const json* obj = nullptr;  // null: no dict (plain RoPE)
  std::string name;

  bool Has(const char* key) const {
    if (obj == nullptr) return false;
    auto it = obj->find(key);
    return it != obj->end() && !it->is_null();
  }
  const json& At(const char* key) const { return obj->at(key); }
  std::string Field(const char* key) const {
    return name.empty() ? std::string(key) : absl::StrCat(name, ".", key);
  }
};

// "a number", "an array" (nlohmann's type names).
std::string WithArticle(const json& v) {
  const std::string name = v.type_name();
  return absl::StrCat(std::string("aeiou").find(name[0]) != std::string::npos ? "an " : "a ", name);
}

absl::Status FieldError(const std::string& source, const std::string& field,
                        const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": field \"", field, "\" ", what));
}

// A positive number (int or float; not a bool, which nlohmann does not count
// as a number). Absent or null: *out untouched, *found false.
absl::Status ReadPositive(const Dict& d, const std::string& source, const char* key, double* out,
                          bool* found = nullptr) {
  if (found != nullptr) *found = d.Has(key);
  if (!d.Has(key)) return absl::OkStatus();
  const json& v = d.At(key);
  if (!v.is_number() || !(v.get<double>() > 0) || !std::isfinite(v.get<double>())) {
    return FieldError(source, d.Field(key),
                      absl::StrCat("must be a positive number, got ", v.dump()));
  }
  *out = v.get<double>();
  return absl::OkStatus();
}

// Like ReadPositive, but required.
absl::Status RequirePositive(const Dict& d, const std::string& source, const char* key,
                             const std::string& rope_type, double* out) {
  if (!d.Has(key)) {
    return FieldError(source, d.Field(key),
                      absl::StrCat("is missing (rope_type \"", rope_type, "\" needs it)"));
  }
  return ReadPositive(d, source, key, out);
}

// Any finite number (yarn's mscale, mscale_all_dim: transformers uses them only when non-zero).
absl::Status ReadNumber(const Dict& d, const std::string& source, const char* key,
                        std::optional<double>* out) {
  if (!d.Has(key)) return absl::OkStatus();
  const json& v = d.At(key);
  if (!v.is_number() || !std::isfinite(v.get<double>())) {
    return FieldError(source, d.Field(key), absl::StrCat("must be a number, got ", v.dump()));
  }
  *out = v.get<double>();
  return absl::OkStatus();
}

absl::Status ReadPositiveInt(const Dict& d, const std::string& source, const char* key, int* out) {
  if (!d.Has(key)) return absl::OkStatus();
  const json& v = d.At(key);
  if (!v.is_number_integer() || v.get<int64_t>() <= 0 || v.get<int64_t>() > (1ll << 30)) {
    return FieldError(source, d.Field(key),
                      absl::StrCat("must be a positive integer, got ", v.dump()));
  }
  *out = static_cast<int>(v.get<int64_t>());
  return absl::OkStatus();
}

// longrope's short_factor / long_factor: rotary_dim / 2 positive numbers.
absl::Status ReadFactorList(const Dict& d, const std::string& source, const char* key,
                            int rotary_dim, std::vector<double>* out) {
  if (!d.Has(key)) {
    return FieldError(source, d.Field(key), "is missing (rope_type \"longrope\" needs it)");
  }
  const json& v = d.At(key);
  if (!v.is_array()) {
    return FieldError(source, d.Field(key),
                      absl::StrCat("must be a list of numbers, got ", WithArticle(v)));
  }
  if (static_cast<int>(v.size()) != rotary_dim / 2) {
    return FieldError(source, d.Field(key),
                      absl::StrCat("has ", v.size(), " values; rotary_dim / 2 = ", rotary_dim / 2,
                                   " expected (head_dim times partial_rotary_factor, halved)"));
  }
  out->clear();
  for (const json& x : v) {
    if (!x.is_number() || !(x.get<double>() > 0) || !std::isfinite(x.get<double>())) {
      return FieldError(source, d.Field(key),
                        absl::StrCat("must hold positive numbers, got ", x.dump()));
    }
    out->push_back(x.get<double>());
  }
  return absl::OkStatus();
}

// An object or absent/null (-> obj null). Anything else is an error.
absl::StatusOr<Dict> ReadDict(const json& parent, const std::string& source, const char* key,
                              const std::string& name) {
  Dict d;
  d.name = name;
  auto it = parent.find(key);
  if (it == parent.end() || it->is_null()) return d;
  if (!it->is_object()) {
    return FieldError(
        source, name,
        absl::StrCat("must be an object or null, got ", WithArticle(*it), ": ", it->dump()));
  }
  d.obj = &*it;
  return d;
}

bool KeyedByLayerType(const json* obj) {
  return obj != nullptr && (obj->contains("full_attention") || obj->contains("sliding_attention"));
}

// What one RoPE dict says, beyond the dict itself: the top-level keys that
// transformers merges into it.
struct TopLevel {
  double theta = 10000.0;  // when the dict has no rope_theta
  std::optional<double> partial_rotary_factor;
  std::optional<int> original_max_position_embeddings;
  int head_dim = 0;
  int max_position_embeddings = 0;
  bool phi3 = false;  // Phi-3's legacy type names "su" and "yarn" mean longrope
};

// Reads one RoPE dict (transformers' RopeParameters, after
// standardize_rope_params) into *out.
absl::Status ReadRopeDict(const Dict& d, const std::string& source, const TopLevel& top,
                          RopeConfig* out) {
  *out = RopeConfig();
  // The type: "rope_type", or the legacy "type" (transformers'
  // standardize_rope_params: rope_parameters.get("rope_type", .get("type", "default"))).
  std::string type = "default";
  for (const char* key : {"rope_type", "type"}) {
    if (!d.Has(key)) continue;
    if (!d.At(key).is_string()) {
      return FieldError(source, d.Field(key),
                        absl::StrCat("must be a string, got ", d.At(key).dump()));
    }
    type = d.At(key).get<std::string>();
    break;
  }
  // Phi3Config maps the type names of its early checkpoints ("su", and
  // "yarn", which meant Phi-3's short/long factors) to "longrope".
  if (type == "su" || (top.phi3 && type == "yarn")) type = "longrope";
  if (type == "default") {
    out->type = RopeType::kDefault;
  } else if (type == "linear") {
    out->type = RopeType::kLinear;
  } else if (type == "llama3") {
    out->type = RopeType::kLlama3;
  } else if (type == "yarn") {
    out->type = RopeType::kYarn;
  } else if (type == "longrope") {
    out->type = RopeType::kLongRope;
  } else {
    // "dynamic" (NTK scaling that changes with the sequence's length, which
    // a KV cache shared across steps cannot follow), and any type this
    // engine does not know.
    return FieldError(
        source, d.name,
        absl::StrCat("has rope_type \"", type,
                     "\", which is not supported (supported: ", kSupportedTypes, ")"));
  }

  out->theta = top.theta;
  SG_RETURN_IF_ERROR(ReadPositive(d, source, "rope_theta", &out->theta));

  // partial_rotary_factor: in the dict (v5) or at the top level (v4).
  bool in_dict = false;
  double prf = 1.0;
  SG_RETURN_IF_ERROR(ReadPositive(d, source, "partial_rotary_factor", &prf, &in_dict));
  if (in_dict && top.partial_rotary_factor && *top.partial_rotary_factor != prf) {
    return FieldError(source, d.Field("partial_rotary_factor"),
                      absl::StrCat("is ", prf, " but the top-level partial_rotary_factor is ",
                                   *top.partial_rotary_factor));
  }
  if (!in_dict && top.partial_rotary_factor) prf = *top.partial_rotary_factor;
  const std::string prf_field =
      in_dict ? d.Field("partial_rotary_factor") : "partial_rotary_factor";
  if (prf > 1.0) {
    return FieldError(source, prf_field, absl::StrCat("must be in (0, 1], got ", prf));
  }
  out->partial_rotary_factor = prf;
  const int rotary_dim = out->RotaryDim(top.head_dim);
  if (rotary_dim < 2 || rotary_dim % 2 != 0) {
    return FieldError(source, prf_field,
                      absl::StrCat("gives rotary_dim int(", top.head_dim, " * ", prf,
                                   ") = ", rotary_dim, "; it must be even and at least 2"));
  }

  // The pre-training context: Phi-3 keeps it at the top level, which
  // transformers v5's standardize_rope_params prefers over the dict's;
  // otherwise the dict's (llama3, yarn), else max_position_embeddings.
  int original = 0;
  const std::string original_field = top.original_max_position_embeddings
                                         ? "original_max_position_embeddings"
                                         : d.Field("original_max_position_embeddings");
  if (top.original_max_position_embeddings) {
    original = *top.original_max_position_embeddings;
  } else {
    SG_RETURN_IF_ERROR(ReadPositiveInt(d, source, "original_max_position_embeddings", &original));
  }

  switch (out->type) {
    case RopeType::kDefault:
      break;
    case RopeType::kLinear:
      SG_RETURN_IF_ERROR(RequirePositive(d, source, "factor", type, &out->factor));
      break;
    case RopeType::kLlama3:
      // All four are required keys of transformers' llama3 validation.
      SG_RETURN_IF_ERROR(RequirePositive(d, source, "factor", type, &out->factor));
      SG_RETURN_IF_ERROR(
          RequirePositive(d, source, "low_freq_factor", type, &out->low_freq_factor));
      SG_RETURN_IF_ERROR(
          RequirePositive(d, source, "high_freq_factor", type, &out->high_freq_factor));
      if (original == 0) {
        return FieldError(source, original_field, "is missing (rope_type \"llama3\" needs it)");
      }
      if (out->high_freq_factor <= out->low_freq_factor) {
        return FieldError(source, d.Field("high_freq_factor"),
                          absl::StrCat("must be greater than low_freq_factor, got ",
                                       out->high_freq_factor, " <= ", out->low_freq_factor));
      }
      break;
    case RopeType::kYarn: {
      SG_RETURN_IF_ERROR(RequirePositive(d, source, "factor", type, &out->factor));
      SG_RETURN_IF_ERROR(ReadPositive(d, source, "beta_fast", &out->beta_fast));
      SG_RETURN_IF_ERROR(ReadPositive(d, source, "beta_slow", &out->beta_slow));
      double attention = 0;
      bool has_attention = false;
      SG_RETURN_IF_ERROR(ReadPositive(d, source, "attention_factor", &attention, &has_attention));
      if (has_attention) out->attention_factor = attention;
      SG_RETURN_IF_ERROR(ReadNumber(d, source, "mscale", &out->mscale));
      SG_RETURN_IF_ERROR(ReadNumber(d, source, "mscale_all_dim", &out->mscale_all_dim));
      if (d.Has("truncate")) {
        if (!d.At("truncate").is_boolean()) {
          return FieldError(source, d.Field("truncate"),
                            absl::StrCat("must be true or false, got ", d.At("truncate").dump()));
        }
        out->truncate = d.At("truncate").get<bool>();
      }
      break;
    }
    case RopeType::kLongRope: {
      SG_RETURN_IF_ERROR(ReadFactorList(d, source, "short_factor", rotary_dim, &out->short_factor));
      SG_RETURN_IF_ERROR(ReadFactorList(d, source, "long_factor", rotary_dim, &out->long_factor));
      double attention = 0;
      bool has_attention = false;
      SG_RETURN_IF_ERROR(ReadPositive(d, source, "attention_factor", &attention, &has_attention));
      if (has_attention) out->attention_factor = attention;
      if (original == 0) original = top.max_position_embeddings;
      // transformers v5 _compute_longrope_parameters: factor, if given, else
      // max_position_embeddings / original_max_position_embeddings (Phi-3's
      // 131072 / 4096 = 32); it only sets the default attention factor.
      bool has_factor = false;
      SG_RETURN_IF_ERROR(ReadPositive(d, source, "factor", &out->factor, &has_factor));
      if (!has_factor) {
        out->factor = static_cast<double>(top.max_position_embeddings) / original;
      }
      break;
    }
  }
  // yarn: the dict's or the top-level value, else max_position_embeddings
  // (standardize_rope_params' default), which find_correction_range uses.
  if (out->type == RopeType::kYarn && original == 0) original = top.max_position_embeddings;
  out->original_max_position_embeddings = original;
  return absl::OkStatus();
}

}  // namespace

absl::Status ReadRopeConfig(const json& obj, const std::string& source, bool local_layers,
                            ModelConfig* config) {
  const Dict top_dict{&obj, ""};
  TopLevel top;
  top.head_dim = config->head_dim;
  top.max_position_embeddings = config->max_position_embeddings;
  top.phi3 = config->architecture == "Phi3ForCausalLM";
  // The config classes' default rope_theta: 1e6 for Mixtral and Gemma 3
  // (MixtralConfig, Gemma3TextConfig.default_theta["global"]), 1e4 for the rest.
  top.theta = (config->architecture == "MixtralForCausalLM" || local_layers) ? 1e6 : 1e4;
  SG_RETURN_IF_ERROR(ReadPositive(top_dict, source, "rope_theta", &top.theta));
  double prf = 0;
  bool has_prf = false;
  SG_RETURN_IF_ERROR(ReadPositive(top_dict, source, "partial_rotary_factor", &prf, &has_prf));
  if (has_prf) top.partial_rotary_factor = prf;
  int original = 0;
  SG_RETURN_IF_ERROR(
      ReadPositiveInt(top_dict, source, "original_max_position_embeddings", &original));
  if (original > 0) top.original_max_position_embeddings = original;

  // transformers v4 writes "rope_scaling"; v5 "rope_parameters". Where both
  // are set, rope_scaling wins, as in v5's convert_rope_params_to_dict
  // (`rope_scaling or rope_parameters`).
  SG_ASSIGN_OR_RETURN(Dict scaling, ReadDict(obj, source, "rope_scaling", "rope_scaling"));
  SG_ASSIGN_OR_RETURN(Dict parameters, ReadDict(obj, source, "rope_parameters", "rope_parameters"));

  if (!local_layers) {
    const Dict& d = scaling.obj != nullptr ? scaling : parameters;
    if (KeyedByLayerType(d.obj)) {
      return FieldError(source, d.name,
                        absl::StrCat("is keyed by layer type (full_attention, sliding_attention), "
                                     "which only Gemma 3 uses; ",
                                     config->architecture, " takes one RoPE dict"));
    }
    config->rope_local.reset();
    return ReadRopeDict(d, source, top, &config->rope);
  }

  // Gemma 3: global (full-attention) and sliding layers rotate differently.
  // v5: rope_parameters = {"full_attention": {...}, "sliding_attention": {...}}.
  // v4: rope_theta + rope_scaling for the global layers, rope_local_base_freq
  // with plain RoPE for the sliding ones (Gemma3TextModel's rotary_emb_local).
  if (parameters.obj != nullptr && !KeyedByLayerType(parameters.obj)) {
    return FieldError(
        source, "rope_parameters",
        absl::StrCat("must be keyed by layer type (full_attention, sliding_attention) "
                     "for ",
                     config->architecture, ", got ", parameters.obj->dump()));
  }
  Dict full{nullptr, "rope_parameters.full_attention"};
  Dict sliding{nullptr, "rope_parameters.sliding_attention"};
  if (parameters.obj != nullptr) {
    for (const auto& [key, value] : parameters.obj->items()) {
      if (key != "full_attention" && key != "sliding_attention") {
        return FieldError(source, absl::StrCat("rope_parameters.", key),
                          "is not a layer type (full_attention, sliding_attention)");
      }
    }
    SG_ASSIGN_OR_RETURN(full, ReadDict(*parameters.obj, source, "full_attention",
                                       "rope_parameters.full_attention"));
    SG_ASSIGN_OR_RETURN(sliding, ReadDict(*parameters.obj, source, "sliding_attention",
                                          "rope_parameters.sliding_attention"));
  }
  // Gemma3TextConfig (v5) updates full_attention with a v4 rope_scaling.
  json merged;
  if (scaling.obj != nullptr) {
    merged = full.obj != nullptr ? *full.obj : json::object();
    merged.update(*scaling.obj);
    full = Dict{&merged, full.obj != nullptr ? full.name : "rope_scaling"};
  }
  SG_RETURN_IF_ERROR(ReadRopeDict(full, source, top, &config->rope));

  TopLevel local = top;
  local.theta = 1e4;  // Gemma3TextConfig.default_theta["local"]
  SG_RETURN_IF_ERROR(ReadPositive(top_dict, source, "rope_local_base_freq", &local.theta));
  RopeConfig rope_local;
  SG_RETURN_IF_ERROR(ReadRopeDict(sliding, source, local, &rope_local));
  config->rope_local = rope_local;
  return absl::OkStatus();
}

}  // namespace streamgen
