// Random strings of the grammars compiled from JSON Schema files, for
// corpus.test.mjs to validate with ajv: per schema file and seed, a random
// walk of llama.cpp's matcher over the compiled grammar (llama_gbnf.h). Each
// finished walk is also matched by this project's matcher (engine/grammar):
// "ours" in the output says whether it accepts the walk.
//
//   json_schema_random_walk --libllama PATH --seeds N [--max-whitespace W] FILE...
// Prints one JSON line per walk: {"file", "seed", "finished", "text"}; a
// schema the compiler refuses prints {"file", "error"}.
#include <fstream>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "engine/grammar/grammar.h"
#include "engine/grammar/json_schema.h"
#include "engine/grammar/matcher.h"
#include "tests/json_schema_suite/llama_gbnf.h"

int main(int argc, char** argv) {
  std::string libllama;
  int seeds = 100;
  streamgen::JsonSchemaOptions options;
  std::vector<std::string> files;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--libllama" && i + 1 < argc) {
      libllama = argv[++i];
    } else if (a == "--seeds" && i + 1 < argc) {
      seeds = std::stoi(argv[++i]);
    } else if (a == "--max-whitespace" && i + 1 < argc) {
      options.max_whitespace = std::stoi(argv[++i]);
    } else {
      files.push_back(a);
    }
  }
  std::string error;
  auto matcher = streamgen::testing::LlamaGbnf::Load(libllama, &error);
  if (!matcher) {
    std::cerr << "cannot load llama.cpp's matcher: " << error << "\n";
    return 1;
  }
  using Json = nlohmann::ordered_json;
  for (const std::string& file : files) {
    std::ifstream in(file);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    absl::StatusOr<std::string> grammar = streamgen::JsonSchemaTextToGrammar(text, options);
    if (!grammar.ok()) {
      std::cout << Json{{"file", file}, {"error", std::string(grammar.status().message())}}.dump() << "\n";
      continue;
    }
    if (!matcher->Parse(*grammar)) {
      std::cout << Json{{"file", file}, {"error", "llama.cpp refuses the grammar"}, {"grammar", *grammar}}.dump()
                << "\n";
      continue;
    }
    absl::StatusOr<streamgen::grammar::Grammar> parsed = streamgen::grammar::ParseGrammar(*grammar);
    absl::StatusOr<std::shared_ptr<const streamgen::grammar::CompiledGrammar>> ours =
        parsed.ok() ? streamgen::grammar::CompileGrammar(*parsed) : parsed.status();
    if (!ours.ok()) {
      std::cout << Json{{"file", file}, {"error", "engine/grammar refuses the grammar: " + ours.status().ToString()},
                        {"grammar", *grammar}}.dump()
                << "\n";
      continue;
    }
    for (int seed = 0; seed < seeds; ++seed) {
      std::mt19937 rng(seed);
      std::string out;
      bool finished = matcher->RandomWalk(&rng, /*stop=*/0.5, /*max_chars=*/20000, &out);
      streamgen::grammar::GrammarMatcher m(*ours);
      bool ours_accepts = m.Accept(out) && m.CanTerminate();
      Json line = {{"file", file}, {"seed", seed}, {"finished", finished}, {"ours", ours_accepts}, {"text", out}};
      std::cout << line.dump(-1, ' ', false, Json::error_handler_t::replace) << "\n";
    }
  }
  return 0;
}
