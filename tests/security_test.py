#!/usr/bin/python3
"""Security details (issue 11, section 4) against real streamgen-server
subprocesses on loopback, with real clients on both faces: Python gRPC
(Debian's python3-grpcio, stubs generated into BUILD_DIR/python), the C++
streamgen-client, and Python's http.client / ssl for HTTP.

- API keys: UNAUTHENTICATED / 401 for a missing, malformed or wrong key on
  every RPC and route except health (gRPC health and reflection, HTTP /health,
  /metrics and the playground page stay open); on HTTP the key is checked
  before the body is read (so before its content type, nesting, JSON, size);
  no key ever reaches the log. With --cors-allow-origin, a browser's preflight is answered before
  the key (it carries none), the 401 carries the CORS headers, and a
  preflight from an origin not listed is refused (403) by name.
- TLS and mutual TLS on both faces with certificates made here by openssl: a
  client without a certificate, with one from another CA, a plaintext client
  and a client that does not trust the server are all refused.
- Limits, each with its message: the gRPC message and HTTP body size, stop
  strings (count and bytes), chat messages, prompt tokens, request-id length
  (gRPC field and X-Request-Id), JSON nesting depth, header sizes on the HTTP
  face, gRPC metadata size.
- Logs: prompts and generated text never appear in the JSON log, unless
  --log-prompts, which adds the prompt (never the generated text).

    /usr/bin/python3 tests/security_test.py --build-dir BUILD_DIR
"""
import argparse
import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import unittest

from streamgen_server import StreamgenServer, read_text

ARGS = None
SOURCE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYS = ("sk-sec-first-4f1c9a0e77", "sk-sec-second-b8d2e61f03")
WRONG_KEY = "sk-sec-wrong-55aa66bb77"


def import_grpc():
    sys.path.insert(0, os.path.join(ARGS.build_dir, "python"))
    import grpc  # Debian's python3-grpcio
    from streamgen.v1 import generate_pb2, generate_pb2_grpc
    return grpc, generate_pb2, generate_pb2_grpc


class Response:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "HTTP %s %s" % (self.status, self.body[:400])


