#!/usr/bin/env bash
# Compiles every CUDA source of the project on a machine with no GPU (CI's
# `cuda` job, issue 13), so that a kernel or a CUDA-only branch that does not
# compile never lands:
#
# 1. engine/model/cuda's kernels (every .cu), through engine/model/cuda/CMakeLists.txt in
#    its standalone mode, for sm_80 and sm_90, with each toolkit found:
#    - Debian 12's nvcc 11.8 (scripts/install-deps.sh --cuda-toolkit; host
#      compiler clang-14, since nvcc 11.8 refuses gcc 12). Required: the
#      kernels must stay within CUDA 11.8.
#    - /usr/local/cuda's nvcc where the machine has one (this project's
#      development image ships nvcc 13, the GPU machines' version).
#    ptxas's register, shared-memory and spill report of every kernel is kept
#    in the log; a kernel that spills fails the check.
# 2. The C++ behind STREAMGEN_CUDA (engine/model/cuda/cuda_ops.cc, the CUDA branches
#    of llama_model.cc, cuda_graph_decode.cc, engine/model_builder.cc and
#    engine/model/device.cc, tests/cuda_test.cc) with g++
#    -fsyntax-only -DSTREAMGEN_CUDA=1 against Debian's libtorch 1.13 headers,
#    which include ATen's CUDA headers, and the CUDA 11.8 runtime headers.
#    Debian's package lacks one generated header,
#    c10/cuda/impl/cuda_cmake_macros.h; the check writes it into its build
#    folder with the one line PyTorch's build generates. This checks the code
#    against libtorch 1.13's CUDA API only: against 2.x it is compiled on the
#    GPU machine (scripts/device-check.sh).
#
#   scripts/cuda-compile-check.sh            # both parts
#   CUDA_CHECK_DIR=build-cuda-check          # where it builds (default)
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${CUDA_CHECK_DIR:-build-cuda-check}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
start=$(date +%s)
failed=()

DEBIAN_NVCC=/usr/lib/nvidia-cuda-toolkit/bin/nvcc
if [ ! -x "$DEBIAN_NVCC" ]; then
  echo "cuda-compile-check: $DEBIAN_NVCC not found: run scripts/install-deps.sh --cuda-toolkit" >&2
  exit 2
fi
command -v clang++-14 >/dev/null || { echo "cuda-compile-check: clang++-14 not found (scripts/install-deps.sh)" >&2; exit 2; }

# Builds engine/model/cuda standalone with one nvcc; $2: extra configure flags.
kernels() {
  local name=$1 nvcc=$2; shift 2
  local out=$DIR/kernels-$name log=$DIR/kernels-$name.log
  rm -rf "$out"
  echo "== kernels with $("$nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/nvcc \1/p') ($nvcc)"
  if ! "$@" cmake -S engine/model/cuda -B "$out" -G Ninja -DCMAKE_CUDA_COMPILER="$nvcc" \
        -DCMAKE_CUDA_ARCHITECTURES="80;90" ${HOST:+-DCMAKE_CUDA_HOST_COMPILER=$HOST} >"$log" 2>&1 ||
     ! "$@" cmake --build "$out" -v >>"$log" 2>&1; then
    tail -30 "$log"
    failed+=("kernels-$name")
    return
  fi
  local kernels spills
  kernels=$(grep -c "Compiling entry function" "$log" || true)
  spills=$(grep -E "[1-9][0-9]* bytes spill (stores|loads)" "$log" || true)
  grep -E "Compiling entry function|Used [0-9]+ registers" "$log" |
    sed -E "s/.*entry function '([^']*)' for '(sm_[0-9]+)'.*/\2 \1/" | paste - - |
    sed -E 's/_ZN9streamgen4cuda[^ ]*_cu_[0-9a-f]+//; s/ptxas info *: //' | sort -u | head -40
  if [ -n "$spills" ]; then
    echo "cuda-compile-check: register spills with $nvcc:"; echo "$spills"
    failed+=("kernels-$name (spills)")
  fi
  echo "   $kernels kernel entries compiled, no errors"
}

# Debian's toolkit with nothing of /usr/local/cuda on the PATH (its ptxas
# would be found first and compile 11.8's output: not a CUDA 11.8 check).
HOST=clang++-14 kernels nvcc11.8 "$DEBIAN_NVCC" env PATH=/usr/sbin:/usr/bin:/sbin:/bin
if [ -x /usr/local/cuda/bin/nvcc ]; then
  HOST="" kernels local /usr/local/cuda/bin/nvcc env PATH="/usr/local/cuda/bin:$PATH"
else
  echo "== no /usr/local/cuda/bin/nvcc: the kernels are checked with nvcc 11.8 only"
fi

# 2. The torch side of the CUDA path, for syntax against libtorch 1.13.
mkdir -p "$DIR/stub/c10/cuda/impl"
printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' >"$DIR/stub/c10/cuda/impl/cuda_cmake_macros.h"
for src in engine/model/cuda/cuda_ops.cc engine/model/llama_model.cc \
    engine/model/cuda_graph_decode.cc engine/model_builder.cc \
    engine/model/device.cc tests/cuda_test.cc; do
  echo "== $src with -DSTREAMGEN_CUDA=1 (syntax, libtorch 1.13 headers)"
  if ! g++ -std=c++17 -fsyntax-only -DSTREAMGEN_CUDA=1 -I. -I"$DIR/stub" \
       -I/usr/include/torch/csrc/api/include -DSTREAMGEN_TINY_MODEL_DIR='""' \
       "$src" >"$DIR/syntax.log" 2>&1; then
    grep -E "error" "$DIR/syntax.log" | head -20
    failed+=("$src")
  fi
done

echo "cuda-compile-check: $(( $(date +%s) - start )) s; logs in $DIR"
if [ ${#failed[@]} -gt 0 ]; then
  echo "cuda-compile-check: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "cuda-compile-check: every CUDA source compiles"
