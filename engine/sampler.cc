#include "engine/sampler.h"
#include "engine/request_validation.h"

#include <torch/cuda.h>

// Not torch/torch.h: see engine/model/llama_model.h.
#include <torch/types.h>
#include <torch/utils.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"

namespace streamgen {
namespace {

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
// Everything step 2 does (penalties and logit_bias).
bool HasPenalties(const SamplingParams& p) {
  return HasRepetitionPenalty(p) || HasCountPenalty(p) || !p.logit_bias.empty();
}

// Greedy, no penalties or bias, no alternatives: handled by the batched
// argmax (a constrained row is too: its mask is applied to the batch first).
bool IsFastGreedy(const SampleInput& row) {
  return row.params->temperature == 0.0f && !HasPenalties(*row.params) && row.top_logprobs == 0;
}

const std::vector<int>& OrEmpty(const std::vector<int>* ids) {
  static const std::vector<int> kEmpty;
  return ids ? *ids : kEmpty;
}

// A small host tensor on `device`. To CUDA through pinned memory and a
// non-blocking copy: a plain copy would wait for the queued forward pass.
torch::Tensor ToDevice(const torch::Tensor& host, const torch::Device& device) {
  if (device.is_cpu()) return host;
  return host.pin_memory().to(device, /*non_blocking=*/true);
}

// The ids of `lists` inside [0, limit), as an int64 tensor on `device`.
torch::Tensor IdTensor(std::initializer_list<const std::vector<int>*> lists, int64_t limit,
                       const torch::Device& device) {
  std::vector<int64_t> ids;
  for (const std::vector<int>* list : lists) {
    for (int id : *list) {
      if (id >= 0 && id < limit) ids.push_back(id);
    }
  }
  return ToDevice(torch::tensor(ids, torch::kLong), device);
}

// HF-style, in place on `logits` [n]: every id seen in the prompt or the
// output: logit > 0 ? logit / penalty : logit * penalty. An id seen many times
// is written many times with the same value.
void ApplyRepetitionPenalty(torch::Tensor* logits, const SamplingParams& p,
                            const std::vector<int>& prompt_ids,
                            const std::vector<int>& output_ids) {
  torch::Tensor ids = IdTensor({&prompt_ids, &output_ids}, logits->size(0), logits->device());
  if (ids.numel() == 0) return;
  torch::Tensor seen = logits->index_select(0, ids);
  seen = torch::where(seen > 0, seen / p.repetition_penalty, seen * p.repetition_penalty);
  logits->index_copy_(0, ids, seen);
}

// OpenAI-style, in place on `logits` [n]: each distinct output id once,
// logit -= presence + frequency * count (counted on the host: outputs are short).
void ApplyCountPenalties(torch::Tensor* logits, const SamplingParams& p,
                         const std::vector<int>& output_ids) {
  std::vector<int> sorted;
  for (int id : output_ids) {
    if (id >= 0 && id < logits->size(0)) sorted.push_back(id);
  }
  std::sort(sorted.begin(), sorted.end());
  std::vector<int64_t> ids;
  std::vector<float> amounts;
  for (size_t i = 0, end = 0; i < sorted.size(); i = end) {
    while (end < sorted.size() && sorted[end] == sorted[i]) ++end;
    ids.push_back(sorted[i]);
    amounts.push_back(p.presence_penalty + p.frequency_penalty * static_cast<float>(end - i));
  }
  if (ids.empty()) return;
  torch::Tensor index = ToDevice(torch::tensor(ids, torch::kLong), logits->device());
  torch::Tensor amount = ToDevice(torch::tensor(amounts, torch::kFloat), logits->device());
  logits->index_copy_(0, index, logits->index_select(0, index) - amount);
}

// In place on `logits` [n]: logit_bias added (ids >= n ignored).
void ApplyLogitBias(torch::Tensor* logits, const SamplingParams& p) {
  std::vector<int64_t> ids;
  std::vector<float> amounts;
  for (const auto& [id, bias] : p.logit_bias) {
    if (id >= 0 && id < logits->size(0)) {
      ids.push_back(id);
      amounts.push_back(bias);
    }
  }
  if (ids.empty()) return;
  torch::Tensor index = ToDevice(torch::tensor(ids, torch::kLong), logits->device());
  torch::Tensor amount = ToDevice(torch::tensor(amounts, torch::kFloat), logits->device());
  logits->index_add_(0, index, amount);
}

std::string ShapeString(const torch::Tensor& t) {
  return absl::StrCat("[", absl::StrJoin(t.sizes(), ", "), "]");
}

absl::Status CheckIds(const std::vector<int>& ids, const std::string& name, int64_t vocab) {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, "[", i, "] = ", ids[i], " is outside [0, ", vocab, ")"));
    }
  }
  return absl::OkStatus();
}

