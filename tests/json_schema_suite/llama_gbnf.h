// llama.cpp's GBNF matcher as an independent reference for the grammars that
// engine/grammar/json_schema.cc writes: the prebuilt libllama of npm
// @node-llama-cpp/linux-x64 (llama.cpp of September 2026), loaded at run time
// with dlopen, through the internal functions its own tests use
// (src/llama-grammar.h: llama_grammar_init_impl, llama_grammar_accept,
// llama_grammar_get_stacks). Test-only; not thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <string>

namespace streamgen::testing {

class LlamaGbnf {
 public:
  // Loads libllama from `path`; nullptr (with the reason in *error) if it cannot.
  static std::unique_ptr<LlamaGbnf> Load(const std::string& path, std::string* error);
  ~LlamaGbnf();

  // Parses `grammar` (root rule `root`); false when llama.cpp refuses it.
  bool Parse(const std::string& grammar);
  // Whether the parsed grammar matches all of `text` (UTF-8).
  bool Accepts(const std::string& text);
  // A random string of the grammar's language: from the start, repeatedly a
  // random next character that some parse allows (ending, where the grammar
  // can end, with probability `stop`). false when no end came within
  // `max_chars` characters.
  bool RandomWalk(std::mt19937* rng, double stop, int max_chars, std::string* out);

 private:
  LlamaGbnf() = default;
  struct Api;
  std::unique_ptr<Api> api_;
  void* grammar_ = nullptr;  // llama_grammar*, the parsed grammar at its start
};

}  // namespace streamgen::testing
