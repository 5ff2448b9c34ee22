#include "server/openai_structured.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/openai_api.h"

namespace streamgen {
namespace {

using Json = nlohmann::ordered_json;

using openai_json::Field;
using openai_json::TypeName;
constexpr auto& Bad = openai_json::BadPath;  // INVALID_ARGUMENT "<path> <message>", param `param`

// One constraint found in the body: where (for messages) and what.
struct Found {
  std::string where;  // "response_format", "structured_outputs.regex", "guided_json"
  std::string param;  // the top-level field
  v1::GenerateRequest constraint;  // only its oneof set
};

absl::Status StringOf(const Json& value, const std::string& param, const std::string& where,
                      std::string* out) {
  if (!value.is_string()) return Bad(param, where, absl::StrCat("must be a string, got ", TypeName(value)));
  *out = value.get<std::string>();
  return absl::OkStatus();
}

// A JSON Schema given as an object (OpenAI) or as JSON text (vLLM accepts both).
absl::Status SchemaOf(const Json& value, const std::string& param, const std::string& where,
                      std::string* out) {
  if (value.is_object() || value.is_boolean()) {
    *out = value.dump();
    return absl::OkStatus();
  }
  if (value.is_string()) {
    Json parsed = Json::parse(value.get<std::string>(), nullptr, false);
    if (parsed.is_discarded() || !(parsed.is_object() || parsed.is_boolean())) {
      return Bad(param, where, "must be a JSON Schema (an object, or its JSON text)");
    }
    *out = parsed.dump();
    return absl::OkStatus();
  }
  return Bad(param, where, absl::StrCat("must be a JSON Schema object, got ", TypeName(value)));
}

absl::Status ChoicesOf(const Json& value, const std::string& param, const std::string& where,
                       v1::ChoiceConstraint* out) {
  if (!value.is_array()) {
    return Bad(param, where, absl::StrCat("must be an array of strings, got ", TypeName(value)));
  }
  for (size_t i = 0; i < value.size(); ++i) {
    if (!value[i].is_string()) {
      return Bad(param, absl::StrCat(where, "[", i, "]"),
                 absl::StrCat("must be a string, got ", TypeName(value[i])));
    }
    out->add_choices(value[i].get<std::string>());
  }
  return absl::OkStatus();
}

bool IsSchemaName(const std::string& name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-')) return false;
  }
  return true;
}

absl::Status ResponseFormat(const Json& format, std::vector<Found>* found) {
  const std::string p = "response_format";
  if (!format.is_object()) return Bad(p, p, absl::StrCat("must be an object, got ", TypeName(format)));
  const Json* type = Field(format, "type");
  if (type == nullptr || !type->is_string()) {
    return Bad(p, "response_format.type", "must be one of \"text\", \"json_object\", \"json_schema\"");
  }
  const std::string kind = type->get<std::string>();
  if (kind == "text") return absl::OkStatus();
  Found f{p, p, {}};
  if (kind == "json_object") {
    f.constraint.set_json_object(true);
  } else if (kind == "json_schema") {
    const Json* spec = Field(format, "json_schema");
    if (spec == nullptr) return Bad(p, "response_format.json_schema", "is required with type \"json_schema\"");
    if (!spec->is_object()) {
      return Bad(p, "response_format.json_schema", absl::StrCat("must be an object, got ", TypeName(*spec)));
    }
    const Json* name = Field(*spec, "name");
    if (name == nullptr) return Bad(p, "response_format.json_schema.name", "is required");
    if (!name->is_string() || !IsSchemaName(name->get<std::string>())) {
      return Bad(p, "response_format.json_schema.name",
                 "must be a string of a-z, A-Z, 0-9, _ and - of at most 64 characters");
    }
    if (const Json* strict = Field(*spec, "strict"); strict != nullptr && !strict->is_boolean()) {
      return Bad(p, "response_format.json_schema.strict",
                 absl::StrCat("must be a boolean, got ", TypeName(*strict)));
    }
    const Json* schema = Field(*spec, "schema");
    if (schema == nullptr) {
      f.constraint.set_json_object(true);  // OpenAI's schema is optional: any JSON object
    } else {
      absl::Status s = SchemaOf(*schema, p, "response_format.json_schema.schema",
                                f.constraint.mutable_json_schema());
      if (!s.ok()) return s;
    }
  } else {
    return Bad(p, "response_format.type",
               absl::StrCat("must be one of \"text\", \"json_object\", \"json_schema\", got \"",
                            kind, "\""));
  }
  found->push_back(std::move(f));
  return absl::OkStatus();
}

// vLLM's keys, in structured_outputs or as guided_<key> at the top level.
absl::Status VllmKey(const std::string& key, const Json& value, const std::string& param,
                     const std::string& where, std::vector<Found>* found) {
  Found f{where, param, {}};
  absl::Status s;
  if (key == "json") {
    s = SchemaOf(value, param, where, f.constraint.mutable_json_schema());
  } else if (key == "regex") {
    s = StringOf(value, param, where, f.constraint.mutable_regex());
  } else if (key == "grammar") {
    s = StringOf(value, param, where, f.constraint.mutable_grammar());
  } else if (key == "choice") {
    s = ChoicesOf(value, param, where, f.constraint.mutable_choice());
  } else if (key == "json_object") {
    if (!value.is_boolean()) return Bad(param, where, absl::StrCat("must be a boolean, got ", TypeName(value)));
    if (!value.get<bool>()) return absl::OkStatus();
    f.constraint.set_json_object(true);
  }
  if (!s.ok()) return s;
  found->push_back(std::move(f));
  return absl::OkStatus();
}

}  // namespace

