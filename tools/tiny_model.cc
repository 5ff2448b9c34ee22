#include "tools/tiny_model.h"

#include <dirent.h>
#include <sys/stat.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/model/model_config.h"
#include "common/status.h"
#include "nlohmann/json.hpp"
#include "tools/train_tokenizer.h"

namespace streamgen {
namespace {

using nlohmann::ordered_json;

// Llama 2's chat template, as in its Hugging Face tokenizer_config.json.
constexpr const char kChatTemplate[] =
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}"
    "{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}"
    "{% endif %}{% endfor %}";

// A small, fast, portable generator (xoshiro256**, seeded by splitmix64):
// the same seed gives the same weights on every platform.
class Rng {
 public:
  explicit Rng(uint64_t seed) {
    for (uint64_t& s : state_) s = SplitMix(&seed);
  }
  uint64_t Next() {
    const uint64_t result = Rotl(state_[1] * 5, 7) * 9;
    const uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = Rotl(state_[3], 45);
    return result;
  }
  // Uniform in (0, 1].
  double Uniform() { return (static_cast<double>(Next() >> 11) + 1.0) * 0x1.0p-53; }
  // Fills `out` with N(mean, std) values (Box-Muller).
  void FillNormal(double mean, double std, std::vector<float>* out) {
    constexpr double kTwoPi = 6.283185307179586;
    for (size_t i = 0; i < out->size(); i += 2) {
      const double radius = std::sqrt(-2.0 * std::log(Uniform()));
      const double angle = kTwoPi * Uniform();
      (*out)[i] = static_cast<float>(mean + std * radius * std::cos(angle));
      if (i + 1 < out->size()) (*out)[i + 1] = static_cast<float>(mean + std * radius * std::sin(angle));
    }
  }

 private:
  static uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  static uint64_t SplitMix(uint64_t* x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  uint64_t state_[4];
};

// FNV-1a: each tensor gets its own stream, so values do not depend on order.
uint64_t HashName(const std::string& name) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : name) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

absl::Status SpecError(const std::string& field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("tiny model spec: ", field, " ", what));
}

absl::Status CheckSpec(const TinyModelSpec& s) {
  const std::pair<const char*, int> positive[] = {
      {"hidden_size", s.hidden_size},
      {"intermediate_size", s.intermediate_size},
      {"num_hidden_layers", s.num_hidden_layers},
      {"num_attention_heads", s.num_attention_heads},
      {"num_key_value_heads", s.num_key_value_heads},
      {"max_position_embeddings", s.max_position_embeddings},
      {"vocab_pad_to", s.vocab_pad_to},
      {"shards", s.shards}};
  for (const auto& [field, value] : positive) {
    if (value <= 0) return SpecError(field, absl::StrCat("must be positive, got ", value));
  }
  if (s.head_dim < 0 || s.head_dim % 2 != 0) {
    return SpecError("head_dim", absl::StrCat("must be 0 (auto) or a positive even number, got ",
                                              s.head_dim));
  }
  if (s.head_dim == 0 && (s.hidden_size % s.num_attention_heads != 0 ||
                          (s.hidden_size / s.num_attention_heads) % 2 != 0)) {
    return SpecError("hidden_size", absl::StrCat(s.hidden_size, " / num_attention_heads ",
                                                 s.num_attention_heads,
                                                 " must be an even whole number (or set head_dim)"));
  }
  if (s.num_attention_heads % s.num_key_value_heads != 0) {
    return SpecError("num_key_value_heads",
                     absl::StrCat(s.num_key_value_heads, " must divide num_attention_heads ",
                                  s.num_attention_heads));
  }
  if (s.vocab_size < 0) return SpecError("vocab_size", "must be 0 (auto) or positive");
  if (s.architecture != "LlamaForCausalLM" && s.architecture != "MistralForCausalLM") {
    return SpecError("architecture", absl::StrCat("'", s.architecture,
                                                  "' is not LlamaForCausalLM or MistralForCausalLM"));
  }
  if (s.sliding_window.has_value() &&
      (s.architecture != "MistralForCausalLM" || *s.sliding_window <= 0)) {
    return SpecError("sliding_window", "needs MistralForCausalLM and a positive size");
  }
  if (s.init_std <= 0) return SpecError("init_std", "must be positive");
  return absl::OkStatus();
}

const char* TorchDtypeName(StorageDtype dtype) {
  switch (dtype) {
    case StorageDtype::kF32: return "float32";
    case StorageDtype::kF16: return "float16";
    case StorageDtype::kBF16: return "bfloat16";
  }
  return "float32";
}

absl::Status WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat(path, ": write failed"));
  return absl::OkStatus();
}

