#!/usr/bin/env bash
# The whole test suite: installs dependencies, builds, runs every test under
# ctest. Tests that need ../shared/ or a GPU skip themselves with a message.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
ctest --test-dir "${BUILD_DIR:-build}" --output-on-failure -j"${JOBS:-2}" "$@"
