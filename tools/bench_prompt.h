// The synthetic prompts of the benchmarks (streamgen-client bench and
// streamgen-bench-engine), so that the engine-only and over-gRPC figures run
// the very same token ids. Header-only and dependency-free.
#pragma once

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

namespace streamgen {

// The prompt of call `index`: BOS (when the model has one) then ids drawn
// uniformly from [3, vocab) except BOS / EOS, seeded by (seed, index).
inline std::vector<int> BenchPrompt(uint64_t seed, int index, int prompt_tokens, int vocab,
                                    int bos_token_id, const std::vector<int>& eos_token_ids) {
  std::vector<int> ids;
  if (bos_token_id >= 0) ids.push_back(bos_token_id);
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ULL + static_cast<uint64_t>(index) + 1);
  std::uniform_int_distribution<int> draw(3, vocab - 1);
  while (static_cast<int>(ids.size()) < prompt_tokens) {
    int id = draw(rng);
    bool special = id == bos_token_id ||
                   std::find(eos_token_ids.begin(), eos_token_ids.end(), id) != eos_token_ids.end();
    if (!special) ids.push_back(id);
  }
  ids.resize(prompt_tokens);
  return ids;
}

// BenchPrompt whose first `shared` ids (BOS included) are the same for every
// call: a common "system prompt" that prefix caching can reuse.
inline std::vector<int> BenchPromptWithSharedPrefix(uint64_t seed, int index, int prompt_tokens,
                                                    int shared, int vocab, int bos_token_id,
                                                    const std::vector<int>& eos_token_ids) {
  std::vector<int> ids = BenchPrompt(seed, index, prompt_tokens, vocab, bos_token_id, eos_token_ids);
  if (shared > 0) {
    const std::vector<int> prefix =
        BenchPrompt(seed ^ 0x5ea7ed, -1, std::min(shared, prompt_tokens), vocab, bos_token_id,
                    eos_token_ids);
    std::copy(prefix.begin(), prefix.end(), ids.begin());
  }
  return ids;
}

}  // namespace streamgen
