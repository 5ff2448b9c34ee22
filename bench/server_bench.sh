#!/usr/bin/env bash
# Server benchmark (issue 4): streamgen-server + `streamgen-client bench` on the
# 134M-parameter benchmark model, closed-loop clients at concurrency 1, 4, 16
# and 64 (prompt 128, output 64 tokens; the first wave is warm-up), for
# --dtype float32 and bfloat16 (servers started one after the other), plus the
# engine-only batch-1 figure from bench/engine_bench.sh. Prints a table and
# the ratios the issue targets. Builds nothing: it uses $BUILD_DIR's binaries.
#
#   bench/server_bench.sh                  # the full run (~10-20 min on 2 cores)
#   BENCH_QUICK=1 bench/server_bench.sh    # a smoke run on the tiny random model
#
# Environment: BUILD_DIR (build), MODEL_DIR, TOKENIZER (as engine_bench.sh),
# DTYPES ("float32 bfloat16"; an entry DTYPE:int8 adds --quantization int8, e.g.
# "bfloat16 bfloat16:int8"), CONCURRENCIES ("1 4 16 64"), PROMPT_TOKENS (128),
# OUTPUT_TOKENS (64), THREADS (2), MAX_BATCH (64), KV_CACHE_MEMORY (2GiB),
# MAX_PREFILL_TOKENS (the server's default), SHARED_PREFIX_TOKENS (0: the
# client's --shared-prefix-tokens), SERVER_FLAGS (more server flags, e.g.
# --enable-prefix-caching), OUT_DIR (where the JSON, logs and summary go).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
QUICK=${BENCH_QUICK:-0}
SERVER="$BUILD_DIR/server/streamgen-server"
CLIENT="$BUILD_DIR/client/streamgen-client"
DTYPES=${DTYPES:-"float32 bfloat16"}
CONCURRENCIES=${CONCURRENCIES:-"1 4 16 64"}
PROMPT_TOKENS=${PROMPT_TOKENS:-128}
OUTPUT_TOKENS=${OUTPUT_TOKENS:-64}
THREADS=${THREADS:-2}
MAX_BATCH=${MAX_BATCH:-64}
MAX_PREFILL_TOKENS=${MAX_PREFILL_TOKENS:-}
SHARED_PREFIX_TOKENS=${SHARED_PREFIX_TOKENS:-0}
read -r -a EXTRA_SERVER_FLAGS <<< "${SERVER_FLAGS:-}"
KV_CACHE_MEMORY=${KV_CACHE_MEMORY:-2GiB}
TOKENIZER=${TOKENIZER:-../shared/fixtures/tiny-llama/tokenizer.model}
if [ "$QUICK" = 1 ]; then
  MODEL_DIR=${MODEL_DIR:-$BUILD_DIR/models/tiny-builtin}
  ENGINE_BENCH_FLAGS=(--new-tokens 16 --runs 1)
else
  MODEL_DIR=${MODEL_DIR:-$BUILD_DIR/models/bench-134m}
  ENGINE_BENCH_FLAGS=()
fi
OUT_DIR=${OUT_DIR:-$BUILD_DIR/server-bench/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT_DIR"
RESULTS="$OUT_DIR/results.jsonl"
: > "$RESULTS"

for binary in "$SERVER" "$CLIENT"; do
  if [ ! -x "$binary" ]; then
    echo "server_bench: $binary is not built (cmake --build $BUILD_DIR)" >&2
    exit 1
  fi
done

# Measured requests at concurrency C: max(2C, 8); quick runs: max(C, 2).
requests_for() {
  local c=$1
  if [ "$QUICK" = 1 ]; then echo $((c > 2 ? c : 2)); else echo $((2 * c > 8 ? 2 * c : 8)); fi
}

# The 134M model, made by the same script as bench/engine_bench.sh uses.
if [ ! -f "$MODEL_DIR/model.safetensors" ]; then
  if [ "$QUICK" = 1 ]; then
    echo "server_bench: $MODEL_DIR is absent (build the tiny_model target)" >&2
    exit 1
  fi
  bench/make_bench_model.sh "$BUILD_DIR" "$MODEL_DIR" "$TOKENIZER"
fi

SERVER_PID=""
stop_server() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID"
    wait "$SERVER_PID" || echo "server_bench: the server exited with $?" >&2
  fi
  SERVER_PID=""
}
trap stop_server EXIT

# An entry of DTYPES: "float32", or "bfloat16:int8" (--quantization int8).
dtype_of() { echo "${1%%:*}"; }
quantization_of() { case $1 in *:*) echo "${1#*:}" ;; *) echo none ;; esac; }

