#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz/*_fuzz.cc) with clang-14 and
# -fsanitize=fuzzer,address,undefined in their own folder (build-fuzz: only
# the targets and the torch-free libraries they link), then runs each one for
# a bounded time on a scratch copy of its seed corpus (tests/fuzz/corpus/<target>;
# new inputs stay in the scratch folder, never in the repository). Fails when
# a target crashes, leaks, times out or violates a property; prints a summary
# per target. Installs nothing: clang-14 and libclang-rt-14-dev come from
# scripts/install-deps.sh.
#
#   scripts/fuzz.sh                     # every target, 30 s each, two at a time
#   FUZZ_SECONDS=10 scripts/fuzz.sh     # shorter runs
#   scripts/fuzz.sh detokenizer_fuzz    # some targets only
#
# FUZZ_SEED (default 1): libFuzzer's -seed. A fixed seed narrows CI's runs
# but does not make two runs identical: measured, two 200k-input runs with
# seed 1 ended with 8,470 and 8,366 features (likely because the scratch
# directory's random name, which error messages carry, feeds the comparisons
# libFuzzer learns from; and a faster machine gets further in 60 s). What
# makes a CI failure replayable is its input: for each failed target this
# script prints every crash-/leak-/timeout-/oom- file under 8 KiB as a
# "fuzz.sh: ... Base64: ..." line, and scripts/test.sh reprints those lines
# at the very end of CI's output. Replay one with
#   echo 'BASE64' | base64 -d > crash && build-fuzz/fuzz/<target> crash
# FUZZ_SEED=0 draws a new seed each run: use it for longer exploratory runs,
#   FUZZ_SEED=0 FUZZ_SECONDS=600 scripts/fuzz.sh
# Environment: FUZZ_SECONDS (default 30) per target; FUZZ_PARALLEL targets at
# a time (default: nproc); FUZZ_BUILD_DIR (default
# build-fuzz); FUZZ_JOBS build jobs (default: nproc); FUZZ_WORK_DIR where the
# scratch corpora, logs and crash artifacts go (default $FUZZ_BUILD_DIR/runs/<time>).
# A crash leaves its input as FUZZ_WORK_DIR/<target>/crash-*: reproduce it with
#   build-fuzz/fuzz/<target> FILE
# and, once fixed, copy it into tests/fuzz/corpus/<target>/ as a regression seed.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ccache-env.sh

FUZZ_SECONDS=${FUZZ_SECONDS:-30}
FUZZ_SEED=${FUZZ_SEED:-1}
BUILD_DIR=${FUZZ_BUILD_DIR:-build-fuzz}
JOBS=${FUZZ_JOBS:-$(nproc)}
ALL_TARGETS=(safetensors_fuzz model_config_fuzz chat_template_fuzz detokenizer_fuzz
             validation_fuzz openai_request_fuzz openai_encoder_fuzz)
