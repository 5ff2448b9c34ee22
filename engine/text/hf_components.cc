#include "engine/text/hf_components.h"

#include <algorithm>
#include <array>
#include <functional>
#include <initializer_list>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "engine/text/hf_text.h"

namespace streamgen::hf {
namespace {

using nlohmann::json;

absl::Status Bad(const std::string& where, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(where, ": ", what));
}

// Refuses keys of `j` outside `allowed` (an option this code does not know
// could change the output).
absl::Status CheckKeys(const json& j, const std::string& where,
                       std::initializer_list<const char*> allowed) {
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (std::none_of(allowed.begin(), allowed.end(),
                     [&](const char* k) { return it.key() == k; })) {
      return Bad(where, absl::StrCat("unsupported option '", it.key(), "' of ",
                                     j.value("type", std::string("?"))));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> GetString(const json& j, const std::string& where, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string())
    return Bad(where, absl::StrCat("'", key, "' must be a string"));
  return it->get<std::string>();
}

absl::StatusOr<bool> GetBool(const json& j, const std::string& where, const char* key, bool dflt) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  if (!it->is_boolean()) return Bad(where, absl::StrCat("'", key, "' must be true or false"));
  return it->get<bool>();
}

// The first character of a one-character string option (Metaspace's replacement).
absl::StatusOr<char32_t> GetChar(const json& j, const std::string& where, const char* key) {
  SG_ASSIGN_OR_RETURN(std::string s, GetString(j, where, key));
  size_t pos = 0;
  if (s.empty() || !IsValidUtf8(s))
    return Bad(where, absl::StrCat("'", key, "' must be one character"));
  const char32_t c = NextCodePoint(s, &pos);
  if (pos != s.size()) return Bad(where, absl::StrCat("'", key, "' must be one character"));
  return c;
}

// {"String": "..."} or {"Regex": "..."}.
absl::StatusOr<std::unique_ptr<Pattern>> ParsePattern(const json& j, const std::string& where) {
  if (!j.is_object() || j.size() != 1) {
    return Bad(where, "'pattern' must be {\"String\": ...} or {\"Regex\": ...}");
  }
  if (j.contains("String") && j["String"].is_string()) {
    return Pattern::Literal(j["String"].get<std::string>());
  }
  if (j.contains("Regex") && j["Regex"].is_string()) {
    auto p = Pattern::Regex(j["Regex"].get<std::string>());
    if (!p.ok()) return Bad(where, std::string(p.status().message()));
    return p;
  }
  return Bad(where, "'pattern' must be {\"String\": ...} or {\"Regex\": ...}");
}

std::string Utf8(char32_t c) {
  std::string s;
  AppendUtf8(c, &s);
  return s;
}

// ---- splitting (the library's NormalizedString::split) ----

enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

absl::StatusOr<Behavior> ParseBehavior(const json& j, const std::string& where) {
  SG_ASSIGN_OR_RETURN(std::string b, GetString(j, where, "behavior"));
  if (b == "Removed") return Behavior::kRemoved;
  if (b == "Isolated") return Behavior::kIsolated;
  if (b == "MergedWithPrevious") return Behavior::kMergedWithPrevious;
  if (b == "MergedWithNext") return Behavior::kMergedWithNext;
  if (b == "Contiguous") return Behavior::kContiguous;
  return Bad(where, absl::StrCat("unknown split behavior '", b, "'"));
}

// The kept [begin, end) ranges of `text` split at `spans` with `behavior`.
std::vector<std::pair<size_t, size_t>> ApplyBehavior(std::vector<Span> spans, Behavior behavior) {
  std::vector<std::pair<size_t, size_t>> out;
  switch (behavior) {
    case Behavior::kIsolated:
      for (const Span& s : spans) out.emplace_back(s.begin, s.end);
      break;
    case Behavior::kRemoved:
      for (const Span& s : spans) {
        if (!s.is_match) out.emplace_back(s.begin, s.end);
      }
      break;
    case Behavior::kMergedWithPrevious: {
      bool previous_match = false;
      for (const Span& s : spans) {
        if (s.is_match && !previous_match && !out.empty()) {
          out.back().second = s.end;
        } else {
          out.emplace_back(s.begin, s.end);
        }
        previous_match = s.is_match;
      }
      break;
    }
    case Behavior::kMergedWithNext: {
      bool previous_match = false;
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->is_match && !previous_match && !out.empty()) {
          out.back().first = it->begin;
        } else {
          out.emplace_back(it->begin, it->end);
        }
        previous_match = it->is_match;
      }
      std::reverse(out.begin(), out.end());
      break;
    }
    case Behavior::kContiguous: {
      bool previous_match = false;
      for (const Span& s : spans) {
        if (s.is_match == previous_match && !out.empty()) {
          out.back().second = s.end;
        } else {
          out.emplace_back(s.begin, s.end);
        }
        previous_match = s.is_match;
      }
      break;
    }
  }
  return out;
}

