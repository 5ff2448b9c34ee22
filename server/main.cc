// streamgen-server: serves streamgen.v1.TextGeneration over gRPC.
// Flags may be spelled with dashes (--max-queue) or underscores (--max_queue).
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/cli_flags.h"
#include "common/speculative_flags.h"
#include "server/logging.h"
#include "server/server.h"

#ifndef STREAMGEN_DEMO_MODEL_DIR
#define STREAMGEN_DEMO_MODEL_DIR ""
#endif

ABSL_FLAG(std::string, model, STREAMGEN_DEMO_MODEL_DIR,
          "Model directory in Hugging Face layout (config.json, *.safetensors, "
          "tokenizer.model). Default: the demo model (models/demo-brown: a 5.9M-parameter "
          "Llama trained on the Brown corpus).");
ABSL_FLAG(std::string, tokenizer, "auto",
          "Which tokenizer of --model to load: auto (tokenizer.json when present, else "
          "tokenizer.model, as transformers' AutoTokenizer chooses), hf (tokenizer.json) or "
          "sentencepiece (tokenizer.model). docs/tokenizers.md says what is supported.");
ABSL_FLAG(std::string, listen, "0.0.0.0:50051",
          "gRPC listen address HOST:PORT (port 0: any free port).");
ABSL_FLAG(std::string, device, "cpu", "Compute device: cpu, cuda, cuda:N.");
ABSL_FLAG(std::string, dtype, "",
          "Compute dtype: float32, bfloat16, float16 (CUDA only). Default: float32 on CPU, "
          "bfloat16 on CUDA.");
ABSL_FLAG(int, max_model_len, 0,
          "The context served, in tokens (prompt plus output): at most config.json's "
          "max_position_embeddings (0: that). Sizes the KV cache and the rotary tables; for "
          "Phi-3's longrope, a context within original_max_position_embeddings uses the short "
          "factors (docs/models.md).");
ABSL_FLAG(std::string, quantization, "none",
          "Weight-only quantization of the linear layers: none, or int8 (CPU only: symmetric "
          "per-output-channel int8 computed at load from the checkpoint; activations stay in "
          "--dtype; about a quarter of float32's weight bytes per token).");
ABSL_FLAG(int, threads, 0,
          "CPU threads for the model's math (0: $OMP_NUM_THREADS if set, else the CPUs this "
          "process may use: its affinity mask and cgroup CPU quota).");
ABSL_FLAG(int, max_queue, 64, "Requests waiting for a batch slot; beyond it RESOURCE_EXHAUSTED.");
ABSL_FLAG(int, max_batch, 16, "Running sequences, decoded together in one batch.");
ABSL_FLAG(int, max_prefill_tokens, 128,
          "Prompt tokens prefilled per engine iteration (chunked prefill): a long prompt "
          "stalls the running streams for at most one chunk. Smaller: lower tail latency "
          "(time to first token, inter-token) under load; larger: fewer, bigger prefill steps "
          "(more efficient on GPUs, where 512 or more is usual). See bench/README.md.");
ABSL_FLAG(int, kv_block_size, 16, "Tokens per KV-cache block.");
ABSL_FLAG(bool, enable_prefix_caching, false,
          "Reuse the KV cache of identical prompt prefixes between requests (a common system "
          "prompt, the earlier turns and answers of a chat): their prefill is skipped.");
ABSL_FLAG(int, kv_cache_blocks, 0,
          "Blocks in the KV-cache pool (0: derived: max-batch full contexts, capped by "
          "--kv-cache-memory).");
ABSL_FLAG(std::string, kv_cache_memory, "4GiB",
          "With --kv-cache-blocks 0: the most memory the KV-cache pool may take, in bytes or "
          "with a unit (512MiB, 2GiB, 1.5GB).");
ABSL_FLAG(double, gpu_memory_fraction, 0,
          "CUDA only, with --kv-cache-blocks 0: the share of the GPU's memory the server may "
          "hold in all (weights, activations, KV cache), in (0, 1]; the KV cache gets what is "
          "left after loading the model and a 2 GiB activation reserve. 0: --kv-cache-memory.");
