// The engine loop: one thread owns the model and every KV cache.
//   wait -> cancel -> admit (prefill + first token) -> one batched decode step
//   -> sample -> emit -> retire
#include "engine/engine.h"

#include "engine/generation_defaults.h"
#include "engine/request_validation.h"
#include "engine/model_builder.h"

#include <algorithm>
#include <chrono>
#include <ctime>
#include <optional>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <random>
#include <future>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "common/cpu_quota.h"
#include "engine/constraint_state.h"
#include "engine/kv/kv_pool.h"
#include "engine/text/detokenizer.h"
#include "engine/model/device.h"
#include "engine/model/llama_model.h"
#include "engine/sampler.h"
#include "engine/scheduler.h"
#include "engine/thread_governor.h"
#include "engine/speculative.h"
#include "common/status.h"
#include "engine/text/stop_matcher.h"
#include "engine/text/tokenizer.h"

namespace streamgen {

const char* FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kNone:
      return "";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kEos:
      return "eos";
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kCancelled:
      return "cancelled";
    case FinishReason::kError:
      return "error";
  }
  return "";
}

namespace {

using Clock = std::chrono::steady_clock;

// CPU time of the whole process (every thread), in milliseconds.
double ProcessCpuMs() {
  timespec ts{};
  if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) != 0) return -1;
  return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

double MsBetween(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// A request inside the engine. Owned by the loop thread once submitted.
struct Sequence {
  uint64_t id = 0;
  uint64_t group = 0;  // the id Submit returned: Cancel(group) reaches every choice
  int index = 0;       // the choice (GenerationRequest::n)
  // n > 1, on choice 0 until its prompt is prefilled: the other choices,
  // forked off it then (ForkChoices).
  std::vector<std::unique_ptr<Sequence>> forks;
  GenerationRequest request;
  TokenSink sink;
  std::vector<int> prompt_ids;
  std::vector<int> output_ids;
  std::vector<int> tokens;  // prompt + output: what a (re)computing prefill feeds
  int resumed = 0;          // leading output_ids that came as resume_token_ids
  int64_t counted = 0;      // generated tokens already in EngineStats::generated_tokens
  int max_new_tokens = 0;
  uint64_t seed = 0;
  std::unique_ptr<SequenceRng> rng;
  std::unique_ptr<IncrementalDetokenizer> detokenizer;
  std::unique_ptr<StopMatcher> stop_matcher;
  std::unique_ptr<SequenceConstraint> constraint;  // null: free text
  bool cancel = false;    // Cancel() or shutdown reached it
  bool finished = false;  // its last event was sent
  bool sent_first = false;  // its first event was sent
  Clock::time_point submitted;
  Clock::time_point admitted;  // first prefill chunk
  Clock::time_point first_token;
  double prefill_ms = 0;
  // Speculative decoding: the drafts proposed for the next step, and how
  // many to propose (adapted to this sequence's acceptance).
  std::vector<int> drafts;
  std::unique_ptr<DraftLength> draft_length;
};

}  // namespace

class Engine::Impl {
 public:
  Impl(EngineOptions options, std::unique_ptr<LlamaModel> model,
       std::unique_ptr<Tokenizer> tokenizer, ModelInfo info, SchedulerOptions scheduling,
       std::shared_ptr<const TokenVocabulary> vocabulary,
       std::unique_ptr<DraftModel> draft = nullptr)
      : options_(std::move(options)),
        model_(std::move(model)),
        tokenizer_(std::move(tokenizer)),
        info_(std::move(info)),
        constraints_(kConstraintCacheSize, std::move(vocabulary), CompileConstraint),
        paused_(options_.start_paused),
        scheduler_(scheduling),
        pool_(model_->NewKvPool(scheduling.num_blocks, scheduling.block_size)),
        draft_(std::move(draft)) {
    valid_vocab_ = std::min(tokenizer_->piece_count(), model_->config().vocab_size);
    speculate_ = options_.speculative == "prompt-lookup" || draft_ != nullptr;
    stats_.kv_blocks_total = scheduling.num_blocks;
  }
  ~Impl() { Shutdown(); }
  // The thread that built this Impl and now runs Loop() (see Engine::Create).
  void AdoptLoopThread(std::thread loop) { loop_ = std::move(loop); }
  void Loop();

