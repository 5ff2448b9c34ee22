#!/usr/bin/env bash
# Trains a draft model for the demo model (speculative decoding,
# --speculative draft --draft-model DIR): the same Brown corpus and the same
# trainer as tools/demo_model/train.sh, with the demo model's own tokenizer
# (a draft must share it: its files are copied, not retrained), and a smaller
# Llama: 2 layers of 128 (1.3M parameters with the tied 4096-row embedding,
# against the demo model's 6 layers of 256). Written into the build folder,
# never committed.
#
#   tools/demo_model/train_draft.sh [OUT_DIR]   # default: build/models/demo-brown-draft
#   tools/demo_model/train_draft.sh --distill-from models/demo-brown [OUT_DIR]
#
# --distill-from DIR: train the draft to imitate DIR (the target) rather than
# the corpus: the loss is KL(target || draft) on the target's logits, computed
# on the fly on the same corpus windows (train.py --distill-from). Speculative
# decoding accepts a draft token where it equals the target's, so this is what
# raises acceptance; train_summary.json then records the draft's argmax
# agreement with the target on the validation text.
#
# INIT_LAYERS=0,1 (with --distill-from): the draft is the target's embedding,
# head and those layers (the target's widths; LAYERS and HIDDEN are then
# ignored), fine-tuned by distillation at a lower learning rate (LR, 5e-4).
# SELF_TEXT=N (with --distill-from): also generate N greedy continuations of
# corpus prefixes with the target (train.py --self-text) and make half of each
# batch those: generated text is what a draft sees when serving, and the
# target's own loops are what it must learn to predict there.
#
# The best measured draft for the demo model (bench/README.md, "With a draft
# model"): 1 layer, distilled with its own text, 10 minutes:
#   MINUTES=10 INIT_LAYERS=0 SELF_TEXT=192 \
#     tools/demo_model/train_draft.sh --distill-from models/demo-brown build/models/demo-brown-draft-1l
#
# Environment: LAYERS (2), HIDDEN (128: heads of 64, MLP 2.75x), TARGET
# (models/demo-brown), MINUTES (10: the training time budget), SEED (1234), THREADS (1: on a machine shared with other jobs, two
# OpenMP threads measured 27 s a step against under 1 s for one), WORK (a
# temporary folder). Needs npm, Debian's
# python3-torch and python3-sentencepiece (as train.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
DISTILL_FROM=""
if [ "${1:-}" = "--distill-from" ]; then
  [ -f "${2:-}/model.safetensors" ] || { echo "train_draft.sh: --distill-from needs a model directory, got '${2:-}'" >&2; exit 1; }
  DISTILL_FROM=$2
  shift 2
fi
OUT=${1:-build/models/demo-brown-draft}
LAYERS=${LAYERS:-2}
HIDDEN=${HIDDEN:-128}
INIT_LAYERS=${INIT_LAYERS:-}
LR=${LR:-}
extra=()
if [ -n "$INIT_LAYERS" ]; then
  [ -n "$DISTILL_FROM" ] || { echo "train_draft.sh: INIT_LAYERS needs --distill-from" >&2; exit 1; }
  extra+=(--init-layers "$INIT_LAYERS" --lr "${LR:-5e-4}" --min-lr 5e-5 --warmup 20)
elif [ -n "$LR" ]; then
  extra+=(--lr "$LR")
fi
if [ -n "${SELF_TEXT:-}" ]; then
  [ -n "$DISTILL_FROM" ] || { echo "train_draft.sh: SELF_TEXT needs --distill-from" >&2; exit 1; }
  extra+=(--self-text "$SELF_TEXT")
fi
TARGET=${TARGET:-models/demo-brown}
MINUTES=${MINUTES:-10}
SEED=${SEED:-1234}
THREADS=${THREADS:-1}
WORK=${WORK:-$(mktemp -d)}
command -v npm > /dev/null || { echo "train_draft.sh: npm is needed (apt-get install npm)" >&2; exit 1; }
if ! /usr/bin/python3 -c "import torch, sentencepiece" 2> /dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get install -y -q --no-install-recommends python3-torch python3-sentencepiece
fi
start=$(date +%s)

[ -f "$WORK/corpus/train.jsonl" ] || /usr/bin/python3 tools/demo_model/make_corpus.py --out "$WORK/corpus"

# The template: the target's tokenizer files and config, with the draft's sizes.
rm -rf "$WORK/draft-template"
mkdir -p "$WORK/draft-template"
for f in tokenizer.model tokenizer_config.json generation_config.json; do
  cp "$TARGET/$f" "$WORK/draft-template/$f"
done
/usr/bin/python3 - "$TARGET/config.json" "$WORK/draft-template/config.json" "$LAYERS" "$HIDDEN" "$INIT_LAYERS" <<'PY'
import json, sys
config = json.load(open(sys.argv[1]))
layers, hidden = int(sys.argv[3]), int(sys.argv[4])
if sys.argv[5]:  # the target's widths, fewer layers
    config.update(num_hidden_layers=len(sys.argv[5].split(",")))
else:
    config.update(hidden_size=hidden, intermediate_size=hidden * 11 // 4, num_hidden_layers=layers,
                  num_attention_heads=hidden // 64, num_key_value_heads=hidden // 64, head_dim=64)
json.dump(config, open(sys.argv[2], "w"), indent=2)
PY

/usr/bin/python3 tools/demo_model/train.py --corpus "$WORK/corpus" --template "$WORK/draft-template" \
  --out "$OUT" --minutes "$MINUTES" --seed "$SEED" --threads "$THREADS" \
  ${DISTILL_FROM:+--distill-from "$DISTILL_FROM"} ${extra[@]+"${extra[@]}"}
echo "train_draft.sh: $OUT written in $(( $(date +%s) - start )) s"
