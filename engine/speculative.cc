#include "engine/speculative.h"

#include <algorithm>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "engine/model_builder.h"

namespace streamgen {

std::vector<int> ProposePromptLookup(const std::vector<int>& tokens, int k, int max_ngram,
                                     int min_ngram) {
  const int len = static_cast<int>(tokens.size());
  if (k < 1) return {};
  for (int n = std::min(max_ngram, len - 1); n >= std::max(min_ngram, 1); --n) {
    const int suffix = len - n;
    // Latest match first (a copy in progress continues from where it is), but
    // one near the end has few tokens after it: take the latest match with k
    // followers, else the one with the most (a looping output's earliest).
    int best = -1;
    int best_follow = 0;
    for (int j = suffix - 1; j >= 0; --j) {
      if (!std::equal(tokens.begin() + j, tokens.begin() + j + n, tokens.begin() + suffix)) {
        continue;
      }
      const int follow = std::min(k, len - (j + n));
      if (follow > best_follow) {
        best = j;
        best_follow = follow;
        if (follow == k) break;
      }
    }
    if (best >= 0) {
      return std::vector<int>(tokens.begin() + best + n, tokens.begin() + best + n + best_follow);
    }
  }
  return {};
}

void DraftLength::Update(int proposed, int accepted) {
  if (fixed_ > 0 || proposed < 1) return;
  if (accepted >= proposed) {
    k_ = std::min(k_ + 1, kMaxDraftTokens);
  } else if (2 * accepted < proposed) {
    k_ = std::max(k_ - 1, kMinDraftTokens);
  }
}

VerifyResult VerifyDrafts(const torch::Tensor& logits, const std::vector<int>& drafts,
                          const SampleInput& row, int valid_vocab) {
  const int64_t k = static_cast<int64_t>(drafts.size());
  TORCH_CHECK(logits.dim() == 2 && logits.size(0) == k + 1, "VerifyDrafts: logits ",
              logits.sizes(), " for ", k, " drafts (expected ", k + 1, " rows)");
  // Row i sees the output the plain decode at that position would see: the
  // accepted drafts appended (repetition, frequency and presence penalties).
  std::vector<int> output = row.output_ids != nullptr ? *row.output_ids : std::vector<int>();
  SampleInput at = row;
  at.output_ids = &output;
  VerifyResult result;
  for (int64_t i = 0; i <= k; ++i) {
    TokenInfo info;
    const int id = SampleOne(logits[i], at, valid_vocab, &info);
    result.tokens.push_back(std::move(info));
    if (i == k || id != drafts[i]) break;
    ++result.accepted;
    output.push_back(id);
  }
  return result;
}

}  // namespace streamgen

// ---- DraftModel ----

namespace streamgen {

absl::StatusOr<std::unique_ptr<DraftModel>> DraftModel::Load(const std::string& dir,
                                                             const ModelOptions& model_options,
                                                             const Tokenizer& target_tokenizer,
                                                             const ModelConfig& target_config,
                                                             int num_blocks, int block_size) {
  auto differs = [&dir](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat(
        "draft model ", dir, ": ", parts...,
        ": a draft must share the target's tokenizer (the same ids for the same text)"));
  };
  ModelOptions options = model_options;
  options.cuda_graphs = false;  // its steps are small and few; eager keeps it simple
  SG_ASSIGN_OR_RETURN(std::unique_ptr<LlamaModel> model, LlamaModel::Load(dir, options));
  EngineOptions tokenizer_options;
  tokenizer_options.model_dir = dir;
  SG_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer,
                      LoadModelTokenizer(tokenizer_options, model->config()));
  if (tokenizer->piece_count() != target_tokenizer.piece_count()) {
    return differs("its tokenizer has ", tokenizer->piece_count(), " pieces, the target's ",
                   target_tokenizer.piece_count());
  }
  for (int id = 0; id < tokenizer->piece_count(); ++id) {
    if (tokenizer->IdToPiece(id) != target_tokenizer.IdToPiece(id)) {
      return differs("piece ", id, " is '", tokenizer->IdToPiece(id), "', the target's '",
                     target_tokenizer.IdToPiece(id), "'");
    }
  }
  const ModelConfig& c = model->config();
  if (c.bos_token_id != target_config.bos_token_id || c.eos_token_ids != target_config.eos_token_ids) {
    return differs("its BOS / EOS ids differ from the target's");
  }
  return std::unique_ptr<DraftModel>(new DraftModel(std::move(model), num_blocks, block_size));
}

