// Fuzz target: engine/model/model_config.cc's readers of a model directory's
// config.json, generation_config.json and tokenizer_config.json, then what a
// model load does next with the result: the chat template's family, and
// ValidateWeights (the expected tensor list against the weights; here an
// empty store, which must be refused naming the first missing tensor).
//
// Input: the three files' texts separated by "\n=====\n" lines, in that
// order; a file whose part is absent is not written (a directory with only
// config.json when there is no separator).
//
// Properties: never a crash; errors name the file; ParseModelConfig and
// LoadModelConfig agree on config.json alone; an accepted config has positive
// sizes, heads divisible by the KV heads, an even head_dim, derived sizes that
// fit an int, ids within [0, 2^30] and (once loaded) at least one EOS id;
// ValidateWeights refuses an empty store naming the first tensor.
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/text/chat_template.h"
#include "engine/model/model_config.h"
#include "engine/model/safetensors.h"
#include "tests/fuzz/fuzz_util.h"

namespace streamgen {
namespace {

constexpr char kSeparator[] = "\n=====\n";
constexpr const char* kFiles[] = {"config.json", "generation_config.json",
                                  "tokenizer_config.json"};

std::vector<std::string> Split(const std::string& text) {
  std::vector<std::string> parts;
  size_t begin = 0;
  for (size_t at; (at = text.find(kSeparator, begin)) != std::string::npos;) {
    parts.push_back(text.substr(begin, at - begin));
    begin = at + sizeof(kSeparator) - 1;
  }
  parts.push_back(text.substr(begin));
  return parts;
}

// An empty weights directory (a model.safetensors with no tensors), made once.
const WeightStore& EmptyWeights() {
  static const WeightStore* store = [] {
    const std::string dir = fuzz::ScratchDir::Path() + "/weights";
    std::filesystem::create_directories(dir);
    FUZZ_CHECK(WriteSafetensors(dir + "/model.safetensors", {}).ok(), "cannot write weights");
    absl::StatusOr<std::unique_ptr<WeightStore>> opened = WeightStore::OpenDir(dir);
    FUZZ_CHECK(opened.ok(), "%s", opened.status().ToString().c_str());
    return opened->release();
  }();
  return *store;
}

// `loaded`: from LoadModelConfig, which defaults the EOS ids to {2}.
void CheckConfig(const ModelConfig& c, bool loaded) {
  bool supported = false;
  for (const char* a : kSupportedArchitectures) supported = supported || c.architecture == a;
  FUZZ_CHECK(supported, "architecture '%s'", c.architecture.c_str());
  // The family description is consistent with the sizes.
  FUZZ_CHECK(c.layer_window.empty() ||
                 static_cast<int>(c.layer_window.size()) == c.num_hidden_layers,
             "layer_window of %zu for %d layers", c.layer_window.size(), c.num_hidden_layers);
  FUZZ_CHECK(c.moe_layers.empty() ||
                 static_cast<int>(c.moe_layers.size()) == c.num_hidden_layers,
             "moe_layers of %zu for %d layers", c.moe_layers.size(), c.num_hidden_layers);
  FUZZ_CHECK(c.moe.num_experts == 0 || (c.moe.top_k >= 1 && c.moe.top_k <= c.moe.num_experts),
             "top_k %d of %d experts", c.moe.top_k, c.moe.num_experts);
  const int rotary = c.rope.RotaryDim(c.head_dim);
  FUZZ_CHECK(rotary >= 2 && rotary % 2 == 0 && rotary <= c.head_dim, "rotary dims %d of %d",
             rotary, c.head_dim);
  FUZZ_CHECK(c.hidden_size > 0 && c.intermediate_size > 0 && c.num_hidden_layers > 0 &&
                 c.num_attention_heads > 0 && c.num_key_value_heads > 0 && c.head_dim > 0 &&
                 c.vocab_size > 0 && c.max_position_embeddings > 0,
             "a non-positive size");
  FUZZ_CHECK(c.num_attention_heads % c.num_key_value_heads == 0, "heads %d, kv heads %d",
             c.num_attention_heads, c.num_key_value_heads);
  FUZZ_CHECK(c.head_dim % 2 == 0, "head_dim %d", c.head_dim);
  int64_t product = 0;
  FUZZ_CHECK(!__builtin_mul_overflow(static_cast<int64_t>(c.num_attention_heads), c.head_dim,
                                     &product) &&
                 product <= std::numeric_limits<int>::max(),
             "q_size %d * %d does not fit an int", c.num_attention_heads, c.head_dim);
  FUZZ_CHECK(c.rms_norm_eps > 0 && c.rope.theta > 0, "eps %g, theta %g", c.rms_norm_eps,
             c.rope.theta);
  FUZZ_CHECK(!c.sliding_window.has_value() || *c.sliding_window > 0, "sliding_window");
  FUZZ_CHECK(c.bos_token_id >= 0 && c.bos_token_id <= (1 << 30), "bos %d", c.bos_token_id);
  if (loaded) FUZZ_CHECK(!c.eos_token_ids.empty(), "no EOS id");
  for (int id : c.eos_token_ids) FUZZ_CHECK(id >= 0 && id <= (1 << 30), "eos %d", id);
}

}  // namespace
}  // namespace streamgen

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace streamgen;
  const std::vector<std::string> parts =
      Split(std::string(reinterpret_cast<const char*>(data), size));
  const std::string dir = fuzz::ScratchDir::Path() + "/model";
  std::filesystem::create_directories(dir);
  for (size_t i = 0; i < 3; ++i) {
    const std::string name = absl::StrCat("model/", kFiles[i]);
    if (i < parts.size()) {
      fuzz::ScratchDir::Write(name, parts[i]);
    } else {
      fuzz::ScratchDir::Remove(name);
    }
  }
  const std::string config_path = dir + "/config.json";
  absl::StatusOr<ModelConfig> parsed = ParseModelConfig(parts[0], config_path);
  absl::StatusOr<ModelConfig> loaded = LoadModelConfig(dir);
  if (!parsed.ok()) {
    FUZZ_CHECK(absl::StrContains(parsed.status().message(), config_path),
               "the error does not name config.json: %s", parsed.status().ToString().c_str());
    FUZZ_CHECK(!loaded.ok() && loaded.status() == parsed.status(),
               "LoadModelConfig answered %s where ParseModelConfig answered %s",
               loaded.status().ToString().c_str(), parsed.status().ToString().c_str());
    return 0;
  }
  CheckConfig(*parsed, /*loaded=*/false);
  if (!loaded.ok()) {
    FUZZ_CHECK(absl::StrContains(loaded.status().message(), dir),
               "the error does not name the file: %s", loaded.status().ToString().c_str());
    return 0;
  }
  CheckConfig(*loaded, /*loaded=*/true);
  FUZZ_CHECK(loaded->hidden_size == parsed->hidden_size &&
                 loaded->num_hidden_layers == parsed->num_hidden_layers,
             "LoadModelConfig and ParseModelConfig disagree on config.json");
  // What a model load does next.
  DetectChatTemplateFamily(loaded->chat_template);
  const absl::Status weights = ValidateWeights(*loaded, EmptyWeights());
  FUZZ_CHECK(!weights.ok() && absl::StrContains(weights.message(),
                                                "missing tensor 'model.embed_tokens.weight'"),
             "ValidateWeights on no tensors: %s", weights.ToString().c_str());
  return 0;
}
