#!/usr/bin/env bash
# Constrained decoding's cost (issue 22 §4), in one run:
#   engine: streamgen-bench-constrained (free vs JSON-schema-constrained
#           decode tokens/s at batch 1 and 16, interleaved rounds, the masks'
#           overlap with the forward pass). llama.cpp has no engine-level tool
#           that takes a grammar, so it is compared through its server.
#   server: the same client against streamgen-server (POST /v1/completions
#           with response_format json_schema) and llama-server (POST
#           /v1/completions with json_schema: it converts the schema to GBNF
#           itself and samples through its grammar), free (ignore_eos) and
#           constrained, at each concurrency, interleaved round by round.
# Prints the engine's summary and one table: tokens/s per server and mode,
# the ratio constrained / free per server, and streamgen / llama.cpp.
#
# The schema is wrapped as an array of at least ARRAY_OF documents of SCHEMA
# so that no constrained row can end before OUTPUT_TOKENS: both modes then
# generate exactly OUTPUT_TOKENS per request (the client checks the count).
# The client is closed-loop and non-streaming (Python's standard library, a
# thread per stream): output tokens/s = usage.completion_tokens over the wall
# time of the measured requests, prefill of the short prompts included.
#
#   LLAMA_DIR=/work/llamacpp-native bench/constrained_bench.sh
#   PARTS=server ROUNDS=2 CONCURRENCIES="1 16" bench/constrained_bench.sh
#
# Environment: BUILD_DIR (build), LLAMA_DIR (BUILD_DIR/llamacpp-native: a
# llama.cpp checkout in src/ built in build/, as bench/llamacpp_compare.sh
# makes it), MODEL_DIR (BUILD_DIR/models/bench-134m), GGUF (the model as f32
# GGUF; made by bench/make_bench_gguf.py if absent), TOKENIZER (as
# make_bench_model.sh), SCHEMA (tests/json_schema_suite/corpus/person.json),
# ARRAY_OF (1000), DTYPE (float32), THREADS (2), ROUNDS (3), PARTS
# ("engine server"), BATCHES ("1,16"), CONCURRENCIES ("1 16"), OUTPUT_TOKENS
# (64), REQUESTS_PER_STREAM (2), OUT_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
LLAMA_DIR=${LLAMA_DIR:-$BUILD_DIR/llamacpp-native}
MODEL_DIR=${MODEL_DIR:-$BUILD_DIR/models/bench-134m}
TOKENIZER=${TOKENIZER:-../shared/fixtures/tiny-llama/tokenizer.model}
SCHEMA=${SCHEMA:-tests/json_schema_suite/corpus/person.json}
ARRAY_OF=${ARRAY_OF:-1000}
DTYPE=${DTYPE:-float32}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
PARTS=${PARTS:-"engine server"}
BATCHES=${BATCHES:-1,16}
CONCURRENCIES=${CONCURRENCIES:-"1 16"}
OUTPUT_TOKENS=${OUTPUT_TOKENS:-64}
REQUESTS_PER_STREAM=${REQUESTS_PER_STREAM:-2}
OUT_DIR=${OUT_DIR:-$BUILD_DIR/constrained-bench/$(date +%Y%m%d-%H%M%S)}
PY=/usr/bin/python3
mkdir -p "$OUT_DIR"
RESULTS="$OUT_DIR/results.jsonl"
: > "$RESULTS"
note() { echo "constrained_bench: $*" >&2; }

[ -f "$MODEL_DIR/model.safetensors" ] || bench/make_bench_model.sh "$BUILD_DIR" "$MODEL_DIR" "$TOKENIZER"
ISA=$(grep -o -w 'avx2\|fma\|f16c\|avx512f\|avx512_bf16\|avx512_vnni\|amx_tile' /proc/cpuinfo | sort -u | tr '\n' ' ')
note "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) [$ISA], $(nproc) CPUs; load $(cut -d' ' -f1-3 /proc/loadavg); results in $OUT_DIR"