  absl::StatusOr<uint64_t> Submit(GenerationRequest request, TokenSink sink);
  void Cancel(uint64_t id) {
    std::lock_guard<std::mutex> lock(mu_);
    cancel_.insert(id);
    cv_.notify_all();
  }
  void Shutdown() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
      cv_.notify_all();
    }
    std::lock_guard<std::mutex> lock(join_mu_);
    if (loop_.joinable()) loop_.join();
  }
  void Pause() {
    std::lock_guard<std::mutex> lock(mu_);
    paused_ = true;
  }
  void Resume() {
    std::lock_guard<std::mutex> lock(mu_);
    paused_ = false;
    cv_.notify_all();
  }
  void Step(int iterations) {
    std::lock_guard<std::mutex> lock(mu_);
    step_budget_ += iterations;
    cv_.notify_all();
  }
  EngineStats stats() const {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }

  const ModelInfo& info() const { return info_; }
  // The prompt's ids as Submit makes them: BOS / EOS as the tokenizer config says.
  // parse_special: special tokens written in the text become their ids.
  std::vector<int> PromptIds(const std::string& text, bool parse_special = false) const {
    // tokenizer.json: its post-processor says, as HF's encode(text, add_special_tokens=True).
    if (tokenizer_->hf() != nullptr) {
      return tokenizer_->Encode(text, {/*add_special_tokens=*/true, parse_special});
    }
    const ModelConfig& c = model_->config();
    std::vector<int> ids;
    if (c.add_bos) ids.push_back(c.bos_token_id);
    for (int id : tokenizer_->Encode(text, {false, parse_special})) ids.push_back(id);
    if (c.add_eos && !c.eos_token_ids.empty()) ids.push_back(c.eos_token_ids[0]);
    return ids;
  }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  ConstraintCache& constraints() const { return constraints_; }

 private:
  // Compiled constraints kept for reuse (ConstraintCache).
  static constexpr size_t kConstraintCacheSize = 64;
  // Compiles r's constraint (through the cache) into seq's state. On the
  // caller's thread.
  absl::Status PrepareConstraint(Sequence* seq);
  // The rows of this step that are constrained: their masks are filled on
  // mask_worker_ while the model runs; Finish() before sampling (the loop
  // fills what the worker has not started). nullptr: none constrained.
  std::shared_ptr<MaskJob> StartMasks(const std::vector<Sequence*>& seqs);
  // Adds a step's masks (and the loop's time on them after the forward pass) to stats_.
  void CountMasks(const MaskTiming& timing, int64_t wait_ns);
  // Advances seq's matcher over a sampled, non-ending token. false: the
  // token was not allowed (a bug: the sampler only sees allowed tokens).
  bool AcceptConstrained(Sequence* seq, int id);
  // n > 1: the other choices of a request, made in Submit from choice 0
  // (seed + i), waiting in seq->forks.
  absl::Status PrepareChoices(Sequence* seq);
  // n > 1, right after `seq`'s prompt was prefilled: its forks join the
  // running sequences sharing its KV blocks (Scheduler::Fork, the partial
  // block copied) and are returned, to sample from seq's logits row; a fork
  // that cannot share (max_batch reached, no free block) is queued to
  // prefill on its own instead.
  std::vector<Sequence*> ForkChoices(Sequence* seq);
  // Copies one KV block's slots, every layer (a fork's partial last block).
  void CopyKvBlock(int from, int to);
  absl::Status Validate(const GenerationRequest& r, const std::vector<int>& ids,
                        int* max_new_tokens) const;
  // Builds seq's sampler state, detokenizer and stop matcher and replays
  // resume_token_ids through them (see GenerationRequest::resume_token_ids).
  absl::Status PrepareStreamState(Sequence* seq) const;
  // kStop when `id` is one of r's stop ids, else kEos when it is an EOS id
  // and r does not ignore EOS, else kNone: the token ends the generation.
  FinishReason EndingToken(const GenerationRequest& r, int id) const {
    if (std::find(r.stop_token_ids.begin(), r.stop_token_ids.end(), id) != r.stop_token_ids.end()) {
      return FinishReason::kStop;
    }
    const auto& eos = model_->config().eos_token_ids;
    if (!r.ignore_eos && std::find(eos.begin(), eos.end(), id) != eos.end()) return FinishReason::kEos;
    return FinishReason::kNone;
  }
  // The fields every event carries (first, seed).
  void StampEvent(Sequence* seq, TokenEvent* event);
  // Moves submitted requests into the scheduler and applies cancellations.
  // Returns false when the loop should exit.
  bool TakeWork();
  // Runs one scheduled iteration: prefill chunks and decodes in one model step.
  void RunStep(const SchedulerStep& step);
  // Speculation, before Schedule(): drafts for the sequences that decode next
  // (none while more than speculative_max_batch decode), told to the scheduler.
  void ProposeDrafts();
  // Speculation, after the step: verifies the drafts of `seq` against its
  // chunk's logits rows [k + 1, vocab] (the first `granted` drafts were
  // planned), emits the accepted tokens and the next one, rolls back the rest.
  void VerifySequence(Sequence* seq, const torch::Tensor& rows, int granted);
  // Takes a sampled token: emits its text and decides whether `seq` is done.
  void HandleToken(Sequence* seq, const TokenInfo& token);
  void Finish(Sequence* seq, FinishReason reason, std::string text, std::vector<TokenInfo> tokens,
              absl::Status status = absl::OkStatus());
  // Finish at the end of the stream: first releases the detokenizer's and the
  // stop matcher's held-back text after `text`.
  void FinishFlushed(Sequence* seq, FinishReason reason, std::string text,
                     std::vector<TokenInfo> tokens);
  void FailAll(const std::string& what);
  void Retire();
  void PublishStats();
  // Adds seq's generated tokens not yet counted to stats_ (mu_ held).
  void CountGenerated(Sequence* seq);

  const EngineOptions options_;
  std::unique_ptr<LlamaModel> model_;
  std::unique_ptr<Tokenizer> tokenizer_;
  const ModelInfo info_;
  int valid_vocab_ = 0;
  mutable ConstraintCache constraints_;  // thread-safe
  MaskWorker mask_worker_;               // thread-safe; fills constrained rows' masks during steps
  const int usable_cpus_ = DefaultThreadCount();  // affinity and cgroup quota (common/cpu_quota.h)
  bool speculate_ = false;  // options_.speculative is "prompt-lookup" or "draft"

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::unique_ptr<Sequence>> incoming_;  // guarded by mu_; with the scheduler's
                                                    // waiting, bounded by max_queue
  int scheduler_waiting_ = 0;                       // guarded by mu_: fresh waiting in scheduler_
  std::unordered_set<uint64_t> cancel_;             // guarded by mu_
  bool stopping_ = false;                           // guarded by mu_
  bool paused_ = false;                             // guarded by mu_
  int64_t step_budget_ = 0;                         // guarded by mu_
  uint64_t next_id_ = 1;                            // guarded by mu_
  EngineStats stats_;                               // guarded by mu_

  // Loop thread only:
  Scheduler scheduler_;
  KvPool pool_;
  std::unique_ptr<DraftModel> draft_;  // speculative "draft" only
  std::unordered_map<uint64_t, std::unique_ptr<Sequence>> sequences_;
  std::mutex join_mu_;
  std::thread loop_;
};

