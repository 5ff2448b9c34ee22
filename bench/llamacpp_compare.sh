#!/usr/bin/env bash
# streamgen against llama.cpp on the same weights, side by side in one run
# (issue 21): llama.cpp built here from the source bundle in npm's
# node-llama-cpp (GGML_NATIVE=ON: every ISA the CPU has), the 134M benchmark
# model converted to GGUF (bench/make_bench_gguf.py), then interleaved rounds
# of
#   engine: decode batch 1 (float32, bfloat16, int8 vs q8_0), prefill of 128
#           tokens, a batch-16 decode step
#           (streamgen-bench-engine | llama-bench, llama-batched-bench)
#   server: closed-loop clients at each concurrency, the same client
#           (streamgen-client bench --http: POST /v1/completions, SSE) against
#           streamgen-server and llama-server
#   busy:   (CONTENTION=1) one 64-token request alone and with a busy loop
#           beside each server
# Prints one table with the ratios (streamgen / llama.cpp). Not part of CI:
# building llama.cpp takes ~15 minutes on 2 cores.
#
#   bench/llamacpp_compare.sh                    # the full run
#   PARTS=engine ROUNDS=1 bench/llamacpp_compare.sh
#   ISA=avx2 bench/llamacpp_compare.sh           # as on an AVX2-only CPU
#
# ISA=avx2 runs the whole comparison as on an AVX2-only CPU, on a CPU with
# more (an emulation of the instruction set only: the cores, caches and
# memory stay this machine's): llama.cpp built a second time in
# LLAMA_DIR/build-avx2 for AVX2 + FMA + F16C (GGML_NATIVE=OFF, every AVX-512,
# AVX-VNNI and AMX option off), and streamgen with STREAMGEN_KERNEL_ISA=avx2
# (its AVX2 kernels and routes, libtorch's oneDNN off: engine/model/device.h,
# HoldCpuLibraries), ATEN_CPU_CAPABILITY=avx2 and OPENBLAS_CORETYPE=Haswell.
#
# Environment: BUILD_DIR (build), LLAMA_DIR (BUILD_DIR/llamacpp-native: its
# clone and build), MODEL_DIR (BUILD_DIR/models/bench-134m), TOKENIZER (as
# make_bench_model.sh), THREADS (2), ROUNDS (3), PARTS ("engine server busy"),
# DTYPES ("float32 bfloat16 int8"), SERVER_DTYPES ("float32 bfloat16"),
# CONCURRENCIES ("1 4 16"), PROMPT_TOKENS (128), OUTPUT_TOKENS (64), OUT_DIR,
# ISA (native or avx2).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
LLAMA_DIR=${LLAMA_DIR:-$BUILD_DIR/llamacpp-native}
MODEL_DIR=${MODEL_DIR:-$BUILD_DIR/models/bench-134m}
TOKENIZER=${TOKENIZER:-../shared/fixtures/tiny-llama/tokenizer.model}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
PARTS=${PARTS:-"engine server busy"}
DTYPES=${DTYPES:-"float32 bfloat16 int8"}
SERVER_DTYPES=${SERVER_DTYPES:-"float32 bfloat16"}
CONCURRENCIES=${CONCURRENCIES:-"1 4 16"}
PROMPT_TOKENS=${PROMPT_TOKENS:-128}
OUTPUT_TOKENS=${OUTPUT_TOKENS:-64}
OUT_DIR=${OUT_DIR:-$BUILD_DIR/llamacpp-compare/$(date +%Y%m%d-%H%M%S)}
ISA=${ISA:-native}
PY=/usr/bin/python3
BUNDLE=tests/llamacpp/node_modules/node-llama-cpp/llama/gitRelease.bundle
mkdir -p "$OUT_DIR"
RESULTS="$OUT_DIR/results.jsonl"
: > "$RESULTS"
note() { echo "llamacpp_compare: $*" >&2; }
record() { $PY -c 'import json,sys; print(json.dumps(dict(json.loads(sys.argv[1]), **json.loads(sys.stdin.read() or "{}"))))' "$1" >> "$RESULTS"; }

