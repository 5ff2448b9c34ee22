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
#
# Environment: TARGET (models/demo-brown), MINUTES (10: the training time
# budget), SEED (1234), THREADS (1: on a machine shared with other jobs, two
# OpenMP threads measured 27 s a step against under 1 s for one), WORK (a
# temporary folder). Needs npm, Debian's
# python3-torch and python3-sentencepiece (as train.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-build/models/demo-brown-draft}
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
/usr/bin/python3 - "$TARGET/config.json" "$WORK/draft-template/config.json" <<'PY'
import json, sys
config = json.load(open(sys.argv[1]))
config.update(hidden_size=128, intermediate_size=352, num_hidden_layers=2,
              num_attention_heads=2, num_key_value_heads=2, head_dim=64)
json.dump(config, open(sys.argv[2], "w"), indent=2)
PY

/usr/bin/python3 tools/demo_model/train.py --corpus "$WORK/corpus" --template "$WORK/draft-template" \
  --out "$OUT" --minutes "$MINUTES" --seed "$SEED" --threads "$THREADS"
echo "train_draft.sh: $OUT written in $(( $(date +%s) - start )) s"
