// Resumable streams at engine level (GenerationRequest::resume_token_ids): a
// stream cut after any k tokens and resumed with those k ids gives, appended
// to the text delivered before the cut, exactly the uninterrupted stream's
// text, ids, finish reason and usage (float32, the same engine). Greedy, and
// seeded sampling with every penalty on, a stop string and a multi-byte
// character across the seam. Then every refusal, with its message.
#include <algorithm>
#include <cstdio>
#include <chrono>
#include <thread>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/engine_test_util.h"

namespace streamgen {
namespace {

using ::testing::HasSubstr;

// One request's events, one entry per event (the engine sends one event per
// sampled token, the last one included).
struct Stream {
  std::vector<std::string> texts;         // each event's text
  std::vector<std::vector<int>> tokens;   // each event's token ids
  std::vector<bool> first;                // each event's `first` flag
  std::vector<uint64_t> seeds;            // each event's seed
  TokenEvent last;

  std::vector<int> Ids() const {
    std::vector<int> ids;
    for (const auto& t : tokens) ids.insert(ids.end(), t.begin(), t.end());
    return ids;
  }
  std::string Text() const {
    std::string text;
    for (const auto& t : texts) text += t;
    return text;
  }
  // The text a client had received once it held the first k tokens.
  std::string TextOfFirstTokens(size_t k) const {
    std::string text;
    size_t seen = 0;
    for (size_t e = 0; e < texts.size() && seen < k; ++e) {
      text += texts[e];
      seen += tokens[e].size();
    }
    return text;
  }
};

absl::StatusOr<Stream> Generate(Engine* engine, const GenerationRequest& request) {
  Stream run;
  std::mutex mu;
  std::promise<void> done;
  absl::StatusOr<uint64_t> id = engine->Submit(request, [&](TokenEvent&& e) {
    std::lock_guard<std::mutex> lock(mu);
    run.texts.push_back(e.text);
    std::vector<int> ids;
    for (const auto& t : e.tokens) ids.push_back(t.id);
    run.tokens.push_back(ids);
    run.first.push_back(e.first);
    run.seeds.push_back(e.seed);
    if (e.finish_reason != FinishReason::kNone) {
      run.last = std::move(e);
      done.set_value();
    }
  });
  if (!id.ok()) return id.status();
  done.get_future().wait();
  std::lock_guard<std::mutex> lock(mu);
  return run;
}

// Resumes `request` after each k in [1, tokens) of `full` and checks that the
// delivered text + the resumed stream equal the uninterrupted stream.
void ExpectEveryResumeMatches(Engine* engine, const GenerationRequest& request, const Stream& full) {
  const std::vector<int> ids = full.Ids();
  ASSERT_GE(ids.size(), 2u);
  for (size_t k = 1; k < ids.size(); ++k) {
    SCOPED_TRACE("resumed after " + std::to_string(k) + " of " + std::to_string(ids.size()) +
                 " tokens");
    GenerationRequest resumed = request;
    resumed.resume_token_ids.assign(ids.begin(), ids.begin() + k);
    absl::StatusOr<Stream> rest = Generate(engine, resumed);
    ASSERT_TRUE(rest.ok()) << rest.status();
    std::vector<int> joined(ids.begin(), ids.begin() + k);
    for (int id : rest->Ids()) joined.push_back(id);
    EXPECT_EQ(joined, ids);
    EXPECT_EQ(full.TextOfFirstTokens(k) + rest->Text(), full.Text());
    EXPECT_EQ(rest->last.finish_reason, full.last.finish_reason);
    EXPECT_EQ(rest->last.completion_tokens, full.last.completion_tokens);
    EXPECT_EQ(rest->last.prompt_tokens, full.last.prompt_tokens);
    ASSERT_FALSE(rest->first.empty());
    EXPECT_TRUE(rest->first[0]);
    EXPECT_EQ(rest->seeds[0], rest->last.seed);  // the seed is on the first event already
    if (request.sampling.seed) EXPECT_EQ(rest->last.seed, full.last.seed);
  }
}

class ResumeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { engine_ = MakeEngine(STREAMGEN_TINY_MODEL_DIR).release(); }
  static void TearDownTestSuite() {
    delete engine_;
    engine_ = nullptr;
  }
  void SetUp() override { ASSERT_NE(engine_, nullptr); }
  static Engine* engine_;
};
Engine* ResumeTest::engine_ = nullptr;

GenerationRequest Greedy() {
  GenerationRequest request;
  request.prompt = "Once upon a time";
  request.max_new_tokens = 40;
  request.ignore_eos = true;
  return request;
}

GenerationRequest SampledWithPenalties(uint64_t seed) {
  GenerationRequest request;
  request.prompt = "The old lighthouse keeper";
  request.max_new_tokens = 48;
  request.ignore_eos = true;
  request.sampling.temperature = 1.0f;
  request.sampling.top_k = 200;
  request.sampling.top_p = 0.98f;
  request.sampling.min_p = 0.001f;
  request.sampling.repetition_penalty = 1.3f;
  request.sampling.presence_penalty = 0.5f;
  request.sampling.frequency_penalty = 0.4f;
  request.sampling.seed = seed;
  return request;
}

// The first event index whose token is the lead byte of a multi-byte
// character (its text held back: ""), whose character completes in the next
// event's text (not U+FFFD). -1 when there is none.
int MultiByteSeam(Engine* engine, const Stream& run) {
  for (size_t e = 0; e + 1 < run.texts.size(); ++e) {
    if (!run.texts[e].empty() || run.tokens[e].size() != 1) continue;
    const std::string piece = engine->TokenPiece(run.tokens[e][0]);
    if (piece.size() != 6 || piece.rfind("<0x", 0) != 0) continue;
    const int byte = std::stoi(piece.substr(3, 2), nullptr, 16);
    if (byte < 0xC2 || byte > 0xF4) continue;
    const std::string& next = run.texts[e + 1];
    if (!next.empty() && static_cast<unsigned char>(next[0]) == byte &&
        next.rfind("\xEF\xBF\xBD", 0) != 0) {
      return static_cast<int>(e);
    }
  }
  return -1;
}

TEST_F(ResumeTest, GreedyResumesExactlyAfterEveryToken) {
  absl::StatusOr<Stream> full = Generate(engine_, Greedy());
  ASSERT_TRUE(full.ok()) << full.status();
  ASSERT_EQ(full->Ids().size(), 40u);
  EXPECT_TRUE(full->first[0]);
  EXPECT_FALSE(full->first[1]);
  ExpectEveryResumeMatches(engine_, Greedy(), *full);
}

// Seeded sampling with every penalty (they read the resumed ids as output),
// a multi-byte character whose bytes straddle the seam, and a stop string
// that straddles it too: found by searching seeds (deterministic: the tiny
// model and the seeds are fixed), not hard-coded.
TEST_F(ResumeTest, SampledWithPenaltiesStopStringAndSplitCharacterResumesExactly) {
  uint64_t seed = 0;
  int seam = -1;
  int stop_event = -1;
  Stream plain;
  for (uint64_t s = 1; s <= 300 && seam < 0; ++s) {
    absl::StatusOr<Stream> run = Generate(engine_, SampledWithPenalties(s));
    ASSERT_TRUE(run.ok()) << run.status();
    seam = MultiByteSeam(engine_, *run);
    stop_event = -1;
    for (int e = seam + 2; seam >= 3 && e + 2 < static_cast<int>(run->texts.size()); ++e) {
      if (!run->texts[e].empty() && !run->texts[e + 1].empty()) {
        stop_event = e;
        break;
      }
    }
    if (stop_event > 0) {
      seed = s;
      plain = *run;
    } else {
      seam = -1;
    }
  }
  ASSERT_GT(seed, 0u) << "no seed in 1..300 gives a multi-byte character split across tokens";
  SCOPED_TRACE("seed " + std::to_string(seed) + ", character split after event " +
               std::to_string(seam));
  // Without a stop string: resuming in the middle of the character included.
  ExpectEveryResumeMatches(engine_, SampledWithPenalties(seed), plain);

  // A stop string spanning two events after the character: while its first
  // part arrives, it is held back, across the seam.
  const std::string stop = plain.texts[stop_event] + plain.texts[stop_event + 1];
  GenerationRequest with_stop = SampledWithPenalties(seed);
  with_stop.stop = {stop};
  absl::StatusOr<Stream> stopped = Generate(engine_, with_stop);
  ASSERT_TRUE(stopped.ok()) << stopped.status();
  EXPECT_EQ(stopped->last.finish_reason, FinishReason::kStop);
  EXPECT_THAT(plain.Text(), HasSubstr(stopped->Text() + stop));
  ExpectEveryResumeMatches(engine_, with_stop, *stopped);
}

TEST_F(ResumeTest, RefusesWhatItCannotHonourExactly) {
  absl::StatusOr<Stream> full = Generate(engine_, Greedy());
  ASSERT_TRUE(full.ok()) << full.status();
  const std::vector<int> ids = full->Ids();
  const int vocab = engine_->model_info().tokenizer_vocab_size;
  auto refusal = [&](GenerationRequest r) {
    absl::StatusOr<Stream> run = Generate(engine_, r);
    return run.ok() ? absl::OkStatus() : run.status();
  };

  GenerationRequest r = Greedy();
  r.resume_token_ids = {ids[0], vocab + 5};
  absl::Status status = refusal(r);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("resume_token_ids[1]: " + std::to_string(vocab + 5) +
                                          " is outside the vocabulary"));

