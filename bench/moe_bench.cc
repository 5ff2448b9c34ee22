// The sparse MoE MLP alone (engine/model/mlp.h, MoeMlp): a stack of MoE
// layers shaped like a small MoE model, one decode step = one pass of a batch
// of tokens through every layer, each step a fresh input (so the routing,
// and the experts read, change from step to step as in a real decode). The
// weights (random, in huge pages like the model's) are sized to exceed the
// caches. Prints per weight kind and batch: ms per step, tokens/s, and the
// bytes of weights the step reads; at batch 1 the fraction of the
// read-bandwidth probe (StreamRead over 1 GiB, measured before each run) that
// those bytes take: a token reads the router and its top_k experts, nothing
// else. "GB/s" is from the best run; "of probe" the median over runs of a
// run's rate over its own probe's. After batch 1: a dense MLP stack of the
// same active bytes (intermediate top_k x the expert's), its runs alternating
// with the MoE runs: the cost a token of the MoE stack should approach.
//
//   streamgen-bench-moe [--hidden 768] [--experts 8] [--top-k 2]
//       [--expert-intermediate 1024] [--layers 32] [--batches 1,16]
//       [--kinds bfloat16,int8] [--steps 64] [--runs 3] [--threads 0]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <set>
#include <utility>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "common/cli_flags.h"
#include "engine/model/cpu_kernels.h"
#include "engine/model/device.h"
#include "engine/model/mlp.h"

ABSL_FLAG(int, hidden, 768, "hidden size");
ABSL_FLAG(int, experts, 8, "experts per layer");
ABSL_FLAG(int, top_k, 2, "experts per token");
ABSL_FLAG(int, expert_intermediate, 1024, "each expert's intermediate size");
ABSL_FLAG(int, layers, 32, "MoE layers (enough that the weights exceed the caches)");
ABSL_FLAG(std::string, batches, "1,16", "batch sizes (tokens per step)");
ABSL_FLAG(std::string, kinds, "bfloat16,int8",
          "weight kinds: float32, bfloat16, int8 (int8 weights, bfloat16 activations)");
ABSL_FLAG(int, steps, 64, "steps per timed run");
ABSL_FLAG(int, runs, 3, "timed runs (the best is reported)");
ABSL_FLAG(int, threads, 0, "intra-op threads (0: $OMP_NUM_THREADS if set, else the CPUs this process may use: affinity and cgroup quota)");

namespace {

using Clock = std::chrono::steady_clock;
double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// The read-bandwidth probe (as streamgen-bench-engine's): StreamRead over a
// huge-page buffer, filled once (every page faulted in and backed); Measure
// returns the mean bytes/s over `passes` reads of all of it.
class Probe {
 public:
  explicit Probe(int64_t bytes)
      : buf_(streamgen::ZerosHugePages({bytes}, torch::TensorOptions().dtype(torch::kUInt8))) {
    buf_.random_(0, 256);
    sink_ = streamgen::StreamRead(buf_.data_ptr(), bytes);  // warm-up
  }
  double Measure(int passes) {
    const int64_t bytes = buf_.numel();
    auto t0 = Clock::now();
    for (int r = 0; r < passes; ++r) sink_ += streamgen::StreamRead(buf_.data_ptr(), bytes);
    const double s = Seconds(t0, Clock::now()) / passes;
    if (sink_ == 42) std::printf(" ");  // keeps the reads
    return bytes / s;
  }

