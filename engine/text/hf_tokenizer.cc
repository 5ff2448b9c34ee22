#include "engine/text/hf_tokenizer.h"

#include <sys/stat.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "engine/text/hf_text.h"
#include "engine/text/hf_tokenizer_json.h"

namespace streamgen {
namespace {

using hf::Piece;
using nlohmann::json;

bool IsWordChar(char32_t c) { return hf::IsAlphanumeric(c) || c == '_'; }

// The last character of s[0, end) (s valid UTF-8, end > 0 on a boundary).
char32_t LastChar(std::string_view s, size_t end) {
  size_t begin = end - 1;
  while (begin > 0 && (static_cast<unsigned char>(s[begin]) & 0xC0) == 0x80) --begin;
  return hf::NextCodePoint(s, &begin);
}

// Start of the whitespace run that ends at `end` (the library's
// space_leftmost_at_end).
size_t WhitespaceRunStart(std::string_view s, size_t end) {
  while (end > 0) {
    size_t begin = end - 1;
    while (begin > 0 && (static_cast<unsigned char>(s[begin]) & 0xC0) == 0x80) --begin;
    size_t pos = begin;
    if (!hf::IsWhitespace(hf::NextCodePoint(s, &pos))) break;
    end = begin;
  }
  return end;
}

// End of the whitespace run that starts at `begin` (space_rightmost_at_start).
size_t WhitespaceRunEnd(std::string_view s, size_t begin) {
  while (begin < s.size()) {
    size_t pos = begin;
    if (!hf::IsWhitespace(hf::NextCodePoint(s, &pos))) break;
    begin = pos;
  }
  return begin;
}

// tokenizer_config.json's bos_token / eos_token: a string or {"content": ...}.
std::string TokenContent(const json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_object() && j.contains("content") && j["content"].is_string()) {
    return j["content"].get<std::string>();
  }
  return "";
}

// Whether component `j` is or contains (in a Sequence) one of type `type`.
bool HasComponent(const json& j, const std::string& type) {
  if (!j.is_object()) return false;
  if (j.value("type", std::string()) == type) return true;
  for (const char* key : {"decoders", "pretokenizers"}) {
    if (j.contains(key) && j[key].is_array()) {
      for (const json& part : j[key]) {
        if (HasComponent(part, type)) return true;
      }
    }
  }
  return false;
}

}  // namespace

void HfTokenizer::Trie::Insert(const std::string& s, int token) {
  int node = 0;
  for (unsigned char b : s) {
    auto& next = nodes[node].next;
    auto it = std::lower_bound(next.begin(), next.end(), std::pair<unsigned char, int>{b, -1});
    int child;
    if (it == next.end() || it->first != b) {
      child = static_cast<int>(nodes.size());
      next.insert(it, {b, child});
      nodes.emplace_back();  // invalidates `next`, not used after this
    } else {
      child = it->second;
    }
    node = child;
  }
  if (nodes[node].token < 0) nodes[node].token = token;
}

int HfTokenizer::Trie::LongestAt(std::string_view text, size_t pos, size_t* end) const {
  int node = 0, best = -1;
  for (size_t i = pos; i < text.size(); ++i) {
    const auto& next = nodes[node].next;
    const unsigned char b = static_cast<unsigned char>(text[i]);
    auto it = std::lower_bound(next.begin(), next.end(), std::pair<unsigned char, int>{b, -1});
    if (it == next.end() || it->first != b) break;
    node = it->second;
    if (nodes[node].token >= 0) {
      best = nodes[node].token;
      *end = i + 1;
    }
  }
  return best;
}

