// Constrained decoding through the engine, with a test-only constraint (a
// fixed set of allowed ids per step) so that the plumbing is tested apart
// from the grammar engine: the mask reaches the sampler, EOS only where the
// constraint can end, a complete match ends with kStop, resume replays the
// matcher, cancel frees it, compiled constraints are cached; and logit_bias
// through the engine. Then real constraints (engine/grammar) sampled at
// temperature 1 over many seeds, judged by independent matchers: PCRE2 for
// regexes and grammars, nlohmann::json for JSON.
#include <algorithm>
#include <atomic>
#include <future>
#include <chrono>
#include <map>
#include <mutex>
#include <thread>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "engine/engine.h"
#include "engine/request_validation.h"
#include "tests/engine_test_util.h"

namespace streamgen {
namespace {

using ::testing::HasSubstr;

std::atomic<int> live_matchers{0};

// Whether `text` as a whole matches `pattern`, judged by PCRE2: the regex
// engine of this project's tokenizers (engine/text/hf_text.h), independent of
// engine/grammar/regex.cc. PCRE's syntax and meaning are what the regex
// constraint documents: UTF mode without UCP (\d \w \s stay ASCII), newline
// LF ('.' is any character but \n), anchored at both ends (PCRE2_ENDANCHORED:
// unlike '$', no trailing newline slips through). Text that is not valid
// UTF-8 fails (PCRE2 checks it in UTF mode).
::testing::AssertionResult PcreFullMatch(const std::string& pattern, const std::string& text) {
  pcre2_compile_context* context = pcre2_compile_context_create(nullptr);
  pcre2_set_newline(context, PCRE2_NEWLINE_LF);
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   PCRE2_UTF | PCRE2_ANCHORED | PCRE2_ENDANCHORED, &error, &offset,
                                   context);
  pcre2_compile_context_free(context);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof(message));
    return ::testing::AssertionFailure() << "PCRE2 cannot compile /" << pattern << "/ at offset "
                                         << offset << ": " << reinterpret_cast<char*>(message);
  }
  pcre2_match_data* data = pcre2_match_data_create_from_pattern(code, nullptr);
  const int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), 0, 0,
                             data, nullptr);
  pcre2_match_data_free(data);
  pcre2_code_free(code);
  if (rc >= 0) return ::testing::AssertionSuccess() << "\"" << text << "\" matches /" << pattern << "/";
  if (rc == PCRE2_ERROR_NOMATCH) {
    return ::testing::AssertionFailure() << "\"" << text << "\" does not match /" << pattern << "/";
  }
  PCRE2_UCHAR message[256];
  pcre2_get_error_message(rc, message, sizeof(message));
  return ::testing::AssertionFailure() << "\"" << text << "\" against /" << pattern
                                       << "/: " << reinterpret_cast<char*>(message);
}

// Allowed ids per step; EOS from step `can_end_from` on (-1: never); after
// the last step, terminated (terminate_at_end) or only EOS allowed.
struct Plan {
  std::vector<std::vector<int>> steps;
  int can_end_from = -1;
  bool terminate_at_end = true;
  std::vector<int> eos;
};

class PlanMatcher : public TokenMatcher {
 public:
  explicit PlanMatcher(const Plan* plan) : plan_(plan) { live_matchers++; }
  PlanMatcher(const PlanMatcher& other) : plan_(other.plan_), pos_(other.pos_), ended_(other.ended_) {
    live_matchers++;
  }
  ~PlanMatcher() override { live_matchers--; }
  void FillNextTokenBitmask(uint32_t* mask) override {
    std::fill(mask, mask + words_, 0u);
    auto set = [&](int id) { mask[id / 32] |= uint32_t{1} << (id % 32); };
    if (pos_ < static_cast<int>(plan_->steps.size())) {
      for (int id : plan_->steps[pos_]) set(id);
    }
    if (CanTerminate()) {
      for (int id : plan_->eos) set(id);
    }
  }
  bool AcceptToken(int id) override {
    if (IsTerminated()) return false;
    if (CanTerminate() && std::count(plan_->eos.begin(), plan_->eos.end(), id) > 0) {
      ended_ = true;
      return true;
    }
    if (pos_ >= static_cast<int>(plan_->steps.size())) return false;
    const std::vector<int>& ok = plan_->steps[pos_];
    if (std::find(ok.begin(), ok.end(), id) == ok.end()) return false;
    ++pos_;
    return true;
  }
  void Rollback(int n) override {
    pos_ -= n;
    ended_ = false;
  }
  bool CanTerminate() const override { return plan_->can_end_from >= 0 && pos_ >= plan_->can_end_from; }
  bool IsTerminated() const override {
    return ended_ || (plan_->terminate_at_end && pos_ == static_cast<int>(plan_->steps.size()));
  }
  std::unique_ptr<TokenMatcher> Clone() const override { return std::make_unique<PlanMatcher>(*this); }

