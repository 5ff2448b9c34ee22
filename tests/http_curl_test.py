#!/usr/bin/python3
"""The HTTP face with Debian's curl as the client (every HTTP request in this
file goes through /usr/bin/curl): each endpoint of the HTTP contract, the
streamed (SSE) and non-streamed OpenAI shapes, greedy equality with the
non-streamed answer and with the same request over gRPC (the C++ client), and
every error row with its status and `{"error": {message, type, param, code}}`
body: 400, 401, 404, 405, 413, 415, 429 and 503 (while draining, with
Retry-After); CORS (--cors-allow-origin): off by default, the headers on every
response to an allowed origin (streams included), preflights, a refused
origin, and "*". The servers are streamgen-server subprocesses on 127.0.0.1,
any free ports, with the tiny random model.

    /usr/bin/python3 tests/http_curl_test.py --build-dir BUILD_DIR
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

from streamgen_server import StreamgenServer, metric_value, read_text

ARGS = None
CURL = "/usr/bin/curl"
MODEL = "tiny-builtin"
PROMPT = "Once upon a time"
CHAT = [{"role": "user", "content": "Tell me a story about a dragon."}]
API_KEY = "sk-streamgen-test-8f2c1d"


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # lower-case names; the last value wins
        self.body = body

    @property
    def text(self):
        return self.body.decode("utf-8", errors="replace")

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return "HTTP %d %r %s" % (self.status, self.headers, self.text[:2000])


def parse_headers(raw):
    """The status and headers of the last response in a curl -D dump."""
    blocks = [b for b in raw.replace("\r\n", "\n").split("\n\n") if b.strip()]
    if not blocks:
        raise AssertionError("no response headers")
    lines = blocks[-1].split("\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return status, headers


def curl_command(url, method=None, body=None, headers=(), content_type="application/json",
                 max_time=120, directory=None):
    """The curl argv for one request; the body (JSON-encoded unless bytes or str)
    goes through a file so any size or byte works."""
    cmd = [CURL, "-sS", "--no-buffer", "--max-time", str(max_time)]
    if method:
        cmd += ["-X", method]
    if body is not None:
        if isinstance(body, str):
            body = body.encode("utf-8")
        elif not isinstance(body, bytes):
            body = json.dumps(body).encode("utf-8")
        fd, path = tempfile.mkstemp(dir=directory, suffix=".body")
        with os.fdopen(fd, "wb") as f:
            f.write(body)
        cmd += ["--data-binary", "@" + path]
        if content_type is not None:
            cmd += ["-H", "Content-Type: " + content_type]
    for name, value in headers:
        cmd += ["-H", "%s: %s" % (name, value)]
    cmd.append(url)
    return cmd


def curl(url, method=None, body=None, headers=(), content_type="application/json",
         max_time=120):
    with tempfile.TemporaryDirectory(prefix="streamgen-curl-") as d:
        header_file = os.path.join(d, "headers")
        body_file = os.path.join(d, "body")
        cmd = curl_command(url, method, body, headers, content_type, max_time, d)
        cmd[1:1] = ["-D", header_file, "-o", body_file]
        run = subprocess.run(cmd, capture_output=True, timeout=max_time + 30)
        if run.returncode != 0:
            raise AssertionError("curl %s failed (%d): %s" % (url, run.returncode,
                                                               run.stderr.decode()))
        status, response_headers = parse_headers(read_text(header_file))
        with open(body_file, "rb") as f:
            return Response(status, response_headers, f.read())


class BackgroundCurl:
    """One request in a background curl process; its body streams to stdout."""

    def __init__(self, url, body, headers=(), max_time=120):
        self.dir = tempfile.mkdtemp(prefix="streamgen-curl-bg-")
        self.header_file = os.path.join(self.dir, "headers")
        cmd = curl_command(url, "POST", body, headers, max_time=max_time, directory=self.dir)
        cmd[1:1] = ["-D", self.header_file, "-o", "-"]
        self.stderr = open(os.path.join(self.dir, "stderr"), "w+b")
        self.process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.stderr)
        self.first_line = b""

    def read_first_line(self):
        """Blocks until the first line of the body arrived (the stream started)."""
        self.first_line = self.process.stdout.readline()
        return self.first_line

    def finish(self, timeout=120):
        try:
            # Through the buffer read_first_line() used (communicate() with a
            # timeout would read the pipe around it); curl's --max-time bounds it.
            out = self.process.stdout.read()
            self.process.wait(timeout=timeout)
            if self.process.returncode != 0:
                self.stderr.seek(0)
                raise AssertionError("curl failed (%d): %s" % (self.process.returncode,
                                                               self.stderr.read().decode()))
            status, headers = parse_headers(read_text(self.header_file))
            return Response(status, headers, self.first_line + out)
        finally:
            self.close()

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()
        self.close()

    def close(self):
        if self.process.stdout and not self.process.stdout.closed:
            self.process.stdout.close()
        if not self.stderr.closed:
            self.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def curl_healthy(url):
    try:
        return curl(url + "/health", max_time=10).status == 200
    except AssertionError:
        return False


class Server(StreamgenServer):
    """streamgen-server on 127.0.0.1 (gRPC and HTTP on any free ports) until stop()."""

    def __init__(self, *flags):
        super().__init__(ARGS.build_dir, flags, healthy=curl_healthy, prefix="streamgen-http-test-")

    def metrics_text(self):
        response = curl(self.url + "/metrics")
        assert response.status == 200, response
        return response.text

    def metric(self, name, labels=None, text=None):
        """The sum of the samples of `name` whose labels include `labels`."""
        text = self.metrics_text() if text is None else text
        value = metric_value(text, name, labels)
        if value is None and not labels:
            raise AssertionError("no metric %s in /metrics:\n%s" % (name, text))
        return value or 0.0

    def wait_for_metric(self, name, predicate, timeout=20):
        deadline = time.time() + timeout
        value = None
        while time.time() < deadline:
            value = self.metric(name)
            if predicate(value):
                return value
            time.sleep(0.02)
        raise AssertionError("%s stayed at %s" % (name, value))


def grpc_client(*args):
    """build/client/streamgen-client (gRPC)."""
    run = subprocess.run([os.path.join(ARGS.build_dir, "client", "streamgen-client")] +
                         list(args), capture_output=True, text=True, timeout=120)
    if run.returncode != 0:
        raise AssertionError("streamgen-client %s failed: %s" % (args, run.stderr))
    return run.stdout


def grpc_generate(address, prompt, *flags):
    """The text, the last message and all messages of one Generate over gRPC."""
    out = grpc_client("--server", address, "--json", "generate", prompt, *flags)
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    return "".join(line.get("text", "") for line in lines), lines[-1]


class HttpAssertions(unittest.TestCase):
    """Shape checks shared by the test classes."""

    def assert_error(self, response, status, param=None, code=None, message=None,
                     check_param=False, check_code=False):
        self.assertEqual(response.status, status, response)
        self.assertTrue(response.headers.get("content-type", "").startswith("application/json"),
                        response)
        body = response.json()
        self.assertEqual(list(body.keys()), ["error"], body)
        error = body["error"]
        self.assertEqual(sorted(error.keys()), ["code", "message", "param", "type"], body)
        self.assertIsInstance(error["message"], str)
        self.assertTrue(error["message"], body)
        self.assertIsInstance(error["type"], str)
        self.assertTrue(error["type"], body)
        if param is not None or check_param:
            self.assertEqual(error["param"], param, body)
        if code is not None or check_code:
            self.assertEqual(error["code"], code, body)
        if message is not None:
            self.assertEqual(error["message"], message, body)
        return error

    def assert_usage(self, usage, completion_tokens=None):
        self.assertEqual(sorted(k for k in usage if k in (
            "prompt_tokens", "completion_tokens", "total_tokens")),
            ["completion_tokens", "prompt_tokens", "total_tokens"], usage)
        self.assertGreater(usage["prompt_tokens"], 0, usage)
        self.assertEqual(usage["total_tokens"],
                         usage["prompt_tokens"] + usage["completion_tokens"], usage)
        if completion_tokens is not None:
            self.assertEqual(usage["completion_tokens"], completion_tokens, usage)

    def parse_sse(self, response):
        """The JSON chunks of an SSE body, checking the framing and [DONE]."""
        self.assertEqual(response.status, 200, response)
        self.assertTrue(response.headers.get("content-type", "").startswith("text/event-stream"),
                        response)
        text = response.body.decode("utf-8")
        self.assertTrue(text.endswith("data: [DONE]\n\n"), text[-500:])
        events = text.split("\n\n")
        self.assertEqual(events[-1], "")
        events = [e for e in events[:-1] if not e.startswith(":")]  # SSE comments
        self.assertEqual(events[-1], "data: [DONE]")
        self.assertEqual(events.count("data: [DONE]"), 1, text)
        chunks = []
        for event in events[:-1]:
            self.assertTrue(event.startswith("data: "), event)
            self.assertNotIn("\n", event, event)
            chunks.append(json.loads(event[len("data: "):]))
        self.assertGreater(len(chunks), 0)
        for chunk in chunks:
            self.assertNotIn("error", chunk, chunk)
        return chunks

    def check_same_id(self, chunks, object_name):
        for chunk in chunks:
            self.assertEqual(chunk["id"], chunks[0]["id"], chunk)
            self.assertEqual(chunk["created"], chunks[0]["created"], chunk)
            self.assertEqual(chunk["object"], object_name, chunk)
            self.assertEqual(chunk["model"], MODEL, chunk)
        self.assertIsInstance(chunks[0]["created"], int)
        self.assertIsInstance(chunks[0]["id"], str)
        self.assertTrue(chunks[0]["id"])

    def split_usage(self, chunks, include_usage):
        """(choice chunks, usage or None) checking the include_usage chunk."""
        if include_usage:
            last = chunks[-1]
            self.assertEqual(last["choices"], [], last)
            self.assert_usage(last["usage"])
            for chunk in chunks[:-1]:
                self.assertIsNone(chunk.get("usage"), chunk)
            return chunks[:-1], last["usage"]
        for chunk in chunks:
            self.assertIsNone(chunk.get("usage"), chunk)
            self.assertEqual(len(chunk["choices"]), 1, chunk)
        return chunks, None

    def completion_stream(self, response, include_usage=False):
        """(text, finish_reason, usage) of a streamed /v1/completions."""
        chunks = self.parse_sse(response)
        self.check_same_id(chunks, "text_completion")
        self.assertTrue(chunks[0]["id"].startswith("cmpl-"), chunks[0])
        choice_chunks, usage = self.split_usage(chunks, include_usage)
        self.assertGreater(len(choice_chunks), 0)
        for i, chunk in enumerate(choice_chunks):
            self.assertEqual(len(chunk["choices"]), 1, chunk)
            choice = chunk["choices"][0]
            self.assertEqual(choice["index"], 0, chunk)
            self.assertIsInstance(choice["text"], str, chunk)
            self.assertIn("logprobs", choice, chunk)
            if i + 1 < len(choice_chunks):
                self.assertIsNone(choice["finish_reason"], chunk)
        finish_reason = choice_chunks[-1]["choices"][0]["finish_reason"]
        self.assertIn(finish_reason, ("stop", "length"), choice_chunks[-1])
        return "".join(c["choices"][0]["text"] for c in choice_chunks), finish_reason, usage

    def chat_stream(self, response, include_usage=False):
        """(text, finish_reason, usage) of a streamed /v1/chat/completions."""
        chunks = self.parse_sse(response)
        self.check_same_id(chunks, "chat.completion.chunk")
        choice_chunks, usage = self.split_usage(chunks, include_usage)
        self.assertGreaterEqual(len(choice_chunks), 2, chunks)
        first, last = choice_chunks[0]["choices"][0], choice_chunks[-1]["choices"][0]
        self.assertEqual(first["delta"], {"role": "assistant", "content": ""}, choice_chunks[0])
        self.assertIsNone(first["finish_reason"])
        self.assertEqual(last["delta"], {}, choice_chunks[-1])
        self.assertIn(last["finish_reason"], ("stop", "length"), choice_chunks[-1])
        text = ""
        for chunk in choice_chunks:
            self.assertEqual(len(chunk["choices"]), 1, chunk)
            self.assertEqual(chunk["choices"][0]["index"], 0, chunk)
        for chunk in choice_chunks[1:-1]:
            choice = chunk["choices"][0]
            self.assertIsNone(choice["finish_reason"], chunk)
            self.assertNotIn("role", choice["delta"], chunk)
            self.assertIsInstance(choice["delta"]["content"], str, chunk)
            text += choice["delta"]["content"]
        return text, last["finish_reason"], usage

    def completion_body(self, response):
        """(text, finish_reason, usage, body) of a non-streamed /v1/completions."""
        self.assertEqual(response.status, 200, response)
        self.assertTrue(response.headers.get("content-type", "").startswith("application/json"))
        body = response.json()
        self.assertEqual(body["object"], "text_completion", body)
        self.assertTrue(body["id"].startswith("cmpl-"), body)
        self.assertIsInstance(body["created"], int)
        self.assertEqual(body["model"], MODEL)
        self.assertEqual(len(body["choices"]), 1, body)
        choice = body["choices"][0]
        self.assertEqual(choice["index"], 0)
        self.assertIsInstance(choice["text"], str)
        self.assertIn(choice["finish_reason"], ("stop", "length"), body)
        self.assert_usage(body["usage"])
        return choice["text"], choice["finish_reason"], body["usage"], body

    def chat_body(self, response):
        """(text, finish_reason, usage, body) of a non-streamed /v1/chat/completions."""
        self.assertEqual(response.status, 200, response)
        self.assertTrue(response.headers.get("content-type", "").startswith("application/json"))
        body = response.json()
        self.assertEqual(body["object"], "chat.completion", body)
        self.assertIsInstance(body["id"], str)
        self.assertTrue(body["id"])
        self.assertIsInstance(body["created"], int)
        self.assertEqual(body["model"], MODEL)
        self.assertEqual(len(body["choices"]), 1, body)
        choice = body["choices"][0]
        self.assertEqual(choice["index"], 0)
        self.assertEqual(choice["message"]["role"], "assistant", body)
        self.assertIsInstance(choice["message"]["content"], str, body)
        self.assertIn(choice["finish_reason"], ("stop", "length"), body)
        self.assert_usage(body["usage"])
        return choice["message"]["content"], choice["finish_reason"], body["usage"], body


class HttpCurlTest(HttpAssertions):
    @classmethod
    def setUpClass(cls):
        cls.server = Server()

    @classmethod
    def tearDownClass(cls):
        code = cls.server.stop()
        assert code == 0, "streamgen-server exited with %d after SIGTERM" % code

    def get(self, path, **kw):
        return curl(self.server.url + path, **kw)

    def post(self, path, body, **kw):
        return curl(self.server.url + path, method="POST", body=body, **kw)

    def completion(self, **fields):
        body = {"model": MODEL, "prompt": PROMPT, "temperature": 0}
        body.update(fields)
        return self.post("/v1/completions", body)

    def chat(self, **fields):
        body = {"model": MODEL, "messages": CHAT, "temperature": 0}
        body.update(fields)
        return self.post("/v1/chat/completions", body)

    # ---- GET endpoints ----

    def test_root_is_the_playground_page(self):
        response = self.get("/")
        self.assertEqual(response.status, 200, response)
        self.assertTrue(response.headers.get("content-type", "").startswith("text/html"), response)
        self.assertIn("<html", response.text.lower())

    def test_health(self):
        response = self.get("/health")
        self.assertEqual(response.status, 200, response)
        self.assertEqual(response.json(), {"status": "serving"})

    def test_metrics(self):
        self.assertEqual(self.completion(max_tokens=2).status, 200)
        response = self.get("/metrics")
        self.assertEqual(response.status, 200, response)
        self.assertTrue(response.headers.get("content-type", "").startswith("text/plain"), response)
        text = response.text
        for name in ("streamgen_engine_cancelled_total", "streamgen_engine_running_requests",
                     "streamgen_engine_waiting_requests", "streamgen_engine_finished_total"):
            self.server.metric(name, text=text)  # raises when absent
        self.assertGreaterEqual(self.server.metric(
            "streamgen_http_responses_total", {"path": "/v1/completions", "code": "200"},
            text=text), 1, text)
        self.assertGreaterEqual(self.server.metric("streamgen_engine_finished_total", text=text), 1)

    def test_models(self):
        response = self.get("/v1/models")
        self.assertEqual(response.status, 200, response)
        body = response.json()
        self.assertEqual(body["object"], "list")
        self.assertEqual(len(body["data"]), 1, body)
        model = body["data"][0]
        self.assertEqual(model["id"], MODEL)
        self.assertEqual(model["object"], "model")
        self.assertEqual(model["owned_by"], "streamgen")
        self.assertIsInstance(model["created"], int)
        self.assertGreater(model["max_model_len"], 0)
        info = json.loads(grpc_client("--server", self.server.grpc_address, "--json", "info"))
        self.assertEqual(model["max_model_len"], info["contextLength"])

    # ---- tokenize / detokenize ----

    def grpc_token_ids(self, text, special):
        out = grpc_client("--server", self.server.grpc_address, "tokenize", text,
                          *(["--add-special-tokens"] if special else []))
        return [int(line.split("\t")[0]) for line in out.splitlines()]

    def test_tokenize_prompt_matches_grpc(self):
        max_model_len = self.get("/v1/models").json()["data"][0]["max_model_len"]
        for special, fields in ((True, {}), (True, {"add_special_tokens": True}),
                                (False, {"add_special_tokens": False})):
            body = {"model": MODEL, "prompt": PROMPT}
            body.update(fields)
            response = self.post("/tokenize", body)
            self.assertEqual(response.status, 200, response)
            result = response.json()
            self.assertEqual(result["tokens"], self.grpc_token_ids(PROMPT, special), fields)
            self.assertEqual(result["count"], len(result["tokens"]))
            self.assertEqual(result["max_model_len"], max_model_len)
        # "model" is optional.
        response = self.post("/tokenize", {"prompt": PROMPT})
        self.assertEqual(response.status, 200, response)
        self.assertEqual(response.json()["tokens"], self.grpc_token_ids(PROMPT, True))

    def test_tokenize_messages_counts_the_chat_prompt(self):
        response = self.post("/tokenize", {"model": MODEL, "messages": CHAT})
        self.assertEqual(response.status, 200, response)
        result = response.json()
        self.assertEqual(result["count"], len(result["tokens"]))
        _, _, usage, _ = self.chat_body(self.chat(max_tokens=1))
        self.assertEqual(result["count"], usage["prompt_tokens"])
        # and a text prompt's count is the completion's prompt_tokens
        tokens = self.post("/tokenize", {"model": MODEL, "prompt": PROMPT}).json()["count"]
        _, _, usage, _ = self.completion_body(self.completion(max_tokens=1))
        self.assertEqual(tokens, usage["prompt_tokens"])

    def test_detokenize_round_trip(self):
        for text in (PROMPT, "The quick brown fox jumps over the lazy dog"):
            response = self.post("/tokenize", {"model": MODEL, "prompt": text,
                                               "add_special_tokens": False})
            self.assertEqual(response.status, 200, response)
            tokens = response.json()["tokens"]
            self.assertGreater(len(tokens), 0)
            response = self.post("/detokenize", {"model": MODEL, "tokens": tokens})
            self.assertEqual(response.status, 200, response)
            self.assertEqual(response.json(), {"prompt": text})

    # ---- completions ----

    def test_completions_non_streamed_matches_grpc(self):
        text, finish_reason, usage, body = self.completion_body(
            self.completion(max_tokens=24, ignore_eos=True))
        self.assertIsNone(body["choices"][0].get("logprobs"))
        self.assertEqual(finish_reason, "length")
        self.assertEqual(usage["completion_tokens"], 24)
        grpc_text, last = grpc_generate(self.server.grpc_address, PROMPT,
                                        "--max-new-tokens", "24", "--ignore-eos")
        self.assertEqual(text, grpc_text)
        self.assertEqual(usage["prompt_tokens"], last["usage"]["promptTokens"])
        # without ignore_eos too (EOS, if the model emits it, ends both alike)
        text, finish_reason, usage, _ = self.completion_body(self.completion(max_tokens=40))
        grpc_text, last = grpc_generate(self.server.grpc_address, PROMPT, "--max-new-tokens", "40")
        self.assertEqual(text, grpc_text)
        self.assertEqual(usage["completion_tokens"], last["usage"]["completionTokens"])
        self.assertEqual(finish_reason,
                         "length" if last["finishReason"] == "FINISH_REASON_LENGTH" else "stop")

    def test_completions_streamed_equals_non_streamed(self):
        expected, _, expected_usage, _ = self.completion_body(
            self.completion(max_tokens=30, ignore_eos=True))
        text, finish_reason, usage = self.completion_stream(
            self.completion(max_tokens=30, ignore_eos=True, stream=True))
        self.assertEqual(text, expected)
        self.assertEqual(finish_reason, "length")
        self.assertIsNone(usage)
        text, finish_reason, usage = self.completion_stream(
            self.completion(max_tokens=30, ignore_eos=True, stream=True,
                            stream_options={"include_usage": True}), include_usage=True)
        self.assertEqual(text, expected)
        self.assertEqual(finish_reason, "length")
        self.assertEqual(usage, {k: expected_usage[k] for k in usage})
        self.assertEqual(usage["completion_tokens"], 30)

    def test_completions_without_max_tokens_get_the_servers_default(self):
        # Issue 18: max_tokens is set only when sent (no OpenAI default of 16),
        # so the model's (or the server's) default applies, as for chat.
        info = json.loads(grpc_client("--server", self.server.grpc_address, "--json", "info"))
        default = info["limits"]["defaultMaxNewTokens"]
        _, finish_reason, usage, _ = self.completion_body(self.completion(ignore_eos=True))
        self.assertEqual(finish_reason, "length")
        self.assertEqual(usage["completion_tokens"], default)
        _, _, usage, _ = self.completion_body(self.completion(ignore_eos=True, max_tokens=None))
        self.assertEqual(usage["completion_tokens"], default)

    def test_completions_batch_form_with_one_prompt(self):
        # Issue 18: OpenAI's array forms with one prompt (LangChain's OpenAI
        # completion model sends ["..."]): the same text as the plain forms.
        ids = self.post("/tokenize", {"model": MODEL, "prompt": PROMPT}).json()["tokens"]
        expected, _, expected_usage, _ = self.completion_body(
            self.completion(max_tokens=12, ignore_eos=True))
        for prompt in ([PROMPT], [ids], ids):
            text, _, usage, _ = self.completion_body(
                self.completion(prompt=prompt, max_tokens=12, ignore_eos=True))
            self.assertEqual(text, expected, prompt)
            self.assertEqual(usage, expected_usage, prompt)
        text, _, _ = self.completion_stream(
            self.completion(prompt=[PROMPT], max_tokens=12, ignore_eos=True, stream=True))
        self.assertEqual(text, expected)

    def test_completions_token_id_prompt(self):
        ids = self.post("/tokenize", {"model": MODEL, "prompt": PROMPT}).json()["tokens"]
        expected, _, expected_usage, _ = self.completion_body(
            self.completion(max_tokens=12, ignore_eos=True))
        text, _, usage, _ = self.completion_body(
            self.completion(prompt=ids, max_tokens=12, ignore_eos=True))
        self.assertEqual(text, expected)
        self.assertEqual(usage["prompt_tokens"], len(ids))
        self.assertEqual(usage, expected_usage)

    def test_seeded_sampling_is_reproducible(self):
        fields = dict(max_tokens=20, temperature=1.0, top_k=50, seed=1234, ignore_eos=True)
        first, _, _, _ = self.completion_body(self.completion(**fields))
        second, _, _, _ = self.completion_body(self.completion(**fields))
        self.assertEqual(first, second)
        streamed, _, _ = self.completion_stream(self.completion(stream=True, **fields))
        self.assertEqual(streamed, first)
        grpc_text, _ = grpc_generate(self.server.grpc_address, PROMPT, "--max-new-tokens", "20",
                                     "--temperature", "1", "--top-k", "50", "--seed", "1234",
                                     "--ignore-eos")
        self.assertEqual(first, grpc_text)

    def test_unknown_fields_are_ignored(self):
        expected, _, _, _ = self.completion_body(self.completion(max_tokens=5, ignore_eos=True))
        text, _, _, _ = self.completion_body(self.completion(
            max_tokens=5, ignore_eos=True, user="someone", foo={"bar": [1, 2]}))
        self.assertEqual(text, expected)

    def test_completions_logprobs(self):
        text, _, usage, body = self.completion_body(
            self.completion(max_tokens=8, ignore_eos=True, logprobs=2))
        logprobs = body["choices"][0]["logprobs"]
        self.assertEqual(len(logprobs["tokens"]), 8, logprobs)
        self.assertEqual(len(logprobs["token_logprobs"]), 8, logprobs)
        self.assertEqual(len(logprobs["top_logprobs"]), 8, logprobs)
        self.assertEqual(usage["completion_tokens"], 8)
        for token, logprob, top in zip(logprobs["tokens"], logprobs["token_logprobs"],
                                       logprobs["top_logprobs"]):
            self.assertIsInstance(token, str)
            self.assertLessEqual(logprob, 0.0)
            self.assertIsInstance(top, dict)
            self.assertGreaterEqual(len(top), 1, top)
            self.assertLessEqual(len(top), 2, top)
            # greedy: the chosen token is the most likely one (no alternative
            # above it; two tokens may show the same text, so >= not ==)
            self.assertGreaterEqual(logprob, max(top.values()) - 1e-4, (token, top))
            self.assertIn(token, top)
        # the same text as without logprobs
        plain, _, _, _ = self.completion_body(self.completion(max_tokens=8, ignore_eos=True))
        self.assertEqual(text, plain)

    # ---- chat ----

    def test_chat_non_streamed_matches_grpc(self):
        text, finish_reason, usage, _ = self.chat_body(self.chat(max_tokens=24, ignore_eos=True))
        self.assertEqual(finish_reason, "length")
        self.assertEqual(usage["completion_tokens"], 24)
        grpc_text, last = grpc_generate(self.server.grpc_address, CHAT[0]["content"], "--chat",
                                        "--max-new-tokens", "24", "--ignore-eos")
        self.assertEqual(text, grpc_text)
        self.assertEqual(usage["prompt_tokens"], last["usage"]["promptTokens"])

    def test_chat_streamed_equals_non_streamed(self):
        expected, _, expected_usage, _ = self.chat_body(self.chat(max_tokens=30, ignore_eos=True))
        text, finish_reason, usage = self.chat_stream(
            self.chat(max_tokens=30, ignore_eos=True, stream=True))
        self.assertEqual(text, expected)
        self.assertEqual(finish_reason, "length")
        self.assertIsNone(usage)
        text, finish_reason, usage = self.chat_stream(
            self.chat(max_tokens=30, ignore_eos=True, stream=True,
                      stream_options={"include_usage": True}), include_usage=True)
        self.assertEqual(text, expected)
        self.assertEqual(finish_reason, "length")
        self.assertEqual(usage, {k: expected_usage[k] for k in usage})

    def test_chat_content_parts_and_max_completion_tokens(self):
        expected, _, _, _ = self.chat_body(self.chat(max_tokens=10, ignore_eos=True))
        parts = [{"role": "user", "content": [{"type": "text", "text": CHAT[0]["content"]}]}]
        text, _, usage, _ = self.chat_body(self.chat(messages=parts, max_completion_tokens=10,
                                                     ignore_eos=True))
        self.assertEqual(text, expected)
        self.assertEqual(usage["completion_tokens"], 10)

    def logprob_texts(self, body_or_chunks, chat):
        """The token texts of logprobs, from a body or from stream chunks."""
        choices = ([body_or_chunks["choices"][0]] if isinstance(body_or_chunks, dict)
                   else [c["choices"][0] for c in body_or_chunks if c["choices"]])
        texts = []
        for choice in choices:
            if choice.get("logprobs") is None:
                continue
            if chat:
                texts += [entry["token"] for entry in choice["logprobs"]["content"]]
            else:
                texts += choice["logprobs"]["tokens"]
        return texts

    def test_logprobs_join_to_the_text_returned(self):
        # Issue 18: with a stop string (or EOS) the tokens listed are those of
        # the text returned, not the withheld stop string's. (Token texts are
        # compared as JSON has them: a byte piece that makes no character
        # alone is U+FFFD, as in the text; the check runs before any
        # character split over byte pieces.)
        for chat in (False, True):
            request = self.chat if chat else self.completion
            extra = dict(logprobs=True, top_logprobs=1) if chat else dict(logprobs=1)
            text_of = self.chat_body if chat else self.completion_body
            base, _, _, body = text_of(request(max_tokens=40, ignore_eos=True, **extra))
            tokens = self.logprob_texts(body, chat)
            self.assertEqual(len(tokens), 40)
            # A stop string that starts at a token: the first token from the
            # third on whose text is ASCII letters (after a space) and first
            # occurs in the text right there.
            offset, stop, kept = len(tokens[0]) + len(tokens[1]), None, None
            for k in range(2, len(tokens)):
                piece = tokens[k]
                if piece.strip().isalpha() and piece.isascii() and base.find(piece) == offset:
                    stop, kept = piece, k
                    break
                offset += len(piece)
            self.assertIsNotNone(stop, (base, tokens))
            self.assertEqual("".join(tokens[:kept]), base[:offset])
            text, finish_reason, _, body = text_of(
                request(max_tokens=40, ignore_eos=True, stop=[stop], **extra))
            self.assertEqual(finish_reason, "stop")
            self.assertEqual(text, base[:offset])
            self.assertEqual(self.logprob_texts(body, chat), tokens[:kept], (stop, tokens))
            response = request(max_tokens=40, ignore_eos=True, stop=[stop], stream=True, **extra)
            streamed, _, _ = (self.chat_stream if chat else self.completion_stream)(response)
            self.assertEqual(streamed, text)
            self.assertEqual(self.logprob_texts(self.parse_sse(response), chat), tokens[:kept])
        # A greedy chat reply that EOS ends: its token is no text of the reply either.
        _, finish_reason, usage, body = self.chat_body(self.chat(max_tokens=200, logprobs=True))
        if finish_reason == "stop":
            self.assertEqual(len(self.logprob_texts(body, True)), usage["completion_tokens"] - 1)
        else:
            self.assertEqual(len(self.logprob_texts(body, True)), usage["completion_tokens"])

    def test_chat_logprobs(self):
        text, _, usage, body = self.chat_body(
            self.chat(max_tokens=8, ignore_eos=True, logprobs=True, top_logprobs=2))
        content = body["choices"][0]["logprobs"]["content"]
        self.assertEqual(len(content), usage["completion_tokens"])
        self.assertEqual(len(content), 8)
        for entry in content:
            self.assertIsInstance(entry["token"], str, entry)
            self.assertLessEqual(entry["logprob"], 0.0, entry)
            self.assertIn("bytes", entry)
            if entry["bytes"] is not None:
                self.assertTrue(all(0 <= b <= 255 for b in entry["bytes"]), entry)
                if "\ufffd" not in entry["token"]:
                    self.assertEqual(bytes(entry["bytes"]).decode("utf-8"), entry["token"], entry)
            self.assertEqual(len(entry["top_logprobs"]), 2, entry)
            for top in entry["top_logprobs"]:
                self.assertIsInstance(top["token"], str, top)
                self.assertLessEqual(top["logprob"], 0.0, top)
                self.assertIn("bytes", top)
            # greedy: the chosen token is the most likely one
            self.assertAlmostEqual(entry["logprob"],
                                   max(t["logprob"] for t in entry["top_logprobs"]), places=4)
        plain, _, _, _ = self.chat_body(self.chat(max_tokens=8, ignore_eos=True))
        self.assertEqual(text, plain)

    # ---- stop strings ----

    def pick_stop(self, text):
        """A two-character ASCII-alphanumeric piece of `text`, first seen a few
        characters in (so that some text comes before it), and that text."""
        for start in (4, 1):
            for k in range(start, len(text) - 1):
                piece = text[k:k + 2]
                if piece.isascii() and piece.isalnum() and text.index(piece) >= start:
                    return piece, text[:text.index(piece)]
        self.fail("no ASCII piece to stop at in %r" % text)

    def test_completion_stop_strings(self):
        base, _, _, _ = self.completion_body(self.completion(max_tokens=48, ignore_eos=True))
        stop, expected = self.pick_stop(base)
        for stop_field in (stop, [stop], ["\x01never-there", stop]):
            text, finish_reason, usage, _ = self.completion_body(
                self.completion(max_tokens=48, ignore_eos=True, stop=stop_field))
            self.assertNotIn(stop, text)
            self.assertEqual(text, expected, (stop_field, base))
            self.assertEqual(finish_reason, "stop")
            self.assertLess(usage["completion_tokens"], 48)
            text, finish_reason, _ = self.completion_stream(
                self.completion(max_tokens=48, ignore_eos=True, stop=stop_field, stream=True))
            self.assertNotIn(stop, text)
            self.assertEqual(text, expected, (stop_field, base))
            self.assertEqual(finish_reason, "stop")

    def test_chat_stop_strings(self):
        base, _, _, _ = self.chat_body(self.chat(max_tokens=48, ignore_eos=True))
        stop, expected = self.pick_stop(base)
        text, finish_reason, _, _ = self.chat_body(
            self.chat(max_tokens=48, ignore_eos=True, stop=[stop]))
        self.assertNotIn(stop, text)
        self.assertEqual(text, expected, (stop, base))
        self.assertEqual(finish_reason, "stop")
        text, finish_reason, _ = self.chat_stream(
            self.chat(max_tokens=48, ignore_eos=True, stop=stop, stream=True))
        self.assertNotIn(stop, text)
        self.assertEqual(text, expected, (stop, base))
        self.assertEqual(finish_reason, "stop")

    # ---- X-Request-Id ----

    def test_request_id_is_echoed_or_generated(self):
        given = "curl-test-7f3a9"
        for response in (
                self.post("/v1/completions", {"model": MODEL, "prompt": PROMPT, "max_tokens": 2},
                          headers=[("X-Request-Id", given)]),
                self.post("/v1/chat/completions",
                          {"model": MODEL, "messages": CHAT, "max_tokens": 2, "stream": True},
                          headers=[("X-Request-Id", given)]),
                self.get("/health", headers=[("X-Request-Id", given)]),
                self.get("/no/such/path", headers=[("X-Request-Id", given)]),
                self.post("/v1/completions", {"model": MODEL, "prompt": PROMPT,
                                              "temperature": 500},
                          headers=[("X-Request-Id", given)])):
            self.assertEqual(response.headers.get("x-request-id"), given, response)
        generated = set()
        for _ in range(2):
            response = self.completion(max_tokens=2)
            self.assertEqual(response.status, 200)
            self.assertTrue(response.headers.get("x-request-id"), response)
            generated.add(response.headers["x-request-id"])
        self.assertEqual(len(generated), 2, generated)
        self.assertTrue(self.get("/v1/models").headers.get("x-request-id"))

    # ---- errors ----

    def test_invalid_json_body(self):
        for path in ("/v1/completions", "/v1/chat/completions", "/tokenize", "/detokenize"):
            for body in (b'{"model": "tiny-builtin", "prompt": ', b"not json", b""):
                error = self.assert_error(self.post(path, body), 400)
                self.assertEqual(error["type"], "invalid_request_error", (path, body))

    def test_wrong_typed_fields_are_named(self):
        for path, base in (("/v1/completions", {"model": MODEL, "prompt": PROMPT}),
                           ("/v1/chat/completions", {"model": MODEL, "messages": CHAT})):
            for field, value in (("max_tokens", "ten"), ("temperature", "hot"),
                                 ("stream", "yes"), ("seed", "abc"), ("top_p", [1])):
                body = dict(base)
                body[field] = value
                error = self.assert_error(self.post(path, body), 400, param=field)
                self.assertEqual(error["type"], "invalid_request_error")
        error = self.assert_error(self.post("/v1/chat/completions",
                                            {"model": MODEL, "messages": "hello"}), 400,
                                  param="messages")
        error = self.assert_error(self.post("/tokenize", {"model": MODEL, "prompt": 5}), 400)
        error = self.assert_error(self.post("/detokenize", {"model": MODEL, "tokens": "1,2"}),
                                  400, param="tokens")

    def test_n_outside_one_to_eight_is_refused(self):
        for n in (0, 9):
            error = self.assert_error(self.completion(n=n, max_tokens=2), 400, param="n")
            self.assertIn("[1, 8]", error["message"])
            self.assertIn(str(n), error["message"])
            self.assert_error(self.chat(n=n, max_tokens=2), 400, param="n")
        # n in range: that many choices, indexed, the prompt counted once.
        response = self.completion(n=3, max_tokens=2)
        self.assertEqual(response.status, 200)
        body = response.json()
        self.assertEqual([c["index"] for c in body["choices"]], [0, 1, 2])
        single = self.completion(n=1, max_tokens=2).json()
        self.assertEqual(body["usage"]["prompt_tokens"], single["usage"]["prompt_tokens"])

    def test_validator_message_and_param(self):
        for response in (self.completion(temperature=500), self.chat(temperature=500)):
            error = self.assert_error(response, 400, param="temperature",
                                      message="temperature must be in [0, 100], got 500")
            self.assertEqual(error["type"], "invalid_request_error")
        self.assert_error(self.completion(logprobs=21), 400, param="logprobs")
        self.assert_error(self.chat(logprobs=True, top_logprobs=21), 400, param="top_logprobs")

    def test_prompt_shapes_that_are_refused(self):
        for prompt in (["Once upon", "a time"], [[1, 2], [3]], [{"text": PROMPT}], 42,
                       [1, "a"], {"text": PROMPT}):
            self.assert_error(self.completion(prompt=prompt, max_tokens=2), 400, param="prompt")
        for prompt in (["Once upon", "a time"], [[1, 2], [3]]):
            error = self.assert_error(self.completion(prompt=prompt, max_tokens=2), 400,
                                      param="prompt")
            self.assertIn("only one prompt per request is supported", error["message"])

    def test_an_empty_prompt_is_refused_by_name(self):
        # Issue 18: one rule for every face, with a message that says what is wrong.
        message = "prompt is empty: send at least one character or the prompt as token ids"
        for prompt in ("", [], [""], [[]]):
            self.assert_error(self.completion(prompt=prompt, max_tokens=2), 400, param="prompt",
                              message=message)
        self.assert_error(self.chat(messages=[], max_tokens=2), 400, param="messages",
                          message="messages is empty: send at least one message")

    def test_lone_surrogate_escapes_are_taken_as_replacement_characters(self):
        # Issue 18: JSON.stringify of a string cut inside an emoji, or Python's
        # json.dumps of a str holding a lone surrogate: U+FFFD, not "not JSON".
        expected, _, _, _ = self.completion_body(
            self.completion(prompt="Hello \ufffd world \ufffd!", max_tokens=6, ignore_eos=True))
        body = ('{"model": "%s", "prompt": "Hello \\udc80 world \\ud83d!", "max_tokens": 6, '
                '"ignore_eos": true, "temperature": 0}' % MODEL)
        text, _, _, _ = self.completion_body(self.post("/v1/completions", body))
        self.assertEqual(text, expected)
        # Python's own encoder writes the same escape for a str holding one.
        self.assertIn("\\udc80", json.dumps({"prompt": "\udc80"}))
        response = self.post("/v1/chat/completions", json.dumps({
            "model": MODEL, "messages": [{"role": "user", "content": "Hi \udc80"}],
            "max_tokens": 2}))
        self.assertEqual(response.status, 200, response)
        # A valid pair is one character (the same tokens as the text itself).
        pair = self.post("/tokenize", '{"prompt": "\\ud83d\\ude00"}').json()["tokens"]
        self.assertEqual(pair, self.post("/tokenize", {"prompt": "\U0001F600"}).json()["tokens"])
        replaced = self.post("/tokenize", '{"prompt": "\\ud83d"}').json()["tokens"]
        self.assertEqual(replaced, self.post("/tokenize", {"prompt": "\ufffd"}).json()["tokens"])

    def test_messages_name_the_bodys_own_fields(self):
        # Issue 18: the validator's messages name gRPC's fields; the HTTP face
        # answers with the body's own, in the message and in param.
        context = self.get("/v1/models").json()["data"][0]["max_model_len"]
        error = self.assert_error(self.completion(max_tokens=context), 400, param="max_tokens")
        self.assertRegex(error["message"], r"^the prompt \(\d+ tokens\) \+ max_tokens \(%d\) "
                         r"exceeds the model's context length %d$" % (context, context))
        error = self.assert_error(self.chat(max_completion_tokens=context), 400,
                                  param="max_completion_tokens")
        self.assertIn("+ max_completion_tokens (%d) exceeds" % context, error["message"])
        self.assert_error(self.chat(max_tokens=5000), 400, param="max_tokens",
                          message="max_tokens 5000 exceeds the server's limit 4096")
        self.assert_error(self.completion(logprobs=21), 400, param="logprobs",
                          message="logprobs must be in [0, 20], got 21")
        vocab = json.loads(grpc_client("--server", self.server.grpc_address, "--json",
                                       "info"))["vocabSize"]
        error = self.assert_error(self.completion(prompt=[1, vocab]), 400, param="prompt")
        self.assertTrue(error["message"].startswith("prompt[1] = %d is outside" % vocab), error)
        for body in (self.completion(max_tokens=context), self.chat(max_tokens=5000),
                     self.completion(prompt=[1, vocab])):
            self.assertNotIn("max_new_tokens", body.json()["error"]["message"])
            self.assertNotIn("prompt_token_ids", body.json()["error"]["message"])

    def test_unknown_path_404(self):
        for response in (self.get("/no/such/path"), self.post("/v1/nothing", {})):
            self.assert_error(response, 404, code="not_found")

    def test_retrieve_a_model(self):
        # Issue 18: GET /v1/models/{id}, as openai's client.models.retrieve() asks.
        listed = self.get("/v1/models").json()["data"][0]
        response = self.get("/v1/models/" + MODEL)
        self.assertEqual(response.status, 200, response)
        self.assertEqual(response.json(), listed)
        for name in ("gpt-4o", "tiny-builtin-2", "org/tiny-builtin", ""):
            response = self.get("/v1/models/" + name)
            error = self.assert_error(response, 404, param=None, code="model_not_found",
                                      check_param=True)
            self.assertEqual(error["type"], "invalid_request_error")
            self.assertIn("`%s` does not exist" % name, error["message"])
        self.assert_error(self.post("/v1/models/" + MODEL, {}), 405)
        self.assertGreaterEqual(self.server.metric(
            "streamgen_http_responses_total", {"path": "/v1/models/{id}", "code": "404"}), 1)

    def test_unknown_model_404(self):
        for response in (self.completion(model="gpt-4o"), self.chat(model="nope"),
                         self.chat(model="nope", stream=True)):
            self.assert_error(response, 404, code="model_not_found")

    def test_wrong_method_405(self):
        for response in (self.get("/v1/completions"), self.get("/v1/chat/completions"),
                         self.get("/tokenize"), self.get("/query-stream/")):
            self.assert_error(response, 405)

    def test_no_cors_headers_by_default(self):
        # Without --cors-allow-origin a browser's requests are served as any
        # other, with no CORS header, and OPTIONS is a method no route takes.
        origin = [("Origin", "https://app.example.com")]
        responses = (self.get("/v1/models", headers=origin),
                     self.post("/v1/completions", {"prompt": PROMPT, "max_tokens": 2},
                               headers=origin))
        for response in responses:
            self.assertEqual(response.status, 200, response)
        preflight = curl(self.server.url + "/v1/completions", method="OPTIONS", headers=origin + [
            ("Access-Control-Request-Method", "POST")])
        self.assert_error(preflight, 405)
        for response in responses + (preflight,):
            self.assertEqual([h for h in response.headers if h.startswith("access-control-")], [],
                             response)
            self.assertNotIn("vary", response.headers, response)

    def test_wrong_content_type_415(self):
        body = json.dumps({"model": MODEL, "prompt": PROMPT, "max_tokens": 2})
        for path in ("/v1/completions", "/v1/chat/completions", "/tokenize"):
            for content_type in ("text/plain", "application/x-www-form-urlencoded"):
                self.assert_error(self.post(path, body, content_type=content_type), 415)
        # a charset parameter is fine
        response = self.post("/v1/completions", body,
                             content_type="application/json; charset=utf-8")
        self.assertEqual(response.status, 200, response)


class KeyedServerTest(HttpAssertions):
    """--api-key-file (one key) and --max-receive-message-bytes 4096."""

    @classmethod
    def setUpClass(cls):
        cls.key_dir = tempfile.mkdtemp(prefix="streamgen-http-keys-")
        key_file = os.path.join(cls.key_dir, "keys")
        with open(key_file, "w") as f:
            f.write(API_KEY + "\n")
        cls.server = Server("--api-key-file", key_file, "--max-receive-message-bytes", "4096")

    @classmethod
    def tearDownClass(cls):
        code = cls.server.stop()
        assert code == 0, "streamgen-server exited with %d after SIGTERM" % code

    def request(self, path, body=None, key=None, method=None):
        headers = [] if key is None else [("Authorization", "Bearer " + key)]
        return curl(self.server.url + path, method=method or ("POST" if body is not None else None),
                    body=body, headers=headers)

    def test_open_endpoints_need_no_key(self):
        response = self.request("/health")
        self.assertEqual(response.status, 200, response)
        self.assertEqual(response.json(), {"status": "serving"})
        self.assertEqual(self.request("/").status, 200)
        self.assertEqual(self.request("/metrics").status, 200)

    def test_missing_and_wrong_key_401(self):
        completion = {"model": MODEL, "prompt": PROMPT, "max_tokens": 2}
        rows = (("/v1/models", None), ("/v1/completions", completion),
                ("/v1/chat/completions", {"model": MODEL, "messages": CHAT, "max_tokens": 2}),
                ("/tokenize", {"model": MODEL, "prompt": PROMPT}),
                ("/detokenize", {"model": MODEL, "tokens": [1]}),
                ("/apply-template", {"messages": CHAT}),
                ("/query-stream/", {"query": "hello", "max_new_tokens": 2}))
        for path, body in rows:
            self.assert_error(self.request(path, body), 401)
            self.assert_error(self.request(path, body, key="wrong-" + API_KEY), 401)
            response = self.request(path, body, key=API_KEY)
            self.assertEqual(response.status, 200, (path, response))
        response = curl(self.server.url + "/v1/models", headers=[("Authorization", API_KEY)])
        self.assert_error(response, 401)

    def test_body_over_the_limit_413(self):
        small = {"model": MODEL, "prompt": PROMPT, "max_tokens": 2}
        self.assertEqual(self.request("/v1/completions", small, key=API_KEY).status, 200)
        big = {"model": MODEL, "prompt": "word " * 2000, "max_tokens": 2}
        self.assertGreater(len(json.dumps(big)), 4096)
        for path in ("/v1/completions", "/tokenize"):
            self.assert_error(self.request(path, big, key=API_KEY), 413)


class CorsTest(HttpAssertions):
    """--cors-allow-origin with two origins."""
    ORIGIN = "https://app.example.com"
    OTHER = "http://localhost:5173"

    @classmethod
    def setUpClass(cls):
        cls.server = Server("--cors-allow-origin", "%s, %s" % (cls.ORIGIN, cls.OTHER))

    @classmethod
    def tearDownClass(cls):
        code = cls.server.stop()
        assert code == 0, "streamgen-server exited with %d after SIGTERM" % code

    def request(self, path, body=None, origin=ORIGIN, method=None, headers=()):
        return curl(self.server.url + path, method=method or ("POST" if body is not None else None),
                    body=body, headers=[("Origin", origin)] + list(headers))

    def preflight(self, path, origin=ORIGIN, method="POST", request_headers=None):
        headers = [("Origin", origin), ("Access-Control-Request-Method", method)]
        if request_headers is not None:
            headers.append(("Access-Control-Request-Headers", request_headers))
        return curl(self.server.url + path, method="OPTIONS", headers=headers)

    def assert_cors(self, response, origin=ORIGIN):
        self.assertEqual(response.headers.get("access-control-allow-origin"), origin, response)
        self.assertIn("Origin", response.headers.get("vary", ""), response)
        exposed = [h.strip() for h in
                   response.headers.get("access-control-expose-headers", "").split(",")]
        for name in ("X-Request-Id", "X-Seed", "Retry-After"):
            self.assertIn(name, exposed, response)
        self.assertTrue(response.headers.get("x-request-id"), response)

    def test_allowed_origins_get_the_headers_on_get_and_post(self):
        for origin in (self.ORIGIN, self.OTHER):
            with self.subTest(origin=origin):
                for response in (
                        self.request("/v1/models", origin=origin),
                        self.request("/health", origin=origin),
                        self.request("/v1/completions", {"prompt": PROMPT, "max_tokens": 2},
                                     origin=origin),
                        self.request("/v1/chat/completions", {"messages": CHAT, "max_tokens": 2},
                                     origin=origin),
                        self.request("/tokenize", {"prompt": PROMPT}, origin=origin)):
                    self.assertEqual(response.status, 200, response)
                    self.assert_cors(response, origin)
        # Errors too: the page's script can read why it was refused.
        refused = self.request("/v1/completions", {"prompt": PROMPT, "temperature": 500})
        self.assert_error(refused, 400, param="temperature")
        self.assert_cors(refused)
        self.assert_cors(self.request("/no/such/path"))

    def test_streams_carry_the_headers(self):
        response = self.request("/v1/chat/completions",
                                {"messages": CHAT, "max_tokens": 8, "stream": True})
        self.chat_stream(response)
        self.assert_cors(response)
        # /query-stream/'s seed is one of the exposed headers.
        response = self.request("/query-stream/", {"query": "Hello", "max_new_tokens": 4})
        self.assertEqual(response.status, 200, response)
        self.assertTrue(response.headers.get("content-type", "").startswith("text/plain"), response)
        self.assertTrue(response.headers.get("x-seed", "").isdigit(), response)
        self.assert_cors(response)

    def test_preflight_on_every_route(self):
        for path, method in (("/v1/completions", "POST"), ("/v1/chat/completions", "POST"),
                             ("/tokenize", "POST"), ("/detokenize", "POST"),
                             ("/query-stream/", "POST"), ("/v1/models", "GET"),
                             ("/v1/models/" + MODEL, "GET"), ("/health", "GET")):
            with self.subTest(path=path):
                response = self.preflight(path, method=method,
                                          request_headers="authorization,content-type")
                self.assertEqual(response.status, 204, response)
                self.assertEqual(response.body, b"")
                self.assertEqual(response.headers.get("access-control-allow-origin"), self.ORIGIN,
                                 response)
                self.assertEqual(response.headers.get("access-control-allow-methods"),
                                 method + ", OPTIONS", response)
                self.assertEqual(response.headers.get("access-control-allow-headers"),
                                 "authorization, content-type", response)
                self.assertEqual(response.headers.get("access-control-max-age"), "600", response)
                self.assertIn("Origin", response.headers.get("vary", ""), response)
        # The requested headers that are allowed are echoed (the official
        # OpenAI client's own included), the rest left out.
        response = self.preflight("/v1/chat/completions", request_headers=(
            "Authorization, Content-Type, X-Stainless-OS, X-Request-Id, X-Not-Allowed"))
        self.assertEqual(response.status, 204, response)
        self.assertEqual(response.headers.get("access-control-allow-headers"),
                         "authorization, content-type, x-stainless-os, x-request-id", response)
        # An unknown path is still 404.
        self.assert_error(self.preflight("/v1/nothing"), 404, code="not_found")

    def test_other_origins_are_refused_by_name(self):
        origin = "https://evil.example.com"
        response = self.preflight("/v1/completions", origin=origin)
        self.assert_error(response, 403, code="cors_origin_not_allowed", message=(
            "CORS: the origin https://evil.example.com is not allowed; --cors-allow-origin "
            "lists the origins browsers may call this server from"))
        self.assertNotIn("access-control-allow-origin", response.headers, response)
        # A request that is not a preflight is served as without CORS: the
        # browser keeps the answer from the page.
        for response in (self.request("/v1/models", origin=origin),
                         self.request("/v1/completions", {"prompt": PROMPT, "max_tokens": 2},
                                      origin=origin)):
            self.assertEqual(response.status, 200, response)
            self.assertEqual([h for h in response.headers if h.startswith("access-control-")], [],
                             response)
            self.assertIn("Origin", response.headers.get("vary", ""), response)
        # A prefix of an allowed origin is another origin.
        response = self.preflight("/v1/completions", origin=self.ORIGIN + ".evil.example")
        self.assert_error(response, 403, code="cors_origin_not_allowed")


class CorsAnyOriginTest(HttpAssertions):
    def test_any_origin(self):
        server = Server("--cors-allow-origin", "*")
        try:
            for origin in ("https://app.example.com", "http://127.0.0.1:3000"):
                response = curl(server.url + "/v1/completions", method="POST",
                                body={"prompt": PROMPT, "max_tokens": 2},
                                headers=[("Origin", origin)])
                self.assertEqual(response.status, 200, response)
                self.assertEqual(response.headers.get("access-control-allow-origin"), "*")
                preflight = curl(server.url + "/v1/completions", method="OPTIONS", headers=[
                    ("Origin", origin), ("Access-Control-Request-Method", "POST"),
                    ("Access-Control-Request-Headers", "authorization,content-type")])
                self.assertEqual(preflight.status, 204, preflight)
                self.assertEqual(preflight.headers.get("access-control-allow-origin"), "*")
                self.assertEqual(preflight.headers.get("access-control-allow-headers"),
                                 "authorization, content-type")
            # No Origin: not a CORS request, no CORS header.
            response = curl(server.url + "/v1/models")
            self.assertNotIn("access-control-allow-origin", response.headers, response)
        finally:
            code = server.stop()
        self.assertEqual(code, 0)

    def test_a_malformed_origin_is_refused_at_start(self):
        for value, message in (
                ("https://app.example.com/", "'https://app.example.com/' is not an origin"),
                ("app.example.com", "'app.example.com' is not an origin"),
                ("*,https://app.example.com", "* allows every origin; give it alone")):
            with self.subTest(value=value):
                run = subprocess.run(
                    [os.path.join(ARGS.build_dir, "server", "streamgen-server"),
                     "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
                     "--metrics-listen=", "--model",
                     os.path.join(ARGS.build_dir, "models", "tiny-builtin"),
                     "--cors-allow-origin", value],
                    capture_output=True, text=True, timeout=120)
                self.assertNotEqual(run.returncode, 0, run.stdout + run.stderr)
                self.assertIn("--cors-allow-origin: " + message, run.stdout + run.stderr)


class QueueFullTest(HttpAssertions):
    """--max-batch 1 --max-queue 1: a third request in flight gets 429."""

    @classmethod
    def setUpClass(cls):
        cls.server = Server("--max-batch", "1", "--max-queue", "1")

    @classmethod
    def tearDownClass(cls):
        code = cls.server.stop()
        assert code == 0, "streamgen-server exited with %d after SIGTERM" % code

    def long_stream(self):
        return {"model": MODEL, "prompt": PROMPT, "max_tokens": 480, "ignore_eos": True,
                "temperature": 0, "stream": True}

    def finish_background(self, streams):
        """Waits for background streams: (the 429 responses, the 200 count)."""
        refused, whole = [], 0
        for stream in streams:
            response = stream.finish()
            if response.status == 429:
                self.assert_error(response, 429)
                refused.append(response)
            else:
                self.assertEqual(response.status, 200, response)
                _, finish_reason, _ = self.completion_stream(response)
                self.assertEqual(finish_reason, "length")
                whole += 1
        return refused, whole

    def test_a_burst_beyond_batch_and_queue_gets_429(self):
        # Six long streams at once in background curl processes: at most one runs
        # and one waits, so some are refused with 429 and the error JSON; the
        # accepted ones stream to the end.
        url = self.server.url + "/v1/completions"
        streams = [BackgroundCurl(url, self.long_stream()) for _ in range(6)]
        try:
            refused, whole = self.finish_background(streams)
        finally:
            for stream in streams:
                stream.kill()
        self.assertGreater(len(refused), 0)
        self.assertGreater(whole, 0)

    def test_one_more_while_the_queue_is_full_gets_429(self):
        url = self.server.url + "/v1/completions"
        got_429 = None
        # Bounded rounds: one long stream running, a second one waiting (both
        # background curls), then one more request. A round in which a request
        # finished before the queue was seen full proves nothing and is retried.
        for _ in range(10):
            self.server.wait_for_metric("streamgen_engine_running_requests", lambda v: v == 0)
            self.server.wait_for_metric("streamgen_engine_waiting_requests", lambda v: v == 0)
            finished = self.server.metric("streamgen_engine_finished_total")
            streams = []
            try:
                streams.append(BackgroundCurl(url, self.long_stream()))
                if not self.wait_for_engine(running=1, waiting=0, finished=finished):
                    continue
                streams.append(BackgroundCurl(url, self.long_stream()))
                if not self.wait_for_engine(running=1, waiting=1, finished=finished):
                    continue
                response = curl(url, method="POST", body=self.long_stream())
                if response.status == 429:
                    got_429 = response
                else:
                    # accepted: the running stream may have ended meanwhile; retry
                    self.assertEqual(response.status, 200, response)
                    self.completion_stream(response)
                self.finish_background(streams)
            finally:
                for stream in streams:
                    stream.kill()
            if got_429 is not None:
                break
        self.assertIsNotNone(got_429, "no 429 while the queue was full")
        self.assertTrue(self.assert_error(got_429, 429)["message"])
        # and the server serves again once the queue drained
        self.server.wait_for_metric("streamgen_engine_running_requests", lambda v: v == 0)
        self.server.wait_for_metric("streamgen_engine_waiting_requests", lambda v: v == 0)
        response = curl(url, method="POST", body={"model": MODEL, "prompt": PROMPT,
                                                  "max_tokens": 2})
        self.assertEqual(response.status, 200, response)

    def wait_for_engine(self, running, waiting, finished, timeout=10):
        """Polls /metrics until `running` run and `waiting` wait; False when a
        request finished first (streamgen_engine_finished_total passed `finished`)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            text = self.server.metrics_text()
            if self.server.metric("streamgen_engine_finished_total", text=text) > finished:
                return False
            if (self.server.metric("streamgen_engine_running_requests", text=text) == running and
                    self.server.metric("streamgen_engine_waiting_requests", text=text) == waiting):
                return True
            time.sleep(0.002)
        raise AssertionError("the engine never had %d running and %d waiting:\n%s"
                             % (running, waiting, text))


