#include "engine/text/hf_bpe.h"

#include <algorithm>
#include <queue>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/text/hf_text.h"

namespace streamgen::hf {
namespace {

using nlohmann::json;

// Cached words: up to this many, each shorter than kMaxCachedWord bytes.
constexpr size_t kCacheCapacity = 10000;
constexpr size_t kMaxCachedWord = 256;

absl::Status Bad(const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("model: ", what));
}

uint64_t PairKey(int left, int right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

// A symbol of a word being merged: a doubly linked list over a vector.
struct Symbol {
  int id;
  int prev;   // index, -1 at the start
  int next;   // index, -1 at the end
  bool gone;  // merged into its left neighbour
};

struct Candidate {
  int rank;
  int pos;
  int new_id;
  // std::priority_queue pops the largest: invert so the lowest rank, then the
  // leftmost position, comes first (the Rust library's Merge ordering).
  bool operator<(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
};

}  // namespace

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::Parse(
    const json& j, std::vector<std::pair<std::string, int64_t>> vocab, bool has_vocab,
    const std::vector<std::pair<std::string, std::string>>& merges, bool has_merges) {
  if (!j.is_object()) return Bad("must be an object");
  const std::string type = j.value("type", std::string("BPE"));
  if (type != "BPE") {
    return Bad(absl::StrCat("unsupported model type '", type, "' (supported: BPE)"));
  }
  for (auto it = j.begin(); it != j.end(); ++it) {
    static const char* kKnown[] = {"type",
                                   "dropout",
                                   "unk_token",
                                   "continuing_subword_prefix",
                                   "end_of_word_suffix",
                                   "fuse_unk",
                                   "byte_fallback",
                                   "ignore_merges",
                                   "vocab",
                                   "merges"};
    bool known = false;
    for (const char* k : kKnown) known = known || it.key() == k;
    if (!known) return Bad(absl::StrCat("unsupported option '", it.key(), "' of BPE"));
  }
  if (j.contains("dropout") && !j["dropout"].is_null() &&
      !(j["dropout"].is_number() && j["dropout"].get<double>() == 0.0)) {
    return Bad("BPE dropout is not supported (it makes encoding random)");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (j.contains(key) && !j[key].is_null() &&
        !(j[key].is_string() && j[key].get<std::string>().empty())) {
      return Bad(absl::StrCat("BPE ", key, " is not supported"));
    }
  }
  std::unique_ptr<BpeModel> m(new BpeModel());
  auto flag = [&](const char* key, bool* out) -> absl::Status {
    if (!j.contains(key) || j[key].is_null()) return absl::OkStatus();
    if (!j[key].is_boolean()) return Bad(absl::StrCat("'", key, "' must be true or false"));
    *out = j[key].get<bool>();
    return absl::OkStatus();
  };
  for (auto [key, out] :
       {std::pair{"fuse_unk", &m->fuse_unk_}, std::pair{"byte_fallback", &m->byte_fallback_},
        std::pair{"ignore_merges", &m->ignore_merges_}}) {
    absl::Status s = flag(key, out);
    if (!s.ok()) return s;
  }

  if (!has_vocab) return Bad("'vocab' is missing or not an object");
  if (vocab.empty()) return Bad("'vocab' is empty");
  m->vocab_.reserve(vocab.size());
  int max_id = -1;
  for (auto& [piece, id] : vocab) {
    if (id < 0 || id > (1 << 30))
      return Bad(absl::StrCat("vocab: piece '", piece, "' has no valid id"));
    max_id = std::max(max_id, static_cast<int>(id));
    m->vocab_.emplace(std::move(piece), static_cast<int>(id));
  }
  m->pieces_.resize(max_id + 1);
  for (const auto& [piece, id] : m->vocab_) m->pieces_[id] = piece;

  if (j.contains("unk_token") && !j["unk_token"].is_null()) {
    if (!j["unk_token"].is_string()) return Bad("'unk_token' must be a string");
    const std::string unk = j["unk_token"].get<std::string>();
    m->unk_id_ = m->PieceToId(unk);
    if (m->unk_id_ < 0) return Bad(absl::StrCat("unk_token '", unk, "' is not in the vocabulary"));
  }
  for (int b = 0; b < 256; ++b) m->byte_ids_[b] = m->PieceToId(absl::StrFormat("<0x%02X>", b));

  if (!has_merges) return Bad("'merges' is missing or not an array");
  // The ids of each merge's pieces: three lookups per merge, the bulk of a
  // large vocabulary's load, split over a few threads (the vocabulary is only
  // read here). An entry of -1 marks a merge whose pieces are missing.
  struct Resolved {
    int left, right, merged;
  };
  std::vector<Resolved> resolved(merges.size());
  const auto resolve = [&](size_t begin, size_t end) {
    std::string joined;
    for (size_t rank = begin; rank < end; ++rank) {
      const auto& [left, right] = merges[rank];
      joined.assign(left).append(right);
      resolved[rank] = {m->PieceToId(left), m->PieceToId(right), m->PieceToId(joined)};
    }
  };
  const size_t threads =
      merges.size() < 100000
          ? 1
          : std::min<size_t>(4, std::max(1u, std::thread::hardware_concurrency()));
  std::vector<std::thread> workers;
  const size_t chunk = (merges.size() + threads - 1) / threads;
  for (size_t t = 1; t < threads; ++t) {
    workers.emplace_back(resolve, std::min(merges.size(), t * chunk),
                         std::min(merges.size(), (t + 1) * chunk));
  }
  resolve(0, std::min(merges.size(), chunk));
  for (std::thread& w : workers) w.join();
  m->merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [a, b, merged] = resolved[rank];
    if (a < 0 || b < 0 || merged < 0) {
      const auto& [left, right] = merges[rank];
      return Bad(absl::StrCat("merges[", rank, "]: '",
                              a < 0   ? left
                              : b < 0 ? right
                                      : left + right,
                              "' is not in the vocabulary"));
    }
    m->merges_.emplace(PairKey(a, b), std::pair{static_cast<int>(rank), merged});
  }
  return m;
}

int BpeModel::PieceToId(std::string_view piece) const {
  auto it = vocab_.find(absl::string_view(piece.data(), piece.size()));
  return it == vocab_.end() ? -1 : it->second;
}

const std::string& BpeModel::IdToPiece(int id) const {
  static const std::string kEmpty;
  return id >= 0 && id < size() ? pieces_[id] : kEmpty;
}

void BpeModel::Tokenize(std::string_view word, std::vector<int>* ids) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    const int id = PieceToId(word);
    if (id >= 0) {
      ids->push_back(id);
      return;
    }
  }
  const bool cacheable = word.size() < kMaxCachedWord;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mu_);
    auto it = cache_.find(absl::string_view(word.data(), word.size()));
    if (it != cache_.end()) {
      ids->insert(ids->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int> out;
  MergeWord(word, &out);
  ids->insert(ids->end(), out.begin(), out.end());
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mu_);
    if (cache_.size() < kCacheCapacity) cache_.emplace(std::string(word), std::move(out));
  }
}