  int words_ = 0;

 private:
  const Plan* plan_;
  int pos_ = 0;
  bool ended_ = false;
};

class PlanConstraint : public CompiledConstraint {
 public:
  PlanConstraint(Plan plan, int vocab) : plan_(std::move(plan)), vocab_(vocab) {}
  std::unique_ptr<TokenMatcher> NewMatcher() const override {
    auto m = std::make_unique<PlanMatcher>(&plan_);
    m->words_ = (vocab_ + 31) / 32;
    return m;
  }

 private:
  Plan plan_;
  int vocab_;
};

// Requests carry the plan's name as a "grammar"; the compiler looks it up.
class ConstrainedEngineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { engine_ = MakeEngine(STREAMGEN_TINY_MODEL_DIR).release(); }
  static void TearDownTestSuite() { delete engine_; }

  void SetUp() override {
    ASSERT_NE(engine_, nullptr);
    compiles_ = std::make_shared<int>(0);
    std::shared_ptr<int> compiles = compiles_;
    std::map<std::string, Plan>* plans = &plans_;
    engine_->SetConstraintCompilerForTesting(
        [compiles, plans](const ConstraintSpec& spec, std::shared_ptr<const TokenVocabulary> vocab)
            -> absl::StatusOr<std::shared_ptr<const CompiledConstraint>> {
          ++*compiles;
          auto it = plans->find(spec.text);
          if (it == plans->end()) {
            return absl::InvalidArgumentError("grammar: line 1, column 1: no such plan");
          }
          return std::make_shared<PlanConstraint>(it->second, vocab->size());
        });
  }

  // Ordinary text tokens: not special, 2+ bytes, no space, pairwise not
  // substrings of each other (so that a stop string names one of them).
  std::vector<int> TextIds(int count) {
    const TokenVocabulary& vocab = *engine_->token_vocabulary();
    std::vector<int> out;
    for (int id = vocab.size() - 1; id >= 0 && static_cast<int>(out.size()) < count; --id) {
      const std::string& b = vocab.bytes[id];
      if (vocab.special[id] || b.size() < 2 || b.find(' ') != std::string::npos) continue;
      bool clash = false;
      for (int other : out) {
        const std::string& o = vocab.bytes[other];
        clash |= o.find(b) != std::string::npos || b.find(o) != std::string::npos;
      }
      if (!clash) out.push_back(id);
    }
    EXPECT_EQ(static_cast<int>(out.size()), count);
    return out;
  }

  GenerationRequest Constrained(const std::string& plan, int max_new_tokens, float temperature = 0,
                                uint64_t seed = 1) {
    GenerationRequest r;
    r.prompt = "The river runs";
    r.max_new_tokens = max_new_tokens;
    r.sampling.temperature = temperature;
    r.sampling.seed = seed;
    r.constraint.kind = ConstraintSpec::Kind::kGrammar;
    r.constraint.text = plan;
    return r;
  }

  struct Result {
    std::vector<int> ids;
    std::string text;
    TokenEvent last;
    std::vector<TokenInfo> tokens;
  };
  Result Run(const GenerationRequest& r) {
    Collector c;
    std::vector<TokenInfo> tokens;
    std::mutex mu;
    auto sink = c.Sink();
    auto id = engine_->Submit(r, [&](TokenEvent&& e) {
      {
        std::lock_guard<std::mutex> lock(mu);
        tokens.insert(tokens.end(), e.tokens.begin(), e.tokens.end());
      }
      sink(std::move(e));
    });
    EXPECT_TRUE(id.ok()) << id.status();
    Result out;
    if (!id.ok()) return out;
    out.last = c.Wait();
    out.ids = c.ids;
    out.text = c.text;
    std::lock_guard<std::mutex> lock(mu);
    out.tokens = tokens;
    return out;
  }

  static Engine* engine_;
  std::map<std::string, Plan> plans_;
  std::shared_ptr<int> compiles_;
};
Engine* ConstrainedEngineTest::engine_ = nullptr;

