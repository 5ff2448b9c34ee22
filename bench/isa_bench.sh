#!/usr/bin/env bash
# Issue 21 section 1's kernel figures in one script: every CPU kernel body
# (portable, AVX2, AVX-512, as this CPU allows) side by side over all of the
# benchmark model's linear layers at 1, 4, 16 and 128 rows, float32, bfloat16
# and int8 (streamgen-bench-engine --isa-sweep), twice:
#  - "native": libtorch's own libraries as this CPU runs them;
#  - "as AVX2" (--as-avx2): OpenBLAS held to its Haswell kernels
#    (OPENBLAS_CORETYPE) and libtorch's oneDNN off, so that libtorch's GEMMs
#    behave as on an AVX2-only machine (AMD Zen 3): libtorch 1.13 sends
#    bfloat16 mm to oneDNN only where cpuinfo reports AVX-512, else to its
#    slow fallback, which --as-avx2 then runs. (ONEDNN_MAX_CPU_ISA=AVX2, older
#    name DNNL_MAX_CPU_ISA, does not emulate this with libtorch 1.13: libtorch
#    still calls oneDNN for bfloat16, which then throws "could not create a
#    primitive descriptor iterator".)
# Then the crossover sweep (--linear-sweep) with the AVX2 bodies forced, "as
# AVX2" (the per-ISA table in cpu_kernels.cc's SkinnyMaxRows).
#
#   bench/isa_bench.sh            # ~10 min on 2 cores
#   SWEEP=0 bench/isa_bench.sh    # without the crossover sweep
#
# Environment: BUILD_DIR (build), MODEL_DIR, TOKENIZER (as engine_bench.sh),
# THREADS (1: on a busy machine 2 OpenMP threads wait at barriers for a
# descheduled sibling, and the figures say more about the neighbours than the
# kernels), RUNS (3), SWEEP (1).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
MODEL_DIR=${MODEL_DIR:-$BUILD_DIR/models/bench-134m}
bench/make_bench_model.sh "$BUILD_DIR" "$MODEL_DIR" "${TOKENIZER:-}" >&2
BIN="$BUILD_DIR/bench/streamgen-bench-engine"
ARGS=(--model "$MODEL_DIR" --threads "${THREADS:-1}" --runs "${RUNS:-3}")
AS_AVX2=(env OPENBLAS_CORETYPE=Haswell)
echo "== CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)"
echo "== native libraries"
"$BIN" "${ARGS[@]}" --isa-sweep
echo "== libraries as on AVX2 (${AS_AVX2[*]:1})"
"${AS_AVX2[@]}" "$BIN" "${ARGS[@]}" --isa-sweep --as-avx2
if [[ "${SWEEP:-1}" == 1 ]]; then
  echo "== crossover sweep, AVX2 bodies, libraries as on AVX2"
  "${AS_AVX2[@]}" STREAMGEN_KERNEL_ISA=avx2 "$BIN" "${ARGS[@]}" --linear-sweep --runs 2
fi
