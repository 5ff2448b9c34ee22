#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run): installs dependencies, builds,
# then runs five jobs one after the other and reports each one's time:
#
#   main   every test under ctest in the normal build (build/); tests that need
#          ../shared/ or a GPU skip themselves with a message
#   cuda   scripts/install-deps.sh --cuda-toolkit, then scripts/cuda-compile-check.sh:
#          every CUDA source compiled (nvcc 11.8 and the image's nvcc, sm_80 + sm_90)
#   fuzz   scripts/fuzz.sh: each libFuzzer target for FUZZ_SECONDS (default 30),
#          two at a time (their corpora are also replayed in main: fuzz_replay_*)
#   tsan   scripts/sanitize.sh tsan: scheduler, engine threading, server
#   asan   scripts/sanitize.sh asan: engine, parsers and server under ASan+UBSan
#
# Every job runs even when an earlier one failed; the script fails if any did.
# JOBS_TO_RUN picks some of them (default "main cuda fuzz tsan asan"), e.g.
#   JOBS_TO_RUN=main scripts/test.sh            # the everyday run
#   JOBS_TO_RUN=main scripts/test.sh -R Sampler # extra arguments go to main's ctest
# The summary at the end gives each job's time (docs/contributing.md, What CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS_TO_RUN=${JOBS_TO_RUN:-main cuda fuzz tsan asan}
for job in $JOBS_TO_RUN; do
  case $job in main|cuda|fuzz|tsan|asan) ;; *)
    echo "test.sh: unknown job '$job' in JOBS_TO_RUN (main, cuda, fuzz, tsan, asan)" >&2; exit 2 ;;
  esac
done

scripts/install-deps.sh
start=$(date +%s)
summary=()
failed=()
# Each job's output also goes to $LOG_DIR/<job>.log; a failed job's key lines
# are printed again after the summary, because CI keeps only the end of the
# output (a fuzz crash printed 40 minutes earlier would be lost).
LOG_DIR=${LOG_DIR:-build-logs}
mkdir -p "$LOG_DIR"
run_job() {
  local job=$1; shift
  local t0=$(date +%s) rc=0
  echo "==== test.sh: job $job starts"
  set +e
  "$@" 2>&1 | tee "$LOG_DIR/$job.log"
  rc=${PIPESTATUS[0]}
  set -e
  local s=$(( $(date +%s) - t0 ))
  summary+=("$(printf '%-5s %s  %4d s' "$job" "$([ $rc -eq 0 ] && echo passed || echo "FAILED (exit $rc)")" "$s")")
  [ $rc -eq 0 ] || failed+=("$job")
  echo "==== test.sh: job $job: exit $rc after $s s"
}
cuda_job() {
  scripts/install-deps.sh --cuda-toolkit && scripts/cuda-compile-check.sh
}
main_job() {
  scripts/build.sh
  ctest --test-dir "${BUILD_DIR:-build}" --output-on-failure -j"${JOBS:-2}" "$@"
}

for job in $JOBS_TO_RUN; do
  case $job in
    main) run_job main main_job "$@" ;;
    cuda) run_job cuda cuda_job ;;
    fuzz) run_job fuzz env FUZZ_SECONDS="${FUZZ_SECONDS:-30}" scripts/fuzz.sh ;;
    tsan) run_job tsan env -u BUILD_DIR scripts/sanitize.sh tsan ;;
    asan) run_job asan env -u BUILD_DIR scripts/sanitize.sh asan ;;
  esac
done

echo "==== test.sh: summary ($(( $(date +%s) - start )) s after the dependencies)"
printf '  %s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  # CI keeps only the end of this output, so each failed job gets a compact
  # report: what failed, then why (gtest's assertion with its values, the
  # sanitizer's or libFuzzer's verdict and, for a fuzz crash, its input in
  # Base64 so that it can be replayed here after the CI clone is gone). The
  # patterns are anchored: test names such as ...ErrorsGoToStderr... must not
  # crowd out the lines that matter (they did once).
  for job in "${failed[@]}"; do
    log=$LOG_DIR/$job.log
    echo "==== test.sh: why $job failed (full log: $log)"
    grep -E -e '^[[:space:]]*[0-9]+ - .*\((Failed|Timeout|SEGFAULT|Subprocess aborted|Exception|Not Run)\)' \
      -e '^fuzz\.sh: FAILED|^[a-z_]+_fuzz +FAILED' "$log" | sort -u | head -12 || true
    grep -E -A5 -e '^[^ ].*:[0-9]+: Failure$' "$log" | grep -v -E '^--$' | head -24 | cut -c1-400 || true
    grep -E -e '^(==[0-9]+== ?)?ERROR: (AddressSanitizer|LeakSanitizer|ThreadSanitizer|UndefinedBehaviorSanitizer|libFuzzer)' \
      -e '^SUMMARY: |: runtime error: |^fuzz property violated|^/.*: FUZZ_CHECK|^WARNING: ThreadSanitizer' \
      "$log" | sort | uniq -c | sort -rn | head -12 || true
    grep -E '^fuzz\.sh: .* Base64: ' "$log" | head -3 | cut -c1-11000 || true
    echo "---- last 6 lines of $job"
    tail -6 "$log"
  done
  echo "test.sh: failed: ${failed[*]}" >&2
  exit 1
fi