TEST_F(ConstrainedEngineTest, EveryTokenIsAllowedAndACompleteMatchEndsWithStop) {
  const std::vector<int> t = TextIds(6);
  plans_["p"] = Plan{{{t[0], t[1]}, {t[2]}, {t[3], t[4], t[5]}}};
  // Unconstrained, the model says something else: the mask is what acts.
  GenerationRequest free_text = Constrained("p", 3);
  free_text.constraint = {};
  Result unconstrained = Run(free_text);
  ASSERT_EQ(unconstrained.ids.size(), 3u);
  const bool model_prefers_them = (unconstrained.ids[0] == t[0] || unconstrained.ids[0] == t[1]) &&
                                  unconstrained.ids[1] == t[2];
  EXPECT_FALSE(model_prefers_them) << "pick other ids: the model prefers these anyway";
  std::set<std::vector<int>> seen;
  for (uint64_t seed = 1; seed <= 12; ++seed) {
    GenerationRequest r = Constrained("p", 10, /*temperature=*/2.0f, seed);
    r.top_logprobs = 3;
    Result got = Run(r);
    ASSERT_EQ(got.ids.size(), 3u) << got.last.status;
    EXPECT_TRUE(got.ids[0] == t[0] || got.ids[0] == t[1]);
    EXPECT_EQ(got.ids[1], t[2]);
    EXPECT_TRUE(got.ids[2] == t[3] || got.ids[2] == t[4] || got.ids[2] == t[5]);
    EXPECT_EQ(got.last.finish_reason, FinishReason::kStop);
    // Logprobs are of the masked distribution: a forced token has log 1 = 0,
    // and alternatives are allowed ids only.
    ASSERT_EQ(got.tokens.size(), 3u);
    EXPECT_NEAR(got.tokens[1].logprob, 0.0f, 1e-5);
    for (const TokenLogprob& alt : got.tokens[0].top_logprobs) {
      if (alt.logprob > -1e30f) {
        EXPECT_TRUE(alt.id == t[0] || alt.id == t[1]) << alt.id;
      }
    }
    seen.insert(got.ids);
  }
  EXPECT_GT(seen.size(), 1u) << "temperature 2 over 12 seeds never varied";
}

TEST_F(ConstrainedEngineTest, EosComesOnlyWhereTheConstraintCanEnd) {
  const ModelInfo& info = engine_->model_info();
  ASSERT_FALSE(info.eos_token_ids.empty());
  const int eos = info.eos_token_ids[0];
  const std::vector<int> t = TextIds(4);
  // EOS biased +100: without the mask it would come first. It is allowed
  // from step 2 on only.
  plans_["e"] = Plan{{{t[0]}, {t[1]}, {t[2], t[3]}, {t[2], t[3]}}, /*can_end_from=*/2, false,
                     info.eos_token_ids};
  GenerationRequest r = Constrained("e", 10);
  r.sampling.logit_bias = {{eos, 100.0f}};
  Result got = Run(r);
  EXPECT_EQ(got.ids, (std::vector<int>{t[0], t[1], eos}));
  EXPECT_EQ(got.last.finish_reason, FinishReason::kEos);
  // ignore_eos is refused with a constraint, by name.
  r.ignore_eos = true;
  absl::StatusOr<uint64_t> refused = engine_->Submit(r, [](TokenEvent&&) {});
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(refused.status().message(),
              HasSubstr("ignore_eos cannot be combined with a constraint (grammar)"));
  EXPECT_EQ(FieldOf(refused.status()), "ignore_eos");
}

TEST_F(ConstrainedEngineTest, AStopStringEndsTheOutputInsideTheGrammar) {
  const std::vector<int> t = TextIds(3);
  plans_["s"] = Plan{{{t[0]}, {t[1]}, {t[2]}}};
  GenerationRequest r = Constrained("s", 10);
  r.stop = {engine_->token_vocabulary()->bytes[t[1]]};
  Result got = Run(r);
  EXPECT_EQ(got.ids, (std::vector<int>{t[0], t[1]}));
  EXPECT_EQ(got.last.finish_reason, FinishReason::kStop);
  EXPECT_EQ(got.text, engine_->Detokenize({t[0]}));
}

TEST_F(ConstrainedEngineTest, CompiledOnceForTheSameSpecAndErrorsNameTheConstraint) {
  const std::vector<int> t = TextIds(2);
  plans_["c"] = Plan{{{t[0]}, {t[1]}}};
  const EngineStats before = engine_->stats();
  Run(Constrained("c", 5));
  Run(Constrained("c", 5, 1.0f, 7));
  EXPECT_EQ(*compiles_, 1);
  const EngineStats after = engine_->stats();
  EXPECT_EQ(after.constraint_compiles - before.constraint_compiles, 1);
  EXPECT_EQ(after.constraint_cache_hits - before.constraint_cache_hits, 1);
  // A compile error is the request's, naming the constraint field.
  absl::StatusOr<uint64_t> bad = engine_->Submit(Constrained("missing", 5), [](TokenEvent&&) {});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.status().message(), "grammar: line 1, column 1: no such plan");
  EXPECT_EQ(FieldOf(bad.status()), "constraint");
  // The shape is checked before compiling.
  GenerationRequest empty = Constrained("", 5);
  bad = engine_->Submit(empty, [](TokenEvent&&) {});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(), "grammar: the text is empty");
}

