#!/usr/bin/env bash
# Issue 21 section 1's kernel figures in one script: every CPU kernel body
# (portable, AVX2, AVX-512, as this CPU allows) side by side over all of the
# benchmark model's linear layers at 1, 4, 16 and 128 rows, float32, bfloat16
# and int8 (streamgen-bench-engine --isa-sweep), twice:
#  - "native": libtorch's own libraries as this CPU runs them;
#  - "as AVX2": oneDNN held to AVX2 (ONEDNN_MAX_CPU_ISA, older name
#    DNNL_MAX_CPU_ISA) and OpenBLAS to its Haswell kernels (OPENBLAS_CORETYPE),
#    so that libtorch's GEMMs behave as on an AVX2-only machine (AMD Zen 3):
#    its bfloat16 GEMM then has no native bfloat16 dot products.
# Then the crossover sweep (--linear-sweep) with the AVX2 bodies forced, "as
# AVX2" (the per-ISA table in cpu_kernels.cc's SkinnyMaxRows).
#
#   bench/isa_bench.sh            # ~10 min on 2 cores
#   SWEEP=0 bench/isa_bench.sh    # without the crossover sweep
#
# Environment: BUILD_DIR (build), MODEL_DIR, TOKENIZER (as engine_bench.sh),
# THREADS (2), RUNS (3), SWEEP (1).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
MODEL_DIR=${MODEL_DIR:-$BUILD_DIR/models/bench-134m}
bench/make_bench_model.sh "$BUILD_DIR" "$MODEL_DIR" "${TOKENIZER:-}" >&2
BIN="$BUILD_DIR/bench/streamgen-bench-engine"
ARGS=(--model "$MODEL_DIR" --threads "${THREADS:-2}" --runs "${RUNS:-3}")
AS_AVX2=(env ONEDNN_MAX_CPU_ISA=AVX2 DNNL_MAX_CPU_ISA=AVX2 OPENBLAS_CORETYPE=Haswell)
echo "== CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)"
echo "== native libraries"
"$BIN" "${ARGS[@]}" --isa-sweep
echo "== libraries as on AVX2 (${AS_AVX2[*]:1})"
"${AS_AVX2[@]}" "$BIN" "${ARGS[@]}" --isa-sweep
if [[ "${SWEEP:-1}" == 1 ]]; then
  echo "== crossover sweep, AVX2 bodies, libraries as on AVX2"
  "${AS_AVX2[@]}" STREAMGEN_KERNEL_ISA=avx2 "$BIN" "${ARGS[@]}" --linear-sweep --runs 2
fi
