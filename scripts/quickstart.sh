#!/usr/bin/env bash
# Sets everything up on a fresh Debian 12 machine and runs the main job on the
# demo model (models/demo-brown: a small Llama trained on the Brown corpus):
# one generation from the command line, then the server (gRPC and HTTP) in the
# foreground until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
scripts/install-deps.sh --build-only
# Only the three programs this script and its suggestions run (the tests and
# benchmarks come with scripts/test.sh).
BUILD_TARGETS="streamgen-generate streamgen-server streamgen-client" scripts/build.sh
echo
echo "== streamgen-generate on the demo model (models/demo-brown) =="
build/tools/streamgen-generate --prompt "Once upon a time" --max-new-tokens 48 --seed 1
echo "quickstart: first text after $(( $(date +%s) - start )) s (dependencies and build included)" >&2
LISTEN=${LISTEN:-0.0.0.0:50051}
PORT=${LISTEN##*:}
cat <<MSG

== streamgen-server on ${LISTEN} (Ctrl-C to stop) ==
Try, from another terminal:
  build/client/streamgen-client --server localhost:${PORT} generate "Once upon a time" --max-new-tokens 32
  build/client/streamgen-client --server localhost:${PORT} info
  grpcurl -plaintext -d '{"prompt": "Once upon a time", "max_new_tokens": 16}' localhost:${PORT} streamgen.v1.TextGeneration/Generate
  curl -N http://localhost:8000/v1/completions -H 'Content-Type: application/json' \
    -d '{"prompt": "Once upon a time", "max_tokens": 16, "stream": true}'
Playground (a browser): http://localhost:8000/
Metrics: curl http://localhost:9090/metrics

MSG
exec build/server/streamgen-server --listen "$LISTEN"