ABSL_FLAG(bool, cuda_graphs, true,
          "CUDA: capture decode steps in CUDA graphs (one per batch-size bucket, on first use) "
          "and replay them; false: every step eager.");
ABSL_FLAG(int, default_max_new_tokens, 256,
          "max_new_tokens for requests that leave it 0 (clamped to the context left).");
ABSL_FLAG(std::string, generation_config, "auto",
          "auto: a request's unset sampling fields (temperature, top_p, top_k, min_p, "
          "repetition_penalty, max_new_tokens) take the model's generation_config.json values "
          "(do_sample false or absent: greedy); none: ignore that file's sampling keys (greedy, "
          "--default-max-new-tokens).");
ABSL_FLAG(int, max_new_tokens_limit, 4096,
          "An explicit max_new_tokens above this is refused with INVALID_ARGUMENT.");
ABSL_FLAG(int, max_prompt_tokens, 0, "Prompt tokens allowed (0: the model's context - 1).");
ABSL_FLAG(int, max_stop_strings, 16, "Stop strings per request.");
ABSL_FLAG(int, max_stop_string_bytes, 256, "Bytes per stop string.");
ABSL_FLAG(int, max_messages, 256, "Chat messages per request.");
ABSL_FLAG(int, max_receive_message_bytes, 4 << 20, "Largest gRPC request message accepted.");
ABSL_FLAG(std::string, chat_template, "auto",
          "Chat template for `messages`: auto (the model's own Jinja template from "
          "tokenizer_config.json or chat_template.jinja), llama2, mistral, chatml, none, or a "
          "Jinja template file (docs/chat-templates.md).");
ABSL_FLAG(std::string, metrics_listen, "0.0.0.0:9090",
          "Prometheus metrics over HTTP at http://HOST:PORT/metrics (\"\": off).");
ABSL_FLAG(bool, metrics_vllm_aliases, false,
          "Also export the engine's gauges under vLLM's names: vllm:num_requests_waiting, "
          "vllm:num_requests_running, vllm:kv_cache_usage_perc and "
          "vllm:cache_config_info{block_size,num_gpu_blocks}, which the Gateway API Inference "
          "Extension's endpoint picker reads by default (on /metrics of the metrics and the HTTP "
          "port).");
ABSL_FLAG(std::string, http_listen, "0.0.0.0:8000",
          "The HTTP face at HOST:PORT (\"\": off): OpenAI-style /v1/completions and "
          "/v1/chat/completions (SSE), /v1/models, /tokenize, /detokenize, /query-stream/, "
          "/health, /metrics and the playground page at /.");
ABSL_FLAG(std::string, served_model_name, "",
          "The model's name on the HTTP face (/v1/models, the requests' `model`). Default: the "
          "model directory's name.");
ABSL_FLAG(bool, adaptive_threads, true,
          "CPU: run the model on fewer threads while other processes take this machine's "
          "cores, and go back up to --threads when they leave (a thread waiting at a barrier "
          "for a descheduled sibling wastes its core). false: always --threads.");
ABSL_FLAG(int, http_threads, 0,
          "HTTP worker threads, one per connection being served (0: max-batch + max-queue + 16, "
          "so that every stream the engine can hold is carried).");
ABSL_FLAG(std::string, http_port_file, "",
          "Write the bound HTTP port to this file once listening.");
ABSL_FLAG(std::string, cors_allow_origin, "",
          "CORS on the HTTP face: a comma-separated list of exact origins allowed to call it "
          "from a browser (https://app.example.com,http://localhost:5173), or * for any "
          "(\"\": off, no CORS headers). Allowed origins get Access-Control-Allow-Origin on "
          "every response and an answer to preflights (before the API key).");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain: serve TLS (with --tls-key), on the "
          "gRPC and the HTTP port.");
ABSL_FLAG(std::string, tls_key, "", "PEM private key for --tls-cert.");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA bundle: require client certificates it signed (mutual TLS).");
ABSL_FLAG(std::string, api_key_file, "",
          "File of API keys, one per line ('#' comments; kept as SHA-256 digests). Set: "
          "Generate, Tokenize and GetModelInfo need the metadata 'authorization: Bearer <key>', "
          "and every HTTP route but /health, /metrics and / the same header.");