absl::Status Engine::Impl::Validate(const GenerationRequest& r, const std::vector<int>& ids,
                                    int* max_new_tokens) const {
  const SamplingParams& s = r.sampling;
  // The field first: the face names it in its own vocabulary (request_validation.h).
  auto bad_field = [](absl::string_view field, auto&&... parts) {
    return InvalidField(field, absl::StrCat(parts...));
  };
  if (!r.model_fingerprint.empty() && r.model_fingerprint != info_.fingerprint) {
    return WithField(absl::FailedPreconditionError(absl::StrCat(
                         "model_fingerprint: the request is for model ", r.model_fingerprint,
                         " but this server runs ", info_.fingerprint, " (", info_.name, ", ",
                         info_.dtype, "): a stream cannot be resumed on another model")),
                     "model_fingerprint");
  }
  if (ids.empty()) return InvalidField("prompt", "prompt: the prompt has no tokens");
  // The one set of rules (engine/request_validation.h), as every face applies them.
  SG_RETURN_IF_ERROR(ValidateIds(r.prompt_token_ids, "prompt_token_ids", valid_vocab_));
  SG_RETURN_IF_ERROR(ValidateSampling(s, r.top_logprobs));
  SG_RETURN_IF_ERROR(ValidateLogitBias(s.logit_bias, valid_vocab_));
  SG_RETURN_IF_ERROR(ValidateConstraintShape(r.constraint));
  SG_RETURN_IF_ERROR(ValidateChoiceCount(r.n));
  if (r.n > 1 && !r.resume_token_ids.empty()) {
    return bad_field("resume_token_ids",
                     "resume_token_ids: not with n > 1: resume each choice i as its own request "
                     "(n 1, seed + i)");
  }
  if (r.constraint.kind != ConstraintSpec::Kind::kNone && r.ignore_eos) {
    // The grammar decides where EOS may come; generating past it would leave
    // the grammar with nothing to allow.
    return bad_field("ignore_eos", "ignore_eos cannot be combined with a constraint (",
                     ConstraintKindName(r.constraint.kind),
                     "): the output ends where the constraint's match is complete");
  }
  SG_RETURN_IF_ERROR(
      ValidateStops(r.stop, r.stop_token_ids,
                    StopLimits{model_->config().vocab_size, options_.max_stop_strings,
                               options_.max_stop_string_bytes}));
  const int context = model_->config().max_position_embeddings;
  const int prompt_len = static_cast<int>(ids.size());
  if (prompt_len >= context) {
    return bad_field("prompt", "prompt: ", prompt_len,
                     " tokens leave no room in the model's context of ", context);
  }
  if (r.max_new_tokens < 0)
    return bad_field("max_new_tokens", "max_new_tokens: ", r.max_new_tokens, " is negative");
  if (r.max_new_tokens > options_.max_new_tokens_limit) {
    return bad_field("max_new_tokens", "max_new_tokens: ", r.max_new_tokens,
                     " is above the server's limit of ", options_.max_new_tokens_limit);
  }
  if (r.max_new_tokens > 0 && prompt_len + r.max_new_tokens > context) {
    return bad_field("max_new_tokens", "max_new_tokens: prompt (", prompt_len,
                     " tokens) + max_new_tokens (", r.max_new_tokens,
                     ") exceeds the model's context of ", context);
  }
  // The default is clamped to what is left of the context and of the KV pool.
  const int room = static_cast<int>(std::min<int64_t>(context, info_.kv_cache_tokens)) - prompt_len;
  *max_new_tokens =
      r.max_new_tokens > 0 ? r.max_new_tokens : std::min(info_.default_max_new_tokens, room);
  if (*max_new_tokens < 1 || prompt_len + *max_new_tokens > info_.kv_cache_tokens) {
    return bad_field("max_new_tokens", "max_new_tokens: prompt (", prompt_len,
                     " tokens) + max_new_tokens (", *max_new_tokens,
                     ") can never fit in the KV cache of ", info_.kv_cache_tokens, " tokens");
  }
  const std::vector<int>& resume = r.resume_token_ids;
  if (resume.empty()) return absl::OkStatus();
  for (size_t i = 0; i < resume.size(); ++i) {
    const int id = resume[i];
    if (id < 0 || id >= valid_vocab_) {
      return bad_field("resume_token_ids", "resume_token_ids[", i, "]: ", id,
                       " is outside the vocabulary [0, ", valid_vocab_, ")");
    }
    const FinishReason ends = EndingToken(r, id);
    if (ends != FinishReason::kNone) {
      return bad_field("resume_token_ids", "resume_token_ids[", i, "]: ", id, " is ",
                       ends == FinishReason::kEos ? "an EOS id" : "a stop id",
                       ": the stream ended there, nothing is left to resume");
    }
  }
  if (static_cast<int>(resume.size()) >= *max_new_tokens) {
    return bad_field("resume_token_ids", "resume_token_ids: ", resume.size(),
                     " ids leave nothing to generate: "
                     "max_new_tokens is ",
                     *max_new_tokens, " (the stream ended with its last token)");
  }
  if (s.temperature > 0.0f && !s.seed.has_value()) {
    return bad_field(
        "resume_token_ids",
        "resume_token_ids: a sampled stream (temperature > 0) resumes exactly only with "
        "the seed it used: set seed to the one its first message reported");
  }
  return absl::OkStatus();
}

absl::Status Engine::Impl::PrepareStreamState(Sequence* seq) const {
  const GenerationRequest& r = seq->request;
  seq->rng = std::make_unique<SequenceRng>(seq->seed);
  seq->draft_length = std::make_unique<DraftLength>(options_.num_speculative_tokens);
  seq->detokenizer = std::make_unique<IncrementalDetokenizer>(tokenizer_.get(), seq->prompt_ids);
  seq->stop_matcher = std::make_unique<StopMatcher>(r.stop);
  // The state an uninterrupted stream had after these tokens: one uniform per
  // sampled token (SampleBatch's contract), the text already delivered
  // consumed, held-back bytes and stop-string prefixes still held.
  for (size_t i = 0; i < r.resume_token_ids.size(); ++i) {
    const int id = r.resume_token_ids[i];
    if (r.sampling.temperature > 0.0f) seq->rng->NextUniform();
    if (seq->constraint != nullptr) {
      TokenMatcher& matcher = *seq->constraint->matcher;
      if (matcher.IsTerminated() || !matcher.AcceptToken(id)) {
        return InvalidField(
            "resume_token_ids",
            absl::StrCat("resume_token_ids[", i, "]: ", id, " is not allowed by the constraint (",
                         ConstraintKindName(r.constraint.kind), ") here: these ids are not what "
                         "this request generated"));
      }
      if (matcher.IsTerminated()) {
        return InvalidField("resume_token_ids",
                            absl::StrCat("resume_token_ids[", i, "]: the constraint's match is "
                                         "complete at this token: the stream ended there, "
                                         "nothing is left to resume"));
      }
    }
    if (seq->stop_matcher->Push(seq->detokenizer->Append(id)).stopped) {
      return InvalidField("resume_token_ids",
                          absl::StrCat("resume_token_ids[", i,
                                       "]: a stop string completes at this token: the stream "
                                       "ended there, nothing is left to resume"));
    }
  }
  seq->output_ids = r.resume_token_ids;
  seq->resumed = static_cast<int>(r.resume_token_ids.size());
  seq->tokens = seq->prompt_ids;
  seq->tokens.insert(seq->tokens.end(), seq->output_ids.begin(), seq->output_ids.end());
  return absl::OkStatus();
}

