// The MLP pieces of the forward pass that every family shares: the linear
// layer, the gated activation (silu or GELU-tanh of gate, times up), and the
// sparse mixture-of-experts block of Mixtral and Qwen 3 MoE.
//
// The MoE block follows transformers' MixtralSparseMoeBlock and
// Qwen3MoeSparseMoeBlock (v4.5x and v5 compute the same thing):
//   logits = x @ router^T                  in x's dtype            [T, E]
//   p = softmax(logits) in float32; top_k of p (ties: the lower expert index;
//   torch.topk leaves the order of ties unspecified); divided by their sum
//   when norm_topk_prob; cast to x's dtype                          [T, k]
//   out = 0 (x's dtype); for each expert e in ascending index with rows:
//     y = down_e(act(gate_e(x_rows)) * up_e(x_rows)) * weight       (x's dtype)
//     out.index_add_(0, rows, y)            (adds in x's dtype, in that order)
// On the CPU the routing is a hand loop over E floats per token (no libtorch
// op per token), a token reads only its top_k experts' weights, and the rows
// of a batch are grouped by expert (one gather per expert that has rows; the
// others are not read); the experts' gate_up linears share one parallel
// region, and so do their downs (CpuLinearGroup).
//
// Included only by engine .cc files, tests and benchmarks: it pulls in torch.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/model/cpu_kernels.h"
#include "engine/model/model_config.h"

namespace streamgen {

// y = x w^T: x [M, K] -> [M, N] in x's dtype. CPU: CpuLinear (the skinny
// kernel up to SkinnyMaxRows rows, GEMM above; int8 weights); elsewhere
// torch::mm with w's transposed view (compute-dtype weights only).
// Thread-safe (no shared state beyond the CPU kernels' settings).
torch::Tensor ApplyLinear(const torch::Tensor& x, const LinearWeight& w);

// act(gate) * up for gu [M, 2I] = gate | up stacked -> [M, I] in gu's dtype.
// CPU float32 / bfloat16: the one-pass kernels SiluMul and GeluTanhMul
// (cpu_kernels.h); elsewhere libtorch's silu / gelu(approximate="tanh") and
// mul. Thread-safe.
torch::Tensor GatedActivation(const torch::Tensor& gu, Activation act);

// One sparse MoE layer's weights.
struct MoeWeights {
  torch::Tensor router;               // [E, hidden], x's dtype (never quantized)
  std::vector<LinearWeight> gate_up;  // E x [2 I, hidden]: gate_proj | up_proj stacked (w1 | w3)
  std::vector<LinearWeight> down;     // E x [hidden, I]: down_proj (w2)
  int64_t nbytes() const;             // all of them (the benchmark's bandwidth figures)
};

// Each token's choice of experts.
struct MoeRouting {
  int64_t top_k = 0;
  // [T * top_k]: token t's experts at [t * top_k, (t + 1) * top_k), by
  // descending probability (ties: the lower index first).
  std::vector<int32_t> experts;
  // [T * top_k]: their weights in float32 (renormalised when
  // norm_topk_prob), before MoeMlp's cast to x's dtype.
  std::vector<float> weights;
};

// The router's top-k for logits [T, E] (float32 or bfloat16 on the CPU; any
// floating dtype and device elsewhere, through libtorch's softmax and topk
// and one copy to the host). Softmax over all E in float32. Thread-safe.
MoeRouting RouteTokens(const torch::Tensor& logits, const MoeConfig& moe);

// The sparse MoE block (see the top of this file): x [T, hidden] -> [T,
// hidden] in x's dtype. moe.num_experts experts of moe.expert_intermediate_size
// rows, top moe.top_k per token; `act` is the experts' activation. Bad shapes
// or dtypes raise c10::Error with a message that starts "MoeMlp:". On the CPU,
// a token's output does not depend on the other rows of x (bit for bit) while
// x has at most SkinnyMaxRows(router) rows and each expert gets at most
// SkinnyMaxRows(its weights) of them (float32: 24; the skinny kernel is
// batch-invariant, the GEMM above it is not). Elsewhere the routing costs one
// device-to-host copy (the grouping by expert is planned on the host).
// Thread-safe.
torch::Tensor MoeMlp(const torch::Tensor& x, const MoeWeights& w, const MoeConfig& moe,
                     Activation act);

}  // namespace streamgen