// Replaces each non-token piece by what `split` makes of it; drops empty pieces.
template <typename Fn>
void SplitPieces(std::vector<Piece>* pieces, Fn split) {
  std::vector<Piece> out;
  out.reserve(pieces->size());
  for (Piece& p : *pieces) {
    if (p.id >= 0) {
      out.push_back(std::move(p));
      continue;
    }
    for (Piece& q : split(p)) {
      if (!q.text.empty()) out.push_back(std::move(q));
    }
  }
  *pieces = std::move(out);
}

std::vector<Piece> SplitPiece(const Piece& p, const Pattern& pattern, Behavior behavior,
                              bool invert) {
  std::vector<Span> spans = pattern.FindMatches(p.text);
  if (invert) {
    for (Span& s : spans) s.is_match = !s.is_match;
  }
  std::vector<Piece> out;
  for (const auto& [begin, end] : ApplyBehavior(std::move(spans), behavior)) {
    out.push_back({p.text.substr(begin, end - begin), -1, p.at_origin && begin == 0});
  }
  return out;
}

// ---- normalizers ----

class SequenceNormalizer : public Normalizer {
 public:
  std::vector<std::unique_ptr<Normalizer>> parts;
  void Normalize(std::string* text) const override {
    for (const auto& n : parts) n->Normalize(text);
  }
};

class UnicodeNormalizer : public Normalizer {
 public:
  explicit UnicodeNormalizer(NormalForm form) : form_(form) {}
  void Normalize(std::string* text) const override { *text = hf::Normalize(*text, form_); }

 private:
  NormalForm form_;
};

class LowercaseNormalizer : public Normalizer {
 public:
  void Normalize(std::string* text) const override { *text = Lowercase(*text); }
};

class ReplaceNormalizer : public Normalizer {
 public:
  ReplaceNormalizer(std::unique_ptr<Pattern> pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void Normalize(std::string* text) const override {
    std::string out;
    out.reserve(text->size());
    for (const Span& s : pattern_->FindMatches(*text)) {
      if (s.is_match) {
        out += content_;
      } else {
        out.append(*text, s.begin, s.end - s.begin);
      }
    }
    *text = std::move(out);
  }

 private:
  std::unique_ptr<Pattern> pattern_;
  std::string content_;
};

class PrependNormalizer : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prepend) : prepend_(std::move(prepend)) {}
  void Normalize(std::string* text) const override {
    if (!text->empty()) text->insert(0, prepend_);
  }

 private:
  std::string prepend_;
};

class StripNormalizer : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  void Normalize(std::string* text) const override {
    size_t begin = 0, end = text->size();
    if (left_) {
      for (size_t pos = 0; pos < end;) {
        const size_t at = pos;
        if (!IsWhitespace(NextCodePoint(*text, &pos))) break;
        begin = pos;
        (void)at;
      }
    }
    if (right_) {
      // Walk forward remembering where the trailing whitespace run starts.
      size_t run = end;
      for (size_t pos = begin; pos < end;) {
        const size_t at = pos;
        if (IsWhitespace(NextCodePoint(*text, &pos))) {
          if (run == end) run = at;
        } else {
          run = end;
        }
      }
      end = run;
    }
    *text = text->substr(begin, end - begin);
  }

 private:
  bool left_, right_;
};

