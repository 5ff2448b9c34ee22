// Building what the engine's loop runs, before it runs: the model and its
// tokenizer loaded and checked against each other, the ModelInfo clients
// see, and the KV pool's size. Engine::Create (engine.cc) calls these; the
// loop and the pool's allocation stay there. Needs torch: included only by
// engine .cc files (engine.h stays torch-free).
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "engine/engine.h"
#include "engine/grammar/constraint.h"
#include "engine/model/llama_model.h"
#include "engine/model/model_config.h"
#include "engine/scheduler.h"
#include "engine/text/tokenizer.h"

namespace streamgen {

// The model's device, compute dtype and quantization from the engine's
// options (ParseDevice, ParseDtype, ParseQuantization: their errors as they
// give them), with its cuda_graphs. Thread-safe.
absl::StatusOr<ModelOptions> ChooseModelOptions(const EngineOptions& options);

// The tokenizer of options.model_dir, checked against the model of `config`:
// INVALID_ARGUMENT (naming the file) when it has more pieces than the
// embedding has rows. Thread-safe.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadModelTokenizer(const EngineOptions& options,
                                                              const ModelConfig& config);

// What BuildModel gives the engine.
struct BuiltModel {
  std::unique_ptr<LlamaModel> model;     // loaded on model_options' device
  std::unique_ptr<Tokenizer> tokenizer;  // checked against the model (LoadModelTokenizer)
  ModelInfo info;                        // every field set
  SchedulerOptions scheduling;           // the options' limits; num_blocks: the KV pool's
                                         // size, validated (Scheduler::Validate)
  // The vocabulary as constraints see it (engine/grammar/vocabulary.h),
  // built once, over the ids the sampler may choose (the tokenizer's pieces
  // within the embedding).
  std::shared_ptr<const TokenVocabulary> vocabulary;
};


// Sets the calling thread's intra-op threads (ConfigureThreads: call it on
// the thread that will run the model), checks gpu_memory_fraction, loads the
// model and its tokenizer, fills ModelInfo (fingerprint included; warns when
// bfloat16 is asked of a CPU without native bfloat16), and sizes the KV pool
// (engine/kv/kv_pool.h, KvPoolBlocks) without allocating it. Errors name the
// option or file at fault.
absl::StatusOr<BuiltModel> BuildModel(const EngineOptions& options,
                                      const ModelOptions& model_options);

}  // namespace streamgen
