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
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "engine/engine.h"
#include "common/cli_flags.h"

#ifndef STREAMGEN_DEMO_MODEL_DIR
#define STREAMGEN_DEMO_MODEL_DIR ""
#endif

ABSL_FLAG(std::string, model, STREAMGEN_DEMO_MODEL_DIR,
          "Hugging Face model directory (config.json, *.safetensors, tokenizer.model); "
          "default: the demo model (models/demo-brown, trained on the Brown corpus)");
ABSL_FLAG(std::string, prompt, "", "prompt text (BOS added as the tokenizer config says)");
ABSL_FLAG(std::string, prompt_token_ids, "",
          "comma-separated prompt token ids, used as given (instead of --prompt)");
ABSL_FLAG(int, max_new_tokens, 0, "tokens to generate; 0: the default (256), within the context");
ABSL_FLAG(double, temperature, 0.0, "0: greedy; otherwise sampling temperature in (0, 100]");
ABSL_FLAG(int, top_k, 0, "0: off; keep the k most likely tokens");
ABSL_FLAG(double, top_p, 1.0, "nucleus sampling mass in (0, 1]; 1: off");
ABSL_FLAG(double, min_p, 0.0, "in [0, 1); 0: off");
ABSL_FLAG(double, repetition_penalty, 1.0, "in (0, 10]; 1: off");
ABSL_FLAG(double, presence_penalty, 0.0, "in [-2, 2]; 0: off");
ABSL_FLAG(double, frequency_penalty, 0.0, "in [-2, 2]; 0: off");
ABSL_FLAG(std::string, seed, "", "random seed (unsigned integer); empty: chosen and reported");
ABSL_FLAG(std::vector<std::string>, stop, {},
          "stop string; repeat the flag for several (--stop A --stop B)");
ABSL_FLAG(bool, ignore_eos, false, "keep generating past EOS");
ABSL_FLAG(std::string, device, "cpu", "cpu, cuda or cuda:N");
ABSL_FLAG(std::string, dtype, "", "float32, bfloat16 or float16; default float32 on CPU, "
                                  "bfloat16 on CUDA");
ABSL_FLAG(std::string, quantization, "none",
          "weight-only quantization: none or int8 (CPU only; activations stay in --dtype)");
ABSL_FLAG(int, threads, 0, "intra-op threads; 0: $OMP_NUM_THREADS if set, else the machine's cores");
ABSL_FLAG(bool, json, false, "print one JSON object when done instead of streaming text");

namespace {

int Fail(const std::string& message) {
  std::cerr << "streamgen-generate: " << message << std::endl;
  return 1;
}

// absl's vector flags replace their value on each occurrence; --stop may be
// repeated, so its values are collected here and removed from argv.
std::vector<std::string> TakeRepeatedFlag(const std::string& name, int* argc, char** argv) {
  std::vector<std::string> values;
  const std::string eq = "--" + name + "=";
  int out = 1;
  for (int i = 1; i < *argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--" + name && i + 1 < *argc) {
      values.push_back(argv[++i]);
    } else if (arg.rfind(eq, 0) == 0) {
      values.push_back(arg.substr(eq.size()));
    } else {
      argv[out++] = argv[i];
    }
  }
  *argc = out;
  return values;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "streamgen-generate --model DIR --prompt TEXT [options]: generate text with the engine");
  streamgen::ArgvHolder args(streamgen::NormalizeFlagNames(argc, argv));
  argc = args.argc();
  argv = args.argv();
  std::vector<std::string> stops = TakeRepeatedFlag("stop", &argc, argv);
  std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  if (rest.size() > 1) return Fail(std::string("unexpected argument '") + rest[1] + "'");

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
  request.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens);
  streamgen::SamplingParams& s = request.sampling;
  s.temperature = static_cast<float>(absl::GetFlag(FLAGS_temperature));
  s.top_k = absl::GetFlag(FLAGS_top_k);
  s.top_p = static_cast<float>(absl::GetFlag(FLAGS_top_p));
  s.min_p = static_cast<float>(absl::GetFlag(FLAGS_min_p));
  s.repetition_penalty = static_cast<float>(absl::GetFlag(FLAGS_repetition_penalty));
  s.presence_penalty = static_cast<float>(absl::GetFlag(FLAGS_presence_penalty));
  s.frequency_penalty = static_cast<float>(absl::GetFlag(FLAGS_frequency_penalty));
  const std::string seed_flag = absl::GetFlag(FLAGS_seed);
  if (!seed_flag.empty()) {
    uint64_t seed = 0;
    if (!absl::SimpleAtoi(seed_flag, &seed)) {
      return Fail("--seed: '" + seed_flag + "' is not an unsigned integer");
    }
    s.seed = seed;
  }
  request.stop = stops;
  request.ignore_eos = absl::GetFlag(FLAGS_ignore_eos);

  streamgen::EngineOptions options;
  options.model_dir = absl::GetFlag(FLAGS_model);
  options.device = absl::GetFlag(FLAGS_device);
  options.dtype = absl::GetFlag(FLAGS_dtype);
  options.quantization = absl::GetFlag(FLAGS_quantization);
  options.threads = absl::GetFlag(FLAGS_threads);
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
