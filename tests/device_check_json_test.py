#!/usr/bin/env python3
"""Checks scripts/device-check.sh's device-check.json (issue 13).

  tests/device_check_json_test.py --run --build-dir build
      runs the CPU dry run on that build (--dry-run --quick: no rebuild, no
      prefix build, no ctest inside, a tiny model, 1 and 4 streams), then
      checks its JSON strictly: every step that can run on a CPU ran and
      passed, and its figures are there (the ctest device_check_dry_run)
  tests/device_check_json_test.py OUT_DIR/device-check.json
      checks a JSON that came back from the GPU machine: its shape only (keys,
      positive figures, a reason on every skipped step, a log tail on every
      failed one); prints its figures

Fails when the script writes no JSON, or a malformed one.
"""
import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOP_KEYS = {"schema", "mode", "date", "git_commit", "host", "gpu", "torch", "device", "dtype",
            "budget_s", "total_s", "fixture_tiny_llama_present", "model", "tests", "steps",
            "figures", "failed_steps", "ok"}
STEP_STATUSES = {"ok", "failed", "timeout", "skipped"}
# Steps a --dry-run --quick --build-dir run must have passed, and the figures
# they must have given.
QUICK_OK_STEPS = {"env", "model", "engine_bench_128", "server_start", "grpc_c1", "grpc_c4",
                  "grpc_ttft_2048", "engine_bench_2048"}
QUICK_SKIPPED_STEPS = {"unpack", "configure", "build_bench", "build", "tests_cuda", "tests", "copy_bandwidth"}
QUICK_FIGURES = {"engine_decode_tokens_per_s_batch1", "engine_ttft_ms_prompt128",
                 "engine_ttft_ms_prompt2048", "decode_weight_bytes", "cpu_read_probe_gb_per_s",
                 "grpc_output_tokens_per_s_c1_prompt128_out16",
                 "grpc_output_tokens_per_s_c4_prompt128_out16",
                 "grpc_ttft_p50_ms_c1_prompt2048_out8",
                 "streamgen_weight_bandwidth_fraction"}


def check_shape(d):
    """Problems with the JSON's shape (empty: none)."""
    bad = []
    if not isinstance(d, dict):
        return ["not a JSON object"]
    missing = TOP_KEYS - set(d)
    if missing:
        bad.append("missing keys: %s" % sorted(missing))
    if d.get("schema") != "streamgen-device-check/1":
        bad.append("schema is %r" % d.get("schema"))
    steps = d.get("steps")
    if not isinstance(steps, list) or not steps:
        bad.append("no steps")
        steps = []
    names = set()
    for s in steps:
        n = s.get("name")
        names.add(n)
        if s.get("status") not in STEP_STATUSES:
            bad.append("step %s: status %r" % (n, s.get("status")))
        if not isinstance(s.get("seconds"), (int, float)) or s["seconds"] < 0:
            bad.append("step %s: seconds %r" % (n, s.get("seconds")))
        if s.get("status") != "ok" and not s.get("reason"):
            bad.append("step %s is %s without a reason" % (n, s.get("status")))
        if s.get("status") in ("failed", "timeout") and not s.get("log_tail"):
            if s.get("log") and os.path.exists(s["log"]) and os.path.getsize(s["log"]) > 0:
                bad.append("step %s failed without its log's tail" % n)
        if s.get("status") != "skipped" and not s.get("command"):
            bad.append("step %s ran no recorded command" % n)
    ran = {s["name"] for s in steps if s.get("status") == "ok"}
    for f in d.get("figures") or []:
        v = f.get("value")
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v <= 0:
            bad.append("figure %s: value %r is not a positive number" % (f.get("name"), v))
        for k in ("name", "unit", "step", "command"):
            if not f.get(k):
                bad.append("figure %s: no %s" % (f.get("name"), k))
        if f.get("step") not in ran:
            bad.append("figure %s comes from step %s, which did not pass" % (f.get("name"), f.get("step")))
    failed = {s["name"] for s in steps if s.get("status") in ("failed", "timeout")}
    if set(d.get("failed_steps") or []) != failed:
        bad.append("failed_steps %r != the failed steps %r" % (d.get("failed_steps"), sorted(failed)))
    if d.get("ok") != (not failed):
        bad.append("ok is %r with failed steps %r" % (d.get("ok"), sorted(failed)))
    t = d.get("tests")
    if any(s["name"] in ("tests", "tests_cuda") and s["status"] != "skipped" for s in steps):
        if not isinstance(t, dict) or not isinstance(t.get("total"), int):
            bad.append("the tests step ran but 'tests' has no counts: %r" % (t,))
    return bad


