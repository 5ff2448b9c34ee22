#!/usr/bin/python3
"""Faults against real streamgen-server subprocesses on loopback (issue 11,
section 3), one unittest case per fault:

- SIGTERM under load: gRPC and HTTP streams in flight, clients that keep
  sending: every stream finishes (its text equal to the same request alone)
  or ends with its documented status (gRPC: a last message with
  FINISH_REASON_CANCELLED, then UNAVAILABLE; HTTP: an error event, then
  [DONE]); new calls get UNAVAILABLE / 503 or a refused connection; no client
  hangs; the server exits 0.
- A truncated, a corrupted (header JSON) and a wrong-shaped model file at
  start-up: refused with a message naming the file and the problem, exit 1.
- The KV pool exhausted: preemption happens (the counter says so), every
  output equals the same request alone, a request that can never fit is
  refused at once, and afterwards every block is free.
- Many connections that send nothing: 200 HTTP connections holding a partial
  request line, 200 raw TCP connections and 200 idle gRPC channels on the
  gRPC port. The server keeps serving gRPC and HTTP clients, its threads do
  not grow, its memory and descriptors stay bounded and come back, the idle
  HTTP connections are closed after the read timeout, and SIGTERM still
  exits 0.

    /usr/bin/python3 tests/fault_test.py --build-dir BUILD_DIR
"""
import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from streamgen_server import StreamgenServer, metric_value, proc_status  # noqa: E402

ARGS = None
grpc = pb = pb_grpc = None


def import_grpc():
    global grpc, pb, pb_grpc
    sys.path.insert(0, os.path.join(ARGS.build_dir, "python"))
    import grpc as grpc_module  # Debian's python3-grpcio
    from streamgen.v1 import generate_pb2, generate_pb2_grpc
    grpc, pb, pb_grpc = grpc_module, generate_pb2, generate_pb2_grpc


def tiny_model():
    return os.path.join(ARGS.build_dir, "models", "tiny-builtin")


def http_get(port, path, timeout=30):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def healthy(url):
    try:
        return http_get(int(url.rsplit(":", 1)[1]), "/health", timeout=5)[0] == 200
    except OSError:
        return False


class Server(StreamgenServer):
    def __init__(self, flags=()):
        super().__init__(ARGS.build_dir, list(flags), healthy=healthy, prefix="streamgen-fault-")
        self.channel = grpc.insecure_channel(self.grpc_address)
        self.stub = pb_grpc.TextGenerationStub(self.channel)

    def metric(self, name):
        return metric_value(http_get(self.http_port, "/metrics")[1], name)

    def wait_metrics(self, expected, timeout=60):
        """Polls /metrics until every name has its value (the engine's gauges
        are published at the end of each iteration)."""
        end = time.time() + timeout
        while True:
            text = http_get(self.http_port, "/metrics")[1]
            values = {name: metric_value(text, name) for name in expected}
            if values == expected or time.time() > end:
                return values
            time.sleep(0.05)

    def stop(self):
        self.channel.close()
        return super().stop()


def collect(call):
    """(messages, status code name, details) of a Generate call."""
    messages = []
    try:
        for message in call:
            messages.append(message)
        return messages, "OK", ""
    except grpc.RpcError as error:
        return messages, error.code().name, error.details() or ""


def ids_of(messages):
    return [t.id for m in messages for t in m.tokens]


def text_of(messages):
    return "".join(m.text for m in messages)


def make_slow_model(directory):
    """A random 512-wide, 8-layer model: slow enough on 2 cores that streams
    of several hundred tokens are still running when the drain times out."""
    subprocess.run([os.path.join(ARGS.build_dir, "tools", "streamgen-make-tiny-model"),
                    "--out", directory, "--tokenizer", os.path.join(tiny_model(), "tokenizer.model"),
                    "--hidden-size", "512", "--intermediate-size", "1376", "--layers", "8",
                    "--heads", "8", "--kv-heads", "8", "--context", "2048"],
                   check=True, capture_output=True, timeout=300)


