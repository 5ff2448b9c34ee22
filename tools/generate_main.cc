// streamgen-generate: the engine from the command line, no server.
//
//   streamgen-generate --model DIR --prompt TEXT [--max-new-tokens N] [--temperature T]
//       [--top-k K] [--top-p P] [--min-p P] [--seed S] [--stop STR]... [--ignore-eos]
//       [--device cpu|cuda:0] [--dtype float32|bfloat16|float16] [--quantization none|int8]
//       [--threads N] [--json]
//
// Streams text to stdout as it is generated; with --json prints exactly one JSON
// object when done. Errors go to stderr with a non-zero exit.
#include <cstdio>
#include <future>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "common/cli_flags.h"
#include "common/sampling_flags.h"
#include "common/speculative_flags.h"
#include "engine/engine.h"

#ifndef STREAMGEN_DEMO_MODEL_DIR
#define STREAMGEN_DEMO_MODEL_DIR ""
#endif

ABSL_FLAG(std::string, model, STREAMGEN_DEMO_MODEL_DIR,
          "Hugging Face model directory (config.json, *.safetensors, tokenizer.model); "
          "default: the demo model (models/demo-brown, trained on the Brown corpus)");
ABSL_FLAG(std::string, tokenizer, "auto",
          "which tokenizer of --model to load: auto (tokenizer.json when present, else "
          "tokenizer.model), hf (tokenizer.json) or sentencepiece (tokenizer.model)");
ABSL_FLAG(std::string, prompt, "", "prompt text (BOS added as the tokenizer config says)");
ABSL_FLAG(std::string, prompt_token_ids, "",
          "comma-separated prompt token ids, used as given (instead of --prompt)");
ABSL_FLAG(std::string, device, "cpu", "cpu, cuda or cuda:N");
ABSL_FLAG(std::string, dtype, "",
          "float32, bfloat16 or float16; default float32 on CPU, "
          "bfloat16 on CUDA");
ABSL_FLAG(int, max_model_len, 0,
          "The context served, in tokens (prompt plus output): at most config.json's "
          "max_position_embeddings (0: that). Sizes the KV cache and the rotary tables; for "
          "Phi-3's longrope, a context within original_max_position_embeddings uses the short "
          "factors (docs/models.md).");
ABSL_FLAG(std::string, quantization, "none",
          "weight-only quantization: none or int8 (CPU only; activations stay in --dtype)");
ABSL_FLAG(int, threads, 0,
          "intra-op threads; 0: $OMP_NUM_THREADS if set, else the CPUs this process may use: "
          "affinity and cgroup quota");
ABSL_FLAG(bool, json, false, "print one JSON object when done instead of streaming text");