ABSL_FLAG(absl::Duration, drain_timeout, absl::Seconds(30),
          "On SIGTERM/SIGINT, time given to streams in flight before they are ended.");
ABSL_FLAG(std::string, log_format, "text", "Log lines as text or json.");
ABSL_FLAG(bool, log_prompts, false, "Put prompts in the per-request log line.");
ABSL_FLAG(absl::Duration, keepalive_time, absl::Seconds(60),
          "Ping a transport idle this long (keeps gateways' connections alive).");
ABSL_FLAG(absl::Duration, keepalive_timeout, absl::Seconds(20),
          "Close a transport whose ping is not answered within this.");
ABSL_FLAG(absl::Duration, min_client_ping_interval, absl::Seconds(10),
          "Clients' keepalive pings more frequent than this are refused (GOAWAY).");
ABSL_FLAG(absl::Duration, max_connection_age, absl::Minutes(30),
          "Send GOAWAY on connections older than this, so clients rebalance (0: never).");
ABSL_FLAG(absl::Duration, max_connection_age_grace, absl::Minutes(10),
          "Streams on an aged connection get this long to finish.");
ABSL_FLAG(absl::Duration, max_connection_idle, absl::ZeroDuration(),
          "Close connections without calls for this long (0: never).");
ABSL_FLAG(std::string, port_file, "", "Write the bound gRPC port to this file once listening.");

