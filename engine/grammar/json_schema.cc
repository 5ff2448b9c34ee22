#include "engine/grammar/json_schema.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "engine/grammar/json_schema_terminals.h"

namespace streamgen {
namespace {

using Json = nlohmann::ordered_json;
using json_schema_internal::GbnfLiteral;

// Keywords that say nothing about which instances are valid: skipped by design.
const std::set<std::string>& Annotations() {
  static const auto* kSet = new std::set<std::string>{
      "title",    "description", "$comment", "examples",  "default",
      "$schema",  "deprecated",  "readOnly", "writeOnly", "contentEncoding",
      "contentMediaType"};
  return *kSet;
}

// Every keyword the compiler reads (beside the annotations).
const std::set<std::string>& Supported() {
  static const auto* kSet = new std::set<std::string>{
      "type",      "enum",          "const",      "anyOf",       "oneOf",
      "allOf",     "$ref",          "$defs",      "definitions", "properties",
      "required",  "additionalProperties",        "items",       "prefixItems",
      "additionalItems",            "minItems",   "maxItems",    "uniqueItems",
      "minLength", "maxLength",     "pattern",    "format",      "minimum",
      "maximum",   "exclusiveMinimum",            "exclusiveMaximum"};
  return *kSet;
}

const std::vector<std::string>& AllTypes() {
  static const auto* kTypes = new std::vector<std::string>{
      "null", "boolean", "object", "array", "string", "number", "integer"};
  return *kTypes;
}

std::string EscapePointer(const std::string& key) {
  std::string out;
  for (char c : key) {
    if (c == '~') {
      out += "~0";
    } else if (c == '/') {
      out += "~1";
    } else {
      out += c;
    }
  }
  return out;
}

std::string At(const std::string& ptr) { return ptr.empty() ? "/" : ptr; }

absl::Status Error(const std::string& message) {
  return absl::InvalidArgumentError("json_schema: " + message);
}

absl::Status Unsupported(const std::string& keyword, const std::string& ptr,
                         const std::string& why = "") {
  return Error(absl::StrCat("unsupported keyword '", keyword, "' at ", At(ptr),
                            why.empty() ? "" : " (" + why + ")"));
}

absl::Status Nothing(const std::string& ptr, const std::string& why) {
  return Error(absl::StrCat("the schema at ", At(ptr), " accepts nothing (", why, ")"));
}

bool IsIntegral(const Json& v) {
  if (v.is_number_integer()) return true;
  if (!v.is_number_float()) return false;
  double d = v.get<double>();
  return std::isfinite(d) && std::floor(d) == d;
}

bool TypeMatches(const Json& v, const std::string& type) {
  if (type == "null") return v.is_null();
  if (type == "boolean") return v.is_boolean();
  if (type == "object") return v.is_object();
  if (type == "array") return v.is_array();
  if (type == "string") return v.is_string();
  if (type == "number") return v.is_number();
  if (type == "integer") return IsIntegral(v);
  return false;
}

void AppendCanonical(const Json& v, std::string* out) {
  if (v.is_object()) {
    std::vector<std::string> keys;
    for (auto it = v.begin(); it != v.end(); ++it) keys.push_back(it.key());
    std::sort(keys.begin(), keys.end());
    *out += '{';
    for (size_t i = 0; i < keys.size(); ++i) {
      if (i) *out += ',';
      *out += Json(keys[i]).dump();
      *out += ':';
      AppendCanonical(v.at(keys[i]), out);
    }
    *out += '}';
  } else if (v.is_array()) {
    *out += '[';
    for (size_t i = 0; i < v.size(); ++i) {
      if (i) *out += ',';
      AppendCanonical(v[i], out);
    }
    *out += ']';
  } else if (v.is_number_float() && IsIntegral(v) && std::fabs(v.get<double>()) < 9007199254740992.0) {
    *out += std::to_string(static_cast<int64_t>(v.get<double>()));
  } else {
    *out += v.dump();
  }
}

class Compiler {
 public:
  Compiler(const Json& root, const JsonSchemaOptions& options) : root_(root), options_(options) {}

  absl::StatusOr<std::string> Run() {
    if (options_.max_whitespace < 0) return Error("max_whitespace must be >= 0");
    SG_ASSIGN_OR_RETURN(std::string top, Schema(root_, "", 0));
    std::string out = absl::StrCat("root ::= ", top, "\n");
    for (const auto& [name, body] : rules_) absl::StrAppend(&out, name, " ::= ", body, "\n");
    if (out.size() > options_.max_grammar_bytes) {
      return Error(absl::StrCat("the grammar would be ", out.size(), " bytes, above the limit ",
                                options_.max_grammar_bytes));
    }
    return out;
  }

 private:
  // ---- rules ---------------------------------------------------------------

  // A rule with this body (shared with an earlier identical one); its name.
  absl::StatusOr<std::string> AddRule(const std::string& hint, const std::string& body) {
    auto it = by_body_.find(body);
    if (it != by_body_.end()) return it->second;
    std::string name = NewName(hint);
    SG_RETURN_IF_ERROR(CheckRuleCount());
    rules_.push_back({name, body});
    by_body_[body] = name;
    return name;
  }