// ---- pre-tokenizers ----

class SequencePreTokenizer : public PreTokenizer {
 public:
  std::vector<std::unique_ptr<PreTokenizer>> parts;
  void PreTokenize(std::vector<Piece>* pieces) const override {
    for (const auto& p : parts) p->PreTokenize(pieces);
  }
};

// Split, and the pre-tokenizers that are a split by a fixed pattern (Digits,
// Punctuation, Whitespace, WhitespaceSplit).
class SplitPreTokenizer : public PreTokenizer {
 public:
  SplitPreTokenizer(std::unique_ptr<Pattern> pattern, Behavior behavior, bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}
  void PreTokenize(std::vector<Piece>* pieces) const override {
    SplitPieces(pieces,
                [&](const Piece& p) { return SplitPiece(p, *pattern_, behavior_, invert_); });
  }

 private:
  std::unique_ptr<Pattern> pattern_;
  Behavior behavior_;
  bool invert_;
};

// GPT-2's pre-tokenizer regex (the ByteLevel pre-tokenizer's use_regex).
constexpr char kGpt2Regex[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, std::unique_ptr<Pattern> regex)
      : add_prefix_space_(add_prefix_space), regex_(std::move(regex)) {}
  void PreTokenize(std::vector<Piece>* pieces) const override {
    SplitPieces(pieces, [&](const Piece& p) {
      Piece q = p;
      if (add_prefix_space_ && (q.text.empty() || q.text[0] != ' ')) q.text.insert(0, " ");
      if (regex_ == nullptr) return std::vector<Piece>{std::move(q)};
      return SplitPiece(q, *regex_, Behavior::kIsolated, false);
    });
    for (Piece& p : *pieces) {
      if (p.id >= 0) continue;
      std::string mapped;
      mapped.reserve(p.text.size() * 2);
      for (unsigned char b : p.text) AppendUtf8(ByteToChar(b), &mapped);
      p.text = std::move(mapped);
    }
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<Pattern> regex_;  // null without use_regex
};

enum class PrependScheme { kAlways, kFirst, kNever };

absl::StatusOr<PrependScheme> ParsePrependScheme(const json& j, const std::string& where) {
  if (j.contains("prepend_scheme")) {
    SG_ASSIGN_OR_RETURN(std::string s, GetString(j, where, "prepend_scheme"));
    if (s == "always") return PrependScheme::kAlways;
    if (s == "first") return PrependScheme::kFirst;
    if (s == "never") return PrependScheme::kNever;
    return Bad(where, absl::StrCat("unknown prepend_scheme '", s, "'"));
  }
  // The older form: add_prefix_space.
  SG_ASSIGN_OR_RETURN(bool add, GetBool(j, where, "add_prefix_space", true));
  return add ? PrependScheme::kAlways : PrependScheme::kNever;
}

class MetaspacePreTokenizer : public PreTokenizer {
 public:
  MetaspacePreTokenizer(char32_t replacement, PrependScheme scheme, bool split)
      : replacement_(Utf8(replacement)), scheme_(scheme), split_(split) {
    splitter_ = Pattern::Literal(replacement_);
  }
  void PreTokenize(std::vector<Piece>* pieces) const override {
    SplitPieces(pieces, [&](const Piece& p) {
      Piece q;
      q.at_origin = p.at_origin;
      for (char c : p.text) {
        if (c == ' ') {
          q.text += replacement_;
        } else {
          q.text.push_back(c);
        }
      }
      const bool starts = q.text.compare(0, replacement_.size(), replacement_) == 0;
      if (!starts && (scheme_ == PrependScheme::kAlways ||
                      (scheme_ == PrependScheme::kFirst && q.at_origin))) {
        q.text.insert(0, replacement_);
      }
      if (!split_) return std::vector<Piece>{std::move(q)};
      return SplitPiece(q, *splitter_, Behavior::kMergedWithNext, false);
    });
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
  bool split_;
  std::unique_ptr<Pattern> splitter_;
};

// ---- decoders ----

class SequenceDecoder : public Decoder {
 public:
  std::vector<std::unique_ptr<Decoder>> parts;
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (const auto& d : parts) d->DecodeChain(tokens);
  }
};

