#!/usr/bin/python3
"""The HTTP face's transport and lifecycle against real streamgen-server
subprocesses on loopback: HTTPS and mutual TLS from the same certificate flags
as gRPC (curl with certificates made here by openssl), a client that
disconnects while its request is still queued (freed before any token), a
reader that stops reading (never slows another stream or the engine), the
drain timeout ending a stream with an error event and [DONE], the
per-request log line carrying the X-Request-Id, and connections: clients that
trickle their request head (slow loris) hold up no other client, and past the
workers and their queue a connection is refused 503 at once.

    /usr/bin/python3 tests/http_lifecycle_test.py --build-dir BUILD_DIR
"""
import argparse
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

from streamgen_server import StreamgenServer, metric_value

ARGS = None
CURL = "/usr/bin/curl"


class Server(StreamgenServer):
    """streamgen-server on 127.0.0.1 (free ports) with `flags`; curl with
    `curl_flags` (certificates) talks to its HTTP face."""

    def __init__(self, flags=(), scheme="http", curl_flags=()):
        self.curl_flags = list(curl_flags)
        super().__init__(ARGS.build_dir, flags, scheme=scheme, prefix="streamgen-http-lifecycle-",
                         healthy=lambda url: self.curl("/health", url=url).returncode == 0)
        self.port = self.http_port

    def curl(self, path, *args, body=None, url=None):
        command = [CURL, "-sS", "-f", *self.curl_flags, *args, (url or self.url) + path]
        if body is not None:
            command[1:1] = ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    def metric(self, name):
        return metric_value(self.curl("/metrics").stdout, name) or 0.0

    def wait_metric(self, name, predicate, timeout=30):
        end = time.time() + timeout
        while time.time() < end:
            value = self.metric(name)
            if predicate(value):
                return value
            time.sleep(0.02)
        raise AssertionError(f"{name} stayed at {self.metric(name)}\n{self.logs()}")


def raw_request(port, body, path="/v1/completions", rcvbuf=None):
    """A plain TCP client: sends one POST and returns the socket unread."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    data = json.dumps(body).encode()
    sock.sendall(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Content-Type: application/json\r\nContent-Length: " +
                 str(len(data)).encode() + b"\r\n\r\n" + data)
    return sock


def readable(sock):
    """Whether `sock` has something to read (bytes or the end) right now."""
    return bool(select.select([sock], [], [], 0)[0])


def read_response(sock, timeout=30):
    """One HTTP response with a Content-Length body: (head, body)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError("the connection ended after %r" % data)
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError("the body ended after %r" % body)
        body += chunk
    return head.decode(), body


