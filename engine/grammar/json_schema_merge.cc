#include "engine/grammar/json_schema_merge.h"

#include <algorithm>
#include <cctype>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace streamgen::json_schema_internal {

// Keywords that say nothing about which instances are valid: skipped by design.
const std::set<std::string>& Annotations() {
  static const auto* kSet = new std::set<std::string>{
      "title",      "description", "$comment",  "examples",        "default",         "$schema",
      "deprecated", "readOnly",    "writeOnly", "contentEncoding", "contentMediaType"};
  return *kSet;
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
                         const std::string& why) {
  return Error(absl::StrCat("unsupported keyword '", keyword, "' at ", At(ptr),
                            why.empty() ? "" : " (" + why + ")"));
}

absl::Status Nothing(const std::string& ptr, const std::string& why) {
  return Error(absl::StrCat("the schema at ", At(ptr), " accepts nothing (", why, ")"));
}

absl::StatusOr<const Json*> ResolveRef(const Json& root, const std::string& ref,
                                       const std::string& ptr) {
  if (ref.empty() || ref[0] != '#' || (ref.size() > 1 && ref[1] != '/')) {
    return Unsupported("$ref", ptr,
                       "only local JSON pointers like #/$defs/name, not '" + ref + "'");
  }
  const Json* node = &root;
  size_t pos = 1;
  while (pos < ref.size()) {
    size_t next = ref.find('/', pos + 1);
    std::string raw =
        ref.substr(pos + 1, next == std::string::npos ? std::string::npos : next - pos - 1);
    std::string token;
    for (size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] == '~' && i + 1 < raw.size() && (raw[i + 1] == '0' || raw[i + 1] == '1')) {
        token += raw[++i] == '0' ? '~' : '/';
      } else if (raw[i] == '%' && i + 2 < raw.size() && std::isxdigit(raw[i + 1]) &&
                 std::isxdigit(raw[i + 2])) {
        token += static_cast<char>(std::stoi(raw.substr(i + 1, 2), nullptr, 16));
        i += 2;
      } else {
        token += raw[i];
      }
    }
    if (node->is_object() && node->contains(token)) {
      node = &(*node)[token];
    } else if (node->is_array() && !token.empty() &&
               token.find_first_not_of("0123456789") == std::string::npos &&
               std::stoul(token) < node->size()) {
      node = &(*node)[std::stoul(token)];
    } else {
      return Error(absl::StrCat("'$ref' '", ref, "' at ", At(ptr), " points to nothing"));
    }
    pos = next == std::string::npos ? ref.size() : next;
  }
  return node;
}

// The schema `s` with its allOf merged into the rest.
absl::StatusOr<Json> SchemaMerger::MergeAllOf(const Json& s, const std::string& ptr, int depth) {
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
absl::StatusOr<Json> SchemaMerger::Flatten(const Json& s, const std::string& ptr, int depth) {
  // Merging copies schemas: bounded, as allOf over $refs to allOf can branch.
  if (++flattened_ > 64 * options_.max_rules) {
    return Error(absl::StrCat("'allOf' merges too many schemas at ", At(ptr)));
  }
  if (depth > options_.max_depth) {
    return Error(absl::StrCat("schema nested deeper than ", options_.max_depth, " at ", At(ptr)));
  }
  if (s.is_boolean()) return s.get<bool>() ? Json::object() : s;
  if (!s.is_object())
    return Error(absl::StrCat("a schema must be an object or a boolean at ", At(ptr)));
  if (s.contains("$ref")) {
    for (auto it = s.begin(); it != s.end(); ++it) {
      if (it.key() != "$ref" && !Annotations().count(it.key())) {
        return Unsupported(it.key(), ptr, "beside '$ref'");
      }
    }
    if (!s["$ref"].is_string())
      return Error(absl::StrCat("'$ref' at ", At(ptr), " must be a string"));
    SG_ASSIGN_OR_RETURN(const Json* target, ResolveRef(root_, s["$ref"].get<std::string>(), ptr));
    return Flatten(*target, ptr, depth + 1);
  }
  if (s.contains("allOf")) return MergeAllOf(s, ptr, depth);
  return s;
}

absl::StatusOr<Json> SchemaMerger::Merge(const Json& a_in, const Json& b_in, const std::string& ptr,
                                         int depth) {
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
          SG_ASSIGN_OR_RETURN(mine[p.key()],
                              Merge(mine[p.key()], p.value(),
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
    } else if ((k == "minLength" || k == "minItems" || k == "minimum") && mine.is_number() &&
               v.is_number()) {
      mine = std::max(mine.get<double>(), v.get<double>());
    } else if ((k == "maxLength" || k == "maxItems" || k == "maximum") && mine.is_number() &&
               v.is_number()) {
      mine = std::min(mine.get<double>(), v.get<double>());
    } else {
      return Unsupported("allOf", ptr, "cannot merge two different '" + k + "'");
    }
  }
  // additionalProperties of one side also constrains the properties that the
  // other side declares: only mergeable when nothing new is declared.
  for (const Json* side : {&a, &b}) {
    const Json& other = side == &a ? b : a;
    if (!side->contains("additionalProperties") || (*side)["additionalProperties"] == Json(true))
      continue;
    if (!other.contains("properties")) continue;
    for (auto p = other["properties"].begin(); p != other["properties"].end(); ++p) {
      if (!side->contains("properties") || !(*side)["properties"].contains(p.key())) {
        return Unsupported("allOf", ptr,
                           "'additionalProperties' beside properties declared elsewhere");
      }
    }
  }
  return out;
}

}  // namespace streamgen::json_schema_internal
