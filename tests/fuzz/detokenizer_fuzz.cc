// Fuzz target: the incremental detokenizer (engine/text/detokenizer.cc) and the stop
// matcher (engine/text/stop_matcher.cc) over a real sentencepiece tokenizer, wired
// the way the engine wires them (engine.cc: Push(Append(id)) per token,
// Push(Flush()) then Flush() at the end).
//
// The tokenizer: $STREAMGEN_FUZZ_TOKENIZER, else the demo model's committed
// models/demo-brown/tokenizer.model (BPE, 4096 pieces, byte fallback).
//
// Input: byte 0: the number of stop strings (mod 4); per stop a kind byte:
// even -> a literal of up to 12 bytes (used only when valid UTF-8, as the
// request validators guarantee), odd -> a slice of the generated text (a
// 16-bit start and 1..8 bytes, widened to whole characters), so that stops
// do occur; then a prompt length byte (mod 16); then ids: a byte with its top
// bits 0x -> the byte piece of the next byte, 10 -> piece (next 16 bits mod
// the vocabulary), 11 -> <unk>, <s>, </s> or an id outside the vocabulary
// (which Append ignores). At most 512 ids.
//
// Properties (a violation aborts):
//  - every chunk the detokenizer returns is valid UTF-8, and all of them
//    together are Decode(prompt + generated) without Decode(prompt') in
//    front (detokenizer.h's contract);
//  - through the stop matcher: every chunk is valid UTF-8; the text streamed
//    is a prefix of the whole text and contains no stop string; a stream that
//    stopped is followed in the whole text by a stop string; one that did not
//    stop streamed the whole text, which then contains no stop string.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/text/detokenizer.h"
#include "engine/text/stop_matcher.h"
#include "engine/text/tokenizer.h"
#include "tests/fuzz/fuzz_util.h"

#ifndef STREAMGEN_FUZZ_TOKENIZER_DEFAULT
#define STREAMGEN_FUZZ_TOKENIZER_DEFAULT "models/demo-brown/tokenizer.model"
#endif