  absl::Status CheckRuleCount() const {
    if (static_cast<int>(rules_.size()) >= options_.max_rules) {
      return Error(absl::StrCat("the grammar would have more than ", options_.max_rules, " rules"));
    }
    return absl::OkStatus();
  }

  std::string NewName(const std::string& hint) {
    std::string base;
    for (char c : hint) {
      if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) {
        base += c;
      } else if (c >= 'A' && c <= 'Z') {
        base += static_cast<char>(c - 'A' + 'a');
      } else if (!base.empty() && base.back() != '-') {
        base += '-';
      }
      if (base.size() >= 40) break;
    }
    while (!base.empty() && base.back() == '-') base.pop_back();
    if (base.empty() || base == "root") base = "v";
    std::string name = base;
    for (int n = 2; !names_.insert(name).second; ++n) name = absl::StrCat(base, "-", n);
    return name;
  }

  // The shared rules of plain JSON, added on first use.
  std::string Base(const std::string& name) {
    if (base_added_.insert(name).second) {
      std::string body;
      if (name == "ws") body = absl::StrCat("[ \\t\\n]{0,", options_.max_whitespace, "}");
      if (name == "json-char") body = json_schema_internal::kJsonCharExpr;
      if (name == "json-string") body = "\"\\\"\" " + Base("json-char") + "* \"\\\"\"";
      if (name == "json-integer") body = R"("-"? ("0" | [1-9] [0-9]*))";
      if (name == "json-number") {
        body = R"("-"? ("0" | [1-9] [0-9]*) ("." [0-9]+)? ([eE] [-+]? [0-9]{1,2})?)";
      }
      if (name == "json-boolean") body = R"("true" | "false")";
      if (name == "json-null") body = R"("null")";
      if (name == "json-value") {
        body = absl::StrCat(Base("json-object"), " | ", Base("json-array"), " | ",
                            Base("json-string"), " | ", Base("json-number"), " | ",
                            Base("json-boolean"), " | ", Base("json-null"));
      }
      if (name == "json-object") {
        body = absl::StrCat("\"{\"", W(), "(", Base("json-string"), W(), "\":\"", W(),
                            Base("json-value"), "(", W(), "\",\"", W(), Base("json-string"), W(),
                            "\":\"", W(), Base("json-value"), ")*)?", W(), "\"}\"");
      }
      if (name == "json-array") {
        body = absl::StrCat("\"[\"", W(), "(", Base("json-value"), "(", Sep(),
                            Base("json-value"), ")*)?", W(), "\"]\"");
      }
      rules_.push_back({name, body});
    }
    return name;
  }

  // Optional whitespace between tokens, with spaces around it.
  std::string W() { return options_.max_whitespace > 0 ? " " + Base("ws") + " " : " "; }
  std::string Sep() { return W() + "\",\"" + W(); }

  // ---- schemas -------------------------------------------------------------

  absl::StatusOr<std::string> Schema(const Json& s, const std::string& ptr, int depth) {
    if (depth > options_.max_depth) {
      return Error(absl::StrCat("schema nested deeper than ", options_.max_depth, " at ", At(ptr)));
    }
    if (s.is_boolean()) {
      if (s.get<bool>()) return Base("json-value");
      return Nothing(ptr, "false");
    }
    if (!s.is_object()) return Error(absl::StrCat("a schema must be an object or a boolean at ", At(ptr)));
    for (auto it = s.begin(); it != s.end(); ++it) {
      const std::string& k = it.key();
      if (Annotations().count(k) || Supported().count(k)) continue;
      if ((k == "$id" || k == "id") && ptr.empty()) continue;
      return Unsupported(k, ptr);
    }
    if (s.contains("$ref")) return Ref(s, ptr, depth);
    if (s.contains("allOf")) {
      SG_ASSIGN_OR_RETURN(Json merged, MergeAllOf(s, ptr, depth));
      return Schema(merged, ptr, depth + 1);
    }
    for (const char* k : {"anyOf", "oneOf"}) {
      if (s.contains(k)) return AnyOf(s, k, ptr, depth);
    }
    if (s.contains("enum") || s.contains("const")) return Enum(s, ptr);

    std::vector<std::string> types;
    SG_ASSIGN_OR_RETURN(types, Types(s, ptr));
    bool has_number = std::count(types.begin(), types.end(), "number") > 0;
    std::vector<std::string> alts;
    for (const std::string& t : types) {
      if (t == "integer" && has_number) continue;
      std::string expr;
      if (t == "null") expr = Base("json-null");
      if (t == "boolean") expr = Base("json-boolean");
      if (t == "string") {
        SG_ASSIGN_OR_RETURN(expr, String(s, ptr));
      }
      if (t == "number" || t == "integer") {
        SG_ASSIGN_OR_RETURN(expr, Number(s, ptr, t == "integer"));
      }
      if (t == "object") {
        SG_ASSIGN_OR_RETURN(expr, Object(s, ptr, depth));
      }
      if (t == "array") {
        SG_ASSIGN_OR_RETURN(expr, Array(s, ptr, depth));
      }
      alts.push_back(expr);
    }
    if (alts.size() == 1) return alts[0];
    return AddRule(Hint(ptr), absl::StrJoin(alts, " | "));
  }