class ByteLevelDecoder : public Decoder {
 public:
  void DecodeChain(std::vector<std::string>* tokens) const override {
    std::string bytes;
    for (const std::string& t : *tokens) {
      const size_t mark = bytes.size();
      bool all = true;
      for (size_t pos = 0; pos < t.size();) {
        const int b = CharToByte(NextCodePoint(t, &pos));
        if (b < 0) {
          all = false;
          break;
        }
        bytes.push_back(static_cast<char>(b));
      }
      if (!all) {
        bytes.resize(mark);
        bytes += t;
      }
    }
    *tokens = {ToValidUtf8(bytes)};
  }
};

class MetaspaceDecoder : public Decoder {
 public:
  MetaspaceDecoder(char32_t replacement, PrependScheme scheme)
      : replacement_(replacement), scheme_(scheme) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (size_t i = 0; i < tokens->size(); ++i) {
      const std::string& t = (*tokens)[i];
      std::string out;
      for (size_t pos = 0; pos < t.size();) {
        const char32_t c = NextCodePoint(t, &pos);
        if (c != replacement_) {
          AppendUtf8(c, &out);
        } else if (!(i == 0 && scheme_ != PrependScheme::kNever)) {
          out.push_back(' ');
        }
      }
      (*tokens)[i] = std::move(out);
    }
  }

 private:
  char32_t replacement_;
  PrependScheme scheme_;
};

class ReplaceDecoder : public Decoder {
 public:
  ReplaceDecoder(std::unique_ptr<Pattern> pattern, std::string content)
      : normalizer_(std::move(pattern), std::move(content)) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (std::string& t : *tokens) normalizer_.Normalize(&t);
  }

 private:
  ReplaceNormalizer normalizer_;  // the same find-and-replace
};

class ByteFallbackDecoder : public Decoder {
 public:
  void DecodeChain(std::vector<std::string>* tokens) const override {
    std::vector<std::string> out;
    std::string bytes;
    const auto flush = [&] {
      if (bytes.empty()) return;
      if (IsValidUtf8(bytes)) {
        out.push_back(bytes);
      } else {
        for (size_t k = 0; k < bytes.size(); ++k) out.push_back("\xEF\xBF\xBD");
      }
      bytes.clear();
    };
    for (std::string& t : *tokens) {
      const int b = ParseByteToken(t);
      if (b >= 0) {
        bytes.push_back(static_cast<char>(b));
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    *tokens = std::move(out);
  }

  // "<0x0A>" -> 10, else -1.
  static int ParseByteToken(const std::string& t) {
    if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return -1;
    int v = 0;
    for (int k = 3; k < 5; ++k) {
      const char c = t[k];
      int d = -1;
      if (c >= '0' && c <= '9') d = c - '0';
      if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
      if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
      if (d < 0) return -1;
      v = v * 16 + d;
    }
    return v;
  }
};

class FuseDecoder : public Decoder {
 public:
  void DecodeChain(std::vector<std::string>* tokens) const override {
    std::string all;
    for (const std::string& t : *tokens) all += t;
    *tokens = {std::move(all)};
  }
};

class StripDecoder : public Decoder {
 public:
  StripDecoder(char32_t content, size_t start, size_t stop)
      : content_(content), start_(start), stop_(stop) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (std::string& t : *tokens) {
      std::vector<char32_t> chars;
      for (size_t pos = 0; pos < t.size();) chars.push_back(NextCodePoint(t, &pos));
      size_t begin = 0;
      for (size_t i = 0; i < start_ && i < chars.size() && chars[i] == content_; ++i) begin = i + 1;
      size_t end = chars.size();
      for (size_t i = 0; i < stop_ && i < chars.size(); ++i) {
        const size_t index = chars.size() - i - 1;
        if (chars[index] != content_) break;
        end = index;
      }
      std::string out;
      for (size_t i = begin; i < end; ++i) AppendUtf8(chars[i], &out);
      t = std::move(out);
    }
  }

 private:
  char32_t content_;
  size_t start_, stop_;
};

std::string Item(const std::string& where, size_t i) { return absl::StrCat(where, "[", i, "]"); }

}  // namespace

