#!/usr/bin/env bash
# llama.cpp's speculative decoding with a draft model, side by side with
# streamgen-bench-spec: the same target and draft (converted to float32 GGUF
# with bench/make_bench_gguf.py), the same prompts (the bench's `prose` and
# `copy` workloads), greedy, the same number of new tokens (ignore_eos), one
# request at a time, through llama-server (`--model-draft` with
# `--spec-type draft-simple`) against the same server without a draft.
#
#   bench/spec_llamacpp.sh
#   DRAFT=build/models/demo-brown-draft-kd THREADS="1 2" ROUNDS=3 bench/spec_llamacpp.sh
#
# Environment: LLAMA_BIN (the folder of llama-server; default
# /work/llamacpp-native/build/bin), GGUF_PY (llama.cpp's gguf-py; default
# LLAMA_BIN/../../src/gguf-py), TARGET (models/demo-brown), DRAFT
# (build/models/demo-brown-draft: tools/demo_model/train_draft.sh makes it),
# THREADS ("1 2"), MODES ("none draft"; also "ngram": --spec-type ngram-simple,
# llama.cpp's prompt lookup, and "ngram+draft": both, the n-gram lookup first
# and the draft where it finds nothing, as llama.cpp orders them), ROUNDS (3), NEW_TOKENS (128), DRAFT_MAX (llama.cpp's
# --spec-draft-n-max; empty: its default, 3), DRAFT_P_MIN (--spec-draft-p-min:
# it stops drafting where the draft's top probability, renormalised over its
# top 10, is below this; empty: its default, 0), PORT (18571), OUT_DIR
# (build/spec-llamacpp).
#
# Per threads setting, round after round, a server per mode in turn (a fresh
# server each, so neither inherits the other's caches); each
# serves every prompt of both workloads once (cache_prompt off). Figures:
# tokens/s = generated tokens / the requests' wall time as the client sees it
# (prefill included, as streamgen-bench-spec counts), and llama.cpp's own
# decode-only figure (timings.predicted_per_second, the mean over requests);
# the draft's acceptance from timings.draft_n / draft_n_accepted. Prints one
# line per figure and writes OUT_DIR/results.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
LLAMA_BIN=${LLAMA_BIN:-/work/llamacpp-native/build/bin}
GGUF_PY=${GGUF_PY:-$LLAMA_BIN/../../src/gguf-py}
TARGET=${TARGET:-models/demo-brown}
DRAFT=${DRAFT:-build/models/demo-brown-draft}
THREADS=${THREADS:-1 2}
MODES=${MODES:-none draft}
ROUNDS=${ROUNDS:-3}
NEW_TOKENS=${NEW_TOKENS:-128}
DRAFT_MAX=${DRAFT_MAX:-}
DRAFT_P_MIN=${DRAFT_P_MIN:-}
PORT=${PORT:-18571}
OUT_DIR=${OUT_DIR:-build/spec-llamacpp}

for f in "$LLAMA_BIN/llama-server" "$GGUF_PY/gguf/__init__.py" "$TARGET/model.safetensors"; do
  [ -e "$f" ] || { echo "spec_llamacpp.sh: $f is missing (see the header for LLAMA_BIN, GGUF_PY, TARGET)" >&2; exit 1; }
done
[ -e "$DRAFT/model.safetensors" ] || {
  echo "spec_llamacpp.sh: no draft model in $DRAFT: make it with tools/demo_model/train_draft.sh or set DRAFT" >&2
  exit 1
}
mkdir -p "$OUT_DIR"
target_gguf=$OUT_DIR/$(basename "$TARGET")-f32.gguf
draft_gguf=$OUT_DIR/$(basename "$DRAFT")-f32.gguf
# Always reconvert: a draft retrained in place must not be measured stale.
/usr/bin/python3 bench/make_bench_gguf.py --hf "$TARGET" --gguf-py "$GGUF_PY" --outtype f32 --out "$target_gguf" > /dev/null
/usr/bin/python3 bench/make_bench_gguf.py --hf "$DRAFT" --gguf-py "$GGUF_PY" --outtype f32 --out "$draft_gguf" > /dev/null

server_pid=""
stop_server() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2> /dev/null || true
    wait "$server_pid" 2> /dev/null || true
    server_pid=""
  fi
}
trap stop_server EXIT

# start_server THREADS [draft flags...]
start_server() {
  local threads=$1
  shift
  "$LLAMA_BIN/llama-server" -m "$target_gguf" -t "$threads" -tb "$threads" -c 2048 -np 1 \
    --host 127.0.0.1 --port "$PORT" "$@" > "$OUT_DIR/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 100); do
    curl -sf "127.0.0.1:$PORT/health" > /dev/null 2>&1 && return 0
    kill -0 "$server_pid" 2> /dev/null || break
    sleep 0.2
  done
  echo "spec_llamacpp.sh: llama-server did not start; its log:" >&2
  tail -20 "$OUT_DIR/server.log" >&2
  exit 1
}

