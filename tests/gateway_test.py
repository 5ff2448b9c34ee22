#!/usr/bin/python3
"""The gateway (docker/gateway/nginx.conf) with real nginx, real replicas and
real clients: two streamgen-server subprocesses on loopback behind Debian's
nginx (tests/gateway.py), TLS with certificates made here by openssl.

- streams through the gateway from the C++ client, the Python client and the
  Node client give the replicas' text; both replicas served (their metrics);
  health and reflection answer through it; the HTTP face (SSE, JSON, errors,
  the playground) too, and an SSE event passes while its request still waits;
- a gRPC cancel and an SSE disconnect through nginx free the sequence on the
  replica that held it;
- SIGTERM to one replica under load: its streams finish (drain), no stream on
  the other breaks; new calls are refused by the draining replica with
  UNAVAILABLE or served by the other one (a client retrying UNAVAILABLE always
  gets served; HTTP requests are retried by nginx); once it has exited, nginx
  sends every call to the other replica;
- kill -9 of a replica: its stream ends at once with INTERNAL (nginx resets
  the HTTP/2 stream), a call it had not answered yet gets the gateway's
  UNAVAILABLE, the other replica's stream finishes, new calls go to the other.

    /usr/bin/python3 tests/gateway_test.py --build-dir BUILD_DIR [--node NODE]
"""
import argparse
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request

from gateway import NGINX, Gateway
from streamgen_server import StreamgenServer, metric_value

ARGS = None
SOURCE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRAIN_MESSAGE = "the server is shutting down; retry on another replica"
GATEWAY_MESSAGE = "streamgen gateway: no replica answered (down or unreachable); retry"
CALL_TIMEOUT = 120  # seconds: a call that hangs fails the test instead of hanging it


def import_clients():
    """The Python client (client/python) and the stubs the build generated."""
    global grpc, streamgen_client, generate_pb2, generate_pb2_grpc
    sys.path[:0] = [os.path.join(ARGS.build_dir, "python"), os.path.join(SOURCE_DIR, "client", "python")]
    import grpc
    import streamgen_client
    from streamgen.v1 import generate_pb2, generate_pb2_grpc


def make_slow_model():
    """A random model of 512 x 8 layers (tests/http/server.mjs's makeSlowModel):
    a few hundred tokens a second here, so that streams last long enough to act on."""
    model = tempfile.mkdtemp(prefix="streamgen-gateway-model-")
    subprocess.run([os.path.join(ARGS.build_dir, "tools", "streamgen-make-tiny-model"),
                    "--out", model, "--tokenizer",
                    os.path.join(ARGS.build_dir, "models", "tiny-builtin", "tokenizer.model"),
                    "--hidden-size", "512", "--intermediate-size", "1376", "--layers", "8",
                    "--heads", "8", "--kv-heads", "8", "--context", "2048"],
                   check=True, capture_output=True, timeout=120)
    return model


def http_healthy(url):
    try:
        return urllib.request.urlopen(url + "/health", timeout=5).status == 200
    except OSError:
        return False


def metrics(server):
    return urllib.request.urlopen(server.url + "/metrics", timeout=10).read().decode()


def metric(server, name, labels=None):
    return metric_value(metrics(server), name, labels) or 0.0


def wait_metric(server, name, predicate, timeout=30, labels=None):
    end = time.time() + timeout
    while time.time() < end:
        value = metric(server, name, labels)
        if predicate(value):
            return value
        time.sleep(0.02)
    raise AssertionError(f"{name} stayed at {metric(server, name, labels)}\n{server.logs()[-3000:]}")


def generated_ok(server):
    return metric(server, "streamgen_requests_total", {"method": "Generate", "code": "OK"})


def wait_generated_ok(server, expected, timeout=30):
    """Waits for the replica's count of Generate calls ended OK to reach
    `expected` (a call is counted when the server is done with it, which may
    be just after the client read its status); fails when it passes it."""
    return wait_metric(server, "streamgen_requests_total", lambda v: v >= expected, timeout,
                       {"method": "Generate", "code": "OK"})


def log_line(server, request_id):
    """The replica's per-request log line for `request_id` (None before the request ended)."""
    for line in server.logs().splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("request_id") == request_id and "code" in entry:
                return entry
    return None


