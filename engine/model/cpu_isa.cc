// CPU feature detection and the kernels' ISA switch (see cpu_isa.h).
#include "engine/model/cpu_isa.h"

#include <cstring>
#include <string_view>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

#include "absl/strings/str_cat.h"

namespace streamgen {
namespace {

#if defined(__x86_64__)
// XCR0 via xgetbv, written in assembly so this file needs no -mxsave.
uint64_t ReadXcr0() {
  uint32_t eax = 0, edx = 0;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<uint64_t>(edx) << 32) | eax;
}

CpuFeatures Detect() {
  CpuFeatures f;
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = (c >> 27) & 1;
  const bool cpu_avx = (c >> 28) & 1, cpu_fma = (c >> 12) & 1, cpu_f16c = (c >> 29) & 1;
  // The OS must save the wider registers on a context switch: without its
  // consent in XCR0 the instructions fault even where cpuid lists them.
  const uint64_t xcr0 = osxsave ? ReadXcr0() : 0;
  const bool os_ymm = (xcr0 & 0x6) == 0x6;      // SSE + AVX state
  const bool os_zmm = (xcr0 & 0xe6) == 0xe6;    // + opmask, ZMM_Hi256, Hi16_ZMM
  const bool os_amx = (xcr0 & 0x60000) == 0x60000;  // XTILECFG + XTILEDATA
  f.avx = cpu_avx && os_ymm;
  f.fma = cpu_fma && f.avx;
  f.f16c = cpu_f16c && f.avx;
  unsigned max_leaf = __get_cpuid_max(0, nullptr);
  unsigned vendor[3] = {0, 0, 0};
  unsigned family_leaf = a;
  if (__get_cpuid(0, &a, &vendor[0], &vendor[2], &vendor[1])) {
    const bool amd = std::memcmp(vendor, "AuthenticAMD", 12) == 0;
    const unsigned base = (family_leaf >> 8) & 0xf;
    const unsigned family = base == 0xf ? base + ((family_leaf >> 20) & 0xff) : base;
    f.amd_zen4 = amd && family == 0x19;  // set with AVX-512 below (Zen 3 has none)
  }
  if (max_leaf >= 7 && __get_cpuid_count(7, 0, &a, &b, &c, &d)) {
    f.avx2 = ((b >> 5) & 1) && f.avx;
    f.avx512f = ((b >> 16) & 1) && os_zmm;
    f.avx512dq = ((b >> 17) & 1) && f.avx512f;
    f.avx512bw = ((b >> 30) & 1) && f.avx512f;
    f.avx512vl = ((b >> 31) & 1) && f.avx512f;
    f.amd_zen4 = f.amd_zen4 && f.avx512f;
    const bool amx_tile = ((d >> 24) & 1) && os_amx;
    f.amx_bf16 = amx_tile && ((d >> 22) & 1);
    f.amx_int8 = amx_tile && ((d >> 25) & 1);
    const unsigned subleaves = a;
    if (subleaves >= 1 && __get_cpuid_count(7, 1, &a, &b, &c, &d)) {
      f.avx512_bf16 = ((a >> 5) & 1) && f.avx512f;
    }
  }
  return f;
}
#else
CpuFeatures Detect() { return {}; }  // aarch64 and others: the portable bodies only
#endif

// The forced ISA: -1 until the start-up choice is made.
std::atomic<int> g_active{-1};
// Whether g_active is the start-up's kAuto choice (KernelIsaIsAuto).
std::atomic<bool> g_auto{true};
// The start-up choice (what kAuto means) and the environment's note.
std::once_flag g_startup_once;
KernelIsa g_startup = KernelIsa::kPortable;
std::string g_startup_note;
// SetCpuLibrariesNote's note.
std::mutex g_libraries_mu;
std::string g_libraries_note;

// The features `isa` needs that the CPU lacks, "" when none.
std::string Missing(KernelIsa isa, const CpuFeatures& f) {
  std::string missing;
  auto need = [&](bool has, const char* name) {
    if (!has) absl::StrAppend(&missing, missing.empty() ? "" : " ", name);
  };
  if (isa == KernelIsa::kAvx2) {
    need(f.avx2, "avx2");
    need(f.fma, "fma");
  } else if (isa == KernelIsa::kAvx512) {
    need(f.avx512f, "avx512f");
    need(f.avx512bw, "avx512bw");
    need(f.avx512vl, "avx512vl");
    need(f.avx512dq, "avx512dq");
    need(f.fma, "fma");
  }
  return missing;
}

KernelIsa BestFor(const CpuFeatures& f) {
  if (Missing(KernelIsa::kAvx512, f).empty()) return KernelIsa::kAvx512;
  if (Missing(KernelIsa::kAvx2, f).empty()) return KernelIsa::kAvx2;
  return KernelIsa::kPortable;
}

void ChooseAtStartup() {
  const char* env = std::getenv(kKernelIsaEnv);
  g_startup = StartupKernelIsa(env, DetectedCpuFeatures(), &g_startup_note);
  if (env != nullptr && *env != '\0' && std::string_view(env) != "auto") g_auto.store(false);
  // Said on stderr too: a test or benchmark binary has no start-up log.
  if (!g_startup_note.empty()) std::fprintf(stderr, "streamgen: %s\n", g_startup_note.c_str());
  int unset = -1;
  g_active.compare_exchange_strong(unset, static_cast<int>(g_startup));
}

void EnsureStartup() { std::call_once(g_startup_once, ChooseAtStartup); }

}  // namespace

