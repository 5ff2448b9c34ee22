// Engine-only benchmark (no server): decode tokens/s at batch 1, prefill
// tokens/s, and the weight bandwidth the decode step achieves as a fraction of
// the read-bandwidth probe: a plain multi-threaded streaming read of a buffer
// as large as the decode weights, in the same huge-page memory, in the same
// run (the ceiling of a bandwidth-bound decode step).
//
//   streamgen-bench-engine --model DIR [--dtype float32|bfloat16]
//       [--quantization none|int8] [--threads 2] [--new-tokens 64] [--runs 3]
//       [--device cpu|cuda:N] [--max-prefill-tokens N]
//   streamgen-bench-engine --model DIR --linear-sweep   # the kernels' crossover
//   streamgen-bench-engine --model DIR --isa-sweep      # every ISA body side by side
//   streamgen-bench-engine --model DIR --tiled-sweep    # the batched range's crossovers
//
// Prints one line per figure and a final JSON line (for scripts). On a CUDA
// device the model-only steps are timed up to a host copy of their last
// output (a sync), and the read-bandwidth probe, a host-memory figure, is not
// run (0 in the JSON; scripts/device-check.sh measures a device copy instead).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <future>
#include <string>
#include <vector>

#include <torch/csrc/autograd/profiler_legacy.h>
#include <torch/torch.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_split.h"
#include "engine/model/cpu_kernels.h"
#include "engine/model/device.h"
#include "engine/engine.h"
#include "engine/model/llama_model.h"
#include "engine/model/llama_model_testing.h"
#include "engine/model/model_config.h"
#include "tools/bench_prompt.h"
#include "common/cli_flags.h"

ABSL_FLAG(std::string, model, "", "model directory");
ABSL_FLAG(std::string, dtype, "float32", "compute dtype");
ABSL_FLAG(std::string, device, "cpu", "compute device: cpu, cuda or cuda:N");
ABSL_FLAG(int, max_prefill_tokens, 0,
          "engine: prompt tokens prefilled per loop iteration (0: the engine's default)");
ABSL_FLAG(std::string, quantization, "none", "weight quantization: none or int8");
ABSL_FLAG(std::string, linear, "kernels",
          "the CPU linear layers: kernels (the skinny kernels up to the crossover, GEMM above), or "
          "libtorch (torch::mv for one row, torch::mm above: the path before the kernels)");
ABSL_FLAG(bool, linear_sweep, false,
          "instead of the figures above: time the linear layers' kernels (skinny kernel "
          "against the GEMM path) over row counts, for every weight dtype, at the model's shapes");
ABSL_FLAG(bool, isa_sweep, false,
          "instead of the figures above: time every linear layer of the model (CpuLinear, "
          "as the forward pass runs them) under each kernel ISA this CPU has (portable, avx2, "
          "avx512) and libtorch's path, at 1, 4, 16 and 128 rows, every weight dtype");
ABSL_FLAG(bool, as_avx2, false,
          "--isa-sweep as on an AVX2-only CPU: libtorch's oneDNN off (its bfloat16 mm then "
          "takes the fallback it takes on a CPU without AVX-512, as libtorch 1.13 does there), "
          "only the portable and avx2 bodies; run with OPENBLAS_CORETYPE=Haswell");
ABSL_FLAG(std::string, isa_rows, "1,4,16,128", "--isa-sweep's row counts");
ABSL_FLAG(std::string, isa_kinds, "float32,bfloat16,int8+f32,int8+bf16",
          "--isa-sweep's weight kinds (float32, bfloat16, int8+f32, int8+bf16)");
ABSL_FLAG(bool, tiled_sweep, false,
          "instead of the figures above: every linear layer of the model (one pass, from DRAM) "
          "through SkinnyLinear's row-by-row schedule, its tiled schedule and the GEMM path "
          "(CpuLinear past the crossover), interleaved, under the active kernel ISA "
          "(STREAMGEN_KERNEL_ISA to force one), at --tiled_rows rows, --isa_kinds weights");
