#!/usr/bin/env bash
# Sets everything up on a fresh Debian 12 machine and runs the main job on the
# built-in tiny model (random weights: the text is gibberish by design).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
echo
echo "== streamgen-generate on the built-in tiny model =="
build/tools/streamgen-generate --prompt "Once upon a time" --max-new-tokens 48