# ---- llama.cpp, built from the bundle ----
if [ ! -f "$BUNDLE" ]; then
  (cd tests/llamacpp && npm install --omit=optional --no-audit --no-fund > /dev/null)
fi
if [ ! -d "$LLAMA_DIR/src" ]; then
  git clone --quiet "$BUNDLE" "$LLAMA_DIR/src"
fi
case $ISA in
  native) LBUILD="$LLAMA_DIR/build" LFLAGS=(-DGGML_NATIVE=ON) ;;
  avx2)
    LBUILD="$LLAMA_DIR/build-avx2"
    LFLAGS=(-DGGML_NATIVE=OFF -DGGML_CPU_ALL_VARIANTS=OFF -DGGML_BACKEND_DL=OFF)
    for o in SSE42 AVX AVX2 FMA F16C BMI2; do LFLAGS+=("-DGGML_$o=ON"); done
    for o in AVX_VNNI AVX512 AVX512_VBMI AVX512_VNNI AVX512_BF16 AMX_TILE AMX_INT8 AMX_BF16; do
      LFLAGS+=("-DGGML_$o=OFF")
    done
    # For streamgen's processes (llama.cpp reads none of these).
    export STREAMGEN_KERNEL_ISA=avx2 ATEN_CPU_CAPABILITY=avx2 OPENBLAS_CORETYPE=Haswell ;;
  *) note "ISA=$ISA: expected native or avx2"; exit 2 ;;
esac
LBIN="$LBUILD/bin"
if [ ! -x "$LBIN/llama-server" ] || [ ! -x "$LBIN/llama-bench" ] || [ ! -x "$LBIN/llama-batched-bench" ]; then
  note "building llama.cpp (${LFLAGS[*]}) in $LBUILD"
  cmake -S "$LLAMA_DIR/src" -B "$LBUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release "${LFLAGS[@]}" \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=ON > "$OUT_DIR/llamacpp-cmake.log"
  cmake --build "$LBUILD" -j"$(nproc)" --target llama-server llama-bench \
    llama-batched-bench > "$OUT_DIR/llamacpp-build.log"
fi
# llama.cpp's own account of the ISA it was compiled for (its system_info,
# printed before it fails to load a model that is not there).
LLAMA_SYSINFO=$(timeout 20 "$LBIN/llama-server" -lv 5 --port 0 -m /nonexistent 2>&1 | grep -o 'CPU : .*' | head -1 || true)
LLAMA_COMMIT=$(git -C "$LLAMA_DIR/src" log -1 --format=%h)

# ---- the model, both ways ----
[ -f "$MODEL_DIR/model.safetensors" ] || bench/make_bench_model.sh "$BUILD_DIR" "$MODEL_DIR" "$TOKENIZER"
GGUF_DIR="$BUILD_DIR/llamacpp-bench"
mkdir -p "$GGUF_DIR"
for t in f32 bf16 q8_0; do
  g="$GGUF_DIR/$(basename "$MODEL_DIR")-$t.gguf"
  if [ ! -f "$g" ] || [ "$g" -ot "$MODEL_DIR/model.safetensors" ]; then
    $PY bench/make_bench_gguf.py --hf "$MODEL_DIR" --gguf-py "$LLAMA_DIR/src/gguf-py" --outtype "$t" \
      --out "$g" > /dev/null
  fi
