// streamgen-tokenize: a model's tokenizer from the command line, for tests and
// benchmarks against other implementations.
//
//   streamgen-tokenize --model DIR [--tokenizer auto|hf|sentencepiece] < in.jsonl > out.jsonl
//   streamgen-tokenize --model DIR --bench FILE [--bench-seconds S]
//
// Each input line is a JSON object:
//   {"text": "..."} -> {"ids": encode(text, add_special_tokens, special tokens
//                       matched), "ids_plain": without add_special_tokens,
//                       "ids_unparsed": neither (special tokens as text)}
//   {"ids": [...]}  -> {"decode": decode(ids, skip_special_tokens=false) (HF
//                       backend only), "decode_skip": Decode(ids) (skips them),
//                       "stream": the IncrementalDetokenizer's text of ids}
// --bench encodes FILE's lines (add_special_tokens off, one thread) for at
// least S seconds and prints one JSON object: bytes, tokens, seconds, MB/s,
// tokens/s, and the load time.
// Errors go to stderr with a non-zero exit.
#include <chrono>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "engine/text/detokenizer.h"
#include "engine/text/hf_tokenizer.h"
#include "engine/text/tokenizer.h"

ABSL_FLAG(std::string, model, "", "model directory (tokenizer.json and/or tokenizer.model)");
ABSL_FLAG(std::string, tokenizer, "auto",
          "which tokenizer file to load: auto (tokenizer.json when present, else "
          "tokenizer.model), hf (tokenizer.json) or sentencepiece (tokenizer.model)");
ABSL_FLAG(std::string, bench, "", "encode this file's lines and print the throughput");
ABSL_FLAG(double, bench_seconds, 3.0, "with --bench: encode for at least this long");

namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

int Bench(const streamgen::Tokenizer& tok, const std::string& path, double load_seconds) {
  std::ifstream in(path);
  if (!in) {
    std::cerr << "streamgen-tokenize: cannot read --bench file " << path << "\n";
    return 1;
  }
  std::vector<std::string> lines;
  size_t bytes_per_pass = 0;
  for (std::string line; std::getline(in, line);) {
    bytes_per_pass += line.size();
    lines.push_back(std::move(line));
  }
  const double min_seconds = absl::GetFlag(FLAGS_bench_seconds);
  size_t bytes = 0, tokens = 0;
  const auto start = Clock::now();
  do {
    for (const std::string& line : lines) tokens += tok.Encode(line).size();
    bytes += bytes_per_pass;
  } while (Seconds(start) < min_seconds);
  const double seconds = Seconds(start);
  std::cout << Dump({{"bytes", bytes},
                     {"tokens", tokens},
                     {"seconds", seconds},
                     {"mb_per_s", bytes / seconds / 1e6},
                     {"tokens_per_s", tokens / seconds},
                     {"load_seconds", load_seconds}})
            << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "streamgen-tokenize --model DIR [--tokenizer auto|hf|sentencepiece] < in.jsonl");
  absl::ParseCommandLine(argc, argv);
  auto kind = streamgen::ParseTokenizerKind(absl::GetFlag(FLAGS_tokenizer));
  if (!kind.ok()) {
    std::cerr << "streamgen-tokenize: --tokenizer: " << kind.status().message() << "\n";
    return 2;
  }
  if (absl::GetFlag(FLAGS_model).empty()) {
    std::cerr << "streamgen-tokenize: --model DIR is required\n";
    return 2;
  }
  const auto load_start = Clock::now();
  auto tok = streamgen::LoadTokenizerFromDirectory(absl::GetFlag(FLAGS_model), *kind);
  const double load_seconds = Seconds(load_start);
  if (!tok.ok()) {
    std::cerr << "streamgen-tokenize: " << tok.status().message() << "\n";
    return 1;
  }
  if (!absl::GetFlag(FLAGS_bench).empty())
    return Bench(**tok, absl::GetFlag(FLAGS_bench), load_seconds);

  const streamgen::HfTokenizer* hf = (*tok)->hf();
  size_t line_number = 0;
  for (std::string line; std::getline(std::cin, line);) {
    ++line_number;
    json in = json::parse(line, nullptr, /*allow_exceptions=*/false);
    json out = json::object();
    if (in.is_object() && in.contains("text") && in["text"].is_string()) {
      const std::string text = in["text"].get<std::string>();
      out["ids"] = (*tok)->Encode(text, {/*add_special_tokens=*/true, /*parse_special=*/true});
      out["ids_plain"] =
          (*tok)->Encode(text, {/*add_special_tokens=*/false, /*parse_special=*/true});
      out["ids_unparsed"] = (*tok)->Encode(text);
    } else if (in.is_object() && in.contains("ids") && in["ids"].is_array()) {
      std::vector<int> ids;
      for (const json& id : in["ids"]) ids.push_back(id.is_number_integer() ? id.get<int>() : -1);
      if (hf != nullptr) out["decode"] = hf->Decode(ids, /*skip_special_tokens=*/false);
      out["decode_skip"] = (*tok)->Decode(ids);
      streamgen::IncrementalDetokenizer detok(tok->get(), {});
      std::string stream;
      for (int id : ids) stream += detok.Append(id);
      stream += detok.Flush();
      out["stream"] = stream;
    } else {
      std::cerr << "streamgen-tokenize: stdin line " << line_number
                << ": want a JSON object with \"text\" (a string) or \"ids\" (an array)\n";
      return 1;
    }
    std::cout << Dump(out) << "\n";
  }
  std::cout.flush();
  return 0;
}
