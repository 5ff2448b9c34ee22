#!/usr/bin/env bash
# Issue 20's figures in one run: the engine benchmark (streamgen-bench-engine)
# on a benchmark model of each family (bench/make_family_model.py: Llama's
# 134M shapes, hidden 768, 12 layers, with each family's own parts) and a small
# MoE (Qwen3-MoE-shaped, 8 experts of intermediate 1024, top 2: a token reads
# as many MLP bytes as the dense models), in bfloat16 and with int8 weights
# (bfloat16 activations); each configuration ROUNDS times, interleaved (this
# machine's speed drifts), then a table of means: decode tokens/s at batch 1,
# its fraction of the read-bandwidth probe (for the MoE: of the bytes a token
# reads, the router and 2 experts' mean per layer), the batch-BATCH step, and
# each family's fraction over Llama's in the same dtype.
#
#   bench/family_bench.sh                   # ~10 min on 2 quiet cores
#   THREADS=1 ROUNDS=1 bench/family_bench.sh
#
# The models are written once, under $BUILD_DIR/models/family-bench/FAMILY
# (bfloat16 safetensors, ~220-600 MB each), with the shared fixture's
# 32000-piece tokenizer (as bench/engine_bench.sh).
#
# Environment: BUILD_DIR (build), TOKENIZER, FAMILIES ("llama qwen2 qwen3
# gemma3 phi3 qwen3moe"), THREADS (2), ROUNDS (2), NEW_TOKENS (64), RUNS (2),
# BATCH (16), OUT (the JSON lines; default $BUILD_DIR/family-bench.jsonl),
# TABLE_ONLY (1: no runs, the table of an earlier run's OUT).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
TOKENIZER=${TOKENIZER:-../shared/fixtures/tiny-llama/tokenizer.model}
FAMILIES=${FAMILIES:-llama qwen2 qwen3 gemma3 phi3 qwen3moe}
ROUNDS=${ROUNDS:-2}
OUT=${OUT:-$BUILD_DIR/family-bench.jsonl}
BENCH=$BUILD_DIR/bench/streamgen-bench-engine
if [ ! -x "$BENCH" ]; then
  echo "family_bench: $BENCH is absent; build it: BUILD_TARGETS=streamgen-bench-engine scripts/build.sh" >&2
  exit 1
fi
if [ ! -f "$TOKENIZER" ]; then
  echo "family_bench: $TOKENIZER is absent; set TOKENIZER to a 32000-piece sentencepiece model" >&2
  exit 1
fi
[ "${TABLE_ONLY:-0}" = 1 ] && FAMILIES= ROUNDS=0
for family in $FAMILIES; do
  dir=$BUILD_DIR/models/family-bench/$family
  [ -f "$dir/model.safetensors" ] && continue
  /usr/bin/python3 bench/make_family_model.py --family "$family" --tokenizer "$TOKENIZER" \
    --out "$dir"
done
lscpu | grep -E "Model name|^CPU\(s\)" || true
echo "ISA: $(grep -o -w 'avx2\|avx512f\|avx512_bf16\|amx_tile' /proc/cpuinfo | sort -u | tr '\n' ' ')"
[ "$ROUNDS" -gt 0 ] && : > "$OUT"
for round in $(seq 1 "$ROUNDS"); do
  for quant in none int8; do
    for family in $FAMILIES; do
      echo "== round $round: $family, bfloat16, weights $quant ($(uptime | sed 's/.*load/load/'))" >&2
      # A 64-block KV pool (1024 tokens) is plenty for one request of ~80
      # tokens; the engine's default would size it for 16 full contexts
      # (Phi-3's 131072 positions: 4 GiB zeroed per run).
      line=$("$BENCH" --model "$BUILD_DIR/models/family-bench/$family" --threads "${THREADS:-2}" \
        --dtype bfloat16 --quantization "$quant" --runs "${RUNS:-2}" \
        --new-tokens "${NEW_TOKENS:-64}" --batch "${BATCH:-16}" --kv-cache-blocks 64 | tail -1)
      echo "{\"family\":\"$family\",\"round\":$round,${line#\{}" >> "$OUT"
    done
  done
done
/usr/bin/python3 - "$OUT" <<'EOF'
import collections, json, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    d = json.loads(line)
    runs[(d["family"], d["quantization"])].append(d)
mean = lambda rs, k: sum(r[k] for r in rs) / len(rs)
first = next(iter(runs.values()))[0]
print("threads %d, %d rounds" % (first["threads"], max(len(rs) for rs in runs.values())))
print("| family | weights (bfloat16 activations) | decode MB/token | decode tok/s (batch 1) "
      "| fraction of probe | model-only step: fraction | batch-%d step ms (tok/s) "
      "| fraction / llama's | GB/s / llama's |" % first["batch"])
print("|---|---|---|---|---|---|---|---|---|")
for (family, quant), rs in sorted(runs.items(), key=lambda kv: kv[0][1] != "none"):
    # Against Llama's in the same dtype: the fractions (each run's decode
    # over its own probe) and the achieved GB/s (the probe left out: it
    # drifts with the machine's load from one process to the next).
    llama = runs.get(("llama", quant))
    rel = lambda key: "%.2f" % (mean(rs, key) / mean(llama, key)) if llama else "–"
    b = mean(rs, "batch_step_ms")
    print("| %s | %s | %.0f | %.1f (%s) | %.2f | %.2f | %.1f (%.0f) | %s | %s |" % (
        family, "int8" if quant == "int8" else "bfloat16", rs[0]["decode_weight_bytes"] / 1e6,
        mean(rs, "decode_tokens_per_s"),
        " / ".join("%.1f" % r["decode_tokens_per_s"] for r in rs), mean(rs, "fraction_of_probe"),
        mean(rs, "step_fraction_of_probe"), b, rs[0]["batch"] * 1000.0 / b,
        rel("fraction_of_probe"), rel("achieved_gbs")))
print("probe GB/s: %.1f-%.1f" % (min(r["probe_gbs"] for rs in runs.values() for r in rs),
                                 max(r["probe_gbs"] for rs in runs.values() for r in rs)))
EOF
echo "results: $OUT"