def sse(response):
    """The text, the error events and whether [DONE] came, of an SSE body."""
    text, errors, done, finish = "", [], False, None
    for line in iter(response.readline, b""):
        line = line.decode().rstrip("\n")
        if not line.startswith("data: "):
            continue
        payload = line[len("data: "):]
        if payload == "[DONE]":
            done = True
            break
        event = json.loads(payload)
        if "error" in event:
            errors.append(event["error"])
            continue
        for choice in event.get("choices", []):
            text += choice.get("text") or ""
            finish = choice.get("finish_reason") or finish
    return text, errors, done, finish


class SigtermUnderLoadTest(unittest.TestCase):
    LONG, SHORT = 600, 8  # new tokens: a long stream outlives the drain, a short one does not

    @classmethod
    def setUpClass(cls):
        cls.model = tempfile.mkdtemp(prefix="streamgen-fault-model-")
        make_slow_model(cls.model)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.model, ignore_errors=True)

    def test_sigterm_under_load(self):
        server = Server(["--model", self.model, "--dtype", "float32", "--threads", "1",
                         "--max-batch", "32", "--drain-timeout", "%gs" % ARGS.drain_seconds])
        try:
            long_request = pb.GenerateRequest(prompt="The lighthouse keeper", ignore_eos=True,
                                              max_new_tokens=self.LONG)
            short_request = pb.GenerateRequest(prompt="Once upon a time",
                                               max_new_tokens=self.SHORT)
            # The references, alone.
            long_ref, code, details = collect(server.stub.Generate(long_request, timeout=300))
            self.assertEqual(code, "OK", details)
            short_ref, code, details = collect(server.stub.Generate(short_request, timeout=120))
            self.assertEqual(code, "OK", details)
            long_ids, long_text = ids_of(long_ref), text_of(long_ref)
            short_text = text_of(short_ref)

            results = {"long_grpc": [], "long_http": [], "short_grpc": [], "short_http": []}
            lock = threading.Lock()
            started = threading.Semaphore(0)
            stop_sending = threading.Event()

            def long_grpc():
                call = server.stub.Generate(long_request, timeout=300)
                messages, code, details = [], "OK", ""
                try:
                    for message in call:
                        if not messages:
                            started.release()
                        messages.append(message)
                except grpc.RpcError as error:
                    code, details = error.code().name, error.details() or ""
                with lock:
                    results["long_grpc"].append((messages, code, details))

            def long_http():
                connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=300)
                connection.request("POST", "/v1/completions", headers={"Content-Type": "application/json"},
                                   body=json.dumps({"prompt": "The lighthouse keeper",
                                                    "max_tokens": self.LONG, "temperature": 0,
                                                    "ignore_eos": True, "stream": True}))
                response = connection.getresponse()
                started.release()
                outcome = (response.status,) + sse(response)
                connection.close()
                with lock:
                    results["long_http"].append(outcome)

            def short_grpc():
                # A closed loop until the server refuses (draining) or is gone.
                while True:
                    messages, code, details = collect(server.stub.Generate(short_request,
                                                                           timeout=120))
                    with lock:
                        results["short_grpc"].append((messages, code, details))
                    if code != "OK" or stop_sending.is_set():
                        return

            def short_http():
                while True:
                    try:
                        connection = http.client.HTTPConnection("127.0.0.1", server.http_port,
                                                                timeout=120)
                        connection.request("POST", "/v1/completions",
                                           headers={"Content-Type": "application/json"},
                                           body=json.dumps({"prompt": "Once upon a time",
                                                            "max_tokens": self.SHORT,
                                                            "temperature": 0}))
                        response = connection.getresponse()
                        outcome = (response.status, response.getheader("Retry-After"),
                                   response.read().decode())
                        connection.close()
                    except (ConnectionError, http.client.HTTPException) as error:
                        outcome = ("refused", None, repr(error))
                    with lock:
                        results["short_http"].append(outcome)
                    if outcome[0] != 200 or stop_sending.is_set():
                        return

            threads = ([threading.Thread(target=long_grpc) for _ in range(12)] +
                       [threading.Thread(target=long_http) for _ in range(4)] +
                       [threading.Thread(target=short_grpc) for _ in range(6)] +
                       [threading.Thread(target=short_http) for _ in range(2)])
            for thread in threads:
                thread.start()
            for _ in range(16):  # every long stream has begun
                self.assertTrue(started.acquire(timeout=120), server.logs()[-3000:])
            time.sleep(0.5)  # the short clients have gone round a few times
            server.process.send_signal(signal.SIGTERM)
            begun = time.time()
            for thread in threads:
                thread.join(timeout=180)
                self.assertFalse(thread.is_alive(), "a client hangs after SIGTERM")
            stop_sending.set()
            self.assertEqual(server.process.wait(timeout=120), 0, server.logs()[-3000:])
            print("\nSIGTERM under load: every client done %.1f s after the signal" %
                  (time.time() - begun), file=sys.stderr)

            cut = 0
            for messages, code, details in results["long_grpc"]:
                ids = ids_of(messages)
                if code == "OK":
                    self.assertEqual(ids, long_ids)
                    self.assertEqual(text_of(messages), long_text)
                    continue
                # The drain timeout: a last message saying so, then UNAVAILABLE.
                cut += 1
                self.assertEqual(code, "UNAVAILABLE", details)
                self.assertIn("drain timeout", details)
                self.assertEqual(messages[-1].finish_reason, pb.FINISH_REASON_CANCELLED)
                self.assertEqual(messages[-1].usage.completion_tokens, len(ids))
                self.assertEqual(ids, long_ids[:len(ids)])
                self.assertTrue(long_text.startswith(text_of(messages)))
            # 600 tokens of this model take far longer than the drain on this machine.
            self.assertGreater(cut, 0, "no stream outlived the drain timeout")
            for status, text, errors, done, finish in results["long_http"]:
                self.assertEqual(status, 200)
                self.assertTrue(done, "an HTTP stream ended without [DONE]")
                if finish == "length":
                    self.assertEqual(text, long_text)
                    self.assertEqual(errors, [])
                else:
                    self.assertEqual(len(errors), 1, errors)
                    self.assertEqual(errors[0]["type"], "service_unavailable")
                    self.assertIn("drain timeout", errors[0]["message"])
                    self.assertTrue(long_text.startswith(text))

            draining_refusals = 0
            for messages, code, details in results["short_grpc"]:
                if code == "OK":
                    self.assertEqual(text_of(messages), short_text)
                elif messages:  # cut by the drain timeout
                    self.assertEqual(code, "UNAVAILABLE", details)
                    self.assertEqual(messages[-1].finish_reason, pb.FINISH_REASON_CANCELLED)
                else:  # refused: draining, or the server had gone
                    self.assertEqual(code, "UNAVAILABLE", details)
                    draining_refusals += "shutting down" in details
            for status, retry_after, body in results["short_http"]:
                if status == 200:
                    self.assertEqual(json.loads(body)["choices"][0]["text"], short_text)
                elif status == 503:
                    self.assertEqual(retry_after, "1")
                    self.assertEqual(json.loads(body)["error"]["type"], "service_unavailable")
                else:
                    self.assertEqual(status, "refused", body)
            # The loops kept calling through the drain: some met the refusal.
            self.assertGreater(draining_refusals, 0, results["short_grpc"][-6:])
            log = server.logs()
            self.assertIn('"msg":"signal received: draining"', log)
            self.assertIn('"msg":"drain timeout: ending the streams left"', log)
            self.assertIn('"msg":"stopped"', log)
        finally:
            server.stop()