// Params in range, and the ids that a penalty will read inside [0, vocab).
absl::Status CheckRow(const SampleInput& row, const std::string& name, int64_t vocab) {
  if (row.params == nullptr) return absl::InvalidArgumentError(name + ".params is null");
  const SamplingParams& p = *row.params;
  // A precondition here: requests were validated at Submit with the same
  // rules (engine/request_validation.h); this only guards direct callers.
  absl::Status status = ValidateSampling(p, row.top_logprobs);
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
  if (!p.logit_bias.empty()) {
    absl::Status bias = ValidateLogitBias(p.logit_bias, static_cast<int>(vocab));
    if (!bias.ok()) return absl::InvalidArgumentError(absl::StrCat(name, ": ", bias.message()));
  }
  return absl::OkStatus();
}

absl::Status CheckLogits(const torch::Tensor& logits, int64_t dims, int valid_vocab,
                         const std::string& who) {
  if (!logits.defined()) return absl::InvalidArgumentError(who + ": logits is undefined");
  if (logits.dim() != dims) {
    return absl::InvalidArgumentError(absl::StrCat(who, ": logits must be ",
                                                   dims == 2 ? "[batch, vocab]" : "[vocab]",
                                                   ", got sizes ", ShapeString(logits)));
  }
  if (!logits.is_floating_point()) {
    return absl::InvalidArgumentError(absl::StrCat(who, ": logits must be floating point, got ",
                                                   c10::toString(logits.scalar_type())));
  }
  const int64_t vocab = logits.size(dims - 1);
  if (valid_vocab < 1 || valid_vocab > vocab) {
    return absl::InvalidArgumentError(absl::StrCat(who, ": valid_vocab must be in [1, ", vocab,
                                                   "] (logits' vocab), got ", valid_vocab));
  }
  return absl::OkStatus();
}

// A constraint's mask must leave some id below valid_vocab: all -inf would
// make every probability NaN. Read on the host, where the mask is.
absl::Status CheckAllowed(const uint32_t* allowed, int valid_vocab, const std::string& name) {
  const int full = valid_vocab / 32;
  for (int w = 0; w < full; ++w) {
    if (allowed[w] != 0) return absl::OkStatus();
  }
  const int rest = valid_vocab % 32;
  if (rest > 0 && (allowed[full] & ((uint32_t{1} << rest) - 1)) != 0) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(name, ": the constraint's mask allows no token below valid_vocab ", valid_vocab));
}

// Sets row[i] to -inf for every id i < n whose bit in `allowed` is clear
// (the layout of SampleInput::allowed). Words with every bit set (most of a
// permissive mask) are skipped whole.
void MaskDisallowedOnHost(float* row, const uint32_t* allowed, int n) {
  const float kNegInf = -std::numeric_limits<float>::infinity();
  for (int w = 0; w * 32 < n; ++w) {
    const uint32_t bits = allowed[w];
    if (bits == ~uint32_t{0}) continue;
    float* word = row + w * 32;
    const int count = std::min(32, n - w * 32);
    for (int b = 0; b < count; ++b) {
      if (((bits >> b) & 1) == 0) word[b] = kNegInf;
    }
  }
}

// Step 6 by one stable sort of all of `probs` (ties: the lower id first).
torch::Tensor TopPMaskBySort(const torch::Tensor& probs, double top_p) {
  auto [sorted, order] = torch::sort(probs, /*stable=*/true, /*dim=*/0, /*descending=*/true);
  torch::Tensor mass = sorted.to(torch::kDouble);
  torch::Tensor keep = (mass.cumsum(0) - mass) < top_p - kTopPSlack;  // mass before each
  keep.narrow(0, 0, 1).fill_(true);  // the most likely token always stays
  return torch::zeros_like(keep).scatter_(0, order, keep);
}

