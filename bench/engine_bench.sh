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
if [ ! -f "$MODEL_DIR/model.safetensors" ]; then
  if [ ! -f "$TOKENIZER" ]; then
    echo "engine_bench: $TOKENIZER is absent; set TOKENIZER to a 32000-piece sentencepiece model" >&2
    exit 1
  fi
  "$BUILD_DIR/tools/streamgen-make-tiny-model" --out "$MODEL_DIR" --tokenizer "$TOKENIZER" \
    --hidden-size 768 --intermediate-size 2048 --layers 12 --heads 12 --kv-heads 12 \
    --dtype f32 --vocab-size 32000 --context 2048
fi
lscpu | grep -E "Model name|^CPU\(s\)" || true
"$BUILD_DIR/bench/streamgen-bench-engine" --model "$MODEL_DIR" --threads "${THREADS:-2}" "$@"