absl::Status MakeDirs(const std::string& dir) {
  for (size_t pos = 1; pos <= dir.size(); ++pos) {
    if (pos != dir.size() && dir[pos] != '/') continue;
    const std::string prefix = dir.substr(0, pos);
    if (mkdir(prefix.c_str(), 0755) != 0 && errno != EEXIST) {
      return absl::PermissionDeniedError(
          absl::StrCat(prefix, ": cannot create directory: ", std::strerror(errno)));
    }
  }
  struct stat st;
  if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(dir, ": not a directory"));
  }
  return absl::OkStatus();
}

absl::Status CopyFile(const std::string& from, const std::string& to) {
  std::ifstream in(from, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(from, ": tokenizer model not found"));
  std::ofstream out(to, std::ios::binary | std::ios::trunc);
  out << in.rdbuf();
  out.close();
  if (!out) return absl::InternalError(absl::StrCat(to, ": write failed"));
  return absl::OkStatus();
}

// Removes weight files that WeightStore::OpenDir would prefer or mix in.
void RemoveStaleWeights(const std::string& dir) {
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return;
  std::vector<std::string> stale;
  while (dirent* entry = readdir(d)) {
    const std::string name = entry->d_name;
    if (name == "model.safetensors" || name == "model.safetensors.index.json" ||
        (absl::StartsWith(name, "model-") && absl::EndsWith(name, ".safetensors"))) {
      stale.push_back(absl::StrCat(dir, "/", name));
    }
  }
  closedir(d);
  for (const std::string& path : stale) std::remove(path.c_str());
}

ModelConfig ConfigFor(const TinyModelSpec& s, int vocab_size) {
  ModelConfig c;
  c.architecture = s.architecture;
  c.hidden_size = s.hidden_size;
  c.intermediate_size = s.intermediate_size;
  c.num_hidden_layers = s.num_hidden_layers;
  c.num_attention_heads = s.num_attention_heads;
  c.num_key_value_heads = s.num_key_value_heads;
  c.head_dim = s.head_dim > 0 ? s.head_dim : s.hidden_size / s.num_attention_heads;
  c.vocab_size = vocab_size;
  c.max_position_embeddings = s.max_position_embeddings;
  c.tie_word_embeddings = s.tie_word_embeddings;
  return c;
}

absl::Status WriteConfigs(const TinyModelSpec& s, const ModelConfig& c, const std::string& dir) {
  const bool mistral = s.architecture == "MistralForCausalLM";
  ordered_json config = {
      {"architectures", {s.architecture}},
      {"model_type", mistral ? "mistral" : "llama"},
      {"hidden_size", c.hidden_size},
      {"intermediate_size", c.intermediate_size},
      {"num_hidden_layers", c.num_hidden_layers},
      {"num_attention_heads", c.num_attention_heads},
      {"num_key_value_heads", c.num_key_value_heads},
      {"head_dim", c.head_dim},
      {"vocab_size", c.vocab_size},
      {"max_position_embeddings", c.max_position_embeddings},
      {"hidden_act", "silu"},
      {"rms_norm_eps", s.rms_norm_eps},
      {"rope_theta", s.rope_theta},
      {"rope_scaling", nullptr},
      {"attention_bias", false},
      {"tie_word_embeddings", s.tie_word_embeddings},
      {"initializer_range", s.init_std},
      {"bos_token_id", 1},
      {"eos_token_id", 2},
      {"torch_dtype", TorchDtypeName(s.dtype)},
      {"use_cache", true}};
  if (mistral) {
    config["sliding_window"] = s.sliding_window.has_value() ? ordered_json(*s.sliding_window)
                                                            : ordered_json(nullptr);
  }
  const ordered_json generation = {{"bos_token_id", 1}, {"eos_token_id", 2}};
  const ordered_json tokenizer = {
      {"tokenizer_class", "LlamaTokenizer"},
      {"add_bos_token", true},
      {"add_eos_token", false},
      {"bos_token", "<s>"},
      {"eos_token", "</s>"},
      {"unk_token", "<unk>"},
      {"pad_token", nullptr},
      {"model_max_length", c.max_position_embeddings},
      {"clean_up_tokenization_spaces", false},
      {"legacy", true},
      {"chat_template", kChatTemplate}};
  SG_RETURN_IF_ERROR(WriteText(dir + "/config.json", config.dump(2) + "\n"));
  SG_RETURN_IF_ERROR(WriteText(dir + "/generation_config.json", generation.dump(2) + "\n"));
  return WriteText(dir + "/tokenizer_config.json", tokenizer.dump(2) + "\n");
}

