// The JSON Schema Test Suite against engine/grammar/json_schema.cc: for each
// schema of the suite's files, either the compiler refuses it naming an
// unsupported keyword (counted), or every test instance, serialized the way
// the grammar writes JSON (below), is accepted by the compiled grammar exactly
// when the suite says it is valid. Two matchers read the grammar text:
// llama.cpp's (llama_gbnf.h), independent of this project, and this project's
// (engine/grammar: ParseGrammar, CompileGrammar, GrammarMatcher); both must
// give the suite's answer.
//
// The serialization: compact JSON; object keys in the order the schema
// declares them (`properties` in order, then `required`, then the others
// sorted), since the grammar fixes that order; numbers with an integral value
// written as integers (JSON Schema's 1.0 == 1).
//
//   json_schema_suite_driver --suite DIR --libllama PATH --known FILE
//       [--min-supported N] [--min-agreeing N] [--verbose]
// Exit 0 when every instance of a supported schema agrees or is a known,
// explained limit (FILE), and the counts reach the floors.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "engine/grammar/grammar.h"
#include "engine/grammar/json_schema.h"
#include "engine/grammar/matcher.h"
#include "tests/json_schema_suite/llama_gbnf.h"

namespace {

using Json = nlohmann::ordered_json;

// `s` and the schemas it stands for at the same place ($ref, allOf, anyOf, oneOf).
void Collect(const Json& s, const Json& root, std::vector<const Json*>* out, int depth) {
  if (depth > 16 || !s.is_object()) return;
  out->push_back(&s);
  if (s.contains("$ref") && s["$ref"].is_string()) {
    std::string ref = s["$ref"].get<std::string>();
    if (ref.rfind("#", 0) == 0) {
      try {
        const Json& target = ref == "#" ? root : root.at(Json::json_pointer(ref.substr(1)));
        Collect(target, root, out, depth + 1);
      } catch (const std::exception&) {
      }
    }
  }
  for (const char* k : {"allOf", "anyOf", "oneOf"}) {
    if (s.contains(k) && s[k].is_array()) {
      for (const Json& sub : s[k]) Collect(sub, root, out, depth + 1);
    }
  }
}

void Serialize(const Json& v, const std::vector<const Json*>& schemas, const Json& root, std::string* out) {
  std::vector<const Json*> all;
  for (const Json* s : schemas) Collect(*s, root, &all, 0);
  if (v.is_object()) {
    std::vector<std::string> keys;
    auto add = [&](const std::string& k) {
      if (v.contains(k) && std::find(keys.begin(), keys.end(), k) == keys.end()) keys.push_back(k);
    };
    for (const Json* s : all) {
      if (s->contains("properties") && (*s)["properties"].is_object()) {
        for (auto it = (*s)["properties"].begin(); it != (*s)["properties"].end(); ++it) add(it.key());
      }
    }
    for (const Json* s : all) {
      if (s->contains("required") && (*s)["required"].is_array()) {
        for (const Json& r : (*s)["required"]) {
          if (r.is_string()) add(r.get<std::string>());
        }
      }
    }
    std::vector<std::string> rest;
    for (auto it = v.begin(); it != v.end(); ++it) {
      if (std::find(keys.begin(), keys.end(), it.key()) == keys.end()) rest.push_back(it.key());
    }
    std::sort(rest.begin(), rest.end());
    keys.insert(keys.end(), rest.begin(), rest.end());
    *out += '{';
    for (size_t i = 0; i < keys.size(); ++i) {
      if (i) *out += ',';
      *out += Json(keys[i]).dump() + ":";
      std::vector<const Json*> children;
      for (const Json* s : all) {
        if (s->contains("properties") && (*s)["properties"].contains(keys[i])) {
          children.push_back(&(*s)["properties"][keys[i]]);
        } else if (s->contains("additionalProperties")) {
          children.push_back(&(*s)["additionalProperties"]);
        }
      }
      Serialize(v[keys[i]], children, root, out);
    }
    *out += '}';
  } else if (v.is_array()) {
    *out += '[';
    for (size_t i = 0; i < v.size(); ++i) {
      if (i) *out += ',';
      std::vector<const Json*> children;
      for (const Json* s : all) {
        for (const char* k : {"prefixItems", "items"}) {
          if (!s->contains(k)) continue;
          const Json& items = (*s)[k];
          if (items.is_array() && i < items.size()) children.push_back(&items[i]);
          if (items.is_object()) children.push_back(&items);
        }
        if (s->contains("additionalItems")) children.push_back(&(*s)["additionalItems"]);
      }
      Serialize(v[i], children, root, out);
    }
    *out += ']';
  } else if (v.is_number_float() && std::isfinite(v.get<double>()) &&
             std::floor(v.get<double>()) == v.get<double>()) {
    char buf[400];
    std::snprintf(buf, sizeof buf, "%.0f", v.get<double>());
    *out += buf;
  } else {
    *out += v.dump();
  }
}

// This project's matcher over all of `text`.
bool OursAccepts(const std::shared_ptr<const streamgen::grammar::CompiledGrammar>& g, const std::string& text) {
  streamgen::grammar::GrammarMatcher m(g);
  return m.Accept(text) && m.CanTerminate();
}

std::string Arg(int argc, char** argv, const std::string& name, const std::string& fallback = "") {
  for (int i = 1; i + 1 < argc; ++i) {
    if (argv[i] == name) return argv[i + 1];
  }
  return fallback;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string suite = Arg(argc, argv, "--suite");
  const std::string libllama = Arg(argc, argv, "--libllama");
  const std::string known_path = Arg(argc, argv, "--known");
  const long min_supported = std::stol(Arg(argc, argv, "--min-supported", "0"));
  const long min_agreeing = std::stol(Arg(argc, argv, "--min-agreeing", "0"));
  bool verbose = false;
  for (int i = 1; i < argc; ++i) verbose = verbose || std::string(argv[i]) == "--verbose";
  if (suite.empty() || libllama.empty()) {
    std::cerr << "usage: json_schema_suite_driver --suite DIR --libllama PATH [--known FILE]\n";
    return 2;
  }
  std::string error;
  auto matcher = streamgen::testing::LlamaGbnf::Load(libllama, &error);
  if (!matcher) {
    std::cerr << "cannot load llama.cpp's matcher: " << error << " (run npm ci in tests/json_schema_suite)\n";
    return 1;
  }
  // Known limits: "file / group / test" -> reason.
  std::map<std::string, std::string> known;
  if (!known_path.empty()) {
    std::ifstream in(known_path);
    Json list = Json::parse(in);
    for (const Json& e : list) {
      known[e.at("file").get<std::string>() + " / " + e.at("group").get<std::string>() + " / " +
            e.at("test").get<std::string>()] = e.at("reason").get<std::string>();
    }
  }
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(suite)) {
    if (entry.path().extension() == ".json") files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  if (files.empty()) {
    std::cerr << "no test files under " << suite << "\n";
    return 1;
  }
  long schemas = 0, supported = 0, instances = 0, agreeing = 0, known_hits = 0, failures = 0;
  std::map<std::string, int> refused_by;
  std::set<std::string> known_used;
  for (const auto& path : files) {
    std::string file = std::filesystem::relative(path, suite).string();
    std::ifstream in(path);
    Json groups = Json::parse(in);
    for (const Json& group : groups) {
      ++schemas;
      const std::string gname = group.at("description").get<std::string>();
      absl::StatusOr<std::string> grammar = streamgen::JsonSchemaToGrammar(group.at("schema"));
      if (!grammar.ok()) {
        std::string msg(grammar.status().message());
        size_t q = msg.find("unsupported keyword '");
        size_t f = msg.find("unsupported format '");
        std::string why = q != std::string::npos   ? msg.substr(q + 21, msg.find('\'', q + 21) - q - 21)
                          : f != std::string::npos ? "format " + msg.substr(f + 20, msg.find('\'', f + 20) - f - 20)
                                                   : "";
        if (why.empty()) {
          // A refusal must name what it refuses.
          std::cout << "FAIL " << file << " / " << gname << ": refused without naming a keyword: " << msg << "\n";
          ++failures;
        } else {
          ++refused_by[why];
          if (verbose) std::cout << "refused " << file << " / " << gname << ": " << msg << "\n";
        }
        continue;
      }
      ++supported;
      if (!matcher->Parse(*grammar)) {
        std::cout << "FAIL " << file << " / " << gname << ": llama.cpp refuses the grammar:\n" << *grammar << "\n";
        ++failures;
        continue;
      }
      absl::StatusOr<streamgen::grammar::Grammar> parsed = streamgen::grammar::ParseGrammar(*grammar);
      absl::StatusOr<std::shared_ptr<const streamgen::grammar::CompiledGrammar>> ours =
          parsed.ok() ? streamgen::grammar::CompileGrammar(*parsed) : parsed.status();
      if (!ours.ok()) {
        std::cout << "FAIL " << file << " / " << gname << ": engine/grammar refuses the grammar: "
                  << ours.status() << "\n" << *grammar << "\n";
        ++failures;
        continue;
      }
      for (const Json& test : group.at("tests")) {
        ++instances;
        std::string text;
        Serialize(test.at("data"), {&group.at("schema")}, group.at("schema"), &text);
        bool valid = test.at("valid").get<bool>();
        bool accepted = matcher->Accepts(text);
        std::string id = file + " / " + gname + " / " + test.at("description").get<std::string>();
        if (OursAccepts(*ours, text) != accepted) {
          ++failures;
          std::cout << "FAIL " << id << ": " << text << ": llama.cpp " << (accepted ? "accepts" : "rejects")
                    << " it, engine/grammar does not\n";
          continue;
        }
        if (accepted == valid) {
          ++agreeing;
          continue;
        }
        auto k = known.find(id);
        if (k != known.end()) {
          ++known_hits;
          known_used.insert(id);
          if (verbose) std::cout << "known  " << id << ": " << k->second << "\n";
          continue;
        }
        ++failures;
        std::cout << "FAIL " << id << ": " << text << " is " << (valid ? "valid" : "invalid")
                  << " but the grammar " << (accepted ? "accepts" : "rejects") << " it\n";
        if (verbose) std::cout << *grammar << "\n";
      }
    }
  }
  for (const auto& [id, reason] : known) {
    if (!known_used.count(id)) {
      std::cout << "FAIL known limit that no longer disagrees (remove it): " << id << "\n";
      ++failures;
    }
  }
  std::cout << "schemas " << schemas << ", supported " << supported << ", refused " << schemas - supported
            << "; instances of supported schemas " << instances << ", agreeing " << agreeing
            << ", known limits " << known_hits << ", disagreeing " << failures << "\n";
  std::cout << "refused by keyword:";
  for (const auto& [k, n] : refused_by) std::cout << " " << k << " " << n << ";";
  std::cout << "\n";
  if (supported < min_supported || agreeing < min_agreeing) {
    std::cout << "FAIL below the floor: supported " << supported << " < " << min_supported << " or agreeing "
              << agreeing << " < " << min_agreeing << "\n";
    return 1;
  }
  return failures == 0 ? 0 : 1;
}