TEST_F(ConstrainedEngineTest, ResumeReplaysTheMatcherAndRefusesIdsItDoesNotAllow) {
  const std::vector<int> t = TextIds(6);
  plans_["r"] = Plan{{{t[0], t[1]}, {t[2], t[3]}, {t[4], t[5]}, {t[0], t[1]}}};
  GenerationRequest r = Constrained("r", 10, 1.5f, 42);
  Result whole = Run(r);
  ASSERT_EQ(whole.ids.size(), 4u);
  GenerationRequest resumed = r;
  resumed.resume_token_ids = {whole.ids[0], whole.ids[1]};
  Result rest = Run(resumed);
  EXPECT_EQ(rest.ids, (std::vector<int>{whole.ids[2], whole.ids[3]}));
  EXPECT_EQ(rest.last.finish_reason, FinishReason::kStop);
  // An id the constraint does not allow at its position.
  resumed.resume_token_ids = {whole.ids[0], t[4]};
  absl::StatusOr<uint64_t> bad = engine_->Submit(resumed, [](TokenEvent&&) {});
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(),
              HasSubstr("resume_token_ids[1]: " + std::to_string(t[4]) +
                        " is not allowed by the constraint (grammar) here"));
}

TEST_F(ConstrainedEngineTest, CancelAndFinishFreeTheMatchers) {
  const std::vector<int> t = TextIds(2);
  // Never terminates: t0 t1 t0 t1 ... until cancelled.
  Plan loop;
  for (int i = 0; i < 200; ++i) loop.steps.push_back({t[i % 2]});
  plans_["l"] = loop;
  Collector c;
  absl::StatusOr<uint64_t> id = engine_->Submit(Constrained("l", 150), c.Sink());
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_GE(live_matchers.load(), 1);
  engine_->Cancel(*id);
  EXPECT_EQ(c.Wait().finish_reason, FinishReason::kCancelled);
  // The loop retires the sequence right after its last event.
  for (int i = 0; i < 200 && live_matchers.load() != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(live_matchers.load(), 0);
  for (size_t i = 0; i + 1 < c.ids.size(); ++i) ASSERT_NE(c.ids[i], c.ids[i + 1]);
}

// ---- real constraints (engine/grammar) on the tiny random model ----

class RealConstraintTest : public ConstrainedEngineTest {
 protected:
  void SetUp() override {
    ASSERT_NE(engine_, nullptr);
    engine_->SetConstraintCompilerForTesting(CompileConstraint);
  }
  // The text of a sampled run of `spec`; fails unless it ended by the constraint.
  std::string Sample(ConstraintSpec spec, uint64_t seed, int max_new_tokens = 96) {
    GenerationRequest r;
    r.prompt = "The river runs";
    r.max_new_tokens = max_new_tokens;
    r.sampling.temperature = 1.0f;
    r.sampling.seed = seed;
    r.constraint = std::move(spec);
    Result got = Run(r);
    EXPECT_TRUE(got.last.status.ok()) << got.last.status;
    EXPECT_NE(got.last.finish_reason, FinishReason::kLength) << "seed " << seed << ": " << got.text;
    return got.text;
  }
};

// Regexes of the documented subset, each with a string it must refuse (so a
// judge that accepted anything would fail here too).
struct RegexCase {
  const char* pattern;
  const char* refused;
};
const RegexCase kRegexCases[] = {
    {"[a-z]{2,6}( [a-z]{2,6}){0,2}\\.", "ab cd"},
    // Escapes, \d in and out of classes, optional parts, alternation.
    {"\\+?[1-9]\\d{1,3}[ \\-]\\d{3}[ \\-][\\d]{4}", "+01 555 1234"},
    // A named group (its name is ignored), nested alternatives: an ISO date.
    {"(?<year>19|20)\\d\\d-(0[1-9]|1[0-2])-(0[1-9]|[12]\\d|3[01])", "2024-13-01"},
    // '.' is any character but \n, multi-byte ones included.
    {".{1,12}", "a\nb"},
    // Negated classes with \s inside; lazy quantifiers; \s between.
    {"[^\\s,]{1,6}?(,\\s?[^\\s,]{1,6}){0,3}", "a,,b"},
    // \w, \x escapes, a literal dot.
    {"\\w{1,8}@\\w{1,8}\\.(com|org|n\\x65t)", "a@b.edu"},
    // Non-ASCII ranges and literals: CJK, accents, by \x{...} and as UTF-8.
    {"(\\x{e9}|[\\x{4e00}-\\x{9fff}]|ü|[a-z]){1,8}", "A"},
};

TEST_F(RealConstraintTest, RegexOutputsMatchTheExpressionByPcre2) {
  for (const RegexCase& c : kRegexCases) {
    SCOPED_TRACE(c.pattern);
    // The judge can fail: it refuses a near miss.
    EXPECT_FALSE(PcreFullMatch(c.pattern, c.refused));
    std::set<std::string> seen;
    const int kSeeds = 40;
    for (uint64_t seed = 1; seed <= kSeeds; ++seed) {
      const std::string text = Sample({ConstraintSpec::Kind::kRegex, c.pattern, {}}, seed);
      EXPECT_TRUE(PcreFullMatch(c.pattern, text)) << "seed " << seed;
      seen.insert(text);
    }
    // Temperature 1 over 40 seeds explores: the constraint is not one path.
    EXPECT_GE(seen.size(), 10u);
  }
}

TEST_F(RealConstraintTest, ChoiceOutputsAreOneOfTheChoices) {
  // Choices that are prefixes of each other, and non-ASCII ones (the tiny
  // model's byte pieces can spell them).
  const std::vector<std::string> choices = {"yes", "no", "maybe", "maybe later", "né", "\xF0\x9F\x91\x8D"};
  ConstraintSpec spec{ConstraintSpec::Kind::kChoice, "", choices};
  std::set<std::string> seen;
  for (uint64_t seed = 1; seed <= 40; ++seed) {
    const std::string text = Sample(spec, seed);
    EXPECT_THAT(choices, ::testing::Contains(text)) << "seed " << seed;
    seen.insert(text);
  }
  EXPECT_GE(seen.size(), 3u);
}

TEST_F(RealConstraintTest, GrammarOutputsParse) {
  ConstraintSpec spec{ConstraintSpec::Kind::kGrammar,
                      "root ::= \"(\" num (\",\" num){0,3} \")\"\nnum ::= [1-9] [0-9]{0,2}", {}};
  for (uint64_t seed = 1; seed <= 24; ++seed) {
    const std::string text = Sample(spec, seed);
    EXPECT_TRUE(PcreFullMatch("\\([1-9][0-9]{0,2}(,[1-9][0-9]{0,2}){0,3}\\)", text)) << "seed " << seed;
  }
}

TEST_F(RealConstraintTest, JsonSchemaAndJsonObjectOutputsParseAndValidate) {
  const std::string schema = R"({"type": "object",
      "properties": {"name": {"type": "string", "maxLength": 8},
                     "age": {"type": "integer", "minimum": 0, "maximum": 120},
                     "pet": {"enum": ["cat", "dog"]}},
      "required": ["name", "age"], "additionalProperties": false})";
  for (uint64_t seed = 1; seed <= 4; ++seed) {
    const std::string text =
        Sample({ConstraintSpec::Kind::kJsonSchema, schema, {}}, seed, /*max_new_tokens=*/160);
    // nlohmann::json parses; the schema's rules are checked one by one.
    nlohmann::json value = nlohmann::json::parse(text, nullptr, false);
    ASSERT_FALSE(value.is_discarded()) << "seed " << seed << ": " << text;
    ASSERT_TRUE(value.is_object()) << text;
    ASSERT_TRUE(value.contains("name") && value["name"].is_string()) << text;
    // maxLength counts characters (code points), not bytes.
    const std::string name = value["name"].get<std::string>();
    EXPECT_LE(std::count_if(name.begin(), name.end(), [](char c) { return (c & 0xC0) != 0x80; }), 8)
        << text;
    ASSERT_TRUE(value.contains("age") && value["age"].is_number_integer()) << text;
    EXPECT_GE(value["age"].get<int64_t>(), 0) << text;
    EXPECT_LE(value["age"].get<int64_t>(), 120) << text;
    for (const auto& [key, v] : value.items()) {
      EXPECT_TRUE(key == "name" || key == "age" || key == "pet") << text;
      if (key == "pet") EXPECT_TRUE(v == "cat" || v == "dog") << text;
    }
  }
  // Any object: the random model's strings may run past max_new_tokens (a
  // prefix of an object then); a finished one parses.
  for (uint64_t seed = 1; seed <= 3; ++seed) {
    GenerationRequest r;
    r.prompt = "The river runs";
    r.max_new_tokens = 64;
    r.sampling.temperature = 1.0f;
    r.sampling.seed = seed;
    r.constraint.kind = ConstraintSpec::Kind::kJsonObject;
    Result got = Run(r);
    ASSERT_FALSE(got.text.empty());
    EXPECT_EQ(got.text.find_first_not_of(" \t\n"), got.text.find('{')) << got.text;
    if (got.last.finish_reason == FinishReason::kLength) continue;
    nlohmann::json value = nlohmann::json::parse(got.text, nullptr, false);
    EXPECT_TRUE(!value.is_discarded() && value.is_object()) << "seed " << seed << ": " << got.text;
  }
  // An unsupported keyword is refused by name.
  GenerationRequest r;
  r.prompt = "x";
  r.max_new_tokens = 4;
  r.constraint = {ConstraintSpec::Kind::kJsonSchema,
                  R"({"type": "object", "patternProperties": {"^a": {}}})", {}};
  absl::StatusOr<uint64_t> bad = engine_->Submit(r, [](TokenEvent&&) {});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("patternProperties"));
}

