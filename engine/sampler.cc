#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <tuple>
#include <utility>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/status.h"

namespace streamgen {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
// top-p: a prefix whose mass is within this of top_p counts as reaching it, so
// that rounding in softmax / cumsum does not add a token at an exact boundary.
constexpr double kTopPSlack = 1e-6;

// Bad input reaches the caller as a c10::Error (the engine catches those).
void ThrowIfError(const absl::Status& status) {
  TORCH_CHECK(status.ok(), std::string(status.message()));
}

bool HasRepetitionPenalty(const SamplingParams& p) { return p.repetition_penalty != 1.0f; }
bool HasCountPenalty(const SamplingParams& p) {
  return p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f;
}
bool HasPenalties(const SamplingParams& p) {
  return HasRepetitionPenalty(p) || HasCountPenalty(p);
}

// Greedy, no penalties, no alternatives: handled by the batched argmax.
bool IsFastGreedy(const SampleInput& row) {
  return row.params->temperature == 0.0f && !HasPenalties(*row.params) &&
         row.top_logprobs == 0;
}

const std::vector<int>& OrEmpty(const std::vector<int>* ids) {
  static const std::vector<int> kEmpty;
  return ids ? *ids : kEmpty;
}

// The ids of `lists` that are < limit, as an int64 tensor on `device`.
torch::Tensor IdTensor(std::initializer_list<const std::vector<int>*> lists, int64_t limit,
                       const torch::Device& device) {
  std::vector<int64_t> ids;
  for (const std::vector<int>* list : lists) {
    for (int id : *list) {
      if (id >= 0 && id < limit) ids.push_back(id);
    }
  }
  return torch::tensor(ids, torch::dtype(torch::kLong)).to(device);
}

std::string ShapeString(const torch::Tensor& t) {
  return absl::StrCat("[", absl::StrJoin(t.sizes(), ", "), "]");
}

absl::Status CheckIds(const std::vector<int>& ids, const std::string& name, int64_t vocab) {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat(name, "[", i, "] = ", ids[i],
                                                     " is outside [0, ", vocab, ")"));
    }
  }
  return absl::OkStatus();
}

// Params in range, and the ids that a penalty will read inside [0, vocab).
absl::Status CheckRow(const SampleInput& row, const std::string& name, int64_t vocab) {
  if (row.params == nullptr) return absl::InvalidArgumentError(name + ".params is null");
  const SamplingParams& p = *row.params;
  absl::Status status = ValidateSamplingParams(p, row.top_logprobs);
  if (!status.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": ", status.message()));
  }
  if (p.temperature > 0.0f && row.rng == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ".rng is null but temperature is ", p.temperature));
  }
  if (HasRepetitionPenalty(p)) {
    SG_RETURN_IF_ERROR(CheckIds(OrEmpty(row.prompt_ids), name + ".prompt_ids", vocab));
  }
  if (HasPenalties(p)) {
    SG_RETURN_IF_ERROR(CheckIds(OrEmpty(row.output_ids), name + ".output_ids", vocab));
  }
  return absl::OkStatus();
}

absl::Status CheckLogits(const torch::Tensor& logits, int64_t dims, int valid_vocab,
                         const std::string& who) {
  if (!logits.defined()) return absl::InvalidArgumentError(who + ": logits is undefined");
  if (logits.dim() != dims) {
    return absl::InvalidArgumentError(
        absl::StrCat(who, ": logits must be ", dims == 2 ? "[batch, vocab]" : "[vocab]",
                     ", got sizes ", ShapeString(logits)));
  }
  if (!logits.is_floating_point()) {
    return absl::InvalidArgumentError(absl::StrCat(
        who, ": logits must be floating point, got ", c10::toString(logits.scalar_type())));
  }
  const int64_t vocab = logits.size(dims - 1);
  if (valid_vocab < 1 || valid_vocab > vocab) {
    return absl::InvalidArgumentError(absl::StrCat(
        who, ": valid_vocab must be in [1, ", vocab, "] (logits' vocab), got ", valid_vocab));
  }
  return absl::OkStatus();
}

// Steps 4-7 on penalised logits [n] float32: the renormalised probabilities [n].
torch::Tensor FilteredProbs(const torch::Tensor& logits, const SamplingParams& p) {
  torch::Tensor x = logits / p.temperature;
  const int64_t n = x.size(0);
  const bool top_k = p.top_k > 0 && p.top_k < n;
  const bool top_p = p.top_p < 1.0f;
  if (top_k || top_p) {
    // Stable descending sort: among equal logits the lower id comes first.
    auto [sorted, order] = torch::sort(x, /*stable=*/true, /*dim=*/0, /*descending=*/true);
    if (top_k) sorted.narrow(0, p.top_k, n - p.top_k).fill_(kNegInf);
    if (top_p) {
      torch::Tensor probs = torch::softmax(sorted, 0, torch::kDouble);
      torch::Tensor mass_before = probs.cumsum(0) - probs;  // [n]
      torch::Tensor drop = mass_before >= (static_cast<double>(p.top_p) - kTopPSlack);
      drop.narrow(0, 0, 1).fill_(false);  // the most likely token always stays
      sorted.masked_fill_(drop, kNegInf);
    }
    x = torch::empty_like(x).scatter_(0, order, sorted);
  }
  torch::Tensor probs = torch::softmax(x, 0);
  if (p.min_p > 0.0f) {
    probs.masked_fill_(probs < probs.max() * p.min_p, 0.0f);
    probs.div_(probs.sum());
  }
  return probs;
}