absl::Status Engine::Impl::PrepareConstraint(Sequence* seq) {
  const ConstraintSpec& spec = seq->request.constraint;
  if (spec.kind == ConstraintSpec::Kind::kNone) return absl::OkStatus();
  absl::StatusOr<std::shared_ptr<const CompiledConstraint>> compiled = constraints_.Get(spec);
  if (!compiled.ok()) {
    // The compiler's messages start with the kind and name the position or
    // keyword; the field is the constraint whatever it says.
    return FieldOf(compiled.status()).empty() ? WithField(compiled.status(), "constraint")
                                              : compiled.status();
  }
  // The mask has a bit per id of the vocabulary the constraint was compiled
  // for (valid_vocab_ ids: the sampler reads as many).
  seq->constraint =
      std::make_unique<SequenceConstraint>(*std::move(compiled), constraints_.vocabulary()->size());
  return absl::OkStatus();
}

std::shared_ptr<MaskJob> Engine::Impl::StartMasks(const std::vector<Sequence*>& seqs) {
  std::vector<SequenceConstraint*> states;
  for (Sequence* seq : seqs) {
    if (seq->constraint != nullptr) states.push_back(seq->constraint.get());
  }
  if (states.empty()) return nullptr;
  // On a CPU whose every core runs the model's OpenMP threads, a helper can
  // only run by taking a core from one of them, and its siblings then spin
  // at the next barrier until it is back: at batch 1 (60 parallel regions a
  // step) that cost more than the 20-40 us of masks it hid (bench/README.md,
  // "Constrained decoding"). There the loop fills the masks itself, after
  // the forward pass (MaskJob::Finish).
  if (info_.device == "cpu" && at::get_num_threads() >= usable_cpus_) {
    return std::make_shared<MaskJob>(std::move(states));
  }
  // Otherwise on the worker while the forward pass runs: the matchers already
  // hold the previous step's tokens, and the loop touches neither them nor
  // the masks until it finishes the job.
  return mask_worker_.Start(std::move(states));
}

void Engine::Impl::CountMasks(const MaskTiming& timing, int64_t wait_ns) {
  if (timing.masks == 0) return;
  std::lock_guard<std::mutex> lock(mu_);
  stats_.constraint_masks += timing.masks;
  stats_.constraint_masks_on_loop += timing.on_loop;
  stats_.constraint_mask_wall_ns += timing.wall_ns;
  stats_.constraint_mask_cpu_ns += timing.cpu_ns;
  stats_.constraint_mask_wait_ns += wait_ns;
}

absl::Status Engine::Impl::PrepareChoices(Sequence* seq) {
  const GenerationRequest& r = seq->request;
  for (int i = 1; i < r.n; ++i) {
    auto fork = std::make_unique<Sequence>();
    fork->request = r;
    fork->sink = seq->sink;
    fork->index = i;
    fork->seed = seq->seed + static_cast<uint64_t>(i);
    fork->prompt_ids = seq->prompt_ids;
    fork->max_new_tokens = seq->max_new_tokens;
    fork->submitted = seq->submitted;
    SG_RETURN_IF_ERROR(PrepareConstraint(fork.get()));  // a cache hit
    SG_RETURN_IF_ERROR(PrepareStreamState(fork.get()));
    seq->forks.push_back(std::move(fork));
  }
  return absl::OkStatus();
}

std::vector<Sequence*> Engine::Impl::ForkChoices(Sequence* seq) {
  std::vector<Sequence*> forked;
  std::vector<SequenceConstraint*> masks;
  for (auto& fork : seq->forks) {
    Sequence* raw = fork.get();
    raw->admitted = seq->admitted;
    absl::StatusOr<std::pair<int, int>> copy =
        scheduler_.Fork(seq->id, raw->id, raw->max_new_tokens);
    if (copy.ok()) {
      if (copy->first >= 0) CopyKvBlock(copy->first, copy->second);
      forked.push_back(raw);
      if (raw->constraint != nullptr) masks.push_back(raw->constraint.get());
    } else {
      // No room to share now: it prefills the prompt on its own, like a
      // request of its own at the queue's end.
      absl::Status added = scheduler_.Add(
          raw->id, static_cast<int>(raw->tokens.size()), raw->max_new_tokens,
          options_.prefix_caching ? raw->tokens : std::vector<int>());
      if (!added.ok()) raw->cancel = true;  // finished as cancelled by TakeWork
    }
    sequences_.emplace(raw->id, std::move(fork));
  }
  seq->forks.clear();
  // Their first tokens (the same position as seq's), on this thread: all of
  // it is waited for.
  MaskTiming fork_masks = FillMasks(masks);
  fork_masks.on_loop = fork_masks.masks;
  CountMasks(fork_masks, fork_masks.wall_ns);
  if (!forked.empty()) {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.forked_choices += static_cast<int64_t>(forked.size());
  }
  return forked;
}

void Engine::Impl::CopyKvBlock(int from, int to) {
  const int64_t bs = pool_.block_size;
  for (std::vector<torch::Tensor>* layers : {&pool_.k, &pool_.v}) {
    for (torch::Tensor& t : *layers) t.narrow(0, to * bs, bs).copy_(t.narrow(0, from * bs, bs));
  }
}

bool Engine::Impl::AcceptConstrained(Sequence* seq, int id) {
  return seq->constraint == nullptr || seq->constraint->matcher->AcceptToken(id);
}

void Engine::Impl::StampEvent(Sequence* seq, TokenEvent* event) {
  event->first = !seq->sent_first;
  seq->sent_first = true;
  event->seed = seq->seed - seq->index;  // the request's: choice i samples with seed + i
  event->index = seq->index;
}

absl::StatusOr<uint64_t> Engine::Impl::Submit(GenerationRequest request, TokenSink sink) {
  const bool has_text = !request.prompt.empty();
  const bool has_ids = !request.prompt_token_ids.empty();
  if (has_text == has_ids) {
    return InvalidField("prompt", has_text
                                      ? "prompt: set exactly one of prompt and prompt_token_ids, not both"
                                      : "prompt: one of prompt and prompt_token_ids must be set");
  }
  ApplyGenerationDefaults(info_.generation_defaults, &request);
  auto seq = std::make_unique<Sequence>();
  seq->submitted = Clock::now();
  seq->prompt_ids = has_ids ? request.prompt_token_ids : PromptIds(request.prompt);
  SG_RETURN_IF_ERROR(Validate(request, seq->prompt_ids, &seq->max_new_tokens));
  if (request.sampling.seed) {
    seq->seed = *request.sampling.seed;
  } else {
    // Below 2^53: the seed a client sends back (to resume, to reproduce)
    // survives JSON numbers and int64 command-line flags.
    seq->seed = ((static_cast<uint64_t>(std::random_device{}()) << 32) ^ std::random_device{}()) &
                ((uint64_t{1} << 53) - 1);
  }
  seq->request = std::move(request);
  seq->sink = std::move(sink);
  SG_RETURN_IF_ERROR(PrepareConstraint(seq.get()));
  SG_RETURN_IF_ERROR(PrepareStreamState(seq.get()));
  SG_RETURN_IF_ERROR(PrepareChoices(seq.get()));

  std::lock_guard<std::mutex> lock(mu_);
  if (stopping_) return absl::UnavailableError("the engine is shutting down");
  if (static_cast<int>(incoming_.size()) + scheduler_waiting_ >= options_.max_queue) {
    return absl::ResourceExhaustedError(absl::StrCat("the queue is full (", options_.max_queue,
                                                     " requests waiting); retry later"));
  }
  seq->id = next_id_++;
  seq->group = seq->id;
  for (auto& fork : seq->forks) {
    fork->id = next_id_++;
    fork->group = seq->id;
  }
  const uint64_t id = seq->id;
  if (seq->resumed > 0) {
    stats_.resumed++;
    stats_.resumed_tokens += seq->resumed;
  }
  incoming_.push_back(std::move(seq));
  stats_.submitted++;
  stats_.waiting = static_cast<int64_t>(incoming_.size()) + scheduler_waiting_;
  cv_.notify_all();
  return id;
}