TEST_F(RealConstraintTest, BadGrammarsAreRefusedWithTheirPosition) {
  GenerationRequest r;
  r.prompt = "x";
  r.max_new_tokens = 4;
  r.constraint = {ConstraintSpec::Kind::kGrammar, "root ::= \"a\" item\n", {}};
  absl::StatusOr<uint64_t> bad = engine_->Submit(r, [](TokenEvent&&) {});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("grammar: line 1"));
  EXPECT_EQ(FieldOf(bad.status()), "constraint");
}

// ---- n choices ----

// Every event of a request, by choice.
struct Choices {
  std::mutex mu;
  std::map<int, std::vector<int>> ids;
  std::map<int, std::string> text;
  std::map<int, TokenEvent> last;
  std::map<int, int> firsts;
  int n = 0;
  std::promise<void> done;
  TokenSink Sink() {
    return [this](TokenEvent&& e) {
      std::lock_guard<std::mutex> lock(mu);
      for (const TokenInfo& t : e.tokens) ids[e.index].push_back(t.id);
      text[e.index] += e.text;
      if (e.first) firsts[e.index]++;
      if (e.finish_reason != FinishReason::kNone) {
        last[e.index] = e;
        if (static_cast<int>(last.size()) == n) done.set_value();
      }
    };
  }
  void Wait() {
    done.get_future().wait();
    std::lock_guard<std::mutex> lock(mu);
  }
};

