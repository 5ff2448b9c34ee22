// The engine loop: one thread owns the model and every KV cache.
//   wait -> cancel -> admit (prefill + first token) -> one batched decode step
//   -> sample -> emit -> retire
#include "engine/engine.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_set>

#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "engine/detokenizer.h"
#include "engine/device.h"
#include "engine/llama_model.h"
#include "engine/sampler.h"
#include "engine/status.h"
#include "engine/stop_matcher.h"
#include "engine/tokenizer.h"

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

double MsBetween(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// A request inside the engine. Owned by the loop thread once admitted.
struct Sequence {
  uint64_t id = 0;
  GenerationRequest request;
  TokenSink sink;
  std::vector<int> prompt_ids;
  std::vector<int> output_ids;
  int max_new_tokens = 0;
  uint64_t seed = 0;
  std::unique_ptr<SequenceRng> rng;
  std::unique_ptr<IncrementalDetokenizer> detokenizer;
  std::unique_ptr<StopMatcher> stop_matcher;
  KvCache cache;
  int next_token = -1;  // sampled, not yet fed to the model
  bool cancel = false;  // Cancel() or shutdown reached it
  bool finished = false;  // its last event was sent
  Clock::time_point submitted;
  Clock::time_point admitted;
  Clock::time_point first_token;
  double prefill_ms = 0;
};

}  // namespace

class Engine::Impl {
 public:
  Impl(EngineOptions options, std::unique_ptr<LlamaModel> model,
       std::unique_ptr<Tokenizer> tokenizer, ModelInfo info)
      : options_(std::move(options)),
        model_(std::move(model)),
        tokenizer_(std::move(tokenizer)),
        info_(std::move(info)),
        paused_(options_.start_paused) {
    valid_vocab_ = std::min(tokenizer_->piece_count(), model_->config().vocab_size);
    loop_ = std::thread([this] { Loop(); });
  }
  ~Impl() { Shutdown(); }

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
  std::vector<int> PromptIds(const std::string& text) const {
    const ModelConfig& c = model_->config();
    std::vector<int> ids;
    if (c.add_bos) ids.push_back(c.bos_token_id);
    for (int id : tokenizer_->Encode(text)) ids.push_back(id);
    if (c.add_eos && !c.eos_token_ids.empty()) ids.push_back(c.eos_token_ids[0]);
    return ids;
  }
  const Tokenizer& tokenizer() const { return *tokenizer_; }

 private:
  absl::Status Validate(const GenerationRequest& r, const std::vector<int>& ids,
                        int* max_new_tokens) const;
  void Loop();
  void Admit(std::deque<std::unique_ptr<Sequence>>* admitted);
  void Prefill(Sequence* seq);
  void DecodeStep();
  // Takes a sampled token: emits its text and decides whether `seq` is done.
  void HandleToken(Sequence* seq, const TokenInfo& token);
  void Finish(Sequence* seq, FinishReason reason, std::string text, std::vector<TokenInfo> tokens,
              absl::Status status = absl::OkStatus());
  void FailRunning(const std::string& what);
  // SampleBatch throws c10::Error on what validated requests never cause; the
  // loop's catch ends the step's sequences with kError.
  std::vector<TokenInfo> Sample(const torch::Tensor& logits, const std::vector<SampleInput>& rows) {
    return SampleBatch(logits, rows, valid_vocab_);
  }

  const EngineOptions options_;
  std::unique_ptr<LlamaModel> model_;
  std::unique_ptr<Tokenizer> tokenizer_;
  const ModelInfo info_;
  int valid_vocab_ = 0;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::unique_ptr<Sequence>> waiting_;  // guarded by mu_, bounded by max_queue
  std::unordered_set<uint64_t> cancel_;            // guarded by mu_
  bool stopping_ = false;                          // guarded by mu_
  bool paused_ = false;                            // guarded by mu_
  int64_t step_budget_ = 0;                        // guarded by mu_
  uint64_t next_id_ = 1;                           // guarded by mu_
  EngineStats stats_;                              // guarded by mu_

  std::vector<std::unique_ptr<Sequence>> running_;  // loop thread only
  std::mutex join_mu_;
  std::thread loop_;
};