absl::StatusOr<std::unique_ptr<HfTokenizer>> HfTokenizer::Load(
    const std::string& tokenizer_json, const std::string& tokenizer_config_json) {
  struct stat st;
  if (::stat(tokenizer_json.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat("tokenizer file not found: ", tokenizer_json));
  }
  std::ifstream in(tokenizer_json, std::ios::binary);
  if (!S_ISREG(st.st_mode) || !in) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read tokenizer file ", tokenizer_json, ": not a readable file"));
  }
  std::string text(static_cast<size_t>(st.st_size), '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  SG_ASSIGN_OR_RETURN(auto tok, Parse(text, tokenizer_json));
  if (!tokenizer_config_json.empty() && ::stat(tokenizer_config_json.c_str(), &st) == 0) {
    std::ifstream cin(tokenizer_config_json, std::ios::binary);
    std::stringstream buf;
    buf << cin.rdbuf();
    json config = json::parse(buf.str(), nullptr, /*allow_exceptions=*/false);
    if (config.is_discarded() || !config.is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat(tokenizer_config_json, ": not a JSON object (malformed JSON?)"));
    }
    for (auto [key, out] :
         {std::pair{"bos_token", &tok->bos_id_}, std::pair{"eos_token", &tok->eos_id_}}) {
      if (!config.contains(key) || config[key].is_null()) continue;
      const std::string content = TokenContent(config[key]);
      *out = tok->PieceToId(content);
      if (*out < 0) {
        return absl::InvalidArgumentError(absl::StrCat(tokenizer_config_json, ": ", key, " '",
                                                       content, "' is not a token of ",
                                                       tokenizer_json));
      }
    }
  }
  return tok;
}