# ---- engine ----
if [[ " $PARTS " == *" engine "* ]]; then
  "$BUILD_DIR/bench/streamgen-bench-constrained" --model "$MODEL_DIR" --schema "$SCHEMA" \
    --array-of "$ARRAY_OF" --dtype "$DTYPE" --threads "$THREADS" --batches "$BATCHES" \
    --new-tokens "$OUTPUT_TOKENS" --rounds "$ROUNDS" 2> "$OUT_DIR/engine.log" | tee "$OUT_DIR/engine.txt"
fi
[[ " $PARTS " == *" server "* ]] || exit 0

# ---- servers ----
LBIN="$LLAMA_DIR/build/bin"
if [ ! -x "$LBIN/llama-server" ]; then
  note "no $LBIN/llama-server: build llama.cpp with bench/llamacpp_compare.sh (or set LLAMA_DIR)"
  exit 1
fi
LLAMA_COMMIT=$(git -C "$LLAMA_DIR/src" log -1 --format=%h 2>/dev/null || echo unknown)
GGUF=${GGUF:-$BUILD_DIR/llamacpp-bench/$(basename "$MODEL_DIR")-f32.gguf}
if [ ! -f "$GGUF" ]; then
  mkdir -p "$(dirname "$GGUF")"
  $PY bench/make_bench_gguf.py --hf "$MODEL_DIR" --gguf-py "$LLAMA_DIR/src/gguf-py" --outtype f32 \
    --out "$GGUF" > /dev/null
fi
[ "$DTYPE" = float32 ] || note "DTYPE=$DTYPE: llama-server still runs $GGUF"

SG_PID='' LL_PID=''
stop_servers() {
  [ -n "$SG_PID" ] && kill -TERM "$SG_PID" 2>/dev/null && wait "$SG_PID" 2>/dev/null || true
  [ -n "$LL_PID" ] && kill -TERM "$LL_PID" 2>/dev/null && wait "$LL_PID" 2>/dev/null || true
  SG_PID='' LL_PID=''
}
trap stop_servers EXIT
LL_PORT=$((20000 + RANDOM % 20000))
rm -f "$OUT_DIR/http-port"
"$BUILD_DIR/server/streamgen-server" --model "$MODEL_DIR" --dtype "$DTYPE" --threads "$THREADS" \
  --max-batch 16 --kv-cache-memory 2GiB --listen 127.0.0.1:0 --port-file "$OUT_DIR/port" \
  --http-listen 127.0.0.1:0 --http-port-file "$OUT_DIR/http-port" --metrics-listen= \
  > "$OUT_DIR/streamgen.log" 2>&1 &
SG_PID=$!
"$LBIN/llama-server" -m "$GGUF" -t "$THREADS" -tb "$THREADS" -np 16 -c $((16 * (OUTPUT_TOKENS + 64))) \
  --host 127.0.0.1 --port "$LL_PORT" > "$OUT_DIR/llama-server.log" 2>&1 &
LL_PID=$!
for _ in $(seq 1 600); do
  if [ -s "$OUT_DIR/http-port" ] && curl -sf "http://127.0.0.1:$(cat "$OUT_DIR/http-port")/health" > /dev/null &&
     curl -sf "http://127.0.0.1:$LL_PORT/health" > /dev/null; then
    break
  fi
  kill -0 "$SG_PID" 2>/dev/null && kill -0 "$LL_PID" 2>/dev/null || { note "a server exited (logs in $OUT_DIR)"; exit 1; }
  sleep 0.5
done
SG_URL="http://127.0.0.1:$(cat "$OUT_DIR/http-port")"
LL_URL="http://127.0.0.1:$LL_PORT"

