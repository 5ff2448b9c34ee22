#!/usr/bin/env bash
# Engine-only CPU benchmark on the 134M-parameter benchmark model (hidden 768,
# intermediate 2048, 12 layers, 12 heads, 12 kv heads, vocab 32000, untied,
# float32), made by the tiny-model tool with the shared fixture's 32000-piece
# tokenizer. Usage: bench/engine_bench.sh [extra streamgen-bench-engine flags]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
MODEL_DIR=${MODEL_DIR:-$BUILD_DIR/models/bench-134m}
TOKENIZER=${TOKENIZER:-../shared/fixtures/tiny-llama/tokenizer.model}
bench/make_bench_model.sh "$BUILD_DIR" "$MODEL_DIR" "$TOKENIZER"
lscpu | grep -E "Model name|^CPU\(s\)" || true
"$BUILD_DIR/bench/streamgen-bench-engine" --model "$MODEL_DIR" --threads "${THREADS:-2}" "$@"