class ChoicesTest : public ConstrainedEngineTest {
 protected:
  void SetUp() override {
    ASSERT_NE(engine_, nullptr);
    engine_->SetConstraintCompilerForTesting(CompileConstraint);
  }
  GenerationRequest Sampled(uint64_t seed, int n) {
    GenerationRequest r;
    r.prompt = "The river runs";
    r.max_new_tokens = 12;
    r.sampling.temperature = 1.0f;
    r.sampling.seed = seed;
    r.n = n;
    return r;
  }
  void RunChoices(const GenerationRequest& r, Choices* c) {
    c->n = r.n;
    absl::StatusOr<uint64_t> id = engine_->Submit(r, c->Sink());
    ASSERT_TRUE(id.ok()) << id.status();
    c->Wait();
  }
};

TEST_F(ChoicesTest, EachChoiceIsTheRequestWithSeedPlusIAndThePromptIsPrefilledOnce) {
  for (bool aligned : {false, true}) {
    SCOPED_TRACE(aligned ? "prompt of exactly one KV block" : "prompt ending inside a block");
    GenerationRequest r = Sampled(7, 4);
    if (aligned) {  // all blocks shared, nothing copied
      r.prompt.clear();
      r.prompt_token_ids = engine_->Tokenize(
          "The river runs past the mill and under the old stone bridge to the sea", true);
      ASSERT_GE(r.prompt_token_ids.size(), 16u);
      r.prompt_token_ids.resize(engine_->model_info().kv_block_size);
    }
    const int prompt = static_cast<int>(aligned ? r.prompt_token_ids.size()
                                                : engine_->Tokenize(r.prompt, true).size());
    const EngineStats before = engine_->stats();
    Choices c;
    RunChoices(r, &c);
    const EngineStats after = engine_->stats();
    EXPECT_EQ(after.prefill_tokens - before.prefill_tokens, prompt);
    EXPECT_EQ(after.forked_choices - before.forked_choices, 3);
    EXPECT_EQ(after.prompt_tokens - before.prompt_tokens, prompt);
    ASSERT_EQ(c.last.size(), 4u);
    std::set<std::vector<int>> distinct;
    for (int i = 0; i < 4; ++i) {
      EXPECT_EQ(c.firsts[i], 1);
      EXPECT_EQ(c.last[i].index, i);
      EXPECT_EQ(c.last[i].seed, 7u);
      EXPECT_EQ(c.last[i].prompt_tokens, prompt);
      EXPECT_EQ(c.last[i].completion_tokens, static_cast<int>(c.ids[i].size()));
      // Choice i is what the same request with n 1 and seed 7 + i gives.
      GenerationRequest alone = r;
      alone.n = 1;
      alone.sampling.seed = 7 + i;
      Result one = Run(alone);
      EXPECT_EQ(c.ids[i], one.ids) << "choice " << i;
      EXPECT_EQ(c.text[i], one.text) << "choice " << i;
      distinct.insert(c.ids[i]);
    }
    EXPECT_GT(distinct.size(), 1u);
    // Reproducible: the same request, the same n texts.
    Choices again;
    RunChoices(r, &again);
    EXPECT_EQ(again.ids, c.ids);
  }
}