if [ $# -gt 0 ]; then TARGETS=("$@"); else TARGETS=("${ALL_TARGETS[@]}"); fi

for tool in clang-14 clang++-14 cmake ninja; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "fuzz.sh: $tool not found; run scripts/install-deps.sh" >&2
    exit 2
  fi
done

build_start=$(date +%s)
# RelWithDebInfo at -O1: line numbers in reports, asserts on (no NDEBUG).
CC=clang-14 CXX=clang++-14 cmake -S . -B "$BUILD_DIR" -G Ninja \
  -DSTREAMGEN_FUZZ=ON \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" >/dev/null
cmake --build "$BUILD_DIR" -j"$JOBS" --target "${TARGETS[@]}"
build_s=$(( $(date +%s) - build_start ))

WORK=${FUZZ_WORK_DIR:-$BUILD_DIR/runs/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
# UBSan reports abort (the fuzz build compiles with -fno-sanitize-recover too);
# ASan's leak checker runs after each input that allocated (libFuzzer's -detect_leaks).
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}

# fuzz_one TARGET: runs one target; writes its summary line to $WORK/TARGET/summary,
# and on failure its verdict to $WORK/TARGET/failed and its details (log tail,
# crash inputs in Base64) to $WORK/TARGET/details.
fuzz_one() {
  local target=$1
  local corpus=tests/fuzz/corpus/$target
  local dir=$WORK/$target
  mkdir -p "$dir/corpus"
  if [ ! -d "$corpus" ] || [ -z "$(ls -A "$corpus")" ]; then
    echo "fuzz.sh: $corpus is missing or empty" >&2
    echo "$target (no corpus)" >"$dir/failed"
    return
  fi
  cp "$corpus"/* "$dir/corpus/"
  local seeds=$(ls "$dir/corpus" | wc -l)
  echo "== $target: $FUZZ_SECONDS s from $seeds seeds (log: $dir/log)"
  local start=$(date +%s) rc=0
  "$BUILD_DIR/fuzz/$target" "$dir/corpus" \
    -max_total_time="$FUZZ_SECONDS" -seed="$FUZZ_SEED" -timeout=25 -rss_limit_mb=2048 -max_len=8192 \
    -print_final_stats=1 -artifact_prefix="$dir/" >"$dir/log" 2>&1 || rc=$?
  local elapsed=$(( $(date +%s) - start ))
  local execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/log" | tail -1)
  local last=$(grep -E '^#[0-9]+' "$dir/log" | tail -1 || true)
  local cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  local ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  local corpus_n=$(sed -n 's/.* corp: \([0-9]*\)\/.*/\1/p' <<<"$last")
  local status=ok
  if [ $rc -ne 0 ]; then
    status="FAILED (exit $rc)"
    echo "$target" >"$dir/failed"
    grep -E 'ERROR: |SUMMARY: |fuzz property violated|FUZZ_CHECK|runtime error|artifact_prefix|Test unit written' "$dir/log" | head -10 || true
    {
      echo "---- $target (exit $rc), the end of $dir/log:"
      grep -v -E '^#[0-9]+|^\[libprotobuf' "$dir/log" | tail -20
      for artifact in "$dir"/crash-* "$dir"/leak-* "$dir"/timeout-* "$dir"/oom-*; do
        [ -f "$artifact" ] && [ "$(stat -c %s "$artifact")" -lt 8192 ] || continue
        echo "fuzz.sh: $target input $(basename "$artifact") Base64: $(base64 -w0 "$artifact")"
      done
    } >"$dir/details"
  fi
  printf '%-20s %-16s %10s execs %6s cov %6s ft %5s corpus %4ss\n' \
    "$target" "$status" "${execs:-?}" "${cov:-?}" "${ft:-?}" "${corpus_n:-?}" "$elapsed" >"$dir/summary"
}

# FUZZ_PARALLEL targets at a time (default: the cores), each on one core.
PARALLEL=${FUZZ_PARALLEL:-$(nproc)}
runs_start=$(date +%s)
for target in "${TARGETS[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$PARALLEL" ]; do wait -n || true; done
  fuzz_one "$target" &
done
wait
summary=()
failed=()
details=()
for target in "${TARGETS[@]}"; do
  [ -f "$WORK/$target/summary" ] && summary+=("$(cat "$WORK/$target/summary")")
  [ -f "$WORK/$target/failed" ] && failed+=("$(cat "$WORK/$target/failed")")
  [ -f "$WORK/$target/details" ] && details+=("$(cat "$WORK/$target/details")")
done
runs_s=$(( $(date +%s) - runs_start ))

echo
echo "fuzz.sh: build ${build_s}s, runs ${runs_s}s ($FUZZ_SECONDS s per target, seed $FUZZ_SEED); work dir $WORK"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  [ ${#details[@]} -gt 0 ] && printf '%s\n' "${details[@]}"
  echo "fuzz.sh: FAILED: ${failed[*]} (crash inputs: $WORK/<target>/crash-* etc.)" >&2
  exit 1
fi