  static std::string Hint(const std::string& ptr) {
    size_t slash = ptr.rfind('/');
    return slash == std::string::npos ? "value" : ptr.substr(slash + 1);
  }

  absl::StatusOr<std::vector<std::string>> Types(const Json& s, const std::string& ptr) {
    if (!s.contains("type")) return AllTypes();
    const Json& t = s["type"];
    std::vector<std::string> out;
    auto add = [&](const Json& v) -> absl::Status {
      if (!v.is_string() || !std::count(AllTypes().begin(), AllTypes().end(), v.get<std::string>())) {
        return Error(absl::StrCat("'type' at ", At(ptr), " must be one of null, boolean, object, ",
                                  "array, string, number, integer (or an array of them)"));
      }
      out.push_back(v.get<std::string>());
      return absl::OkStatus();
    };
    if (t.is_array()) {
      for (const Json& v : t) SG_RETURN_IF_ERROR(add(v));
      if (out.empty()) return Nothing(ptr, "'type' is an empty array");
    } else {
      SG_RETURN_IF_ERROR(add(t));
    }
    return out;
  }

  absl::StatusOr<std::optional<int64_t>> Count(const Json& s, const char* key, const std::string& ptr) {
    if (!s.contains(key)) return std::optional<int64_t>();
    const Json& v = s[key];
    if (!IsIntegral(v) || v.get<double>() < 0) {
      return Error(absl::StrCat("'", key, "' at ", At(ptr), " must be a non-negative integer"));
    }
    double d = v.get<double>();
    if (d > options_.max_repetition) {
      return Error(absl::StrCat("'", key, "' at ", At(ptr), " is ", v.dump(), ", above the limit ",
                                options_.max_repetition));
    }
    return std::optional<int64_t>(static_cast<int64_t>(d));
  }

  // ---- $ref, allOf, anyOf, enum --------------------------------------------

  absl::StatusOr<std::string> Ref(const Json& s, const std::string& ptr, int depth) {
    for (auto it = s.begin(); it != s.end(); ++it) {
      const std::string& k = it.key();
      if (k != "$ref" && k != "$defs" && k != "definitions" && !Annotations().count(k) &&
          !(ptr.empty() && (k == "$id" || k == "id"))) {
        return Unsupported(k, ptr, "beside '$ref'");
      }
    }
    if (!s["$ref"].is_string()) return Error(absl::StrCat("'$ref' at ", At(ptr), " must be a string"));
    const std::string ref = s["$ref"].get<std::string>();
    auto known = ref_rules_.find(ref);
    if (known != ref_rules_.end()) return known->second;
    SG_ASSIGN_OR_RETURN(const Json* target, Resolve(ref, ptr));
    // Named before its body is compiled, so that recursion refers to it.
    std::string name = NewName("ref-" + Hint(ref.substr(1)));
    ref_rules_[ref] = name;
    SG_ASSIGN_OR_RETURN(std::string body, Schema(*target, ref.substr(1), depth + 1));
    SG_RETURN_IF_ERROR(CheckRuleCount());
    rules_.push_back({name, body});
    return name;
  }

  absl::StatusOr<const Json*> Resolve(const std::string& ref, const std::string& ptr) {
    if (ref.empty() || ref[0] != '#' || (ref.size() > 1 && ref[1] != '/')) {
      return Unsupported("$ref", ptr, "only local JSON pointers like #/$defs/name, not '" + ref + "'");
    }
    const Json* node = &root_;
    size_t pos = 1;
    while (pos < ref.size()) {
      size_t next = ref.find('/', pos + 1);
      std::string raw = ref.substr(pos + 1, next == std::string::npos ? std::string::npos : next - pos - 1);
      std::string token;
      for (size_t i = 0; i < raw.size(); ++i) {
        if (raw[i] == '~' && i + 1 < raw.size() && (raw[i + 1] == '0' || raw[i + 1] == '1')) {
          token += raw[++i] == '0' ? '~' : '/';
        } else if (raw[i] == '%' && i + 2 < raw.size() && std::isxdigit(raw[i + 1]) && std::isxdigit(raw[i + 2])) {
          token += static_cast<char>(std::stoi(raw.substr(i + 1, 2), nullptr, 16));
          i += 2;
        } else {
          token += raw[i];
        }
      }
      if (node->is_object() && node->contains(token)) {
        node = &(*node)[token];
      } else if (node->is_array() && !token.empty() &&
                 token.find_first_not_of("0123456789") == std::string::npos && std::stoul(token) < node->size()) {
        node = &(*node)[std::stoul(token)];
      } else {
        return Error(absl::StrCat("'$ref' '", ref, "' at ", At(ptr), " points to nothing"));
      }
      pos = next == std::string::npos ? ref.size() : next;
    }
    return node;
  }