void Engine::Impl::Finish(Sequence* seq, FinishReason reason, std::string text,
                          std::vector<TokenInfo> tokens, absl::Status status) {
  // Choices not forked yet end with choice 0 (cancelled or failed before its
  // first token).
  for (auto& fork : seq->forks) Finish(fork.get(), reason, "", {}, status);
  seq->forks.clear();
  TokenEvent event;
  event.text = std::move(text);
  event.tokens = std::move(tokens);
  event.finish_reason = reason;
  event.status = std::move(status);
  event.prompt_tokens = static_cast<int>(seq->prompt_ids.size());
  event.completion_tokens = static_cast<int>(seq->output_ids.size());
  StampEvent(seq, &event);
  const auto now = Clock::now();
  if (seq->admitted != Clock::time_point()) event.queue_ms = MsBetween(seq->submitted, seq->admitted);
  if (seq->first_token != Clock::time_point()) {
    event.ttft_ms = MsBetween(seq->submitted, seq->first_token);
    const double decode_s = MsBetween(seq->first_token, now) / 1000.0;
    const size_t fresh = seq->output_ids.size() - seq->resumed;  // generated here
    if (fresh > 1 && decode_s > 0) event.decode_tokens_per_s = (fresh - 1) / decode_s;
  }
  event.prefill_ms = seq->prefill_ms;
  seq->finished = true;
  // The bookkeeping comes before the sink: once the client has the last event
  // it may read the stats (metrics) at once, and they must already count this
  // sequence and its freed KV blocks (a TSan-slowed engine thread once lost
  // that race in LifecycleTest.MetricsOverHttp).
  scheduler_.Remove(seq->id);  // frees its KV blocks now
  if (draft_ != nullptr) draft_->Remove(seq->id);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (seq->index == 0) {  // requests, not choices: as submitted counts them
      stats_.finished++;
      if (reason == FinishReason::kCancelled) stats_.cancelled++;
    }
    CountGenerated(seq);
  }
  seq->sink(std::move(event));
}

void Engine::Impl::FinishFlushed(Sequence* seq, FinishReason reason, std::string text,
                                 std::vector<TokenInfo> tokens) {
  // What the detokenizer held back still passes through the stop matcher: a
  // stop string completed by it ends the stream with kStop instead.
  StopMatcher::Result tail = seq->stop_matcher->Push(seq->detokenizer->Flush());
  text += tail.text;
  if (tail.stopped) return Finish(seq, FinishReason::kStop, std::move(text), std::move(tokens));
  Finish(seq, reason, text + seq->stop_matcher->Flush(), std::move(tokens));
}

void Engine::Impl::HandleToken(Sequence* seq, const TokenInfo& token) {
  if (seq->first_token == Clock::time_point()) {
    seq->first_token = Clock::now();
    seq->prefill_ms = MsBetween(seq->admitted, seq->first_token);
  }
  seq->output_ids.push_back(token.id);
  seq->tokens.push_back(token.id);
  scheduler_.OnTokenAppended(seq->id, token.id);
  std::vector<TokenInfo> tokens{token};
  const FinishReason ends = EndingToken(seq->request, token.id);
  if (ends != FinishReason::kNone) {
    // The token's own text never reaches the output; what was held back does.
    return FinishFlushed(seq, ends, "", tokens);
  }
  if (!AcceptConstrained(seq, token.id)) {
    return Finish(seq, FinishReason::kError, "", tokens,
                  absl::InternalError(absl::StrCat("token ", token.id,
                                                   " was sampled but the constraint does not allow it")));
  }
  StopMatcher::Result out = seq->stop_matcher->Push(seq->detokenizer->Append(token.id));
  if (out.stopped) return Finish(seq, FinishReason::kStop, out.text, tokens);
  // A complete match that nothing may follow ends like a stop (OpenAI's
  // finish_reason "stop"), its last token's text included.
  if (seq->constraint != nullptr && seq->constraint->matcher->IsTerminated()) {
    return FinishFlushed(seq, FinishReason::kStop, std::move(out.text), tokens);
  }
  const bool at_length =
      static_cast<int>(seq->output_ids.size()) >= seq->max_new_tokens ||
      static_cast<int>(seq->tokens.size()) >= model_->config().max_position_embeddings;
  if (at_length) return FinishFlushed(seq, FinishReason::kLength, std::move(out.text), tokens);
  TokenEvent event;
  event.text = std::move(out.text);
  event.tokens = std::move(tokens);
  StampEvent(seq, &event);
  seq->sink(std::move(event));
}