namespace streamgen {
namespace {

absl::StatusOr<ServerOptions> OptionsFromFlags() {
  ServerOptions options;
  options.listen = absl::GetFlag(FLAGS_listen);
  options.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  options.http.listen = absl::GetFlag(FLAGS_http_listen);
  options.http.served_model_name = absl::GetFlag(FLAGS_served_model_name);
  options.http.port_file = absl::GetFlag(FLAGS_http_port_file);
  options.http.cors_allow_origin = absl::GetFlag(FLAGS_cors_allow_origin);
  EngineOptions& engine = options.engine;
  engine.model_dir = absl::GetFlag(FLAGS_model);
  engine.tokenizer = absl::GetFlag(FLAGS_tokenizer);
  engine.device = absl::GetFlag(FLAGS_device);
  engine.dtype = absl::GetFlag(FLAGS_dtype);
  engine.quantization = absl::GetFlag(FLAGS_quantization);
  engine.max_model_len = absl::GetFlag(FLAGS_max_model_len);
  engine.threads = absl::GetFlag(FLAGS_threads);
  engine.adaptive_threads = absl::GetFlag(FLAGS_adaptive_threads);
  engine.max_queue = absl::GetFlag(FLAGS_max_queue);
  engine.max_batch = absl::GetFlag(FLAGS_max_batch);
  engine.max_prefill_tokens = absl::GetFlag(FLAGS_max_prefill_tokens);
  engine.kv_block_size = absl::GetFlag(FLAGS_kv_block_size);
  engine.prefix_caching = absl::GetFlag(FLAGS_enable_prefix_caching);
  engine.kv_cache_blocks = absl::GetFlag(FLAGS_kv_cache_blocks);
  absl::StatusOr<int64_t> kv_bytes =
      ParseByteSize(absl::GetFlag(FLAGS_kv_cache_memory), "kv-cache-memory");
  if (!kv_bytes.ok()) return kv_bytes.status();
  engine.kv_cache_bytes = *kv_bytes;
  engine.gpu_memory_fraction = absl::GetFlag(FLAGS_gpu_memory_fraction);
  engine.cuda_graphs = absl::GetFlag(FLAGS_cuda_graphs);
  const SpeculativeFlags speculative = ReadSpeculativeFlags();
  engine.speculative = speculative.speculative;
  engine.draft_model = speculative.draft_model;
  engine.num_speculative_tokens = speculative.num_speculative_tokens;
  engine.speculative_max_batch = speculative.speculative_max_batch;
  engine.draft_p_min = static_cast<float>(speculative.draft_p_min);
  if (engine.gpu_memory_fraction != 0 &&
      !(engine.gpu_memory_fraction > 0 && engine.gpu_memory_fraction <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--gpu-memory-fraction must be in (0, 1] (0: --kv-cache-memory), got ",
                     engine.gpu_memory_fraction));
  }
  if (engine.kv_cache_blocks < 0) {
    return absl::InvalidArgumentError("--kv-cache-blocks must be >= 0 (0: derived)");
  }
  if (engine.kv_block_size > 1024) {
    return absl::InvalidArgumentError("--kv-block-size must be in [1, 1024]");
  }
  engine.default_max_new_tokens = absl::GetFlag(FLAGS_default_max_new_tokens);
  const std::string generation_config = absl::GetFlag(FLAGS_generation_config);
  if (generation_config != "auto" && generation_config != "none") {
    return absl::InvalidArgumentError(
        absl::StrCat("--generation-config must be auto or none, got '", generation_config, "'"));
  }
  engine.use_generation_config = generation_config == "auto";
  engine.max_new_tokens_limit = absl::GetFlag(FLAGS_max_new_tokens_limit);
  engine.max_stop_strings = absl::GetFlag(FLAGS_max_stop_strings);
  engine.max_stop_string_bytes = absl::GetFlag(FLAGS_max_stop_string_bytes);
  for (auto [name, value] :
       {std::pair<const char*, int>{"max-queue", engine.max_queue},
        {"max-batch", engine.max_batch},
        {"max-prefill-tokens", engine.max_prefill_tokens},
        {"kv-block-size", engine.kv_block_size},
        {"default-max-new-tokens", engine.default_max_new_tokens},
        {"max-new-tokens-limit", engine.max_new_tokens_limit},
        {"max-messages", absl::GetFlag(FLAGS_max_messages)},
        {"max-receive-message-bytes", absl::GetFlag(FLAGS_max_receive_message_bytes)}}) {
    if (value <= 0) return absl::InvalidArgumentError(absl::StrCat("--", name, " must be > 0"));
  }
  if (engine.model_dir.empty()) return absl::InvalidArgumentError("--model is empty");
  int http_threads = absl::GetFlag(FLAGS_http_threads);
  if (http_threads < 0)
    return absl::InvalidArgumentError("--http-threads must be >= 0 (0: derived)");
  options.http.threads = http_threads > 0 ? http_threads : engine.max_batch + engine.max_queue + 16;
  options.http.max_pending_connections = options.http.threads;
  FrontendOptions& frontend = options.frontend;
  if (!absl::GetFlag(FLAGS_api_key_file).empty()) {
    absl::StatusOr<ApiKeys> keys = ApiKeys::LoadFile(absl::GetFlag(FLAGS_api_key_file));
    if (!keys.ok()) return keys.status();
    frontend.api_keys = std::move(*keys);
  }
  frontend.log_prompts = absl::GetFlag(FLAGS_log_prompts);
  frontend.chat_template = absl::GetFlag(FLAGS_chat_template);
  if (frontend.chat_template != "auto") {
    absl::StatusOr<ChatTemplateFamily> family = ParseChatTemplateFlag(frontend.chat_template);
    if (!family.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--chat-template: ", family.status().message()));
    }
  }
  frontend.max_prompt_tokens = absl::GetFlag(FLAGS_max_prompt_tokens);
  frontend.max_messages = absl::GetFlag(FLAGS_max_messages);
  frontend.max_receive_message_bytes = absl::GetFlag(FLAGS_max_receive_message_bytes);
  options.tls_cert_file = absl::GetFlag(FLAGS_tls_cert);
  options.tls_key_file = absl::GetFlag(FLAGS_tls_key);
  options.tls_client_ca_file = absl::GetFlag(FLAGS_tls_client_ca);
  options.keepalive_time = absl::GetFlag(FLAGS_keepalive_time);
  options.keepalive_timeout = absl::GetFlag(FLAGS_keepalive_timeout);
  options.min_client_ping_interval = absl::GetFlag(FLAGS_min_client_ping_interval);
  options.max_connection_age = absl::GetFlag(FLAGS_max_connection_age);
  options.max_connection_age_grace = absl::GetFlag(FLAGS_max_connection_age_grace);
  options.max_connection_idle = absl::GetFlag(FLAGS_max_connection_idle);
  options.port_file = absl::GetFlag(FLAGS_port_file);
  return options;
}

int Fail(const absl::Status& status) {
  LogEvent(spdlog::level::critical, "cannot start", {{"error", status.ToString()}});
  ShutdownLogging();
  return 1;
}

// SIGINT and SIGTERM: taken by a thread (sigwait), never by a handler.
sigset_t ShutdownSignals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  return signals;
}

