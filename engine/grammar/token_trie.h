// The vocabulary as a prefix tree of token bytes, in preorder arrays so that a
// walk is a loop over nodes that skips a whole subtree by jumping to its end
// (the layout llguidance's token trie uses).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "engine/grammar/constraint.h"

namespace streamgen {
namespace grammar {

struct TokenTrie {
  // Per node, in preorder: its byte, its depth (the length of the prefix it
  // stands for, >= 1), the index after its subtree.
  std::vector<uint8_t> byte;
  std::vector<uint16_t> depth;
  std::vector<uint32_t> end;
  // Token ids ending at node i: ids[first_id[i], first_id[i + 1]); the ids of
  // a subtree [i, end[i]) are ids[first_id[i], first_id[end[i]]).
  std::vector<uint32_t> first_id;  // size nodes + 1
  std::vector<int32_t> ids;
  int max_depth = 0;

  int size() const { return static_cast<int>(byte.size()); }

  // Every non-special token with at least one byte (tokens longer than 65535
  // bytes are left out: never allowed).
  static std::shared_ptr<const TokenTrie> Build(const TokenVocabulary& vocab);
  // Build, shared by every constraint compiled for the same vocabulary.
  static std::shared_ptr<const TokenTrie> ForVocabulary(
      const std::shared_ptr<const TokenVocabulary>& vocab);
};

}  // namespace grammar
}  // namespace streamgen