class DrainTest(HttpAssertions):
    def test_draining_refuses_with_503_and_finishes_the_streams(self):
        # --max-batch 1: the streams run one after another, so the drain lasts
        # while they finish (a generous --drain-timeout: a loaded machine is slow).
        server = Server("--max-batch", "1", "--drain-timeout", "300s")
        streams = []
        try:
            url = server.url + "/v1/completions"
            body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 480, "ignore_eos": True,
                    "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
            streams = [BackgroundCurl(url, body) for _ in range(3)]
            # All three are in the engine (one running, two waiting) before SIGTERM.
            server.wait_for_metric("streamgen_engine_running_requests", lambda v: v == 1, 30)
            server.wait_for_metric("streamgen_engine_waiting_requests", lambda v: v == 2, 30)
            self.assertTrue(streams[0].read_first_line().startswith(b"data: "))
            server.process.send_signal(signal.SIGTERM)
            deadline = time.time() + 20
            health = None
            while time.time() < deadline:
                health = curl(server.url + "/health")
                if health.status != 200:
                    break
                time.sleep(0.005)
            self.assertEqual(health.status, 503, health)
            self.assertEqual(health.json(), {"status": "draining"})
            self.assertTrue(health.headers.get("retry-after"), health)
            refused = curl(url, method="POST", body={"model": MODEL, "prompt": PROMPT,
                                                     "max_tokens": 2})
            self.assert_error(refused, 503)
            self.assertTrue(refused.headers.get("retry-after"), refused)
            self.assertGreaterEqual(int(refused.headers["retry-after"]), 0, refused)
            # The streams in flight finish, whole.
            for stream in streams:
                response = stream.finish()
                _, finish_reason, usage = self.completion_stream(response, include_usage=True)
                self.assertEqual(finish_reason, "length")
                self.assertEqual(usage["completion_tokens"], 480)
        finally:
            for stream in streams:
                stream.kill()
            code = server.stop()
        self.assertEqual(code, 0)