TensorToWrite RandomTensor(const TinyModelSpec& s, const ExpectedTensor& e) {
  TensorToWrite t;
  t.name = e.name;
  t.dtype = s.dtype;
  t.shape = e.shape;
  int64_t numel = 1;
  for (int64_t d : e.shape) numel *= d;
  t.values.resize(static_cast<size_t>(numel));
  Rng rng(s.seed ^ HashName(e.name));
  if (absl::EndsWith(e.name, "norm.weight")) {
    rng.FillNormal(1.0, s.norm_noise_std, &t.values);
  } else {
    rng.FillNormal(0.0, s.init_std, &t.values);
  }
  return t;
}

// Splits the tensors into `shards` contiguous groups of roughly equal bytes.
absl::Status WriteWeights(const TinyModelSpec& s, const ModelConfig& c, const std::string& dir) {
  const std::vector<ExpectedTensor> expected = ExpectedTensors(c);
  if (s.shards == 1) {
    std::vector<TensorToWrite> tensors;
    for (const ExpectedTensor& e : expected) tensors.push_back(RandomTensor(s, e));
    return WriteSafetensors(dir + "/model.safetensors", tensors);
  }
  if (s.shards > static_cast<int>(expected.size())) {
    return SpecError("shards", absl::StrCat(s.shards, " is more than the ", expected.size(),
                                            " tensors"));
  }
  int64_t total = 0;
  for (const ExpectedTensor& e : expected) {
    int64_t numel = 1;
    for (int64_t d : e.shape) numel *= d;
    total += numel * static_cast<int64_t>(StorageDtypeSize(s.dtype));
  }
  ordered_json weight_map = ordered_json::object();
  size_t next = 0;
  int64_t written = 0;
  for (int shard = 1; shard <= s.shards; ++shard) {
    const std::string name = absl::StrFormat("model-%05d-of-%05d.safetensors", shard, s.shards);
    const int64_t target = total * shard / s.shards;
    std::vector<TensorToWrite> tensors;
    // Take at least one tensor, leave at least one for each later shard.
    while (next < expected.size() &&
           (tensors.empty() || (written < target &&
                                expected.size() - next > static_cast<size_t>(s.shards - shard)))) {
      tensors.push_back(RandomTensor(s, expected[next++]));
      written += static_cast<int64_t>(tensors.back().values.size() * StorageDtypeSize(s.dtype));
      weight_map[tensors.back().name] = name;
    }
    if (shard == s.shards) {
      while (next < expected.size()) {
        tensors.push_back(RandomTensor(s, expected[next++]));
        weight_map[tensors.back().name] = name;
      }
    }
    SG_RETURN_IF_ERROR(WriteSafetensors(dir + "/" + name, tensors));
  }
  const ordered_json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  return WriteText(dir + "/model.safetensors.index.json", index.dump(2) + "\n");
}

}  // namespace

absl::Status WriteTinyModel(const TinyModelSpec& spec, const std::string& out_dir,
                            const std::string& tokenizer_model_path,
                            const std::string& corpus_path) {
  SG_RETURN_IF_ERROR(CheckSpec(spec));
  if (out_dir.empty()) return SpecError("out_dir", "is empty");
  SG_RETURN_IF_ERROR(MakeDirs(out_dir));
  const std::string tokenizer_out = out_dir + "/tokenizer.model";
  if (!tokenizer_model_path.empty()) {
    struct stat from, to;
    const bool same = stat(tokenizer_model_path.c_str(), &from) == 0 &&
                      stat(tokenizer_out.c_str(), &to) == 0 && from.st_ino == to.st_ino &&
                      from.st_dev == to.st_dev;
    if (!same) SG_RETURN_IF_ERROR(CopyFile(tokenizer_model_path, tokenizer_out));
  } else {
    if (corpus_path.empty()) {
      return absl::InvalidArgumentError("tiny model: give a tokenizer model or a corpus to train one");
    }
    SG_RETURN_IF_ERROR(TrainTokenizer(corpus_path, tokenizer_out, spec.tokenizer_vocab_size));
  }
  SG_ASSIGN_OR_RETURN(const int pieces, TokenizerPieceCount(tokenizer_out));
  int vocab_size = spec.vocab_size;
  if (vocab_size == 0) {
    vocab_size = (pieces + spec.vocab_pad_to - 1) / spec.vocab_pad_to * spec.vocab_pad_to;
  } else if (vocab_size < pieces) {
    return SpecError("vocab_size", absl::StrCat(vocab_size, " is smaller than the tokenizer's ",
                                                pieces, " pieces"));
  }
  const ModelConfig config = ConfigFor(spec, vocab_size);
  SG_RETURN_IF_ERROR(WriteConfigs(spec, config, out_dir));
  RemoveStaleWeights(out_dir);
  return WriteWeights(spec, config, out_dir);
}

}  // namespace streamgen
