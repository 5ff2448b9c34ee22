// Token mask time of the grammar engine (engine/grammar/, issue 22).
//
// For each tokenizer: builds the TokenVocabulary, compiles the constraint
// (the built-in JSON object grammar, or --grammar FILE in the GBNF dialect,
// or --regex), then replays generated JSON documents as a model would emit
// them: per token, FillNextTokenBitmask (timed) and AcceptToken. The
// documents are random but fixed by --seed: nested objects and arrays,
// strings with accents, CJK and emoji, numbers, literals. Prints per-token
// mask time p50 / p99 / max for the first document (cold caches) and for all
// of them, the compile times, and the cache sizes. bench/README.md has
// figures.
//
//   streamgen-bench-grammar --tokenizers a/tokenizer.json,b/tokenizer.json [--docs 50]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_split.h"
#include "engine/grammar/constraint.h"
#include "engine/grammar/grammar.h"
#include "engine/grammar/token_matcher.h"
#include "engine/grammar/vocabulary.h"
#include "engine/text/tokenizer.h"

ABSL_FLAG(std::string, tokenizers, "", "comma-separated tokenizer.json / tokenizer.model paths");
ABSL_FLAG(int, docs, 50, "JSON documents replayed per tokenizer");
ABSL_FLAG(int, seed, 1, "seed of the documents");
ABSL_FLAG(double, slow_us, 0, "print each mask slower than this (with the text before it)");
ABSL_FLAG(std::string, grammar, "", "a grammar file (GBNF dialect) instead of the JSON grammar");

namespace streamgen {
namespace {

using Clock = std::chrono::steady_clock;

double Micros(Clock::duration d) { return std::chrono::duration<double, std::micro>(d).count(); }

std::string RandomString(std::mt19937& rng) {
  static const std::vector<std::string> parts = {"a", "name", "Zoë", "中文", "😀", " ", "x1",
                                                 "\\n", "\\\"", "value", "é", "Straße", "-"};
  std::string s;
  const int n = 1 + rng() % 4;
  for (int i = 0; i < n; ++i) s += parts[rng() % parts.size()];
  return "\"" + s + "\"";
}

std::string RandomValue(std::mt19937& rng, int depth);

std::string RandomObject(std::mt19937& rng, int depth) {
  const int n = depth > 2 ? rng() % 2 : 1 + rng() % 4;
  std::string s = "{";
  for (int i = 0; i < n; ++i) {
    if (i > 0) s += ", ";
    s += RandomString(rng) + ": " + RandomValue(rng, depth + 1);
  }
  return s + "}";
}

std::string RandomValue(std::mt19937& rng, int depth) {
  switch (rng() % (depth > 2 ? 4 : 6)) {
    case 0: return RandomString(rng);
    case 1: return std::to_string(static_cast<int>(rng() % 100000) - 500);
    case 2: return std::to_string(rng() % 1000) + "." + std::to_string(rng() % 100) + "e" +
                   std::to_string(rng() % 10);
    case 3: return (rng() % 3 == 0) ? "true" : (rng() % 2 ? "false" : "null");
    case 4: {
      std::string s = "[";
      const int n = rng() % 4;
      for (int i = 0; i < n; ++i) s += (i ? ", " : "") + RandomValue(rng, depth + 1);
      return s + "]";
    }
    default: return RandomObject(rng, depth);
  }
}

struct Percentiles {
  double p50, p99, max;
};

Percentiles Summarize(std::vector<double> v) {
  if (v.empty()) return {0, 0, 0};
  std::sort(v.begin(), v.end());
  return {v[v.size() / 2], v[std::min(v.size() - 1, v.size() * 99 / 100)], v.back()};
}

int Run(const std::string& path) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok =
      path.size() > 5 && path.substr(path.size() - 5) == ".json" ? Tokenizer::LoadHf(path)
                                                                  : Tokenizer::Load(path);
  if (!tok.ok()) {
    std::fprintf(stderr, "%s\n", std::string(tok.status().message()).c_str());
    return 1;
  }
  auto t0 = Clock::now();
  std::shared_ptr<const TokenVocabulary> vocab =
      BuildTokenVocabulary(**tok, {(*tok)->eos_id()}, (*tok)->piece_count());
  const double vocab_ms = Micros(Clock::now() - t0) / 1000;

