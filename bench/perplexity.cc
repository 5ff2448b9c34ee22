// Validation perplexity of a model on a JSONL file (one {"text": ...} object a
// line, as tools/demo_model/make_corpus.py writes valid.jsonl), computed
// exactly as tools/demo_model/train.py's `evaluate` does: each document is
// [bos] + Encode(text) + [eos], the documents are concatenated into one
// stream, and the stream is cut into non-overlapping windows
// stream[i : i + seq + 1] for i in range(0, len - seq, seq). In each window the
// logits of the first seq tokens predict tokens 1..seq. The figure is the mean
// negative log-likelihood (nats/token) over all predicted tokens, and its exp.
//
//   streamgen-perplexity --model DIR --valid FILE [--seq 256]
//       [--dtype float32|bfloat16] [--quantization none|int8] [--threads 0]
//       [--max-windows 0]
//
// Prints one line per figure and a final JSON line (for scripts).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <fstream>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "common/cli_flags.h"
#include "engine/model/device.h"
#include "engine/model/llama_model.h"
#include "engine/model/llama_model_testing.h"
#include "engine/model/model_config.h"
#include "engine/text/tokenizer.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, model, "", "model directory");
ABSL_FLAG(std::string, valid, "", "validation JSONL file: one {\"text\": ...} object a line");
ABSL_FLAG(int, seq, 256, "tokens a window predicts (each window is seq + 1 tokens)");
ABSL_FLAG(std::string, dtype, "float32", "compute dtype: float32 or bfloat16");
ABSL_FLAG(std::string, quantization, "none", "weight quantization: none or int8");
ABSL_FLAG(int, threads, 0, "intra-op threads (0: $OMP_NUM_THREADS if set, else the CPUs this process may use: affinity and cgroup quota)");
ABSL_FLAG(int, max_windows, 0, "evaluate only the first N windows (0: all)");

namespace {

using Clock = std::chrono::steady_clock;

int Fail(const std::string& message) {
  std::fprintf(stderr, "streamgen-perplexity: %s\n", message.c_str());
  return 1;
}

// Reads `path` into one token stream: [bos] + Encode(text) + [eos] per line.
// Blank lines are skipped; anything else that is not a JSON object with a
// string "text" is an error naming the line.
bool ReadStream(const std::string& path, const streamgen::Tokenizer& tokenizer, int bos, int eos,
                std::vector<int>* stream, int* documents, std::string* error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    *error = "cannot open --valid file " + path;
    return false;
  }
  std::string line;
  int line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r\n") == std::string::npos) continue;
    nlohmann::json doc = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (doc.is_discarded()) {
      *error = path + ":" + std::to_string(line_no) + ": not valid JSON";
      return false;
    }
    if (!doc.is_object() || !doc.contains("text") || !doc["text"].is_string()) {
      *error = path + ":" + std::to_string(line_no) + ": not an object with a string \"text\"";
      return false;
    }
    const std::string& text = doc["text"].get_ref<const std::string&>();
    stream->push_back(bos);
    const std::vector<int> ids = tokenizer.Encode(text);
    stream->insert(stream->end(), ids.begin(), ids.end());
    stream->push_back(eos);
    ++*documents;
  }
  if (in.bad()) {
    *error = "error reading " + path;
    return false;
  }
  return true;
}

