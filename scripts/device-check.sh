#!/usr/bin/env bash
# The GPU machine's check (issue 13), in one call of under 8 minutes: build
# streamgen from the Debian packages that scripts/fetch-device-debs.sh put in
# build-device-debs/ against the machine's PyTorch libtorch, run the test
# suite, make a Llama-2-7B-shaped model with random bfloat16 weights, and
# measure streamgen (engine and gRPC) and the transformers baseline on it;
# then (issue 20) make a Qwen 3-shaped and a Qwen 3 MoE-shaped model
# (bench/device_bench.py's LAYOUTS qwen3, qwen3moe) and load and measure each
# with the engine bench.
# Every step is timed and capped; a failed step is recorded (with the end of
# its log) and the later steps that do not need it still run. Writes
# OUT_DIR/device-check.json, OUT_DIR/device-check.md, OUT_DIR/logs/.
#
#   scripts/device-check.sh OUT_DIR                 # on the GPU machine
#   scripts/device-check.sh OUT_DIR --dry-run       # the rehearsal on a CPU machine
#   scripts/device-check.sh OUT_DIR --dry-run --quick --build-dir build   # the ctest
#
# Options:
#   --dry-run        CPU, a tiny model of the same layout, Debian's libtorch (/usr)
#   --build-dir DIR  use DIR's binaries as they are: no unpack, configure or build
#   --quick          small counts (16 new tokens, 1 and 4 streams), no test step
#   --skip-tests     no ctest step
#   --tests-first    build everything and run the whole test suite before the
#                    measurements (default: build the benchmarks and the CUDA
#                    tests, run those tests, measure, then build the rest and
#                    run the rest of the suite with what is left of the budget)
#   --budget S       the whole run's time limit (device: 470 s; dry run: 3600 s)
#   --work-dir DIR   prefix, build and model folders (build-device)
#   --families LIST  the family models to make and measure after the Llama one
#                    (default "qwen3 qwen3moe"; with --quick "": none; the
#                    dry run makes their tiny twins with numpy where python
#                    has no torch)
# Environment: GIT_COMMIT (recorded where the tree has no .git, as on the
# device), STREAMGEN_PYTHON (the python with torch; default: the first of
# python3, /usr/bin/python3 that imports torch), DEVICE_DEBS (build-device-debs),
# JOBS, CTEST_JOBS, CAP_SCALE (the per-step caps times this; dry run: 4).
# The device call, from the development machine: the debs travel as a carried
# ignored path (build-device/ is ignored too, and stays here); the commit is
# written out, as the device's copy of the tree has no .git:
#   run(command="GIT_COMMIT=<40 hex digits> scripts/device-check.sh $OUT",
#       carry=["build-device-debs"], timeout_s=540)
set -u -o pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
SELF="$ROOT/scripts/device-check.sh"