TEST_F(ChoicesTest, CancelEndsEveryChoiceAndConstraintsHoldForEach) {
  GenerationRequest r = Sampled(3, 3);
  r.max_new_tokens = 400;
  r.ignore_eos = true;
  Choices c;
  c.n = 3;
  absl::StatusOr<uint64_t> id = engine_->Submit(r, c.Sink());
  ASSERT_TRUE(id.ok()) << id.status();
  engine_->Cancel(*id);
  c.Wait();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(c.last[i].finish_reason, FinishReason::kCancelled) << i;

  GenerationRequest constrained = Sampled(5, 3);
  constrained.max_new_tokens = 96;
  constrained.constraint = {ConstraintSpec::Kind::kRegex, "[a-z]{2,6}( [a-z]{2,6}){0,2}\\.", {}};
  Choices cc;
  RunChoices(constrained, &cc);
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(PcreFullMatch("[a-z]{2,6}( [a-z]{2,6}){0,2}\\.", cc.text[i])) << i;
    EXPECT_EQ(cc.last[i].finish_reason, FinishReason::kStop);
  }
}

TEST_F(ChoicesTest, NOutOfRangeAndResumeWithNAreRefusedByName) {
  GenerationRequest r = Sampled(1, 9);
  absl::StatusOr<uint64_t> bad = engine_->Submit(r, [](TokenEvent&&) {});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(), "n must be in [1, 8], got 9");
  EXPECT_EQ(FieldOf(bad.status()), "n");
  r.n = 0;
  bad = engine_->Submit(r, [](TokenEvent&&) {});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(), "n must be in [1, 8], got 0");
  r.n = 2;
  r.resume_token_ids = {engine_->Tokenize("x", false).at(0)};
  bad = engine_->Submit(r, [](TokenEvent&&) {});
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("resume_token_ids: not with n > 1"));
}

TEST(ChoicesFallbackTest, ChoicesThatCannotShareAtMaxBatchPrefillOnTheirOwn) {
  EngineOptions options;
  options.max_batch = 2;  // choice 0 and one fork share; the other two wait and prefill
  std::unique_ptr<Engine> engine = MakeEngine(STREAMGEN_TINY_MODEL_DIR, options);
  ASSERT_NE(engine, nullptr);
  GenerationRequest r;
  r.prompt = "The river runs";
  r.max_new_tokens = 8;
  r.sampling.temperature = 1.0f;
  r.sampling.seed = 11;
  r.n = 4;
  const int prompt = static_cast<int>(engine->Tokenize(r.prompt, true).size());
  const EngineStats before = engine->stats();
  Choices c;
  c.n = 4;
  ASSERT_TRUE(engine->Submit(r, c.Sink()).ok());
  c.Wait();
  const EngineStats after = engine->stats();
  EXPECT_EQ(after.forked_choices - before.forked_choices, 1);
  EXPECT_EQ(after.prefill_tokens - before.prefill_tokens, 3 * prompt);
  for (int i = 0; i < 4; ++i) {
    GenerationRequest alone = r;
    alone.n = 1;
    alone.sampling.seed = 11 + i;
    Collector one;
    ASSERT_TRUE(engine->Submit(alone, one.Sink()).ok());
    one.Wait();
    EXPECT_EQ(c.ids[i], one.ids) << "choice " << i;
    EXPECT_EQ(c.last[i].index, i);
  }
}

