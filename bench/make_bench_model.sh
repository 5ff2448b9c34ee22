#!/usr/bin/env bash
# Writes the 134M-parameter benchmark model (hidden 768, intermediate 2048,
# 12 layers, 12 heads, 12 kv heads, vocab 32000, untied, float32, context 2048)
# with a 32000-piece sentencepiece tokenizer, unless it is there already.
# Usage: bench/make_bench_model.sh BUILD_DIR MODEL_DIR TOKENIZER
set -euo pipefail
BUILD_DIR=$1 MODEL_DIR=$2 TOKENIZER=$3
[ -f "$MODEL_DIR/model.safetensors" ] && exit 0
if [ ! -f "$TOKENIZER" ]; then
  echo "make_bench_model: $TOKENIZER is absent; set TOKENIZER to a 32000-piece sentencepiece model" >&2
  exit 1
fi
"$BUILD_DIR/tools/streamgen-make-tiny-model" --out "$MODEL_DIR" --tokenizer "$TOKENIZER" \
  --hidden-size 768 --intermediate-size 2048 --layers 12 --heads 12 --kv-heads 12 \
  --dtype f32 --vocab-size 32000 --context 2048