done
gguf_of() {  # streamgen dtype -> GGUF
  case $1 in float32) echo "$GGUF_DIR/$(basename "$MODEL_DIR")-f32.gguf" ;;
    bfloat16) echo "$GGUF_DIR/$(basename "$MODEL_DIR")-bf16.gguf" ;;
    int8) echo "$GGUF_DIR/$(basename "$MODEL_DIR")-q8_0.gguf" ;; esac
}
sg_flags() {  # streamgen dtype -> flags (int8: bfloat16 activations, as the README advises)
  case $1 in int8) echo "--dtype bfloat16 --quantization int8" ;; *) echo "--dtype $1" ;; esac
}
CPU_FLAGS=$(grep -o -w 'avx2\|fma\|f16c\|avx512f\|avx512_bf16\|avx512_vnni\|amx_tile' /proc/cpuinfo | sort -u | tr '\n' ' ')
note "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) [$CPU_FLAGS], $(nproc) CPUs; ISA=$ISA; llama.cpp $LLAMA_COMMIT [$LLAMA_SYSINFO]; results in $OUT_DIR"
$PY -c 'import json,sys; print(json.dumps(dict(zip(["cpu_isa", "llama_cpp", "threads", "isa", "llama_sysinfo"], sys.argv[1:]))))' \
  "$CPU_FLAGS" "$LLAMA_COMMIT" "$THREADS" "$ISA" "$LLAMA_SYSINFO" > "$OUT_DIR/meta.json"

# ---- engine ----
engine_round() {
  local round=$1 d
  for d in $DTYPES; do
    # shellcheck disable=SC2046
    "$BUILD_DIR/bench/streamgen-bench-engine" --model "$MODEL_DIR" $(sg_flags "$d") --threads "$THREADS" \
      --new-tokens "$OUTPUT_TOKENS" --runs 3 --batch 16 --prompt_tokens "$PROMPT_TOKENS" 2>&1 \
      | tee -a "$OUT_DIR/streamgen-bench-engine-$d.log" | tail -1 | $PY -c 'import json,sys; d=json.load(sys.stdin); print(json.dumps({"decode": d["decode_tokens_per_s"], "prefill": 1000*d["prefill_tokens"]/d["prefill_ms"], "batch16": 1000*16/d["batch_step_ms"]}))' \
      | record "{\"part\": \"engine\", \"engine\": \"streamgen\", \"dtype\": \"$d\", \"round\": $round}"
    "$LBIN/llama-bench" -m "$(gguf_of "$d")" -t "$THREADS" -p "$PROMPT_TOKENS" -n "$OUTPUT_TOKENS" -r 3 -o json 2>/dev/null \
      | $PY -c 'import json,sys; r=json.load(sys.stdin); g={("prefill" if x["n_gen"]==0 else "decode"): x["avg_ts"] for x in r}; print(json.dumps(g))' \
      | record "{\"part\": \"engine\", \"engine\": \"llama.cpp\", \"dtype\": \"$d\", \"round\": $round}"
    "$LBIN/llama-batched-bench" -m "$(gguf_of "$d")" -t "$THREADS" -c 4096 -b 2048 -ub 512 \
      -npp "$PROMPT_TOKENS" -ntg "$OUTPUT_TOKENS" -npl 16 --output-format jsonl 2>/dev/null \
      | grep '^{' | tail -1 | $PY -c 'import json,sys; r=json.load(sys.stdin); print(json.dumps({"batch16": r["speed_tg"]}))' \
      | record "{\"part\": \"engine\", \"engine\": \"llama.cpp\", \"dtype\": \"$d\", \"round\": $round, \"batched\": true}"
  done
}