# start_server DTYPE[:QUANTIZATION]: starts it on free loopback ports, waits
# for SERVING; sets PORT and METRICS_PORT.
start_server() {
  local dtype quant log="$OUT_DIR/server-$1.log" port_file="$OUT_DIR/port-$1"
  dtype=$(dtype_of "$1")
  quant=$(quantization_of "$1")
  rm -f "$port_file"
  "$SERVER" --model "$MODEL_DIR" --dtype "$dtype" --quantization "$quant" --threads "$THREADS" --max-batch "$MAX_BATCH" \
    --kv-cache-memory "$KV_CACHE_MEMORY" --listen 127.0.0.1:0 --port-file "$port_file" \
    --metrics-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --http-port-file "$port_file.http" ${MAX_PREFILL_TOKENS:+--max-prefill-tokens "$MAX_PREFILL_TOKENS"} \
    ${EXTRA_SERVER_FLAGS[@]+"${EXTRA_SERVER_FLAGS[@]}"} > "$log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 600); do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      echo "server_bench: the server exited; its log ($log):" >&2
      cat "$log" >&2
      exit 1
    fi
    if [ -s "$port_file" ]; then
      PORT=$(cat "$port_file")
      if "$CLIENT" --server "127.0.0.1:$PORT" info > /dev/null 2>&1; then break; fi
    fi
    sleep 0.5
  done
  "$CLIENT" --server "127.0.0.1:$PORT" info > /dev/null  # fails loudly after the timeout
  METRICS_PORT=$(sed -n 's/.*"\{0,1\}metrics_port"\{0,1\}[=:]\([0-9]*\).*/\1/p' "$log" | head -1)
}

lscpu | grep -E "Model name|^CPU\(s\)" || true
if grep -q avx512_bf16 /proc/cpuinfo; then echo "AVX512-BF16: yes"; else echo "AVX512-BF16: no"; fi
echo "model $MODEL_DIR; prompt $PROMPT_TOKENS, output $OUTPUT_TOKENS tokens; threads $THREADS;" \
  "max-batch $MAX_BATCH; max-prefill-tokens ${MAX_PREFILL_TOKENS:-default};" \
  "shared prefix $SHARED_PREFIX_TOKENS; server flags: ${SERVER_FLAGS:-none}; results in $OUT_DIR"
# Engine-only batch 1 (no server): run just before and just after each dtype's
# server, and averaged, so that the gRPC-overhead ratio compares figures taken
# minutes apart at most (this machine's speed drifts by 10-20% over longer).
ENGINE_RESULTS="$OUT_DIR/engine.jsonl"
: > "$ENGINE_RESULTS"
engine_only() {  # DTYPE[:QUANTIZATION] PHASE
  echo "== engine only, $1, batch 1 ($2)"
  MODEL_DIR="$MODEL_DIR" BUILD_DIR="$BUILD_DIR" TOKENIZER="$TOKENIZER" THREADS="$THREADS" \
    bench/engine_bench.sh --dtype "$(dtype_of "$1")" --quantization "$(quantization_of "$1")" \
    --prompt-tokens "$PROMPT_TOKENS" \
    --new-tokens "$OUTPUT_TOKENS" "${ENGINE_BENCH_FLAGS[@]}" | tee "$OUT_DIR/engine-$1-$2.txt"
  tail -1 "$OUT_DIR/engine-$1-$2.txt" | /usr/bin/python3 -c \
    'import json, sys; d = json.load(sys.stdin); d["dtype"], d["phase"] = sys.argv[1:3]; print(json.dumps(d))' \
    "$1" "$2" >> "$ENGINE_RESULTS"
}
for dtype in $DTYPES; do
  engine_only "$dtype" before
  start_server "$dtype"
  echo "== $dtype: server on 127.0.0.1:$PORT (metrics :$METRICS_PORT)"
  for c in $CONCURRENCIES; do
    n=$(requests_for "$c")
    "$CLIENT" --server "127.0.0.1:$PORT" --json bench --concurrency "$c" --requests "$n" \
      --warmup "$c" --prompt-tokens "$PROMPT_TOKENS" --max-new-tokens "$OUTPUT_TOKENS" \
      --shared-prefix-tokens "$SHARED_PREFIX_TOKENS" \
      | /usr/bin/python3 -c \
        'import json, sys; d = json.load(sys.stdin); d["dtype"] = sys.argv[1]; print(json.dumps(d))' \
        "$dtype" \
      | tee -a "$RESULTS" || echo "server_bench: $dtype concurrency $c: some calls failed" >&2
  done
  if [ -n "$METRICS_PORT" ]; then
    curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" > "$OUT_DIR/metrics-$dtype.txt" || true
    grep -E "^streamgen:(num_preemptions_total|generation_tokens_total|prefix_cache_(hits|queries)_total|request_success_total\{finished_reason=\"length\"\})" \
      "$OUT_DIR/metrics-$dtype.txt" || true
  fi
  stop_server
  engine_only "$dtype" after