absl::Status Engine::Impl::Validate(const GenerationRequest& r, const std::vector<int>& ids,
                                    int* max_new_tokens) const {
  const SamplingParams& s = r.sampling;
  auto bad = [](auto&&... parts) { return absl::InvalidArgumentError(absl::StrCat(parts...)); };
  if (ids.empty()) return bad("prompt: the prompt has no tokens");
  for (size_t i = 0; i < r.prompt_token_ids.size(); ++i) {
    const int id = r.prompt_token_ids[i];
    if (id < 0 || id >= valid_vocab_) {
      return bad("prompt_token_ids[", i, "]: ", id, " is outside the vocabulary [0, ",
                 valid_vocab_, ")");
    }
  }
  if (!(s.temperature >= 0.0f && s.temperature <= 100.0f)) {
    return bad("temperature: ", s.temperature, " is outside [0, 100]");
  }
  if (s.top_k < 0) return bad("top_k: ", s.top_k, " is negative");
  if (!(s.top_p > 0.0f && s.top_p <= 1.0f)) return bad("top_p: ", s.top_p, " is outside (0, 1]");
  if (!(s.min_p >= 0.0f && s.min_p < 1.0f)) return bad("min_p: ", s.min_p, " is outside [0, 1)");
  if (!(s.repetition_penalty > 0.0f && s.repetition_penalty <= 10.0f)) {
    return bad("repetition_penalty: ", s.repetition_penalty, " is outside (0, 10]");
  }
  if (!(s.presence_penalty >= -2.0f && s.presence_penalty <= 2.0f)) {
    return bad("presence_penalty: ", s.presence_penalty, " is outside [-2, 2]");
  }
  if (!(s.frequency_penalty >= -2.0f && s.frequency_penalty <= 2.0f)) {
    return bad("frequency_penalty: ", s.frequency_penalty, " is outside [-2, 2]");
  }
  if (r.top_logprobs < 0 || r.top_logprobs > 20) {
    return bad("top_logprobs: ", r.top_logprobs, " is outside [0, 20]");
  }
  if (static_cast<int>(r.stop.size()) > options_.max_stop_strings) {
    return bad("stop: ", r.stop.size(), " stop strings, at most ", options_.max_stop_strings);
  }
  for (size_t i = 0; i < r.stop.size(); ++i) {
    if (r.stop[i].empty()) return bad("stop[", i, "]: empty stop string");
    if (static_cast<int>(r.stop[i].size()) > options_.max_stop_string_bytes) {
      return bad("stop[", i, "]: ", r.stop[i].size(), " bytes, at most ",
                 options_.max_stop_string_bytes);
    }
  }
  for (size_t i = 0; i < r.stop_token_ids.size(); ++i) {
    const int id = r.stop_token_ids[i];
    if (id < 0 || id >= model_->config().vocab_size) {
      return bad("stop_token_ids[", i, "]: ", id, " is outside the vocabulary");
    }
  }
  const int context = model_->config().max_position_embeddings;
  const int prompt_len = static_cast<int>(ids.size());
  if (prompt_len >= context) {
    return bad("prompt: ", prompt_len, " tokens leave no room in the model's context of ",
               context);
  }
  if (r.max_new_tokens < 0) return bad("max_new_tokens: ", r.max_new_tokens, " is negative");
  if (r.max_new_tokens > options_.max_new_tokens_limit) {
    return bad("max_new_tokens: ", r.max_new_tokens, " is above the server's limit of ",
               options_.max_new_tokens_limit);
  }
  if (r.max_new_tokens > 0 && prompt_len + r.max_new_tokens > context) {
    return bad("max_new_tokens: prompt (", prompt_len, " tokens) + max_new_tokens (",
               r.max_new_tokens, ") exceeds the model's context of ", context);
  }
  *max_new_tokens = r.max_new_tokens > 0
                        ? r.max_new_tokens
                        : std::min(options_.default_max_new_tokens, context - prompt_len);
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> Engine::Impl::Submit(GenerationRequest request, TokenSink sink) {
  const bool has_text = !request.prompt.empty();
  const bool has_ids = !request.prompt_token_ids.empty();
  if (has_text == has_ids) {
    return absl::InvalidArgumentError(
        has_text ? "prompt: set exactly one of prompt and prompt_token_ids, not both"
                 : "prompt: one of prompt and prompt_token_ids must be set");
  }
  auto seq = std::make_unique<Sequence>();
  seq->submitted = Clock::now();
  seq->prompt_ids = has_ids ? request.prompt_token_ids : PromptIds(request.prompt);
  SG_RETURN_IF_ERROR(Validate(request, seq->prompt_ids, &seq->max_new_tokens));
  if (request.sampling.seed) {
    seq->seed = *request.sampling.seed;
  } else {
    seq->seed = (static_cast<uint64_t>(std::random_device{}()) << 32) ^ std::random_device{}();
  }
  seq->request = std::move(request);
  seq->sink = std::move(sink);

  std::lock_guard<std::mutex> lock(mu_);
  if (stopping_) return absl::UnavailableError("the engine is shutting down");
  if (static_cast<int>(waiting_.size()) >= options_.max_queue) {
    return absl::ResourceExhaustedError(absl::StrCat("the queue is full (", options_.max_queue,
                                                     " requests waiting); retry later"));
  }
  seq->id = next_id_++;
  const uint64_t id = seq->id;
  waiting_.push_back(std::move(seq));
  stats_.submitted++;
  stats_.waiting = static_cast<int64_t>(waiting_.size());
  cv_.notify_all();
  return id;
}

void Engine::Impl::Finish(Sequence* seq, FinishReason reason, std::string text,
                          std::vector<TokenInfo> tokens, absl::Status status) {
  TokenEvent event;
  event.text = std::move(text);
  event.tokens = std::move(tokens);
  event.finish_reason = reason;
  event.status = std::move(status);
  event.prompt_tokens = static_cast<int>(seq->prompt_ids.size());
  event.completion_tokens = static_cast<int>(seq->output_ids.size());
  event.seed = seq->seed;
  const auto now = Clock::now();
  if (seq->admitted != Clock::time_point()) event.queue_ms = MsBetween(seq->submitted, seq->admitted);
  if (seq->first_token != Clock::time_point()) {
    event.ttft_ms = MsBetween(seq->submitted, seq->first_token);
    const double decode_s = MsBetween(seq->first_token, now) / 1000.0;
    if (seq->output_ids.size() > 1 && decode_s > 0) {
      event.decode_tokens_per_s = (seq->output_ids.size() - 1) / decode_s;
    }
  }
  event.prefill_ms = seq->prefill_ms;
  seq->finished = true;
  seq->sink(std::move(event));
  seq->cache = KvCache();  // frees the KV memory now
  std::lock_guard<std::mutex> lock(mu_);
  stats_.finished++;
  if (reason == FinishReason::kCancelled) stats_.cancelled++;
  stats_.generated_tokens += static_cast<int64_t>(seq->output_ids.size());
}

void Engine::Impl::HandleToken(Sequence* seq, const TokenInfo& token) {
  if (seq->output_ids.empty()) seq->first_token = Clock::now();
  seq->output_ids.push_back(token.id);
  std::vector<TokenInfo> tokens{token};
  const GenerationRequest& r = seq->request;
  const auto& eos = model_->config().eos_token_ids;
  const bool is_stop_id =
      std::find(r.stop_token_ids.begin(), r.stop_token_ids.end(), token.id) != r.stop_token_ids.end();
  const bool is_eos =
      !r.ignore_eos && std::find(eos.begin(), eos.end(), token.id) != eos.end();
  if (is_stop_id || is_eos) {
    // The token's own text never reaches the output; what was held back does.
    StopMatcher::Result held = seq->stop_matcher->Push(seq->detokenizer->Flush());
    if (held.stopped) return Finish(seq, FinishReason::kStop, held.text, tokens);
    Finish(seq, is_stop_id ? FinishReason::kStop : FinishReason::kEos,
           held.text + seq->stop_matcher->Flush(), tokens);
    return;
  }
  StopMatcher::Result out = seq->stop_matcher->Push(seq->detokenizer->Append(token.id));
  if (out.stopped) return Finish(seq, FinishReason::kStop, out.text, tokens);
  const bool at_length = static_cast<int>(seq->output_ids.size()) >= seq->max_new_tokens ||
                         seq->cache.length + 1 >= seq->cache.capacity;
  if (at_length) {
    StopMatcher::Result tail = seq->stop_matcher->Push(seq->detokenizer->Flush());
    if (tail.stopped) return Finish(seq, FinishReason::kStop, out.text + tail.text, tokens);
    Finish(seq, FinishReason::kLength, out.text + tail.text + seq->stop_matcher->Flush(), tokens);
    return;
  }
  seq->next_token = token.id;
  TokenEvent event;
  event.text = std::move(out.text);
  event.tokens = std::move(tokens);
  seq->sink(std::move(event));
}

// Runs the prompt through the model in one pass and samples the first token.
void Engine::Impl::Prefill(Sequence* seq) {
  seq->admitted = Clock::now();
  // Capacity: the prompt plus every token that may be fed back (the last one never is).
  seq->cache = model_->NewCache(static_cast<int64_t>(seq->prompt_ids.size()) + seq->max_new_tokens);
  seq->rng = std::make_unique<SequenceRng>(seq->seed);
  seq->detokenizer = std::make_unique<IncrementalDetokenizer>(tokenizer_.get(), seq->prompt_ids);
  seq->stop_matcher = std::make_unique<StopMatcher>(seq->request.stop);
  torch::Tensor logits = model_->Forward(seq->prompt_ids, &seq->cache);  // [1, vocab]
  SampleInput in{&seq->request.sampling, &seq->prompt_ids, &seq->output_ids, seq->rng.get(),
                 seq->request.top_logprobs};
  std::vector<TokenInfo> picked = Sample(logits, {in});
  seq->prefill_ms = MsBetween(seq->admitted, Clock::now());
  HandleToken(seq, picked[0]);
}

void Engine::Impl::DecodeStep() {
  std::vector<int> tokens;
  std::vector<KvCache*> caches;
  std::vector<SampleInput> rows;
  std::vector<Sequence*> seqs;
  for (auto& s : running_) {
    if (s->finished || s->next_token < 0) continue;
    tokens.push_back(s->next_token);
    caches.push_back(&s->cache);
    rows.push_back(SampleInput{&s->request.sampling, &s->prompt_ids, &s->output_ids, s->rng.get(),
                               s->request.top_logprobs});
    seqs.push_back(s.get());
    s->next_token = -1;
  }
  if (seqs.empty()) return;
  torch::Tensor logits = model_->DecodeBatch(tokens, caches);  // [B, vocab]
  std::vector<TokenInfo> picked = Sample(logits, rows);
  for (size_t i = 0; i < seqs.size(); ++i) HandleToken(seqs[i], picked[i]);
}

void Engine::Impl::FailRunning(const std::string& what) {
  spdlog::error("engine step failed: {}", what);
  for (auto& s : running_) {
    if (!s->finished) Finish(s.get(), FinishReason::kError, "", {}, absl::InternalError(what));
  }
}

void Engine::Impl::Loop() {
  c10::InferenceMode guard;
  // OpenMP's thread count is per calling thread: set it on the thread that runs
  // the model (without this, Debian's libtorch runs this thread's ops on one core).
  ConfigureThreads(options_.threads);
  while (true) {
    std::vector<std::unique_ptr<Sequence>> cancelled;
    std::deque<std::unique_ptr<Sequence>> admitted;
    bool stopping = false;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] {
        if (stopping_) return true;
        if (paused_ && step_budget_ == 0) return false;
        return !waiting_.empty() || !running_.empty() || !cancel_.empty();
      });
      if (paused_ && step_budget_ > 0 && !stopping_) step_budget_--;
      stopping = stopping_;
      // Cancelled (or, when stopping, all) waiting requests leave the queue.
      for (auto it = waiting_.begin(); it != waiting_.end();) {
        if (stopping || cancel_.count((*it)->id)) {
          cancelled.push_back(std::move(*it));
          it = waiting_.erase(it);
        } else {
          ++it;
        }
      }
      for (auto& s : running_) {
        if (stopping || cancel_.count(s->id)) s->cancel = true;
      }
      cancel_.clear();
      while (!stopping && !waiting_.empty() &&
             static_cast<int>(running_.size() + admitted.size()) < options_.max_batch) {
        admitted.push_back(std::move(waiting_.front()));
        waiting_.pop_front();
      }
      stats_.waiting = static_cast<int64_t>(waiting_.size());
    }
    for (auto& s : cancelled) Finish(s.get(), FinishReason::kCancelled, "", {});
    for (auto& s : running_) {
      if (s->cancel && !s->finished) Finish(s.get(), FinishReason::kCancelled, "", {});
    }
    try {
      for (auto& s : admitted) {
        {
          std::lock_guard<std::mutex> lock(mu_);
          stats_.prompt_tokens += static_cast<int64_t>(s->prompt_ids.size());
        }
        running_.push_back(std::move(s));
        Prefill(running_.back().get());
      }
      DecodeStep();
    } catch (const c10::Error& e) {
      FailRunning(e.what_without_backtrace());
    } catch (const std::exception& e) {
      FailRunning(e.what());
    }
    // Retire finished sequences (their caches were freed by Finish).
    running_.erase(std::remove_if(running_.begin(), running_.end(),
                                  [](const std::unique_ptr<Sequence>& s) { return s->finished; }),
                   running_.end());
    {
      std::lock_guard<std::mutex> lock(mu_);
      stats_.running = static_cast<int64_t>(running_.size());
      stats_.steps++;
    }
    if (stopping && running_.empty()) return;
  }
}