  absl::StatusOr<std::string> AnyOf(const Json& s, const char* key, const std::string& ptr, int depth) {
    const Json& branches = s[key];
    if (!branches.is_array() || branches.empty()) {
      return Error(absl::StrCat("'", key, "' at ", At(ptr), " must be a non-empty array"));
    }
    if (s.contains("anyOf") && s.contains("oneOf")) return Unsupported("oneOf", ptr, "beside 'anyOf'");
    // Sibling constraints apply to every branch: merged into each.
    Json siblings = Json::object();
    for (auto it = s.begin(); it != s.end(); ++it) {
      if (it.key() != key && !Annotations().count(it.key())) siblings[it.key()] = it.value();
    }
    std::vector<std::string> alts;
    for (size_t i = 0; i < branches.size(); ++i) {
      std::string branch_ptr = absl::StrCat(ptr, "/", key, "/", i);
      absl::StatusOr<std::string> expr;
      if (siblings.empty()) {
        expr = Schema(branches[i], branch_ptr, depth + 1);
      } else {
        SG_ASSIGN_OR_RETURN(Json merged, Merge(siblings, branches[i], branch_ptr, depth + 1));
        expr = Schema(merged, branch_ptr, depth + 1);
      }
      // A branch that accepts nothing is left out; other errors stand.
      if (!expr.ok() && absl::StrContains(expr.status().message(), "accepts nothing")) continue;
      if (!expr.ok()) return expr.status();
      alts.push_back(*expr);
    }
    if (alts.empty()) return Nothing(ptr, absl::StrCat("no branch of '", key, "' accepts anything"));
    if (alts.size() == 1) return alts[0];
    return AddRule(Hint(ptr), absl::StrJoin(alts, " | "));
  }

  absl::StatusOr<std::string> Enum(const Json& s, const std::string& ptr) {
    for (auto it = s.begin(); it != s.end(); ++it) {
      const std::string& k = it.key();
      if (k != "enum" && k != "const" && k != "type" && k != "$defs" && k != "definitions" &&
          !Annotations().count(k) && !(ptr.empty() && (k == "$id" || k == "id"))) {
        return Unsupported(k, ptr, s.contains("enum") ? "beside 'enum'" : "beside 'const'");
      }
    }
    std::vector<Json> values;
    if (s.contains("const")) values.push_back(s["const"]);
    if (s.contains("enum")) {
      if (!s["enum"].is_array()) return Error(absl::StrCat("'enum' at ", At(ptr), " must be an array"));
      if (s.contains("const")) {
        // Both: the const, if the enum has it.
        std::string c = CanonicalJson(s["const"]);
        values.clear();
        for (const Json& v : s["enum"]) {
          if (CanonicalJson(v) == c) values.push_back(v);
        }
      } else {
        values.assign(s["enum"].begin(), s["enum"].end());
      }
    }
    std::vector<std::string> types;
    SG_ASSIGN_OR_RETURN(types, Types(s, ptr));
    std::vector<std::string> alts;
    std::set<std::string> seen;
    for (const Json& v : values) {
      bool typed = false;
      for (const std::string& t : types) typed = typed || TypeMatches(v, t);
      std::string text = CanonicalJson(v);
      if (typed && seen.insert(text).second) alts.push_back(GbnfLiteral(text));
    }
    if (alts.empty()) return Nothing(ptr, "no value of 'enum' / 'const' is allowed");
    return AddRule(Hint(ptr), absl::StrJoin(alts, " | "));
  }

  // ---- merging (allOf; anyOf / oneOf with sibling keywords) ---------------

  // The schema `s` with its allOf merged into the rest.
  absl::StatusOr<Json> MergeAllOf(const Json& s, const std::string& ptr, int depth) {
    const Json& all = s["allOf"];
    if (!all.is_array() || all.empty()) {
      return Error(absl::StrCat("'allOf' at ", At(ptr), " must be a non-empty array"));
    }
    Json merged = s;
    merged.erase("allOf");
    for (size_t i = 0; i < all.size(); ++i) {
      SG_ASSIGN_OR_RETURN(merged, Merge(merged, all[i], absl::StrCat(ptr, "/allOf/", i), depth + 1));
    }
    return merged;
  }

  // A schema local to `ptr`: $ref followed (when it has no siblings), allOf merged.
  absl::StatusOr<Json> Flatten(const Json& s, const std::string& ptr, int depth) {
    // Merging copies schemas: bounded, as allOf over $refs to allOf can branch.
    if (++flattened_ > 64 * options_.max_rules) {
      return Error(absl::StrCat("'allOf' merges too many schemas at ", At(ptr)));
    }
    if (depth > options_.max_depth) {
      return Error(absl::StrCat("schema nested deeper than ", options_.max_depth, " at ", At(ptr)));
    }
    if (s.is_boolean()) return s.get<bool>() ? Json::object() : s;
    if (!s.is_object()) return Error(absl::StrCat("a schema must be an object or a boolean at ", At(ptr)));
    if (s.contains("$ref")) {
      for (auto it = s.begin(); it != s.end(); ++it) {
        if (it.key() != "$ref" && !Annotations().count(it.key())) {
          return Unsupported(it.key(), ptr, "beside '$ref'");
        }
      }
      if (!s["$ref"].is_string()) return Error(absl::StrCat("'$ref' at ", At(ptr), " must be a string"));
      SG_ASSIGN_OR_RETURN(const Json* target, Resolve(s["$ref"].get<std::string>(), ptr));
      return Flatten(*target, ptr, depth + 1);
    }
    if (s.contains("allOf")) return MergeAllOf(s, ptr, depth);
    return s;
  }

