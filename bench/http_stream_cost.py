#!/usr/bin/python3
"""What one open HTTP stream costs the server (issue 8): starts
streamgen-server on the 134M benchmark model (bench/make_bench_model.sh: slow
enough that every stream is still open when it is measured), opens N concurrent SSE streams
(curl processes, long generations), and reads the server's threads and
resident memory (/proc/PID/status) before, while all N are open, and after
they are aborted; then checks that the engine freed every sequence.

    bench/http_stream_cost.py [--build-dir build] [--model build/models/bench-134m] [--streams 80]

The server runs with --max-batch 1 and --max-queue N, so that one stream
decodes and the rest wait in the engine's queue: the KV-cache pool (allocated
at start-up, touched as it is used) then barely grows, and what the RSS gains
is the streams' own cost (HTTP worker stacks, buffers, request state). A
warm-up stream of the same length runs first.
"""
import argparse
import json
import os
import signal
import subprocess
import tempfile
import time


def status(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return int(fields["Threads"]), int(fields["VmRSS"].split()[0])  # threads, KiB


def metric(url, name):
    out = subprocess.run(["curl", "-sf", url + "/metrics"], capture_output=True, text=True).stdout
    return sum(float(l.split()[-1]) for l in out.splitlines()
               if l.startswith(name + " ") or l.startswith(name + "{"))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--build-dir", default="build")
    parser.add_argument("--streams", type=int, default=80)
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    model = args.model or os.path.join(args.build_dir, "models", "bench-134m")
    tmp = tempfile.mkdtemp(prefix="streamgen-stream-cost-")
    port_file = os.path.join(tmp, "http-port")
    log = open(os.path.join(tmp, "server.log"), "w")
    server = subprocess.Popen(
        [os.path.join(args.build_dir, "server", "streamgen-server"), "--listen", "127.0.0.1:0",
         "--http-listen", "127.0.0.1:0", "--http-port-file", port_file, "--metrics-listen=",
         "--max-batch", "1", "--max-queue", str(args.streams), "--model", model,
         "--kv-cache-memory", "1GiB"], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while not (os.path.exists(port_file) and open(port_file).read().strip()):
        assert server.poll() is None and time.time() < deadline, "the server did not start"
        time.sleep(0.05)
    url = "http://127.0.0.1:" + open(port_file).read().strip()
    while subprocess.run(["curl", "-sf", url + "/health"], capture_output=True).returncode:
        time.sleep(0.05)
    body = json.dumps({"prompt": "Once upon a time", "max_tokens": 1900, "ignore_eos": True,
                       "temperature": 0, "stream": True})
    # Warm up: one stream end to end (first-use allocations, its KV blocks).
    subprocess.run(["curl", "-sN", url + "/v1/completions", "-H", "Content-Type: application/json",
                    "-d", body.replace("1900", "100")], capture_output=True, check=True)
    time.sleep(0.5)
    idle_threads, idle_rss = status(server.pid)
    outputs = [open(os.path.join(tmp, f"stream-{i}.txt"), "w+") for i in range(args.streams)]
    clients = [subprocess.Popen(["curl", "-sN", url + "/v1/completions", "-H",
                                 "Content-Type: application/json", "-d", body],
                                stdout=outputs[i], stderr=subprocess.STDOUT)
               for i in range(args.streams)]
    deadline = time.time() + 60
    while metric(url, "streamgen_active_streams") < args.streams and time.time() < deadline:
        time.sleep(0.1)
    open_streams = metric(url, "streamgen_active_streams")
    time.sleep(1.0)
    busy_threads, busy_rss = status(server.pid)
    running = metric(url, "streamgen_engine_running_requests")
    waiting = metric(url, "streamgen_engine_waiting_requests")
    for client in clients:
        client.send_signal(signal.SIGINT)  # as Ctrl-C: the connection closes mid-stream
    for client in clients:
        client.wait(timeout=60)
    end = time.time() + 30
    while (metric(url, "streamgen_engine_running_requests") or
           metric(url, "streamgen_engine_waiting_requests")) and time.time() < end:
        time.sleep(0.05)
    after_threads, after_rss = status(server.pid)
    cancelled = metric(url, "streamgen_engine_cancelled_total")
    left = metric(url, "streamgen_engine_running_requests") + metric(url, "streamgen_engine_waiting_requests")
    refused = 0
    for out in outputs:
        out.seek(0)
        text = out.read()
        if '"error"' in text:
            refused += 1
            print("error:", text[:300])
        out.close()
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=60)
    print(f"streams open at once: {open_streams:.0f} (engine: {running:.0f} running, {waiting:.0f} waiting)")
    print(f"server threads: idle {idle_threads}, with the streams {busy_threads}, after {after_threads}")
    print(f"server RSS: idle {idle_rss / 1024:.1f} MiB, with the streams {busy_rss / 1024:.1f} MiB, "
          f"after {after_rss / 1024:.1f} MiB")
    print(f"per open stream: {(busy_rss - idle_rss) / max(1, open_streams):.0f} KiB RSS, "
          f"{(busy_threads - idle_threads) / max(1, open_streams):.2f} new threads")
    print(f"streams answered with an error: {refused}")
    print(f"aborted by the clients: {cancelled:.0f} cancelled in the engine, {left:.0f} left")


if __name__ == "__main__":
    main()