# ---- servers ----
SG_PID= LL_PID=
stop_servers() {
  [ -n "$SG_PID" ] && kill -TERM "$SG_PID" 2>/dev/null && wait "$SG_PID" 2>/dev/null || true
  [ -n "$LL_PID" ] && kill -TERM "$LL_PID" 2>/dev/null && wait "$LL_PID" 2>/dev/null || true
  SG_PID= LL_PID=
}
BUSY_PID=
trap 'stop_servers; [ -n "$BUSY_PID" ] && kill "$BUSY_PID" 2>/dev/null; true' EXIT
LL_PORT=$((20000 + RANDOM % 20000))
start_servers() {  # $1: dtype
  local d=$1 slots=16
  # shellcheck disable=SC2046
  "$BUILD_DIR/server/streamgen-server" --model "$MODEL_DIR" $(sg_flags "$d") --threads "$THREADS" \
    --max-batch 64 --kv-cache-memory 2GiB --listen 127.0.0.1:0 --port-file "$OUT_DIR/port" \
    --http-listen 127.0.0.1:0 --http-port-file "$OUT_DIR/http-port" --metrics-listen= \
    > "$OUT_DIR/streamgen-$d.log" 2>&1 &
  SG_PID=$!
  "$LBIN/llama-server" -m "$(gguf_of "$d")" -t "$THREADS" -np "$slots" \
    -c $((slots * (PROMPT_TOKENS + OUTPUT_TOKENS + 16))) --host 127.0.0.1 --port "$LL_PORT" \
    > "$OUT_DIR/llama-server-$d.log" 2>&1 &
  LL_PID=$!
  for _ in $(seq 1 600); do
    if [ -s "$OUT_DIR/http-port" ] && curl -sf "http://127.0.0.1:$(cat "$OUT_DIR/http-port")/health" > /dev/null &&
       curl -sf "http://127.0.0.1:$LL_PORT/health" > /dev/null; then
      return 0
    fi
    kill -0 "$SG_PID" 2>/dev/null && kill -0 "$LL_PID" 2>/dev/null || { note "a server exited (logs in $OUT_DIR)"; return 1; }
    sleep 0.5
  done
  note "servers not ready"; return 1
}
# Every client run draws prompts of its own (--prompt-seed; both servers get
# the same ones in a pair): with the same prompts run after run, llama-server's
# prompt cache skipped the whole prefill (c1 TTFT 18 ms against 200), so the
# figures measured its cache, not the serving.
SEED=$((RANDOM * 32768 + RANDOM))
client_bench() {  # $1 url, $2 concurrency, $3 requests, $4 prompt seed
  "$BUILD_DIR/client/streamgen-client" --server "127.0.0.1:$(cat "$OUT_DIR/port")" --json bench \
    --http "$1" --concurrency "$2" --requests "$3" --warmup "$2" --prompt-tokens "$PROMPT_TOKENS" \
    --max-new-tokens "$OUTPUT_TOKENS" --prompt-seed "$4"
}
server_part() {
  local d c n round engine url
  for d in $SERVER_DTYPES; do
    rm -f "$OUT_DIR/port" "$OUT_DIR/http-port"
    start_servers "$d"
    for round in $(seq 1 "$ROUNDS"); do
      for c in $CONCURRENCIES; do
        n=$((2 * c > 8 ? 2 * c : 8))
        SEED=$((SEED + 1))
        for engine in streamgen llama.cpp; do
          url="http://127.0.0.1:$(cat "$OUT_DIR/http-port")"
          [ "$engine" = llama.cpp ] && url="http://127.0.0.1:$LL_PORT"
          client_bench "$url" "$c" "$n" "$SEED" | $PY -c 'import json,sys; d=json.load(sys.stdin); print(json.dumps({"tokens_per_s": d["output_tokens_per_s"], "failed": d.get("failed", 0)}))' \
            | record "{\"part\": \"server\", \"engine\": \"$engine\", \"dtype\": \"$d\", \"c\": $c, \"round\": $round}" \
            || note "$engine $d c$c: the client failed"
        done
      done
    done
    if [[ " $PARTS " == *" busy "* ]]; then
      for round in $(seq 1 "$ROUNDS"); do
        for busy in 0 1; do
          SEED=$((SEED + 1))
          if [ "$busy" = 1 ]; then (while :; do :; done) & BUSY_PID=$!; sleep 1; fi
          for engine in streamgen llama.cpp; do
            url="http://127.0.0.1:$(cat "$OUT_DIR/http-port")"
            [ "$engine" = llama.cpp ] && url="http://127.0.0.1:$LL_PORT"
            client_bench "$url" 1 4 "$SEED" | $PY -c 'import json,sys; d=json.load(sys.stdin); print(json.dumps({"e2e_s": d["e2e_ms"]["p50"]/1000}))' \
              | record "{\"part\": \"busy\", \"engine\": \"$engine\", \"dtype\": \"$d\", \"busy\": $busy, \"round\": $round}" \
              || note "$engine busy=$busy: the client failed"
          done
          if [ "$busy" = 1 ]; then kill "$BUSY_PID"; wait "$BUSY_PID" 2>/dev/null || true; BUSY_PID=; fi
        done
      done
    fi
    stop_servers
  done
}

