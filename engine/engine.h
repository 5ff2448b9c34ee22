// The engine: one loop thread owns the device, the model and the KV cache.
// Everything else talks to it through Submit / Cancel / Shutdown. No torch and
// no gRPC in this header: the server and the CLI include it.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/constraint_state.h"
#include "engine/grammar/constraint.h"
#include "engine/model/model_config.h"
#include "engine/request.h"

namespace streamgen {

struct EngineOptions {
  std::string model_dir;              // Hugging Face layout (config.json, *.safetensors, tokenizer.json or .model)
  std::string tokenizer = "auto";     // "auto": tokenizer.json when present, else tokenizer.model;
                                      // "hf": tokenizer.json; "sentencepiece": tokenizer.model
  std::string device = "cpu";         // "cpu", "cuda", "cuda:N"
  std::string dtype;                  // "float32" | "bfloat16" | "float16"; "": float32 on CPU, bfloat16 on CUDA
  std::string quantization;           // "none" (or "") | "int8": weight-only, CPU only (llama_model.h)
  int max_model_len = 0;              // the context served, <= max_position_embeddings; 0: that
  int threads = 0;                    // intra-op threads; 0: $OMP_NUM_THREADS, else the CPUs this
                                      // process may use (affinity and cgroup quota, common/cpu_quota.h)
  // CPU: run fewer threads while other processes take our cores, and go back
  // up when they leave (engine/thread_governor.h); `threads` is the maximum.
  bool adaptive_threads = true;
  int max_queue = 64;                 // waiting requests; beyond: RESOURCE_EXHAUSTED
  int max_batch = 16;                 // running sequences, decoded together in one batch
  int max_prefill_tokens = 128;       // prompt tokens prefilled per loop iteration (chunked prefill)
  int kv_block_size = 16;             // tokens per KV-cache block
  bool prefix_caching = false;        // share full prompt blocks between requests (scheduler.h)
  int kv_cache_blocks = 0;            // blocks in the pool; 0: derived (see kv_cache_bytes)
  int64_t kv_cache_bytes = 4LL << 30; // with kv_cache_blocks == 0: the pool holds
                                      // min(max_batch full contexts, this many bytes)
  // CUDA only, with kv_cache_blocks == 0: the share of the GPU's memory the
  // engine may hold in all (weights, activations, KV pool), as vLLM's flag:
  // the pool gets fraction * total - what is in use after loading the model
  // - kGpuActivationReserve, instead of kv_cache_bytes. 0: kv_cache_bytes.
  double gpu_memory_fraction = 0;
  bool cuda_graphs = true;            // CUDA: decode steps in CUDA graphs (ModelOptions)
  int default_max_new_tokens = 256;   // for requests with max_new_tokens == 0, unless the
                                      // model's generation_config.json gives max_new_tokens
  // Read the model's generation_config.json sampling defaults (do_sample,
  // temperature, top_p, top_k, min_p, repetition_penalty, max_new_tokens) for
  // the fields a request leaves unset (GenerationRequest::unset). false: the
  // neutral values and default_max_new_tokens (--generation-config none).
  bool use_generation_config = true;
  int max_new_tokens_limit = 4096;    // an explicit max_new_tokens above this is refused
  int max_stop_strings = 16;          // per request
  int max_stop_string_bytes = 256;    // per stop string
  bool start_paused = false;          // test hook: the loop waits for Resume()/Step()
  // Speculative decoding (engine/speculative.h; docs/serving.md): "none",
  // "prompt-lookup" (drafts are the tokens that followed the latest earlier
  // match of the last 1-3 tokens in prompt + output) or "draft" (a smaller
  // model with the same tokenizer, draft_model, drafts greedily). Output is
  // unchanged: greedy token for token, sampled by the same draws.
  std::string speculative = "none";
  std::string draft_model;            // with speculative "draft": its directory (HF layout)
  int num_speculative_tokens = 0;     // drafts per step; 0: adaptive, in [1, 8] per sequence
  // With a draft model: a sequence stops drafting where the draft's top
  // probability falls below this (in [0, 1]; 0: never), within the k above.
  float draft_p_min = 0.0f;
  // Speculation steps aside while more sequences than this decode in one
  // step: a batched step is compute-bound, and extra rows cost more than
  // they save (bench/README.md, "Speculative decoding").
  int speculative_max_batch = 4;
};

// Memory left out of the KV pool with gpu_memory_fraction, for the step's
// activations, the sampler and the decode graphs' private pools.
inline constexpr int64_t kGpuActivationReserve = 2LL << 30;

// What a client may want to know about the loaded model and the limits.
struct ModelInfo {
  std::string name;          // the model directory's last path component
  std::string architecture;  // "LlamaForCausalLM" | "MistralForCausalLM"
  int vocab_size = 0;        // rows of the embedding
  int tokenizer_vocab_size = 0;
  int context_length = 0;    // max_position_embeddings
  std::string dtype;         // compute dtype
  std::string quantization;  // "none" | "int8"
  std::string device;
  int threads = 0;           // intra-op CPU threads (EngineOptions.threads, resolved)
  int bos_token_id = -1;
  std::vector<int> eos_token_ids;
  int max_queue = 0;
  int max_batch = 0;
  int max_prefill_tokens = 0;
  int kv_block_size = 0;
  int kv_cache_blocks = 0;      // the pool's size in blocks
  int64_t kv_cache_tokens = 0;  // kv_cache_blocks * kv_block_size: the most one request can use
  bool prefix_caching = false;
  int default_max_new_tokens = 0;  // generation_defaults.max_new_tokens, else the option
  int max_new_tokens_limit = 0;
  // What a request's unset sampling fields take (empty with use_generation_config false).
  GenerationDefaults generation_defaults;
  int max_stop_strings = 0;
  int max_stop_string_bytes = 0;
  std::string chat_template;  // tokenizer_config.json's chat_template ("" when none)
  std::string model_dir;      // EngineOptions.model_dir: where the chat template files are
  std::string fingerprint;    // ModelFingerprint(model_dir, dtype[+quantization]) (engine/model/fingerprint.h)
  // The CPU kernels' instruction set: "avx512", "avx2" or "portable"
  // (engine/model/cpu_isa.h; STREAMGEN_KERNEL_ISA forces it). "" on CUDA.
  std::string cpu_isa;
};

// Counters for tests and metrics (monotonic except the gauges).
struct EngineStats {
  int64_t waiting = 0;          // gauge
  int64_t running = 0;          // gauge
  int64_t submitted = 0;
  int64_t finished = 0;         // every retired request, whatever the reason
  int64_t cancelled = 0;
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;
  int64_t steps = 0;            // loop iterations that ran the model
  int64_t preemptions = 0;      // sequences preempted (to be recomputed) for lack of KV blocks
  int64_t kv_blocks_used = 0;   // gauge (cached blocks no request uses count as free)
  int64_t kv_blocks_total = 0;
  int64_t prefix_cache_queries = 0;  // prompt tokens of admitted requests (prefix caching on)
  int64_t prefix_cache_hits = 0;     // of them, found in the prefix cache
  int64_t resumed = 0;               // requests submitted with resume_token_ids
  int64_t resumed_tokens = 0;        // their resume_token_ids
  int64_t cpu_threads = 0;           // gauge: intra-op threads now (CPU; adaptive_threads)
  int64_t cpu_thread_changes = 0;    // times adaptive_threads changed the count
  int64_t prefill_tokens = 0;        // positions computed by prefill chunks (recomputes included)
  int64_t forked_choices = 0;        // n > 1 choices forked off a prefilled prompt (no prefill of their own)
  int64_t constraint_compiles = 0;   // constraints compiled (ConstraintCache misses that compiled)
  int64_t constraint_cache_hits = 0; // requests whose constraint was compiled already
  // Constrained rows' masks (engine/constraint_state.h), filled on a worker
  // thread while the forward pass runs: what they cost, and the loop's time
  // on them after the forward pass (the part the forward pass did not hide).
  int64_t constraint_masks = 0;          // masks filled
  int64_t constraint_masks_on_loop = 0;  // of them, filled by the loop (the worker had not got to them)
  int64_t constraint_mask_wall_ns = 0;   // the fills' wall time, whoever ran them
  int64_t constraint_mask_cpu_ns = 0;    // the fills' CPU time
  int64_t constraint_mask_wait_ns = 0;   // the loop after the forward pass: its own fills and its wait
  int64_t draft_tokens = 0;          // speculative drafts verified
  int64_t accepted_draft_tokens = 0; // of them, accepted
  int64_t verify_steps = 0;          // verify chunks (one sequence's 1 + drafts rows each)
  int64_t draft_ns = 0;              // the loop's wall time proposing drafts (a draft model's steps)
  // By draft position i (0: the first draft of a step; kDraftPositions at
  // most, engine/speculative.h's kMaxDraftTokens): steps that drafted a token
  // at position i; of them, those whose drafts before i were all accepted (so
  // i was compared); and those that accepted it. reached / drafted shows
  // what long drafts waste, accepted / reached the draft's agreement there.
  static constexpr int kDraftPositions = 8;
  std::array<int64_t, kDraftPositions> drafted_at{};
  std::array<int64_t, kDraftPositions> reached_at{};
  std::array<int64_t, kDraftPositions> accepted_at{};
};

// Whether this CPU has native bfloat16 dot products (x86 AVX512-BF16), without
// which libtorch's bfloat16 GEMMs are a slow fallback (the CPU kernels then
// multiply bfloat16 in float32 above the skinny kernel's rows). Thread-safe.
bool CpuHasNativeBfloat16();

class Engine {
 public:
  // Loads the model and starts the loop thread.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const EngineOptions& options);
  ~Engine();  // Shutdown()

