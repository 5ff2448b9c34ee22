// The TokenVocabulary of a model's tokenizer: what each id adds to the text.
#pragma once

#include <memory>
#include <vector>

#include "engine/grammar/constraint.h"
#include "engine/text/tokenizer.h"

namespace streamgen {

// Per id in [0, vocab_size): the bytes the engine's detokenizer produces for
// the token (Tokenizer::TokenBytes for byte pieces and byte-level BPE pieces;
// otherwise the piece with sentencepiece's U+2581 as a space). Special:
// control / special added tokens, the unknown piece, ids at or beyond the
// tokenizer's piece_count() (padded embedding rows), and eos_ids (which
// TokenMatcher allows where the grammar can end). strips_first_space is found
// by decoding a token that starts with a space on its own.
std::shared_ptr<const TokenVocabulary> BuildTokenVocabulary(const Tokenizer& tok,
                                                            const std::vector<int>& eos_ids,
                                                            int vocab_size);

}  // namespace streamgen