ABSL_FLAG(std::string, tiled_rows, "1,2,3,4,5,6,8,12,16,24,32,48,64", "--tiled-sweep's row counts");
ABSL_FLAG(int, threads, 0, "intra-op threads (0: $OMP_NUM_THREADS if set, else the CPUs this process may use: affinity and cgroup quota)");
ABSL_FLAG(bool, adaptive_threads, false,
          "the engine's adaptive_threads (the server's --adaptive-threads, on there): off, a "
          "benchmark keeps --threads even when a neighbour takes a core");
ABSL_FLAG(int, new_tokens, 64, "tokens to decode per run");
ABSL_FLAG(int, runs, 3, "timed runs (the best is reported)");
ABSL_FLAG(int, kv_cache_blocks, 0, "engine KV pool blocks (0: the engine's default)");
ABSL_FLAG(int, batch, 16, "batch size of the batched model-only decode figure");
ABSL_FLAG(int, mixed_prefill, 0,
          "> 0: in the batched model-only figure, the first sequence is a prefill chunk of "
          "this many tokens (a mixed prefill + decode step, as the scheduler runs them)");
ABSL_FLAG(std::string, profile, "",
          "write a Chrome trace (libtorch's profiler) of the batched model-only steps to this file");
ABSL_FLAG(std::string, prompt, "The quick brown fox jumps over the lazy dog",
          "prompt (~10 tokens)");
ABSL_FLAG(int, prompt_tokens, 0,
          "> 0: use a synthetic prompt of this many token ids instead of --prompt, the same "
          "ids as `streamgen-client bench --prompt-tokens` sends (its call 0, seed 0)");

