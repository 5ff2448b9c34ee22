// streamgen-make-tiny-model: writes a random-weight Llama / Mistral model in
// Hugging Face layout (config.json, tokenizer files, safetensors weights).
//
//   streamgen-make-tiny-model --out build/models/tiny-builtin --corpus tools/data/corpus.txt
//   streamgen-make-tiny-model --out /tmp/bench-134m --hidden-size 768
//       --intermediate-size 2048 --layers 12 --heads 12 --kv-heads 12
//       --tokenizer ../shared/fixtures/tiny-llama/tokenizer.model --dtype f32
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tools/tiny_model.h"

namespace {
const streamgen::TinyModelSpec kDefaults;
}  // namespace

ABSL_FLAG(std::string, out, "", "Output model directory (created if needed). Required.");
ABSL_FLAG(std::string, corpus, "",
          "UTF-8 text to train the tokenizer on (one sentence per line); used when --tokenizer "
          "is not given, e.g. tools/data/corpus.txt.");
ABSL_FLAG(std::string, tokenizer, "",
          "A sentencepiece tokenizer.model to copy instead of training one.");
ABSL_FLAG(int, tokenizer_vocab_size, kDefaults.tokenizer_vocab_size,
          "Pieces of the trained tokenizer (with --corpus).");
ABSL_FLAG(std::string, architecture, "llama", "llama (LlamaForCausalLM) or mistral "
                                               "(MistralForCausalLM).");
ABSL_FLAG(int, hidden_size, kDefaults.hidden_size, "Model width.");
ABSL_FLAG(int, intermediate_size, kDefaults.intermediate_size, "MLP width.");
ABSL_FLAG(int, layers, kDefaults.num_hidden_layers, "Number of decoder layers.");
ABSL_FLAG(int, heads, kDefaults.num_attention_heads, "Attention (query) heads.");
ABSL_FLAG(int, kv_heads, kDefaults.num_key_value_heads,
          "Key/value heads (must divide --heads; equal to --heads for no GQA).");
ABSL_FLAG(int, head_dim, kDefaults.head_dim, "Head size; 0: hidden-size / heads.");
ABSL_FLAG(int, vocab_size, kDefaults.vocab_size,
          "Embedding rows; 0: the tokenizer's pieces rounded up to --vocab-pad-to.");
ABSL_FLAG(int, vocab_pad_to, kDefaults.vocab_pad_to,
          "With --vocab-size 0, round the vocabulary up to a multiple of this (1: no padding).");
ABSL_FLAG(int, context, kDefaults.max_position_embeddings,
          "Context length (max_position_embeddings).");
ABSL_FLAG(std::string, dtype, "bf16", "Storage dtype of the weights: bf16, f16 or f32.");
ABSL_FLAG(bool, tie, kDefaults.tie_word_embeddings,
          "Tie lm_head to the embedding table (no lm_head.weight is written).");
ABSL_FLAG(int, sliding_window, 0, "Mistral sliding-window size; 0: none.");
ABSL_FLAG(double, rope_theta, kDefaults.rope_theta, "RoPE base.");
ABSL_FLAG(double, rms_norm_eps, kDefaults.rms_norm_eps, "RMSNorm epsilon.");
ABSL_FLAG(double, init_std, kDefaults.init_std, "Standard deviation of the random matrices.");
ABSL_FLAG(int, shards, kDefaults.shards,
          "Weight files: 1 writes model.safetensors; N > 1 writes model-0000i-of-0000N."
          "safetensors and model.safetensors.index.json.");
ABSL_FLAG(uint64_t, seed, kDefaults.seed, "Random seed; the same seed gives identical files.");

namespace {

// Lets `--hidden-size` mean `--hidden_size`: absl flag names cannot hold '-'.
void DashesToUnderscores(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--", 2) != 0) continue;
    for (char* c = argv[i] + 2; *c != '\0' && *c != '='; ++c) {
      if (*c == '-') *c = '_';
    }
  }
}

// --help lists this file's flags (absl matches files by the binary's name otherwise).
bool IsOurFlagFile(absl::string_view path) { return absl::EndsWith(path, "make_tiny_model.cc"); }