  absl::StatusOr<Json> Merge(const Json& a_in, const Json& b_in, const std::string& ptr, int depth) {
    SG_ASSIGN_OR_RETURN(Json a, Flatten(a_in, ptr, depth));
    SG_ASSIGN_OR_RETURN(Json b, Flatten(b_in, ptr, depth));
    if (a.is_boolean() || b.is_boolean()) return Nothing(ptr, "false in 'allOf'");
    Json out = a;
    for (auto it = b.begin(); it != b.end(); ++it) {
      const std::string& k = it.key();
      const Json& v = it.value();
      if (Annotations().count(k) || k == "$defs" || k == "definitions") continue;
      if (!out.contains(k)) {
        out[k] = v;
        continue;
      }
      Json& mine = out[k];
      if (mine == v) continue;
      if (k == "properties" && mine.is_object() && v.is_object()) {
        for (auto p = v.begin(); p != v.end(); ++p) {
          if (!mine.contains(p.key())) {
            mine[p.key()] = p.value();
          } else if (mine[p.key()] != p.value()) {
            SG_ASSIGN_OR_RETURN(mine[p.key()], Merge(mine[p.key()], p.value(),
                                                     ptr + "/properties/" + EscapePointer(p.key()), depth + 1));
          }
        }
      } else if (k == "required" && mine.is_array() && v.is_array()) {
        for (const Json& name : v) {
          if (std::find(mine.begin(), mine.end(), name) == mine.end()) mine.push_back(name);
        }
      } else if (k == "type") {
        Json at = mine.is_array() ? mine : Json::array({mine});
        Json bt = v.is_array() ? v : Json::array({v});
        Json both = Json::array();
        for (const Json& t : at) {
          for (const Json& u : bt) {
            if (t == u || (t == "integer" && u == "number")) both.push_back(t);
            if (t == "number" && u == "integer") both.push_back(u);
          }
        }
        if (both.empty()) return Nothing(ptr, "the types of 'allOf' do not meet");
        mine = both;
      } else if ((k == "minLength" || k == "minItems" || k == "minimum") && mine.is_number() && v.is_number()) {
        mine = std::max(mine.get<double>(), v.get<double>());
      } else if ((k == "maxLength" || k == "maxItems" || k == "maximum") && mine.is_number() && v.is_number()) {
        mine = std::min(mine.get<double>(), v.get<double>());
      } else {
        return Unsupported("allOf", ptr, "cannot merge two different '" + k + "'");
      }
    }
    // additionalProperties of one side also constrains the properties that the
    // other side declares: only mergeable when nothing new is declared.
    for (const Json* side : {&a, &b}) {
      const Json& other = side == &a ? b : a;
      if (!side->contains("additionalProperties") || (*side)["additionalProperties"] == Json(true)) continue;
      if (!other.contains("properties")) continue;
      for (auto p = other["properties"].begin(); p != other["properties"].end(); ++p) {
        if (!side->contains("properties") || !(*side)["properties"].contains(p.key())) {
          return Unsupported("allOf", ptr, "'additionalProperties' beside properties declared elsewhere");
        }
      }
    }
    return out;
  }

  // ---- the types -----------------------------------------------------------

  absl::StatusOr<std::string> String(const Json& s, const std::string& ptr) {
    SG_ASSIGN_OR_RETURN(std::optional<int64_t> min_len, Count(s, "minLength", ptr));
    SG_ASSIGN_OR_RETURN(std::optional<int64_t> max_len, Count(s, "maxLength", ptr));
    std::string content;
    if (s.contains("format")) {
      if (!s["format"].is_string()) return Error(absl::StrCat("'format' at ", At(ptr), " must be a string"));
      std::string format = s["format"].get<std::string>();
      for (const char* k : {"pattern", "minLength", "maxLength"}) {
        if (s.contains(k)) return Unsupported(k, ptr, "beside 'format'");
      }
      absl::StatusOr<std::string> expr = json_schema_internal::FormatContentExpr(format);
      if (!expr.ok()) {
        return Error(absl::StrCat("unsupported format '", format, "' at ", At(ptr),
                                  " (supported: date, time, date-time, uuid, email, ipv4)"));
      }
      content = *expr;
    } else if (s.contains("pattern")) {
      if (!s["pattern"].is_string()) return Error(absl::StrCat("'pattern' at ", At(ptr), " must be a string"));
      for (const char* k : {"minLength", "maxLength"}) {
        if (s.contains(k)) return Unsupported(k, ptr, "beside 'pattern'");
      }
      absl::StatusOr<std::string> expr =
          json_schema_internal::PatternContentExpr(s["pattern"].get<std::string>(), options_.max_repetition);
      if (!expr.ok()) {
        return Error(absl::StrCat("'pattern' at ", At(ptr), ": ", expr.status().message()));
      }
      content = *expr;
    } else if (min_len || max_len) {
      int64_t lo = min_len.value_or(0);
      if (max_len && *max_len < lo) return Nothing(ptr, "maxLength < minLength");
      content = absl::StrCat(Base("json-char"), "{", lo, ",", max_len ? std::to_string(*max_len) : "", "}");
    } else {
      return Base("json-string");
    }
    return AddRule(Hint(ptr) + "-string", absl::StrCat("\"\\\"\" ", content, " \"\\\"\""));
  }