class BadModelFileTest(unittest.TestCase):
    """A copy of the tiny model with one thing wrong in model.safetensors."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="streamgen-bad-model-")
        self.model = os.path.join(self.dir, "model")
        shutil.copytree(tiny_model(), self.model)
        self.weights = os.path.join(self.model, "model.safetensors")

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def header(self):
        with open(self.weights, "rb") as f:
            data = f.read()
        length = struct.unpack("<Q", data[:8])[0]
        return json.loads(data[8:8 + length]), data[8 + length:]

    def write(self, header, payload):
        encoded = json.dumps(header).encode()
        encoded += b" " * (-len(encoded) % 8)  # safetensors pads the header with spaces
        with open(self.weights, "wb") as f:
            f.write(struct.pack("<Q", len(encoded)) + encoded + payload)

    def start(self):
        """streamgen-server on the broken model: (exit code, output)."""
        done = subprocess.run([os.path.join(ARGS.build_dir, "server", "streamgen-server"),
                               "--model", self.model, "--listen", "127.0.0.1:0",
                               "--http-listen=", "--metrics-listen="],
                              capture_output=True, text=True, timeout=120)
        return done.returncode, done.stdout + done.stderr

    def assert_refused(self, *problem):
        code, output = self.start()
        self.assertEqual(code, 1, output)
        self.assertIn("cannot start", output)
        self.assertIn(self.weights, output)
        for text in problem:
            self.assertIn(text, output)
        self.assertNotIn("serving", output.replace("NOT_SERVING", ""))

    def test_the_intact_copy_starts(self):
        # The check below each fault: the same copy, unbroken, is served.
        server = StreamgenServer(ARGS.build_dir, ["--model", self.model], healthy=healthy,
                                 prefix="streamgen-fault-")
        self.assertEqual(server.stop(), 0)

    def test_truncated_file(self):
        size = os.path.getsize(self.weights)
        os.truncate(self.weights, size - 1000)
        header, _ = self.header()
        last = max((k for k in header if k != "__metadata__"),
                   key=lambda k: header[k]["data_offsets"][1])
        self.assert_refused("tensor '%s'" % last, "out of range", "(file truncated?)")

    def test_corrupted_header_json(self):
        with open(self.weights, "r+b") as f:
            f.seek(8 + 40)
            f.write(b"\x00#}")
        self.assert_refused("safetensors header is not valid JSON")

    def test_header_length_beyond_the_file(self):
        with open(self.weights, "r+b") as f:
            f.write(struct.pack("<Q", 1 << 40))
        self.assert_refused("header length %d" % (1 << 40), "beyond the file size")

    def test_wrong_shaped_tensor(self):
        # Same bytes, dimensions swapped: a valid safetensors file whose
        # tensor does not fit config.json.
        header, payload = self.header()
        name = "model.layers.1.mlp.gate_proj.weight"
        rows, columns = header[name]["shape"]
        header[name]["shape"] = [columns, rows]
        self.write(header, payload)
        self.assert_refused("tensor '%s' has shape [%d, %d], expected [%d, %d] from config.json" %
                            (name, columns, rows, rows, columns))


class KvPoolExhaustedTest(unittest.TestCase):
    def test_preemption_keeps_outputs_and_frees_every_block(self):
        # 24 blocks of 16 tokens: 384 positions for 16 requests of up to ~170.
        server = Server(["--dtype", "float32", "--threads", "1", "--kv-cache-blocks", "24",
                         "--max-batch", "16"])
        try:
            requests = []
            for i in range(16):
                fields = dict(prompt="Story number %d begins: " % i + "once " * (i * 3),
                              max_new_tokens=100 + 4 * i, ignore_eos=True)
                if i % 2:
                    fields.update(temperature=0.9, top_p=0.95, seed=1000 + i)
                requests.append(pb.GenerateRequest(**fields))
            references = []
            for request in requests:  # alone: each fits in the pool by itself
                messages, code, details = collect(server.stub.Generate(request, timeout=120))
                self.assertEqual(code, "OK", details)
                references.append((ids_of(messages), text_of(messages)))
            self.assertEqual(server.metric("streamgen:num_preemptions_total"), 0)

            outputs = [None] * len(requests)

            def run(i):
                outputs[i] = collect(server.stub.Generate(requests[i], timeout=300))
            threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests))]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=300)
                self.assertFalse(thread.is_alive(), "a request never finished")
            for i, (messages, code, details) in enumerate(outputs):
                self.assertEqual(code, "OK", details)
                self.assertEqual(ids_of(messages), references[i][0], "request %d" % i)
                self.assertEqual(text_of(messages), references[i][1], "request %d" % i)
            preemptions = server.metric("streamgen:num_preemptions_total")
            self.assertGreater(preemptions, 0, "the pool was never exhausted")

            # One that can never fit (prompt + max_new_tokens beyond 384 positions).
            messages, code, details = collect(server.stub.Generate(
                pb.GenerateRequest(prompt="Too long", max_new_tokens=400), timeout=60))
            self.assertEqual(code, "INVALID_ARGUMENT")
            self.assertIn("+ max_new_tokens (400) can never fit in the KV cache of 384 tokens",
                          details)
            self.assertEqual(messages, [])
            idle = {"streamgen:kv_cache_usage_perc": 0.0, "streamgen:num_requests_running": 0.0,
                    "streamgen:num_requests_waiting": 0.0}
            self.assertEqual(server.wait_metrics(idle), idle)
            print("\nKV pool exhausted: %d preemptions, 16 outputs equal to alone" % preemptions,
                  file=sys.stderr)
        finally:
            self.assertEqual(server.stop(), 0)


class IdleConnectionsTest(unittest.TestCase):
    CONNECTIONS = 200
    READ_TIMEOUT_S = 10  # httplib's read timeout, server/http_server.cc

    def test_connections_that_send_nothing(self):
        server = Server(["--dtype", "float32", "--threads", "1"])
        opened = []
        channels = []
        try:
            request = pb.GenerateRequest(prompt="Once upon a time", max_new_tokens=16)
            reference, code, _ = collect(server.stub.Generate(request, timeout=60))
            self.assertEqual(code, "OK")
            body = json.dumps({"prompt": "Once upon a time", "max_tokens": 16, "temperature": 0})

            def http_completion():
                connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=120)
                try:
                    connection.request("POST", "/v1/completions", body=body,
                                       headers={"Content-Type": "application/json"})
                    response = connection.getresponse()
                    return response.status, response.read().decode()
                finally:
                    connection.close()
            status, text = http_completion()
            self.assertEqual(status, 200, text)
            time.sleep(0.5)
            rss0, threads0, fds0 = proc_status(server.process.pid)

            # 200 HTTP connections with a partial request line, nothing more.
            # (Opening them can take seconds: past --http-threads workers and as
            # many queued, httplib's accept thread reads the next one itself.)
            begun = time.time()
            for _ in range(self.CONNECTIONS):
                sock = socket.create_connection(("127.0.0.1", server.http_port), timeout=30)
                sock.sendall(b"POST /v1/completions HT")
                opened.append(sock)
            http_opened = time.time()
            open_s = http_opened - begun
            # Meanwhile an HTTP client is served: at worst it waits for a
            # worker, which the idle connections hold until the read timeout.
            begun = time.time()
            status, text = http_completion()
            http_s = time.time() - begun
            self.assertEqual(status, 200, text)
            self.assertEqual(json.loads(text)["choices"][0]["text"], text_of(reference))
            # 200 raw TCP connections to the gRPC port (no HTTP/2 preface).
            grpc_port = int(server.grpc_address.rsplit(":", 1)[1])
            raw_grpc = [socket.create_connection(("127.0.0.1", grpc_port), timeout=30)
                        for _ in range(self.CONNECTIONS)]
            # 200 gRPC channels, each its own connection, that never call.
            for i in range(self.CONNECTIONS):
                channel = grpc.insecure_channel(server.grpc_address,
                                                options=[("grpc.use_local_subchannel_pool", 1)])
                grpc.channel_ready_future(channel).result(timeout=60)
                channels.append(channel)
            time.sleep(0.5)
            rss1, threads1, fds1 = proc_status(server.process.pid)
            # Meanwhile a gRPC client is served, promptly.
            begun = time.time()
            messages, code, details = collect(server.stub.Generate(request, timeout=60))
            grpc_s = time.time() - begun
            self.assertEqual(code, "OK", details)
            self.assertEqual(ids_of(messages), ids_of(reference))

            # The server closes the idle HTTP connections after its read
            # timeout: each gets an orderly end of stream, and no answer.
            for sock in opened:
                sock.settimeout(self.READ_TIMEOUT_S * 6)
                self.assertEqual(sock.recv(4096), b"")
            closed_s = time.time() - http_opened
            for sock in opened + raw_grpc:
                sock.close()
            for channel in channels:
                channel.close()
            opened, channels = [], []
            # Served again at once, and the descriptors come back.
            status, _ = http_completion()
            self.assertEqual(status, 200)
            end = time.time() + 60
            while proc_status(server.process.pid)[2] > fds0 + 8 and time.time() < end:
                time.sleep(0.1)
            rss2, threads2, fds2 = proc_status(server.process.pid)
            print("\n%d idle HTTP + %d raw TCP + %d idle gRPC connections: threads %d -> %d -> %d,"
                  " RSS %.1f -> %.1f -> %.1f MiB, descriptors %d -> %d -> %d; opening the HTTP "
                  "ones took %.1f s; gRPC call %.2f s, HTTP call %.2f s during; idle HTTP "
                  "connections closed %.1f s after the last was opened" %
                  (self.CONNECTIONS, self.CONNECTIONS, self.CONNECTIONS, threads0, threads1,
                   threads2, rss0 / 1024, rss1 / 1024, rss2 / 1024, fds0, fds1, fds2, open_s,
                   grpc_s, http_s, closed_s), file=sys.stderr)
            # Bounded: no thread per connection, a few tens of KiB each at most.
            self.assertLessEqual(threads1, threads0 + 8)
            self.assertLessEqual(threads2, threads0 + 8)
            self.assertLess(rss1 - rss0, 64 * 1024)
            self.assertLessEqual(fds2, fds0 + 8)
            # "Does not hang" bounds, not speed targets.
            self.assertLess(grpc_s, 30)
            self.assertLess(http_s, self.READ_TIMEOUT_S * 6)
            self.assertLess(closed_s, self.READ_TIMEOUT_S * 6)
        finally:
            for sock in opened:
                sock.close()
            for channel in channels:
                channel.close()
            self.assertEqual(server.stop(), 0)

    def test_sigterm_with_idle_connections_open(self):
        server = Server(["--dtype", "float32", "--threads", "1", "--drain-timeout", "2s"])
        opened = [socket.create_connection(("127.0.0.1", server.http_port), timeout=30)
                  for _ in range(self.CONNECTIONS)]
        try:
            for sock in opened:
                sock.sendall(b"GET /health HT")
            grpc_port = int(server.grpc_address.rsplit(":", 1)[1])
            opened += [socket.create_connection(("127.0.0.1", grpc_port), timeout=30)
                       for _ in range(self.CONNECTIONS)]
            time.sleep(0.5)
            begun = time.time()
            server.process.send_signal(signal.SIGTERM)
            self.assertEqual(server.process.wait(timeout=120), 0, server.logs()[-2000:])
            print("\nSIGTERM with %d idle connections open: exit 0 after %.1f s" %
                  (2 * self.CONNECTIONS, time.time() - begun), file=sys.stderr)
        finally:
            for sock in opened:
                sock.close()
            server.stop()


def main():
    global ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--build-dir", required=True)
    # SigtermUnderLoadTest's drain: long enough that the short clients' loops
    # meet the draining refusal while it lasts (under ASan a short call takes
    # longer than 2 s: tests/sanitizers/sanitizers.cmake passes more).
    parser.add_argument("--drain-seconds", type=float, default=2.0)
    ARGS, rest = parser.parse_known_args()
    ARGS.build_dir = os.path.abspath(ARGS.build_dir)
    import_grpc()
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