# ---- internal subcommands (run under `timeout` as steps) ----
if [ "${1:-}" = "--internal" ]; then
  case $2 in
    wait-server)  # PID PORT_FILE CLIENT: until the server answers GetModelInfo
      pid=$3 port_file=$4 client=$5
      while :; do
        if ! kill -0 "$pid" 2>/dev/null; then echo "the server exited" >&2; exit 1; fi
        if [ -s "$port_file" ] && "$client" --server "127.0.0.1:$(cat "$port_file")" info; then
          exit 0
        fi
        sleep 0.5
      done ;;
    unpack)  # DEBS_DIR PREFIX: every .deb into PREFIX, merged-/usr, links fixed
      debs=$3 prefix=$4
      ls "$debs"/*.deb >/dev/null 2>&1 ||
        { echo "no .deb in $debs: run scripts/fetch-device-debs.sh, and carry build-device-debs" >&2; exit 1; }
      stamp=$(cat "$debs"/*.deb | md5sum | cut -d' ' -f1)
      if [ "$(cat "$prefix/.stamp" 2>/dev/null)" = "$stamp" ]; then
        echo "reused $prefix (the same .debs)"; exit 0
      fi
      rm -rf "$prefix" && mkdir -p "$prefix"
      n=0
      for deb in "$debs"/*.deb; do
        if command -v dpkg-deb >/dev/null; then
          dpkg-deb -x "$deb" "$prefix" || exit 1
        else  # no dpkg: the data member by hand
          member=$(ar t "$deb" | grep '^data\.tar') || exit 1
          case $member in
            *.xz) ar p "$deb" "$member" | tar -xJ -C "$prefix" ;;
            *.zst) ar p "$deb" "$member" | zstd -dc | tar -x -C "$prefix" ;;
            *.gz) ar p "$deb" "$member" | tar -xz -C "$prefix" ;;
            *) ar p "$deb" "$member" | tar -x -C "$prefix" ;;
          esac || exit 1
        fi
        n=$((n + 1))
      done
      [ $n -gt 0 ] || { echo "no .deb in $debs (scripts/fetch-device-debs.sh)" >&2; exit 1; }
      # Debian 12's zlib1g still installs into /lib: merge it into usr/lib.
      lib=$prefix/usr/lib/x86_64-linux-gnu
      mkdir -p "$lib"
      if [ -d "$prefix/lib/x86_64-linux-gnu" ]; then
        for f in "$prefix"/lib/x86_64-linux-gnu/*; do
          [ -e "$lib/$(basename "$f")" ] || mv "$f" "$lib/"
        done
      fi
      # Absolute links (libz.so -> /lib/...) point into the prefix instead.
      find "$prefix" -type l -lname '/*' | while read -r link; do
        target=$(readlink "$link")
        for t in "$prefix$target" "$prefix/usr$target" "$lib/$(basename "$target")"; do
          if [ -e "$t" ]; then ln -sfn "$t" "$link"; break; fi
        done
      done
      dangling=$(find "$prefix" -xtype l | head -5)
      [ -z "$dangling" ] || echo "warning: dangling links: $dangling" >&2
      echo "$stamp" > "$prefix/.stamp"
      echo "unpacked $n packages into $prefix ($(du -sh "$prefix" | cut -f1))"
      exit 0 ;;
    make-tiny-model-cxx)  # BIN MODEL_DIR TOKENIZER: the dry run without python's torch
      bin=$3 dir=$4 tokenizer=$5
      "$bin/tools/streamgen-make-tiny-model" --out "$dir" --tokenizer "$tokenizer" \
        --hidden-size 256 --intermediate-size 688 --layers 4 --heads 4 --kv-heads 4 \
        --vocab-size 32000 --context 4096 --dtype bf16 --shards 2 --rms-norm-eps 1e-5 \
        --rope-theta 10000 --init-std 0.02 >&2 || exit 1
      exec python3 "$ROOT/bench/device_bench.py" model-info --dir "$dir" --layout tiny \
        --tokenizer "$tokenizer" --made-by "streamgen-make-tiny-model (no python torch)" ;;
    *) echo "unknown internal command $2" >&2; exit 2 ;;
  esac
fi

usage() { sed -n '2,38p' "$SELF" | sed 's/^# \{0,1\}//'; exit 2; }
OUT=""
DRY=0 QUICK=0 SKIP_TESTS=0 TESTS_FIRST=0 BUILD_GIVEN="" BUDGET="" WORK=build-device
FAMILIES=unset
while [ $# -gt 0 ]; do
  case $1 in
    --dry-run) DRY=1 ;;
    --quick) QUICK=1 ;;
    --skip-tests) SKIP_TESTS=1 ;;
    --tests-first) TESTS_FIRST=1 ;;
    --build-dir) BUILD_GIVEN=${2:?}; shift ;;
    --budget) BUDGET=${2:?}; shift ;;
    --work-dir) WORK=${2:?}; shift ;;
    --families) FAMILIES=${2?}; shift ;;
    -h|--help) usage ;;
    -*) echo "device-check: unknown option $1" >&2; usage ;;
    *) [ -z "$OUT" ] && OUT=$1 || usage ;;
  esac
  shift
done
[ -n "$OUT" ] || usage
mkdir -p "$OUT/logs" "$OUT/figures" "$WORK" || exit 1
OUT=$(cd "$OUT" && pwd) WORK=$(cd "$WORK" && pwd)
LOGS=$OUT/logs FIG=$OUT/figures STEPS=$OUT/steps.jsonl
: > "$STEPS"
rm -f "$FIG"/* "$LOGS"/* "$OUT/device-check.json" "$OUT/device-check.md"
MAIN_LOG=$LOGS/device-check.log
START=$(date +%s.%N)
PY=$(command -v python3 || echo /usr/bin/python3)  # the standard library is enough
DEBS=${DEVICE_DEBS:-$ROOT/build-device-debs}
PREFIX=$WORK/prefix
TOKENIZER=$ROOT/models/demo-brown/tokenizer.model
NPROC=$(nproc)

if [ $DRY = 1 ]; then
  MODE=dry-run DEVICE=cpu LAYOUT=tiny THREADS=2 KV_MEMORY=256MiB
  CAP_SCALE=${CAP_SCALE:-4}  # the caps are sized for the GPU machine's 16 cores
  : "${BUDGET:=3600}"
else
  MODE=device DEVICE=cuda:0 LAYOUT=7b THREADS=0 KV_MEMORY=24GiB
  CAP_SCALE=${CAP_SCALE:-1}
  : "${BUDGET:=470}"
fi
DTYPE=bfloat16
MODEL=$WORK/model-$LAYOUT
[ "$FAMILIES" = unset ] && FAMILIES=$([ $QUICK = 1 ] || echo "qwen3 qwen3moe")
if [ $QUICK = 1 ]; then
  NEW=16 RUNS=1 STREAMS="1 4" SKIP_TESTS=1
elif [ $DRY = 1 ]; then
  NEW=32 RUNS=1 STREAMS="1 16 64"
else
  NEW=128 RUNS=2 STREAMS="1 16 64"
fi
MAX_PREFILL=2048
JOBS=${JOBS:-$NPROC}
CTEST_JOBS=${CTEST_JOBS:-$([ $DRY = 1 ] && echo 2 || echo 8)}
# Tests left out of the ctest step: the tools they need are not on the GPU
# machine (npm and the network: the npm reference packages of tokenizers, Jinja
# and llama.cpp too; chromium, podman, nginx, the fuzz build), or
# they are the slowest (fault, soak, security, the every-token resume: ~100 s
# on the development machine) and test nothing of the device path.
TEST_EXCLUDE='^(device_check_dry_run|node_|http_npm_ci|tokenizers_|jinja_npm_ci|json_schema_npm_ci|json_schema_suite_test|json_schema_extra_|json_schema_corpus_test|jinja_reference_test|hf_model_e2e_test|chat_template_model_test|llamacpp_|hf_reference_test|family_batch_resume_test|http_openai_test|http_playground_test|container_test|deploy_yaml_test|gateway_test|fuzz_replay_|soak_|fault_test|security_test|ResumeTest\.GreedyResumesExactlyAfterEveryToken)'
RESERVE=15  # seconds kept for the report
DEADLINE=$(( ${START%.*} + BUDGET ))

log() { echo "device-check: $*" | tee -a "$MAIN_LOG" >&2; }
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b - a}'; }
remaining() { echo $(( DEADLINE - $(date +%s) - RESERVE )); }
record() {  # NAME STATUS SECONDS RC LOG REASON CMD...
  local name=$1 status=$2 secs=$3 rc=$4 logf=$5 reason=$6; shift 6
  "$PY" "$ROOT/bench/device_bench.py" record --file "$STEPS" --name "$name" --status "$status" \
    --seconds "$secs" --rc "$rc" --log "$logf" --reason "$reason" --command "$*"
}
skip_step() {  # NAME REASON [CMD...]
  local name=$1 reason=$2; shift 2
  log "$name: skipped ($reason)"
  record "$name" skipped 0 0 "" "$reason" "$@"
  return 1
}
# run_step NAME CAP [--stdout] -- CMD...: CMD under `timeout` (its process
# group is killed at the cap, or at the budget's end if sooner); output to
# logs/NAME.log, or with --stdout its stdout to figures/NAME.out. True when it
# exited 0.
run_step() {
  local name=$1 cap=$2 to_fig=0; shift 2
  if [ "$1" = "--stdout" ]; then to_fig=1; shift; fi
  [ "$1" = "--" ] && shift
  local left; left=$(remaining)
  if [ "$left" -lt 10 ]; then skip_step "$name" "no time left in the $BUDGET s budget" "$@"; return 1; fi
  cap=$(( cap * CAP_SCALE )); [ "$cap" -ge 1 ] || cap=1
  [ "$cap" -gt "$left" ] && cap=$left
  local logf=$LOGS/$name.log t0 rc status reason=""
  log "$name (cap $cap s): $*"
  t0=$(date +%s.%N)
  if [ $to_fig = 1 ]; then
    timeout -k 5 "$cap" "$@" > "$FIG/$name.out" 2> "$logf"
  else
    timeout -k 5 "$cap" "$@" > "$logf" 2>&1
  fi
  rc=$?
  local secs; secs=$(elapsed "$t0")
  case $rc in
    0) status=ok ;;
    124|137) status=timeout reason="killed at its $cap s cap" ;;
    *) status=failed reason="exit code $rc" ;;
  esac
  [ $to_fig = 1 ] && [ $rc -ne 0 ] && tail -c 2000 "$FIG/$name.out" >> "$logf"
  record "$name" "$status" "$secs" "$rc" "$logf" "$reason" "$@"
  log "$name: $status ($secs s)"
  [ $rc -eq 0 ]
}

SERVER_PID="" MODEL_PID=""
cleanup() {
  [ -n "$SERVER_PID" ] && kill -TERM "$SERVER_PID" 2>/dev/null
  [ -n "$MODEL_PID" ] && kill -TERM "$MODEL_PID" 2>/dev/null
}
trap cleanup EXIT

log "mode $MODE, device $DEVICE, dtype $DTYPE, budget $BUDGET s, out $OUT, work $WORK"

# The golden fixture, carried in build-device-debs/fixtures by
# scripts/fetch-device-debs.sh, goes where the tests look for it when this tree
# has no ../shared (the device's copy).
if [ ! -e "$ROOT/../shared/fixtures/tiny-llama/golden.json" ] &&
   [ -f "$ROOT/${DEVICE_DEBS:-build-device-debs}/fixtures/tiny-llama/golden.json" ]; then
  mkdir -p "$ROOT/../shared/fixtures" &&
    ln -sfn "$ROOT/${DEVICE_DEBS:-build-device-debs}/fixtures/tiny-llama" "$ROOT/../shared/fixtures/tiny-llama" &&
    log "linked the carried tiny-llama fixture to ../shared/fixtures/tiny-llama"
fi

# ---- 0. the environment: which python has torch, libtorch, the GPU ----
PY_TORCH=""
for p in ${STREAMGEN_PYTHON:-python3 /usr/bin/python3}; do
  if command -v "$p" >/dev/null && "$p" -c 'import torch' 2>/dev/null; then PY_TORCH=$(command -v "$p"); break; fi
done
if [ -n "$PY_TORCH" ]; then
  run_step torch_info 60 --stdout -- "$PY_TORCH" "$ROOT/bench/device_bench.py" torch-info
else
  skip_step torch_info "no python with torch (tried ${STREAMGEN_PYTHON:-python3 /usr/bin/python3})"
fi
if [ $DRY = 1 ]; then
  LIBTORCH_PREFIX=""  # Debian's libtorch 1.13 in /usr, found by CMake's default paths
  LIBTORCH="Debian libtorch (/usr)"
else
  LIBTORCH_PREFIX=$([ -n "$PY_TORCH" ] && "$PY_TORCH" -c 'import torch.utils; print(torch.utils.cmake_prefix_path)' 2>/dev/null)
  LIBTORCH="PyTorch's libtorch (${LIBTORCH_PREFIX:-not found})"
fi
run_step env 30 --stdout -- "$PY" "$ROOT/bench/device_bench.py" env --root "$ROOT" \
  --torch-info "$FIG/torch_info.out" --libtorch "$LIBTORCH"

# ---- the model, in the background when torch makes it (no build needed) ----
MODEL_STEP_CMD=()
if [ -n "$PY_TORCH" ]; then
  MODEL_STEP_CMD=("$PY_TORCH" "$ROOT/bench/device_bench.py" make-model --out "$MODEL" --layout "$LAYOUT"
                  --tokenizer "$TOKENIZER" --device "$DEVICE" --shards "$([ $LAYOUT = 7b ] && echo 4 || echo 2)")
  run_step model 300 --stdout -- "${MODEL_STEP_CMD[@]}" &
  MODEL_PID=$!
fi

# ---- 1. unpack, configure, build ----
BUILT=0 CONFIGURED=0
if [ -n "$BUILD_GIVEN" ]; then
  BIN=$(cd "$BUILD_GIVEN" && pwd)
  for s in unpack configure build_bench build; do skip_step $s "--build-dir $BUILD_GIVEN: its binaries are used as they are"; done
  [ -x "$BIN/bench/streamgen-bench-engine" ] && [ -x "$BIN/server/streamgen-server" ] && BUILT=1
else
  BIN=$WORK/build
  WRAP=$PREFIX/wrap
  LIBDIR=$PREFIX/usr/lib/x86_64-linux-gnu
  if run_step unpack 60 -- "$SELF" --internal unpack "$DEBS" "$PREFIX"; then
    mkdir -p "$WRAP"
    # protoc and pkgconf are Debian's binaries: their libraries are in the prefix.
    # (Plugins that protoc starts inherit LD_LIBRARY_PATH.) Nothing else gets it:
    # our binaries find the prefix through their RPATH.
    printf '#!/bin/sh\nLD_LIBRARY_PATH=%s${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} exec %s "$@"\n' \
      "$LIBDIR" "$PREFIX/usr/bin/protoc" > "$WRAP/protoc"
    # pkgconf: only the prefix's .pc files, their -I/-L paths moved into the
    # prefix (PKG_CONFIG_SYSROOT_DIR), and not filtered as system paths.
    printf '#!/bin/sh\nexport LD_LIBRARY_PATH=%s${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}\nexport PKG_CONFIG_LIBDIR=%s\nexport PKG_CONFIG_SYSROOT_DIR=%s\nexport PKG_CONFIG_ALLOW_SYSTEM_CFLAGS=1 PKG_CONFIG_ALLOW_SYSTEM_LIBS=1\nunset PKG_CONFIG_PATH\nexec %s "$@"\n' \
      "$LIBDIR" "$LIBDIR/pkgconfig:$PREFIX/usr/share/pkgconfig" "$PREFIX" "$PREFIX/usr/bin/pkgconf" \
      > "$WRAP/pkg-config"
    chmod +x "$WRAP/protoc" "$WRAP/pkg-config"
    CONFIGURE=(cmake -S "$ROOT" -B "$BIN" -G Ninja -DCMAKE_BUILD_TYPE=Release
      "-DCMAKE_PREFIX_PATH=$PREFIX/usr${LIBTORCH_PREFIX:+;$LIBTORCH_PREFIX}"
      -DPKG_CONFIG_EXECUTABLE="$WRAP/pkg-config" -DPKG_CONFIG_USE_CMAKE_PREFIX_PATH=OFF
      -DProtobuf_PROTOC_EXECUTABLE="$WRAP/protoc" -DSTREAMGEN_PROTOC="$WRAP/protoc"
      -DSTREAMGEN_GRPC_CPP_PLUGIN="$PREFIX/usr/bin/grpc_cpp_plugin"
      -DSTREAMGEN_GRPC_PYTHON_PLUGIN="$PREFIX/usr/bin/grpc_python_plugin"
      -DSTREAMGEN_GRPC_PROTO_DIR="$PREFIX/usr/share/grpc-proto"
      # DT_RPATH, not DT_RUNPATH: it also serves the prefix libraries' own
      # dependencies (libgrpc -> libcares, libre2, libabsl_*), so no
      # LD_LIBRARY_PATH is needed to run anything we build.
      -DCMAKE_BUILD_RPATH="$LIBDIR"
      -DCMAKE_EXE_LINKER_FLAGS=-Wl,--disable-new-dtags -DCMAKE_SHARED_LINKER_FLAGS=-Wl,--disable-new-dtags)
    if [ $DRY = 0 ]; then
      NVCC=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
      [ -n "$NVCC" ] && CONFIGURE+=(-DCMAKE_CUDA_COMPILER="$NVCC")
      CONFIGURE+=(-DCMAKE_CUDA_ARCHITECTURES=90)
      export TORCH_CUDA_ARCH_LIST=9.0
    fi
    rm -rf "$BIN/CMakeCache.txt" "$BIN/CMakeFiles"
    if run_step configure 150 -- "${CONFIGURE[@]}"; then
      CONFIGURED=1
      # -k 0: a target that fails to compile does not stop the others (the
      # benchmarks may still run when a test does not build).
      BUILD_CMD=(cmake --build "$BIN" -j "$JOBS")
      # The development machine's convention: one heavy build at a time.
      [ $DRY = 1 ] && command -v flock >/dev/null && BUILD_CMD=(flock /tmp/streamgen-build.lock "${BUILD_CMD[@]}")
      # First what the measurements and the CUDA tests need, so that a slow
      # or broken build of the rest costs them nothing.
      # streamgen-generate: cuda_family_test's CPU-vs-GPU runs.
      FIRST_TARGETS=(streamgen-bench-engine streamgen-server streamgen-client streamgen-generate)
      for t in cuda_test sampler_test; do
        ninja -C "$BIN" -t targets all 2>/dev/null | grep -q "^$t:" && FIRST_TARGETS+=("$t")
      done
      run_step build_bench 330 -- "${BUILD_CMD[@]}" --target "${FIRST_TARGETS[@]}" -- -k 0
      # What did get built is used, even after a failed or cut build.
      [ -x "$BIN/bench/streamgen-bench-engine" ] && [ -x "$BIN/server/streamgen-server" ] &&
        [ -x "$BIN/client/streamgen-client" ] && BUILT=1
    else
      skip_step build_bench "configure failed"
    fi
  else
    skip_step configure "unpack failed"
    skip_step build_bench "unpack failed"
  fi
fi
# The rest of the build (every test), after the measurements unless --tests-first.
build_rest() {
  if [ -n "$BUILD_GIVEN" ]; then return 0; fi
  if [ "$CONFIGURED" = 1 ]; then
    run_step build 330 -- "${BUILD_CMD[@]}" -- -k 0
    [ -x "$BIN/bench/streamgen-bench-engine" ] && [ -x "$BIN/server/streamgen-server" ] &&
      [ -x "$BIN/client/streamgen-client" ] && BUILT=1
  else
    skip_step build "not configured"
  fi
}
CLIENT=$BIN/client/streamgen-client
SERVER=$BIN/server/streamgen-server
ENGINE_BENCH=$BIN/bench/streamgen-bench-engine

# ---- 2. the test suite: the CUDA tests first (seconds), the rest after the
# measurements unless --tests-first (they are the CPU suite CI runs anyway) ----
CUDA_TESTS='[Cc]uda'
tests_step() {  # NAME CAP CTEST_SELECTION...
  local name=$1 cap=$2; shift 2
  if [ $SKIP_TESTS = 1 ]; then
    skip_step "$name" "$([ $QUICK = 1 ] && echo "--quick" || echo "--skip-tests"): no ctest step (this may itself run under ctest)"
  elif [ $BUILT = 0 ]; then
    skip_step "$name" "nothing built"
  else
    local per_test=$([ $DRY = 1 ] && echo 600 || echo 100)
    # STREAMGEN_PYTHON: the python with torch (and numpy) for cuda_family_test.
    OMP_NUM_THREADS=2 STREAMGEN_PYTHON=${PY_TORCH:-${STREAMGEN_PYTHON:-}} run_step "$name" "$cap" -- ctest --test-dir "$BIN" -j "$CTEST_JOBS" \
      --timeout "$per_test" --no-tests=error --output-on-failure "$@"
  fi
}
tests_summary() {
  local logs=()
  for n in tests_cuda tests; do [ -f "$LOGS/$n.log" ] && logs+=(--log "$LOGS/$n.log"); done
  [ ${#logs[@]} -gt 0 ] || return 0
  "$PY" "$ROOT/bench/device_bench.py" tests-summary "${logs[@]}" \
    --exclude "$TEST_EXCLUDE" --root "$ROOT" > "$FIG/tests.out" 2>> "$MAIN_LOG"
}

# ---- 3. the model ----
model_ready() {
  if [ -n "$MODEL_PID" ]; then
    wait "$MODEL_PID"
    MODEL_PID=""
  elif [ -z "$PY_TORCH" ]; then
    if [ $DRY = 0 ]; then
      skip_step model "no python with torch: the 7B model is made on the GPU with torch"
    elif [ $BUILT = 1 ]; then
      run_step model 120 --stdout -- "$SELF" --internal make-tiny-model-cxx "$BIN" "$MODEL" "$TOKENIZER"
    else
      skip_step model "no python with torch and no streamgen-make-tiny-model built"
    fi
  fi
  grep -q '"name": "model", "status": "ok"' "$STEPS"
}

# ---- 4. the measurements ----
benches() {
  local have_model=0
  model_ready && have_model=1
  local why=""
  [ $BUILT = 1 ] || why="nothing built"
  [ $have_model = 1 ] || why="${why:+$why; }no model"
  local eb=("$ENGINE_BENCH" --model "$MODEL" --device "$DEVICE" --dtype "$DTYPE" --threads "$THREADS"
            --max-prefill-tokens "$MAX_PREFILL")
  if [ -z "$why" ]; then
    run_step engine_bench_128 150 --stdout -- "${eb[@]}" --prompt-tokens 128 --new-tokens "$NEW" \
      --runs "$RUNS" --batch 16
  else
    skip_step engine_bench_128 "$why"
  fi

  # The device's copy bandwidth: the roofline the decode figures are set against.
  if [ $DRY = 1 ]; then
    skip_step copy_bandwidth "CPU: the engine bench's read-bandwidth probe is the reference"
  elif [ -z "$PY_TORCH" ]; then
    skip_step copy_bandwidth "no python with torch"
  else
    run_step copy_bandwidth 60 --stdout -- "$PY_TORCH" "$ROOT/bench/device_bench.py" copy-bandwidth \
      --device "$DEVICE" --gib 4 --iters 20
  fi

  # The baseline: transformers' generate() on the same weights and device.
  local hf_py=${PY_TORCH:-$PY} hf_why
  if [ $have_model = 0 ]; then
    skip_step hf_baseline "no model"
  elif ! hf_why=$("$hf_py" -c 'import torch, transformers' 2>&1); then
    skip_step hf_baseline "$hf_py cannot import torch and transformers: $(echo "$hf_why" | tail -1)"
  else
    run_step hf_baseline 180 --stdout -- "$hf_py" "$ROOT/bench/hf_baseline.py" --model "$MODEL" \
      --device "$DEVICE" --dtype "$DTYPE" --prompt-tokens 128 2048 --new-tokens "$NEW"
  fi

  # Through gRPC: one server, closed-loop clients at 1, 16 and 64 streams.
  local port_file=$WORK/server.port srv=()
  if [ -n "$why" ]; then
    for c in $STREAMS; do skip_step "grpc_c$c" "$why"; done
    skip_step grpc_ttft_2048 "$why"
  else
    rm -f "$port_file" "$port_file.http"
    srv=("$SERVER" --model "$MODEL" --device "$DEVICE" --dtype "$DTYPE" --threads "$THREADS"
         --max-batch 64 --max-queue 256 --max-prefill-tokens "$MAX_PREFILL" --kv-cache-memory "$KV_MEMORY"
         --listen 127.0.0.1:0 --port-file "$port_file" --metrics-listen 127.0.0.1:0
         --http-listen 127.0.0.1:0 --http-port-file "$port_file.http")
    log "server: ${srv[*]}"
    "${srv[@]}" > "$LOGS/server.log" 2>&1 &
    SERVER_PID=$!
    if run_step server_start 150 -- "$SELF" --internal wait-server "$SERVER_PID" "$port_file" "$CLIENT"; then
      local port stuck=""; port=$(cat "$port_file")
      # A step cut at its cap means a stuck server: the next ones would be too.
      grpc_step() {  # NAME CAP CLIENT_BENCH_ARGS...
        local name=$1 cap=$2; shift 2
        if [ -n "$stuck" ]; then skip_step "$name" "$stuck"; return; fi
        run_step "$name" "$cap" --stdout -- "$CLIENT" --server "127.0.0.1:$port" --json bench "$@"
        grep -q "\"name\": \"$name\", \"status\": \"timeout\"" "$STEPS" &&
          stuck="$name was cut at its cap: the server is presumably stuck (logs/server.log)"
      }
      for c in $STREAMS; do
        local requests=$c warmup=$c
        [ "$c" = 1 ] && requests=$([ $QUICK = 1 ] && echo 2 || echo 4) warmup=1
        grpc_step "grpc_c$c" 120 --concurrency "$c" --requests "$requests" --warmup "$warmup" \
          --prompt-tokens 128 --max-new-tokens "$NEW"
      done
      grpc_step grpc_ttft_2048 90 --concurrency 1 --requests 2 --warmup 1 --prompt-tokens 2048 \
        --max-new-tokens 8
    else
      for c in $STREAMS; do skip_step "grpc_c$c" "server_start did not pass (see it, and logs/server.log)"; done
      skip_step grpc_ttft_2048 "server_start did not pass"
    fi
    kill -TERM "$SERVER_PID" 2>/dev/null
    for _ in $(seq 1 40); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$SERVER_PID" 2>/dev/null
    wait "$SERVER_PID" 2>/dev/null
    SERVER_PID=""
  fi

  if grep -q '"name": "engine_bench_128", "status": "timeout"' "$STEPS"; then
    skip_step engine_bench_2048 "engine_bench_128 was cut at its cap (a stuck engine?)"
  elif [ -z "$why" ]; then
    run_step engine_bench_2048 120 --stdout -- "${eb[@]}" --prompt-tokens 2048 --new-tokens 8 \
      --runs 1 --batch 4
  else
    skip_step engine_bench_2048 "$why"
  fi
  families
}

# ---- 4b. issue 20's families: each model made like the Llama one (torch on
# the device; numpy in a dry run without torch), then loaded and measured by
# the engine bench: a short run, batch 1 and 4 ----
families() {
  local fam layout dir py="" reason=""
  for p in "$PY_TORCH" python3 /usr/bin/python3; do
    if [ -n "$p" ] && "$p" -c 'import numpy' 2>/dev/null; then py=$p; break; fi
  done
  [ -n "$py" ] || reason="no python with numpy or torch to draw the weights"
  for fam in $FAMILIES; do
    layout=$fam
    [ $DRY = 1 ] && layout=tiny-$fam
    dir=$WORK/model-$layout
    if [ -n "$reason" ]; then
      skip_step "model_$fam" "$reason"
    elif run_step "model_$fam" 120 --stdout -- "$py" "$ROOT/bench/device_bench.py" make-model \
         --out "$dir" --layout "$layout" --tokenizer "$TOKENIZER" --device "$DEVICE" --shards 2; then
      if [ $BUILT = 1 ]; then
        run_step "engine_bench_$fam" 90 --stdout -- "$ENGINE_BENCH" --model "$dir" --device "$DEVICE" \
          --dtype "$DTYPE" --threads "$THREADS" --max-prefill-tokens "$MAX_PREFILL" \
          --prompt-tokens 128 --new-tokens "$NEW" --runs 1 --batch 4
      else
        skip_step "engine_bench_$fam" "nothing built"
      fi
      continue
    fi
    skip_step "engine_bench_$fam" "model_$fam did not pass"
  done
}

TESTS_CAP=$([ $DRY = 1 ] && echo 400 || echo 120)
if [ $TESTS_FIRST = 1 ]; then
  build_rest
  tests_step tests "$TESTS_CAP" -E "$TEST_EXCLUDE"
  benches
else
  tests_step tests_cuda 60 -R "$CUDA_TESTS" -E "$TEST_EXCLUDE"
  benches
  build_rest
  tests_step tests "$TESTS_CAP" -E "$CUDA_TESTS|$TEST_EXCLUDE"
fi
tests_summary
if [ -n "$MODEL_PID" ]; then wait "$MODEL_PID"; MODEL_PID=""; fi

# ---- 5. the report; logs trimmed to what is worth carrying back ----
for f in "$LOGS"/*.log; do
  if [ "$(stat -c %s "$f")" -gt 200000 ]; then
    { head -n 40 "$f"; echo "... (trimmed by device-check.sh) ..."; tail -n 400 "$f"; } > "$f.trim" && mv "$f.trim" "$f"
  fi
done
TOTAL=$(elapsed "$START")
"$PY" "$ROOT/bench/device_bench.py" report --out "$OUT" --mode "$MODE" --device "$DEVICE" \
  --dtype "$DTYPE" --budget "$BUDGET" --total "$TOTAL" > "$LOGS/report.log" 2>&1 || {
  log "the report failed: $(tail -3 "$LOGS/report.log")"; exit 3; }
cat "$OUT/device-check.md"
if grep -q '"status": "\(failed\|timeout\)"' "$STEPS"; then
  log "some steps failed: see $OUT/device-check.json ($TOTAL s)"
  exit 1
fi
log "done in $TOTAL s: $OUT/device-check.json"