# One measurement: $1 engine, $2 url, $3 mode (free|constrained), $4
# concurrency, $5 round. A warm-up wave, then REQUESTS_PER_STREAM requests
# per stream; prints one JSON line.
client() {
  $PY - "$@" "$SCHEMA" "$ARRAY_OF" "$OUTPUT_TOKENS" "$REQUESTS_PER_STREAM" <<'PYEOF'
import json, sys, threading, time, urllib.request
engine, url, mode, c, rnd, schema_path, array_of, n_out, per_stream = sys.argv[1:]
c, rnd, array_of, n_out, per_stream = int(c), int(rnd), int(array_of), int(n_out), int(per_stream)
schema = json.load(open(schema_path))
if array_of > 0:
    schema = {"type": "array", "minItems": array_of, "items": schema}
# The model's name as each server serves it.
with urllib.request.urlopen(url + "/v1/models", timeout=60) as r:
    model = json.load(r)["data"][0]["id"]
def body(i):
    b = {"model": model, "prompt": f"Request {rnd}-{i}: a JSON list of people.",
         "max_tokens": n_out, "temperature": 0, "stream": False}
    if mode == "free":
        b["ignore_eos"] = True
    elif engine == "streamgen":
        b["response_format"] = {"type": "json_schema", "json_schema": {"name": "bench", "schema": schema}}
    else:
        b["json_schema"] = schema  # llama-server's /v1/completions field (converted to GBNF)
    return json.dumps(b).encode()
def call(i):
    req = urllib.request.Request(url + "/v1/completions", data=body(i),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        d = json.load(r)
    return d["usage"]["completion_tokens"], d["choices"][0]["text"]
def wave(offset, n_each, out):
    def stream(s):
        for k in range(n_each):
            out.append(call(offset + s * n_each + k))
    ts = [threading.Thread(target=stream, args=(s,)) for s in range(c)]
    for t in ts: t.start()
    for t in ts: t.join()
wave(10_000, 1, [])  # warm-up: one request per stream
got = []
t0 = time.monotonic()
wave(0, per_stream, got)
wall = time.monotonic() - t0
tokens = [n for n, _ in got]
short = sum(1 for n in tokens if n != n_out)
bad = 0
if mode == "constrained":
    bad = sum(1 for _, text in got if not text.lstrip().startswith("["))
print(json.dumps({"engine": engine, "mode": mode, "c": c, "round": rnd,
                  "tokens_per_s": sum(tokens) / wall, "requests": len(got),
                  "short": short, "not_json": bad, "sample": got[0][1][:120]}))
PYEOF
}

for round in $(seq 1 "$ROUNDS"); do
  for c in $CONCURRENCIES; do
    # The order turns each round (the machine's speed drifts).
    runs=("streamgen $SG_URL free" "streamgen $SG_URL constrained" "llama.cpp $LL_URL free" "llama.cpp $LL_URL constrained")
    for k in 0 1 2 3; do
      # shellcheck disable=SC2086
      set -- ${runs[$(((k + round) % 4))]}
      client "$1" "$2" "$3" "$c" "$round" >> "$RESULTS" || note "$1 $3 c$c: the client failed"
      tail -1 "$RESULTS" >&2
    done
  done
done
stop_servers

$PY - "$RESULTS" "$ISA" "$LLAMA_COMMIT" "$(cut -d' ' -f1-3 /proc/loadavg)" <<'PYEOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(f"CPU ISA: {sys.argv[2]}; llama.cpp {sys.argv[3]}; load average at the end {sys.argv[4]}")
def vals(eng, mode, c):
    return {r["round"]: r["tokens_per_s"] for r in rows if r["engine"] == eng and r["mode"] == mode and r["c"] == c}
def mmm(v):
    v = sorted(v)
    return f"{v[0]:.2f} / {statistics.median(v):.2f} / {v[-1]:.2f}" if v else "-"
print("| concurrency | server | free tok/s (median) | constrained tok/s (median) | constrained / free, min / median / max |")
print("|---|---|---|---|---|")
for c in sorted({r["c"] for r in rows}):
    for eng in ("streamgen", "llama.cpp"):
        f, k = vals(eng, "free", c), vals(eng, "constrained", c)
        ratio = [k[r] / f[r] for r in f if r in k and f[r] > 0]
        med = lambda d: f"{statistics.median(d.values()):.1f}" if d else "-"
        print(f"| c{c} | {eng} | {med(f)} | {med(k)} | {mmm(ratio)} |")
    s, l = vals("streamgen", "constrained", c), vals("llama.cpp", "constrained", c)
    ratio = [s[r] / l[r] for r in s if r in l and l[r] > 0]
    print(f"| c{c} | streamgen / llama.cpp, constrained | | | {mmm(ratio)} |")
short = sum(r["short"] for r in rows)
bad = sum(r["not_json"] for r in rows)
if short or bad:
    print(f"warning: {short} requests generated another count than asked, {bad} constrained outputs did not start with '['")
PYEOF