namespace {

using Clock = std::chrono::steady_clock;
double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// The read-bandwidth probe: StreamRead (cpu_kernels.h) over a huge-page
// buffer of `bytes` bytes, filled first (so every page is faulted in and
// backed). Returns the mean bytes/s over passes (the decode figures are means).
double ProbeBytesPerSecond(int64_t bytes, int runs) {
  torch::Tensor buf = streamgen::ZerosHugePages({bytes}, torch::TensorOptions().dtype(torch::kUInt8));
  buf.random_(0, 256);
  uint64_t sink = streamgen::StreamRead(buf.data_ptr(), bytes);  // warm-up
  const int passes = runs * 20;
  auto t0 = Clock::now();
  for (int r = 0; r < passes; ++r) sink += streamgen::StreamRead(buf.data_ptr(), bytes);
  const double s = Seconds(t0, Clock::now()) / passes;
  if (sink == 42) std::printf(" ");  // keeps the reads
  return bytes / s;
}

// --linear-sweep: for each weight kind and each of the model's linear shapes,
// the skinny kernel against the GEMM path (CpuLinear past the crossover) at
// several row counts: ms per call and the weight GB/s. The weights are
// copies totalling >= 1 GiB, called in turn, so each call reads its weight
// from DRAM as in a decode step (one matrix would stay in the L3 cache).
int LinearSweep(const streamgen::ModelConfig& c, int runs) {
  c10::InferenceMode guard;
  const int64_t h = c.hidden_size;
  struct Shape {
    const char* name;
    int64_t n, k;
  };
  const std::vector<Shape> shapes = {{"qkv", c.q_size() + 2 * c.kv_size(), h},
                                     {"o", h, c.q_size()},
                                     {"gate_up", 2 * c.intermediate_size, h},
                                     {"down", h, c.intermediate_size},
                                     {"lm_head", c.vocab_size, h}};
  const int64_t kTotal = int64_t{1} << 30;
  const double probe = ProbeBytesPerSecond(kTotal, runs);
  std::printf("read-bandwidth probe (1 GiB)  %.1f GB/s, kernels: %s\n", probe / 1e9,
              streamgen::KernelIsaDescription().c_str());
  std::printf("%-8s %-10s %5s %10s %10s %8s %12s %9s\n", "layer", "weights", "rows", "skinny ms",
              "gemm ms", "gemm/sk", "skinny GB/s", "of probe");
  const std::vector<int64_t> row_counts = {1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64};
  for (const char* kind : {"float32", "bfloat16", "int8+f32", "int8+bf16"}) {
    const std::string k = kind;
    const auto xt = (k == "bfloat16" || k == "int8+bf16") ? torch::kBFloat16 : torch::kFloat32;
    for (const Shape& s : shapes) {
      std::vector<streamgen::LinearWeight> ws;
      {
        torch::Tensor w32 = torch::randn({s.n, s.k});
        streamgen::LinearWeight base;
        if (k == "float32" || k == "bfloat16") {
          base = {w32.to(xt).contiguous(), {}};
        } else {
          base = streamgen::QuantizeInt8(w32);
        }
        for (int64_t total = 0; total < kTotal; total += base.nbytes()) {
          ws.push_back({streamgen::ToHugePages(base.w.clone()), base.scale});
        }
      }
      for (int64_t m : row_counts) {
        torch::Tensor x = torch::randn({m, s.k}).to(xt);
        auto time = [&](auto&& f) {
          for (const auto& w : ws) f(w);  // warm-up
          double best = 1e30;
          for (int r = 0; r < runs; ++r) {
            auto t0 = Clock::now();
            for (const auto& w : ws) f(w);
            best = std::min(best, Seconds(t0, Clock::now()) / ws.size());
          }
          return best;
        };
        const double sk = time([&](const streamgen::LinearWeight& w) { streamgen::SkinnyLinear(x, w); });
        // The GEMM path CpuLinear takes past the crossover under this ISA.
        const auto route = streamgen::CpuLinearRouteFor(int64_t{1} << 40, ws[0], xt);
        const double gm = time([&](const streamgen::LinearWeight& w) {
          if (w.int8()) {
            streamgen::Int8TiledGemm(x, w);
          } else if (route == streamgen::CpuLinearRoute::kFloat32Tiles) {
            streamgen::Float32TiledGemm(x, w);
          } else {
            torch::mm(x, w.w.t());
          }
        });
        const double gbs = ws[0].nbytes() / sk / 1e9;
        std::printf("%-8s %-10s %5lld %10.4f %10.4f %8.2f %12.1f %9.2f\n", s.name, kind,
                    static_cast<long long>(m), sk * 1e3, gm * 1e3, gm / sk, gbs, gbs * 1e9 / probe);
        std::fflush(stdout);
      }
    }
  }
  return 0;
}

// (N, K) of every linear of one forward pass: each layer's qkv, o, gate_up
// and down, then lm_head.
std::vector<std::pair<int64_t, int64_t>> LinearShapes(const streamgen::ModelConfig& c) {
  const int64_t h = c.hidden_size;
  std::vector<std::pair<int64_t, int64_t>> shapes;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    shapes.push_back({c.q_size() + 2 * c.kv_size(), h});
    shapes.push_back({h, c.q_size()});
    shapes.push_back({2 * c.intermediate_size, h});
    shapes.push_back({h, c.intermediate_size});
  }
  shapes.push_back({c.vocab_size, h});
  return shapes;
}

// A sweep's kind ("float32", "bfloat16", "int8+f32", "int8+bf16"): the
// activations' dtype, and random weights of every shape in that kind (in
// huge-page memory, as the engine loads them).
torch::ScalarType SweepActivationDtype(const std::string& kind) {
  return kind == "bfloat16" || kind == "int8+bf16" ? torch::kBFloat16 : torch::kFloat32;
}

std::vector<streamgen::LinearWeight> SweepWeights(
    const std::vector<std::pair<int64_t, int64_t>>& shapes, const std::string& kind) {
  const torch::ScalarType xt = SweepActivationDtype(kind);
  std::vector<streamgen::LinearWeight> ws;
  for (const auto& [n, k] : shapes) {
    torch::Tensor w32 = torch::randn({n, k});
    ws.push_back(kind == "float32" || kind == "bfloat16"
                     ? streamgen::LinearWeight{w32.to(xt).contiguous(), {}}
                     : streamgen::QuantizeInt8(w32));
    ws.back().w = streamgen::ToHugePages(ws.back().w);
  }
  return ws;
}