void Engine::Impl::RunStep(const SchedulerStep& step) {
  // Prefix caching's partial blocks, before anything of this step writes the
  // pool (a copy's source may be a block this step's planning reused).
  for (const KvCacheManager::BlockCopy& copy : step.kv_copies) CopyKvBlock(copy.from, copy.to);
  int64_t prefilled = 0;
  std::vector<SeqChunk> chunks;
  std::vector<Sequence*> chunk_seqs;
  std::vector<int64_t> sample_rows;  // logits rows sampled (plain decodes, last prefill chunks)
  std::vector<Sequence*> seqs;       // their sequences
  std::vector<std::pair<size_t, int64_t>> verify;  // speculative decodes: (chunk, first row)
  int64_t logit_rows = 0;  // rows of Step's logits so far (all_logits chunks have several)
  for (const ScheduledPrefill& p : step.prefills) {
    Sequence* seq = sequences_.at(p.id).get();
    if (seq->admitted == Clock::time_point()) seq->admitted = Clock::now();
    if (p.last_chunk) {
      sample_rows.push_back(logit_rows);
      seqs.push_back(seq);
    }
    chunks.push_back(SeqChunk{std::vector<int>(seq->tokens.begin() + p.start,
                                               seq->tokens.begin() + p.start + p.length),
                              p.start, &scheduler_.BlockTable(p.id)});
    chunk_seqs.push_back(seq);
    prefilled += p.length;
    logit_rows++;
  }
  for (size_t i = 0; i < step.decodes.size(); ++i) {
    const uint64_t id = step.decodes[i];
    Sequence* seq = sequences_.at(id).get();
    SeqChunk chunk{{seq->tokens.back()}, static_cast<int64_t>(seq->tokens.size()) - 1,
                   &scheduler_.BlockTable(id)};
    const int granted = step.decode_drafts.empty() ? 0 : step.decode_drafts[i];
    if (granted > 0) {  // [newest token, d1 .. dg], logits for every row
      chunk.tokens.insert(chunk.tokens.end(), seq->drafts.begin(), seq->drafts.begin() + granted);
      chunk.all_logits = true;
      verify.emplace_back(chunks.size(), logit_rows);
      logit_rows += granted + 1;
    } else {
      sample_rows.push_back(logit_rows++);
      seqs.push_back(seq);
    }
    chunks.push_back(std::move(chunk));
    chunk_seqs.push_back(seq);
  }
  if (chunks.empty()) return;
  std::shared_ptr<MaskJob> masks = StartMasks(seqs);  // the constrained among the sampled rows
  torch::Tensor logits;  // [logit_rows, vocab]
  try {
    logits = model_->Step(chunks, &pool_);
  } catch (...) {
    if (masks != nullptr) masks->Finish();  // the matchers outlive no thread that uses them
    throw;
  }
  if (masks != nullptr) {
    // What the forward pass did not hide: the loop's own fills and its wait.
    const auto wait0 = Clock::now();
    const MaskTiming timing = masks->Finish();
    CountMasks(timing, std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - wait0).count());
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.prefill_tokens += prefilled;
  }
  if (!sample_rows.empty()) {
    // n > 1: choices forked off a prompt prefilled just now sample from its row.
    const size_t own_rows = seqs.size();
    for (size_t k = 0; k < own_rows; ++k) {
      for (Sequence* fork : ForkChoices(seqs[k])) {
        sample_rows.push_back(sample_rows[k]);
        seqs.push_back(fork);
      }
    }
    bool identity = static_cast<int64_t>(sample_rows.size()) == logits.size(0);
    for (size_t r = 0; identity && r < sample_rows.size(); ++r) {
      identity = sample_rows[r] == static_cast<int64_t>(r);
    }
    torch::Tensor sampled = logits;
    if (!identity) sampled = logits.index_select(0, torch::tensor(sample_rows).to(logits.device()));
    std::vector<SampleInput> rows;
    for (Sequence* s : seqs) {
      rows.push_back(SampleInput{&s->request.sampling, &s->prompt_ids, &s->output_ids,
                                 s->rng.get(), s->request.top_logprobs,
                                 s->constraint ? s->constraint->mask.data() : nullptr});
    }
    std::vector<TokenInfo> picked = SampleBatch(sampled, rows, valid_vocab_);
    for (size_t i = 0; i < seqs.size(); ++i) HandleToken(seqs[i], picked[i]);
  }
  for (const auto& [ci, row0] : verify) {
    const int granted = static_cast<int>(chunks[ci].tokens.size()) - 1;
    VerifySequence(chunk_seqs[ci], logits.narrow(0, row0, granted + 1), granted);
  }
}

// ---- Speculative decoding (engine/speculative.h) ----

static_assert(EngineStats::kDraftPositions == kMaxDraftTokens,
              "EngineStats counts every draft position");

void Engine::Impl::ProposeDrafts() {
  if (!speculate_) return;
  std::vector<Sequence*> decoding;
  for (auto& [id, s] : sequences_) {
    s->drafts.clear();
    if (s->finished || scheduler_.StateOf(id) != Scheduler::State::kDecoding) continue;
    // A constrained sequence decodes one token a step: its matcher and mask
    // would have to follow every accepted draft.
    if (s->constraint != nullptr) continue;
    if (scheduler_.CachedTokens(id) != scheduler_.KnownTokens(id) - 1) continue;
    decoding.push_back(s.get());
  }
  // Batched steps are compute-bound: extra rows would cost more than they save.
  if (static_cast<int>(decoding.size()) > options_.speculative_max_batch) return;
  const int context = model_->config().max_position_embeddings;
  std::vector<DraftModel::Request> requests;
  for (Sequence* s : decoding) {
    // The verify chunk's positions end at tokens.size() - 1 + k, inside the
    // context; 1 + k within max_new_tokens (the scheduler keeps that too, but
    // a draft model's tokens cost a step each).
    const int left = s->max_new_tokens - static_cast<int>(s->output_ids.size()) - 1;
    const int k = std::min({s->draft_length->k(), context - static_cast<int>(s->tokens.size()), left});
    if (k < 1) continue;
    if (draft_ != nullptr) {
      requests.push_back(DraftModel::Request{s->id, &s->tokens, k, &s->drafts});
    } else {
      s->drafts = ProposePromptLookup(s->tokens, k);
    }
  }
  if (!requests.empty()) {
    const auto start = Clock::now();
    draft_->Propose(requests, valid_vocab_, options_.draft_p_min);
    std::lock_guard<std::mutex> lock(mu_);
    stats_.draft_ns += std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count();
  }
  for (Sequence* s : decoding) {
    if (!s->drafts.empty()) scheduler_.ProposeDraftTokens(s->id, static_cast<int>(s->drafts.size()));
  }
}

