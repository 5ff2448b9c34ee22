#!/usr/bin/env bash
# Sharing a machine (issue 21 §4): one 64-token request at a time against
# streamgen-server on the 134M benchmark model, alone and with a busy loop
# beside the server (one process spinning on one core), for three servers
# started one after another:
#   adaptive  --threads $THREADS (--adaptive-threads, the default)
#   fixed     --threads $THREADS --adaptive-threads=false
#   fewer     --threads $((THREADS - 1)) --adaptive-threads=false
# Rounds alternate alone / busy. Prints the median end-to-end seconds and the
# solo speed each keeps beside the busy loop (goal: >= 0.5, and no worse than
# one thread fewer). llama-server's figure is in bench/llamacpp_compare.sh
# (its busy part).
#
#   bench/contention_bench.sh
#
# Environment: BUILD_DIR (build), MODEL_DIR (BUILD_DIR/models/bench-134m),
# TOKENIZER (as make_bench_model.sh), DTYPE (float32), THREADS (nproc),
# ROUNDS (3), REQUESTS (4 per figure), OUTPUT_TOKENS (64), PROMPT_TOKENS (128), OUT_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
MODEL_DIR=${MODEL_DIR:-$BUILD_DIR/models/bench-134m}
TOKENIZER=${TOKENIZER:-../shared/fixtures/tiny-llama/tokenizer.model}
DTYPE=${DTYPE:-float32}
THREADS=${THREADS:-$(nproc)}
ROUNDS=${ROUNDS:-3}
REQUESTS=${REQUESTS:-4}
OUTPUT_TOKENS=${OUTPUT_TOKENS:-64}
PROMPT_TOKENS=${PROMPT_TOKENS:-128}
OUT_DIR=${OUT_DIR:-$BUILD_DIR/contention-bench/$(date +%Y%m%d-%H%M%S)}
PY=/usr/bin/python3
mkdir -p "$OUT_DIR"
RESULTS="$OUT_DIR/results.jsonl"
: > "$RESULTS"
[ -f "$MODEL_DIR/model.safetensors" ] || bench/make_bench_model.sh "$BUILD_DIR" "$MODEL_DIR" "$TOKENIZER"
[ "$THREADS" -ge 2 ] || { echo "contention_bench: needs THREADS >= 2" >&2; exit 1; }
SERVER_PID= BUSY_PID=
cleanup() {
  [ -n "$SERVER_PID" ] && kill -TERM "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
  [ -n "$BUSY_PID" ] && kill "$BUSY_PID" 2>/dev/null
  true
}
trap cleanup EXIT
echo "contention_bench: CPU [$(grep -o -w 'avx2\|avx512f\|avx512_bf16\|amx_tile' /proc/cpuinfo | sort -u | tr '\n' ' ')] $(nproc) CPUs; $MODEL_DIR $DTYPE; results in $OUT_DIR" >&2
for mode in adaptive fixed fewer; do
  flags=(--threads "$THREADS")
  case $mode in
    fixed) flags+=(--adaptive-threads=false) ;;
    fewer) flags=(--threads $((THREADS - 1)) --adaptive-threads=false) ;;
  esac
  rm -f "$OUT_DIR/port"
  "$BUILD_DIR/server/streamgen-server" --model "$MODEL_DIR" --dtype "$DTYPE" "${flags[@]}" \
    --listen 127.0.0.1:0 --port-file "$OUT_DIR/port" --http-listen= --metrics-listen= \
    > "$OUT_DIR/server-$mode.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 600); do [ -s "$OUT_DIR/port" ] && break; sleep 0.2; done
  for _ in $(seq 1 300); do
    "$BUILD_DIR/client/streamgen-client" --server "127.0.0.1:$(cat "$OUT_DIR/port")" health > /dev/null 2>&1 && break
    sleep 0.2
  done
  for round in $(seq 1 "$ROUNDS"); do
    for busy in 0 1; do
      if [ "$busy" = 1 ]; then (while :; do :; done) & BUSY_PID=$!; sleep 1; fi
      "$BUILD_DIR/client/streamgen-client" --server "127.0.0.1:$(cat "$OUT_DIR/port")" --json bench \
        --concurrency 1 --requests "$REQUESTS" --warmup 1 --prompt-tokens "$PROMPT_TOKENS" \
        --max-new-tokens "$OUTPUT_TOKENS" \
        | $PY -c 'import json,sys; d=json.load(sys.stdin); print(json.dumps({"mode": sys.argv[1], "busy": int(sys.argv[2]), "round": int(sys.argv[3]), "e2e_s": d["e2e_ms"]["p50"] / 1000}))' "$mode" "$busy" "$round" \
        | tee -a "$RESULTS"
      if [ "$busy" = 1 ]; then kill "$BUSY_PID"; wait "$BUSY_PID" 2>/dev/null || true; BUSY_PID=; fi
    done
  done
  kill -TERM "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=
done
$PY - "$RESULTS" "$THREADS" <<'PYEOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
threads = int(sys.argv[2])
names = {"adaptive": f"--threads {threads} (adaptive)", "fixed": f"--threads {threads} --adaptive-threads=false",
         "fewer": f"--threads {threads - 1} --adaptive-threads=false"}
print("| server | alone (s) | beside a busy loop (s) | solo speed kept |\n|---|---|---|---|")
for mode in ("adaptive", "fixed", "fewer"):
    alone = statistics.median(r["e2e_s"] for r in rows if r["mode"] == mode and r["busy"] == 0)
    busy = statistics.median(r["e2e_s"] for r in rows if r["mode"] == mode and r["busy"] == 1)
    print(f"| {names[mode]} | {alone:.3f} | {busy:.3f} | {alone / busy:.2f} |")
PYEOF