  r = Greedy();
  r.resume_token_ids = {-1};
  EXPECT_THAT(refusal(r).message(), HasSubstr("resume_token_ids[0]: -1 is outside"));

  r = Greedy();
  r.resume_token_ids = ids;  // all 40 of max_new_tokens 40
  status = refusal(r);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(),
              HasSubstr("resume_token_ids: 40 ids leave nothing to generate: max_new_tokens is 40"));

  r = Greedy();
  r.ignore_eos = false;
  const int eos = engine_->model_info().eos_token_ids.at(0);
  r.resume_token_ids = {ids[0], eos, ids[1]};
  EXPECT_THAT(refusal(r).message(),
              HasSubstr("resume_token_ids[1]: " + std::to_string(eos) +
                        " is an EOS id: the stream ended there"));

  r = Greedy();
  r.stop_token_ids = {ids[2]};
  r.resume_token_ids = {ids[0], ids[1], ids[2]};
  EXPECT_THAT(refusal(r).message(), HasSubstr("resume_token_ids[2]: " + std::to_string(ids[2]) +
                                              " is a stop id"));

  // A stop string that the resumed ids already complete.
  auto nonempty = std::find_if(full->texts.begin() + 1, full->texts.begin() + 6,
                               [](const std::string& t) { return !t.empty(); });
  ASSERT_NE(nonempty, full->texts.begin() + 6);
  r = Greedy();
  r.stop = {*nonempty};
  r.resume_token_ids.assign(ids.begin(), ids.begin() + 6);
  status = refusal(r);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("a stop string completes at this token"));

  r = SampledWithPenalties(1);
  r.sampling.seed.reset();
  r.resume_token_ids = {ids[0]};
  status = refusal(r);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("resumes exactly only with the seed it used"));

  r = Greedy();
  r.resume_token_ids = {ids[0]};
  r.model_fingerprint = "sg1-00000000000000000000000000000000";
  status = refusal(r);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(status.message(),
              HasSubstr("model_fingerprint: the request is for model "
                        "sg1-00000000000000000000000000000000 but this server runs " +
                        engine_->model_info().fingerprint));

  // The right fingerprint is accepted.
  r.model_fingerprint = engine_->model_info().fingerprint;
  EXPECT_TRUE(refusal(r).ok());
}

