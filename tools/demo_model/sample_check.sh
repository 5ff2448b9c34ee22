#!/usr/bin/env bash
# Samples the demo model through the engine (streamgen-generate) and counts
# what issue 9 measures: U+FFFD characters and the share of the text that is
# in words, for greedy and sampled continuations of everyday prompts.
#   tools/demo_model/sample_check.sh [MODEL_DIR]    # default: models/demo-brown
# Environment: BUILD_DIR (build), SEEDS (20), TOKENS (48).
set -euo pipefail
cd "$(dirname "$0")/../.."
MODEL=${1:-models/demo-brown}
BUILD_DIR=${BUILD_DIR:-build}
SEEDS=${SEEDS:-20}
TOKENS=${TOKENS:-48}
GEN="$BUILD_DIR/tools/streamgen-generate"
out=$(mktemp)
for prompt in "Once upon a time" "The president said" "In the morning"; do
  "$GEN" --model "$MODEL" --prompt "$prompt" --max-new-tokens "$TOKENS" --json 2>/dev/null \
    | /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); print(json.dumps({"prompt": sys.argv[1], "mode": "greedy", "text": d["text"]}))' "$prompt" >> "$out"
  for seed in $(seq 1 "$SEEDS"); do
    "$GEN" --model "$MODEL" --prompt "$prompt" --max-new-tokens "$TOKENS" --temperature 0.8 \
      --top-p 0.95 --seed "$seed" --json 2>/dev/null \
      | /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); print(json.dumps({"prompt": sys.argv[1], "mode": "sampled", "seed": int(sys.argv[2]), "text": d["text"]}))' "$prompt" "$seed" >> "$out"
  done
done
/usr/bin/python3 - "$out" <<'PY'
import json, re, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
for mode in ("greedy", "sampled"):
    texts = [r["text"] for r in rows if r["mode"] == mode]
    fffd = sum(t.count("\ufffd") for t in texts)
    with_fffd = sum("\ufffd" in t for t in texts)
    chars = sum(len(t) for t in texts)
    in_words = sum(len(w) for t in texts for w in re.findall(r"[A-Za-z']+", t))
    print(f"{mode}: {len(texts)} continuations, {with_fffd} with U+FFFD ({fffd} in all), "
          f"{100 * in_words / max(1, chars):.1f}% of characters in words")
for r in rows:
    if r["mode"] == "greedy" or r.get("seed") == 1:
        print(f"[{r['mode']}{' seed 1' if r['mode'] == 'sampled' else ''}] {r['prompt']}{r['text']}")
PY
rm -f "$out"