int Run() {
  const std::string dir = absl::GetFlag(FLAGS_model);
  const std::string valid = absl::GetFlag(FLAGS_valid);
  const int seq = absl::GetFlag(FLAGS_seq);
  const int max_windows = absl::GetFlag(FLAGS_max_windows);
  const std::string dtype_name = absl::GetFlag(FLAGS_dtype);
  if (dir.empty()) return Fail("--model DIR is required");
  if (valid.empty()) return Fail("--valid FILE is required");
  if (seq < 1) return Fail("--seq must be >= 1");
  if (max_windows < 0) return Fail("--max-windows must be >= 0");
  if (absl::GetFlag(FLAGS_threads) < 0) return Fail("--threads must be >= 0");
  auto dtype = streamgen::ParseDtype(dtype_name, torch::kCPU);
  if (!dtype.ok()) return Fail(std::string(dtype.status().message()));
  auto quantization = streamgen::ParseQuantization(absl::GetFlag(FLAGS_quantization));
  if (!quantization.ok()) return Fail("--quantization: " + std::string(quantization.status().message()));
  const int threads = streamgen::ConfigureThreads(absl::GetFlag(FLAGS_threads));

  auto config = streamgen::LoadModelConfig(dir);
  if (!config.ok()) return Fail(std::string(config.status().message()));
  if (config->eos_token_ids.empty()) return Fail("the model config has no eos_token_id");
  if (seq > config->max_position_embeddings) {
    return Fail("--seq " + std::to_string(seq) + " exceeds the model's max_position_embeddings (" +
                std::to_string(config->max_position_embeddings) + ")");
  }
  const int bos = config->bos_token_id;
  const int eos = config->eos_token_ids[0];
  auto tokenizer = streamgen::Tokenizer::Load(dir + "/tokenizer.model");
  if (!tokenizer.ok()) return Fail(std::string(tokenizer.status().message()));

  std::vector<int> stream;
  int documents = 0;
  std::string error;
  if (!ReadStream(valid, **tokenizer, bos, eos, &stream, &documents, &error)) return Fail(error);
  for (int id : stream) {
    if (id < 0 || id >= config->vocab_size) {
      return Fail("token id " + std::to_string(id) + " is outside the model's vocabulary (" +
                  std::to_string(config->vocab_size) + ")");
    }
  }

  // windows(): stream[i : i + seq + 1] for i in range(0, len(stream) - seq, seq).
  std::vector<int64_t> starts;
  for (int64_t i = 0; i < static_cast<int64_t>(stream.size()) - seq; i += seq) starts.push_back(i);
  if (max_windows > 0 && static_cast<int64_t>(starts.size()) > max_windows) starts.resize(max_windows);
  if (starts.empty()) {
    return Fail(valid + " has " + std::to_string(stream.size()) + " tokens: not one window of " +
                std::to_string(seq + 1));
  }

  auto model = streamgen::LlamaModel::Load(dir, {torch::kCPU, *dtype, *quantization});
  if (!model.ok()) return Fail(std::string(model.status().message()));

  double total_nll = 0;
  int64_t count = 0;
  const auto t0 = Clock::now();
  {
    c10::InferenceMode guard;
    for (int64_t start : starts) {
      std::vector<int> inputs(stream.begin() + start, stream.begin() + start + seq);
      std::vector<int64_t> targets(stream.begin() + start + 1, stream.begin() + start + seq + 1);
      streamgen::KvCache cache = streamgen::NewCache(**model, seq);
      // [seq, vocab]
      torch::Tensor logits = streamgen::Forward(**model, inputs, &cache, /*all_logits=*/true);
      torch::Tensor logp = torch::log_softmax(logits.to(torch::kFloat64), -1);
      torch::Tensor picked =
          logp.gather(1, torch::tensor(targets, torch::kInt64).unsqueeze(1)).squeeze(1);
      total_nll -= picked.sum().item<double>();
      count += seq;
    }
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  const double nll = total_nll / count;
  const double ppl = std::exp(nll);
  const char* qname = streamgen::QuantizationName(*quantization);
  const std::string dname = streamgen::DtypeName(*dtype);

  std::printf("model          %s\n", dir.c_str());
  std::printf("valid          %s (%d documents, %zu tokens)\n", valid.c_str(), documents,
              stream.size());
  std::printf("dtype          %s\n", dname.c_str());
  std::printf("quantization   %s\n", qname);
  std::printf("threads        %d\n", threads);
  std::printf("windows        %zu of %d + 1 tokens\n", starts.size(), seq);
  std::printf("tokens         %lld predicted\n", static_cast<long long>(count));
  std::printf("mean NLL       %.6f nats/token\n", nll);
  std::printf("perplexity     %.3f\n", ppl);
  std::printf("seconds        %.2f (%.0f tokens/s)\n", seconds, count / seconds);
  nlohmann::ordered_json summary = {
      {"model", dir},       {"valid", valid},         {"dtype", dname},
      {"quantization", qname}, {"threads", threads},  {"seq", seq},
      {"documents", documents}, {"windows", starts.size()}, {"tokens", count},
      {"nll", nll},         {"perplexity", ppl},      {"seconds", seconds}};
  std::printf("%s\n", summary.dump().c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  streamgen::ArgvHolder args(streamgen::NormalizeFlagNames(argc, argv));
  absl::ParseCommandLine(args.argc(), args.argv());
  try {
    return Run();
  } catch (const std::exception& e) {
    return Fail(e.what());
  }
}