class DrainTimeoutTest(HttpAssertions):
    def test_streams_cut_by_the_drain_timeout_end_with_an_error_event(self):
        # A drain timeout far shorter than the streams in flight: each stream
        # that had started (200) ends with `data: {"error": ...}` then [DONE].
        server = Server("--max-batch", "1", "--drain-timeout", "10ms")
        streams = []
        try:
            url = server.url + "/v1/chat/completions"
            body = {"model": MODEL, "messages": CHAT, "max_tokens": 480, "ignore_eos": True,
                    "temperature": 0, "stream": True}
            streams = [BackgroundCurl(url, body) for _ in range(4)]
            server.wait_for_metric("streamgen_engine_running_requests", lambda v: v == 1, 30)
            server.wait_for_metric("streamgen_engine_waiting_requests", lambda v: v == 3, 30)
            self.assertTrue(streams[0].read_first_line().startswith(b"data: "))
            server.process.send_signal(signal.SIGTERM)
            cut = 0
            for stream in streams:
                response = stream.finish()
                if response.status != 200:
                    self.assert_error(response, 503)
                    continue
                text = response.body.decode("utf-8")
                self.assertTrue(text.endswith("data: [DONE]\n\n"), text[-500:])
                events = [e for e in text.split("\n\n")[:-1] if not e.startswith(":")]
                self.assertEqual(events[-1], "data: [DONE]")
                last = json.loads(events[-2][len("data: "):])
                if "error" in last:
                    cut += 1
                    self.assertEqual(sorted(last["error"].keys()),
                                     ["code", "message", "param", "type"], last)
                    self.assertTrue(last["error"]["message"], last)
                    for event in events[:-2]:
                        self.assertNotIn("error", json.loads(event[len("data: "):]), event)
                else:
                    self.chat_stream(response)  # a whole stream
            self.assertGreater(cut, 0, "no stream was ended by the drain timeout")
        finally:
            for stream in streams:
                stream.kill()
            code = server.stop()
        self.assertEqual(code, 0)