def read_to_end(sock, timeout=60):
    """Everything until the server closes the connection (a reset counts as the end)."""
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def make_certificates(directory):
    """A CA, a server certificate for 127.0.0.1 and a client certificate."""
    def run(*args):
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
        "-keyout", "ca.key", "-out", "ca.pem")
    with open(os.path.join(directory, "san.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout",
            f"{name}.key", "-out", f"{name}.csr")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", f"{name}.pem")
    return {n: os.path.join(directory, n) for n in
            ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


COMPLETION = {"prompt": "Once upon a time", "max_tokens": 8, "temperature": 0}


class TlsTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.certs = make_certificates(self.tmp.name)

    def tearDown(self):
        self.tmp.cleanup()

    def test_https_from_the_grpc_certificate_flags(self):
        server = Server(["--tls-cert", self.certs["server.pem"], "--tls-key", self.certs["server.key"]],
                        scheme="https", curl_flags=["--cacert", self.certs["ca.pem"]])
        try:
            out = server.curl("/v1/completions", body=COMPLETION)
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertEqual(json.loads(out.stdout)["usage"]["completion_tokens"], 8)
            # Plain HTTP on the TLS port gets no answer.
            plain = subprocess.run([CURL, "-sS", f"http://127.0.0.1:{server.port}/health"],
                                   capture_output=True, text=True, timeout=60)
            self.assertNotEqual(plain.returncode, 0)
            # An untrusted certificate is refused by the client.
            untrusted = subprocess.run([CURL, "-sS", server.url + "/health"],
                                       capture_output=True, text=True, timeout=60)
            self.assertNotEqual(untrusted.returncode, 0)
        finally:
            self.assertEqual(server.stop(), 0)

    def test_mutual_tls_needs_a_client_certificate(self):
        flags = ["--tls-cert", self.certs["server.pem"], "--tls-key", self.certs["server.key"],
                 "--tls-client-ca", self.certs["ca.pem"]]
        with_cert = ["--cacert", self.certs["ca.pem"], "--cert", self.certs["client.pem"],
                     "--key", self.certs["client.key"]]
        server = Server(flags, scheme="https", curl_flags=with_cert)
        try:
            self.assertEqual(server.curl("/v1/completions", body=COMPLETION).returncode, 0)
            without = subprocess.run([CURL, "-sS", "--cacert", self.certs["ca.pem"],
                                      server.url + "/health"],
                                     capture_output=True, text=True, timeout=60)
            self.assertNotEqual(without.returncode, 0, without.stdout)
        finally:
            self.assertEqual(server.stop(), 0)


class StreamLifecycleTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # The tiny random model decodes thousands of tokens a second: its streams
        # end before a test can act on them. A random model of 512 x 8 layers
        # decodes a few hundred a second: 1800 tokens take several seconds.
        cls.model = tempfile.mkdtemp(prefix="streamgen-slow-model-")
        subprocess.run([os.path.join(ARGS.build_dir, "tools", "streamgen-make-tiny-model"),
                        "--out", cls.model, "--tokenizer",
                        os.path.join(ARGS.build_dir, "models", "tiny-builtin", "tokenizer.model"),
                        "--hidden-size", "512", "--intermediate-size", "1376", "--layers", "8",
                        "--heads", "8", "--kv-heads", "8", "--context", "2048"],
                       check=True, capture_output=True, timeout=120)

    @classmethod
    def tearDownClass(cls):
        subprocess.run(["rm", "-rf", cls.model])

    def test_loading_answers_503_with_retry_after(self):
        # The port files are written before the model loads (about a second
        # for this model): the first requests find it loading.
        server = StreamgenServer(ARGS.build_dir, ["--model", self.model], healthy=None,
                                 prefix="streamgen-http-loading-")
        try:
            out = subprocess.run(
                [CURL, "-sS", "-D", "-", server.url + "/v1/completions", "-H",
                 "Content-Type: application/json", "-d", json.dumps(COMPLETION)],
                capture_output=True, text=True, timeout=60).stdout
            self.assertIn("HTTP/1.1 503", out, server.logs())
            self.assertIn("Retry-After: 1", out)
            body = json.loads(out[out.index("\n\n") + 2:])  # text mode: \r\n is \n
            self.assertEqual(body["error"]["message"], "the model is still loading; retry")
            self.assertEqual(body["error"]["type"], "service_unavailable")
            health = subprocess.run([CURL, "-sS", "-w", " %{http_code}", server.url + "/health"],
                                    capture_output=True, text=True, timeout=60).stdout
            if "serving" not in health:  # still loading
                self.assertEqual(health, '{"status":"loading"}\n 503')
        finally:
            self.assertEqual(server.stop(), 0)

    def test_disconnect_while_queued_frees_the_request_before_any_token(self):
        # One sequence at a time: the second request waits in the engine's queue.
        server = Server(["--model", self.model, "--max-batch", "1"])
        try:
            long = {"prompt": "Once upon a time", "max_tokens": 1800, "ignore_eos": True,
                    "temperature": 0, "stream": True}
            first = raw_request(server.port, long)
            server.wait_metric("streamgen_engine_running_requests", lambda v: v == 1)
            second = raw_request(server.port, dict(long, max_tokens=5))
            server.wait_metric("streamgen_engine_waiting_requests", lambda v: v == 1)
            second.close()  # never got a byte: the server must notice from the socket alone
            server.wait_metric("streamgen_engine_cancelled_total", lambda v: v == 1)
            # The engine publishes its gauges at the end of each iteration, the
            # cancel counter when the request ends: the gauge follows within one.
            server.wait_metric("streamgen_engine_waiting_requests", lambda v: v == 0, timeout=5)
            self.assertEqual(server.metric("streamgen_engine_running_requests"), 1)
            first.close()
            server.wait_metric("streamgen_engine_cancelled_total", lambda v: v == 2)
            server.wait_metric("streamgen_engine_running_requests", lambda v: v == 0)
        finally:
            self.assertEqual(server.stop(), 0)

    def test_a_reader_that_stops_reading_blocks_nobody(self):
        server = Server(["--model", self.model])
        try:
            # Many large chunks (logprobs) into a 4 KiB receive buffer that is never read.
            slow = raw_request(server.port, {"prompt": "Once upon a time", "max_tokens": 300,
                                             "ignore_eos": True, "temperature": 0, "stream": True,
                                             "logprobs": 5}, rcvbuf=4096)
            server.wait_metric("streamgen_engine_running_requests", lambda v: v == 1)
            # Another stream runs to its end meanwhile.
            out = server.curl("/v1/completions", "-N",
                              body={"prompt": "Hello", "max_tokens": 32, "temperature": 0,
                                    "stream": True})
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertIn("data: [DONE]", out.stdout)
            # And the engine finishes the stalled reader's sequence too: its
            # tokens wait merged in one pending message, not in the engine.
            # (300 tokens of the slow model: generous for a loaded CI machine.)
            server.wait_metric("streamgen_engine_finished_total", lambda v: v >= 2, timeout=180)
            server.wait_metric("streamgen_engine_running_requests", lambda v: v == 0, timeout=5)
            self.assertEqual(server.metric("streamgen_engine_cancelled_total"), 0)
            # The reader comes back: it gets the whole stream, ending in [DONE].
            slow.settimeout(30)
            data = b""
            while not data.endswith(b"\r\n0\r\n\r\n"):  # the last chunk of the body
                chunk = slow.recv(65536)
                if not chunk:
                    break
                data += chunk
            slow.close()
            self.assertIn(b'"finish_reason":"length"', data)
            self.assertTrue(data.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n"), data[-200:])
        finally:
            self.assertEqual(server.stop(), 0)

    def test_drain_timeout_ends_a_stream_with_an_error_event_then_done(self):
        server = Server(["--model", self.model, "--drain-timeout", "1s"])
        stream = subprocess.Popen(
            [CURL, "-sSN", server.url + "/v1/chat/completions", "-H", "Content-Type: application/json",
             "-H", "X-Request-Id: drain-me", "-d",
             json.dumps({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1800,
                         "ignore_eos": True, "temperature": 0, "stream": True})],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            server.wait_metric("streamgen:generation_tokens_total", lambda v: v >= 1)
            server.process.send_signal(signal.SIGTERM)
            out, _ = stream.communicate(timeout=120)
            self.assertEqual(server.process.wait(timeout=120), 0)
            events = [e for e in out.split("\n\n") if e.strip()]
            self.assertEqual(events[-1], "data: [DONE]", out[-500:])
            last = json.loads(events[-2][len("data: "):])
            self.assertEqual(last["error"]["type"], "service_unavailable", last)
            self.assertIn("drain timeout", last["error"]["message"])
            # Text came before the end, and no finish chunk.
            self.assertIn('"delta":{"content":', out)
            self.assertNotIn('"finish_reason":"length"', out)
            log = [json.loads(l) for l in server.logs().splitlines() if l.startswith("{")]
            lines = [l for l in log if l.get("request_id") == "drain-me"]
            self.assertEqual(len(lines), 1, server.logs())
            self.assertEqual(lines[0]["msg"], "POST /v1/chat/completions")
            self.assertEqual(lines[0]["code"], "UNAVAILABLE")
            self.assertEqual(lines[0]["finish_reason"], "cancelled")
            self.assertGreater(lines[0]["completion_tokens"], 0)
        finally:
            if stream.poll() is None:
                stream.kill()
            server.stop()


class ConnectionsTest(unittest.TestCase):
    # httplib's read timeout (server/http_server.cc kReadTimeoutS): a request
    # head must arrive in full this long after the connection is accepted.
    HEAD_TIMEOUT_S = 10
    # Two workers and two queued connections (--http-threads 2): the slow
    # clients outnumber them, so some reach what lies past them, where the
    # accepting thread itself used to read a head to answer it 503.
    THREADS = 2
    SLOW = 8

    def test_clients_that_trickle_their_head_hold_up_no_one(self):
        server = Server(["--http-threads", str(self.THREADS)])
        request_line = b"GET /health HTTP/1.1\r\n"
        rest = b"Host: 127.0.0.1\r\nX-Slow: " + b"s" * 60 + b"\r\n\r\n"
        # [socket, the bytes it trickles, how many it has sent]: half send one
        # byte a second from the first, half send their request line at once.
        slow = []
        stop = threading.Event()

        def trickle():
            while not stop.wait(1.0):
                for entry in slow:
                    sock, data, sent = entry
                    if sent < len(data) and not readable(sock):  # unanswered, still open
                        try:
                            entry[2] += sock.send(data[sent:sent + 1])
                        except OSError:
                            entry[2] = len(data)
        try:
            for i in range(self.SLOW):
                sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
                if i % 2:
                    sock.sendall(request_line)
                    slow.append([sock, rest, 0])
                else:
                    slow.append([sock, request_line + rest, 0])
            opened = time.time()
            trickler = threading.Thread(target=trickle)
            trickler.start()
            time.sleep(2.5)
            # Other clients are accepted and served at once meanwhile.
            health = server.curl("/health", "--max-time", "20")
            self.assertEqual(health.returncode, 0, health.stderr + server.logs())
            self.assertEqual(json.loads(health.stdout), {"status": "serving"})
            completion = server.curl("/v1/completions", "--max-time", "20", body=COMPLETION)
            self.assertEqual(completion.returncode, 0, completion.stderr)
            self.assertEqual(json.loads(completion.stdout)["usage"]["completion_tokens"], 8)
            served_s = time.time() - opened
            # ... while every slow client is still sending, unanswered.
            for sock, data, sent in slow:
                self.assertLess(sent, len(data))
                self.assertFalse(readable(sock), "a slow client was answered or closed")
            # Their heads never arrive in full: once the read timeout has
            # passed since it was accepted, one whose request line came gets
            # a 408 with the reason; one without a request line, only the end
            # of the connection (as httplib did).
            for i, (sock, data, _) in enumerate(slow):
                answer = read_to_end(sock)
                if i % 2:
                    head, _, body = answer.partition(b"\r\n\r\n")
                    self.assertTrue(head.startswith(b"HTTP/1.1 408 "), answer)
                    self.assertIn(b"\r\nConnection: close\r\n", head)
                    error = json.loads(body)["error"]
                    self.assertEqual(error["message"],
                                     "the request head did not arrive in full within %d s"
                                     % self.HEAD_TIMEOUT_S, error)
                    self.assertEqual(error["code"], "request_timeout", error)
                else:
                    self.assertEqual(answer, b"")
            closed_s = time.time() - opened
            self.assertGreater(closed_s, served_s)
            print("\n%d clients trickling their heads: other requests served %.1f s after they "
                  "opened, the slow ones ended after %.1f s" % (self.SLOW, served_s, closed_s),
                  file=sys.stderr)
            # And the server serves as before.
            self.assertEqual(server.curl("/health").returncode, 0)
        finally:
            stop.set()
            for sock, _, _ in slow:
                sock.close()
            self.assertEqual(server.stop(), 0)

    def test_past_the_workers_and_their_queue_503_at_once(self):
        server = Server(["--http-threads", str(self.THREADS)])
        head = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        held, queued = [], []
        try:
            # Keep-alive connections, answered, hold the workers (waiting up
            # to 5 s for their next request).
            for _ in range(self.THREADS):
                sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
                sock.sendall(head)
                self.assertTrue(read_response(sock)[0].startswith("HTTP/1.1 200 "))
                held.append(sock)
            # As many wait in the queue, unanswered.
            for _ in range(self.THREADS):
                sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
                sock.sendall(head)
                queued.append(sock)
            time.sleep(0.5)
            for sock in queued:
                self.assertFalse(readable(sock))
            # Past them: 503, and the connection closed, one after the other
            # (none waits for another refused client's next request).
            for _ in range(3):
                begun = time.time()
                with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
                    sock.sendall(head)
                    answer = read_to_end(sock, timeout=30)
                refused_s = time.time() - begun
                response_head, _, body = answer.partition(b"\r\n\r\n")
                self.assertTrue(response_head.startswith(b"HTTP/1.1 503 "), answer)
                self.assertIn(b"\r\nRetry-After: 1\r\n", response_head)
                self.assertEqual(json.loads(body)["error"]["code"], "too_many_connections")
                self.assertLess(refused_s, 4, "a refusal waited for the keep-alive timeout")
            # A held connection that ends frees its worker for a queued one.
            held.pop(0).close()
            self.assertTrue(read_response(queued[0])[0].startswith("HTTP/1.1 200 "))
        finally:
            for sock in held + queued:
                sock.close()
            self.assertEqual(server.stop(), 0)


def main():
    global ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--build-dir", required=True)
    ARGS, rest = parser.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