def wait_log_line(server, request_id, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        entry = log_line(server, request_id)
        if entry is not None:
            return entry
        time.sleep(0.02)
    raise AssertionError(f"no log line for {request_id}:\n{server.logs()[-3000:]}")


class Replicas:
    """Two replicas of the slow model (one math thread each: two share these two
    cores) behind a gateway."""

    def __init__(self, model, flags=()):
        self.servers = []
        try:
            for _ in range(2):
                self.servers.append(StreamgenServer(
                    ARGS.build_dir, ["--model", model, "--threads", "1", *flags],
                    healthy=http_healthy, prefix="streamgen-gateway-replica-"))
            self.gateway = Gateway(SOURCE_DIR, [s.grpc_address for s in self.servers],
                                   [f"127.0.0.1:{s.http_port}" for s in self.servers])
        except BaseException:
            for s in self.servers:
                s.stop()
            raise
        self.channel = streamgen_client.make_channel(self.gateway.address, True, self.gateway.ca_file)
        self.stub = generate_pb2_grpc.TextGenerationStub(self.channel)

    def stop(self):
        """Stops the gateway and the replicas still running (SIGTERM); every
        exit code must be 0 (a replica killed by the test excepted)."""
        self.channel.close()
        codes = {"nginx": self.gateway.stop()}
        for i, s in enumerate(self.servers):
            if s.process.returncode is None or s.process.returncode >= 0:
                codes[f"replica {i}"] = s.stop()
            elif not s.log.closed:
                s.log.close()
        if any(codes.values()):
            raise AssertionError(f"exit codes {codes}\n{self.gateway.error_log()}")

    def wait_idle(self):
        """Both replicas' engines empty (the gauges of the previous test's streams)."""
        for s in self.servers:
            if s.process.poll() is None:
                wait_metric(s, "streamgen_engine_running_requests", lambda v: v == 0)
                wait_metric(s, "streamgen_engine_waiting_requests", lambda v: v == 0)

    def generate(self, prompt, max_new_tokens, **fields):
        """The messages of one Python-client call through the gateway."""
        return list(streamgen_client.generate(self.stub, prompt, timeout=CALL_TIMEOUT,
                                              max_new_tokens=max_new_tokens, **fields))

    def holding(self, count, gauge="streamgen_engine_running_requests", timeout=30):
        """Waits until exactly `count` replicas have `gauge` above 0 (the engine
        publishes its gauges at the end of an iteration) and returns them."""
        end = time.time() + timeout
        while True:
            found = [s for s in self.servers if s.process.poll() is None and metric(s, gauge) > 0]
            if len(found) == count or time.time() > end:
                assert len(found) == count, f"{len(found)} replicas with {gauge} > 0, not {count}"
                return found
            time.sleep(0.02)


class Stream(threading.Thread):
    """One Python-client stream through the gateway, read to its end in a thread;
    `first` is set once its first message arrived."""

    def __init__(self, stub, request_id, max_new_tokens):
        super().__init__(daemon=True)
        self.call = streamgen_client.generate(stub, "Once upon a time", timeout=CALL_TIMEOUT,
                                              max_new_tokens=max_new_tokens, ignore_eos=True,
                                              request_id=request_id)
        self.request_id, self.messages, self.error = request_id, [], None
        self.first = threading.Event()
        self.start()

    def run(self):
        try:
            for message in self.call:
                self.messages.append(message)
                self.first.set()
        except grpc.RpcError as error:
            self.error = error
        self.first.set()

    def result(self):
        self.join(CALL_TIMEOUT)
        assert not self.is_alive(), f"stream {self.request_id} still running"
        return self

    def describe(self):
        if self.error is not None:
            return f"{self.request_id}: {self.error.code().name}: {self.error.details()}"
        return f"{self.request_id}: OK, {sum(len(m.tokens) for m in self.messages)} tokens"


def sse_connection(gateway):
    context = ssl.create_default_context(cafile=gateway.ca_file)
    return http.client.HTTPSConnection("127.0.0.1", gateway.port, context=context, timeout=CALL_TIMEOUT)


def post_json(gateway, path, body, headers=()):
    connection = sse_connection(gateway)
    connection.request("POST", path, body=json.dumps(body),
                       headers={"Content-Type": "application/json", **dict(headers)})
    return connection, connection.getresponse()


def read_events(response):
    """The `data:` payloads of an SSE response, to [DONE] or the end."""
    events = []
    for line in response:
        line = line.decode().rstrip("\r\n")
        if line.startswith("data: "):
            events.append(line[len("data: "):])
            if events[-1] == "[DONE]":
                break
    return events


class GatewayTest(unittest.TestCase):
    """Two replicas with --max-batch 1 (a second stream on a replica waits) behind the gateway."""

    @classmethod
    def setUpClass(cls):
        cls.model = make_slow_model()
        cls.replicas = Replicas(cls.model, ["--max-batch", "1"])
        cls.gateway = cls.replicas.gateway

    @classmethod
    def tearDownClass(cls):
        try:
            cls.replicas.stop()
        finally:
            subprocess.run(["rm", "-rf", cls.model])

    def setUp(self):
        self.replicas.wait_idle()

    def test_streams_from_every_client_reach_both_replicas(self):
        servers, gateway = self.replicas.servers, self.gateway
        before = [generated_ok(s) for s in servers]
        # The replica's own text for the request, asked directly (greedy).
        with grpc.insecure_channel(servers[0].grpc_address) as direct:
            expected = "".join(m.text for m in streamgen_client.generate(
                generate_pb2_grpc.TextGenerationStub(direct), "Once upon a time",
                timeout=CALL_TIMEOUT, max_new_tokens=12))
        before[0] += 1
        self.assertTrue(expected)
        tls = ["--server", gateway.address, "--tls-ca", gateway.ca_file,
               "--tls-server-name", gateway.server_name]
        commands = {
            "c++": [os.path.join(ARGS.build_dir, "client", "streamgen-client"), *tls],
            "node": [ARGS.node, os.path.join(SOURCE_DIR, "client", "node", "cli.js"), *tls],
        }
        calls = 0
        for name, command in commands.items():
            for _ in range(2):
                out = subprocess.run([*command, "generate", "Once upon a time", "--max-new-tokens", "12",
                                      "--json"], capture_output=True, text=True, timeout=CALL_TIMEOUT)
                self.assertEqual(out.returncode, 0, f"{name}: {out.stderr}")
                messages = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
                self.assertEqual("".join(m.get("text", "") for m in messages), expected, name)
                self.assertEqual(messages[-1]["finishReason"], "FINISH_REASON_LENGTH", name)
                self.assertEqual(messages[-1]["usage"]["completionTokens"], 12, name)
                calls += 1
        for _ in range(2):
            messages = self.replicas.generate("Once upon a time", 12)
            self.assertEqual("".join(m.text for m in messages), expected)
            self.assertEqual(messages[-1].usage.completion_tokens, 12)
            calls += 1
        end = time.time() + 30
        while sum(generated_ok(s) - b for s, b in zip(servers, before)) < calls and time.time() < end:
            time.sleep(0.02)
        served = [generated_ok(s) - b for s, b in zip(servers, before)]
        self.assertEqual(sum(served), calls, served)
        # least_conn between idle replicas goes round robin: both served.
        self.assertTrue(all(n > 0 for n in served), served)
        # Each call is on the gateway's access log with the replica that served it.
        log = [l for l in gateway.access_log_lines() if "TextGeneration/Generate" in l]
        self.assertGreaterEqual(len(log), calls)
        for s in servers:
            self.assertTrue(any(f"upstream={s.grpc_address} " in l and "grpc_status=0" in l for l in log),
                            "\n".join(log))

    def test_long_streams_spread_although_short_calls_come_between(self):
        # A long stream, a short call, a second long stream. Round robin counts
        # calls: the short call takes the other replica's turn and the second long
        # stream would land behind the first one (--max-batch 1: waiting).
        # least_conn counts open streams: it goes to the idle replica.
        replicas = self.replicas
        first = Stream(replicas.stub, "long-1", 1800)
        self.assertTrue(first.first.wait(60), first.describe())
        self.assertEqual(replicas.generate("Hello", 4)[-1].usage.completion_tokens, 4)
        second = Stream(replicas.stub, "long-2", 1800)
        self.assertTrue(second.first.wait(60), second.describe())
        replicas.holding(2)
        for stream in (first, second):
            stream.call.cancel()
            self.assertEqual(stream.result().error.code(), grpc.StatusCode.CANCELLED)

    def test_health_and_reflection_through_the_gateway(self):
        gateway = self.gateway
        client = [os.path.join(ARGS.build_dir, "client", "streamgen-client"), "--server", gateway.address,
                  "--tls-ca", gateway.ca_file, "--tls-server-name", gateway.server_name, "health"]
        for service in ([], ["--service", "streamgen.v1.TextGeneration"]):
            out = subprocess.run(client + service, capture_output=True, text=True, timeout=60)
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertEqual(out.stdout.strip(), "SERVING")
        # The same calls on the wire, by hand-encoded messages (no generated code):
        # HealthCheckRequest{service} -> HealthCheckResponse{status: SERVING = 1}.
        check = self.replicas.channel.unary_unary("/grpc.health.v1.Health/Check")
        self.assertEqual(check(b"", timeout=60), b"\x08\x01")
        with self.assertRaises(grpc.RpcError) as unknown:
            name = b"no.such.Service"
            check(b"\x0a" + bytes([len(name)]) + name, timeout=60)
        self.assertEqual(unknown.exception.code(), grpc.StatusCode.NOT_FOUND)
        # Reflection's list_services (ServerReflectionRequest field 7).
        reflect = self.replicas.channel.stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
        answer = b"".join(reflect(iter([b"\x3a\x00"]), timeout=60))
        for service in (b"streamgen.v1.TextGeneration", b"grpc.health.v1.Health"):
            self.assertIn(service, answer)

    def test_the_http_face_through_the_gateway(self):
        gateway = self.gateway
        connection = sse_connection(gateway)
        connection.request("GET", "/")
        page = connection.getresponse()
        self.assertEqual(page.status, 200)
        self.assertIn("text/html", page.getheader("Content-Type"))
        self.assertIn(b"<html", page.read().lower())
        connection.close()
        # A streamed chat completion: role, text, finish chunk, [DONE].
        connection, response = post_json(gateway, "/v1/chat/completions", {
            "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 12, "temperature": 0,
            "ignore_eos": True, "stream": True})
        self.assertEqual(response.status, 200)
        self.assertEqual(response.getheader("Content-Type"), "text/event-stream")
        events = read_events(response)
        connection.close()
        self.assertEqual(events[-1], "[DONE]")
        chunks = [json.loads(e) for e in events[:-1]]
        self.assertEqual(chunks[0]["choices"][0]["delta"], {"role": "assistant", "content": ""})
        self.assertEqual(chunks[-1]["choices"][0]["finish_reason"], "length")
        # One JSON body.
        connection, response = post_json(gateway, "/v1/completions", {
            "prompt": "Once upon a time", "max_tokens": 5, "temperature": 0})
        self.assertEqual(response.status, 200)
        self.assertEqual(json.loads(response.read())["usage"]["completion_tokens"], 5)
        connection.close()
        # The replica's errors pass unchanged (nginx intercepts only its own).
        connection, response = post_json(gateway, "/v1/completions", {
            "prompt": "Once upon a time", "temperature": 500})
        self.assertEqual(response.status, 400)
        error = json.loads(response.read())["error"]
        self.assertEqual(error["message"], "temperature must be in [0, 100], got 500")
        self.assertEqual(error["param"], "temperature")
        connection.close()

    def test_an_sse_event_passes_while_its_request_waits(self):
        # Both replicas busy with one sequence each (--max-batch 1, least_conn
        # spreads them), a third request waits in a replica's queue: its first
        # event (the role chunk, written before any token) must reach the
        # client through nginx while it still waits, i.e. nginx holds nothing back.
        replicas = self.replicas
        busy = [Stream(replicas.stub, f"busy-{i}", 1800) for i in range(2)]
        for stream in busy:
            self.assertTrue(stream.first.wait(60), stream.describe())
        replicas.holding(2)
        connection, response = post_json(self.gateway, "/v1/chat/completions", {
            "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "temperature": 0,
            "stream": True})
        self.assertEqual(response.status, 200)
        line = response.readline()
        self.assertTrue(line.startswith(b"data: "), line)
        self.assertEqual(json.loads(line[len(b"data: "):])["choices"][0]["delta"],
                         {"role": "assistant", "content": ""})
        # Still waiting: its request is in one replica's queue.
        replicas.holding(1, "streamgen_engine_waiting_requests")
        for stream in busy:
            stream.call.cancel()
            stream.result()
        events = read_events(response)
        connection.close()
        self.assertEqual(events[-1], "[DONE]")
        self.assertEqual(json.loads(events[-2])["choices"][0]["finish_reason"], "length")

    def test_a_grpc_cancel_through_the_gateway_frees_the_sequence(self):
        replicas = self.replicas
        stream = Stream(replicas.stub, "cancel-through-gateway", 1800)
        self.assertTrue(stream.first.wait(60), stream.describe())
        [replica] = replicas.holding(1)
        cancelled = metric(replica, "streamgen_engine_cancelled_total")
        stream.call.cancel()
        stream.result()
        self.assertEqual(stream.error.code(), grpc.StatusCode.CANCELLED)
        wait_metric(replica, "streamgen_engine_cancelled_total", lambda v: v == cancelled + 1)
        # The gauges are published at the end of the engine's iteration.
        wait_metric(replica, "streamgen_engine_running_requests", lambda v: v == 0)
        entry = wait_log_line(replica, "cancel-through-gateway")
        self.assertEqual(entry["code"], "CANCELLED")
        self.assertEqual(entry["finish_reason"], "cancelled")
        self.assertLess(entry["completion_tokens"], 1800)

    def test_an_sse_client_that_disconnects_cancels_on_the_replica(self):
        replicas = self.replicas
        context = ssl.create_default_context(cafile=self.gateway.ca_file)
        sock = context.wrap_socket(socket.create_connection(("127.0.0.1", self.gateway.port), timeout=60),
                                   server_hostname=self.gateway.server_name)
        body = json.dumps({"prompt": "Once upon a time", "max_tokens": 1800, "ignore_eos": True,
                           "temperature": 0, "stream": True}).encode()
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: gateway\r\nX-Request-Id: sse-gone\r\n"
                     b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode() +
                     b"\r\n\r\n" + body)
        data = b""
        while b'"text":' not in data:
            chunk = sock.recv(65536)
            self.assertTrue(chunk, data)
            data += chunk
        self.assertTrue(data.startswith(b"HTTP/1.1 200"), data[:200])
        [replica] = replicas.holding(1)
        cancelled = metric(replica, "streamgen_engine_cancelled_total")
        sock.close()
        wait_metric(replica, "streamgen_engine_cancelled_total", lambda v: v == cancelled + 1)
        wait_metric(replica, "streamgen_engine_running_requests", lambda v: v == 0)
        entry = wait_log_line(replica, "sse-gone")
        self.assertEqual(entry["finish_reason"], "cancelled", entry)
        self.assertLess(entry["completion_tokens"], 1800)


