// Fuzz target: the grammar engine's compilers (engine/grammar/): the GBNF
// parser and the regex compiler, then masks on a small vocabulary.
//
// Input: the first byte picks the compiler (even: a grammar in the GBNF
// dialect, odd: a regex), the rest is its text (at most 4 KiB).
//
// Properties: never a crash, a hang or unbounded memory; a refused input is
// INVALID_ARGUMENT "grammar: line L, column C: ..." with L and C inside the
// text (or one of the position-less messages: no root, too large, a rule by
// name), or "regex: column C: ..." with C inside the pattern; a grammar that
// compiles prints (ToText) as a grammar that compiles and agrees with it on
// the strings walked below; for a few steps of a walk chosen by the input,
// the token mask equals brute force (each token fed to a copy of the
// matcher), EOS is allowed exactly when the matcher can terminate.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "engine/grammar/constraint.h"
#include "engine/grammar/grammar.h"
#include "engine/grammar/matcher.h"
#include "tests/fuzz/fuzz_util.h"

namespace streamgen {
namespace {

// Every byte, then some multi-byte tokens (whole and partial UTF-8), then EOS.
std::shared_ptr<const TokenVocabulary> Vocabulary() {
  static const std::shared_ptr<const TokenVocabulary> vocab = [] {
    auto v = std::make_shared<TokenVocabulary>();
    for (int b = 0; b < 256; ++b) v->bytes.push_back(std::string(1, static_cast<char>(b)));
    for (const char* t : {"ab", "abc", "{\"", "\":", "\",", "true", "12", "é", "\xC3", "\xE4\xB8",
                          "中", "😀", "\xF0\x9F", "\x98\x80", "  ", "\n ", "a\"", "\\\\u", "--"}) {
      v->bytes.push_back(t);
    }
    v->special.assign(v->bytes.size(), false);
    v->bytes.push_back("</s>");
    v->special.push_back(true);
    v->eos_ids = {static_cast<int>(v->bytes.size()) - 1};
    return v;
  }();
  return vocab;
}

int CountLines(const std::string& s) { return 1 + static_cast<int>(std::count(s.begin(), s.end(), '\n')); }

void CheckError(const absl::Status& s, bool regex, const std::string& text) {
  FUZZ_CHECK(s.code() == absl::StatusCode::kInvalidArgument, "error code %d: %s",
             static_cast<int>(s.code()), std::string(s.message()).c_str());
  const std::string m(s.message());
  if (regex) {
    if (m == "regex: the pattern is not valid UTF-8" || absl::StartsWith(m, "regex: too large")) return;
    int column = 0;
    std::vector<absl::string_view> parts = absl::StrSplit(m, absl::MaxSplits(':', 2));
    FUZZ_CHECK(parts.size() == 3 && absl::ConsumePrefix(&parts[1], " column ") &&
                   absl::SimpleAtoi(parts[1], &column),
               "regex error without a column: %s", m.c_str());
    FUZZ_CHECK(column >= 1 && column <= static_cast<int>(text.size()) + 1,
               "regex error column %d outside the pattern: %s", column, m.c_str());
    return;
  }
  if (m == "grammar: no rule named 'root' (the start rule)" || absl::StartsWith(m, "grammar: too large") ||
      absl::StartsWith(m, "grammar: rule '")) {
    return;
  }
  int line = 0, column = 0;
  std::vector<absl::string_view> parts = absl::StrSplit(m, absl::MaxSplits(':', 2));
  std::vector<absl::string_view> lc;
  if (parts.size() == 3) lc = absl::StrSplit(parts[1], ',');
  FUZZ_CHECK(lc.size() == 2 && absl::ConsumePrefix(&lc[0], " line ") &&
                 absl::SimpleAtoi(lc[0], &line) && absl::ConsumePrefix(&lc[1], " column ") &&
                 absl::SimpleAtoi(lc[1], &column),
             "grammar error without a line and column: %s", m.c_str());
  FUZZ_CHECK(line >= 1 && line <= CountLines(text) && column >= 1 &&
                 column <= static_cast<int>(text.size()) + 1,
             "grammar error position outside the text: %s", m.c_str());
}

bool Bit(const std::vector<uint32_t>& mask, int id) { return (mask[id / 32] >> (id % 32)) & 1; }

void CheckMasks(const CompiledConstraint& c, const TokenVocabulary& v, uint32_t seed) {
  std::unique_ptr<TokenMatcher> m = c.NewMatcher();
  std::vector<uint32_t> mask((v.size() + 31) / 32);
  for (int step = 0; step < 6 && !m->IsTerminated(); ++step) {
    m->FillNextTokenBitmask(mask.data());
    std::vector<int> allowed;
    for (int id = 0; id < v.size(); ++id) {
      std::unique_ptr<TokenMatcher> copy = m->Clone();
      const bool brute = copy->AcceptToken(id);
      FUZZ_CHECK(Bit(mask, id) == brute, "step %d token %d: mask %d, brute force %d", step, id,
                 Bit(mask, id), brute);
      if (brute) allowed.push_back(id);
    }
    FUZZ_CHECK(Bit(mask, v.eos_ids[0]) == m->CanTerminate(), "EOS bit and CanTerminate differ");
    if (allowed.empty()) return;
    seed = seed * 1103515245u + 12345u;
    const int id = allowed[(seed >> 8) % allowed.size()];
    if (id == v.eos_ids[0]) return;
    FUZZ_CHECK(m->AcceptToken(id), "an allowed token refused");
  }
}

}  // namespace
}  // namespace streamgen

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace streamgen;
  if (size < 1 || size > 4097) return 0;
  const bool regex = data[0] & 1;
  const std::string text(reinterpret_cast<const char*>(data + 1), size - 1);
  absl::StatusOr<grammar::Grammar> g =
      regex ? grammar::RegexToGrammar(text) : grammar::ParseGrammar(text);
  if (!g.ok()) {
    CheckError(g.status(), regex, text);
    return 0;
  }
  ConstraintSpec spec;
  spec.kind = regex ? ConstraintSpec::Kind::kRegex : ConstraintSpec::Kind::kGrammar;
  spec.text = text;
  absl::StatusOr<std::shared_ptr<const CompiledConstraint>> c = CompileConstraint(spec, Vocabulary());
  if (!c.ok()) {
    CheckError(c.status(), regex, text);
    return 0;
  }
  // The printed grammar compiles too and agrees on a few strings.
  absl::StatusOr<grammar::Grammar> again = grammar::ParseGrammar(grammar::ToText(*g));
  FUZZ_CHECK(again.ok(), "ToText does not parse: %s", std::string(again.status().message()).c_str());
  auto a = grammar::CompileGrammar(*g);
  auto b = grammar::CompileGrammar(*again);
  FUZZ_CHECK(a.ok() && b.ok(), "a grammar or its ToText does not compile");
  for (size_t cut = 0; cut <= text.size() && cut < 64; cut += 7) {
    const std::string s = text.substr(cut, 16);
    FUZZ_CHECK(grammar::GrammarMatcher::FullMatch(*a, s) == grammar::GrammarMatcher::FullMatch(*b, s),
               "ToText changes the language");
  }
  uint32_t seed = 0;
  for (uint8_t ch : text) seed = seed * 31 + ch;
  CheckMasks(**c, *Vocabulary(), seed);
  return 0;
}