// --isa-sweep: all of the model's linear layers (every layer's qkv, o,
// gate_up and down, and lm_head: one forward pass's weights, read from DRAM
// as in a real step) through CpuLinear, under each kernel ISA the CPU has and
// under libtorch's path (CpuLinearPath::kLibtorch: torch::mv / torch::mm in
// the activations' dtype, the path before the kernels), at 1, 4, 16 and 128
// rows. One run, interleaved body by body per repetition (the machine's
// speed drifts), the best of `runs`; ratios against the portable body.
int IsaSweep(const streamgen::ModelConfig& c, int runs) {
  c10::InferenceMode guard;
  const std::vector<std::pair<int64_t, int64_t>> shapes = LinearShapes(c);
  std::vector<streamgen::KernelIsa> bodies;
  for (auto isa : {streamgen::KernelIsa::kPortable, streamgen::KernelIsa::kAvx2,
                   streamgen::KernelIsa::kAvx512}) {
    if (streamgen::CpuCanRun(isa)) bodies.push_back(isa);
  }
  if (absl::GetFlag(FLAGS_as_avx2)) {
    // ONEDNN_MAX_CPU_ISA=AVX2 does not emulate this with libtorch 1.13: it
    // still sends bfloat16 mm to oneDNN (its check is cpuinfo's AVX-512),
    // which then throws "could not create a primitive descriptor iterator".
    at::globalContext().setUserEnabledMkldnn(false);
    if (bodies.back() == streamgen::KernelIsa::kAvx512) bodies.pop_back();
    (void)streamgen::SetKernelIsa(streamgen::KernelIsa::kAvx2);
  }
  const streamgen::KernelIsa start_isa = streamgen::ActiveIsa();
  std::printf("kernels: %s; ms per pass over all %zu linears (best of %d)\n",
              streamgen::KernelIsaDescription().c_str(), shapes.size(), runs);
  std::printf("%-10s %5s", "weights", "rows");
  for (auto isa : bodies) std::printf(" %10s", streamgen::KernelIsaName(isa));
  std::printf(" %10s", "libtorch");
  for (size_t i = 1; i < bodies.size(); ++i) {
    std::printf(" %9s/p", streamgen::KernelIsaName(bodies[i]));
  }
  std::printf(" %12s  routes (per body)\n", "libtorch/best");
  for (const std::string& k : std::vector<std::string>(absl::StrSplit(absl::GetFlag(FLAGS_isa_kinds), ','))) {
    const char* kind = k.c_str();
    const torch::ScalarType xt = SweepActivationDtype(k);
    const std::vector<streamgen::LinearWeight> ws = SweepWeights(shapes, k);
    for (const std::string& rows : std::vector<std::string>(absl::StrSplit(absl::GetFlag(FLAGS_isa_rows), ','))) {
      const int64_t m = std::stoll(rows);
      std::vector<torch::Tensor> xs;
      for (const auto& [n, kk] : shapes) xs.push_back(torch::randn({m, kk}).to(xt));
      auto pass = [&] {
        const auto t0 = Clock::now();
        for (size_t i = 0; i < ws.size(); ++i) streamgen::CpuLinear(xs[i], ws[i]);
        return Seconds(t0, Clock::now());
      };
      // Columns: the bodies, then libtorch's path; best over runs, interleaved.
      std::vector<double> best(bodies.size() + 1, 1e30);
      std::string routes;
      for (int r = 0; r <= runs; ++r) {  // r == 0: warm-up
        for (size_t b = 0; b <= bodies.size(); ++b) {
          const bool libtorch = b == bodies.size();
          (void)streamgen::SetKernelIsa(libtorch ? start_isa : bodies[b]);
          streamgen::SetCpuLinearPath(libtorch ? streamgen::CpuLinearPath::kLibtorch
                                               : streamgen::CpuLinearPath::kKernels);
          const double s = pass();
          if (r > 0) best[b] = std::min(best[b], s);
          if (r == 0 && !libtorch) {
            routes += std::string(routes.empty() ? "" : ",") +
                      streamgen::CpuLinearRouteName(streamgen::CpuLinearRouteFor(m, ws[0], xt));
          }
        }
      }
      (void)streamgen::SetKernelIsa(start_isa);
      streamgen::SetCpuLinearPath(streamgen::CpuLinearPath::kKernels);
      std::printf("%-10s %5lld", kind, static_cast<long long>(m));
      for (double b : best) std::printf(" %10.2f", b * 1e3);
      for (size_t i = 1; i < bodies.size(); ++i) std::printf(" %11.2f", best[0] / best[i]);
      const double fastest = *std::min_element(best.begin(), best.end() - 1);
      std::printf(" %12.2f  %s\n", best.back() / fastest, routes.c_str());
      std::fflush(stdout);
    }
  }
  return 0;
}

