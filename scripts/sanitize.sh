#!/usr/bin/env bash
# The sanitizer jobs (issue 11): builds streamgen with a sanitizer in a folder
# of its own and runs that job's tests under ctest, failing on any report.
#
#   scripts/sanitize.sh asan   # ASan + UBSan (build-asan): engine, parsers, server (see below)
#   scripts/sanitize.sh tsan   # TSan (build-tsan): scheduler, engine threading, server
#   scripts/sanitize.sh asan --build-only | --test-only [extra ctest args...]
#
# Steps: a static sentencepiece with the job's flags (scripts/sentencepiece-static.sh,
# cached in BUILD_DIR/_deps), configure (Debug, -DSTREAMGEN_SANITIZE=...;
# ccache when present), build only the job's targets, run the job's tests with
# the runtime options below. Every report stops its process (halt_on_error),
# which fails its test. ASan, LSan and TSan reports also go to
# BUILD_DIR/sanitizer-reports/ (log_path), including those of the servers and
# clients the tests start as subprocesses, and the job fails if any is there,
# even when every test passed (a leak found at a subprocess's exit). UBSan
# (gcc's libubsan ignores log_path) reports on stderr.
# Environment: BUILD_DIR, JOBS (build, default nproc), TEST_JOBS (ctest -j,
# default 2). Suppressions: tests/sanitizers/*.supp, each entry with its
# reason; see docs/contributing.md (Sanitizers).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ccache-env.sh
ROOT=$PWD

usage() { sed -n 5,7p "$0" >&2; exit 2; }
JOB=${1:-}
[ $# -gt 0 ] && shift
MODE=all
case ${1:-} in
  --build-only) MODE=build; shift ;;
  --test-only) MODE=test; shift ;;
esac

SUPP=$ROOT/tests/sanitizers
case $JOB in
  asan)
    SANITIZE=address
    BUILD_DIR=${BUILD_DIR:-build-asan}
    SPM_FLAGS="-fsanitize=address,undefined -fno-sanitize=vptr -O1 -g -fno-omit-frame-pointer"
    # The code with logic of its own: the engine (model, kernels, sampler,
    # scheduler, KV cache, resume), the tokenizer, detokenizer and stop
    # strings (sentencepiece and tokenizer.json, the latter over the whole
    # reference comparison), the parsers (safetensors, config, chat templates
    # and the Jinja interpreter, the OpenAI
    # JSON, request validation; every fuzz corpus replayed), the server in
    # process, and the HTTP face's own parser and transport driven by a real
    # client (http_curl_test) plus the fault tests (signals, bad model files,
    # an exhausted KV pool). The other end-to-end tests (browsers, Node,
    # nginx, containers, soak) exercise the same server code through other
    # clients and run in the main job only.
    TESTS=(safetensors_test model_config_test tokenizer_test stop_matcher_test sampler_test
           model_test engine_test scheduler_test kv_cache_manager_test batching_test
           cpu_kernels_test cpu_linear_test resume_test server_validation_test server_response_stream_test server_units_test
           server_chat_template_test server_integration_test server_metrics_test openai_api_test
           fuzz_replay_safetensors_fuzz fuzz_replay_model_config_fuzz fuzz_replay_chat_template_fuzz
           fuzz_replay_detokenizer_fuzz fuzz_replay_validation_fuzz fuzz_replay_openai_request_fuzz
           fuzz_replay_openai_encoder_fuzz sentencepiece_shim_exports_test
           http_curl_test fault_test_asan
           hf_tokenizer_test jinja_test chat_template_jinja_test fuzz_replay_jinja_fuzz
           tokenizers_npm_ci tokenizers_reference_test
           model_families_test rope_config_test rope_test moe_test static_decode_test)
    TARGETS=(safetensors_test model_config_test tokenizer_test stop_matcher_test sampler_test
             model_test engine_test scheduler_test kv_cache_manager_test batching_test
             cpu_kernels_test cpu_linear_test resume_test server_validation_test server_response_stream_test server_units_test
             server_chat_template_test server_integration_test server_metrics_test openai_api_test
             safetensors_fuzz_replay model_config_fuzz_replay chat_template_fuzz_replay
             detokenizer_fuzz_replay validation_fuzz_replay openai_request_fuzz_replay
             openai_encoder_fuzz_replay hf_tokenizer_test jinja_test chat_template_jinja_test
             jinja_fuzz_replay model_families_test rope_config_test rope_test moe_test static_decode_test
             streamgen-tokenize streamgen-server streamgen-client streamgen-generate
             streamgen_python_proto)
    CTEST_SELECT=(-L "^($(IFS='|'; echo "${TESTS[*]}"))\$")
    # Left to the main job: the tests that register a libtorch RecordFunction
    # observer (CpuLinearRoute.*, and the cpu_linear_test_env_* runs of the
    # same binary). With an observer active, libtorch 1.13's inline
    # record_function.h reads a bool of Debian's uninstrumented libtorch that
    # UBSan reports as "load of value 94, which is not a valid value for type
    # 'bool'" (ATen/record_function.h:325): the library's, not ours.
    CTEST_SELECT+=(-E "^(CpuLinearRoute\\.|cpu_linear_test_env_)")
    ;;
  tsan)
    SANITIZE=thread
    BUILD_DIR=${BUILD_DIR:-build-tsan}
    SPM_FLAGS="-fsanitize=thread -O1 -g -fno-omit-frame-pointer"
    # The scheduler, the engine's threads (loop thread, Submit/Cancel from
    # others, batching, resume, the constraint masks' worker), the server in process (reactors, the stream
    # registry, metrics, start-up and shutdown) and as a subprocess driven over
    # HTTP (connections, drain). The CLI, Python and curl clients add no
    # threads of the server's that these do not run.
    TESTS=(scheduler_test engine_test batching_test resume_test constraint_state_test
           server_units_test server_response_stream_test server_integration_test
           server_lifecycle_test server_metrics_test http_lifecycle_test)
    TARGETS=(scheduler_test engine_test batching_test resume_test constraint_state_test
             server_units_test server_response_stream_test server_integration_test
             server_lifecycle_test server_metrics_test
             streamgen-server streamgen-client streamgen_python_proto)
    CTEST_SELECT=(-L "^($(IFS='|'; echo "${TESTS[*]}"))\$")
    ;;
  *) usage ;;
