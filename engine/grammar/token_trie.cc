#include "engine/grammar/token_trie.h"

#include <algorithm>
#include <map>
#include <mutex>
#include <numeric>
#include <string_view>

namespace streamgen {
namespace grammar {

std::shared_ptr<const TokenTrie> TokenTrie::Build(const TokenVocabulary& vocab) {
  std::vector<int32_t> order;
  for (int id = 0; id < vocab.size(); ++id) {
    const size_t n = vocab.bytes[id].size();
    if (n == 0 || n > 65535 || (id < static_cast<int>(vocab.special.size()) && vocab.special[id])) {
      continue;
    }
    order.push_back(id);
  }
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return vocab.bytes[a] < vocab.bytes[b];
  });
  auto trie = std::make_shared<TokenTrie>();
  std::vector<uint32_t> open;  // the nodes on the current path, by depth - 1
  std::string_view prev;
  for (int32_t id : order) {
    const std::string_view s = vocab.bytes[id];
    size_t lcp = 0;
    while (lcp < s.size() && lcp < prev.size() && s[lcp] == prev[lcp]) ++lcp;
    // Close the nodes below the common prefix.
    while (open.size() > lcp) {
      trie->end[open.back()] = static_cast<uint32_t>(trie->byte.size());
      open.pop_back();
    }
    for (size_t d = lcp; d < s.size(); ++d) {
      open.push_back(static_cast<uint32_t>(trie->byte.size()));
      trie->byte.push_back(static_cast<uint8_t>(s[d]));
      trie->depth.push_back(static_cast<uint16_t>(d + 1));
      trie->end.push_back(0);
      trie->first_id.push_back(static_cast<uint32_t>(trie->ids.size()));
    }
    // Sorted order: equal strings come together, right after their node was made.
    trie->ids.push_back(id);
    trie->max_depth = std::max<int>(trie->max_depth, static_cast<int>(s.size()));
    prev = s;
  }
  while (!open.empty()) {
    trie->end[open.back()] = static_cast<uint32_t>(trie->byte.size());
    open.pop_back();
  }
  trie->first_id.push_back(static_cast<uint32_t>(trie->ids.size()));
  return trie;
}

std::shared_ptr<const TokenTrie> TokenTrie::ForVocabulary(
    const std::shared_ptr<const TokenVocabulary>& vocab) {
  struct Entry {
    std::weak_ptr<const TokenVocabulary> vocab;
    std::shared_ptr<const TokenTrie> trie;
  };
  static std::mutex mu;
  static std::map<const TokenVocabulary*, Entry>* cache = new std::map<const TokenVocabulary*, Entry>();
  {
    std::lock_guard<std::mutex> lock(mu);
    for (auto it = cache->begin(); it != cache->end();) {
      it = it->second.vocab.expired() ? cache->erase(it) : std::next(it);
    }
    auto it = cache->find(vocab.get());
    if (it != cache->end() && it->second.vocab.lock() == vocab) return it->second.trie;
  }
  std::shared_ptr<const TokenTrie> trie = Build(*vocab);
  std::lock_guard<std::mutex> lock(mu);
  (*cache)[vocab.get()] = Entry{vocab, trie};
  return trie;
}

}  // namespace grammar
}  // namespace streamgen