char32_t ByteToChar(unsigned char b) {
  static const std::array<char32_t, 256> table = [] {
    std::array<char32_t, 256> t{};
    int n = 0;
    for (int c = 0; c < 256; ++c) {
      const bool printable = (c >= '!' && c <= '~') || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE);
      t[c] = printable ? c : 256 + n++;
    }
    return t;
  }();
  return table[b];
}

int CharToByte(char32_t c) {
  static const std::array<int16_t, 324> table = [] {
    std::array<int16_t, 324> t;
    t.fill(-1);
    for (int b = 0; b < 256; ++b) t[ByteToChar(static_cast<unsigned char>(b))] = b;
    return t;
  }();
  return c < table.size() ? table[c] : -1;
}

absl::StatusOr<std::unique_ptr<Normalizer>> ParseNormalizer(const json& j,
                                                            const std::string& where) {
  if (j.is_null()) return nullptr;
  if (!j.is_object()) return Bad(where, "must be an object");
  SG_ASSIGN_OR_RETURN(std::string type, GetString(j, where, "type"));
  if (type == "Sequence") {
    SG_RETURN_IF_ERROR(CheckKeys(j, where, {"type", "normalizers"}));
    if (!j.contains("normalizers") || !j["normalizers"].is_array()) {
      return Bad(where, "'normalizers' must be an array");
    }
    auto seq = std::make_unique<SequenceNormalizer>();
    for (size_t i = 0; i < j["normalizers"].size(); ++i) {
      SG_ASSIGN_OR_RETURN(auto n,
                          ParseNormalizer(j["normalizers"][i], Item(where + ".normalizers", i)));
      if (n != nullptr) seq->parts.push_back(std::move(n));
    }
    return seq;
  }
  if (type == "NFC" || type == "NFKC") {
    SG_RETURN_IF_ERROR(CheckKeys(j, where, {"type"}));
    return std::make_unique<UnicodeNormalizer>(type == "NFC" ? NormalForm::kNfc
                                                             : NormalForm::kNfkc);
  }
  if (type == "Lowercase") {
    SG_RETURN_IF_ERROR(CheckKeys(j, where, {"type"}));
    return std::make_unique<LowercaseNormalizer>();
  }
  if (type == "Replace") {
    SG_RETURN_IF_ERROR(CheckKeys(j, where, {"type", "pattern", "content"}));
    SG_ASSIGN_OR_RETURN(auto pattern, ParsePattern(j.value("pattern", json()), where));
    SG_ASSIGN_OR_RETURN(std::string content, GetString(j, where, "content"));
    return std::make_unique<ReplaceNormalizer>(std::move(pattern), content);
  }
  if (type == "Prepend") {
    SG_RETURN_IF_ERROR(CheckKeys(j, where, {"type", "prepend"}));
    SG_ASSIGN_OR_RETURN(std::string prepend, GetString(j, where, "prepend"));
    return std::make_unique<PrependNormalizer>(prepend);
  }
  if (type == "Strip") {
    SG_RETURN_IF_ERROR(CheckKeys(j, where, {"type", "strip_left", "strip_right"}));
    SG_ASSIGN_OR_RETURN(bool left, GetBool(j, where, "strip_left", true));
    SG_ASSIGN_OR_RETURN(bool right, GetBool(j, where, "strip_right", true));
    return std::make_unique<StripNormalizer>(left, right);
  }
  return Bad(where, absl::StrCat("unsupported normalizer type '", type,
                                 "' (supported: NFC, NFKC, Replace, Prepend, Lowercase, Strip, "
                                 "Sequence)"));
}