namespace {

int Fail(const std::string& message) {
  std::cerr << "streamgen-generate: " << message << std::endl;
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  constexpr const char* kUsage =
      "streamgen-generate [--model DIR] --prompt TEXT [options]: generate text with the engine\n"
      "(no server). Sampling flags not given take the model's generation_config.json defaults.";
  absl::SetProgramUsageMessage(kUsage);
  // The engine logs through spdlog's default logger (stdout unless told), and
  // stdout is where --json prints: its lines (an --adaptive-threads drop under
  // load) go to stderr.
  spdlog::set_default_logger(spdlog::stderr_logger_mt("stderr"));
  if (streamgen::PrintHelpIfAsked(
          argc, argv, kUsage,
          {"tools/generate_main.cc", "common/sampling_flags.cc", "common/speculative_flags.cc"})) {
    return 0;
  }
  streamgen::ArgvHolder args(streamgen::NormalizeFlagNames(argc, argv));
  argc = args.argc();
  argv = args.argv();
  streamgen::SamplingArgs stops = streamgen::TakeSamplingArgs(&argc, argv);
  std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  if (rest.size() > 1) return Fail(std::string("unexpected argument '") + rest[1] + "'");
  absl::StatusOr<streamgen::SamplingFlags> flags = streamgen::ReadSamplingFlags(std::move(stops));
  if (!flags.ok()) return Fail(std::string(flags.status().message()));
  const streamgen::SamplingFlags& f = *flags;

  streamgen::GenerationRequest request;
  request.prompt = absl::GetFlag(FLAGS_prompt);
  const std::string ids_flag = absl::GetFlag(FLAGS_prompt_token_ids);
  if (!ids_flag.empty()) {
    for (absl::string_view part : absl::StrSplit(ids_flag, ',')) {
      int id = 0;
      if (!absl::SimpleAtoi(part, &id)) {
        return Fail("--prompt-token-ids: '" + std::string(part) + "' is not an integer");
      }
      request.prompt_token_ids.push_back(id);
    }
  }
  if (request.prompt.empty() && request.prompt_token_ids.empty()) {
    return Fail("--prompt (or --prompt-token-ids) is required");
  }
  // A flag not given leaves its field unset: the engine applies the model's
  // generation_config.json default (common/sampling_flags.h).
  request.max_new_tokens = f.max_new_tokens.value_or(0);
  streamgen::SamplingParams& s = request.sampling;
  auto take = [](const auto& flag, auto* field, bool* unset) {
    if (flag) *field = static_cast<std::remove_reference_t<decltype(*field)>>(*flag);
    *unset = !flag.has_value();
  };
  take(f.temperature, &s.temperature, &request.unset.temperature);
  take(f.top_k, &s.top_k, &request.unset.top_k);
  take(f.top_p, &s.top_p, &request.unset.top_p);
  take(f.min_p, &s.min_p, &request.unset.min_p);
  take(f.repetition_penalty, &s.repetition_penalty, &request.unset.repetition_penalty);
  s.presence_penalty = static_cast<float>(f.presence_penalty);
  s.frequency_penalty = static_cast<float>(f.frequency_penalty);
  s.seed = f.seed;
  request.stop = f.stop;
  request.stop_token_ids = f.stop_token_ids;
  request.ignore_eos = f.ignore_eos;
  request.top_logprobs = f.top_logprobs;

  streamgen::EngineOptions options;
  options.model_dir = absl::GetFlag(FLAGS_model);
  options.tokenizer = absl::GetFlag(FLAGS_tokenizer);
  options.device = absl::GetFlag(FLAGS_device);
  options.dtype = absl::GetFlag(FLAGS_dtype);
  options.quantization = absl::GetFlag(FLAGS_quantization);
  options.max_model_len = absl::GetFlag(FLAGS_max_model_len);
  options.threads = absl::GetFlag(FLAGS_threads);
  const streamgen::SpeculativeFlags speculative = streamgen::ReadSpeculativeFlags();
  options.speculative = speculative.speculative;
  options.draft_model = speculative.draft_model;
  options.num_speculative_tokens = speculative.num_speculative_tokens;
  options.speculative_max_batch = speculative.speculative_max_batch;
  options.draft_p_min = static_cast<float>(speculative.draft_p_min);
  if (options.model_dir.empty()) return Fail("--model is required");
  auto engine = streamgen::Engine::Create(options);
  if (!engine.ok()) return Fail(std::string(engine.status().message()));

  const bool json = absl::GetFlag(FLAGS_json);
  std::vector<int> token_ids;
  std::string text;
  std::promise<streamgen::TokenEvent> done;
  auto submitted = (*engine)->Submit(request, [&](streamgen::TokenEvent&& event) {
    for (const auto& t : event.tokens) token_ids.push_back(t.id);
    text += event.text;
    if (!json && !event.text.empty()) {
      std::fwrite(event.text.data(), 1, event.text.size(), stdout);
      std::fflush(stdout);
    }
    if (event.finish_reason != streamgen::FinishReason::kNone) done.set_value(std::move(event));
  });
  if (!submitted.ok()) return Fail(std::string(submitted.status().message()));
  streamgen::TokenEvent last = done.get_future().get();
  if (last.finish_reason == streamgen::FinishReason::kError) {
    return Fail(std::string(last.status.message()));
  }
  const auto& info = (*engine)->model_info();
  if (json) {
    nlohmann::json out;
    out["prompt_token_ids"] = request.prompt_token_ids.empty()
                                  ? (*engine)->Tokenize(request.prompt, /*add_special=*/true)
                                  : request.prompt_token_ids;
    out["token_ids"] = token_ids;
    out["text"] = text;
    out["finish_reason"] = streamgen::FinishReasonName(last.finish_reason);
    out["prompt_tokens"] = last.prompt_tokens;
    out["completion_tokens"] = last.completion_tokens;
    out["seed"] = last.seed;
    out["prefill_ms"] = last.prefill_ms;
    out["ttft_ms"] = last.ttft_ms;
    out["decode_tokens_per_s"] = last.decode_tokens_per_s;
    out["model"] = info.name;
    out["device"] = info.device;
    out["dtype"] = info.dtype;
    out["quantization"] = info.quantization;
    // Invalid UTF-8 cannot occur (the detokenizer emits U+FFFD), but never abort on it.
    std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << std::endl;
  } else {
    std::fprintf(stdout, "\n");
    std::fprintf(stderr,
                 "[%s: %d prompt + %d generated tokens, prefill %.1f ms, %.1f tokens/s, seed %llu, "
                 "%s %s%s]\n",
                 streamgen::FinishReasonName(last.finish_reason), last.prompt_tokens,
                 last.completion_tokens, last.prefill_ms, last.decode_tokens_per_s,
                 static_cast<unsigned long long>(last.seed), info.device.c_str(),
                 info.dtype.c_str(), info.quantization == "none" ? "" : " int8 weights");
  }
  return 0;
}