int Fail(const std::string& message) {
  std::fprintf(stderr, "streamgen-make-tiny-model: %s\n", message.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Writes a random-weight Llama/Mistral model in Hugging Face layout.\n"
      "Usage: streamgen-make-tiny-model --out DIR (--corpus FILE | --tokenizer FILE) [options]\n"
      "Flag names take '-' or '_' alike (--hidden-size = --hidden_size).");
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = IsOurFlagFile;
  usage.contains_helpshort_flags = IsOurFlagFile;
  absl::SetFlagsUsageConfig(usage);
  DashesToUnderscores(argc, argv);
  const std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  if (rest.size() > 1) return Fail(absl::StrCat("unexpected argument '", rest[1], "'"));

  streamgen::TinyModelSpec spec;
  const std::string architecture = absl::GetFlag(FLAGS_architecture);
  if (architecture == "llama" || architecture == "LlamaForCausalLM") {
    spec.architecture = "LlamaForCausalLM";
  } else if (architecture == "mistral" || architecture == "MistralForCausalLM") {
    spec.architecture = "MistralForCausalLM";
  } else {
    return Fail(absl::StrCat("--architecture '", architecture, "': want llama or mistral"));
  }
  const std::string dtype = absl::GetFlag(FLAGS_dtype);
  if (dtype == "bf16") {
    spec.dtype = streamgen::StorageDtype::kBF16;
  } else if (dtype == "f16") {
    spec.dtype = streamgen::StorageDtype::kF16;
  } else if (dtype == "f32") {
    spec.dtype = streamgen::StorageDtype::kF32;
  } else {
    return Fail(absl::StrCat("--dtype '", dtype, "': want bf16, f16 or f32"));
  }
  spec.hidden_size = absl::GetFlag(FLAGS_hidden_size);
  spec.intermediate_size = absl::GetFlag(FLAGS_intermediate_size);
  spec.num_hidden_layers = absl::GetFlag(FLAGS_layers);
  spec.num_attention_heads = absl::GetFlag(FLAGS_heads);
  spec.num_key_value_heads = absl::GetFlag(FLAGS_kv_heads);
  spec.head_dim = absl::GetFlag(FLAGS_head_dim);
  spec.vocab_size = absl::GetFlag(FLAGS_vocab_size);
  spec.vocab_pad_to = absl::GetFlag(FLAGS_vocab_pad_to);
  spec.max_position_embeddings = absl::GetFlag(FLAGS_context);
  spec.tie_word_embeddings = absl::GetFlag(FLAGS_tie);
  const int window = absl::GetFlag(FLAGS_sliding_window);
  if (window < 0) return Fail("--sliding-window must be 0 (none) or positive");
  if (window > 0) spec.sliding_window = window;
  spec.rope_theta = absl::GetFlag(FLAGS_rope_theta);
  spec.rms_norm_eps = absl::GetFlag(FLAGS_rms_norm_eps);
  spec.init_std = absl::GetFlag(FLAGS_init_std);
  spec.shards = absl::GetFlag(FLAGS_shards);
  spec.seed = absl::GetFlag(FLAGS_seed);
  spec.tokenizer_vocab_size = absl::GetFlag(FLAGS_tokenizer_vocab_size);

  const std::string out = absl::GetFlag(FLAGS_out);
  const std::string tokenizer = absl::GetFlag(FLAGS_tokenizer);
  const std::string corpus = absl::GetFlag(FLAGS_corpus);
  if (out.empty()) return Fail("--out is required (see --help)");
  if (tokenizer.empty() && corpus.empty()) {
    return Fail("give --corpus FILE to train a tokenizer, or --tokenizer FILE to copy one");
  }
  const auto start = std::chrono::steady_clock::now();
  const absl::Status status = streamgen::WriteTinyModel(spec, out, tokenizer, corpus);
  if (!status.ok()) return Fail(std::string(status.message()));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("wrote %s (%.1f s)\n", out.c_str(), seconds);
  return 0;
}