// ---- Engine: the public face ----

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Engine::~Engine() { Shutdown(); }

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const EngineOptions& options) {
  SG_ASSIGN_OR_RETURN(torch::Device device, ParseDevice(options.device));
  SG_ASSIGN_OR_RETURN(torch::ScalarType dtype, ParseDtype(options.dtype, device));
  if (options.max_queue < 1) return absl::InvalidArgumentError("max_queue: must be at least 1");
  if (options.max_batch < 1) return absl::InvalidArgumentError("max_batch: must be at least 1");
  if (options.default_max_new_tokens < 1) {
    return absl::InvalidArgumentError("default_max_new_tokens: must be at least 1");
  }
  ConfigureThreads(options.threads);
  SG_ASSIGN_OR_RETURN(auto model, LlamaModel::Load(options.model_dir, ModelOptions{device, dtype}));
  SG_ASSIGN_OR_RETURN(auto tokenizer, Tokenizer::Load(options.model_dir + "/tokenizer.model"));
  const ModelConfig& c = model->config();
  if (tokenizer->piece_count() > c.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        options.model_dir, "/tokenizer.model: the tokenizer has ", tokenizer->piece_count(),
        " pieces but the embedding (config.json vocab_size) has only ", c.vocab_size, " rows"));
  }
  ModelInfo info;
  std::string dir = options.model_dir;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  info.name = dir.substr(dir.find_last_of('/') + 1);
  info.architecture = c.architecture;
  info.vocab_size = c.vocab_size;
  info.tokenizer_vocab_size = tokenizer->piece_count();
  info.context_length = c.max_position_embeddings;
  info.dtype = DtypeName(dtype);
  info.device = device.str();
  info.bos_token_id = c.bos_token_id;
  info.eos_token_ids = c.eos_token_ids;
  info.max_queue = options.max_queue;
  info.max_batch = options.max_batch;
  info.default_max_new_tokens = options.default_max_new_tokens;
  info.max_new_tokens_limit = options.max_new_tokens_limit;
  info.max_stop_strings = options.max_stop_strings;
  info.max_stop_string_bytes = options.max_stop_string_bytes;
  info.chat_template = c.chat_template;
  return std::unique_ptr<Engine>(new Engine(std::make_unique<Impl>(
      options, std::move(model), std::move(tokenizer), std::move(info))));
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
std::string Engine::TokenPiece(int id) const {
  if (id < 0 || id >= impl_->tokenizer().piece_count()) return "";
  return impl_->tokenizer().IdToPiece(id);
}
const ModelInfo& Engine::model_info() const { return impl_->info(); }
EngineStats Engine::stats() const { return impl_->stats(); }
void Engine::Pause() { impl_->Pause(); }
void Engine::Resume() { impl_->Resume(); }
void Engine::Step(int iterations) { impl_->Step(iterations); }

}  // namespace streamgen