for round in $(seq 1 "$ROUNDS"); do
  [[ " $PARTS " == *" engine "* ]] && engine_round "$round"
done
if [[ " $PARTS " == *" server "* ]] || [[ " $PARTS " == *" busy "* ]]; then server_part; fi

$PY - "$RESULTS" "$OUT_DIR/meta.json" <<'PYEOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
meta = json.load(open(sys.argv[2]))
print(f"CPU ISA: {meta['cpu_isa']}; llama.cpp {meta['llama_cpp']}; threads {meta['threads']}")
if meta.get("isa") == "avx2":
    print("As on an AVX2-only CPU (emulated: llama.cpp built for AVX2+FMA+F16C, streamgen with "
          "STREAMGEN_KERNEL_ISA=avx2, ATEN_CPU_CAPABILITY=avx2, OPENBLAS_CORETYPE=Haswell; "
          "the cores, caches and memory are this CPU's)")
    print(f"llama.cpp system_info: {meta.get('llama_sysinfo', '')}")
def med(sel, key):
    vals = [r[key] for r in rows if sel(r) and key in r]
    return statistics.median(vals) if vals else None
def line(name, sg, ll):
    ratio = f"{sg / ll:.2f}" if sg and ll else "-"
    fmt = lambda v: f"{v:.1f}" if v else "-"
    print(f"| {name} | {fmt(ll)} | {fmt(sg)} | {ratio} |")
print("| figure | llama.cpp | streamgen | ratio |\n|---|---|---|---|")
for d in sorted({r["dtype"] for r in rows if r["part"] == "engine"}, key=["float32", "bfloat16", "int8"].index):
    e = lambda eng, key, d=d: med(lambda r: r["part"] == "engine" and r["engine"] == eng and r["dtype"] == d, key)
    line(f"{d} decode, batch 1 (tok/s)", e("streamgen", "decode"), e("llama.cpp", "decode"))
    line(f"{d} prefill, {128} tokens (tok/s)", e("streamgen", "prefill"), e("llama.cpp", "prefill"))
    line(f"{d} decode, batch 16 (tok/s)", e("streamgen", "batch16"), e("llama.cpp", "batch16"))
for d in sorted({r["dtype"] for r in rows if r["part"] == "server"}):
    for c in sorted({r["c"] for r in rows if r["part"] == "server"}):
        s = lambda eng, d=d, c=c: med(lambda r: r["part"] == "server" and r["engine"] == eng and r["dtype"] == d and r["c"] == c, "tokens_per_s")
        line(f"server {d}, c{c} (tok/s)", s("streamgen"), s("llama.cpp"))
    s1 = med(lambda r: r["part"] == "server" and r["engine"] == "streamgen" and r["dtype"] == d and r["c"] == 1, "tokens_per_s")
    s4 = med(lambda r: r["part"] == "server" and r["engine"] == "streamgen" and r["dtype"] == d and r["c"] == 4, "tokens_per_s")
    if s1 and s4:
        print(f"| server {d}: streamgen c4 / c1 | | {s4 / s1:.2f} | |")
for d in sorted({r["dtype"] for r in rows if r["part"] == "busy"}):
    for eng in ("streamgen", "llama.cpp"):
        solo = med(lambda r: r["part"] == "busy" and r["engine"] == eng and r["dtype"] == d and r["busy"] == 0, "e2e_s")
        busy = med(lambda r: r["part"] == "busy" and r["engine"] == eng and r["dtype"] == d and r["busy"] == 1, "e2e_s")
        if solo and busy:
            print(f"| {eng} {d}: 64-token request alone / beside a busy loop (s) | {solo:.2f} / {busy:.2f} | solo speed kept: {solo / busy:.2f} | |")
PYEOF