std::string CpuFeatures::Summary() const {
  std::string s;
  auto add = [&](bool has, const char* name) {
    if (has) absl::StrAppend(&s, s.empty() ? "" : " ", name);
  };
  add(avx2, "avx2");
  add(fma, "fma");
  add(f16c, "f16c");
  add(avx512f, "avx512f");
  add(avx512bw, "avx512bw");
  add(avx512vl, "avx512vl");
  add(avx512dq, "avx512dq");
  add(avx512_bf16, "avx512_bf16");
  add(amx_bf16, "amx_bf16");
  add(amx_int8, "amx_int8");
  return s.empty() ? "none" : s;
}

const CpuFeatures& DetectedCpuFeatures() {
  static const CpuFeatures features = Detect();
  return features;
}

const char* KernelIsaName(KernelIsa isa) {
  switch (isa) {
    case KernelIsa::kAuto:
      return "auto";
    case KernelIsa::kPortable:
      return "portable";
    case KernelIsa::kAvx2:
      return "avx2";
    case KernelIsa::kAvx512:
      return "avx512";
  }
  return "?";
}

absl::StatusOr<KernelIsa> ParseKernelIsa(std::string_view name) {
  for (KernelIsa isa : {KernelIsa::kAuto, KernelIsa::kPortable, KernelIsa::kAvx2, KernelIsa::kAvx512}) {
    if (name == KernelIsaName(isa)) return isa;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown kernel ISA \"", absl::string_view(name.data(), name.size()), "\": expected one of portable, avx2, avx512, auto"));
}

bool CpuCanRun(KernelIsa isa) { return Missing(isa, DetectedCpuFeatures()).empty(); }

KernelIsa BestKernelIsa() { return BestFor(DetectedCpuFeatures()); }

absl::Status CheckKernelIsa(KernelIsa isa, const CpuFeatures& features) {
  const std::string missing = Missing(isa, features);
  if (missing.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat("kernel ISA ", KernelIsaName(isa),
                                                    " refused: this CPU lacks ", missing,
                                                    " (it has: ", features.Summary(), ")"));
}

KernelIsa StartupKernelIsa(const char* env, const CpuFeatures& features, std::string* note) {
  note->clear();
  const KernelIsa best = BestFor(features);
  if (env == nullptr || *env == '\0') return best;
  absl::StatusOr<KernelIsa> want = ParseKernelIsa(env);
  if (!want.ok()) {
    *note = absl::StrCat(kKernelIsaEnv, ": ", want.status().message(), "; using ",
                         KernelIsaName(best));
    return best;
  }
  if (*want == KernelIsa::kAuto) return best;
  const std::string missing = Missing(*want, features);
  if (missing.empty()) return *want;
  // Clamped, never run: the best the CPU has below the request.
  const KernelIsa fallback = *want == KernelIsa::kAvx512 && Missing(KernelIsa::kAvx2, features).empty()
                                 ? KernelIsa::kAvx2
                                 : KernelIsa::kPortable;
  *note = absl::StrCat(kKernelIsaEnv, "=", env, ": this CPU lacks ", missing, "; using ",
                       KernelIsaName(fallback));
  return fallback;
}

absl::Status SetKernelIsa(KernelIsa isa) {
  EnsureStartup();
  if (isa == KernelIsa::kAuto) {
    g_active.store(static_cast<int>(g_startup), std::memory_order_relaxed);
    g_auto.store(std::getenv(kKernelIsaEnv) == nullptr ||
                 std::string_view(std::getenv(kKernelIsaEnv)) == "auto" ||
                 *std::getenv(kKernelIsaEnv) == '\0');
    return absl::OkStatus();
  }
  absl::Status ok = CheckKernelIsa(isa, DetectedCpuFeatures());
  if (!ok.ok()) return ok;
  g_active.store(static_cast<int>(isa), std::memory_order_relaxed);
  g_auto.store(false);
  return absl::OkStatus();
}

KernelIsa ActiveIsa() {
  int v = g_active.load(std::memory_order_relaxed);
  if (v < 0) {
    EnsureStartup();
    v = g_active.load(std::memory_order_relaxed);
  }
  return static_cast<KernelIsa>(v);
}

const char* ActiveKernelIsa() { return KernelIsaName(ActiveIsa()); }

bool KernelIsaIsAuto() {
  EnsureStartup();
  return g_auto.load();
}

bool ActiveIsaHasNativeBf16() {
  return ActiveIsa() == KernelIsa::kAvx512 && DetectedCpuFeatures().avx512_bf16;
}

std::string KernelIsaStartupNote() {
  EnsureStartup();
  return g_startup_note;
}

bool KernelIsaHeldBelowCpu() {
  EnsureStartup();
  // The enum's order is the ISAs' order; g_startup is below the best only
  // when the environment named a lesser ISA (set once, then read only).
  return static_cast<int>(g_startup) < static_cast<int>(BestKernelIsa());
}

void SetCpuLibrariesNote(std::string note) {
  std::lock_guard<std::mutex> lock(g_libraries_mu);
  g_libraries_note = std::move(note);
}

std::string KernelIsaDescription() {
  std::string libraries;
  {
    std::lock_guard<std::mutex> lock(g_libraries_mu);
    libraries = g_libraries_note;
  }
  return absl::StrCat(ActiveKernelIsa(), " (cpu: ", DetectedCpuFeatures().Summary(),
                      libraries.empty() ? "" : "; ", libraries, ")");
}

}  // namespace streamgen
