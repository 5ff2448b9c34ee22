#!/usr/bin/env bash
# Compiles the CPU kernels' torch-free files for aarch64 with Debian's cross
# compiler (g++-aarch64-linux-gnu), object files only, so that the portable
# bodies keep building for ARM64 until an ARM machine runs them (issue 21):
#   engine/model/cpu_isa.cc             detection: no x86 features there
#   engine/model/cpu_kernels_portable.cc the portable bodies (`omp simd`: NEON)
#   engine/model/cpu_kernels_avx2.cc, cpu_kernels_avx512.cc: empty there
# The torch glue (cpu_kernels.cc) is not compiled: Debian has no aarch64
# libtorch on this machine. abseil's headers are architecture-independent and
# come from the host's /usr/include/absl.
#
#   sudo apt-get install g++-aarch64-linux-gnu   # once
#   scripts/aarch64-compile-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CXX=${CXX_AARCH64:-aarch64-linux-gnu-g++}
command -v "$CXX" > /dev/null || { echo "no $CXX: apt-get install g++-aarch64-linux-gnu" >&2; exit 1; }
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
mkdir -p "$OUT/include"
ln -s /usr/include/absl "$OUT/include/absl"  # only abseil, not the host's other headers
for f in engine/model/cpu_isa.cc engine/model/cpu_kernels_portable.cc \
         engine/model/cpu_kernels_avx2.cc engine/model/cpu_kernels_avx512.cc; do
  "$CXX" -std=c++17 -O2 -fopenmp -Wall -Werror -I. -I"$OUT/include" -c "$f" \
    -o "$OUT/$(basename "$f").o"
  echo "aarch64: $f ok"
done