class DrainTest(unittest.TestCase):
    def setUp(self):
        self.model = make_slow_model()
        # The drain must outlast the load's 400-token streams: 30 s (the
        # default) did not under ASan (a CI run, 2026-12-01), where a stream
        # cut by the drain timeout failed the test; 300 s is never reached in
        # the normal build, where they end within seconds.
        self.replicas = Replicas(self.model, ["--drain-timeout", "300s"])

    def tearDown(self):
        try:
            self.replicas.stop()
        finally:
            subprocess.run(["rm", "-rf", self.model])

    def test_sigterm_to_a_replica_under_load(self):
        replicas, gateway = self.replicas, self.replicas.gateway
        draining, other = replicas.servers
        # Load: four streams, two on each replica (least_conn).
        load = []
        for i in range(4):
            load.append(Stream(replicas.stub, f"load-{i}", 400))
            self.assertTrue(load[-1].first.wait(60), load[-1].describe())
        for s in replicas.servers:
            wait_metric(s, "streamgen_engine_running_requests", lambda v: v == 2)
        served_before = [generated_ok(s) for s in replicas.servers]

        draining.process.send_signal(signal.SIGTERM)
        wait_metric(draining, "streamgen_draining", lambda v: v == 1)
        # Health on the draining replica itself: NOT_SERVING (what an orchestrator's probe sees).
        with grpc.insecure_channel(draining.grpc_address) as direct:
            self.assertEqual(direct.unary_unary("/grpc.health.v1.Health/Check")(b"", timeout=60), b"\x08\x02")
        # Through the gateway a Check is one more call: the replica nginx picks answers.
        check = replicas.channel.unary_unary("/grpc.health.v1.Health/Check")
        answers = {check(b"", timeout=60) for _ in range(4)}
        self.assertEqual(answers, {b"\x08\x01", b"\x08\x02"})  # SERVING, NOT_SERVING

        # New gRPC calls meanwhile. The draining replica still accepts
        # connections and answers a call with UNAVAILABLE at once, an HTTP 200
        # response to nginx, which passes it on: a call is either refused by the
        # draining replica or served by the other.
        outcomes = []
        for i in range(6):
            try:
                messages = replicas.generate("Hello", 4, request_id=f"during-{i}")
                self.assertEqual(messages[-1].usage.completion_tokens, 4)
                outcomes.append("OK")
            except grpc.RpcError as error:
                self.assertEqual(error.code(), grpc.StatusCode.UNAVAILABLE)
                self.assertEqual(error.details(), DRAIN_MESSAGE)
                outcomes.append("UNAVAILABLE")
        self.assertIn("OK", outcomes)
        # Between replicas with as many streams each, least_conn alternates:
        # some calls did land on the draining replica.
        self.assertIn("UNAVAILABLE", outcomes)
        # A client that retries UNAVAILABLE (gRPC's retry policy; the refused
        # call got no message, so it is retried transparently) is always served.
        service_config = json.dumps({"methodConfig": [{
            "name": [{"service": "streamgen.v1.TextGeneration"}],
            "retryPolicy": {"maxAttempts": 5, "initialBackoff": "0.05s", "maxBackoff": "0.5s",
                            "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}]})
        with open(gateway.ca_file, "rb") as f:
            credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
        with grpc.secure_channel(gateway.address, credentials,
                                 options=[("grpc.service_config", service_config),
                                          ("grpc.enable_retries", 1)]) as retrying:
            stub = generate_pb2_grpc.TextGenerationStub(retrying)
            for i in range(4):
                messages = list(streamgen_client.generate(stub, "Hello", timeout=CALL_TIMEOUT,
                                                          max_new_tokens=4, request_id=f"retried-{i}"))
                self.assertEqual(messages[-1].usage.completion_tokens, 4)
        # HTTP: the draining replica answers 503, which nginx retries on the other
        # (proxy_next_upstream http_503 non_idempotent): the client never sees it.
        refused_503 = metric(draining, "streamgen_http_responses_total", {"code": "503"})
        for i in range(4):
            connection, response = post_json(gateway, "/v1/completions",
                                             {"prompt": "Hello", "max_tokens": 4, "temperature": 0})
            body = response.read()
            self.assertEqual(response.status, 200, body)
            self.assertEqual(json.loads(body)["usage"]["completion_tokens"], 4)
            connection.close()
        self.assertGreater(metric(draining, "streamgen_http_responses_total", {"code": "503"}), refused_503)
        self.assertTrue(any("upstream_status=503, 200" in l for l in gateway.access_log_lines()),
                        "\n".join(gateway.access_log_lines()))
        # The checks above ran while the draining replica's streams were still in flight.
        # (While draining, /metrics leaves the engine's gauges out; the server's
        # count of Generate calls in progress is there.)
        self.assertTrue(all(stream.is_alive() for stream in load),
                        "the load ended before the drain checks: make its streams longer")
        self.assertEqual(metric(draining, "streamgen_active_streams"), 2)
        # Every call that was served was served by the other replica.
        served = served_before[1] + outcomes.count("OK") + 4
        self.assertEqual(wait_generated_ok(other, served), served)
        self.assertEqual(generated_ok(draining), served_before[0])

        # Drain: the streams in flight on both replicas end normally, whole.
        for stream in load:
            stream.result()
            self.assertIsNone(stream.error, stream.describe())
            self.assertEqual(stream.messages[-1].finish_reason, generate_pb2.FINISH_REASON_LENGTH,
                             stream.describe())
            self.assertEqual(stream.messages[-1].usage.completion_tokens, 400)
        self.assertEqual(draining.process.wait(timeout=60), 0)
        self.assertEqual(wait_generated_ok(other, served + 2), served + 2)

        # Gone: connecting fails, nginx tries the other replica (the call had not
        # reached a replica) and takes the dead one out for fail_timeout.
        for i in range(3):
            self.assertEqual(replicas.generate("Hello", 4)[-1].usage.completion_tokens, 4)
        self.assertIn("connect() failed (111: Connection refused) while connecting to upstream",
                      gateway.error_log())
        self.assertTrue(any(f"upstream={draining.grpc_address}, {other.grpc_address} "
                            "upstream_status=502, 200 grpc_status=0" in l
                            for l in gateway.access_log_lines()), "\n".join(gateway.access_log_lines()))


class KillTest(unittest.TestCase):
    def setUp(self):
        self.model = make_slow_model()
        self.replicas = Replicas(self.model, ["--max-batch", "1"])

    def tearDown(self):
        try:
            self.replicas.stop()
        finally:
            subprocess.run(["rm", "-rf", self.model])

    def test_kill_9_of_a_replica(self):
        replicas, gateway = self.replicas, self.replicas.gateway
        # One stream on each replica, then a third call that waits in one's queue.
        streams = [Stream(replicas.stub, f"kill-{i}", 400) for i in range(2)]
        for stream in streams:
            self.assertTrue(stream.first.wait(60), stream.describe())
        replicas.holding(2)
        queued = Stream(replicas.stub, "kill-queued", 4)
        [victim] = replicas.holding(1, "streamgen_engine_waiting_requests")
        [survivor] = [s for s in replicas.servers if s is not victim]
        before = generated_ok(survivor)  # its stream is still running
        victim.process.kill()
        victim.process.wait()
        queued.result()
        # The queued call had no answer yet: nginx's 502, as the gateway's UNAVAILABLE.
        self.assertEqual(queued.error.code(), grpc.StatusCode.UNAVAILABLE, queued.describe())
        self.assertEqual(queued.error.details(), GATEWAY_MESSAGE)
        # The stream the victim was writing: nginx can only reset it (RST_STREAM
        # INTERNAL_ERROR), which gRPC reports as INTERNAL; no hang.
        broken = [s for s in streams if s.result().error is not None]
        self.assertEqual(len(broken), 1, [s.describe() for s in streams])
        self.assertEqual(broken[0].error.code(), grpc.StatusCode.INTERNAL)
        self.assertEqual(broken[0].error.details(), "Received RST_STREAM with error code 2")
        self.assertGreater(len(broken[0].messages), 0)
        # The survivor's stream is whole.
        [whole] = [s for s in streams if s.error is None]
        self.assertEqual(whole.messages[-1].usage.completion_tokens, 400)
        # New calls: the dead replica refuses connections, nginx goes to the survivor.
        for i in range(3):
            self.assertEqual(replicas.generate("Hello", 4)[-1].usage.completion_tokens, 4)
        self.assertEqual(wait_generated_ok(survivor, before + 1 + 3), before + 1 + 3)
        self.assertIn("upstream prematurely closed connection", gateway.error_log())


class NoReplicaTest(unittest.TestCase):
    """Upstreams where nothing listens: nginx's own answers, in each face's terms."""

    def test_no_replica_reachable(self):
        from gateway import free_port
        nowhere = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
        gateway = Gateway(SOURCE_DIR, nowhere, nowhere)
        try:
            with streamgen_client.make_channel(gateway.address, True, gateway.ca_file) as channel:
                stub = generate_pb2_grpc.TextGenerationStub(channel)
                for _ in range(2):  # connect refused everywhere, then every replica ejected
                    with self.assertRaises(grpc.RpcError) as refused:
                        list(streamgen_client.generate(stub, "Hello", timeout=CALL_TIMEOUT, max_new_tokens=4))
                    self.assertEqual(refused.exception.code(), grpc.StatusCode.UNAVAILABLE)
                    self.assertEqual(refused.exception.details(), GATEWAY_MESSAGE)
            connection, response = post_json(gateway, "/v1/completions", {"prompt": "Hello"})
            self.assertEqual(response.status, 503)
            self.assertEqual(response.getheader("Content-Type"), "application/json")
            self.assertEqual(response.getheader("Retry-After"), "1")
            error = json.loads(response.read())["error"]
            connection.close()
            self.assertEqual(error["message"], GATEWAY_MESSAGE)
            self.assertEqual(error["type"], "service_unavailable")
            self.assertIn("no live upstreams", gateway.error_log())
        finally:
            self.assertEqual(gateway.stop(), 0)


def main():
    global ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--build-dir", required=True)
    parser.add_argument("--node", default="node")
    ARGS, rest = parser.parse_known_args()
    if not os.access(NGINX, os.X_OK):
        sys.exit(f"{NGINX} is missing: scripts/install-deps.sh installs Debian's nginx")
    import_clients()
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