def http_request(server, method, path, body=None, headers=(), context=None, raw_body=None):
    """One request on a fresh connection (http.client; HTTPS with `context`)."""
    if context is None:
        conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=60)
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", server.http_port, context=context,
                                           timeout=60)
    try:
        data = raw_body if raw_body is not None else (
            None if body is None else json.dumps(body).encode())
        all_headers = dict(headers)
        if data is not None and "Content-Type" not in all_headers:
            all_headers["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=all_headers)
        response = conn.getresponse()
        return Response(response.status, {k.lower(): v for k, v in response.getheaders()},
                        response.read().decode("utf-8", "replace"))
    finally:
        conn.close()


def raw_http(port, head):
    """Sends `head` (a request without body) on a plain socket; the response bytes."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(head)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def healthy_with(context=None):
    """A health check for StreamgenServer: GET /health answers 200."""
    def healthy(url):
        port = int(url.rsplit(":", 1)[1])
        if context is None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        else:
            conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
        try:
            conn.request("GET", "/health")
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()
    return healthy


def log_strings(text):
    """Every line of a log, and every string value of its JSON lines (decoded:
    escaping cannot hide a match)."""
    out = []

    def walk(value):
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(key)
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    for line in text.splitlines():
        out.append(line)
        try:
            walk(json.loads(line))
        except ValueError:
            pass
    return out


def health_check(channel):
    """grpc.health.v1 Check for the server as a whole, by hand: the status enum
    (1: SERVING)."""
    call = channel.unary_unary("/grpc.health.v1.Health/Check",
                               request_serializer=lambda b: b, response_deserializer=lambda b: b)
    response = call(b"", timeout=30)
    return response[1] if response[:1] == b"\x08" else 0


def reflection_list_services(channel):
    """grpc.reflection.v1alpha list_services by hand (field 7, an empty string):
    the raw ServerReflectionResponse bytes."""
    call = channel.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                                 request_serializer=lambda b: b, response_deserializer=lambda b: b)
    return b"".join(call(iter([b"\x3a\x00"]), timeout=30))


class Server(StreamgenServer):
    def __init__(self, flags=(), context=None):
        super().__init__(ARGS.build_dir, list(flags), scheme="http" if context is None else "https",
                         healthy=healthy_with(context), prefix="streamgen-security-")


class ServerCase(unittest.TestCase):
    """One server for the class (flags from server_flags())."""

    @classmethod
    def server_flags(cls, tmp):
        return []

    @classmethod
    def setUpClass(cls):
        cls.grpc, cls.pb, cls.pbg = import_grpc()
        cls.tmp = tempfile.TemporaryDirectory(prefix="streamgen-security-")
        cls.server = Server(cls.server_flags(cls.tmp.name))
        cls.channel = cls.grpc.insecure_channel(cls.server.grpc_address)
        cls.stub = cls.pbg.TextGenerationStub(cls.channel)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        code = cls.server.stop()
        cls.tmp.cleanup()
        assert code == 0, "streamgen-server exited with %d after SIGTERM" % code

    def assert_rpc_error(self, call, code, message):
        with self.assertRaises(self.grpc.RpcError) as caught:
            call()
        self.assertEqual(caught.exception.code(), code, caught.exception.details())
        self.assertEqual(caught.exception.details(), message)

    def generate(self, request, metadata=()):
        return list(self.stub.Generate(request, metadata=list(metadata), timeout=60))

    def assert_http_error(self, response, status, message, param=None):
        self.assertEqual(response.status, status, response)
        self.assertTrue(response.headers.get("content-type", "").startswith("application/json"),
                        response)
        error = response.json()["error"]
        self.assertEqual(error["message"], message, response)
        if param is not None:
            self.assertEqual(error["param"], param, response)
        return error


# ---- API keys ----

class ApiKeyTest(ServerCase):
    """--api-key-file with two keys and --max-receive-message-bytes 65536."""

    @classmethod
    def server_flags(cls, tmp):
        path = os.path.join(tmp, "keys")
        with open(path, "w") as f:
            f.write("# two keys\n%s\n\n  %s  \n" % KEYS)
        return ["--api-key-file", path, "--max-receive-message-bytes", "65536"]

    MISSING = "missing API key: send 'authorization: Bearer <key>' (gRPC metadata or HTTP header)"
    MALFORMED = "malformed 'authorization' (gRPC metadata or HTTP header): expected 'Bearer <key>'"
    INVALID = "invalid API key"

    def refusals(self):
        """(authorization metadata or None, the message it gets)."""
        return ((None, self.MISSING), ("Bearer " + WRONG_KEY, self.INVALID),
                ("Bearer " + KEYS[0][:-1], self.INVALID), ("Bearer " + KEYS[0] + "x", self.INVALID),
                ("Basic " + KEYS[0], self.MALFORMED), (KEYS[0], self.MALFORMED),
                ("Bearer ", self.MALFORMED))

    def test_every_rpc_needs_a_key(self):
        pb, code = self.pb, self.grpc.StatusCode.UNAUTHENTICATED
        prompt = pb.GenerateRequest(prompt="Once upon a time", max_new_tokens=2)
        calls = {
            "Generate": lambda md: self.generate(prompt, md),
            "Tokenize": lambda md: self.stub.Tokenize(pb.TokenizeRequest(text="hi"), metadata=md,
                                                      timeout=30),
            "GetModelInfo": lambda md: self.stub.GetModelInfo(pb.GetModelInfoRequest(),
                                                              metadata=md, timeout=30),
        }
        for name, call in calls.items():
            for authorization, message in self.refusals():
                metadata = [] if authorization is None else [("authorization", authorization)]
                with self.subTest(rpc=name, authorization=authorization):
                    self.assert_rpc_error(lambda: call(metadata), code, message)
            for key in KEYS:  # either configured key
                with self.subTest(rpc=name, key=key):
                    call([("authorization", "Bearer " + key)])
        messages = self.generate(prompt, [("authorization", "bearer  " + KEYS[1])])
        self.assertEqual(messages[-1].usage.completion_tokens, 2)

    def test_health_and_reflection_need_no_key(self):
        self.assertEqual(health_check(self.channel), 1)  # SERVING
        services = reflection_list_services(self.channel)
        self.assertIn(b"streamgen.v1.TextGeneration", services)
        self.assertIn(b"grpc.health.v1.Health", services)

    def test_the_cpp_client_sends_its_key(self):
        client = os.path.join(ARGS.build_dir, "client", "streamgen-client")
        run = lambda *flags: subprocess.run(
            [client, "--server", self.server.grpc_address, *flags, "generate", "Once",
             "--max-new-tokens", "3"], capture_output=True, text=True, timeout=120,
            env=dict(os.environ, STREAMGEN_API_KEY=""))
        without = run()
        self.assertNotEqual(without.returncode, 0)
        self.assertIn("UNAUTHENTICATED", without.stderr)
        self.assertIn(self.MISSING, without.stderr)
        wrong = run("--api-key", WRONG_KEY)
        self.assertIn(self.INVALID, wrong.stderr)
        good = run("--api-key", KEYS[0])
        self.assertEqual(good.returncode, 0, good.stderr)

    KEYED_ROUTES = (
        ("GET", "/v1/models", None),
        ("POST", "/v1/completions", {"prompt": "Once", "max_tokens": 2}),
        ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}],
                                          "max_tokens": 2}),
        ("POST", "/tokenize", {"prompt": "Once"}),
        ("POST", "/detokenize", {"tokens": [1]}),
        ("POST", "/query-stream/", {"query": "Once", "max_new_tokens": 2}),
    )

    def test_every_route_needs_a_key_but_health_metrics_and_the_page(self):
        for method, path, body in self.KEYED_ROUTES:
            for authorization, message in self.refusals():
                headers = {} if authorization is None else {"Authorization": authorization}
                with self.subTest(path=path, authorization=authorization):
                    response = http_request(self.server, method, path, body, headers)
                    error = self.assert_http_error(response, 401, message)
                    self.assertEqual(error["type"], "authentication_error", response)
                    self.assertEqual(response.headers.get("www-authenticate"), "Bearer", response)
            for key in KEYS:
                response = http_request(self.server, method, path, body,
                                        {"Authorization": "Bearer " + key})
                self.assertEqual(response.status, 200, (path, response))
        for path in ("/health", "/metrics", "/"):
            with self.subTest(path=path):
                self.assertEqual(http_request(self.server, "GET", path).status, 200, path)

    def test_the_key_comes_before_the_body(self):
        """Without the key, a body the route would refuse gets 401 (not 400, 413
        or 415); with the key, the body's own error."""
        deep = "[" * 70 + "]" * 70
        bodies = (
            (b"{not json", {}, 400, "the body is not valid JSON: "),
            (deep.encode(), {}, 400, "the body nests arrays and objects more than 64 levels deep"),
            (b"{}", {"Content-Type": "text/plain"}, 415,
             "Content-Type must be application/json, got text/plain"),
            (json.dumps({"prompt": "x " * 40000}).encode(), {}, 413,
             "the request body is larger than --max-receive-message-bytes (65536 bytes)"),
        )
        for path in ("/v1/completions", "/v1/chat/completions", "/tokenize", "/detokenize",
                     "/query-stream/"):
            for raw, headers, status, message in bodies:
                with self.subTest(path=path, status=status):
                    refused = http_request(self.server, "POST", path, raw_body=raw,
                                           headers=dict(headers))
                    self.assert_http_error(refused, 401, self.MISSING)
                    wrong = http_request(self.server, "POST", path, raw_body=raw,
                                         headers=dict(headers, Authorization="Bearer " + WRONG_KEY))
                    self.assert_http_error(wrong, 401, self.INVALID)
                    keyed = http_request(self.server, "POST", path, raw_body=raw,
                                         headers=dict(headers, Authorization="Bearer " + KEYS[0]))
                    self.assertEqual(keyed.status, status, keyed)
                    self.assertTrue(keyed.json()["error"]["message"].startswith(message), keyed)

    def test_the_key_is_checked_before_the_body_is_read(self):
        """Without a valid key, the 401 comes before a byte of the body is read:
        a body that is not JSON and never arrives in full (the head promises
        1000 bytes, 9 come) is answered at once, where reading it would wait
        for the rest (10 s) and then answer 400."""
        for path in ("/v1/completions", "/v1/chat/completions", "/tokenize", "/detokenize",
                     "/query-stream/"):
            for authorization, message in ((None, self.MISSING),
                                           ("Bearer " + WRONG_KEY, self.INVALID)):
                with self.subTest(path=path, authorization=authorization):
                    # Well inside the 10 s a body's next bytes may take.
                    conn = http.client.HTTPConnection("127.0.0.1", self.server.http_port,
                                                      timeout=5)
                    try:
                        conn.putrequest("POST", path)
                        conn.putheader("Content-Type", "application/json")
                        conn.putheader("Content-Length", "1000")
                        if authorization is not None:
                            conn.putheader("Authorization", authorization)
                        conn.endheaders(b"{not json")
                        answer = conn.getresponse()
                        response = Response(answer.status,
                                            {k.lower(): v for k, v in answer.getheaders()},
                                            answer.read().decode("utf-8", "replace"))
                    finally:
                        conn.close()
                    self.assert_http_error(response, 401, message)
                    self.assertEqual(response.headers.get("www-authenticate"), "Bearer", response)
                    # The unread body: the connection cannot carry another request.
                    self.assertEqual(response.headers.get("connection"), "close", response)

    def test_a_refusal_without_a_body_keeps_the_connection(self):
        """A 401 to a request without a body leaves nothing unread: the same
        connection carries the next request."""
        conn = http.client.HTTPConnection("127.0.0.1", self.server.http_port, timeout=30)
        try:
            conn.request("GET", "/v1/models")
            refused = conn.getresponse()
            body = refused.read().decode()
            self.assertEqual(refused.status, 401, body)
            self.assertEqual(json.loads(body)["error"]["message"], self.MISSING)
            self.assertNotEqual(refused.getheader("Connection"), "close", body)
            conn.request("GET", "/v1/models", headers={"Authorization": "Bearer " + KEYS[0]})
            served = conn.getresponse()
            self.assertEqual(served.status, 200, served.read())
        finally:
            conn.close()

    def test_keys_never_reach_the_log(self):
        # Requests with every key, right and wrong, on both faces; then the log.
        for key in KEYS + (WRONG_KEY,):
            http_request(self.server, "POST", "/v1/completions", {"prompt": "a", "max_tokens": 1},
                         {"Authorization": "Bearer " + key})
            http_request(self.server, "POST", "/v1/completions", {"prompt": "a", "temperature": 500},
                         {"Authorization": "Bearer " + key})
            try:
                self.generate(self.pb.GenerateRequest(prompt="a", max_new_tokens=1),
                              [("authorization", "Bearer " + key)])
            except self.grpc.RpcError:
                pass
        log = self.server.logs()
        self.assertIn('"code":"UNAUTHENTICATED"', log)  # the refusals were logged ...
        for text in log_strings(log):
            for key in KEYS + (WRONG_KEY,):
                self.assertNotIn(key, text)  # ... without the keys
                self.assertNotIn(key[8:20], text)


class CorsWithApiKeyTest(ServerCase):
    """--api-key-file and --cors-allow-origin https://app.example.com."""
    ORIGIN = "https://app.example.com"

    @classmethod
    def server_flags(cls, tmp):
        path = os.path.join(tmp, "keys")
        with open(path, "w") as f:
            f.write("%s\n" % KEYS[0])
        return ["--api-key-file", path, "--cors-allow-origin", cls.ORIGIN]

    def preflight(self, path, method, origin=ORIGIN):
        return http_request(self.server, "OPTIONS", path, headers={
            "Origin": origin, "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization, content-type"})

    def test_preflight_comes_before_the_key(self):
        for method, path, body in ApiKeyTest.KEYED_ROUTES:
            with self.subTest(path=path):
                # No key (browsers send none with a preflight): answered.
                response = self.preflight(path, method)
                self.assertEqual(response.status, 204, response)
                self.assertEqual(response.headers.get("access-control-allow-origin"), self.ORIGIN)
                self.assertEqual(response.headers.get("access-control-allow-methods"),
                                 method + ", OPTIONS")
                self.assertEqual(response.headers.get("access-control-allow-headers"),
                                 "authorization, content-type")
                self.assertEqual(response.headers.get("access-control-max-age"), "600")
                self.assertNotIn("www-authenticate", response.headers)
                # The request itself needs the key; its 401 is readable by the page.
                refused = http_request(self.server, method, path, body, {"Origin": self.ORIGIN})
                self.assert_http_error(refused, 401, ApiKeyTest.MISSING)
                self.assertEqual(refused.headers.get("access-control-allow-origin"), self.ORIGIN)
                served = http_request(self.server, method, path, body,
                                      {"Origin": self.ORIGIN, "Authorization": "Bearer " + KEYS[0]})
                self.assertEqual(served.status, 200, served)
                self.assertEqual(served.headers.get("access-control-allow-origin"), self.ORIGIN)

    def test_a_preflight_from_another_origin_is_refused_by_name(self):
        for origin in ("https://evil.example.com", "http://app.example.com", "null"):
            with self.subTest(origin=origin):
                response = self.preflight("/v1/chat/completions", "POST", origin=origin)
                self.assert_http_error(response, 403, (
                    "CORS: the origin %s is not allowed; --cors-allow-origin lists the origins "
                    "browsers may call this server from" % origin))
                self.assertEqual(response.json()["error"]["type"], "permission_error")
                self.assertNotIn("access-control-allow-origin", response.headers)
                # The key is still needed for the request itself, with no CORS header.
                refused = http_request(self.server, "GET", "/v1/models", headers={"Origin": origin})
                self.assert_http_error(refused, 401, ApiKeyTest.MISSING)
                self.assertNotIn("access-control-allow-origin", refused.headers)


# ---- TLS and mutual TLS ----

def make_certificates(directory):
    """A CA, a server and a client certificate it signed (SAN 127.0.0.1), and a
    second CA with a client certificate of its own."""
    def run(*args):
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)
    with open(os.path.join(directory, "san.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for ca in ("ca", "other-ca"):
        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=" + ca,
            "-keyout", ca + ".key", "-out", ca + ".pem")
    for name, ca in (("server", "ca"), ("client", "ca"), ("other-client", "other-ca")):
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=" + name, "-keyout",
            name + ".key", "-out", name + ".csr")
        run("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + ".key",
            "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", name + ".pem")
    return lambda name: os.path.join(directory, name)


