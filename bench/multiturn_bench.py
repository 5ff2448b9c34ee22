#!/usr/bin/python3
"""Multi-turn chat against streamgen-server: what prefix caching saves when
each request repeats the conversation so far (the earlier turns and their
answers) and adds one message, as every chat client does.

    bench/multiturn_bench.py [--build-dir build] [--model build/models/bench-134m]
        [--config NAME=SERVER_BINARY[,EXTRA_FLAGS...]] ... [--turns 6]
        [--conversations 4] [--max-tokens 48] [--system-words 60]

Each --config starts its own server (default: `cached` = the build's server
with --enable-prefix-caching, and `off` = the same without). Conversations
run one after another, every config in turn for each conversation (so slow
phases of a shared machine hit every config alike); a conversation is
`--turns` POST /v1/chat/completions (SSE, temperature 0), each carrying the
whole history. Printed per config and turn: the median time to the first
content delta, the prompt tokens, and the share of them the prefix cache
supplied (the server's streamgen:prefix_cache_hits_total and _queries_total
before and after the request).
"""
import argparse
import http.client
import json
import os
import statistics
import subprocess
import tempfile
import time

MESSAGES = [
    "Tell me about the history of the city and its harbour.",
    "What happened after that, and who was involved?",
    "Summarise the main points in three sentences.",
    "Which of them matters most today, and why?",
    "Give an example that a student would remember.",
    "Now say it again, more briefly.",
    "What would you add if you had more time?",
    "Thank you. One last question: what should I read next?",
]
WORDS = ("the quiet river ran past old stone walls where merchants traded salt grain "
         "and cloth while ships waited for the evening tide").split()


def start_server(binary, model, flags, tmp, name):
    port_file = os.path.join(tmp, name + "-http-port")
    log = open(os.path.join(tmp, name + ".log"), "w")
    server = subprocess.Popen(
        [binary, "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
         "--http-port-file", port_file, "--metrics-listen=", "--model", model,
         "--kv-cache-memory", "1GiB"] + flags, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 180
    while not (os.path.exists(port_file) and open(port_file).read().strip()):
        if server.poll() is not None or time.time() > deadline:
            raise SystemExit(f"{name}: the server did not start (log: {log.name})")
        time.sleep(0.05)
    port = int(open(port_file).read().strip())
    while True:  # /health answers 503 while the model loads
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/health")
            ready = conn.getresponse().status == 200
            conn.close()
        except OSError:
            ready = False
        if ready:
            return server, port
        if server.poll() is not None or time.time() > deadline:
            raise SystemExit(f"{name}: the server did not become ready (log: {log.name})")
        time.sleep(0.1)


def metric(port, name):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith(name + " ") or line.startswith(name + "{"))


def model_id(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/v1/models")
    served = json.loads(conn.getresponse().read())["data"][0]["id"]
    conn.close()
    return served


def chat(port, messages, max_tokens):
    """One streamed chat completion: (seconds to the first content delta,
    the answer's text, prompt tokens)."""
    body = json.dumps({"model": model_id(port), "messages": messages, "max_tokens": max_tokens,
                       "temperature": 0, "stream": True,
                       "stream_options": {"include_usage": True}})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    start = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    if response.status != 200:
        raise SystemExit(f"HTTP {response.status}: {response.read().decode()[:300]}")
    first, text, prompt_tokens = None, [], 0
    for raw in response:
        line = raw.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        event = json.loads(line[len("data: "):])
        for choice in event.get("choices", []):
            piece = choice.get("delta", {}).get("content")
            if piece:
                if first is None:
                    first = time.perf_counter() - start
                text.append(piece)
        if event.get("usage"):
            prompt_tokens = event["usage"]["prompt_tokens"]
    conn.close()
    return (first if first is not None else time.perf_counter() - start), "".join(text), prompt_tokens


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build-dir", default="build")
    parser.add_argument("--model", default=None)
    parser.add_argument("--config", action="append", default=[],
                        help="NAME=SERVER_BINARY[,FLAG...] (repeatable)")
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--conversations", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--system-words", type=int, default=60)
    args = parser.parse_args()
    if not 1 <= args.turns <= len(MESSAGES):
        raise SystemExit(f"--turns must be 1..{len(MESSAGES)}")
    model = args.model or os.path.join(args.build_dir, "models", "bench-134m")
    server_bin = os.path.join(args.build_dir, "server", "streamgen-server")
    configs = args.config or [f"cached={server_bin},--enable-prefix-caching", f"off={server_bin}"]
    tmp = tempfile.mkdtemp(prefix="streamgen-multiturn-")
    servers = []
    for spec in configs:
        name, _, rest = spec.partition("=")
        binary, *flags = rest.split(",")
        if not name or not os.path.exists(binary):
            raise SystemExit(f"--config {spec!r}: want NAME=SERVER_BINARY[,FLAG...]")
        server, port = start_server(binary, model, flags, tmp, name)
        servers.append((name, server, port))
    print(f"model {model}; {args.conversations} conversations x {args.turns} turns, "
          f"max_tokens {args.max_tokens}; logs in {tmp}")
    results = {name: [[] for _ in range(args.turns)] for name, _, _ in servers}
    try:
        for name, _, port in servers:  # warm-up
            chat(port, [{"role": "user", "content": "Hello."}], 4)
        for c in range(args.conversations):
            system = " ".join(WORDS[(c * 7 + i) % len(WORDS)] for i in range(args.system_words))
            for name, _, port in servers:
                messages = [{"role": "system", "content": f"Conversation {c}. {system}"}]
                for t in range(args.turns):
                    messages.append({"role": "user", "content": MESSAGES[(c + t) % len(MESSAGES)]})
                    hits = metric(port, "streamgen:prefix_cache_hits_total")
                    queries = metric(port, "streamgen:prefix_cache_queries_total")
                    ttft, answer, prompt_tokens = chat(port, messages, args.max_tokens)
                    hits = metric(port, "streamgen:prefix_cache_hits_total") - hits
                    queries = metric(port, "streamgen:prefix_cache_queries_total") - queries
                    results[name][t].append((ttft, prompt_tokens, hits, queries))
                    messages.append({"role": "assistant", "content": answer})
    finally:
        for _, server, _ in servers:
            server.terminate()
            server.wait()
    print(f"{'config':<10} {'turn':>4} {'prompt tok':>10} {'TTFT median ms':>15} "
          f"{'min':>7} {'max':>7} {'cached':>7}")
    for name in results:
        for t, rows in enumerate(results[name]):
            ttfts = [r[0] * 1000 for r in rows]
            hits, queries = sum(r[2] for r in rows), sum(r[3] for r in rows)
            share = f"{100 * hits / queries:.0f}%" if queries else "-"
            print(f"{name:<10} {t + 1:>4} {statistics.median(r[1] for r in rows):>10.0f} "
                  f"{statistics.median(ttfts):>15.1f} {min(ttfts):>7.1f} {max(ttfts):>7.1f} "
                  f"{share:>7}")


if __name__ == "__main__":
    main()