int Run() {
  sigset_t signals = ShutdownSignals();

  absl::StatusOr<ServerOptions> options = OptionsFromFlags();
  if (!options.ok()) return Fail(options.status());
  absl::StatusOr<std::unique_ptr<StreamgenServer>> server = StreamgenServer::Start(*options);
  if (!server.ok()) return Fail(server.status());
  if (absl::GetFlag(FLAGS_metrics_vllm_aliases)) {
    (*server)->metrics()->EnableVllmAliases(options->engine.kv_block_size);
  }

  // First signal: drain. A second one: end the streams left right away.
  absl::Notification stop;
  std::atomic<bool> exiting{false};
  StreamgenServer* raw = server->get();
  std::thread watcher([&] {
    while (true) {
      int signal_number = 0;
      sigwait(&signals, &signal_number);
      if (exiting) return;
      if (!stop.HasBeenNotified()) {
        LogEvent(spdlog::level::info, "signal received: draining", {{"signal", signal_number}});
        stop.Notify();
      } else {
        LogEvent(spdlog::level::warn, "second signal: ending the streams now", {});
        raw->AbortStreams(absl::UnavailableError("the server is shutting down"));
      }
    }
  });
  auto stop_watcher = [&] {
    exiting = true;
    pthread_kill(watcher.native_handle(), SIGTERM);
    watcher.join();
  };
  absl::Status loaded = (*server)->LoadModel();
  if (!loaded.ok()) {
    raw->Shutdown();
    stop_watcher();
    return Fail(loaded);
  }
  stop.WaitForNotification();
  raw->Drain(absl::GetFlag(FLAGS_drain_timeout));
  stop_watcher();
  LogEvent(spdlog::level::info, "stopped", {});
  ShutdownLogging();
  return 0;
}

}  // namespace
}  // namespace streamgen

int main(int argc, char** argv) {
  // Before any thread starts (the logger's included), so that every thread
  // inherits the mask and the signals reach only the sigwait thread.
  sigset_t signals = streamgen::ShutdownSignals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);
  constexpr const char* kUsage =
      "Serves streamgen.v1.TextGeneration (gRPC, server streaming) and the HTTP face.\n"
      "  streamgen-server [--model DIR] [--listen HOST:PORT] [flags]\n"
      "Flags may be written --max-queue=8, --max-queue 8 or --max_queue=8. Durations: 30s, 5m, 1h.";
  absl::SetProgramUsageMessage(kUsage);
  if (streamgen::PrintHelpIfAsked(argc, argv, kUsage,
                                  {"server/main.cc", "common/speculative_flags.cc"}))
    return 0;
  streamgen::ArgvHolder args(streamgen::NormalizeFlagNames(argc, argv));
  std::vector<char*> positional = absl::ParseCommandLine(args.argc(), args.argv());
  if (positional.size() > 1) {
    std::fprintf(stderr, "streamgen-server: unexpected argument '%s' (see --help)\n",
                 positional[1]);
    return 2;
  }
  absl::StatusOr<streamgen::LogFormat> format =
      streamgen::ParseLogFormat(absl::GetFlag(FLAGS_log_format));
  if (!format.ok()) {
    std::fprintf(stderr, "streamgen-server: %s\n", std::string(format.status().message()).c_str());
    return 2;
  }
  streamgen::InitLogging(*format);
  return streamgen::Run();
}