void Engine::Impl::VerifySequence(Sequence* seq, const torch::Tensor& rows, int granted) {
  seq->drafts.resize(granted);
  const SampleInput input{&seq->request.sampling, &seq->prompt_ids, &seq->output_ids,
                          seq->rng.get(), seq->request.top_logprobs};
  VerifyResult verified = VerifyDrafts(rows, seq->drafts, input, valid_vocab_);
  seq->draft_length->Update(granted, verified.accepted);
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.draft_tokens += granted;
    stats_.accepted_draft_tokens += verified.accepted;
    stats_.verify_steps++;
    for (int i = 0; i < std::min(granted, EngineStats::kDraftPositions); ++i) {
      stats_.drafted_at[i]++;
      if (i <= verified.accepted) stats_.reached_at[i]++;
      if (i < verified.accepted) stats_.accepted_at[i]++;
    }
  }
  // One event per token, as without speculation: an EOS, a stop string or
  // max_new_tokens among them finishes the stream there, and the rest are
  // dropped (Finish frees the sequence's blocks, rejected ones included).
  for (const TokenInfo& token : verified.tokens) {
    HandleToken(seq, token);
    if (seq->finished) return;
  }
  scheduler_.RollBack(seq->id);
  seq->drafts.clear();
}

void Engine::Impl::FailAll(const std::string& what) {
  spdlog::error("engine step failed: {}", what);
  for (auto& [id, s] : sequences_) {
    if (!s->finished) Finish(s.get(), FinishReason::kError, "", {}, absl::InternalError(what));
  }
}

void Engine::Impl::Retire() {
  for (auto it = sequences_.begin(); it != sequences_.end();) {
    it = it->second->finished ? sequences_.erase(it) : std::next(it);
  }
}

void Engine::Impl::CountGenerated(Sequence* seq) {
  const int64_t generated = static_cast<int64_t>(seq->output_ids.size()) - seq->resumed;
  stats_.generated_tokens += generated - seq->counted;
  seq->counted = generated;
}

void Engine::Impl::PublishStats() {
  std::lock_guard<std::mutex> lock(mu_);
  // Tokens count as they are produced (once per step), not at a request's end.
  for (auto& [id, seq] : sequences_) CountGenerated(seq.get());
  scheduler_waiting_ = scheduler_.num_waiting_fresh();
  stats_.waiting = static_cast<int64_t>(incoming_.size()) + scheduler_.num_waiting();
  stats_.running = scheduler_.num_running();
  stats_.preemptions = scheduler_.num_preemptions();
  stats_.kv_blocks_used = scheduler_.num_used_blocks();
  stats_.prefix_cache_queries = scheduler_.prefix_cache_queries();
  stats_.prefix_cache_hits = scheduler_.prefix_cache_hits();
}

bool Engine::Impl::TakeWork() {
  std::vector<std::unique_ptr<Sequence>> cancelled_incoming;
  bool stopping = false;
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] {
      if (stopping_) return true;
      if (paused_ && step_budget_ == 0) return false;
      return !incoming_.empty() || !sequences_.empty() || !cancel_.empty();
    });
    if (paused_ && step_budget_ > 0 && !stopping_) step_budget_--;
    stopping = stopping_;
    for (auto& s : incoming_) {
      if (stopping || cancel_.count(s->group)) {
        cancelled_incoming.push_back(std::move(s));
        continue;
      }
      // A resumed stream's delivered tokens are known tokens like the
      // prompt's: prefilled (and shareable) with it.
      absl::Status added = scheduler_.Add(
          s->id, static_cast<int>(s->tokens.size()), s->max_new_tokens - s->resumed,
          options_.prefix_caching ? s->tokens : std::vector<int>());
      if (!added.ok()) {  // Submit's checks make this unreachable; never lose a request
        s->cancel = true;
        spdlog::error("scheduler refused request {}: {}", s->id, added.ToString());
      }
      stats_.prompt_tokens += static_cast<int64_t>(s->prompt_ids.size());
      const uint64_t id = s->id;
      sequences_.emplace(id, std::move(s));
    }
    incoming_.clear();
    for (auto& [id, s] : sequences_) {
      if (stopping || cancel_.count(s->group)) s->cancel = true;
    }
    cancel_.clear();
    scheduler_waiting_ = scheduler_.num_waiting_fresh();
  }
  for (auto& s : cancelled_incoming) Finish(s.get(), FinishReason::kCancelled, "", {});
  for (auto& [id, s] : sequences_) {
    if (s->cancel && !s->finished) Finish(s.get(), FinishReason::kCancelled, "", {});
  }
  Retire();
  return !(stopping && sequences_.empty());
}

void Engine::Impl::Loop() {
  c10::InferenceMode guard;
  // OpenMP's thread count is per calling thread: set it on the thread that runs
  // the model (without this, Debian's libtorch runs this thread's ops on one core).
  const int threads = ConfigureThreads(options_.threads);
  std::optional<ThreadGovernor> governor;
  if (options_.adaptive_threads && info_.device == "cpu" && threads > 1) {
    ThreadGovernorOptions g;
    g.max_threads = threads;
    governor.emplace(g);
  }
  while (TakeWork()) {
    const Clock::time_point wall_start = Clock::now();
    const double cpu_start = ProcessCpuMs();
    try {
      ProposeDrafts();
      RunStep(scheduler_.Schedule());
    } catch (const c10::Error& e) {
      FailAll(e.what_without_backtrace());
    } catch (const std::exception& e) {
      FailAll(e.what());
    }
    if (governor) {
      const int before = governor->threads();
      const int now = governor->OnStep(MsBetween(wall_start, Clock::now()), ProcessCpuMs() - cpu_start);
      if (now != before) at::set_num_threads(now);
      // A drop halves a 2-thread server's speed until a probe wins the thread
      // back: worth a line, with the figure that decided it.
      // (A failed probe, every few seconds under contention, is not.)
      using Decision = ThreadGovernor::Decision;
      if (governor->last_decision() == Decision::kDrop) {
        spdlog::info("adaptive threads: {} -> {} (CPU time / (wall x threads) {:.2f} over the last "
                     "window of steps)", before, now, governor->last_efficiency());
      } else if (governor->last_decision() == Decision::kProbeKept) {
        spdlog::info("adaptive threads: back to {} (a probe ran at {:.2f})", now,
                     governor->last_efficiency());
      }
    }
    Retire();
    PublishStats();
    std::lock_guard<std::mutex> lock(mu_);
    stats_.steps++;
    stats_.cpu_threads = governor ? governor->threads() : (info_.device == "cpu" ? threads : 0);
    stats_.cpu_thread_changes = governor ? governor->changes() : 0;
  }
  PublishStats();
}

// ---- Engine: the public face ----

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Engine::~Engine() { Shutdown(); }