  ConstraintSpec spec;
  spec.kind = ConstraintSpec::Kind::kJsonObject;
  if (!absl::GetFlag(FLAGS_grammar).empty()) {
    std::ifstream in(absl::GetFlag(FLAGS_grammar));
    std::stringstream ss;
    ss << in.rdbuf();
    spec.kind = ConstraintSpec::Kind::kGrammar;
    spec.text = ss.str();
  }
  if (spec.kind == ConstraintSpec::Kind::kJsonObject) {
    spec.kind = ConstraintSpec::Kind::kGrammar;
    spec.text = grammar::JsonGrammarText(/*object_root=*/true);
  }
  t0 = Clock::now();
  auto first = CompileConstraint(spec, vocab);  // builds the vocabulary's trie
  const double first_compile_ms = Micros(Clock::now() - t0) / 1000;
  // A comment makes a new spec: compiled again (not the cache's), the trie shared.
  spec.text += "\n# again\n";
  t0 = Clock::now();
  auto compiled = CompileConstraint(spec, vocab);
  const double compile_ms = Micros(Clock::now() - t0) / 1000;
  if (!compiled.ok()) {
    std::fprintf(stderr, "%s\n", std::string(compiled.status().message()).c_str());
    return 1;
  }

  std::mt19937 rng(absl::GetFlag(FLAGS_seed));
  std::vector<uint32_t> mask((vocab->size() + 31) / 32);
  std::vector<double> all, cold, warm;
  int rejected = 0;
  for (int d = 0; d < absl::GetFlag(FLAGS_docs); ++d) {
    const std::string doc = RandomObject(rng, 0);
    const std::vector<int> ids = (*tok)->Encode(doc);
    std::unique_ptr<TokenMatcher> m = (*compiled)->NewMatcher();
    for (size_t i = 0; i <= ids.size(); ++i) {
      const auto s = Clock::now();
      m->FillNextTokenBitmask(mask.data());
      const double us = Micros(Clock::now() - s);
      all.push_back(us);
      if (absl::GetFlag(FLAGS_slow_us) > 0 && us > absl::GetFlag(FLAGS_slow_us)) {
        std::string before;
        for (size_t k = 0; k < i; ++k) before += vocab->bytes[ids[k]];
        std::printf("  slow mask %.0f us after '%s'\n", us, before.c_str());
      }
      if (d == 0) cold.push_back(us);
      if (d >= absl::GetFlag(FLAGS_docs) / 2) warm.push_back(us);
      if (i == ids.size()) break;
      if (!m->AcceptToken(ids[i])) {
        ++rejected;
        break;
      }
    }
  }
  const Percentiles pc = Summarize(cold), pa = Summarize(all), pw = Summarize(warm);
  const auto* gc = dynamic_cast<const grammar::GrammarConstraint*>(compiled->get());
  const grammar::GrammarConstraint::Stats st = gc->stats();
  std::printf(
      "%s: vocab %d, vocabulary %.0f ms, compile %.1f ms (first, with the trie: %.0f ms); "
      "mask us: first doc p50 %.1f p99 %.1f max %.0f (%zu tokens); all p50 %.1f p99 %.1f max %.0f "
      "(%zu tokens, %d docs); second half p50 %.1f p99 %.1f max %.0f; context entries %lld, state entries %lld, state hits %lld misses "
      "%lld%s\n",
      path.c_str(), vocab->size(), vocab_ms, compile_ms, first_compile_ms, pc.p50, pc.p99, pc.max,
      cold.size(), pa.p50, pa.p99, pa.max, all.size(), absl::GetFlag(FLAGS_docs), pw.p50, pw.p99,
      pw.max,
      static_cast<long long>(st.context_entries), static_cast<long long>(st.state_entries),
      static_cast<long long>(st.state_hits), static_cast<long long>(st.state_misses),
      rejected ? " REJECTED TOKENS" : "");
  (void)first;
  return rejected ? 1 : 0;
}

}  // namespace
}  // namespace streamgen

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  int rc = 0;
  const std::vector<std::string> paths =
      absl::StrSplit(absl::GetFlag(FLAGS_tokenizers), ',', absl::SkipEmpty());
  for (const std::string& path : paths) {
    rc |= streamgen::Run(path);
  }
  return rc;
}
