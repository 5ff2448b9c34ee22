#!/usr/bin/env bash
# Issue 12's figures in one run: the engine benchmark (bench/engine_bench.sh,
# the 134M model) for float32 and bfloat16 with the linear layers on
# libtorch's path (torch::mv / torch::mm: before the skinny kernels) and on the
# kernels, and with int8 weights under float32 and bfloat16 activations; each
# configuration ROUNDS times, interleaved (this machine's speed drifts), then
# a table of means with each decode figure as a fraction of the read-bandwidth
# probe measured in the same process.
#
#   bench/cpu_dtype_bench.sh                # ~6 min on 2 cores
#   ROUNDS=1 bench/cpu_dtype_bench.sh
#
# Environment: BUILD_DIR (build), MODEL_DIR, TOKENIZER (as engine_bench.sh),
# THREADS (2), ROUNDS (2), NEW_TOKENS (64), BATCH (16), OUT (the JSON lines;
# default $BUILD_DIR/cpu-dtype-bench.jsonl).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
ROUNDS=${ROUNDS:-2}
OUT=${OUT:-$BUILD_DIR/cpu-dtype-bench.jsonl}
: > "$OUT"
CONFIGS=("float32 none libtorch" "float32 none kernels" "bfloat16 none libtorch"
         "bfloat16 none kernels" "float32 int8 kernels" "bfloat16 int8 kernels")
for round in $(seq 1 "$ROUNDS"); do
  for config in "${CONFIGS[@]}"; do
    read -r dtype quant linear <<< "$config"
    echo "== round $round: $dtype, weights $quant, linear $linear" >&2
    BUILD_DIR="$BUILD_DIR" THREADS="${THREADS:-2}" bench/engine_bench.sh --dtype "$dtype" \
      --quantization "$quant" --linear "$linear" --runs 3 --new-tokens "${NEW_TOKENS:-64}" \
      --batch "${BATCH:-16}" | tail -1 >> "$OUT"
  done
done
/usr/bin/python3 - "$OUT" <<'EOF'
import collections, json, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    d = json.loads(line)
    runs[(d["dtype"], d["quantization"], d["linear"])].append(d)
mean = lambda rs, k: sum(r[k] for r in rs) / len(rs)
print("| dtype | weights | linear layers | decode tok/s (batch 1) | fraction of probe | probe GB/s "
      "| batch-%d step ms (tok/s) | prefill ms (%d tokens) |" % (
          next(iter(runs.values()))[0]["batch"], next(iter(runs.values()))[0]["prefill_tokens"]))
print("|---|---|---|---|---|---|---|---|")
for (dtype, quant, linear), rs in runs.items():
    b = mean(rs, "batch_step_ms")
    print("| %s | %s | %s | %.1f (%s) | %.2f | %.1f | %.1f (%.0f) | %.1f |" % (
        dtype, quant, linear, mean(rs, "decode_tokens_per_s"),
        " / ".join("%.1f" % r["decode_tokens_per_s"] for r in rs), mean(rs, "fraction_of_probe"),
        mean(rs, "probe_gbs"), b, rs[0]["batch"] * 1000.0 / b, mean(rs, "prefill_ms")))
tps = {k: mean(v, "decode_tokens_per_s") for k, v in runs.items()}
def ratio(a, b, what):
    if a in tps and b in tps:
        print("%s: %.2f" % (what, tps[a] / tps[b]))
ratio(("bfloat16", "none", "kernels"), ("bfloat16", "none", "libtorch"), "bfloat16 batch 1, kernels / libtorch")
ratio(("float32", "none", "kernels"), ("float32", "none", "libtorch"), "float32 batch 1, kernels / libtorch")
ratio(("bfloat16", "none", "kernels"), ("float32", "none", "kernels"), "bfloat16 / float32 batch 1 (kernels)")
ratio(("bfloat16", "int8", "kernels"), ("bfloat16", "none", "kernels"), "int8 (bf16 activations) / bfloat16 batch 1 (target >= 1.7)")
ratio(("float32", "int8", "kernels"), ("bfloat16", "none", "kernels"), "int8 (f32 activations) / bfloat16 batch 1")
EOF
echo "results: $OUT"
