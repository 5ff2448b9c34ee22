#!/usr/bin/env bash
# HTTP/SSE against gRPC (issue 8): one streamgen-server on the 134M benchmark
# model, `streamgen-client bench` over gRPC and over the HTTP face
# (--http: POST /v1/completions, stream: true) with the same prompts and
# parameters, at concurrency 1 and 16, alternated (gRPC, HTTP, gRPC, HTTP, ...)
# for ROUNDS rounds so that both faces see the same machine. Prints a table
# and the ratios the issue targets: SSE's inter-token latency at c1 (mean,
# goal: at most +5%) and its throughput at c16 (goal: no loss).
#
#   bench/http_bench.sh                  # the full run (~5 min on 2 cores)
#   BENCH_QUICK=1 bench/http_bench.sh    # a smoke run on the tiny random model
#
# Environment: BUILD_DIR (build), MODEL_DIR, TOKENIZER (as server_bench.sh),
# DTYPE (float32), CONCURRENCIES ("1 16"), ROUNDS (2), PROMPT_TOKENS (128),
# OUTPUT_TOKENS (64), THREADS (2), MAX_BATCH (64), OUT_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
QUICK=${BENCH_QUICK:-0}
SERVER="$BUILD_DIR/server/streamgen-server"
CLIENT="$BUILD_DIR/client/streamgen-client"
DTYPE=${DTYPE:-float32}
CONCURRENCIES=${CONCURRENCIES:-"1 16"}
ROUNDS=${ROUNDS:-2}
PROMPT_TOKENS=${PROMPT_TOKENS:-128}
OUTPUT_TOKENS=${OUTPUT_TOKENS:-64}
THREADS=${THREADS:-2}
MAX_BATCH=${MAX_BATCH:-64}
TOKENIZER=${TOKENIZER:-../shared/fixtures/tiny-llama/tokenizer.model}
if [ "$QUICK" = 1 ]; then
  MODEL_DIR=${MODEL_DIR:-$BUILD_DIR/models/tiny-builtin}
  ROUNDS=1
else
  MODEL_DIR=${MODEL_DIR:-$BUILD_DIR/models/bench-134m}
fi
OUT_DIR=${OUT_DIR:-$BUILD_DIR/http-bench/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT_DIR"
RESULTS="$OUT_DIR/results.jsonl"
: > "$RESULTS"
for binary in "$SERVER" "$CLIENT"; do
  [ -x "$binary" ] || { echo "http_bench: $binary is not built" >&2; exit 1; }
done
if [ ! -f "$MODEL_DIR/model.safetensors" ]; then
  [ "$QUICK" = 1 ] && { echo "http_bench: $MODEL_DIR is absent" >&2; exit 1; }
  bench/make_bench_model.sh "$BUILD_DIR" "$MODEL_DIR" "$TOKENIZER"
fi

LOG="$OUT_DIR/server.log"
"$SERVER" --model "$MODEL_DIR" --dtype "$DTYPE" --threads "$THREADS" --max-batch "$MAX_BATCH" \
  --kv-cache-memory 2GiB --listen 127.0.0.1:0 --port-file "$OUT_DIR/port" \
  --http-listen 127.0.0.1:0 --http-port-file "$OUT_DIR/http-port" --metrics-listen= \
  > "$LOG" 2>&1 &
SERVER_PID=$!
trap 'kill -TERM $SERVER_PID 2>/dev/null; wait $SERVER_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
  kill -0 "$SERVER_PID" 2>/dev/null || { echo "http_bench: the server exited:" >&2; cat "$LOG" >&2; exit 1; }
  if [ -s "$OUT_DIR/port" ] && [ -s "$OUT_DIR/http-port" ] &&
     curl -sf "http://127.0.0.1:$(cat "$OUT_DIR/http-port")/health" > /dev/null; then
    break
  fi
  sleep 0.5
done
GRPC="127.0.0.1:$(cat "$OUT_DIR/port")"
HTTP="http://127.0.0.1:$(cat "$OUT_DIR/http-port")"
echo "model $MODEL_DIR ($DTYPE); prompt $PROMPT_TOKENS, output $OUTPUT_TOKENS tokens;" \
  "threads $THREADS; gRPC $GRPC, HTTP $HTTP; results in $OUT_DIR"

for round in $(seq 1 "$ROUNDS"); do
  for c in $CONCURRENCIES; do
    n=$((2 * c > 8 ? 2 * c : 8))
    [ "$QUICK" = 1 ] && n=$((c > 2 ? c : 2))
    for face in grpc http; do
      flags=()
      [ "$face" = http ] && flags=(--http "$HTTP")
      "$CLIENT" --server "$GRPC" --json bench "${flags[@]}" --concurrency "$c" --requests "$n" \
        --warmup "$c" --prompt-tokens "$PROMPT_TOKENS" --max-new-tokens "$OUTPUT_TOKENS" \
        | /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); d["round"]=int(sys.argv[1]); print(json.dumps(d))' "$round" \
        | tee -a "$RESULTS" || echo "http_bench: $face c$c: some calls failed" >&2
    done
  done
done

/usr/bin/python3 - "$RESULTS" <<'PY' | tee "$OUT_DIR/summary.txt"
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print()
print("| round | concurrency | face | output tok/s | TTFT p50 ms | ITL mean ms | ITL p50 ms | ITL p99 ms | errors |")
print("|---|---|---|---|---|---|---|---|---|")
for r in runs:
    print("| %d | %d | %s | %.1f | %.1f | %.2f | %.2f | %.2f | %d |" % (
        r["round"], r["concurrency"], r["face"], r["output_tokens_per_s"], r["ttft_ms"]["p50"],
        r["itl_ms"]["mean"], r["itl_ms"]["p50"], r["itl_ms"]["p99"], r["errors"]))
print()
for c in sorted({r["concurrency"] for r in runs}):
    def mean(face, key, sub=None):
        v = [(r[key][sub] if sub else r[key]) for r in runs if r["concurrency"] == c and r["face"] == face]
        return sum(v) / len(v) if v else float("nan")
    itl = mean("http", "itl_ms", "mean") / mean("grpc", "itl_ms", "mean")
    tps = mean("http", "output_tokens_per_s") / mean("grpc", "output_tokens_per_s")
    print("c%d: HTTP/gRPC ITL mean %.3f (%+.1f%%), output tok/s %.3f (%+.1f%%)%s" % (
        c, itl, 100 * (itl - 1), tps, 100 * (tps - 1),
        "  [goal c1: ITL <= +5%]" if c == 1 else "  [goal: no throughput loss]" if c == 16 else ""))
if any(r["errors"] for r in runs):
    print("ERRORS: some calls failed (see results.jsonl's first_error)")
PY
echo "results: $OUT_DIR"
