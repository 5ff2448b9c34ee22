#include "engine/speculative.h"

#include <algorithm>

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