absl::StatusOr<std::unique_ptr<PreTokenizer>> ParsePreTokenizer(const json& j,
                                                                const std::string& where) {
  if (j.is_null()) return nullptr;
  if (!j.is_object()) return Bad(where, "must be an object");
  SG_ASSIGN_OR_RETURN(std::string type, GetString(j, where, "type"));
  if (type == "Sequence") {
    SG_RETURN_IF_ERROR(CheckKeys(j, where, {"type", "pretokenizers"}));
    if (!j.contains("pretokenizers") || !j["pretokenizers"].is_array()) {
      return Bad(where, "'pretokenizers' must be an array");
    }
    auto seq = std::make_unique<SequencePreTokenizer>();
    for (size_t i = 0; i < j["pretokenizers"].size(); ++i) {
      SG_ASSIGN_OR_RETURN(
          auto p, ParsePreTokenizer(j["pretokenizers"][i], Item(where + ".pretokenizers", i)));
      if (p != nullptr) seq->parts.push_back(std::move(p));
    }
    return seq;
  }
  if (type == "Split") {
    SG_RETURN_IF_ERROR(CheckKeys(j, where, {"type", "pattern", "behavior", "invert"}));
    SG_ASSIGN_OR_RETURN(auto pattern, ParsePattern(j.value("pattern", json()), where));
    SG_ASSIGN_OR_RETURN(Behavior behavior, ParseBehavior(j, where));
    SG_ASSIGN_OR_RETURN(bool invert, GetBool(j, where, "invert", false));
    return std::make_unique<SplitPreTokenizer>(std::move(pattern), behavior, invert);
  }
  if (type == "ByteLevel") {
    SG_RETURN_IF_ERROR(
        CheckKeys(j, where, {"type", "add_prefix_space", "trim_offsets", "use_regex"}));
    SG_ASSIGN_OR_RETURN(bool add_prefix_space, GetBool(j, where, "add_prefix_space", true));
    SG_ASSIGN_OR_RETURN(bool use_regex, GetBool(j, where, "use_regex", true));
    std::unique_ptr<Pattern> regex;
    if (use_regex) {
      SG_ASSIGN_OR_RETURN(regex, Pattern::Regex(kGpt2Regex));
    }
    return std::make_unique<ByteLevelPreTokenizer>(add_prefix_space, std::move(regex));
  }
  if (type == "Metaspace") {
    SG_RETURN_IF_ERROR(CheckKeys(
        j, where,
        {"type", "replacement", "prepend_scheme", "split", "add_prefix_space", "str_rep"}));
    SG_ASSIGN_OR_RETURN(char32_t replacement, GetChar(j, where, "replacement"));
    SG_ASSIGN_OR_RETURN(PrependScheme scheme, ParsePrependScheme(j, where));
    SG_ASSIGN_OR_RETURN(bool split, GetBool(j, where, "split", true));
    return std::make_unique<MetaspacePreTokenizer>(replacement, scheme, split);
  }
  if (type == "Digits") {
    SG_RETURN_IF_ERROR(CheckKeys(j, where, {"type", "individual_digits"}));
    SG_ASSIGN_OR_RETURN(bool individual, GetBool(j, where, "individual_digits", false));
    return std::make_unique<SplitPreTokenizer>(
        Pattern::CharClass(IsNumeric), individual ? Behavior::kIsolated : Behavior::kContiguous,
        false);
  }
  if (type == "Punctuation") {
    SG_RETURN_IF_ERROR(CheckKeys(j, where, {"type", "behavior"}));
    Behavior behavior = Behavior::kIsolated;
    if (j.contains("behavior")) {
      SG_ASSIGN_OR_RETURN(behavior, ParseBehavior(j, where));
    }
    return std::make_unique<SplitPreTokenizer>(Pattern::CharClass(IsPunctuation), behavior, false);
  }
  if (type == "Whitespace") {
    SG_RETURN_IF_ERROR(CheckKeys(j, where, {"type"}));
    SG_ASSIGN_OR_RETURN(auto regex, Pattern::Regex(R"(\w+|[^\w\s]+)"));
    return std::make_unique<SplitPreTokenizer>(std::move(regex), Behavior::kRemoved, true);
  }
  if (type == "WhitespaceSplit") {
    SG_RETURN_IF_ERROR(CheckKeys(j, where, {"type"}));
    return std::make_unique<SplitPreTokenizer>(Pattern::CharClass(IsWhitespace), Behavior::kRemoved,
                                               false);
  }
  return Bad(where, absl::StrCat("unsupported pre-tokenizer type '", type,
                                 "' (supported: Split, ByteLevel, Metaspace, Digits, Punctuation, "
                                 "Whitespace, WhitespaceSplit, Sequence)"));
}