// One row that is not on the fast path: [id, logprob, top ids..., top logprobs...]
// as float64 on the device (ids are exact in a double). `logits` is [valid_vocab].
torch::Tensor SampleRow(const torch::Tensor& logits, const SampleInput& row) {
  const SamplingParams& p = *row.params;
  torch::Tensor scores = logits;
  if (HasPenalties(p)) {
    scores = ApplyPenalties(logits, p, OrEmpty(row.prompt_ids), OrEmpty(row.output_ids));
  }
  torch::Tensor id;  // [1] int64
  if (p.temperature == 0.0f) {
    id = scores.argmax().reshape({1});
  } else {
    id = SelectByUniform(FilteredProbs(scores, p), row.rng->NextUniform());
  }
  torch::Tensor logprobs = torch::log_softmax(logits, 0);
  std::vector<torch::Tensor> parts = {id.to(torch::kDouble),
                                      logprobs.index_select(0, id).to(torch::kDouble)};
  const int64_t k = std::min<int64_t>(row.top_logprobs, logits.size(0));
  if (k > 0) {
    auto [values, indices] = logprobs.topk(k);
    parts.push_back(indices.to(torch::kDouble));
    parts.push_back(values.to(torch::kDouble));
  }
  return torch::cat(parts);
}

// The fast rows of `logits` [batch, valid_vocab] float32: [n, 2] float64 of
// (argmax id, its logprob).
torch::Tensor SampleGreedyRows(const torch::Tensor& logits, const std::vector<int64_t>& rows) {
  torch::Tensor x = logits;
  if (static_cast<int64_t>(rows.size()) != logits.size(0)) {
    x = logits.index_select(0, torch::tensor(rows, torch::kLong).to(logits.device()));
  }
  torch::Tensor ids = x.argmax(1, /*keepdim=*/true);                        // [n, 1]
  torch::Tensor logprobs = x.gather(1, ids) - x.logsumexp(1, /*keepdim=*/true);  // [n, 1]
  return torch::cat({ids.to(torch::kDouble), logprobs.to(torch::kDouble)}, 1);
}

}  // namespace

absl::Status ValidateSamplingParams(const SamplingParams& p, int top_logprobs) {
  auto bad = [](const char* field, const char* range, double value) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " must be ", range, ", got ", value));
  };
  if (!std::isfinite(p.temperature) || p.temperature < 0.0f) {
    return bad("temperature", "finite and >= 0", p.temperature);
  }
  if (p.top_k < 0) return bad("top_k", ">= 0", p.top_k);
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) return bad("top_p", "in (0, 1]", p.top_p);
  if (!(p.min_p >= 0.0f && p.min_p <= 1.0f)) return bad("min_p", "in [0, 1]", p.min_p);
  if (!std::isfinite(p.repetition_penalty) || p.repetition_penalty <= 0.0f) {
    return bad("repetition_penalty", "finite and > 0", p.repetition_penalty);
  }
  if (!(p.presence_penalty >= -2.0f && p.presence_penalty <= 2.0f)) {
    return bad("presence_penalty", "in [-2, 2]", p.presence_penalty);
  }
  if (!(p.frequency_penalty >= -2.0f && p.frequency_penalty <= 2.0f)) {
    return bad("frequency_penalty", "in [-2, 2]", p.frequency_penalty);
  }
  if (top_logprobs < 0 || top_logprobs > kMaxTopLogprobs) {
    return bad("top_logprobs", "in [0, 20]", top_logprobs);
  }
  return absl::OkStatus();
}

torch::Tensor ApplyPenalties(const torch::Tensor& logits, const SamplingParams& p,
                             const std::vector<int>& prompt_ids,
                             const std::vector<int>& output_ids) {
  torch::Tensor out = logits.to(torch::kFloat, /*non_blocking=*/false, /*copy=*/true);
  const int64_t n = out.size(0);
  if (HasRepetitionPenalty(p)) {
    // Each id once or many times: every copy writes the same value.
    torch::Tensor ids = IdTensor({&prompt_ids, &output_ids}, n, out.device());
    if (ids.numel() > 0) {
      torch::Tensor seen = out.index_select(0, ids);
      seen = torch::where(seen > 0, seen / p.repetition_penalty, seen * p.repetition_penalty);
      out.index_copy_(0, ids, seen);
    }
  }
  if (HasCountPenalty(p)) {
    torch::Tensor ids = IdTensor({&output_ids}, n, out.device());
    if (ids.numel() > 0) {
      torch::Tensor counts = torch::zeros_like(out).index_add_(
          0, ids, torch::ones({ids.numel()}, out.options()));  // [n]
      out -= counts * p.frequency_penalty + (counts > 0).to(torch::kFloat) * p.presence_penalty;
    }
  }
  return out;
}

