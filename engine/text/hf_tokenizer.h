// A Hugging Face `tokenizer.json` tokenizer (the format of the Rust
// `tokenizers` library and transformers' "fast" tokenizers): added tokens,
// normalizer, pre-tokenizer, BPE model, post-processor and decoder, each as the
// library defines it (see hf_components.h for what is supported). Encode and
// Decode give the library's ids and text.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "engine/text/hf_bpe.h"
#include "engine/text/hf_components.h"

namespace streamgen {

// Immutable after Load: every method is const and thread-safe.
class HfTokenizer {
 public:
  // Loads `tokenizer_json` and, when `tokenizer_config_json` is not empty and
  // the file exists, reads its bos_token / eos_token. Errors name the file and
  // the component: NOT_FOUND when tokenizer.json does not exist,
  // INVALID_ARGUMENT for malformed JSON or anything unsupported.
  static absl::StatusOr<std::unique_ptr<HfTokenizer>> Load(
      const std::string& tokenizer_json, const std::string& tokenizer_config_json = "");
  // Parses tokenizer.json's text; `path` names it in errors.
  static absl::StatusOr<std::unique_ptr<HfTokenizer>> Parse(std::string_view json_text,
                                                            const std::string& path);

  // HF's encode(text, add_special_tokens). `parse_special`: whether special
  // added tokens written in `text` ("<|im_start|>") become their ids, as HF
  // does by default; false treats them as plain text (HF's
  // encode_special_tokens=True), the safe choice for untrusted text. Added
  // tokens that are not special always match. Invalid UTF-8 in `text` is
  // read as U+FFFD.
  std::vector<int> Encode(std::string_view text, bool add_special_tokens, bool parse_special) const;

  // HF's decode(ids, skip_special_tokens): ids outside the vocabulary are
  // skipped.
  std::string Decode(const std::vector<int>& ids, bool skip_special_tokens) const;

  // One more than the largest id (model vocabulary and added tokens).
  int vocab_size() const { return static_cast<int>(id_to_token_.size()); }
  // The token's text ("Ġthe", "<0x0A>", "<|im_start|>"), "" for an unknown id.
  const std::string& IdToPiece(int id) const;
  // -1 when there is no such token.
  int PieceToId(std::string_view piece) const;
  // An added token marked special.
  bool IsSpecial(int id) const { return id >= 0 && id < vocab_size() && special_[id]; }
  // The raw bytes token `id` stands for when those need not be whole UTF-8
  // characters (a byte-level model's tokens, <0xNN> byte-fallback pieces),
  // else false.
  bool TokenBytes(int id, std::string* bytes) const;
  // The byte of a <0xNN> byte-fallback piece, or -1.
  int ByteValue(int id) const;

  // Whether the decoder turns a run of <0xNN> pieces into text as a whole
  // (ByteFallback: the run's UTF-8, or one U+FFFD per byte when any of it is
  // invalid), so a stream must hold a run back until it ends.
  bool decodes_byte_runs_whole() const { return byte_runs_whole_; }

  // From tokenizer_config.json's bos_token / eos_token (-1 when absent).
  int bos_id() const { return bos_id_; }
  int eos_id() const { return eos_id_; }
  // Whether Encode(text, add_special_tokens=true) adds anything.
  bool adds_special_tokens() const { return !post_.prefix.empty() || !post_.suffix.empty(); }

 private:
  struct AddedToken {
    int id;
    std::string content;
    bool special, normalized, lstrip, rstrip, single_word;
  };
  // A byte trie over added tokens' contents (leftmost-longest matching).
  struct Trie {
    struct Node {
      std::vector<std::pair<unsigned char, int>> next;  // sorted by byte
      int token = -1;                                   // index into added_, or -1
    };
    std::vector<Node> nodes{1};
    void Insert(const std::string& s, int token);
    // Longest token starting at text[pos] (index into added_), its end in *end.
    int LongestAt(std::string_view text, size_t pos, size_t* end) const;
  };

  HfTokenizer() = default;
  // The library's AddedVocabulary::find_matches + split: non-token text and
  // tokens of `trie` in `piece`, in order.
  void SplitOnAdded(const hf::Piece& piece, const Trie& trie, bool parse_special,
                    std::vector<hf::Piece>* out) const;

  std::unique_ptr<hf::BpeModel> model_;
  std::unique_ptr<hf::Normalizer> normalizer_;       // may be null
  std::unique_ptr<hf::PreTokenizer> pre_tokenizer_;  // may be null
  std::unique_ptr<hf::Decoder> decoder_;             // may be null
  hf::PostProcessor post_;

  std::vector<AddedToken> added_;
  absl::flat_hash_map<std::string, int> added_by_content_;  // content -> id
  Trie raw_trie_;                                           // added tokens with normalized=false
  Trie normalized_trie_;                                    // added tokens with normalized=true
  bool has_normalized_added_ = false;
  bool has_raw_added_ = false;

  std::vector<std::string> id_to_token_;  // model pieces, overridden by added tokens
  std::vector<bool> special_;             // per id
  std::vector<bool> added_id_;            // per id: an added token
  bool byte_level_ = false;               // the decoder is ByteLevel-based
  bool byte_runs_whole_ = false;          // the decoder has ByteFallback
  int bos_id_ = -1;
  int eos_id_ = -1;
};

}  // namespace streamgen
