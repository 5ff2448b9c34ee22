// Which instruction set the CPU kernels (engine/model/cpu_kernels.h) run:
// what the CPU and the OS support, detected once with cpuid and xgetbv, and
// which body every kernel uses (portable, AVX2+FMA, AVX-512), chosen at run
// time. The project is built for baseline x86-64 (and compiles on aarch64,
// where only the portable bodies exist).
//
// The choice, in order:
//  1. SetKernelIsa(): tests and benchmarks force a body; an ISA the CPU lacks
//     is refused with a clear error (never run: that would be SIGILL).
//  2. The environment variable STREAMGEN_KERNEL_ISA=portable|avx2|avx512|auto,
//     read once, on the first kernel call or ActiveIsa(): whole-process
//     forcing for benchmarks and servers. An ISA the CPU lacks is clamped to
//     the best one it has, with a note (KernelIsaStartupNote()) that the
//     model builder logs at start-up.
//  3. Otherwise the best the CPU has (BestKernelIsa()).
//
// Torch-free: the server and the compile checks include it cheaply.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace streamgen {

// What the CPU and the OS support. Each AVX flag already includes the OS's
// consent (XCR0): AVX/AVX2/FMA/F16C need the YMM state (XCR0 bits 1-2), AVX-512
// the opmask and ZMM states (bits 5-7); AMX's tile state (bits 17-18) is
// reported only (no kernel uses AMX; Linux also wants an arch_prctl first).
struct CpuFeatures {
  bool avx = false;
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vl = false;
  bool avx512dq = false;
  bool avx512_bf16 = false;  // vdpbf16ps: native bfloat16 dot products
  bool amx_bf16 = false;     // AMX-TILE + AMX-BF16 and the OS's tile state
  bool amx_int8 = false;
  // AMD family 19h with AVX-512 (Zen 4): its 512-bit instructions run as two
  // halves on 256-bit units. The skinny (matrix-vector) kernel's AVX-512
  // body measured slower there than its AVX2 body (SkinnyKernelIsa).
  bool amd_zen4 = false;

  // "avx2 fma f16c avx512f avx512bw avx512vl avx512dq avx512_bf16": the
  // features present, in this order ("none" without any).
  std::string Summary() const;
};

// Detected on the first call (thread-safe), then cached.
const CpuFeatures& DetectedCpuFeatures();

// A kernel body. kAuto: the start-up choice (the environment variable, else
// the best the CPU has).
enum class KernelIsa { kAuto, kPortable, kAvx2, kAvx512 };

// "auto", "portable", "avx2", "avx512".
const char* KernelIsaName(KernelIsa isa);
// The inverse of KernelIsaName; anything else is an InvalidArgument error
// that lists the names.
absl::StatusOr<KernelIsa> ParseKernelIsa(std::string_view name);

// Whether this CPU (and OS) can run `isa`'s bodies: kAvx2 needs AVX2 + FMA,
// kAvx512 AVX-512 F/BW/VL/DQ (+ FMA); kAuto and kPortable always.
bool CpuCanRun(KernelIsa isa);
// The best of kAvx512, kAvx2, kPortable that the CPU can run.
KernelIsa BestKernelIsa();

// Forces the kernels' body (thread-safe; affects every thread, takes effect at
// the next kernel call). Refuses an ISA the CPU lacks, naming the missing
// features, and then leaves the current choice unchanged. kAuto: back to the
// start-up choice.
absl::Status SetKernelIsa(KernelIsa isa);
// The body the kernels run now: never kAuto. Cheap (an atomic load).
KernelIsa ActiveIsa();
// Whether the active ISA is the start-up's own choice (no SetKernelIsa of a
// specific ISA, no STREAMGEN_KERNEL_ISA other than auto): tuning choices
// such as SkinnyKernelIsa (cpu_kernels.h) apply only then.
bool KernelIsaIsAuto();
// KernelIsaName(ActiveIsa()).
const char* ActiveKernelIsa();

// Whether the active ISA has native bfloat16 dot products (kAvx512 on a CPU
// with AVX512-BF16). Without them libtorch's bfloat16 GEMM is a slow
// fallback, so CpuLinear multiplies bfloat16 in float32 instead (cpu_kernels.h).
bool ActiveIsaHasNativeBf16();

// The environment variable that forces the ISA for a whole process.
inline constexpr const char* kKernelIsaEnv = "STREAMGEN_KERNEL_ISA";
// What the environment variable did at start-up: "" when unset or honoured
// as is; otherwise a sentence to log (an unknown name, or an ISA the CPU
// lacks and what was used instead). Reads the variable if not yet done.
std::string KernelIsaStartupNote();

// The pure decisions behind SetKernelIsa and the environment variable, on
// given features (tests use a made-up CPU: every ISA's refusal is tested on
// any machine).
// OK when a CPU with `features` can run `isa`, else FailedPrecondition:
// "kernel ISA avx512 refused: this CPU lacks avx512f avx512bw ... (it has: ...)".
absl::Status CheckKernelIsa(KernelIsa isa, const CpuFeatures& features);
// The start-up ISA for the environment variable's value `env` (nullptr or
// "": unset): the best the CPU has, or `env`'s ISA when the CPU can run it,
// else the best below it. *note gets "" or the sentence to log.
KernelIsa StartupKernelIsa(const char* env, const CpuFeatures& features, std::string* note);

// Whether STREAMGEN_KERNEL_ISA held the process below the best ISA this CPU
// has (avx2 or portable on an AVX-512 CPU): a testing aid, "as on an
// AVX2-only CPU". The libraries are then held there too (HoldCpuLibraries in
// engine/model/device.h: libtorch's oneDNN off, ATen's kernels at that
// level), so that the whole process takes the paths such a CPU takes.
// SetKernelIsa does not count: it switches the kernels' body only.
bool KernelIsaHeldBelowCpu();

// What HoldCpuLibraries did to libtorch and OpenBLAS, for
// KernelIsaDescription ("" when nothing: the libraries follow the CPU).
// Thread-safe.
void SetCpuLibrariesNote(std::string note);

// One line for the start-up log and the metrics: "avx2 (cpu: avx2 fma f16c)",
// with the libraries' note when the process is held below the CPU: "avx2
// (cpu: ... avx512_bf16; as on an AVX2-only CPU: oneDNN off, ...)".
std::string KernelIsaDescription();

}  // namespace streamgen