void BpeModel::MergeWord(std::string_view word, std::vector<int>* ids) const {
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  const auto add = [&](int id) {
    const int index = static_cast<int>(symbols.size());
    if (index > 0) symbols.back().next = index;
    symbols.push_back({id, index - 1, -1, false});
  };
  int unk_pending = -1;  // the unk id waiting to be added (fuse_unk), or -1
  for (size_t pos = 0; pos < word.size();) {
    const size_t begin = pos;
    pos += std::min<size_t>(Utf8Length(static_cast<unsigned char>(word[pos])), word.size() - pos);
    const std::string_view ch = word.substr(begin, pos - begin);
    const int id = PieceToId(ch);
    if (id >= 0) {
      if (unk_pending >= 0) add(unk_pending);
      unk_pending = -1;
      add(id);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (unsigned char b : ch) all = all && byte_ids_[b] >= 0;
      if (all) {
        // As the Rust library does, a pending unk is not flushed here.
        for (unsigned char b : ch) add(byte_ids_[b]);
        continue;
      }
    }
    if (unk_id_ >= 0) {
      if (unk_pending >= 0 && !fuse_unk_) add(unk_pending);
      unk_pending = unk_id_;
    }
  }
  if (unk_pending >= 0) add(unk_pending);

  std::priority_queue<Candidate> queue;
  const auto push = [&](int pos) {
    const int next = symbols[pos].next;
    if (next < 0) return;
    auto it = merges_.find(PairKey(symbols[pos].id, symbols[next].id));
    if (it != merges_.end()) queue.push({it->second.first, pos, it->second.second});
  };
  for (int i = 0; i + 1 < static_cast<int>(symbols.size()); ++i) push(i);
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& s = symbols[top.pos];
    if (s.gone || s.next < 0) continue;
    const Symbol& right = symbols[s.next];
    auto it = merges_.find(PairKey(s.id, right.id));
    if (it == merges_.end() || it->second.second != top.new_id) continue;
    const int right_index = s.next;
    s.id = top.new_id;
    s.next = right.next;
    symbols[right_index].gone = true;
    if (s.next >= 0) symbols[s.next].prev = top.pos;
    if (s.prev >= 0) push(s.prev);
    push(top.pos);
  }
  for (const Symbol& s : symbols) {
    if (!s.gone) ids->push_back(s.id);
  }
}

}  // namespace streamgen::hf
