#include "engine/grammar/vocabulary.h"

#include <string>

#include "absl/strings/str_replace.h"

namespace streamgen {

std::shared_ptr<const TokenVocabulary> BuildTokenVocabulary(const Tokenizer& tok,
                                                            const std::vector<int>& eos_ids,
                                                            int vocab_size) {
  auto vocab = std::make_shared<TokenVocabulary>();
  vocab->bytes.resize(vocab_size);
  vocab->special.assign(vocab_size, false);
  vocab->eos_ids = eos_ids;
  const int pieces = tok.piece_count();
  for (int id = 0; id < vocab_size; ++id) {
    if (id >= pieces || tok.IsControl(id) || tok.IsUnknown(id)) {
      vocab->special[id] = true;
      continue;
    }
    std::string bytes;
    if (!tok.TokenBytes(id, &bytes)) {
      // A text piece: sentencepiece's (and Metaspace tokenizer.json's) U+2581
      // stands for a space.
      bytes = absl::StrReplaceAll(tok.IdToPiece(id), {{"\xE2\x96\x81", " "}});
    }
    vocab->bytes[id] = std::move(bytes);
  }
  for (int id : eos_ids) {
    if (id >= 0 && id < vocab_size) vocab->special[id] = true;
  }
  // Whether the first token's leading space is dropped (sentencepiece's dummy
  // prefix; a tokenizer.json with a Strip decoder): decode one token that
  // starts with a space, on its own.
  for (int id = 0; id < vocab_size; ++id) {
    const std::string& b = vocab->bytes[id];
    if (vocab->special[id] || b.size() < 2 || b[0] != ' ' || b[1] == ' ') continue;
    if (static_cast<unsigned char>(b[1]) >= 0x80) continue;  // keep to whole ASCII text
    vocab->strips_first_space = tok.Decode({id}) == b.substr(1);
    break;
  }
  return vocab;
}

}  // namespace streamgen