absl::StatusOr<std::unique_ptr<Decoder>> ParseDecoder(const json& j, const std::string& where) {
  if (j.is_null()) return nullptr;
  if (!j.is_object()) return Bad(where, "must be an object");
  SG_ASSIGN_OR_RETURN(std::string type, GetString(j, where, "type"));
  if (type == "Sequence") {
    SG_RETURN_IF_ERROR(CheckKeys(j, where, {"type", "decoders"}));
    if (!j.contains("decoders") || !j["decoders"].is_array()) {
      return Bad(where, "'decoders' must be an array");
    }
    auto seq = std::make_unique<SequenceDecoder>();
    for (size_t i = 0; i < j["decoders"].size(); ++i) {
      SG_ASSIGN_OR_RETURN(auto d, ParseDecoder(j["decoders"][i], Item(where + ".decoders", i)));
      if (d != nullptr) seq->parts.push_back(std::move(d));
    }
    return seq;
  }
  if (type == "ByteLevel") {
    SG_RETURN_IF_ERROR(
        CheckKeys(j, where, {"type", "add_prefix_space", "trim_offsets", "use_regex"}));
    return std::make_unique<ByteLevelDecoder>();
  }
  if (type == "Metaspace") {
    SG_RETURN_IF_ERROR(CheckKeys(
        j, where,
        {"type", "replacement", "prepend_scheme", "split", "add_prefix_space", "str_rep"}));
    SG_ASSIGN_OR_RETURN(char32_t replacement, GetChar(j, where, "replacement"));
    SG_ASSIGN_OR_RETURN(PrependScheme scheme, ParsePrependScheme(j, where));
    return std::make_unique<MetaspaceDecoder>(replacement, scheme);
  }
  if (type == "Replace") {
    SG_RETURN_IF_ERROR(CheckKeys(j, where, {"type", "pattern", "content"}));
    SG_ASSIGN_OR_RETURN(auto pattern, ParsePattern(j.value("pattern", json()), where));
    SG_ASSIGN_OR_RETURN(std::string content, GetString(j, where, "content"));
    return std::make_unique<ReplaceDecoder>(std::move(pattern), content);
  }
  if (type == "ByteFallback") {
    SG_RETURN_IF_ERROR(CheckKeys(j, where, {"type"}));
    return std::make_unique<ByteFallbackDecoder>();
  }
  if (type == "Fuse") {
    SG_RETURN_IF_ERROR(CheckKeys(j, where, {"type"}));
    return std::make_unique<FuseDecoder>();
  }
  if (type == "Strip") {
    SG_RETURN_IF_ERROR(CheckKeys(j, where, {"type", "content", "start", "stop"}));
    SG_ASSIGN_OR_RETURN(char32_t content, GetChar(j, where, "content"));
    if (!j.contains("start") || !j["start"].is_number_unsigned() || !j.contains("stop") ||
        !j["stop"].is_number_unsigned()) {
      return Bad(where, "'start' and 'stop' must be counts");
    }
    return std::make_unique<StripDecoder>(content, j["start"].get<size_t>(),
                                          j["stop"].get<size_t>());
  }
  return Bad(where, absl::StrCat("unsupported decoder type '", type,
                                 "' (supported: ByteLevel, Metaspace, Replace, ByteFallback, "
                                 "Fuse, Strip, Sequence)"));
}