// Step 6 on the CPU, where a full sort of a large vocabulary costs
// milliseconds: the K most likely ids (K = 64, 512, ... below n / 8) plus
// every id tied with the K-th, until their mass reaches top_p; then the stable
// sort of just those. They are a prefix of the full sort's order (in id order
// among ties), so the result is the same.
torch::Tensor TopPMaskByCandidates(const torch::Tensor& probs, double top_p) {
  const int64_t n = probs.size(0);
  for (int64_t k = 64; k < n / 8; k *= 8) {
    const float kth =
        std::get<0>(probs.topk(k, 0, /*largest=*/true, /*sorted=*/false)).min().item<float>();
    torch::Tensor ids = torch::nonzero((probs >= kth) & (probs > 0)).squeeze(1);  // ascending
    torch::Tensor candidates = probs.index_select(0, ids);
    if (candidates.sum(torch::kDouble).item<double>() < top_p - kTopPSlack) continue;
    torch::Tensor keep = torch::zeros({n}, probs.options().dtype(torch::kBool));
    return keep.index_fill_(0, ids.masked_select(TopPMaskBySort(candidates, top_p)), true);
  }
  return TopPMaskBySort(probs, top_p);
}

// What step 8 samples from: probs[j] is the probability of id ids[j] (ids
// ascending), or of id j where ids is undefined (every id a candidate).
struct Distribution {
  torch::Tensor ids;    // [m] int64, or undefined
  torch::Tensor probs;  // [m] float32, summing to 1
};

// Steps 4-7 on penalised logits [n] float32. After top-k only the k
// candidates are carried on (cheap on every device).
Distribution FilteredProbs(const torch::Tensor& logits, const SamplingParams& p) {
  Distribution d;
  torch::Tensor x = logits / p.temperature;
  if (p.top_k > 0 && p.top_k < x.size(0)) {
    auto [values, ids] = x.topk(p.top_k, 0, /*largest=*/true, /*sorted=*/false);
    auto [ascending, order] = ids.sort();
    d.ids = ascending;
    x = values.index_select(0, order);
  }
  d.probs = torch::softmax(x, 0);
  if (p.top_p < 1.0f) {
    torch::Tensor keep = TopPMask(d.probs, p.top_p, /*by_sort=*/!d.probs.is_cpu());
    d.probs.masked_fill_(keep.logical_not(), 0.0f);
  }
  if (p.min_p > 0.0f) d.probs.masked_fill_(d.probs < d.probs.max() * p.min_p, 0.0f);
  if (p.top_p < 1.0f || p.min_p > 0.0f) d.probs.div_(d.probs.sum());
  return d;
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
    Distribution d = FilteredProbs(scores, p);
    id = SelectByUniform(d.probs, row.rng->NextUniform());
    if (d.ids.defined()) id = d.ids.index_select(0, id);
  }
  // log_softmax of the raw logits, only where needed: logit - logsumexp.
  torch::Tensor lse = logits.logsumexp(0, /*keepdim=*/true);  // [1]
  std::vector<torch::Tensor> parts = {id.to(torch::kDouble),
                                      (logits.index_select(0, id) - lse).to(torch::kDouble)};
  const int64_t k = std::min<int64_t>(row.top_logprobs, logits.size(0));
  if (k > 0) {
    auto [values, indices] = logits.topk(k);
    parts.push_back(indices.to(torch::kDouble));
    parts.push_back((values - lse).to(torch::kDouble));
  }
  return torch::cat(parts);
}

// The fast rows of `logits` [batch, valid_vocab] float32: [n, 2] float64 of
// (argmax id, its logprob).
torch::Tensor SampleGreedyRows(const torch::Tensor& logits, const std::vector<int64_t>& rows) {
  torch::Tensor x = logits;
  if (static_cast<int64_t>(rows.size()) != logits.size(0)) {
    x = logits.index_select(0, ToDevice(torch::tensor(rows, torch::kLong), logits.device()));
  }
  // max over a dim returns the first (lowest) index of a maximal value.
  auto [best, ids] = x.max(1, /*keepdim=*/true);                     // [n, 1] each
  torch::Tensor logprobs = best - x.logsumexp(1, /*keepdim=*/true);  // [n, 1]
  return torch::cat({ids.to(torch::kDouble), logprobs.to(torch::kDouble)}, 1);
}

}  // namespace

torch::Tensor ApplyPenalties(const torch::Tensor& logits, const SamplingParams& p,
                             const std::vector<int>& prompt_ids,
                             const std::vector<int>& output_ids) {
  torch::Tensor out = logits.to(torch::kFloat, /*non_blocking=*/false, /*copy=*/true);
  if (HasRepetitionPenalty(p)) ApplyRepetitionPenalty(&out, p, prompt_ids, output_ids);
  if (HasCountPenalty(p)) ApplyCountPenalties(&out, p, output_ids);
  ApplyLogitBias(&out, p);
  return out;
}