absl::Status ParseLogitBias(const Json& body, v1::GenerateRequest* request) {
  const Json* bias = Field(body, "logit_bias");
  if (bias == nullptr) return absl::OkStatus();
  if (!bias->is_object()) {
    return Bad("logit_bias", "logit_bias",
               absl::StrCat("must be an object of token id -> bias, got ", TypeName(*bias)));
  }
  auto* out = request->mutable_logit_bias();
  for (const auto& [key, value] : bias->items()) {
    int32_t id = 0;
    if (!absl::SimpleAtoi(key, &id)) {
      return Bad("logit_bias", absl::StrCat("logit_bias[\"", key, "\"]:"),
                 "the key must be a token id (an integer, as a string)");
    }
    if (!value.is_number()) {
      return Bad("logit_bias", absl::StrCat("logit_bias[\"", key, "\"]:"),
                 absl::StrCat("the bias must be a number, got ", TypeName(value)));
    }
    (*out)[id] = value.get<float>();
  }
  return absl::OkStatus();
}

absl::Status ParseConstraint(const Json& body, v1::GenerateRequest* request) {
  std::vector<Found> found;
  if (const Json* format = Field(body, "response_format"); format != nullptr) {
    absl::Status s = ResponseFormat(*format, &found);
    if (!s.ok()) return s;
  }
  static const char* const kKeys[] = {"json", "regex", "choice", "grammar", "json_object"};
  if (const Json* so = Field(body, "structured_outputs"); so != nullptr) {
    const std::string p = "structured_outputs";
    if (!so->is_object()) return Bad(p, p, absl::StrCat("must be an object, got ", TypeName(*so)));
    for (const auto& [key, value] : so->items()) {
      if (value.is_null()) continue;
      if (std::find(std::begin(kKeys), std::end(kKeys), key) == std::end(kKeys)) {
        return Bad(p, absl::StrCat(p, ".", key),
                   "is not supported (json, regex, choice, grammar, json_object are)");
      }
      absl::Status s = VllmKey(key, value, p, absl::StrCat(p, ".", key), &found);
      if (!s.ok()) return s;
    }
  }
  for (const char* key : {"json", "regex", "choice", "grammar"}) {
    const std::string name = absl::StrCat("guided_", key);
    if (const Json* value = Field(body, name.c_str()); value != nullptr) {
      absl::Status s = VllmKey(key, *value, name, name, &found);
      if (!s.ok()) return s;
    }
  }
  if (found.empty()) return absl::OkStatus();
  if (found.size() > 1) {
    return Bad(found[1].param, absl::StrCat(found[0].where, " and ", found[1].where),
               "each constrain the output: set one constraint, not both");
  }
  request->MergeFrom(found[0].constraint);
  return absl::OkStatus();
}

}  // namespace streamgen
