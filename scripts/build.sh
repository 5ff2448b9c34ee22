#!/usr/bin/env bash
# Configures and builds streamgen (Release) into ./build, writing the tiny random
# model (for the tests) to build/models/tiny-builtin. Usage: scripts/build.sh [cmake args...]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build "$BUILD_DIR" -j"$JOBS"
