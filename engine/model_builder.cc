// Loading and sizing what the engine runs (see model_builder.h).
#include "engine/model_builder.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "engine/grammar/vocabulary.h"
#include "engine/kv/kv_pool.h"
#include "engine/model/cpu_isa.h"
#include "engine/model/cuda/cuda_ops.h"
#include "engine/model/device.h"
#include "engine/model/fingerprint.h"

namespace streamgen {

bool CpuHasNativeBfloat16() { return DetectedCpuFeatures().avx512_bf16; }

absl::StatusOr<ModelOptions> ChooseModelOptions(const EngineOptions& options) {
  SG_ASSIGN_OR_RETURN(torch::Device device, ParseDevice(options.device));
  SG_ASSIGN_OR_RETURN(torch::ScalarType dtype, ParseDtype(options.dtype, device));
  SG_ASSIGN_OR_RETURN(Quantization quantization, ParseQuantization(options.quantization));
  ModelOptions model_options{device, dtype, quantization};
  model_options.cuda_graphs = options.cuda_graphs;
  model_options.max_model_len = options.max_model_len;
  return model_options;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadModelTokenizer(const EngineOptions& options,
                                                              const ModelConfig& config) {
  SG_ASSIGN_OR_RETURN(TokenizerKind kind, ParseTokenizerKind(options.tokenizer));
  SG_ASSIGN_OR_RETURN(auto tokenizer, LoadTokenizerFromDirectory(options.model_dir, kind));
  if (tokenizer->piece_count() > config.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        options.model_dir, tokenizer->hf() != nullptr ? "/tokenizer.json" : "/tokenizer.model",
        ": the tokenizer has ", tokenizer->piece_count(),
        " pieces but the embedding (config.json vocab_size) has only ", config.vocab_size,
        " rows"));
  }
  return tokenizer;
}