  absl::StatusOr<std::optional<double>> Bound(const Json& s, const char* key, const std::string& ptr) {
    if (!s.contains(key) || s[key].is_boolean()) return std::optional<double>();
    if (!s[key].is_number()) return Error(absl::StrCat("'", key, "' at ", At(ptr), " must be a number"));
    return std::optional<double>(s[key].get<double>());
  }

  absl::StatusOr<std::string> Number(const Json& s, const std::string& ptr, bool integer) {
    SG_ASSIGN_OR_RETURN(std::optional<double> min, Bound(s, "minimum", ptr));
    SG_ASSIGN_OR_RETURN(std::optional<double> max, Bound(s, "maximum", ptr));
    SG_ASSIGN_OR_RETURN(std::optional<double> xmin, Bound(s, "exclusiveMinimum", ptr));
    SG_ASSIGN_OR_RETURN(std::optional<double> xmax, Bound(s, "exclusiveMaximum", ptr));
    // Draft 4: exclusiveMinimum / exclusiveMaximum are booleans on minimum / maximum.
    for (const char* k : {"exclusiveMinimum", "exclusiveMaximum"}) {
      if (s.contains(k) && s[k].is_boolean() && s[k].get<bool>()) {
        bool lower = std::string(k) == "exclusiveMinimum";
        if (lower) {
          if (!min) return Error(absl::StrCat("'exclusiveMinimum' true at ", At(ptr), " without 'minimum'"));
          xmin = min;
          min.reset();
        } else {
          if (!max) return Error(absl::StrCat("'exclusiveMaximum' true at ", At(ptr), " without 'maximum'"));
          xmax = max;
          max.reset();
        }
      }
    }
    if (!min && !max && !xmin && !xmax) return Base(integer ? "json-integer" : "json-number");
    if (integer) {
      std::optional<double> lo, hi;
      if (min) lo = std::ceil(*min);
      if (xmin) lo = std::max(lo.value_or(-INFINITY), std::floor(*xmin) + 1);
      if (max) hi = std::floor(*max);
      if (xmax) hi = std::min(hi.value_or(INFINITY), std::ceil(*xmax) - 1);
      constexpr double kLimit = 1e18;
      for (const auto& bound : {lo, hi}) {
        if (bound && std::fabs(*bound) > kLimit) {
          return Unsupported(lo == bound ? "minimum" : "maximum", ptr, "an integer bound beyond 1e18");
        }
      }
      if (lo && hi && *lo > *hi) return Nothing(ptr, "no integer between the bounds");
      std::optional<int64_t> ilo, ihi;
      if (lo) ilo = static_cast<int64_t>(*lo);
      if (hi) ihi = static_cast<int64_t>(*hi);
      SG_ASSIGN_OR_RETURN(std::string expr, json_schema_internal::IntegerRangeExpr(ilo, ihi));
      return AddRule(Hint(ptr) + "-int", expr);
    }
    // Numbers: only bounds at 0 (sign constraints) are exact in a grammar.
    const std::pair<const char*, std::optional<double>> bounds[] = {
        {"minimum", min}, {"maximum", max}, {"exclusiveMinimum", xmin}, {"exclusiveMaximum", xmax}};
    for (const auto& [k, v] : bounds) {
      if (v && *v != 0) return Unsupported(k, ptr, "a number bound other than 0; integer bounds are supported");
    }
    bool neg = !min && !xmin, zero = !xmin && !xmax, pos = !max && !xmax;
    const std::string exp = R"(([eE] [-+]? [0-9]{1,2})?)";  // (no underflow to 0 in a double)
    const std::string positive = R"(([1-9] [0-9]* ("." [0-9]+)? | "0." [0-9]* [1-9] [0-9]*))";
    std::vector<std::string> alts;
    if (neg) alts.push_back("\"-\" " + positive + " " + exp);
    if (zero) alts.push_back(R"("0" ("." "0"+)? )" + exp);
    if (pos) alts.push_back(positive + " " + exp);
    if (alts.empty()) return Nothing(ptr, "no number between the bounds");
    return AddRule(Hint(ptr) + "-number", absl::StrJoin(alts, " | "));
  }

  absl::StatusOr<std::string> Object(const Json& s, const std::string& ptr, int depth);
  absl::StatusOr<std::string> Array(const Json& s, const std::string& ptr, int depth);