def check_quick(d):
    bad = []
    if d.get("mode") != "dry-run" or d.get("device") != "cpu":
        bad.append("mode %r on %r, want a dry run on the CPU" % (d.get("mode"), d.get("device")))
    status = {s["name"]: s for s in d.get("steps", [])}
    for n in sorted(QUICK_OK_STEPS):
        s = status.get(n)
        if not s or s["status"] != "ok":
            bad.append("step %s: %s" % (n, "absent" if not s else "%s (%s) %s" % (
                s["status"], s.get("reason"), "\n    ".join(s.get("log_tail") or []))))
    for n in sorted(QUICK_SKIPPED_STEPS):
        if status.get(n, {}).get("status") != "skipped":
            bad.append("step %s should be skipped in a --quick --build-dir dry run" % n)
    hf = status.get("hf_baseline")
    if not hf or hf["status"] not in ("ok", "skipped"):
        bad.append("hf_baseline: %r" % (hf,))
    have = {f["name"] for f in d.get("figures", [])}
    if QUICK_FIGURES - have:
        bad.append("missing figures: %s" % sorted(QUICK_FIGURES - have))
    frac = {f["name"]: f["value"] for f in d.get("figures", [])}.get("streamgen_weight_bandwidth_fraction")
    if frac is not None and not frac < 5:
        bad.append("weight bandwidth fraction %r: the probe or the bytes are wrong" % frac)
    m = d.get("model") or {}
    c = m.get("config") or {}
    if c.get("vocab_size") != 32000 or c.get("num_key_value_heads") != c.get("num_attention_heads"):
        bad.append("the tiny model is not of the 7B layout: %r" % c)
    return bad


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("json", nargs="?", help="a device-check.json to check (shape only)")
    ap.add_argument("--run", action="store_true", help="run the quick dry run first")
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build"))
    ap.add_argument("--timeout", type=int, default=300)
    a = ap.parse_args()
    if a.run:
        build = os.path.abspath(a.build_dir)
        cache = os.path.join(build, "CMakeCache.txt")
        sanitized = os.path.exists(cache) and any(
            l.startswith("STREAMGEN_SANITIZE:") and l.strip().split("=", 1)[1]
            for l in open(cache))
        if sanitized and not os.path.exists(os.path.join(build, "bench", "streamgen-bench-engine")):
            print("SKIPPED: a sanitizer build (%s) builds no bench/ binaries" % build)
            return 77  # ctest's SKIP_RETURN_CODE (tests/CMakeLists.txt)
        out = os.path.join(build, "device-check-dry-run")
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        cmd = [os.path.join(ROOT, "scripts", "device-check.sh"), out, "--dry-run", "--quick",
               "--build-dir", a.build_dir, "--work-dir", os.path.join(out, "work")]
        print("+", " ".join(cmd), flush=True)
        # Its own session: on a timeout the whole group (server included) goes.
        proc = subprocess.Popen(cmd, start_new_session=True)
        try:
            rc = proc.wait(timeout=a.timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            print("FAIL: the dry run did not finish in %d s" % a.timeout)
            return 1
        path = os.path.join(out, "device-check.json")
        print("device-check.sh exited %d" % rc)
    elif a.json:
        path, rc = a.json, None
    else:
        ap.error("give a JSON file or --run")
    if not os.path.exists(path):
        print("FAIL: no %s" % path)
        return 1
    try:
        d = json.load(open(path))
    except ValueError as e:
        print("FAIL: %s is not JSON: %s" % (path, e))
        return 1
    bad = check_shape(d)
    if a.run:
        bad += check_quick(d)
        if rc != 0:
            bad.append("device-check.sh exited %d" % rc)
    for f in d.get("figures", []) if isinstance(d, dict) else []:
        print("  %-48s %14s %s" % (f.get("name"), f.get("value"), f.get("unit")))
    if bad:
        print("FAIL:\n  " + "\n  ".join(bad))
        return 1
    if a.run:
        # Passed: the model and logs are not kept (the dry run's JSON stays).
        shutil.rmtree(os.path.join(out, "work"), ignore_errors=True)
    print("OK: %s (%d steps, %d figures)" % (path, len(d["steps"]), len(d["figures"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