 private:
  torch::Tensor buf_;
  uint64_t sink_ = 0;
};

streamgen::LinearWeight MakeWeight(int64_t n, int64_t k, const std::string& kind) {
  torch::Tensor w = torch::randn({n, k}) / std::sqrt(static_cast<double>(k));  // [n, k]
  if (kind == "int8") {
    streamgen::LinearWeight q = streamgen::QuantizeInt8(w.to(torch::kBFloat16));
    return {streamgen::ToHugePages(q.w), q.scale};
  }
  return {streamgen::ToHugePages(w.to(kind == "float32" ? torch::kFloat32 : torch::kBFloat16)), {}};
}

std::vector<int> ParseInts(const std::string& s) {
  std::vector<int> out;
  for (absl::string_view part : absl::StrSplit(s, ',', absl::SkipEmpty())) {
    int v = 0;
    if (absl::SimpleAtoi(part, &v) && v > 0) out.push_back(v);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  streamgen::ArgvHolder args(streamgen::NormalizeFlagNames(argc, argv));
  absl::ParseCommandLine(args.argc(), args.argv());
  const int threads = streamgen::ConfigureThreads(absl::GetFlag(FLAGS_threads));
  c10::InferenceMode guard;
  streamgen::MoeConfig moe;
  moe.num_experts = absl::GetFlag(FLAGS_experts);
  moe.top_k = absl::GetFlag(FLAGS_top_k);
  moe.expert_intermediate_size = absl::GetFlag(FLAGS_expert_intermediate);
  moe.norm_topk_prob = true;
  const int64_t hidden = absl::GetFlag(FLAGS_hidden), layers = absl::GetFlag(FLAGS_layers);
  const int steps = absl::GetFlag(FLAGS_steps), runs = absl::GetFlag(FLAGS_runs);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // lines as they come (runs take minutes)
  Probe probe_buf(int64_t{1} << 30);
  const double probe = probe_buf.Measure(std::max(3, runs * 10));
  std::printf("MoE MLP: hidden %lld, %d experts, top-%d, expert intermediate %d, %lld layers, "
              "%d threads, kernels %s\n",
              static_cast<long long>(hidden), moe.num_experts, moe.top_k,
              moe.expert_intermediate_size, static_cast<long long>(layers), threads,
              streamgen::ActiveKernelIsa());
  std::printf("read-bandwidth probe (1 GiB): %.1f GB/s\n", probe / 1e9);
  std::printf("%-9s %5s %9s %10s %12s %12s %8s %9s\n", "weights", "batch", "ms/step", "tokens/s",
              "MB read/step", "experts/layer", "GB/s", "of probe");
  for (absl::string_view kind_view : absl::StrSplit(absl::GetFlag(FLAGS_kinds), ',', absl::SkipEmpty())) {
    const std::string kind(kind_view);
    const auto act_dtype = kind == "float32" ? torch::kFloat32 : torch::kBFloat16;
    std::vector<streamgen::MoeWeights> stack(layers);
    int64_t total = 0;
    for (streamgen::MoeWeights& w : stack) {
      w.router = streamgen::ToHugePages(
          (torch::randn({moe.num_experts, hidden}) / std::sqrt(static_cast<double>(hidden)))
              .to(act_dtype));
      for (int e = 0; e < moe.num_experts; ++e) {
        w.gate_up.push_back(MakeWeight(2 * moe.expert_intermediate_size, hidden, kind));
        w.down.push_back(MakeWeight(hidden, moe.expert_intermediate_size, kind));
      }
      total += w.nbytes();
    }
    const int64_t expert_bytes = stack[0].gate_up[0].nbytes() + stack[0].down[0].nbytes();
    const int64_t router_bytes = stack[0].router.nbytes();
    // The dense MLP stack of the same active bytes (intermediate top_k x the
    // expert's): what a token of the MoE stack should cost at batch 1.
    const int64_t dense_inter = static_cast<int64_t>(moe.top_k) * moe.expert_intermediate_size;
    std::vector<std::pair<streamgen::LinearWeight, streamgen::LinearWeight>> dense;
    for (int64_t l = 0; l < layers; ++l) {
      dense.emplace_back(MakeWeight(2 * dense_inter, hidden, kind),
                         MakeWeight(hidden, dense_inter, kind));
    }
    const double dense_bytes =
        static_cast<double>(layers) * (dense[0].first.nbytes() + dense[0].second.nbytes());
    for (int batch : ParseInts(absl::GetFlag(FLAGS_batches))) {
      // A fresh input per step (inputs: [steps, batch, hidden]), and the
      // experts each step's tokens choose per layer (the bytes it reads).
      torch::Tensor inputs = torch::randn({steps, batch, hidden}).to(act_dtype);
      int64_t bytes = 0;
      for (int s = 0; s < steps; ++s) {
        for (const streamgen::MoeWeights& w : stack) {
          const streamgen::MoeRouting r = streamgen::RouteTokens(
              streamgen::ApplyLinear(inputs[s], streamgen::LinearWeight{w.router, {}}), moe);
          const std::set<int32_t> used(r.experts.begin(), r.experts.end());
          bytes += router_bytes + static_cast<int64_t>(used.size()) * expert_bytes;
        }
      }
      const double bytes_per_step = static_cast<double>(bytes) / steps;
      // One pass of every step; returns seconds per step. Each layer gets the
      // step's input (not the previous layer's output): the routing stays
      // that of random inputs.
      auto moe_run = [&] {
        const auto t0 = Clock::now();
        for (int s = 0; s < steps; ++s) {
          for (const streamgen::MoeWeights& w : stack) {
            torch::Tensor y = streamgen::MoeMlp(inputs[s], w, moe, streamgen::Activation::kSilu);
            if (y.numel() == 0) std::printf(" ");
          }
        }
        return Seconds(t0, Clock::now()) / steps;
      };
      auto dense_run = [&] {
        const auto t0 = Clock::now();
        for (int s = 0; s < steps; ++s) {
          for (const auto& [gate_up, down] : dense) {
            torch::Tensor y = streamgen::ApplyLinear(
                streamgen::GatedActivation(streamgen::ApplyLinear(inputs[s], gate_up),
                                           streamgen::Activation::kSilu),
                down);
            if (y.numel() == 0) std::printf(" ");
          }
        }
        return Seconds(t0, Clock::now()) / steps;
      };
      // Each timed run right after a probe of its own (this project's
      // machines are shared: the bandwidth a run gets varies from minute to
      // minute); at batch 1 MoE and dense runs alternate. The fraction is the
      // median over runs of a run's rate over its probe's.
      double best = 1e30, dense_best = 1e30;
      std::vector<double> fractions, dense_fractions;
      for (int run = 0; run <= runs; ++run) {  // run 0: warm-up
        double run_probe = probe_buf.Measure(3);
        const double per_step = moe_run();
        if (run > 0) {
          best = std::min(best, per_step);
          fractions.push_back(bytes_per_step / per_step / run_probe);
        }
        if (batch != 1) continue;
        run_probe = probe_buf.Measure(3);
        const double dense_step = dense_run();
        if (run > 0) {
          dense_best = std::min(dense_best, dense_step);
          dense_fractions.push_back(dense_bytes / dense_step / run_probe);
        }
      }
      auto median = [](std::vector<double> v) {
        std::sort(v.begin(), v.end());
        return v[v.size() / 2];
      };
      const double experts_per_layer =
          (bytes_per_step / layers - router_bytes) / static_cast<double>(expert_bytes);
      std::printf("%-9s %5d %9.3f %10.1f %12.1f %12.2f %8.1f %9.2f\n", kind.c_str(), batch,
                  best * 1e3, batch / best, bytes_per_step / 1e6, experts_per_layer,
                  bytes_per_step / best / 1e9, median(fractions));
      if (batch == 1) {
        std::printf("%-9s %5d %9.3f %10.1f %12.1f %12s %8.1f %9.2f  (dense MLP, intermediate %lld)\n",
                    kind.c_str(), 1, dense_best * 1e3, 1 / dense_best, dense_bytes / 1e6, "-",
                    dense_bytes / dense_best / 1e9, median(dense_fractions),
                    static_cast<long long>(dense_inter));
      }
    }
    std::printf("%-9s all weights %.1f MB (%.1f MB per expert, router %.3f MB per layer)\n",
                kind.c_str(), total / 1e6, expert_bytes / 1e6, router_bytes / 1e6);
  }
  return 0;
}