class MutualTlsTest(unittest.TestCase):
    """--tls-cert/--tls-key/--tls-client-ca: one set of flags, both faces."""

    @classmethod
    def setUpClass(cls):
        cls.grpc, cls.pb, cls.pbg = import_grpc()
        cls.tmp = tempfile.TemporaryDirectory(prefix="streamgen-security-tls-")
        cls.cert = staticmethod(make_certificates(cls.tmp.name))
        cls.server = Server(["--tls-cert", cls.cert("server.pem"), "--tls-key",
                             cls.cert("server.key"), "--tls-client-ca", cls.cert("ca.pem")],
                            context=cls.context("client"))

    @classmethod
    def tearDownClass(cls):
        code = cls.server.stop()
        cls.tmp.cleanup()
        assert code == 0, "streamgen-server exited with %d after SIGTERM" % code

    @classmethod
    def context(cls, client=None, ca="ca.pem"):
        context = ssl.create_default_context(cafile=cls.cert(ca))
        if client is not None:
            context.load_cert_chain(cls.cert(client + ".pem"), cls.cert(client + ".key"))
        return context

    def read(self, name):
        with open(self.cert(name), "rb") as f:
            return f.read()

    def grpc_channel(self, client=None, ca="ca.pem"):
        key = chain = None
        if client is not None:
            key, chain = self.read(client + ".key"), self.read(client + ".pem")
        return self.grpc.secure_channel(self.server.grpc_address,
                                        self.grpc.ssl_channel_credentials(self.read(ca), key, chain))

    def test_grpc_with_the_right_certificate(self):
        with self.grpc_channel("client") as channel:
            stub = self.pbg.TextGenerationStub(channel)
            messages = list(stub.Generate(self.pb.GenerateRequest(prompt="Once", max_new_tokens=4,
                                                                  ignore_eos=True), timeout=60))
            self.assertEqual(messages[-1].usage.completion_tokens, 4)

    def test_grpc_clients_without_the_right_certificate_are_refused(self):
        cases = {"no client certificate": lambda: self.grpc_channel(),
                 "a certificate from another CA": lambda: self.grpc_channel("other-client"),
                 "not trusting the server": lambda: self.grpc_channel("client", ca="other-ca.pem"),
                 "plaintext": lambda: self.grpc.insecure_channel(self.server.grpc_address)}
        for name, make in cases.items():
            with self.subTest(client=name), make() as channel:
                stub = self.pbg.TextGenerationStub(channel)
                with self.assertRaises(self.grpc.RpcError) as caught:
                    stub.GetModelInfo(self.pb.GetModelInfoRequest(), timeout=20)
                self.assertEqual(caught.exception.code(), self.grpc.StatusCode.UNAVAILABLE)
                self.assertIn("failed to connect", caught.exception.details())

    def test_the_cpp_client_over_mutual_tls(self):
        client = os.path.join(ARGS.build_dir, "client", "streamgen-client")
        base = [client, "--server", self.server.grpc_address, "--tls", "--tls-ca", self.cert("ca.pem")]
        good = subprocess.run(base + ["--tls-cert", self.cert("client.pem"), "--tls-key",
                                      self.cert("client.key"), "generate", "Once",
                                      "--max-new-tokens", "3"],
                              capture_output=True, text=True, timeout=120)
        self.assertEqual(good.returncode, 0, good.stderr)
        self.assertTrue(good.stdout.strip(), good.stdout)
        # Without its certificate.
        refused = subprocess.run(base + ["--deadline-ms", "20000", "generate", "Once"],
                                 capture_output=True, text=True, timeout=120)
        self.assertNotEqual(refused.returncode, 0, refused.stdout)
        self.assertIn("UNAVAILABLE", refused.stderr)

    def test_https_with_the_right_certificate(self):
        response = http_request(self.server, "POST", "/v1/completions",
                                {"prompt": "Once", "max_tokens": 4, "temperature": 0,
                                 "ignore_eos": True},
                                context=self.context("client"))
        self.assertEqual(response.status, 200, response)
        self.assertEqual(response.json()["usage"]["completion_tokens"], 4)

    def test_https_clients_without_the_right_certificate_are_refused(self):
        # The server's TLS 1.3 alert ("certificate required", "unknown ca") comes
        # after the client's side of the handshake: the client reads it, or an
        # EOF when the server has closed first. Either way no HTTP answer.
        refusals = ("alert certificate required", "alert unknown ca", "EOF occurred in violation")
        cases = (("no client certificate", self.context(), refusals),
                 ("a certificate from another CA", self.context("other-client"), refusals),
                 ("not trusting the server", self.context("client", ca="other-ca.pem"),
                  ("certificate verify failed",)))
        for name, context, reasons in cases:
            with self.subTest(client=name):
                with self.assertRaises((ssl.SSLError, ConnectionResetError)) as caught:
                    http_request(self.server, "GET", "/health", context=context)
                self.assertTrue(any(r in str(caught.exception) for r in reasons), caught.exception)
        # Plain HTTP on the TLS port gets no HTTP answer.
        with self.assertRaises((http.client.RemoteDisconnected, ConnectionError)):
            http_request(self.server, "GET", "/health")