// Runs on the loop thread: loads the model and tokenizer and sizes the KV
// pool (model_builder.h), then allocates the pool.
static absl::StatusOr<std::unique_ptr<Engine::Impl>> BuildImpl(const EngineOptions& options,
                                                               const ModelOptions& model_options) {
  SG_ASSIGN_OR_RETURN(BuiltModel built, BuildModel(options, model_options));
  const int64_t blocks = built.scheduling.num_blocks;
  std::unique_ptr<DraftModel> draft;
  if (!options.draft_model.empty()) {
    // As many blocks as the target's pool: a sequence's draft cache never
    // holds more than its target cache plus the drafts of one step.
    SG_ASSIGN_OR_RETURN(draft, DraftModel::Load(options.draft_model, model_options,
                                                *built.tokenizer, built.model->config(),
                                                built.scheduling.num_blocks + options.max_batch,
                                                built.scheduling.block_size));
  }
  try {
    return std::make_unique<Engine::Impl>(options, std::move(built.model),
                                          std::move(built.tokenizer), std::move(built.info),
                                          built.scheduling, std::move(built.vocabulary),
                                          std::move(draft));
  } catch (const c10::Error& e) {  // e.g. out of memory for the KV pool
    return absl::ResourceExhaustedError(
        absl::StrCat("allocating the KV cache (", blocks, " blocks): ", e.what_without_backtrace()));
  }
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const EngineOptions& options) {
  SG_ASSIGN_OR_RETURN(const ModelOptions model_options, ChooseModelOptions(options));
  if (options.max_queue < 1) return absl::InvalidArgumentError("max_queue: must be at least 1");
  if (options.max_batch < 1) return absl::InvalidArgumentError("max_batch: must be at least 1");
  if (options.default_max_new_tokens < 1) {
    return absl::InvalidArgumentError("default_max_new_tokens: must be at least 1");
  }
  if (options.max_prefill_tokens < 1) {
    return absl::InvalidArgumentError("max_prefill_tokens: must be at least 1");
  }
  if (options.kv_block_size < 1 || options.kv_block_size > 1024) {
    return absl::InvalidArgumentError("kv_block_size: must be in [1, 1024]");
  }
  if (options.kv_cache_blocks < 0) {
    return absl::InvalidArgumentError("kv_cache_blocks: must not be negative");
  }
  if (options.speculative != "none" && options.speculative != "prompt-lookup" &&
      options.speculative != "draft") {
    return absl::InvalidArgumentError(
        absl::StrCat("speculative: must be \"none\", \"prompt-lookup\" or \"draft\", got \"",
                     options.speculative, "\""));
  }
  if ((options.speculative == "draft") != !options.draft_model.empty()) {
    return absl::InvalidArgumentError(
        "draft_model: a draft model directory goes with speculative \"draft\", and only with it");
  }
  if (!(options.draft_p_min >= 0.0f && options.draft_p_min <= 1.0f)) {  // NaN too
    return absl::InvalidArgumentError(
        absl::StrCat("draft_p_min: must be in [0, 1], got ", options.draft_p_min));
  }
  if (options.num_speculative_tokens < 0 || options.num_speculative_tokens > kMaxDraftTokens) {
    return absl::InvalidArgumentError(absl::StrCat("num_speculative_tokens: must be in [0, ",
                                                   kMaxDraftTokens, "], got ",
                                                   options.num_speculative_tokens));
  }
  // The loop thread owns the device from the start: it loads the model, then
  // runs the loop. Measured reason: once a second thread has run OpenMP
  // parallel regions (the model load does), libgomp manages more threads than
  // there are cores and shortens its spin-waits, and every parallel region of
  // the loop thread then pays for sleeping and waking its workers: 8-17% per
  // decode step on a 2-core machine (float32 at batch 1, bfloat16 at 16).
  auto ready = std::make_shared<std::promise<absl::StatusOr<Impl*>>>();
  std::thread loop([ready, options, model_options] {
    absl::StatusOr<std::unique_ptr<Impl>> impl = absl::InternalError("engine set-up failed");
    try {  // an exception must not escape this thread (std::terminate)
      impl = BuildImpl(options, model_options);
    } catch (const std::exception& e) {
      impl = absl::InternalError(absl::StrCat("loading ", options.model_dir, ": ", e.what()));
    }
    if (!impl.ok()) {
      ready->set_value(impl.status());
      return;
    }
    Impl* raw = impl->release();  // owned by the Engine that Create returns
    ready->set_value(raw);
    raw->Loop();
  });
  absl::StatusOr<Impl*> built = ready->get_future().get();
  if (!built.ok()) {
    loop.join();
    return built.status();
  }
  std::unique_ptr<Impl> impl(*built);
  impl->AdoptLoopThread(std::move(loop));
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}


absl::StatusOr<uint64_t> Engine::Submit(GenerationRequest request, TokenSink sink) {
  return impl_->Submit(std::move(request), std::move(sink));
}
void Engine::Cancel(uint64_t id) { impl_->Cancel(id); }
void Engine::Shutdown() {
  if (impl_) impl_->Shutdown();
}
std::vector<int> Engine::Tokenize(const std::string& text, bool add_special) const {
  if (add_special) return impl_->PromptIds(text);
  return impl_->tokenizer().Encode(text);
}
std::vector<int> Engine::Tokenize(const std::string& text, bool add_special,
                                  bool parse_special) const {
  if (add_special) return impl_->PromptIds(text, parse_special);
  return impl_->tokenizer().Encode(text, EncodeOptions{false, parse_special});
}
int Engine::PieceId(const std::string& piece) const { return impl_->tokenizer().PieceToId(piece); }
bool Engine::IsSpecialToken(int id) const { return impl_->tokenizer().IsControl(id); }
std::string Engine::Detokenize(const std::vector<int>& ids) const {
  return impl_->tokenizer().Decode(ids);
}
std::string Engine::TokenPiece(int id) const {
  if (id < 0 || id >= impl_->tokenizer().piece_count()) return "";
  return impl_->tokenizer().IdToPiece(id);
}
const ModelInfo& Engine::model_info() const { return impl_->info(); }
EngineStats Engine::stats() const {
  EngineStats stats = impl_->stats();
  stats.constraint_compiles = impl_->constraints().compiles();
  stats.constraint_cache_hits = impl_->constraints().hits();
  return stats;
}
const std::shared_ptr<const TokenVocabulary>& Engine::token_vocabulary() const {
  return impl_->constraints().vocabulary();
}
void Engine::SetConstraintCompilerForTesting(ConstraintCompiler compiler) {
  impl_->constraints().SetCompiler(std::move(compiler));
}
void Engine::Pause() { impl_->Pause(); }
void Engine::Resume() { impl_->Resume(); }
void Engine::Step(int iterations) { impl_->Step(iterations); }

}  // namespace streamgen