class ServedModelNameTest(HttpAssertions):
    def test_served_model_name(self):
        # A slash, as Hugging Face names have: GET /v1/models/{id} takes the rest of the path.
        name = "streamgen-test/my-served-name"
        server = Server("--served-model-name", name)
        try:
            models = curl(server.url + "/v1/models").json()
            self.assertEqual([m["id"] for m in models["data"]], [name])
            response = curl(server.url + "/v1/models/" + name)
            self.assertEqual(response.status, 200, response)
            self.assertEqual(response.json(), models["data"][0])
            self.assert_error(curl(server.url + "/v1/models/my-served-name"), 404,
                              code="model_not_found")
            response = curl(server.url + "/v1/completions", method="POST", body={
                "model": name, "prompt": PROMPT, "max_tokens": 2})
            self.assertEqual(response.status, 200, response)
            self.assertEqual(response.json()["model"], name)
            self.assert_error(curl(server.url + "/v1/completions", method="POST", body={
                "model": MODEL, "prompt": PROMPT, "max_tokens": 2}), 404, code="model_not_found")
        finally:
            code = server.stop()
        self.assertEqual(code, 0)


def main():
    global ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--build-dir", required=True)
    ARGS, rest = parser.parse_known_args()
    ARGS.build_dir = os.path.abspath(ARGS.build_dir)
    if not os.access(CURL, os.X_OK):
        print("%s is missing: install Debian's curl (scripts/install-deps.sh)" % CURL,
              file=sys.stderr)
        return 1
    return 0 if unittest.main(argv=[sys.argv[0]] + rest, exit=False).result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
