#include "tests/json_schema_suite/llama_gbnf.h"

#include <dlfcn.h>

#include <vector>

namespace streamgen::testing {
namespace {

// The layout of llama.cpp's src/llama-grammar.h (the elements and stacks are
// plain structs and vectors there).
enum GreType : int {
  kEnd = 0, kAlt = 1, kRuleRef = 2, kChar = 3, kCharNot = 4, kCharRngUpper = 5,
  kCharAlt = 6, kCharAny = 7,
};
struct Element {
  GreType type;
  uint32_t value;
};
using Stack = std::vector<const Element*>;
using Stacks = std::vector<Stack>;

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    *out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    *out += static_cast<char>(0xC0 | (cp >> 6));
    *out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    *out += static_cast<char>(0xE0 | (cp >> 12));
    *out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    *out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    *out += static_cast<char>(0xF0 | (cp >> 18));
    *out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    *out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    *out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

std::vector<uint32_t> DecodeUtf8(const std::string& s) {
  std::vector<uint32_t> out;
  for (size_t i = 0; i < s.size();) {
    unsigned char c = s[i];
    int extra = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;
    uint32_t cp = extra == 0 ? c : c & (0x3F >> extra);
    ++i;
    for (int k = 0; k < extra && i < s.size(); ++k, ++i) cp = (cp << 6) | (s[i] & 0x3F);
    out.push_back(cp);
  }
  return out;
}

}  // namespace

struct LlamaGbnf::Api {
  void* handle = nullptr;
  void* (*init)(const void*, const char*, const char*, bool, const char**, size_t, const int*, size_t);
  void (*free_grammar)(void*);
  void* (*clone)(const void*);
  Stacks& (*stacks)(void*);
  void (*accept)(void*, uint32_t);
};

std::unique_ptr<LlamaGbnf> LlamaGbnf::Load(const std::string& path, std::string* error) {
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    *error = std::string("dlopen: ") + dlerror();
    return nullptr;
  }
  auto api = std::make_unique<Api>();
  api->handle = handle;
  struct Sym {
    const char* name;
    void** slot;
  } syms[] = {
      {"_Z23llama_grammar_init_implPK11llama_vocabPKcS3_bPS3_mPKim", reinterpret_cast<void**>(&api->init)},
      {"_Z23llama_grammar_free_implP13llama_grammar", reinterpret_cast<void**>(&api->free_grammar)},
      {"_Z24llama_grammar_clone_implRK13llama_grammar", reinterpret_cast<void**>(&api->clone)},
      {"_Z24llama_grammar_get_stacksP13llama_grammar", reinterpret_cast<void**>(&api->stacks)},
      {"_Z20llama_grammar_acceptP13llama_grammarj", reinterpret_cast<void**>(&api->accept)},
  };
  for (const Sym& sym : syms) {
    *sym.slot = dlsym(handle, sym.name);
    if (*sym.slot == nullptr) {
      *error = std::string("libllama lacks ") + sym.name;
      return nullptr;
    }
  }
  // Quiet: llama.cpp logs every grammar it refuses; the caller reports.
  using LogCallback = void (*)(int, const char*, void*);
  auto log_set = reinterpret_cast<void (*)(LogCallback, void*)>(dlsym(handle, "llama_log_set"));
  if (log_set != nullptr) log_set([](int, const char*, void*) {}, nullptr);
  std::unique_ptr<LlamaGbnf> out(new LlamaGbnf());
  out->api_ = std::move(api);
  return out;
}

LlamaGbnf::~LlamaGbnf() {
  if (grammar_ != nullptr) api_->free_grammar(grammar_);
}

bool LlamaGbnf::Parse(const std::string& grammar) {
  if (grammar_ != nullptr) api_->free_grammar(grammar_);
  grammar_ = api_->init(nullptr, grammar.c_str(), "root", false, nullptr, 0, nullptr, 0);
  return grammar_ != nullptr;
}

bool LlamaGbnf::Accepts(const std::string& text) {
  void* g = api_->clone(grammar_);
  bool ok = true;
  for (uint32_t cp : DecodeUtf8(text)) {
    api_->accept(g, cp);
    if (api_->stacks(g).empty()) {
      ok = false;
      break;
    }
  }
  if (ok) {
    ok = false;
    for (const Stack& stack : api_->stacks(g)) ok = ok || stack.empty();
  }
  api_->free_grammar(g);
  return ok;
}

bool LlamaGbnf::RandomWalk(std::mt19937* rng, double stop, int max_chars, std::string* out) {
  out->clear();
  void* g = api_->clone(grammar_);
  // Characters tried for a negated class: printable ASCII and a few others.
  static const uint32_t kExtra[] = {0xE9, 0x4E2D, 0x1F600, '\t', '\n'};
  bool done = false;
  for (int step = 0; step < max_chars && !done; ++step) {
    const Stacks& stacks = api_->stacks(g);
    std::vector<const Element*> tops;
    bool can_end = false;
    for (const Stack& stack : stacks) {
      if (stack.empty()) {
        can_end = true;
      } else {
        tops.push_back(stack.back());
      }
    }
    if (tops.empty() || (can_end && std::uniform_real_distribution<double>(0, 1)(*rng) < stop)) {
      done = can_end;
      break;
    }
    const Element* pos = tops[std::uniform_int_distribution<size_t>(0, tops.size() - 1)(*rng)];
    // The ranges of this position: [lo, hi] pairs, maybe negated.
    bool negated = pos->type == kCharNot;
    std::vector<std::pair<uint32_t, uint32_t>> ranges;
    if (pos->type == kCharAny) {
      negated = true;
    } else {
      // The first element, then its alternatives and range ends (a kChar after
      // it is the next character of a sequence).
      for (const Element* e = pos; e == pos || e->type == kCharAlt || e->type == kCharRngUpper; ++e) {
        if (e->type == kCharRngUpper) {
          ranges.back().second = e->value;
        } else {
          ranges.push_back({e->value, e->value});
        }
      }
    }
    uint32_t cp = 0;
    if (negated) {
      std::vector<uint32_t> options;
      auto allowed = [&](uint32_t c) {
        for (const auto& [lo, hi] : ranges) {
          if (lo <= c && c <= hi) return false;
        }
        return true;
      };
      for (uint32_t c = 0x20; c < 0x7F; ++c) {
        if (allowed(c)) options.push_back(c);
      }
      for (uint32_t c : kExtra) {
        if (allowed(c)) options.push_back(c);
      }
      if (options.empty()) break;
      cp = options[std::uniform_int_distribution<size_t>(0, options.size() - 1)(*rng)];
    } else {
      const auto& [lo, hi] = ranges[std::uniform_int_distribution<size_t>(0, ranges.size() - 1)(*rng)];
      uint32_t top = hi;
      // Mostly the plain part of a wide range (readable output), rarely all of it.
      if (top > 0x7E && lo < 0x7E && std::uniform_int_distribution<int>(0, 9)(*rng) != 0) top = 0x7E;
      cp = std::uniform_int_distribution<uint32_t>(lo, top)(*rng);
      if (cp >= 0xD800 && cp <= 0xDFFF) cp = lo;
    }
    api_->accept(g, cp);
    if (api_->stacks(g).empty()) {
      // (cannot happen: cp was allowed by one stack)
      break;
    }
    AppendUtf8(cp, out);
  }
  api_->free_grammar(g);
  return done;
}

}  // namespace streamgen::testing
