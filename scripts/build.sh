#!/usr/bin/env bash
# Configures and builds streamgen (Release) into ./build, writing the tiny random
# model (for the tests) to build/models/tiny-builtin.
#   scripts/build.sh [cmake args...]
# Environment: BUILD_DIR (default build), JOBS (default nproc), BUILD_TARGETS
# (space-separated; default: everything, tests included).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ccache-env.sh
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
targets=()
for t in ${BUILD_TARGETS:-}; do targets+=(--target "$t"); done
cmake --build "$BUILD_DIR" -j"$JOBS" "${targets[@]}"