# ---- limits ----

class LimitsTest(ServerCase):
    """Small limits, each hit on both faces with its message."""

    BODY_LIMIT = 262144

    @classmethod
    def server_flags(cls, tmp):
        return ["--max-receive-message-bytes", str(cls.BODY_LIMIT), "--max-stop-strings", "2",
                "--max-stop-string-bytes", "5", "--max-messages", "3", "--max-prompt-tokens", "64"]

    def assert_grpc_invalid(self, request, message):
        self.assert_rpc_error(lambda: self.generate(request),
                              self.grpc.StatusCode.INVALID_ARGUMENT, message)

    def user(self, n):
        return [{"role": "user" if i % 2 == 0 else "assistant", "content": "hi"} for i in range(n)]

    def test_stop_strings_count_and_bytes(self):
        pb = self.pb
        self.assert_grpc_invalid(pb.GenerateRequest(prompt="Once", stop=["a", "b", "c"]),
                                 "stop has 3 strings; at most 2 are allowed")
        self.assert_grpc_invalid(pb.GenerateRequest(prompt="Once", stop=["sixsix"]),
                                 "stop[0] is 6 bytes; at most 5 are allowed")
        self.generate(pb.GenerateRequest(prompt="Once", stop=["a", "fiveb"], max_new_tokens=1))
        for path, body in (("/v1/completions", {"prompt": "Once"}),
                           ("/v1/chat/completions", {"messages": self.user(1)})):
            response = http_request(self.server, "POST", path, dict(body, stop=["a", "b", "c"]))
            self.assert_http_error(response, 400, "stop has 3 strings; at most 2 are allowed", "stop")
            response = http_request(self.server, "POST", path, dict(body, stop="sixsix"))
            self.assert_http_error(response, 400, "stop[0] is 6 bytes; at most 5 are allowed", "stop")
            response = http_request(self.server, "POST", path,
                                    dict(body, stop=["a", "fiveb"], max_tokens=1))
            self.assertEqual(response.status, 200, response)

    def test_chat_messages(self):
        pb = self.pb
        four = [pb.ChatMessage(role=m["role"], content=m["content"]) for m in self.user(4)]
        self.assert_grpc_invalid(pb.GenerateRequest(messages=four),
                                 "messages has 4 entries; at most 3 are allowed")
        self.assert_rpc_error(
            lambda: self.stub.Tokenize(pb.TokenizeRequest(messages=four), timeout=30),
            self.grpc.StatusCode.INVALID_ARGUMENT, "messages has 4 entries; at most 3 are allowed")
        response = http_request(self.server, "POST", "/v1/chat/completions",
                                {"messages": self.user(4)})
        self.assert_http_error(response, 400, "messages has 4 entries; at most 3 are allowed",
                               "messages")
        response = http_request(self.server, "POST", "/tokenize", {"messages": self.user(4)})
        self.assert_http_error(response, 400, "messages has 4 entries; at most 3 are allowed")
        response = http_request(self.server, "POST", "/v1/chat/completions",
                                {"messages": self.user(3), "max_tokens": 1})
        self.assertEqual(response.status, 200, response)

    def test_prompt_tokens(self):
        ids = list(range(10, 75))  # 65 ids
        info = self.stub.GetModelInfo(self.pb.GetModelInfoRequest(), timeout=30)
        self.assertEqual(info.limits.max_prompt_tokens, 64)
        message = ("prompt_token_ids is 65 tokens; at most 64 are allowed (the model's context "
                   "length is %d)" % info.context_length)
        self.assert_grpc_invalid(self.pb.GenerateRequest(prompt_token_ids=ids), message)
        response = http_request(self.server, "POST", "/v1/completions", {"prompt": ids})
        # The HTTP face names its own field: the ids came as "prompt".
        self.assert_http_error(response, 400, message.replace("prompt_token_ids", "prompt"))
        response = http_request(self.server, "POST", "/v1/completions",
                                {"prompt": ids[:64], "max_tokens": 1})
        self.assertEqual(response.status, 200, response)

    def test_request_id_length(self):
        pb = self.pb
        self.assert_grpc_invalid(pb.GenerateRequest(prompt="Once", request_id="r" * 129),
                                 "request_id is 129 bytes; at most 128 are allowed")
        messages = self.generate(pb.GenerateRequest(prompt="Once", request_id="r" * 128,
                                                    max_new_tokens=1))
        self.assertEqual(messages[0].request_id, "r" * 128)
        for method, path, body in (("POST", "/v1/completions", {"prompt": "Once", "max_tokens": 1}),
                                   ("POST", "/tokenize", {"prompt": "Once"}),
                                   ("GET", "/v1/models", None)):
            with self.subTest(path=path):
                response = http_request(self.server, method, path, body,
                                        {"X-Request-Id": "h" * 129})
                self.assert_http_error(response, 400,
                                       "X-Request-Id is 129 bytes; at most 128 are allowed")
                self.assertNotEqual(response.headers["x-request-id"], "h" * 129)  # not echoed
                self.assertEqual(len(response.headers["x-request-id"]), 16)
                response = http_request(self.server, method, path, body, {"X-Request-Id": "h" * 128})
                self.assertEqual(response.status, 200, response)
                self.assertEqual(response.headers["x-request-id"], "h" * 128)

    def test_message_and_body_size(self):
        big = "x " * (self.BODY_LIMIT // 2 + 100)
        request = self.pb.GenerateRequest(prompt=big)
        self.assert_rpc_error(
            lambda: self.generate(request), self.grpc.StatusCode.RESOURCE_EXHAUSTED,
            "Received message larger than max (%d vs. %d)" % (request.ByteSize(), self.BODY_LIMIT))
        response = http_request(self.server, "POST", "/v1/completions", {"prompt": big})
        self.assert_http_error(response, 413, "the request body is larger than "
                               "--max-receive-message-bytes (%d bytes)" % self.BODY_LIMIT)
        # A form-encoded body (curl -d without -H) is refused for its type at
        # any size, also above httplib's own 8192-byte cap on form bodies.
        form = "application/x-www-form-urlencoded"
        for size in (100, 10000):
            body = json.dumps({"prompt": "x" * size}).encode()
            response = http_request(self.server, "POST", "/v1/completions", raw_body=body,
                                    headers={"Content-Type": form})
            self.assert_http_error(response, 415, "Content-Type must be application/json, got " + form)

    def test_json_nesting_depth(self):
        message = "the body nests arrays and objects more than 64 levels deep"
        bodies = {
            "100k unbalanced [": "[" * 100000,
            "100k balanced": "[" * 100000 + "]" * 100000,
            "65 levels in a field": '{"prompt": "Once", "x": ' + "[" * 64 + "]" * 64 + "}",
            "objects": '{"a":' * 65 + "1" + "}" * 65,
        }
        for path in ("/v1/completions", "/v1/chat/completions", "/tokenize", "/detokenize",
                     "/query-stream/"):
            for name, body in bodies.items():
                with self.subTest(path=path, body=name):
                    response = http_request(self.server, "POST", path, raw_body=body.encode())
                    self.assert_http_error(response, 400, message)
        # 64 levels are parsed; brackets inside strings do not count.
        at_limit = '{"prompt": "[[[[{{{{", "max_tokens": 1, "x": ' + "[" * 63 + "]" * 63 + "}"
        response = http_request(self.server, "POST", "/v1/completions", raw_body=at_limit.encode())
        self.assertEqual(response.status, 200, response)
        escaped = '{"prompt": "\\"[[[[[[[[", "max_tokens": 1}'
        response = http_request(self.server, "POST", "/v1/completions", raw_body=escaped.encode())
        self.assertEqual(response.status, 200, response)
        self.assertEqual(http_request(self.server, "GET", "/health").status, 200)

    def test_http_header_sizes(self):
        port = self.server.http_port

        def answer(head):
            """(status, the JSON body) of a raw request."""
            raw = raw_http(port, head)
            status_line, _, rest = raw.partition(b"\r\n")
            return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])

        def refused(head, status, message):
            got, body = answer(head)
            self.assertEqual((got, body["error"]["message"]), (status, message))

        # Host and Connection are two of the client's fields.
        start = b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        # One header line over httplib's 8192 bytes: 400.
        refused(start + b"X-Long: " + b"a" * 8200 + b"\r\n\r\n", 400,
                "the request could not be read: a malformed request line, header or body, or a "
                "header line longer than 8192 bytes")
        # More than 100 fields: 431; 100: served.
        fields = [b"X-F%d: v\r\n" % i for i in range(101)]
        refused(start + b"".join(fields) + b"\r\n", 431,
                "the request has 103 header fields; at most 100 are allowed")
        self.assertEqual(answer(start + b"".join(fields[:98]) + b"\r\n")[0], 200)
        # Ten fields of 7000 bytes (each line fits): over 64 KiB of names and values, 431.
        fat = [(b"X-Fat%d" % i, b"b" * 7000) for i in range(10)]
        total = sum(len(n) + len(v) for n, v in fat) + len("Host127.0.0.1Connectionclose")
        refused(start + b"".join(n + b": " + v + b"\r\n" for n, v in fat) + b"\r\n", 431,
                "the request's header fields are %d bytes; at most 65536 are allowed" % total)
        self.assertEqual(answer(start + b"".join(n + b": " + v + b"\r\n" for n, v in fat[:9]) +
                                b"\r\n")[0], 200)
        # A URI over 8192 bytes: 414.
        refused(b"GET /v1/models?" + b"q" * 8200 + b" HTTP/1.1\r\nHost: x\r\nConnection: close"
                b"\r\n\r\n", 414, "the request URI is longer than 8192 bytes")
        # The same through http.client (a real client's framing: it adds Host and
        # Accept-Encoding).
        headers = {"X-F%d" % i: "v" for i in range(120)}
        self.assert_http_error(http_request(self.server, "GET", "/v1/models", headers=headers), 431,
                               "the request has 122 header fields; at most 100 are allowed")
        self.assertEqual(http_request(self.server, "GET", "/health").status, 200)

    def test_grpc_metadata_size(self):
        # gRPC's own limit (8 KiB of metadata by default in gRPC 1.51). The server
        # may close that connection afterwards: the oversized call gets a channel
        # of its own, with its own subchannel (gRPC Python shares one connection
        # between channels to the same address by default: the shared stub's
        # next call then failed with UNAVAILABLE "Socket closed", 1 run in ~20).
        with self.grpc.insecure_channel(self.server.grpc_address,
                                        options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
            stub = self.pbg.TextGenerationStub(channel)
            self.assert_rpc_error(
                lambda: stub.GetModelInfo(self.pb.GetModelInfoRequest(),
                                          metadata=[("x-big", "a" * 9000)], timeout=30),
                self.grpc.StatusCode.RESOURCE_EXHAUSTED,
                "received initial metadata size exceeds limit")
        self.stub.GetModelInfo(self.pb.GetModelInfoRequest(), metadata=[("x-small", "a" * 4000)],
                               timeout=30, wait_for_ready=True)


# ---- logs ----

class LogsTest(unittest.TestCase):
    """A JSON log never holds a prompt or generated text, unless --log-prompts
    (which adds the prompt, never the output)."""

    MARKER = "zebra-quokka-7f3a9c"

    @classmethod
    def setUpClass(cls):
        cls.grpc, cls.pb, cls.pbg = import_grpc()

    def exercise(self, server):
        """Prompts carrying MARKER on every generating route of both faces, and
        a refused one; returns the generated texts."""
        texts = []
        marker = self.MARKER
        with self.grpc.insecure_channel(server.grpc_address) as channel:
            stub = self.pbg.TextGenerationStub(channel)
            request = self.pb.GenerateRequest(prompt="Once %s upon a time" % marker,
                                              max_new_tokens=24, ignore_eos=True, request_id="g1")
            texts.append("".join(m.text for m in stub.Generate(request, timeout=60)))
            chat = self.pb.GenerateRequest(messages=[self.pb.ChatMessage(
                role="user", content="Tell me about %s-chat" % marker)], max_new_tokens=24,
                ignore_eos=True, request_id="g2")
            texts.append("".join(m.text for m in stub.Generate(chat, timeout=60)))
            stub.Tokenize(self.pb.TokenizeRequest(text="tokenize %s" % marker), timeout=30)
            with self.assertRaises(self.grpc.RpcError):
                list(stub.Generate(self.pb.GenerateRequest(prompt="refused %s" % marker,
                                                           temperature=500), timeout=60))
        completion = http_request(server, "POST", "/v1/completions",
                                  {"prompt": "The %s-http story" % marker, "max_tokens": 24,
                                   "temperature": 0, "ignore_eos": True},
                                  {"X-Request-Id": "h1"})
        self.assertEqual(completion.status, 200, completion)
        texts.append(completion.json()["choices"][0]["text"])
        chat = http_request(server, "POST", "/v1/chat/completions",
                            {"messages": [{"role": "user", "content": "%s-http-chat" % marker}],
                             "max_tokens": 24, "temperature": 0, "ignore_eos": True,
                             "stream": True}, {"X-Request-Id": "h2"})
        self.assertEqual(chat.status, 200, chat)
        deltas = [json.loads(line[6:]) for line in chat.body.splitlines()
                  if line.startswith("data: {")]
        texts.append("".join(d["choices"][0]["delta"].get("content", "") for d in deltas
                             if d["choices"]))
        # /query-stream/ samples with a fresh seed and stops at EOS (the seed
        # example's contract): a text can come out too short to grep for, and
        # is asked for again (a 9-character one failed a CI run).
        for attempt in range(5):
            query = http_request(server, "POST", "/query-stream/",
                                 {"query": "%s-query" % marker, "max_new_tokens": 24},
                                 {"X-Request-Id": "h3"})
            self.assertEqual(query.status, 200, query)
            if len(query.body.strip()) >= 12:
                break
        texts.append(query.body)
        for path, body in (("/tokenize", {"prompt": "tok %s" % marker}),
                           ("/v1/completions", {"prompt": "bad %s" % marker, "temperature": 500})):
            http_request(server, "POST", path, body)
        for text in texts:
            self.assertGreaterEqual(len(text.strip()), 12, texts)  # distinctive enough to grep
        return texts

    def run_server(self, flags):
        server = Server(flags)
        try:
            texts = self.exercise(server)
        finally:
            self.assertEqual(server.stop(), 0)  # SIGTERM: the log is flushed
        log = read_text(server.log_path)
        lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
        self.assertEqual(len(lines), len(log.splitlines()), log)  # every line is JSON
        by_id = {line["request_id"]: line for line in lines if "request_id" in line and
                 "code" in line}
        for request_id in ("g1", "g2", "h1", "h2", "h3"):
            self.assertEqual(by_id[request_id]["code"], "OK", log)
        return texts, log, by_id

    def assert_absent(self, needle, log):
        for text in log_strings(log):
            self.assertNotIn(needle, text)

    def test_no_prompts_or_output_by_default(self):
        texts, log, _ = self.run_server([])
        self.assert_absent(self.MARKER, log)
        for text in texts:
            self.assert_absent(text.strip(), log)
            middle = text.strip()[len(text.strip()) // 4:][:12]
            self.assert_absent(middle, log)

    def test_log_prompts_adds_the_prompt_only(self):
        texts, log, by_id = self.run_server(["--log-prompts"])
        marker = self.MARKER
        self.assertEqual(by_id["g1"]["prompt"], "Once %s upon a time" % marker)
        self.assertEqual(by_id["g2"]["prompt"], "user: Tell me about %s-chat" % marker)
        self.assertEqual(by_id["h1"]["prompt"], "The %s-http story" % marker)
        self.assertIn(marker + "-http-chat", by_id["h2"]["prompt"])
        self.assertIn(marker + "-query", by_id["h3"]["prompt"])
        for text in texts:
            self.assert_absent(text.strip(), log)


def main():
    global ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--build-dir", required=True)
    ARGS, rest = parser.parse_known_args()
    ARGS.build_dir = os.path.abspath(ARGS.build_dir)
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
