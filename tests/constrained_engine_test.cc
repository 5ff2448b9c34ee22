// Constrained decoding through the engine, with a test-only constraint (a
// fixed set of allowed ids per step) so that the plumbing is tested apart
// from the grammar engine: the mask reaches the sampler, EOS only where the
// constraint can end, a complete match ends with kStop, resume replays the
// matcher, cancel frees it, compiled constraints are cached; and logit_bias
// through the engine.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <regex>
#include <thread>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "engine/engine.h"
#include "engine/request_validation.h"
#include "tests/engine_test_util.h"

namespace streamgen {
namespace {

using ::testing::HasSubstr;

std::atomic<int> live_matchers{0};

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

TEST_F(RealConstraintTest, RegexOutputsMatchTheExpression) {
  ConstraintSpec spec{ConstraintSpec::Kind::kRegex, "[a-z]{2,6}( [a-z]{2,6}){0,2}\\.", {}};
  // std::regex (ECMAScript) is the independent judge.
  const std::regex judge("[a-z]{2,6}( [a-z]{2,6}){0,2}\\.");
  std::set<std::string> seen;
  for (uint64_t seed = 1; seed <= 8; ++seed) {
    const std::string text = Sample(spec, seed);
    EXPECT_TRUE(std::regex_match(text, judge)) << "seed " << seed << ": \"" << text << "\"";
    seen.insert(text);
  }
  EXPECT_GT(seen.size(), 1u);
}

TEST_F(RealConstraintTest, ChoiceOutputsAreOneOfTheChoices) {
  ConstraintSpec spec{ConstraintSpec::Kind::kChoice, "", {"yes", "no", "maybe later"}};
  for (uint64_t seed = 1; seed <= 8; ++seed) {
    const std::string text = Sample(spec, seed);
    EXPECT_TRUE(text == "yes" || text == "no" || text == "maybe later") << "\"" << text << "\"";
  }
}

TEST_F(RealConstraintTest, GrammarOutputsParse) {
  ConstraintSpec spec{ConstraintSpec::Kind::kGrammar,
                      "root ::= \"(\" num (\",\" num){0,3} \")\"\nnum ::= [1-9] [0-9]{0,2}", {}};
  const std::regex judge("\\([1-9][0-9]{0,2}(,[1-9][0-9]{0,2}){0,3}\\)");
  for (uint64_t seed = 1; seed <= 6; ++seed) {
    const std::string text = Sample(spec, seed);
    EXPECT_TRUE(std::regex_match(text, judge)) << "seed " << seed << ": \"" << text << "\"";
  }
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

}  // namespace
}  // namespace streamgen