esac
case $BUILD_DIR in /*) ;; *) BUILD_DIR=$ROOT/$BUILD_DIR ;; esac
JOBS=${JOBS:-$(nproc)}
TEST_JOBS=${TEST_JOBS:-2}
REPORTS=$BUILD_DIR/sanitizer-reports

# TSan (gcc 12, clang 14) cannot map its shadow memory when the kernel
# randomizes mmap with 32 bits ("FATAL: ThreadSanitizer: unexpected memory
# mapping"); 28, the default of most kernels, works.
if [ "$SANITIZE" = thread ]; then
  bits=$(cat /proc/sys/vm/mmap_rnd_bits 2>/dev/null || echo unknown)
  if [ "$bits" = 32 ]; then
    if [ "$(id -u)" = 0 ] && sysctl -q -w vm.mmap_rnd_bits=28; then
      echo "sanitize.sh: lowered vm.mmap_rnd_bits from 32 to 28 for TSan"
    else
      echo "sanitize.sh: vm.mmap_rnd_bits is 32, which TSan cannot run with (unexpected memory" \
           "mapping); as root: sysctl -w vm.mmap_rnd_bits=28" >&2
      exit 1
    fi
  fi
fi

# The runtimes' options. Exported before the build as well: gtest_discover_tests
# runs each test binary (--gtest_list_tests) at build time.
mkdir -p "$REPORTS"
common="halt_on_error=1:log_path=$REPORTS/report"  # log_path: not honoured by libubsan
if [ "$SANITIZE" = address ]; then
  # ASan's own checks are never recoverable; UBSan's are compiled recoverable
  # (so that its suppressions work) and halt_on_error makes each one fatal.
  export ASAN_OPTIONS="$common:detect_leaks=1:check_initialization_order=1:strict_init_order=1:detect_stack_use_after_return=1:strict_string_checks=1"
  export UBSAN_OPTIONS="$common:print_stacktrace=1:suppressions=$SUPP/ubsan.supp"
  export LSAN_OPTIONS="suppressions=$SUPP/lsan.supp:print_suppressions=0"
else
  # ignore_noninstrumented_modules: accesses made inside Debian's uninstrumented
  # libraries (gRPC, abseil, libtorch, libgomp) are not checked; one OpenMP
  # thread: libgomp's barriers are invisible to TSan.
  export TSAN_OPTIONS="$common:suppressions=$SUPP/tsan.supp:ignore_noninstrumented_modules=1:second_deadlock_stack=1:history_size=4"
  export OMP_NUM_THREADS=1
fi

if [ "$MODE" != test ]; then
  build_start=$(date +%s)
  PREFIX=$(JOBS=$JOBS SPM_FLAGS=$SPM_FLAGS nice -n 5 scripts/sentencepiece-static.sh "$BUILD_DIR/_deps" | tail -1)
  spm_s=$(( $(date +%s) - build_start ))
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Debug \
    -DSTREAMGEN_SANITIZE=$SANITIZE -DSTREAMGEN_SENTENCEPIECE_STATIC="$PREFIX" >/dev/null
  nice -n 5 cmake --build "$BUILD_DIR" -j"$JOBS" --target "${TARGETS[@]}"
  build_s=$(( $(date +%s) - build_start ))
  echo "sanitize.sh $JOB: built in ${build_s} s (sentencepiece ${spm_s} s)"
fi
[ "$MODE" = build ] && exit 0

rm -f "$REPORTS"/report*
test_start=$(date +%s)
set +e
ctest --test-dir "$BUILD_DIR" --output-on-failure -j"$TEST_JOBS" "${CTEST_SELECT[@]}" "$@"
rc=$?
set -e
test_s=$(( $(date +%s) - test_start ))
reports=("$REPORTS"/report*)
if [ -e "${reports[0]}" ]; then
  echo "sanitize.sh $JOB: ${#reports[@]} sanitizer report(s):" >&2
  for f in "${reports[@]}"; do echo "==== $f" >&2; cat "$f" >&2; done
  [ $rc -eq 0 ] && rc=1
fi
echo "sanitize.sh $JOB: tests in ${test_s} s, exit $rc"
exit $rc