  // Thread-safe. Validates and queues `request`; `sink` then receives its
  // events on the loop thread (n > 1: every choice's, see
  // GenerationRequest::n). Returns the engine's id for Cancel() (which
  // cancels every choice).
  // INVALID_ARGUMENT (bad request, names the field), RESOURCE_EXHAUSTED (queue
  // full), UNAVAILABLE (shutting down).
  absl::StatusOr<uint64_t> Submit(GenerationRequest request, TokenSink sink);

  // Thread-safe. The request ends with kCancelled within one loop iteration
  // (no-op when it has already finished).
  void Cancel(uint64_t id);

  // Thread-safe. Refuses new requests, cancels the rest, joins the loop.
  void Shutdown();

  // Thread-safe. Tokenizes text; with add_special, BOS / EOS are added as the
  // tokenizer config says, exactly as Submit does for a text prompt.
  std::vector<int> Tokenize(const std::string& text, bool add_special) const;
  // Thread-safe. As above; with parse_special, special tokens written in the
  // text ("<|im_start|>") become their ids (EncodeOptions.parse_special).
  std::vector<int> Tokenize(const std::string& text, bool add_special, bool parse_special) const;
  // Thread-safe. The id of a piece, -1 when the vocabulary has none.
  int PieceId(const std::string& piece) const;
  // Thread-safe. Whether the id is a control token (tokenizer.json: a special
  // added token; sentencepiece: a control piece such as <s>).
  bool IsSpecialToken(int id) const;
  // Thread-safe. Ids -> text, as sentencepiece decodes them (the tokenizer's
  // Decode: "" when an id is outside the tokenizer's vocabulary).
  std::string Detokenize(const std::vector<int>& ids) const;
  // Thread-safe. The piece of a token id ("" when out of range).
  std::string TokenPiece(int id) const;

  const ModelInfo& model_info() const;  // thread-safe (immutable)
  EngineStats stats() const;            // thread-safe

  // The vocabulary constraints are compiled for (built once at load).
  // Thread-safe (immutable).
  const std::shared_ptr<const TokenVocabulary>& token_vocabulary() const;
  // Test hook: requests' constraints are compiled by `compiler` from now on
  // instead of the grammar engine's CompileConstraint (the cache is
  // emptied). Thread-safe.
  void SetConstraintCompilerForTesting(ConstraintCompiler compiler);

  // Test hooks: hold the loop before its next iteration / let it run / run n
  // iterations while held. Thread-safe.
  void Pause();
  void Resume();
  void Step(int iterations);

  class Impl;

 private:
  explicit Engine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace streamgen