TEST_F(ResumeTest, StatsCountResumedRequestsAndTheirTokens) {
  // Finish counts a request after its sink returned: wait until every
  // request so far is counted.
  auto settled = [&] {
    EngineStats stats = engine_->stats();
    for (int i = 0; i < 500 && stats.finished < stats.submitted; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      stats = engine_->stats();
    }
    EXPECT_EQ(stats.finished, stats.submitted);
    return stats;
  };
  EngineStats before = settled();
  GenerationRequest r = Greedy();
  r.max_new_tokens = 8;
  absl::StatusOr<Stream> full = Generate(engine_, r);
  ASSERT_TRUE(full.ok());
  const std::vector<int> ids = full->Ids();
  r.resume_token_ids.assign(ids.begin(), ids.begin() + 5);
  ASSERT_TRUE(Generate(engine_, r).ok());
  EngineStats after = settled();
  ASSERT_EQ(after.finished - before.finished, 2);
  EXPECT_EQ(after.resumed - before.resumed, 1);
  EXPECT_EQ(after.resumed_tokens - before.resumed_tokens, 5);
  // Generated here: 8 for the first, 3 for the resumed one.
  EXPECT_EQ(after.generated_tokens - before.generated_tokens, 11);
}

// The demo model (a trained one: its distributions are peaked, unlike the
// random tiny model's) in float32 and bfloat16. In bfloat16 a resumed
// stream's K/V for the delivered tokens come from a prefill, not from the
// decode steps that made them, so roundings differ and the continuation may
// differ where two tokens were nearly tied. What holds in both: the resume is
// accepted, counts the delivered ids and ends where the request says; in
// float32 it is also identical at every k. How often bfloat16 is identical is
// printed (README: "Resumable streams").
class ResumeDtypeTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ResumeDtypeTest, DemoModelResumes) {
  EngineOptions options;
  options.model_dir = STREAMGEN_DEMO_MODEL_DIR;
  options.dtype = GetParam();
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  for (bool sampled : {false, true}) {
    GenerationRequest request;
    request.prompt = "The jury said that the city";
    request.max_new_tokens = 24;
    request.ignore_eos = true;
    if (sampled) {
      request.sampling.temperature = 0.8f;
      request.sampling.top_p = 0.95f;
      request.sampling.seed = 5;
    }
    absl::StatusOr<Stream> full = Generate(engine->get(), request);
    ASSERT_TRUE(full.ok()) << full.status();
    const std::vector<int> ids = full->Ids();
    int identical = 0;
    for (size_t k = 1; k < ids.size(); ++k) {
      GenerationRequest resumed = request;
      resumed.resume_token_ids.assign(ids.begin(), ids.begin() + k);
      absl::StatusOr<Stream> rest = Generate(engine->get(), resumed);
      ASSERT_TRUE(rest.ok()) << rest.status();
      EXPECT_EQ(rest->Ids().size(), ids.size() - k);
      EXPECT_EQ(rest->last.completion_tokens, static_cast<int>(ids.size()));
      EXPECT_EQ(rest->last.finish_reason, FinishReason::kLength);
      std::vector<int> joined(ids.begin(), ids.begin() + k);
      for (int id : rest->Ids()) joined.push_back(id);
      identical += joined == ids;
    }
    std::printf("%s demo model, %s: %d of %zu resumes identical to the uninterrupted run\n",
                GetParam().c_str(), sampled ? "sampled (T 0.8, top-p 0.95, seed 5)" : "greedy",
                identical, ids.size() - 1);
    if (GetParam() == "float32") EXPECT_EQ(identical, static_cast<int>(ids.size()) - 1);
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, ResumeDtypeTest, ::testing::Values("float32", "bfloat16"));

// The fingerprint: stable for the same files and dtype, different for
// another dtype or another checkpoint.
TEST(FingerprintTest, SameModelSameFingerprintOtherModelOrDtypeDiffers) {
  std::unique_ptr<Engine> a = MakeEngine(STREAMGEN_TINY_MODEL_DIR);
  std::unique_ptr<Engine> b = MakeEngine(STREAMGEN_TINY_MODEL_DIR);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  const std::string fp = a->model_info().fingerprint;
  EXPECT_THAT(fp, ::testing::MatchesRegex("sg1-[0-9a-f]{32}"));
  EXPECT_EQ(fp, b->model_info().fingerprint);

  EngineOptions bf16;
  bf16.model_dir = STREAMGEN_TINY_MODEL_DIR;
  bf16.dtype = "bfloat16";
  absl::StatusOr<std::unique_ptr<Engine>> c = Engine::Create(bf16);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_NE((*c)->model_info().fingerprint, fp);

  std::unique_ptr<Engine> demo = MakeEngine(STREAMGEN_DEMO_MODEL_DIR);
  ASSERT_NE(demo, nullptr);
  EXPECT_NE(demo->model_info().fingerprint, fp);
}

}  // namespace
}  // namespace streamgen