done

/usr/bin/python3 - "$RESULTS" "$ENGINE_RESULTS" <<'EOF' | tee "$OUT_DIR/summary.txt"
import json, sys
runs = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
# Engine-only: per dtype, the mean of the runs before and after its server
# (each run's figure is already a mean over its timed runs).
engine = {}
for e in (json.loads(l) for l in open(sys.argv[2]) if l.strip()):
    engine.setdefault(e["dtype"], []).append(e["decode_tokens_per_s"])
engine = {d: {"decode_tokens_per_s": sum(v) / len(v), "runs": v} for d, v in engine.items()}
print()
print("| dtype | concurrency | output tok/s | requests/s | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | errors |")
print("|---|---|---|---|---|---|---|---|")
for r in runs:
    print("| %s | %d | %.1f | %.2f | %.1f | %.1f | %.2f | %d |" % (
        r["dtype"], r["concurrency"], r["output_tokens_per_s"], r["requests_per_s"],
        r["ttft_ms"]["p50"], r["ttft_ms"]["p99"], r["itl_ms"]["p50"], r["errors"]))
print()
print("| dtype | engine only, batch 1: tok/s (before / after server) | ms/token (mean) | server c1 ITL mean ms | ITL p50 ms |")
print("|---|---|---|---|---|")
at1 = {r["dtype"]: r for r in runs if r["concurrency"] == 1}
for dtype, e in engine.items():
    r = at1.get(dtype)
    print("| %s | %.1f (%s) | %.2f | %s | %s |" % (
        dtype, e["decode_tokens_per_s"], " / ".join("%.1f" % v for v in e["runs"]),
        1000.0 / e["decode_tokens_per_s"], "%.2f" % r["itl_ms"]["mean"] if r else "",
        "%.2f" % r["itl_ms"]["p50"] if r else ""))
print()
at = {(r["dtype"], r["concurrency"]): r for r in runs}
def best(c):
    rs = [r for r in runs if r["concurrency"] == c]
    return max(rs, key=lambda r: r["output_tokens_per_s"]) if rs else None
c1, c16 = best(1), best(16)
if c1 and c16:
    print("best c16 / best c1 output tok/s: %.2f (%s %.1f / %s %.1f; target >= 6)" % (
        c16["output_tokens_per_s"] / c1["output_tokens_per_s"], c16["dtype"],
        c16["output_tokens_per_s"], c1["dtype"], c1["output_tokens_per_s"]))
for dtype, e in engine.items():
    r = at.get((dtype, 1))
    if r:
        engine_ms = 1000.0 / e["decode_tokens_per_s"]
        print("%s gRPC overhead at c1: ITL mean %.2f ms vs engine-only %.2f ms/token: %+.1f%% "
              "(target <= +5%%)" % (dtype, r["itl_ms"]["mean"], engine_ms,
                                    100.0 * (r["itl_ms"]["mean"] / engine_ms - 1)))
for dtype in sorted({r["dtype"] for r in runs}):
    a, b = at.get((dtype, 1)), at.get((dtype, 4))
    if a and b:
        print("%s output tok/s c4 / c1: %.2f (%.1f / %.1f; target >= 3)" % (
            dtype, b["output_tokens_per_s"] / a["output_tokens_per_s"],
            b["output_tokens_per_s"], a["output_tokens_per_s"]))
for dtype in sorted({r["dtype"] for r in runs}):
    a, b = at.get((dtype, 1)), at.get((dtype, 16))
    if a and b and a["ttft_ms"]["p50"] > 0:
        print("%s TTFT p50 c16 / c1: %.2f (%.1f / %.1f ms; target <= 3)" % (
            dtype, b["ttft_ms"]["p50"] / a["ttft_ms"]["p50"], b["ttft_ms"]["p50"],
            a["ttft_ms"]["p50"]))
if any(r["errors"] for r in runs):
    print("ERRORS: some calls failed (see results.jsonl's first_error)")
EOF
echo "results: $OUT_DIR"