absl::StatusOr<std::unique_ptr<HfTokenizer>> HfTokenizer::Parse(std::string_view json_text,
                                                                const std::string& path) {
  const auto fail = [&](const absl::Status& s) {
    return absl::Status(s.code(), absl::StrCat(path, ": ", s.message()));
  };
  auto read = hf::ReadTokenizerJson(json_text);
  if (!read.ok()) return fail(read.status());
  const json& j = read->rest;
  if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object"));
  for (auto it = j.begin(); it != j.end(); ++it) {
    // truncation and padding are set per call by transformers (off for a
    // plain encode), so they are read and not applied.
    static const char* kKnown[] = {"version",      "truncation",     "padding",
                                   "added_tokens", "normalizer",     "pre_tokenizer",
                                   "model",        "post_processor", "decoder"};
    if (std::none_of(std::begin(kKnown), std::end(kKnown),
                     [&](const char* k) { return it.key() == k; })) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": unsupported field '", it.key(), "'"));
    }
  }
  if (!j.contains("model")) return absl::InvalidArgumentError(absl::StrCat(path, ": no 'model'"));
  std::unique_ptr<HfTokenizer> tok(new HfTokenizer());
  auto model = hf::BpeModel::Parse(j["model"], std::move(read->vocab), read->has_vocab,
                                   read->merges, read->has_merges);
  read->merges.clear();
  read->merges.shrink_to_fit();
  if (!model.ok()) return fail(model.status());
  tok->model_ = std::move(*model);
  auto normalizer = hf::ParseNormalizer(j.value("normalizer", json()), "normalizer");
  if (!normalizer.ok()) return fail(normalizer.status());
  tok->normalizer_ = std::move(*normalizer);
  auto pre = hf::ParsePreTokenizer(j.value("pre_tokenizer", json()), "pre_tokenizer");
  if (!pre.ok()) return fail(pre.status());
  tok->pre_tokenizer_ = std::move(*pre);
  auto decoder = hf::ParseDecoder(j.value("decoder", json()), "decoder");
  if (!decoder.ok()) return fail(decoder.status());
  tok->decoder_ = std::move(*decoder);
  tok->byte_level_ = HasComponent(j.value("decoder", json()), "ByteLevel") ||
                     HasComponent(j.value("pre_tokenizer", json()), "ByteLevel");
  tok->byte_runs_whole_ = HasComponent(j.value("decoder", json()), "ByteFallback");

  // Added tokens.
  const json& added = j.value("added_tokens", json::array());
  if (!added.is_array())
    return absl::InvalidArgumentError(absl::StrCat(path, ": 'added_tokens' must be an array"));
  int size = tok->model_->size();
  int max_added = -1;  // the largest added token id so far
  for (size_t i = 0; i < added.size(); ++i) {
    const json& a = added[i];
    const std::string where = absl::StrCat(path, ": added_tokens[", i, "]");
    if (!a.is_object() || !a.contains("id") || !a["id"].is_number_unsigned() ||
        !a.contains("content") || !a["content"].is_string() ||
        a["content"].get<std::string>().empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": needs an id and a non-empty content"));
    }
    AddedToken t{
        a["id"].get<int>(), a["content"].get<std::string>(), false, false, false, false, false};
    for (auto [key, out] :
         {std::pair{"special", &t.special}, std::pair{"normalized", &t.normalized},
          std::pair{"lstrip", &t.lstrip}, std::pair{"rstrip", &t.rstrip},
          std::pair{"single_word", &t.single_word}}) {
      if (a.contains(key) && !a[key].is_boolean()) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": '", key, "' must be true or false"));
      }
      *out = a.value(key, false);
    }
    if (t.id > (1 << 30)) return absl::InvalidArgumentError(absl::StrCat(where, ": id too large"));
    // The id is the library's, not the file's (they agree in files the
    // library wrote): a repeated content is dropped, a content that is a
    // model piece takes the piece's id, any other the next free id.
    if (!tok->added_by_content_.emplace(t.content, -1).second) continue;
    const int piece = tok->model_->PieceToId(t.content);
    if (piece >= 0) {
      t.id = piece;
    } else {
      t.id = max_added >= tok->model_->size() ? max_added + 1 : tok->model_->size();
    }
    max_added = std::max(max_added, t.id);
    size = std::max(size, t.id + 1);
    tok->added_.push_back(std::move(t));
  }
  tok->id_to_token_.resize(size);
  tok->special_.assign(size, false);
  tok->added_id_.assign(size, false);
  for (int id = 0; id < tok->model_->size(); ++id)
    tok->id_to_token_[id] = tok->model_->IdToPiece(id);
  for (size_t i = 0; i < tok->added_.size(); ++i) {
    const AddedToken& t = tok->added_[i];
    tok->id_to_token_[t.id] = t.content;
    tok->special_[t.id] = t.special;
    tok->added_id_[t.id] = true;
    tok->added_by_content_[t.content] = t.id;
    if (t.normalized) {
      std::string content = t.content;
      if (tok->normalizer_ != nullptr) tok->normalizer_->Normalize(&content);
      if (!content.empty()) tok->normalized_trie_.Insert(content, static_cast<int>(i));
      tok->has_normalized_added_ = true;
    } else {
      tok->raw_trie_.Insert(t.content, static_cast<int>(i));
      tok->has_raw_added_ = true;
    }
  }
  auto post = hf::ParsePostProcessor(j.value("post_processor", json()), "post_processor",
                                     [&](const std::string& s) { return tok->PieceToId(s); });
  if (!post.ok()) return fail(post.status());
  tok->post_ = std::move(*post);
  for (const auto& ids : {tok->post_.prefix, tok->post_.suffix}) {
    for (int id : ids) {
      if (id < 0 || id >= size) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": post_processor: special token id ", id, " is out of range"));
      }
    }
  }
  return tok;
}

const std::string& HfTokenizer::IdToPiece(int id) const {
  static const std::string kEmpty;
  return id >= 0 && id < vocab_size() ? id_to_token_[id] : kEmpty;
}

int HfTokenizer::PieceToId(std::string_view piece) const {
  auto it = added_by_content_.find(absl::string_view(piece.data(), piece.size()));
  if (it != added_by_content_.end()) return it->second;
  return model_->PieceToId(piece);
}

int HfTokenizer::ByteValue(int id) const {
  if (id < 0 || id >= vocab_size() || added_id_[id] || !model_->byte_fallback()) return -1;
  const std::string& t = id_to_token_[id];
  if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return -1;
  int v = 0;
  for (int k = 3; k < 5; ++k) {
    const char c = t[k];
    const int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
    if (d < 0) return -1;
    v = v * 16 + d;
  }
  return v;
}

