// The MLP pieces (see mlp.h).
#include "engine/model/mlp.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include <ATen/record_function.h>
#include <c10/util/BFloat16.h>

namespace streamgen {
namespace {

// The value of a float32 or bfloat16 element as float32.
inline float ElementAsFloat(const torch::Tensor& t, int64_t i) {
  if (t.scalar_type() == torch::kFloat32) return t.data_ptr<float>()[i];
  return static_cast<float>(reinterpret_cast<const c10::BFloat16*>(t.data_ptr())[i]);
}

// v rounded to `dtype` (float32 or bfloat16), as float32.
inline float RoundTo(float v, bool bf16) {
  return bf16 ? static_cast<float>(c10::BFloat16(v)) : v;
}

// out[rows[i]] += y[i] * weights[i] for the rows of one expert, each product
// and each sum rounded to out's dtype (float32 or bfloat16, both contiguous):
// transformers' `expert(x) * routing_weight` then `index_add_`, without two
// libtorch ops per expert. No FMA contraction: libtorch rounds the product
// before the sum.
__attribute__((optimize("fp-contract=off"))) void AddWeightedRows(
    torch::Tensor& out, const torch::Tensor& y, const std::vector<int64_t>& rows,
    const std::vector<float>& weights) {
  const int64_t hidden = out.size(1);
  const bool bf16 = out.scalar_type() == torch::kBFloat16;
  for (size_t i = 0; i < rows.size(); ++i) {
    const float w = weights[i];  // already in out's dtype
    if (bf16) {
      auto* o = reinterpret_cast<c10::BFloat16*>(out.data_ptr()) + rows[i] * hidden;
      const auto* yr = reinterpret_cast<const c10::BFloat16*>(y.data_ptr()) + i * hidden;
      for (int64_t j = 0; j < hidden; ++j) {
        const float product = RoundTo(static_cast<float>(yr[j]) * w, true);
        o[j] = c10::BFloat16(static_cast<float>(o[j]) + product);
      }
    } else {
      float* o = out.data_ptr<float>() + rows[i] * hidden;
      const float* yr = y.data_ptr<float>() + i * hidden;
      for (int64_t j = 0; j < hidden; ++j) {
        const float product = yr[j] * w;
        o[j] = o[j] + product;
      }
    }
  }
}

// One expert's MLP on its rows xs [n, hidden] -> [n, hidden].
torch::Tensor ExpertForward(const torch::Tensor& xs, const LinearWeight& gate_up,
                            const LinearWeight& down, Activation act) {
  torch::Tensor gu = ApplyLinear(xs, gate_up);           // [n, 2I]
  return ApplyLinear(GatedActivation(gu, act), down);    // [n, hidden]
}

void CheckMoeShapes(const torch::Tensor& x, const MoeWeights& w, const MoeConfig& moe) {
  const int64_t e = moe.num_experts, inter = moe.expert_intermediate_size;
  TORCH_CHECK(e > 0 && 1 <= moe.top_k && moe.top_k <= e && inter > 0,
              "MoeMlp: need num_experts > 0, 1 <= top_k <= num_experts and "
              "expert_intermediate_size > 0, got num_experts ", e, ", top_k ", moe.top_k,
              ", expert_intermediate_size ", inter);
  TORCH_CHECK(x.dim() == 2 && x.is_floating_point(), "MoeMlp: x must be a floating [T, hidden] tensor, got ",
              x.sizes());
  const int64_t hidden = x.size(1);
  TORCH_CHECK(w.router.defined() && w.router.dim() == 2 && w.router.size(0) == e &&
                  w.router.size(1) == hidden && w.router.scalar_type() == x.scalar_type(),
              "MoeMlp: router must be [num_experts, hidden] = [", e, ", ", hidden,
              "] in x's dtype ", x.scalar_type(), ", got ",
              w.router.defined() ? w.router.sizes() : c10::IntArrayRef{}, " ",
              w.router.defined() ? c10::toString(w.router.scalar_type()) : "undefined");
  TORCH_CHECK(static_cast<int64_t>(w.gate_up.size()) == e && static_cast<int64_t>(w.down.size()) == e,
              "MoeMlp: need num_experts = ", e, " gate_up and down weights, got ", w.gate_up.size(),
              " and ", w.down.size());
  for (int64_t i = 0; i < e; ++i) {
    const torch::Tensor& gu = w.gate_up[i].w;
    const torch::Tensor& dn = w.down[i].w;
    TORCH_CHECK(gu.defined() && gu.dim() == 2 && gu.size(0) == 2 * inter && gu.size(1) == hidden,
                "MoeMlp: expert ", i, " gate_up must be [2 * expert_intermediate_size, hidden] = [",
                2 * inter, ", ", hidden, "], got ", gu.defined() ? gu.sizes() : c10::IntArrayRef{});
    TORCH_CHECK(dn.defined() && dn.dim() == 2 && dn.size(0) == hidden && dn.size(1) == inter,
                "MoeMlp: expert ", i, " down must be [hidden, expert_intermediate_size] = [", hidden,
                ", ", inter, "], got ", dn.defined() ? dn.sizes() : c10::IntArrayRef{});
  }
}

}  // namespace

torch::Tensor ApplyLinear(const torch::Tensor& x, const LinearWeight& w) {
  if (x.device().is_cpu()) return CpuLinear(x, w);
  TORCH_CHECK(!w.int8(), "ApplyLinear: int8 weights run on the CPU only");
  return torch::mm(x, w.w.t());  // w.t() is a transposed view: BLAS reads it in place
}

torch::Tensor GatedActivation(const torch::Tensor& gu, Activation act) {
  TORCH_CHECK(gu.dim() == 2 && gu.size(1) % 2 == 0,
              "GatedActivation: gu must be [M, 2I] (gate | up), got ", gu.sizes());
  if (act == Activation::kGeluTanh) return GeluTanhMul(gu);  // falls back to libtorch off the CPU
  const int64_t inter = gu.size(1) / 2;
  const auto dt = gu.scalar_type();
  if (gu.device().is_cpu() && (dt == torch::kFloat32 || dt == torch::kBFloat16)) {
    return SiluMul(gu.contiguous());
  }
  return torch::silu(gu.narrow(1, 0, inter)) * gu.narrow(1, inter, inter);
}

int64_t MoeWeights::nbytes() const {
  int64_t bytes = router.defined() ? router.nbytes() : 0;
  for (const LinearWeight& l : gate_up) bytes += l.nbytes();
  for (const LinearWeight& l : down) bytes += l.nbytes();
  return bytes;
}

MoeRouting RouteTokens(const torch::Tensor& logits, const MoeConfig& moe) {
  RECORD_FUNCTION("streamgen::moe_route", std::vector<c10::IValue>());
  TORCH_CHECK(logits.dim() == 2 && logits.size(1) == moe.num_experts && 1 <= moe.top_k &&
                  moe.top_k <= moe.num_experts,
              "RouteTokens: logits must be [T, num_experts = ", moe.num_experts,
              "] and 1 <= top_k <= num_experts, got ", logits.sizes(), ", top_k ", moe.top_k);
  const int64_t t = logits.size(0), e = logits.size(1), k = moe.top_k;
  MoeRouting r;
  r.top_k = k;
  r.experts.resize(t * k);
  r.weights.resize(t * k);
  const auto dt = logits.scalar_type();
  if (!logits.device().is_cpu() || (dt != torch::kFloat32 && dt != torch::kBFloat16)) {
    // libtorch's softmax and topk, then the host copy the grouping needs.
    torch::Tensor probs = torch::softmax(logits.to(torch::kFloat32), 1);
    auto [vals, idx] = probs.topk(k, 1);
    if (moe.norm_topk_prob) vals = vals / vals.sum(1, true);
    torch::Tensor hv = vals.to(torch::kCPU).contiguous();
    torch::Tensor hi = idx.to(torch::kCPU, torch::kInt32).contiguous();
    std::memcpy(r.weights.data(), hv.data_ptr<float>(), t * k * sizeof(float));
    std::memcpy(r.experts.data(), hi.data_ptr<int32_t>(), t * k * sizeof(int32_t));
    return r;
  }
  torch::Tensor l = logits.contiguous();
  std::vector<float> p(e);
  std::vector<char> taken(e);
  for (int64_t tok = 0; tok < t; ++tok) {
    // Softmax over all experts in float32.
    float m = -INFINITY;
    for (int64_t i = 0; i < e; ++i) {
      p[i] = ElementAsFloat(l, tok * e + i);
      m = std::max(m, p[i]);
    }
    float sum = 0.0f;
    for (int64_t i = 0; i < e; ++i) {
      p[i] = std::exp(p[i] - m);
      sum += p[i];
    }
    for (int64_t i = 0; i < e; ++i) p[i] /= sum;
    // Top-k by selection (k is small): strictly greater wins, so of equal
    // probabilities the lower expert index is taken first.
    std::fill(taken.begin(), taken.end(), 0);
    float kept = 0.0f;
    for (int64_t s = 0; s < k; ++s) {
      int64_t best = -1;
      for (int64_t i = 0; i < e; ++i) {
        if (!taken[i] && (best < 0 || p[i] > p[best])) best = i;
      }
      taken[best] = 1;
      r.experts[tok * k + s] = static_cast<int32_t>(best);
      r.weights[tok * k + s] = p[best];
      kept += p[best];
    }
    if (moe.norm_topk_prob) {
      for (int64_t s = 0; s < k; ++s) r.weights[tok * k + s] /= kept;
    }
  }
  return r;
}

torch::Tensor MoeMlp(const torch::Tensor& x, const MoeWeights& w, const MoeConfig& moe,
                     Activation act) {
  RECORD_FUNCTION("streamgen::moe_mlp", std::vector<c10::IValue>());
  CheckMoeShapes(x, w, moe);
  const int64_t t = x.size(0), e = moe.num_experts, k = moe.top_k;
  const MoeRouting routing = RouteTokens(ApplyLinear(x, LinearWeight{w.router, {}}), moe);  // [T, E]
  // Each expert's rows (ascending token) and weights, the weights rounded to
  // x's dtype as transformers' `routing_weights.to(hidden_states.dtype)`.
  const bool bf16 = x.scalar_type() == torch::kBFloat16;
  std::vector<std::vector<int64_t>> rows(e);
  std::vector<std::vector<float>> weights(e);
  for (int64_t tok = 0; tok < t; ++tok) {
    for (int64_t s = 0; s < k; ++s) {
      const int32_t ex = routing.experts[tok * k + s];
      rows[ex].push_back(tok);
      weights[ex].push_back(RoundTo(routing.weights[tok * k + s], bf16));
    }
  }
  const bool host_sum = x.device().is_cpu() &&
                        (x.scalar_type() == torch::kFloat32 || x.scalar_type() == torch::kBFloat16);
  torch::Tensor xc = x.contiguous();
  torch::Tensor out = torch::zeros_like(xc);  // [T, hidden]
  if (!host_sum) {
    for (int64_t ex = 0; ex < e; ++ex) {  // ascending index: the order of transformers' sums
      if (rows[ex].empty()) continue;  // an expert nobody chose is not read
      torch::Tensor idx = torch::tensor(rows[ex], torch::kInt64).to(x.device());
      torch::Tensor y = ExpertForward(xc.index_select(0, idx), w.gate_up[ex], w.down[ex], act);
      torch::Tensor wt = torch::tensor(weights[ex]).to(x.device()).to(x.scalar_type()).unsqueeze(1);
      out.index_add_(0, idx, y * wt);
    }
    return out;
  }
  // CPU: the chosen experts' rows (an expert nobody chose is not read), all
  // experts' gate_up in one parallel region, one activation over all their
  // rows, all downs in one region (CpuLinearGroup: the same bits as one
  // CpuLinear per expert), then the weighted sums in ascending expert order.
  std::vector<int64_t> active;
  std::vector<torch::Tensor> xs;
  std::vector<const LinearWeight*> gate_up, down;
  for (int64_t ex = 0; ex < e; ++ex) {
    const std::vector<int64_t>& r = rows[ex];
    if (r.empty()) continue;
    active.push_back(ex);
    // All T rows in order (always at T = 1): x itself, no gather.
    xs.push_back(static_cast<int64_t>(r.size()) == t
                     ? xc
                     : xc.index_select(0, torch::tensor(r, torch::kInt64)));  // [n_e, hidden]
    gate_up.push_back(&w.gate_up[ex]);
    down.push_back(&w.down[ex]);
  }
  const std::vector<torch::Tensor> gu = CpuLinearGroup(xs, gate_up);  // each [n_e, 2I]
  std::vector<torch::Tensor> a_rows;  // each [n_e, I]
  if (t == 1) {
    // One row per expert: each activation runs on the calling thread (a
    // region over two rows would cost more than their ~2 µs of work).
    for (const torch::Tensor& g : gu) a_rows.push_back(GatedActivation(g, act));
  } else {
    const torch::Tensor a = GatedActivation(torch::cat(gu), act);  // [sum n_e, I]
    int64_t offset = 0;
    for (const torch::Tensor& g : gu) {
      a_rows.push_back(a.narrow(0, offset, g.size(0)));
      offset += g.size(0);
    }
  }
  const std::vector<torch::Tensor> ys = CpuLinearGroup(a_rows, down);  // each [n_e, hidden]
  for (size_t i = 0; i < active.size(); ++i) {
    AddWeightedRows(out, ys[i].contiguous(), rows[active[i]], weights[active[i]]);
  }
  return out;
}

}  // namespace streamgen