torch::Tensor AllowedMask(const uint32_t* allowed, int64_t n, const torch::Device& device) {
  const int64_t words = (n + 31) / 32;
  // The words go up as they are (4 bytes each, not n bools) and are unpacked
  // on the device: bit b of word w is id 32 * w + b. An arithmetic shift of a
  // negative int32 keeps the low bits right, and only the low bit is read.
  torch::Tensor packed = ToDevice(
      torch::from_blob(const_cast<uint32_t*>(allowed), {words}, torch::kInt).clone(), device);
  torch::Tensor shifts = torch::arange(32, torch::TensorOptions().dtype(torch::kInt).device(device));
  torch::Tensor bits = packed.unsqueeze(1).bitwise_right_shift(shifts).bitwise_and(1);  // [words, 32]
  return bits.reshape({-1}).narrow(0, 0, n).to(torch::kBool);
}

torch::Tensor TopPMask(const torch::Tensor& probs, double top_p, bool by_sort) {
  return by_sort ? TopPMaskBySort(probs, top_p) : TopPMaskByCandidates(probs, top_p);
}

torch::Tensor SelectByUniform(const torch::Tensor& probs, double u) {
  const int64_t n = probs.size(0);
  torch::Tensor cdf = probs.to(torch::kDouble).cumsum(0);  // [n]
  // u < 1, so u * total < total: some id always qualifies (clamp for NaN input).
  torch::Tensor target = cdf.narrow(0, n - 1, 1) * u;  // [1]
  return torch::searchsorted(cdf, target, /*out_int32=*/false, /*right=*/true).clamp_max(n - 1);
}

torch::Tensor ComputeProbs(const torch::Tensor& logits, const SamplingParams& params,
                           const std::vector<int>& prompt_ids, const std::vector<int>& output_ids,
                           int valid_vocab) {
  ThrowIfError(CheckLogits(logits, 1, valid_vocab, "ComputeProbs"));
  SequenceRng unused(0);
  SampleInput row{&params, &prompt_ids, &output_ids, &unused, 0};
  ThrowIfError(CheckRow(row, "ComputeProbs", logits.size(0)));

  torch::Tensor x = logits.narrow(0, 0, valid_vocab).to(torch::kFloat);
  if (HasPenalties(params)) x = ApplyPenalties(x, params, prompt_ids, output_ids);
  torch::Tensor out = torch::zeros({logits.size(0)}, x.options());
  if (params.temperature == 0.0f) return out.index_fill_(0, x.argmax().reshape({1}), 1.0f);
  Distribution d = FilteredProbs(x, params);
  if (d.ids.defined()) return out.index_copy_(0, d.ids, d.probs);
  out.narrow(0, 0, valid_vocab).copy_(d.probs);
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

  // Step 1: ids >= valid_vocab are cut off (a view, no copy for float32), and
  // each constrained row's disallowed ids get -inf (on a copy: the caller's
  // logits stay as they were).
  torch::Tensor x = logits.narrow(1, 0, valid_vocab).to(torch::kFloat);
  for (size_t r = 0; r < rows.size(); ++r) {
    if (rows[r].allowed == nullptr) continue;
    if (x.data_ptr() == logits.data_ptr()) x = x.clone();
    ThrowIfError(CheckAllowed(rows[r].allowed, valid_vocab, absl::StrCat("SampleBatch: rows[", r, "]")));
    if (x.is_cpu() && x.is_contiguous()) {
      // On the host the bits are applied where they are: a loop over the
      // words instead of the ~8 tensor ops of AllowedMask (0.3 ms a row at
      // 32k ids; bench/README.md, "Constrained decoding").
      MaskDisallowedOnHost(x.data_ptr<float>() + r * valid_vocab, rows[r].allowed, valid_vocab);
    } else {
      x[r].masked_fill_(AllowedMask(rows[r].allowed, valid_vocab, x.device()).logical_not(),
                        -std::numeric_limits<float>::infinity());
    }
  }
  std::vector<torch::Tensor> parts;  // float64, flattened, in the order unpacked below
  if (!fast.empty()) parts.push_back(SampleGreedyRows(x, fast).reshape({-1}));
  for (size_t r = 0; r < rows.size(); ++r) {
    if (!IsFastGreedy(rows[r])) parts.push_back(SampleRow(x[r], rows[r]));
  }
  // The one device-to-host copy: on CUDA into pinned memory, queued on the
  // current (compute) stream behind the sampling ops, then one wait for it.
  const torch::Tensor packed = torch::cat(parts);
  torch::Tensor host;
  if (packed.is_cuda()) {
    host = torch::empty(packed.sizes(), packed.options().device(torch::kCPU).pinned_memory(true));
    host.copy_(packed, /*non_blocking=*/true);
    torch::cuda::synchronize(packed.device().index());
  } else {
    host = packed.contiguous();
  }
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