absl::StatusOr<PostProcessor> ParsePostProcessor(
    const json& j, const std::string& where,
    const std::function<int(const std::string&)>& token_id) {
  PostProcessor out;
  if (j.is_null()) return out;
  if (!j.is_object()) return Bad(where, "must be an object");
  SG_ASSIGN_OR_RETURN(std::string type, GetString(j, where, "type"));
  if (type == "ByteLevel") {
    SG_RETURN_IF_ERROR(
        CheckKeys(j, where, {"type", "add_prefix_space", "trim_offsets", "use_regex"}));
    return out;  // offsets only
  }
  if (type == "Sequence") {
    SG_RETURN_IF_ERROR(CheckKeys(j, where, {"type", "processors"}));
    if (!j.contains("processors") || !j["processors"].is_array()) {
      return Bad(where, "'processors' must be an array");
    }
    for (size_t i = 0; i < j["processors"].size(); ++i) {
      SG_ASSIGN_OR_RETURN(
          PostProcessor p,
          ParsePostProcessor(j["processors"][i], Item(where + ".processors", i), token_id));
      out.prefix.insert(out.prefix.begin(), p.prefix.begin(), p.prefix.end());
      out.suffix.insert(out.suffix.end(), p.suffix.begin(), p.suffix.end());
    }
    return out;
  }
  if (type != "TemplateProcessing") {
    return Bad(where, absl::StrCat("unsupported post-processor type '", type,
                                   "' (supported: TemplateProcessing, ByteLevel, Sequence)"));
  }
  SG_RETURN_IF_ERROR(CheckKeys(j, where, {"type", "single", "pair", "special_tokens"}));
  const json& single = j.value("single", json());
  const json& specials = j.value("special_tokens", json::object());
  if (!single.is_array()) return Bad(where, "'single' must be an array");
  bool seen_sequence = false;
  for (size_t i = 0; i < single.size(); ++i) {
    const json& item = single[i];
    const std::string at = Item(where + ".single", i);
    if (item.contains("Sequence")) {
      if (seen_sequence) return Bad(at, "a second $A");
      seen_sequence = true;
      continue;
    }
    if (!item.contains("SpecialToken") || !item["SpecialToken"].contains("id") ||
        !item["SpecialToken"]["id"].is_string()) {
      return Bad(at, "must be {\"Sequence\": ...} or {\"SpecialToken\": {\"id\": ...}}");
    }
    const std::string name = item["SpecialToken"]["id"].get<std::string>();
    std::vector<int> ids;
    if (specials.contains(name) && specials[name].contains("ids") &&
        specials[name]["ids"].is_array()) {
      for (const json& id : specials[name]["ids"]) {
        if (!id.is_number_integer())
          return Bad(at, absl::StrCat("special token '", name, "': bad ids"));
        ids.push_back(id.get<int>());
      }
    } else {
      const int id = token_id(name);
      if (id < 0)
        return Bad(at, absl::StrCat("special token '", name, "' is not in the vocabulary"));
      ids.push_back(id);
    }
    auto& target = seen_sequence ? out.suffix : out.prefix;
    target.insert(target.end(), ids.begin(), ids.end());
  }
  if (!seen_sequence) return Bad(where + ".single", "has no $A (Sequence) item");
  return out;
}

}  // namespace streamgen::hf