DraftModel::DraftModel(std::unique_ptr<LlamaModel> model, int num_blocks, int block_size)
    : model_(std::move(model)),
      pool_(model_->NewKvPool(num_blocks, block_size)),
      blocks_(num_blocks, block_size, /*prefix_caching=*/false) {}

void DraftModel::Remove(uint64_t id) {
  if (fed_.erase(id) > 0) blocks_.RemoveSequence(id);
}

void DraftModel::Propose(const std::vector<Request>& requests, int valid_vocab, float p_min) {
  const int context = model_->config().max_position_embeddings;
  const int vocab = std::min(valid_vocab, model_->config().vocab_size);
  // The sequences that draft, and each one's next input chunk.
  std::vector<const Request*> active;
  std::vector<SeqChunk> chunks;
  std::vector<int> wants;  // drafts each active sequence makes
  for (const Request& r : requests) {
    r.drafts->clear();
    const std::vector<int>& tokens = *r.tokens;
    const int len = static_cast<int>(tokens.size());
    auto [it, fresh] = fed_.try_emplace(r.id);
    if (fresh) blocks_.AddSequence(r.id, len, {});
    std::vector<int>& fed = it->second;
    // Keep the longest prefix of what was fed that is still the sequence's
    // (drafts it rejected are not), and at most len - 1 positions: the newest
    // token is always fed again, its logits give the first draft.
    size_t keep = 0;
    const size_t limit = std::min(fed.size(), tokens.size() - 1);
    while (keep < limit && fed[keep] == tokens[keep]) ++keep;
    fed.resize(keep);
    blocks_.TruncateSlots(r.id, static_cast<int64_t>(keep));
    // Positions [keep, len - 1 + k) are written: the catch-up and k - 1 drafts.
    const int k = std::min(r.k, context - len + 1);
    const int64_t end = len - 1 + k;
    if (k < 1 || blocks_.BlocksFor(end) - static_cast<int>(blocks_.BlockTable(r.id).size()) >
                     blocks_.num_free_blocks()) {
      continue;  // no room: this sequence decodes plainly
    }
    blocks_.AllocateSlots(r.id, end);
    active.push_back(&r);
    wants.push_back(k);
    chunks.push_back(SeqChunk{std::vector<int>(tokens.begin() + keep, tokens.end()),
                              static_cast<int64_t>(keep), &blocks_.BlockTable(r.id)});
    fed.insert(fed.end(), tokens.begin() + keep, tokens.end());
  }
  // Greedy steps: step j gives draft j + 1 of every sequence that wants it.
  while (!active.empty()) {
    torch::Tensor logits = model_->Step(chunks, &pool_).narrow(1, 0, vocab);  // [active, vocab]
    // The argmax and, with a confidence stop, its probability under the draft
    // (softmax over the valid ids, in float32; 1 without a stop: no softmax):
    // one host copy of [active, 2] (ids below 2^24 are exact in float32).
    torch::Tensor ids, top;
    if (p_min > 0) {
      std::tie(top, ids) = logits.to(torch::kFloat32).softmax(1).max(1);
    } else {
      ids = logits.argmax(1);
      top = torch::ones({ids.size(0)}, logits.options().dtype(torch::kFloat32));
    }
    const torch::Tensor picked = torch::stack({ids.to(torch::kFloat32), top}, 1).to(torch::kCPU);
    const auto picked_a = picked.accessor<float, 2>();
    std::vector<const Request*> next;
    std::vector<SeqChunk> next_chunks;
    std::vector<int> next_wants;
    for (size_t i = 0; i < active.size(); ++i) {
      const Request& r = *active[i];
      const int id = static_cast<int>(picked_a[i][0]);
      // Confidence stop: a draft the draft model itself doubts is rarely the
      // target's token, and each one costs a draft step and a verify row.
      if (picked_a[i][1] < p_min) continue;
      r.drafts->push_back(id);
      if (static_cast<int>(r.drafts->size()) == wants[i]) continue;
      std::vector<int>& fed = fed_.at(r.id);
      next_wants.push_back(wants[i]);
      next_chunks.push_back(SeqChunk{{id}, static_cast<int64_t>(fed.size()),
                                     &blocks_.BlockTable(r.id)});
      fed.push_back(id);
      next.push_back(&r);
    }
    active = std::move(next);
    chunks = std::move(next_chunks);
    wants = std::move(next_wants);
  }
}

}  // namespace streamgen