# run_prompts THREADS MODE ROUND: every prompt once, one JSON line each.
run_prompts() {
  /usr/bin/python3 - "$PORT" "$NEW_TOKENS" "$1" "$2" "$3" <<'PY' >> "$OUT_DIR/results.jsonl"
import json, sys, time, urllib.request
port, new_tokens, threads, mode, rnd = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
# bench/spec_bench.cc's workloads, word for word.
workloads = {
    "copy": [
        "Repeat the following text: he said , `` i am going home '' . he said , `` i am going "
        "home '' . he said ,",
        "Repeat the following text: the man . the man . the man . the man . the man . the",
        "Repeat the following text: the old man walked to the river and sat down by the water . "
        "the old man walked to the river and sat down by the water . the old man walked",
        "Repeat the following text: one two three four five six seven eight nine ten . one two "
        "three four five six seven eight nine ten . one two three"],
    "prose": ["The committee said that the new plan", "In the morning the men went out to",
              "She had never seen the city so", "It was a good year for the farmers of"],
}
for workload, prompts in workloads.items():
    for prompt in prompts:
        body = json.dumps({"prompt": prompt, "n_predict": new_tokens, "temperature": 0, "top_k": 1,
                           "ignore_eos": True, "cache_prompt": False}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/completion", data=body,
                                         headers={"Content-Type": "application/json"})
        start = time.perf_counter()
        with urllib.request.urlopen(request) as response:
            reply = json.load(response)
        wall = time.perf_counter() - start
        t = reply["timings"]
        print(json.dumps({"threads": threads, "mode": mode, "round": rnd, "workload": workload,
                          "prompt": prompt, "tokens": t["predicted_n"], "wall_s": wall,
                          "decode_tok_s": t["predicted_per_second"],
                          "draft_n": t.get("draft_n", 0), "draft_accepted": t.get("draft_n_accepted", 0),
                          "text": reply["content"]}))
PY
}

: > "$OUT_DIR/results.jsonl"
for threads in $THREADS; do
  # The draft runs with as many threads as the target.
  draft_flags=(-md "$draft_gguf" -td "$threads" -tbd "$threads")
  [ -n "$DRAFT_MAX" ] && draft_flags+=(--spec-draft-n-max "$DRAFT_MAX")
  [ -n "$DRAFT_P_MIN" ] && draft_flags+=(--spec-draft-p-min "$DRAFT_P_MIN")
  for round in $(seq "$ROUNDS"); do
    for mode in $MODES; do
      case $mode in
        none) start_server "$threads" ;;
        draft) start_server "$threads" "${draft_flags[@]}" --spec-type draft-simple ;;
        ngram) start_server "$threads" --spec-type ngram-simple ;;
        ngram+draft) start_server "$threads" "${draft_flags[@]}" --spec-type ngram-simple,draft-simple ;;
        *) echo "spec_llamacpp.sh: unknown mode '$mode' in MODES (none, draft, ngram, ngram+draft)" >&2; exit 1 ;;
      esac
      run_prompts "$threads" "$mode" "$round"
      stop_server
    done
  done
done

/usr/bin/python3 - "$OUT_DIR/results.jsonl" <<'PY'
import collections, json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
groups = collections.defaultdict(list)
for r in rows:
    groups[(r["threads"], r["workload"], r["mode"])].append(r)
# The greedy text must not depend on the draft: speculative decoding is exact.
texts = collections.defaultdict(set)
for r in rows:
    texts[(r["threads"], r["prompt"])].add(r["text"])
differ = sum(len(v) > 1 for v in texts.values())
for (threads, workload, mode), rs in sorted(groups.items()):
    tok_s = sum(r["tokens"] for r in rs) / sum(r["wall_s"] for r in rs)
    decode = sum(r["decode_tok_s"] for r in rs) / len(rs)
    base = groups[(threads, workload, "none")]
    ratio = tok_s / (sum(r["tokens"] for r in base) / sum(r["wall_s"] for r in base))
    drafted = sum(r["draft_n"] for r in rs)
    accepted = sum(r["draft_accepted"] for r in rs)
    line = (f"llama.cpp threads {threads} {workload:5s} {mode:11s}: {tok_s:7.1f} tok/s (x{ratio:.2f}), "
            f"decode only {decode:7.1f} tok/s")
    if drafted:
        line += f", drafts accepted {accepted}/{drafted} ({100 * accepted / drafted:.0f}%)"
    print(line)
print(f"prompts whose greedy text differs between runs: {differ} of {len(texts)}")
PY