namespace streamgen {
namespace {

constexpr size_t kMaxIds = 512;

struct Vocabulary {
  std::unique_ptr<Tokenizer> tokenizer;
  int byte_id[256];
};

const Vocabulary& Vocab() {
  static const Vocabulary* vocab = [] {
    const char* env = std::getenv("STREAMGEN_FUZZ_TOKENIZER");
    const std::string path = env != nullptr && *env != '\0' ? env : STREAMGEN_FUZZ_TOKENIZER_DEFAULT;
    absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::Load(path);
    FUZZ_CHECK(tok.ok(), "cannot load the tokenizer: %s", tok.status().ToString().c_str());
    auto* v = new Vocabulary{std::move(*tok), {}};
    for (int b = 0; b < 256; ++b) {
      char piece[8];
      std::snprintf(piece, sizeof(piece), "<0x%02X>", b);
      v->byte_id[b] = v->tokenizer->PieceToId(piece);
      FUZZ_CHECK(v->byte_id[b] >= 0, "the tokenizer has no byte piece %s", piece);
    }
    return v;
  }();
  return *vocab;
}

int NextId(fuzz::Input& in, const Vocabulary& v) {
  const uint8_t b = in.Byte();
  const int n = v.tokenizer->piece_count();
  if ((b & 0x80) == 0) return v.byte_id[in.Byte()];
  if ((b & 0x40) == 0) return in.U16() % n;
  switch (b & 7) {
    case 0: return 0;
    case 1: return v.tokenizer->bos_id();
    case 2: return v.tokenizer->eos_id();
    case 3: return -1;
    case 4: return n;
    default: return n + b;
  }
}

bool InRange(int id, const Tokenizer& tok) { return id >= 0 && id < tok.piece_count(); }

// The smallest slice of `text` around [start, start + length) that holds whole characters.
std::string WholeCharacters(const std::string& text, size_t start, size_t length) {
  auto continuation = [&](size_t i) {
    return i < text.size() && (static_cast<unsigned char>(text[i]) & 0xC0) == 0x80;
  };
  size_t end = std::min(text.size(), start + length);
  while (start > 0 && continuation(start)) --start;
  while (continuation(end)) ++end;
  return text.substr(start, end - start);
}

struct StopSpec {
  bool slice = false;
  std::string literal;
  size_t start = 0, length = 0;
};

}  // namespace
}  // namespace streamgen

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  streamgen::Vocab();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace streamgen;
  const Vocabulary& v = Vocab();
  const Tokenizer& tok = *v.tokenizer;
  fuzz::Input in(data, size);

  std::vector<StopSpec> specs(in.Byte() % 4);
  for (StopSpec& spec : specs) {
    spec.slice = in.Byte() % 2 == 1;
    if (spec.slice) {
      spec.start = in.U16();
      spec.length = 1 + in.Byte() % 8;
    } else {
      spec.literal = in.ShortString(12);
    }
  }
  const size_t prompt_length = in.Byte() % 16;
  std::vector<int> prompt, generated;
  while (!in.empty() && prompt.size() < prompt_length) prompt.push_back(NextId(in, v));
  while (!in.empty() && prompt.size() + generated.size() < kMaxIds) {
    generated.push_back(NextId(in, v));
  }

  // The reference: whole decodes (ids outside the vocabulary are ignored, as
  // the detokenizer documents).
  std::vector<int> prompt_ids, all_ids;
  for (int id : prompt) {
    if (InRange(id, tok)) prompt_ids.push_back(id);
  }
  all_ids = prompt_ids;
  for (int id : generated) {
    if (InRange(id, tok)) all_ids.push_back(id);
  }
  std::vector<int> prompt_whole(prompt_ids.begin(),
                                prompt_ids.end() - IncompleteUtf8TailLength(tok, prompt_ids));
  const std::string head = tok.Decode(prompt_whole);
  const std::string full = tok.Decode(all_ids);
  FUZZ_CHECK(absl::StartsWith(full, head), "Decode(prompt') is not a prefix of the whole decode");
  const std::string text = full.substr(head.size());

  // The detokenizer alone.
  {
    IncrementalDetokenizer detok(&tok, prompt);
    std::string streamed;
    for (size_t i = 0; i < generated.size(); ++i) {
      const std::string chunk = detok.Append(generated[i]);
      FUZZ_CHECK(fuzz::IsValidUtf8(chunk), "Append(%d) (token %zu) returned invalid UTF-8",
                 generated[i], i);
      streamed += chunk;
    }
    const std::string tail = detok.Flush();
    FUZZ_CHECK(fuzz::IsValidUtf8(tail), "Flush() returned invalid UTF-8");
    streamed += tail;
    FUZZ_CHECK(detok.Append(v.byte_id[static_cast<int>('a')]).empty(), "Append after Flush returned text");
    FUZZ_CHECK(streamed == text, "the streamed text (%zu bytes) is not the decode (%zu bytes)",
               streamed.size(), text.size());
  }

  // Through the stop matcher, as the engine runs them.
  std::vector<std::string> stops;
  for (const StopSpec& spec : specs) {
    std::string stop = spec.literal;
    if (spec.slice && !text.empty()) stop = WholeCharacters(text, spec.start % text.size(), spec.length);
    if (!stop.empty() && fuzz::IsValidUtf8(stop)) stops.push_back(stop);
  }
  IncrementalDetokenizer detok(&tok, prompt);
  StopMatcher matcher(stops);
  std::string streamed;
  bool stopped = false;
  auto take = [&](const StopMatcher::Result& result) {
    FUZZ_CHECK(fuzz::IsValidUtf8(result.text), "the stop matcher released invalid UTF-8");
    streamed += result.text;
    stopped = result.stopped;
  };
  for (size_t i = 0; i < generated.size() && !stopped; ++i) take(matcher.Push(detok.Append(generated[i])));
  if (!stopped) {
    take(matcher.Push(detok.Flush()));
    if (!stopped) {
      const std::string rest = matcher.Flush();
      FUZZ_CHECK(fuzz::IsValidUtf8(rest), "StopMatcher::Flush released invalid UTF-8");
      streamed += rest;
    }
  }
  FUZZ_CHECK(absl::StartsWith(text, streamed), "the streamed text is not a prefix of the decode");
  for (const std::string& stop : stops) {
    FUZZ_CHECK(!absl::StrContains(streamed, stop), "the stop string '%s' leaked", stop.c_str());
  }
  if (stopped) {
    bool found = false;
    for (const std::string& stop : stops) found = found || absl::StartsWith(text.substr(streamed.size()), stop);
    FUZZ_CHECK(found, "stopped, but no stop string follows the streamed text");
  } else {
    FUZZ_CHECK(streamed == text, "not stopped, but the streamed text is not the whole decode");
    for (const std::string& stop : stops) {
      FUZZ_CHECK(!absl::StrContains(text, stop), "the text holds '%s' but did not stop",
                 stop.c_str());
    }
  }
  return 0;
}