// ---- logit_bias through the engine ----

TEST_F(ConstrainedEngineTest, LogitBiasForcesOrBansATokenAndIsValidatedByName) {
  const std::vector<int> t = TextIds(1);
  GenerationRequest r;
  r.prompt = "The river runs";
  r.max_new_tokens = 5;
  r.sampling.logit_bias = {{t[0], 100.0f}};
  Collector c;
  ASSERT_TRUE(engine_->Submit(r, c.Sink()).ok());
  c.Wait();
  EXPECT_EQ(c.ids, std::vector<int>(5, t[0]));
  // Banning the greedy choice changes the first token.
  GenerationRequest plain = r;
  plain.sampling.logit_bias.clear();
  Result free_run = Run(plain);
  GenerationRequest banned = plain;
  banned.sampling.logit_bias = {{free_run.ids[0], -100.0f}};
  EXPECT_NE(Run(banned).ids[0], free_run.ids[0]);
  // Out of the vocabulary / range: INVALID_ARGUMENT naming logit_bias.
  const int vocab = engine_->token_vocabulary()->size();
  r.sampling.logit_bias = {{vocab, 1.0f}};
  absl::StatusOr<uint64_t> bad = engine_->Submit(r, [](TokenEvent&&) {});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(),
            "logit_bias[" + std::to_string(vocab) +
                "]: the token id is outside the vocabulary [0, " + std::to_string(vocab) + ")");
  EXPECT_EQ(FieldOf(bad.status()), "logit_bias");
  r.sampling.logit_bias = {{1, -100.5f}};
  bad = engine_->Submit(r, [](TokenEvent&&) {});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(), "logit_bias[1]: the bias must be in [-100, 100], got -100.5");
}

// Speculative decoding beside constrained rows: a constrained request decodes
// without drafts (its matcher follows one token a step) while an
// unconstrained greedy one beside it speculates; both come out as without
// speculation.
TEST(ConstrainedSpeculativeTest, ConstrainedRowsDecodeWithoutDraftsBesideSpeculatingOnes) {
  EngineOptions plain_options;
  EngineOptions spec_options;
  spec_options.speculative = "prompt-lookup";
  std::unique_ptr<Engine> plain = MakeEngine(STREAMGEN_TINY_MODEL_DIR, plain_options);
  std::unique_ptr<Engine> spec = MakeEngine(STREAMGEN_TINY_MODEL_DIR, spec_options);
  ASSERT_NE(plain, nullptr);
  ASSERT_NE(spec, nullptr);
  GenerationRequest constrained;
  // A repetitive prompt and output: prompt lookup would find drafts for it.
  constrained.prompt = "ab ab ab ab ab ab ab ab";
  constrained.max_new_tokens = 64;
  constrained.sampling.temperature = 1.0f;
  constrained.sampling.seed = 7;
  constrained.constraint = {ConstraintSpec::Kind::kRegex, " ?(ab ){4,12}ab\\.", {}};
  GenerationRequest greedy;
  greedy.prompt = "the the the the the the the the";
  greedy.max_new_tokens = 48;
  greedy.ignore_eos = true;
  auto run_both = [&](Engine* engine, std::string* constrained_text, std::vector<int>* greedy_ids) {
    Collector a, b;
    ASSERT_TRUE(engine->Submit(constrained, a.Sink()).ok());
    ASSERT_TRUE(engine->Submit(greedy, b.Sink()).ok());
    TokenEvent last_a = a.Wait();
    TokenEvent last_b = b.Wait();
    EXPECT_TRUE(last_a.status.ok()) << last_a.status;
    EXPECT_EQ(last_a.finish_reason, FinishReason::kStop) << a.text;
    *constrained_text = a.text;
    *greedy_ids = b.ids;
  };
  std::string text_plain, text_spec;
  std::vector<int> ids_plain, ids_spec;
  run_both(plain.get(), &text_plain, &ids_plain);
  run_both(spec.get(), &text_spec, &ids_spec);
  EXPECT_TRUE(PcreFullMatch(" ?(ab ){4,12}ab\\.", text_spec));
  EXPECT_EQ(text_spec, text_plain);
  EXPECT_EQ(ids_spec, ids_plain);
  EXPECT_GT(spec->stats().draft_tokens, 0) << "the greedy request never speculated";
}

}  // namespace
}  // namespace streamgen