bool HfTokenizer::TokenBytes(int id, std::string* bytes) const {
  bytes->clear();
  const int b = ByteValue(id);
  if (b >= 0) {
    bytes->push_back(static_cast<char>(b));
    return true;
  }
  if (!byte_level_ || id < 0 || id >= vocab_size() || added_id_[id]) return false;
  const std::string& t = id_to_token_[id];
  for (size_t pos = 0; pos < t.size();) {
    const int v = hf::CharToByte(hf::NextCodePoint(t, &pos));
    if (v < 0) return false;
    bytes->push_back(static_cast<char>(v));
  }
  return !bytes->empty();
}

void HfTokenizer::SplitOnAdded(const Piece& piece, const Trie& trie, bool parse_special,
                               std::vector<Piece>* out) const {
  const std::string& text = piece.text;
  size_t start_offset = 0;
  const auto push_text = [&](size_t begin, size_t end) {
    if (end > begin)
      out->push_back({text.substr(begin, end - begin), -1, piece.at_origin && begin == 0});
  };
  for (size_t pos = 0; pos < text.size();) {
    size_t end = 0;
    const int t = trie.LongestAt(text, pos, &end);
    if (t < 0) {
      ++pos;
      continue;
    }
    const AddedToken& token = added_[t];
    size_t start = pos, stop = end;
    pos = end;
    if (token.special && !parse_special) continue;
    if (token.single_word) {
      const bool start_space = start == 0 || !IsWordChar(LastChar(text, start));
      size_t p = stop;
      const bool stop_space = stop == text.size() || !IsWordChar(hf::NextCodePoint(text, &p));
      if (!start_space || !stop_space) continue;
    }
    if (token.lstrip) start = std::max(WhitespaceRunStart(text, start), start_offset);
    if (token.rstrip) stop = WhitespaceRunEnd(text, stop);
    if (start_offset < start) push_text(start_offset, start);
    out->push_back({token.content, token.id, false});
    start_offset = stop;
  }
  push_text(start_offset, text.size());
}

std::vector<int> HfTokenizer::Encode(std::string_view text, bool add_special_tokens,
                                     bool parse_special) const {
  std::vector<Piece> pieces;
  Piece whole{hf::IsValidUtf8(text) ? std::string(text) : hf::ToValidUtf8(text), -1, true};
  if (has_raw_added_) {
    SplitOnAdded(whole, raw_trie_, parse_special, &pieces);
  } else if (!whole.text.empty()) {
    pieces.push_back(std::move(whole));
  }
  std::vector<Piece> normalized;
  normalized.reserve(pieces.size());
  for (Piece& p : pieces) {
    if (p.id >= 0) {
      normalized.push_back(std::move(p));
      continue;
    }
    if (normalizer_ != nullptr) normalizer_->Normalize(&p.text);
    if (p.text.empty()) continue;
    if (has_normalized_added_) {
      SplitOnAdded(p, normalized_trie_, parse_special, &normalized);
    } else {
      normalized.push_back(std::move(p));
    }
  }
  if (pre_tokenizer_ != nullptr) pre_tokenizer_->PreTokenize(&normalized);
  std::vector<int> ids;
  ids.reserve(text.size() / 3 + 4);
  if (add_special_tokens) ids.insert(ids.end(), post_.prefix.begin(), post_.prefix.end());
  for (const Piece& p : normalized) {
    if (p.id >= 0) {
      ids.push_back(p.id);
    } else {
      model_->Tokenize(p.text, &ids);
    }
  }
  if (add_special_tokens) ids.insert(ids.end(), post_.suffix.begin(), post_.suffix.end());
  return ids;
}

std::string HfTokenizer::Decode(const std::vector<int>& ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int id : ids) {
    if (id < 0 || id >= vocab_size() || id_to_token_[id].empty()) continue;
    if (skip_special_tokens && special_[id]) continue;
    tokens.push_back(id_to_token_[id]);
  }
  if (decoder_ == nullptr) {
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (i > 0) out.push_back(' ');
      out += tokens[i];
    }
    return out;
  }
  decoder_->DecodeChain(&tokens);
  std::string out;
  for (const std::string& t : tokens) out += t;
  return out;
}

}  // namespace streamgen