absl::StatusOr<BuiltModel> BuildModel(const EngineOptions& options,
                                      const ModelOptions& model_options) {
  const torch::Device device = model_options.device;
  const torch::ScalarType dtype = model_options.dtype;
  const Quantization quantization = model_options.quantization;
  const int threads = ConfigureThreads(options.threads);
  if (options.gpu_memory_fraction != 0 &&
      !(options.gpu_memory_fraction > 0 && options.gpu_memory_fraction <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("gpu_memory_fraction must be in (0, 1], got ", options.gpu_memory_fraction));
  }
  if (options.gpu_memory_fraction > 0 && !device.is_cuda()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "gpu_memory_fraction applies to a CUDA device, not ", device.str(),
        ": size the KV cache with kv_cache_bytes (--kv-cache-memory) or kv_cache_blocks"));
  }
  BuiltModel built;
  SG_ASSIGN_OR_RETURN(built.model, LlamaModel::Load(options.model_dir, model_options));
  const ModelConfig& c = built.model->config();
  SG_ASSIGN_OR_RETURN(built.tokenizer, LoadModelTokenizer(options, c));
  ModelInfo& info = built.info;
  info.threads = threads;
  std::string dir = options.model_dir;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  info.name = dir.substr(dir.find_last_of('/') + 1);
  info.architecture = c.architecture;
  info.vocab_size = c.vocab_size;
  info.tokenizer_vocab_size = built.tokenizer->piece_count();
  info.context_length = c.max_position_embeddings;
  info.dtype = DtypeName(dtype);
  info.quantization = QuantizationName(quantization);
  info.device = device.str();
  if (device.is_cpu()) {
    info.cpu_isa = ActiveKernelIsa();
    const std::string note = KernelIsaStartupNote();
    if (!note.empty()) spdlog::warn("{}", note);
    // A process held below its CPU (a testing aid) says so in its log too:
    // its figures are not this CPU's.
    if (KernelIsaHeldBelowCpu()) spdlog::warn("CPU kernels: {}", KernelIsaDescription());
    // debug, not info: spdlog's default logger writes to stdout, where the
    // tools print their results (streamgen-generate --json); the server logs
    // cpu_isa in its "serving" event.
    spdlog::debug("CPU kernels: {}{}", KernelIsaDescription(),
                 info.dtype == "bfloat16" && !ActiveIsaHasNativeBf16()
                     ? "; no native bfloat16 dot products: bfloat16 matrix products above the "
                       "skinny kernel's rows run in float32 (docs/serving.md)"
                     : "");
  }
  info.bos_token_id = c.bos_token_id;
  info.eos_token_ids = c.eos_token_ids;
  info.max_queue = options.max_queue;
  info.max_batch = options.max_batch;
  if (options.use_generation_config) info.generation_defaults = c.generation;
  info.default_max_new_tokens =
      info.generation_defaults.max_new_tokens.value_or(options.default_max_new_tokens);
  info.max_new_tokens_limit = options.max_new_tokens_limit;
  info.max_stop_strings = options.max_stop_strings;
  info.max_stop_string_bytes = options.max_stop_string_bytes;
  info.chat_template = c.chat_template;
  info.model_dir = options.model_dir;
  // Quantized weights give other tokens: their fingerprint differs (the
  // unquantized one is unchanged from before quantization existed).
  SG_ASSIGN_OR_RETURN(info.fingerprint,
                      ModelFingerprint(options.model_dir, quantization == Quantization::kNone
                                                              ? std::string(DtypeName(dtype))
                                                              : absl::StrCat(DtypeName(dtype), "+",
                                                                             info.quantization)));

  // The KV pool: kv_cache_blocks, or enough for max_batch full contexts within
  // kv_cache_bytes (engine/kv/kv_pool.h, KvPoolBlocks), allocated by the engine.
  SchedulerOptions& scheduling = built.scheduling;
  scheduling.max_batch = options.max_batch;
  scheduling.max_queue = options.max_queue;
  scheduling.block_size = options.kv_block_size;
  scheduling.max_prefill_tokens = options.max_prefill_tokens;
  scheduling.prefix_caching = options.prefix_caching;
  KvPoolSizing sizing;
  sizing.context_tokens = c.max_position_embeddings;
  sizing.block_size = options.kv_block_size;
  sizing.max_batch = options.max_batch;
  sizing.kv_cache_blocks = options.kv_cache_blocks;
  sizing.kv_cache_bytes = options.kv_cache_bytes;
  sizing.gpu_memory_fraction = options.gpu_memory_fraction;
  sizing.activation_reserve = kGpuActivationReserve;
  sizing.block_bytes = built.model->KvBlockBytes(options.kv_block_size);
  const auto cuda_memory = [&]() -> absl::StatusOr<DeviceMemory> {
    SG_ASSIGN_OR_RETURN(const CudaMemory memory, CudaMemoryInfo(device));
    return DeviceMemory{memory.free, memory.total};
  };
  SG_ASSIGN_OR_RETURN(const int64_t blocks, KvPoolBlocks(sizing, cuda_memory));
  scheduling.num_blocks = static_cast<int>(blocks);
  SG_RETURN_IF_ERROR(Scheduler::Validate(scheduling));
  info.max_prefill_tokens = options.max_prefill_tokens;
  info.kv_block_size = options.kv_block_size;
  info.kv_cache_blocks = scheduling.num_blocks;
  info.kv_cache_tokens = blocks * options.kv_block_size;
  info.prefix_caching = options.prefix_caching;
  {
    auto vocabulary = std::make_shared<TokenVocabulary>(*BuildTokenVocabulary(
        *built.tokenizer, c.eos_token_ids, std::min(built.tokenizer->piece_count(), c.vocab_size)));
    // The engine's output is the continuation of the prompt: its detokenizer
    // decodes with the prompt as context (IncrementalDetokenizer), so a first
    // token "▁{" adds " {", its space kept; sentencepiece's dummy-prefix strip
    // applies to the start of a whole text, never here. (Found by
    // RealConstraintTest: with the strip, regex outputs began with a space.)
    vocabulary->strips_first_space = false;
    built.vocabulary = std::move(vocabulary);
  }
  return built;
}

}  // namespace streamgen