torch::Tensor SelectByUniform(const torch::Tensor& probs, double u) {
  const int64_t n = probs.size(0);
  torch::Tensor cdf = probs.to(torch::kDouble).cumsum(0);  // [n]
  // u < 1, so u * total < total: some id always qualifies (clamp for NaN input).
  torch::Tensor target = cdf.narrow(0, n - 1, 1) * u;      // [1]
  return torch::searchsorted(cdf, target, /*out_int32=*/false, /*right=*/true)
      .clamp_max(n - 1);
}

torch::Tensor ComputeProbs(const torch::Tensor& logits, const SamplingParams& params,
                           const std::vector<int>& prompt_ids,
                           const std::vector<int>& output_ids, int valid_vocab) {
  ThrowIfError(CheckLogits(logits, 1, valid_vocab, "ComputeProbs"));
  SequenceRng unused(0);
  SampleInput row{&params, &prompt_ids, &output_ids, &unused, 0};
  ThrowIfError(CheckRow(row, "ComputeProbs", logits.size(0)));

  torch::Tensor x = logits.narrow(0, 0, valid_vocab).to(torch::kFloat);
  if (HasPenalties(params)) x = ApplyPenalties(x, params, prompt_ids, output_ids);
  torch::Tensor probs;
  if (params.temperature == 0.0f) {
    probs = torch::zeros_like(x).scatter_(0, x.argmax().reshape({1}), 1.0);
  } else {
    probs = FilteredProbs(x, params);
  }
  torch::Tensor out = torch::zeros({logits.size(0)}, x.options());
  out.narrow(0, 0, valid_vocab).copy_(probs);
  return out;
}

std::vector<TokenInfo> SampleBatch(const torch::Tensor& logits,
                                   const std::vector<SampleInput>& rows, int valid_vocab) {
  ThrowIfError(CheckLogits(logits, 2, valid_vocab, "SampleBatch"));
  TORCH_CHECK(logits.size(0) == static_cast<int64_t>(rows.size()), "SampleBatch: logits has ",
              logits.size(0), " rows but ", rows.size(), " SampleInputs were given");
  std::vector<int64_t> fast;
  for (size_t r = 0; r < rows.size(); ++r) {
    ThrowIfError(CheckRow(rows[r], absl::StrCat("SampleBatch: rows[", r, "]"), logits.size(1)));
    if (IsFastGreedy(rows[r])) fast.push_back(static_cast<int64_t>(r));
  }
  if (rows.empty()) return {};

  // Step 1: ids >= valid_vocab are cut off (a view, no copy for float32).
  const torch::Tensor x = logits.narrow(1, 0, valid_vocab).to(torch::kFloat);
  std::vector<torch::Tensor> parts;  // float64, flattened, in the order unpacked below
  if (!fast.empty()) parts.push_back(SampleGreedyRows(x, fast).reshape({-1}));
  for (size_t r = 0; r < rows.size(); ++r) {
    if (!IsFastGreedy(rows[r])) parts.push_back(SampleRow(x[r], rows[r]));
  }
  // The one device-to-host copy.
  const torch::Tensor host = torch::cat(parts).to(torch::kCPU).contiguous();
  const double* data = host.data_ptr<double>();

  std::vector<TokenInfo> out(rows.size());
  for (int64_t r : fast) {
    out[r].id = static_cast<int>(data[0]);
    out[r].logprob = static_cast<float>(data[1]);
    data += 2;
  }
  for (size_t r = 0; r < rows.size(); ++r) {
    if (IsFastGreedy(rows[r])) continue;
    out[r].id = static_cast<int>(data[0]);
    out[r].logprob = static_cast<float>(data[1]);
    data += 2;
    const int k = std::min(rows[r].top_logprobs, valid_vocab);
    for (int i = 0; i < k; ++i) {
      out[r].top_logprobs.push_back({static_cast<int>(data[i]), static_cast<float>(data[k + i])});
    }
    data += 2 * k;
  }
  return out;
}

int SampleOne(const torch::Tensor& logits, const SampleInput& row, int valid_vocab,
              TokenInfo* info) {
  ThrowIfError(CheckLogits(logits, 1, valid_vocab, "SampleOne"));
  std::vector<TokenInfo> infos = SampleBatch(logits.unsqueeze(0), {row}, valid_vocab);
  const int id = infos[0].id;
  if (info != nullptr) *info = std::move(infos[0]);
  return id;
}

}  // namespace streamgen