  const Json& root_;
  const JsonSchemaOptions& options_;
  std::vector<std::pair<std::string, std::string>> rules_;  // name, body (root apart)
  std::map<std::string, std::string> by_body_;
  std::set<std::string> names_ = {"root", "ws", "json-char", "json-string", "json-integer",
                                  "json-number", "json-boolean", "json-null", "json-value",
                                  "json-object", "json-array"};
  std::set<std::string> base_added_;
  std::map<std::string, std::string> ref_rules_;  // $ref -> rule name
  int64_t flattened_ = 0;                         // Flatten calls so far
};

absl::StatusOr<std::string> Compiler::Object(const Json& s, const std::string& ptr, int depth) {
  struct Item {
    std::string expr;
    bool required;
  };
  Json props = s.value("properties", Json::object());
  if (!props.is_object()) return Error(absl::StrCat("'properties' at ", At(ptr), " must be an object"));
  std::vector<std::string> required;
  if (s.contains("required")) {
    if (!s["required"].is_array()) return Error(absl::StrCat("'required' at ", At(ptr), " must be an array"));
    for (const Json& r : s["required"]) {
      if (!r.is_string()) return Error(absl::StrCat("'required' at ", At(ptr), " must hold strings"));
      if (std::find(required.begin(), required.end(), r.get<std::string>()) == required.end()) {
        required.push_back(r.get<std::string>());
      }
    }
  }
  Json additional = s.contains("additionalProperties") ? s["additionalProperties"]
                                                       : Json(options_.allow_additional_properties_by_default);
  const bool additional_allowed = !(additional.is_boolean() && !additional.get<bool>());

  std::vector<Item> items;
  std::vector<std::string> declared;  // JSON text of every name, quotes stripped
  auto kv = [&](const std::string& name, const std::string& value) {
    return absl::StrCat(GbnfLiteral(Json(name).dump()), W(), "\":\"", W(), value);
  };
  for (auto it = props.begin(); it != props.end(); ++it) {
    const std::string& name = it.key();
    bool req = std::count(required.begin(), required.end(), name) > 0;
    std::string text = Json(name).dump();
    declared.push_back(text.substr(1, text.size() - 2));
    std::string sub_ptr = ptr + "/properties/" + EscapePointer(name);
    if (it.value().is_boolean() && !it.value().get<bool>()) {
      if (req) return Nothing(ptr, "required property '" + name + "' is false");
      continue;  // never present
    }
    SG_ASSIGN_OR_RETURN(std::string value, Schema(it.value(), sub_ptr, depth + 1));
    items.push_back({kv(name, value), req});
  }
  for (const std::string& name : required) {
    if (props.contains(name)) continue;
    if (!additional_allowed) {
      return Nothing(ptr, "required property '" + name + "' is not allowed by additionalProperties");
    }
    std::string value;
    if (additional.is_boolean()) {
      value = Base("json-value");
    } else {
      SG_ASSIGN_OR_RETURN(value, Schema(additional, ptr + "/additionalProperties", depth + 1));
    }
    std::string text = Json(name).dump();
    declared.push_back(text.substr(1, text.size() - 2));
    items.push_back({kv(name, value), true});
  }
  std::string extra;  // one additional property, or empty
  if (additional_allowed) {
    std::string value = Base("json-value");
    if (!additional.is_boolean()) {
      SG_ASSIGN_OR_RETURN(value, Schema(additional, ptr + "/additionalProperties", depth + 1));
    }
    SG_ASSIGN_OR_RETURN(std::string key,
                        AddRule(Hint(ptr) + "-other-key",
                                absl::StrCat("\"\\\"\" ", json_schema_internal::KeyNotInExpr(declared),
                                             " \"\\\"\"")));
    extra = absl::StrCat(key, W(), "\":\"", W(), value);
  }

  // tail[i]: the items from i on, each after a comma; then the extras.
  const size_t n = items.size();
  std::vector<std::string> tail(n + 1);
  tail[n] = extra.empty() ? "" : absl::StrCat("(", Sep(), extra, ")*");
  for (size_t i = n; i-- > 0;) {
    std::string one = absl::StrCat(Sep(), items[i].expr);
    tail[i] = absl::StrCat(items[i].required ? one : "(" + one + ")?", " ", tail[i + 1]);
  }
  size_t first_required = n;
  for (size_t i = 0; i < n; ++i) {
    if (items[i].required) {
      first_required = i;
      break;
    }
  }
  std::string body;
  if (first_required < n) {
    for (size_t j = 0; j < first_required; ++j) absl::StrAppend(&body, "(", items[j].expr, Sep(), ")? ");
    absl::StrAppend(&body, items[first_required].expr, " ", tail[first_required + 1]);
  } else {
    // All optional: the first present item starts the body, the rest follow
    // it in order. Each tail is a rule so that the size stays linear.
    std::vector<std::string> alts;
    std::string tail_rule;
    for (size_t i = n; i-- > 0;) {
      SG_ASSIGN_OR_RETURN(tail_rule,
                          AddRule(Hint(ptr) + "-tail", tail[i + 1].empty() ? "\"\"" : tail[i + 1]));
      alts.insert(alts.begin(), absl::StrCat(items[i].expr, " ", tail_rule));
    }
    if (!extra.empty()) alts.push_back(absl::StrCat(extra, " ", tail[n]));
    if (!alts.empty()) body = absl::StrCat("(", absl::StrJoin(alts, " | "), ")?");
  }
  return AddRule(Hint(ptr), absl::StrCat("\"{\"", W(), body, W(), "\"}\""));
}

absl::StatusOr<std::string> Compiler::Array(const Json& s, const std::string& ptr, int depth) {
  if (s.contains("uniqueItems") && !(s["uniqueItems"].is_boolean() && !s["uniqueItems"].get<bool>())) {
    return Unsupported("uniqueItems", ptr, "a grammar cannot compare items");
  }
  SG_ASSIGN_OR_RETURN(std::optional<int64_t> min_items, Count(s, "minItems", ptr));
  SG_ASSIGN_OR_RETURN(std::optional<int64_t> max, Count(s, "maxItems", ptr));
  const int64_t min = min_items.value_or(0);
  // prefix: positional schemas; rest: the schema of every later item.
  std::vector<Json> prefix;
  std::string prefix_key;
  Json rest = true;
  if (s.contains("prefixItems")) {
    if (s.contains("additionalItems")) return Unsupported("additionalItems", ptr, "beside 'prefixItems'");
    if (!s["prefixItems"].is_array()) return Error(absl::StrCat("'prefixItems' at ", At(ptr), " must be an array"));
    prefix.assign(s["prefixItems"].begin(), s["prefixItems"].end());
    prefix_key = "prefixItems";
    if (s.contains("items")) rest = s["items"];
  } else if (s.contains("items") && s["items"].is_array()) {
    prefix.assign(s["items"].begin(), s["items"].end());
    prefix_key = "items";
    if (s.contains("additionalItems")) rest = s["additionalItems"];
  } else if (s.contains("items")) {
    rest = s["items"];  // (additionalItems means nothing here)
  }
  std::vector<std::string> prefix_exprs;
  int64_t limit = max.value_or(-1);  // -1: none
  for (size_t i = 0; i < prefix.size(); ++i) {
    if (prefix[i].is_boolean() && !prefix[i].get<bool>()) {
      // No item may stand at i: the array ends before it.
      limit = limit < 0 ? static_cast<int64_t>(i) : std::min<int64_t>(limit, i);
      rest = false;
      break;
    }
    SG_ASSIGN_OR_RETURN(std::string e, Schema(prefix[i], absl::StrCat(ptr, "/", prefix_key, "/", i), depth + 1));
    prefix_exprs.push_back(e);
  }
  std::string rest_expr;
  if (!(rest.is_boolean() && !rest.get<bool>())) {
    std::string rest_ptr = ptr + (prefix_key == "items" ? "/additionalItems" : "/items");
    SG_ASSIGN_OR_RETURN(rest_expr, Schema(rest, rest_ptr, depth + 1));
  }
  const int64_t k = static_cast<int64_t>(prefix_exprs.size());
  int64_t most = rest_expr.empty() ? k : -1;
  if (limit >= 0) most = most < 0 ? limit : std::min(most, limit);
  if (most >= 0 && most < min) return Nothing(ptr, "fewer items can stand than minItems");
  if (most == 0) return AddRule(Hint(ptr), absl::StrCat("\"[\"", W(), "\"]\""));

  // The items after the first i, each after a comma.
  std::function<std::string(int64_t)> tail = [&](int64_t i) -> std::string {
    if (most >= 0 && i >= most) return "";
    if (i >= k) {
      int64_t at_least = std::max<int64_t>(0, min - i);
      std::string q = most < 0 ? absl::StrCat("{", at_least, ",}") : absl::StrCat("{", at_least, ",", most - i, "}");
      if (q == "{0,}") q = "*";
      return absl::StrCat("(", Sep(), rest_expr, ")", q);
    }
    std::string one = absl::StrCat(Sep(), prefix_exprs[i], " ", tail(i + 1));
    return i >= min ? "(" + one + ")?" : one;
  };
  std::string first = k > 0 ? prefix_exprs[0] : rest_expr;
  std::string body = absl::StrCat(first, " ", tail(1));
  if (min == 0) body = "(" + body + ")?";
  return AddRule(Hint(ptr), absl::StrCat("\"[\"", W(), body, W(), "\"]\""));
}

}  // namespace

std::string CanonicalJson(const nlohmann::ordered_json& value) {
  std::string out;
  AppendCanonical(value, &out);
  return out;
}

absl::StatusOr<std::string> JsonSchemaToGrammar(const nlohmann::ordered_json& schema,
                                                const JsonSchemaOptions& options) {
  return Compiler(schema, options).Run();
}

absl::StatusOr<std::string> JsonSchemaTextToGrammar(std::string_view schema_text,
                                                    const JsonSchemaOptions& options) {
  nlohmann::ordered_json schema = nlohmann::ordered_json::parse(schema_text, nullptr, /*allow_exceptions=*/false);
  if (schema.is_discarded()) {
    // Parse again with exceptions for the position in the message.
    try {
      nlohmann::ordered_json ignored = nlohmann::ordered_json::parse(schema_text);
      (void)ignored;
    } catch (const nlohmann::json::exception& e) {
      return absl::InvalidArgumentError(absl::StrCat("json_schema: not valid JSON: ", e.what()));
    }
    return absl::InvalidArgumentError("json_schema: not valid JSON");
  }
  return JsonSchemaToGrammar(schema, options);
}

}  // namespace streamgen