// --tiled-sweep: the crossovers of SkinnyLinear's schedules (TiledMinRows)
// and of the skinny kernel against the GEMM path (SkinnyMaxRows), from one
// pass over all of the model's linears per figure (ms, best of `runs`, the
// three interleaved per repetition: the machine's speed drifts).
int TiledSweep(const streamgen::ModelConfig& c, int runs) {
  c10::InferenceMode guard;
  const std::vector<std::pair<int64_t, int64_t>> shapes = LinearShapes(c);
  std::printf("kernels: %s (skinny body: %s); CPU ms per pass over all %zu linears (best of %d)\n",
              streamgen::KernelIsaDescription().c_str(),
              streamgen::KernelIsaName(streamgen::SkinnyKernelIsa()), shapes.size(), runs);
  std::printf("(CPU ms of the process: run with --threads 1 on a shared machine)\n");
  std::printf("%-10s %5s %10s %10s %10s %9s %9s  %s\n", "weights", "rows", "row-by-row", "tiled",
              "gemm", "rows/tile", "gemm/tile", "gemm route");
  for (const std::string& k : std::vector<std::string>(absl::StrSplit(absl::GetFlag(FLAGS_isa_kinds), ','))) {
    const torch::ScalarType xt = SweepActivationDtype(k);
    const std::vector<streamgen::LinearWeight> ws = SweepWeights(shapes, k);
    const auto route = streamgen::CpuLinearRouteFor(int64_t{1} << 40, ws[0], xt);
    for (const std::string& rows : std::vector<std::string>(absl::StrSplit(absl::GetFlag(FLAGS_tiled_rows), ','))) {
      const int64_t m = std::stoll(rows);
      std::vector<torch::Tensor> xs;
      for (const auto& [n, kk] : shapes) xs.push_back(torch::randn({m, kk}).to(xt));
      // CPU time of the process, not wall time: this project's 2-core machines
      // are shared (a pass descheduled half-way measures the neighbours).
      // With --threads 1 it is the pass's own time; with more it includes
      // the OpenMP threads' waits.
      auto cpu_now = [] {
        timespec ts;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
        return ts.tv_sec + 1e-9 * ts.tv_nsec;
      };
      auto pass = [&](int which) {
        const double t0 = cpu_now();
        for (size_t i = 0; i < ws.size(); ++i) {
          const streamgen::LinearWeight& w = ws[i];
          if (which < 2) {
            streamgen::SkinnyLinear(xs[i], w);
          } else if (w.int8()) {
            streamgen::Int8TiledGemm(xs[i], w);
          } else if (route == streamgen::CpuLinearRoute::kFloat32Tiles) {
            streamgen::Float32TiledGemm(xs[i], w);
          } else {
            torch::mm(xs[i], w.w.t());
          }
        }
        return cpu_now() - t0;
      };
      std::vector<double> best(3, 1e30);
      for (int r = 0; r <= runs; ++r) {  // r == 0: warm-up
        for (int which = 0; which < 3; ++which) {
          streamgen::SetSkinnySchedule(which == 1 ? streamgen::SkinnySchedule::kTiles
                                                  : streamgen::SkinnySchedule::kRows);
          const double s = pass(which);
          if (r > 0) best[which] = std::min(best[which], s);
        }
      }
      streamgen::SetSkinnySchedule(streamgen::SkinnySchedule::kAuto);
      std::printf("%-10s %5lld %10.2f %10.2f %10.2f %9.2f %9.2f  %s\n", k.c_str(),
                  static_cast<long long>(m), best[0] * 1e3, best[1] * 1e3, best[2] * 1e3,
                  best[0] / best[1], best[2] / best[1], streamgen::CpuLinearRouteName(route));
      std::fflush(stdout);
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  streamgen::ArgvHolder args(streamgen::NormalizeFlagNames(argc, argv));
  absl::ParseCommandLine(args.argc(), args.argv());
  const std::string dir = absl::GetFlag(FLAGS_model);
  const int threads = streamgen::ConfigureThreads(absl::GetFlag(FLAGS_threads));
  const int new_tokens = absl::GetFlag(FLAGS_new_tokens);
  const int runs = absl::GetFlag(FLAGS_runs);
  auto config = streamgen::LoadModelConfig(dir);
  if (!config.ok()) {
    std::fprintf(stderr, "%s\n", std::string(config.status().message()).c_str());
    return 1;
  }

  if (absl::GetFlag(FLAGS_linear_sweep)) return LinearSweep(*config, runs);
  if (absl::GetFlag(FLAGS_isa_sweep)) return IsaSweep(*config, runs);
  if (absl::GetFlag(FLAGS_tiled_sweep)) return TiledSweep(*config, runs);
  const std::string linear = absl::GetFlag(FLAGS_linear);
  if (linear != "kernels" && linear != "libtorch") {
    std::fprintf(stderr, "--linear=%s: want kernels or libtorch\n", linear.c_str());
    return 1;
  }
  streamgen::SetCpuLinearPath(linear == "libtorch" ? streamgen::CpuLinearPath::kLibtorch
                                                   : streamgen::CpuLinearPath::kKernels);
  auto quantization = streamgen::ParseQuantization(absl::GetFlag(FLAGS_quantization));
  if (!quantization.ok()) {
    std::fprintf(stderr, "%s\n", std::string(quantization.status().message()).c_str());
    return 1;
  }

  // 1. Through the engine: prefill and decode of one greedy request.
  streamgen::EngineOptions options;
  options.model_dir = dir;
  options.device = absl::GetFlag(FLAGS_device);
  options.dtype = absl::GetFlag(FLAGS_dtype);
  if (const int n = absl::GetFlag(FLAGS_max_prefill_tokens); n > 0) options.max_prefill_tokens = n;
  options.quantization = absl::GetFlag(FLAGS_quantization);
  options.threads = threads;
  options.adaptive_threads = absl::GetFlag(FLAGS_adaptive_threads);
  options.kv_cache_blocks = absl::GetFlag(FLAGS_kv_cache_blocks);
  auto engine = streamgen::Engine::Create(options);
  if (!engine.ok()) {
    std::fprintf(stderr, "%s\n", std::string(engine.status().message()).c_str());
    return 1;
  }
  double sum_tps = 0, best_prefill_ms = 1e9;
  int prompt_tokens = 0;
  for (int r = 0; r < runs + 1; ++r) {  // the first run warms up
    streamgen::GenerationRequest req;
    if (const int n = absl::GetFlag(FLAGS_prompt_tokens); n > 0) {
      const streamgen::ModelInfo info = (*engine)->model_info();
      const int vocab = info.tokenizer_vocab_size > 0
                            ? std::min(info.vocab_size, info.tokenizer_vocab_size)
                            : info.vocab_size;  // as the client bench draws them
      req.prompt_token_ids =
          streamgen::BenchPrompt(0, 0, n, vocab, info.bos_token_id, info.eos_token_ids);
    } else {
      req.prompt = absl::GetFlag(FLAGS_prompt);
    }
    req.max_new_tokens = new_tokens;
    req.ignore_eos = true;
    std::promise<streamgen::TokenEvent> done;
    auto id = (*engine)->Submit(req, [&](streamgen::TokenEvent&& e) {
      if (e.finish_reason != streamgen::FinishReason::kNone) done.set_value(std::move(e));
    });
    if (!id.ok()) return 1;
    streamgen::TokenEvent last = done.get_future().get();
    if (r == 0) continue;
    prompt_tokens = last.prompt_tokens;
    sum_tps += last.decode_tokens_per_s;
    best_prefill_ms = std::min(best_prefill_ms, last.prefill_ms);
  }
  const double engine_tps = sum_tps / runs;  // mean over runs of each run's mean
  (*engine)->Shutdown();
  engine->reset();

  // 2. The model alone: one decode step at batch 1 (no sampling, no detokenizer).
  auto device = streamgen::ParseDevice(absl::GetFlag(FLAGS_device));
  if (!device.ok()) return 1;
  auto dtype = streamgen::ParseDtype(absl::GetFlag(FLAGS_dtype), *device);
  if (!dtype.ok()) return 1;
  auto model = streamgen::LlamaModel::Load(dir, {*device, *dtype, *quantization});
  if (!model.ok()) {
    std::fprintf(stderr, "%s\n", std::string(model.status().message()).c_str());
    return 1;
  }
  // A host copy of a step's output waits for the device (a no-op wait on the CPU).
  auto sync = [](const torch::Tensor& t) { (void)t.to(torch::kCPU); };
  double step_s = 0;
  {
    c10::InferenceMode guard;
    streamgen::KvCache cache = streamgen::NewCache(**model, 16 + new_tokens);
    sync(streamgen::Forward(**model, std::vector<int>(10, 100), &cache));
    auto t0 = Clock::now();
    torch::Tensor out;
    for (int i = 0; i < new_tokens; ++i) out = streamgen::Forward(**model, {100 + i}, &cache);
    sync(out);
    step_s = Seconds(t0, Clock::now()) / new_tokens;
  }
  // 2b. The model alone, one decode step for `batch` sequences at ~150 positions.
  const int batch = absl::GetFlag(FLAGS_batch);
  double batch_step_s = 0;
  {
    c10::InferenceMode guard;
    const int64_t block = 16,
                  ctx = std::max(160 + new_tokens, absl::GetFlag(FLAGS_mixed_prefill));
    streamgen::KvPool pool = (*model)->NewKvPool(batch * (ctx / block + 1), block);
    std::vector<std::vector<int>> tables(batch);
    for (int b = 0; b < batch; ++b) {
      for (int64_t i = 0; i <= ctx / block; ++i) tables[b].push_back(b * (ctx / block + 1) + i);
    }
    auto step = [&](int pos) {
      std::vector<streamgen::SeqChunk> chunks;
      const int mixed = absl::GetFlag(FLAGS_mixed_prefill);
      for (int b = 0; b < batch; ++b) {
        if (b == 0 && mixed > 0) {
          chunks.push_back({std::vector<int>(mixed, 100), 0, &tables[b]});
        } else {
          chunks.push_back({{100 + b}, pos + b % 7, &tables[b]});
        }
      }
      return (*model)->Step(chunks, &pool);
    };
    sync(step(140));
    auto t0 = Clock::now();
    torch::Tensor out;
    // At least one timed step (with --new-tokens below 4, out would stay
    // undefined and sync() throw).
    const int batch_steps = std::max(1, new_tokens / 4);
    for (int i = 0; i < batch_steps; ++i) out = step(141 + i);
    sync(out);
    batch_step_s = Seconds(t0, Clock::now()) / batch_steps;
    if (const std::string trace = absl::GetFlag(FLAGS_profile); !trace.empty()) {
      torch::autograd::profiler::RecordProfile profile(trace);
      for (int i = 0; i < 4; ++i) step(141 + batch_steps + i);
    }
  }
  const int64_t decode_bytes = streamgen::DecodeWeightBytes(**model);
  model->reset();

  // 3. The read-bandwidth probe over as many bytes as the decode step reads.
  const bool on_cpu = device->is_cpu();
  const double probe_bps = on_cpu ? ProbeBytesPerSecond(decode_bytes, runs) : 0;
  const double region_us = streamgen::ParallelRegionMicros(20000);

  const double achieved_gbs = decode_bytes * engine_tps / 1e9;
  const double step_gbs = decode_bytes / step_s / 1e9;
  const double probe_gbs = probe_bps / 1e9;
  std::printf("model                      %s (%d layers, hidden %d, vocab %d)\n", dir.c_str(),
              config->num_hidden_layers, config->hidden_size, config->vocab_size);
  std::printf("dtype                      %s, weights %s, linear layers: %s (%s)\n",
              options.dtype.c_str(), streamgen::QuantizationName(*quantization), linear.c_str(),
              streamgen::ActiveKernelIsa());
  std::printf("threads                    %d\n", threads);
  std::printf("decode weight bytes        %.1f MB (embedding excluded)\n", decode_bytes / 1e6);
  if (on_cpu) {
    std::printf("read-bandwidth probe       %.1f GB/s (mean, %.1f MB in huge pages)\n", probe_gbs,
                decode_bytes / 1e6);
  } else {
    std::printf("read-bandwidth probe       not run on %s (a host-memory figure)\n",
                device->str().c_str());
  }
  // Fractions of the probe: 0 where it did not run.
  const double of_probe = probe_gbs > 0 ? 1 / probe_gbs : 0;
  std::printf("prefill                    %d tokens in %.2f ms = %.0f tokens/s\n", prompt_tokens,
              best_prefill_ms, prompt_tokens / (best_prefill_ms / 1000.0));
  std::printf("decode (engine, batch 1)   %.1f tokens/s  -> %.1f GB/s = %.3f of the probe\n",
              engine_tps, achieved_gbs, achieved_gbs * of_probe);
  std::printf("decode step (model only)   %.2f ms (mean) -> %.1f GB/s = %.3f of the probe\n",
              step_s * 1000, step_gbs, step_gbs * of_probe);
  std::printf("decode step (model only, batch %d) %.2f ms (mean) -> %.0f tokens/s\n", batch,
              batch_step_s * 1000, batch / batch_step_s);
  std::printf("parallel region            %.2f us each (empty at::parallel_for over %d threads; "
              "the batch-1 step runs ~5 per layer)\n",
              region_us, threads);
  std::printf(
      "{\"device\":\"%s\",\"threads\":%d,\"linear\":\"%s\",\"dtype\":\"%s\",\"quantization\":\"%s\",\"decode_weight_bytes\":%lld,"
      "\"prefill_tokens\":%d,\"prefill_ms\":%.3f,\"decode_tokens_per_s\":%.2f,"
      "\"achieved_gbs\":%.2f,\"model_step_ms\":%.3f,\"batch\":%d,\"batch_step_ms\":%.3f,"
      "\"probe_gbs\":%.2f,\"fraction_of_probe\":%.3f,\"step_fraction_of_probe\":%.3f,"
      "\"region_us\":%.2f}\n",
      device->str().c_str(), threads, linear.c_str(), options.dtype.c_str(), streamgen::QuantizationName(*quantization),
      static_cast<long long>(decode_bytes), prompt_tokens, best_prefill_ms, engine_tps,
      achieved_gbs, step_s * 1000, batch, batch_step_s * 1000, probe_gbs, achieved_gbs * of_probe,
      step_gbs * of_probe, region_us);
  return 0;
}
