#!/usr/bin/python3
"""POST /query-stream/ with the seed's own client code: Debian's
python3-requests, `requests.post(url, json={"query": q, "max_new_tokens": n},
stream=True)` and `r.iter_content(10, decode_unicode=True)`, the chunks
concatenated. The text must be the engine's: the seed the server used comes
back in the `X-Seed` header, and the same request (the query as a chat user
message, temperature 1, top_k 50, top_p 1, that seed, the same max tokens) over
/v1/chat/completions and over gRPC (build/client/streamgen-client --chat) gives
the same text. The server is a streamgen-server subprocess on 127.0.0.1 (any
free ports) with the tiny random model.

    /usr/bin/python3 tests/http_query_stream_test.py --build-dir BUILD_DIR
"""
import argparse
import json
import os
import subprocess
import sys
import unittest

from streamgen_server import StreamgenServer

ARGS = None
MODEL = "tiny-builtin"
QUERIES = (
    ("What is the capital of France?", 40),
    ("Write a haiku about the sea, please.", 64),
    ("Grüße aus Köln — 東京 and naïve café?", 33),
    ("hi", 1),
)


def requests_healthy(url):
    import requests
    try:
        return requests.get(url + "/health", timeout=10).status_code == 200
    except requests.ConnectionError:
        return False


def Server(*flags):
    """streamgen-server on 127.0.0.1 (gRPC and HTTP on any free ports) until stop()."""
    return StreamgenServer(ARGS.build_dir, flags, healthy=requests_healthy,
                           prefix="streamgen-query-stream-test-")


def seed_client(url, q, n):
    """The seed's client, as it was written: (the response, the text)."""
    import requests
    r = requests.post(url, json={"query": q, "max_new_tokens": n}, stream=True, timeout=120)
    text = ""
    for chunk in r.iter_content(10, decode_unicode=True):
        text += chunk
    return r, text


class QueryStreamTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server()

    @classmethod
    def tearDownClass(cls):
        code = cls.server.stop()
        assert code == 0, "streamgen-server exited with %d after SIGTERM" % code

    def chat_completion(self, q, n, seed):
        import requests
        response = requests.post(self.server.url + "/v1/chat/completions", json={
            "model": MODEL, "messages": [{"role": "user", "content": q}], "temperature": 1,
            "top_k": 50, "top_p": 1, "seed": seed, "max_tokens": n}, timeout=120)
        self.assertEqual(response.status_code, 200, response.text)
        body = response.json()
        return body["choices"][0]["message"]["content"], body

    def grpc_generate(self, q, n, seed):
        run = subprocess.run(
            [os.path.join(ARGS.build_dir, "client", "streamgen-client"), "--server",
             self.server.grpc_address, "--json", "generate", q, "--chat", "--max-new-tokens",
             str(n), "--temperature", "1", "--top-k", "50", "--seed", str(seed)],
            capture_output=True, text=True, timeout=120)
        self.assertEqual(run.returncode, 0, run.stderr)
        lines = [json.loads(line) for line in run.stdout.splitlines() if line.strip()]
        self.assertEqual(lines[-1].get("seed"), str(seed), lines[-1])
        return "".join(line.get("text", "") for line in lines), lines[-1]

    def test_seed_client_gets_the_engines_text(self):
        seeds = set()
        for q, n in QUERIES:
            r, text = seed_client(self.server.url + "/query-stream/", q, n)
            self.assertEqual(r.status_code, 200, text)
            self.assertEqual(r.headers.get("Content-Type"), "text/plain; charset=utf-8")
            self.assertEqual(r.headers.get("Transfer-Encoding"), "chunked")
            self.assertIn("X-Seed", r.headers)
            seed = int(r.headers["X-Seed"])
            self.assertGreaterEqual(seed, 0)
            seeds.add(seed)
            expected, body = self.chat_completion(q, n, seed)
            self.assertEqual(text, expected, (q, n, seed))
            self.assertLessEqual(body["usage"]["completion_tokens"], n)
            grpc_text, last = self.grpc_generate(q, n, seed)
            self.assertEqual(text, grpc_text, (q, n, seed))
            self.assertEqual(last["usage"]["completionTokens"], body["usage"]["completion_tokens"])
            self.assertEqual(last["usage"]["promptTokens"], body["usage"]["prompt_tokens"])
        # a fresh seed per request
        self.assertGreater(len(seeds), 1, seeds)

    def test_same_query_twice_samples_with_different_seeds(self):
        q, n = "Tell me about dragons.", 48
        r1, text1 = seed_client(self.server.url + "/query-stream/", q, n)
        r2, text2 = seed_client(self.server.url + "/query-stream/", q, n)
        self.assertEqual((r1.status_code, r2.status_code), (200, 200))
        self.assertNotEqual(r1.headers["X-Seed"], r2.headers["X-Seed"])
        self.assertEqual(text1, self.chat_completion(q, n, int(r1.headers["X-Seed"]))[0])
        self.assertEqual(text2, self.chat_completion(q, n, int(r2.headers["X-Seed"]))[0])

    def assert_error_json(self, response, status=400):
        self.assertEqual(response.status_code, status, response.text)
        self.assertTrue(response.headers.get("Content-Type", "").startswith("application/json"),
                        response.headers)
        body = response.json()
        self.assertEqual(list(body.keys()), ["error"], body)
        error = body["error"]
        self.assertEqual(sorted(error.keys()), ["code", "message", "param", "type"], body)
        self.assertIsInstance(error["message"], str)
        self.assertTrue(error["message"])
        self.assertEqual(error["type"], "invalid_request_error", body)
        return error

    def test_bad_bodies_400(self):
        import requests
        url = self.server.url + "/query-stream/"
        error = self.assert_error_json(requests.post(url, json={"max_new_tokens": 8}, timeout=60))
        self.assertIn("query", (error["param"] or "") + error["message"], error)
        error = self.assert_error_json(requests.post(
            url, json={"query": "hello", "max_new_tokens": "eight"}, timeout=60))
        self.assertIn("max_new_tokens", (error["param"] or "") + error["message"], error)
        error = self.assert_error_json(requests.post(
            url, json={"query": 7, "max_new_tokens": 8}, timeout=60))
        self.assertIn("query", (error["param"] or "") + error["message"], error)
        self.assert_error_json(requests.post(
            url, data=b'{"query": "hello", ', headers={"Content-Type": "application/json"},
            timeout=60))

    def test_an_empty_query_is_refused_by_name(self):
        # Issue 18: one rule for an empty prompt on every face (this one
        # generated from nothing, where /v1/completions and gRPC refused it).
        import requests
        url = self.server.url + "/query-stream/"
        for body in ({"query": "", "max_new_tokens": 8}, {"query": ""}):
            error = self.assert_error_json(requests.post(url, json=body, timeout=60))
            self.assertEqual(error["param"], "query", error)
            self.assertEqual(error["message"], "query is empty: send at least one character")

    def test_the_validators_messages_name_this_bodys_fields(self):
        # Issue 18: the shared validator's messages come back with this body's
        # field names (query, max_new_tokens), never another face's.
        import requests
        url = self.server.url + "/query-stream/"
        error = self.assert_error_json(requests.post(
            url, json={"query": "hello", "max_new_tokens": 5000}, timeout=60))
        self.assertEqual(error["param"], "max_new_tokens", error)
        self.assertEqual(error["message"], "max_new_tokens 5000 exceeds the server's limit 4096")
        context = requests.get(self.server.url + "/v1/models", timeout=60).json()["data"][0][
            "max_model_len"]
        error = self.assert_error_json(requests.post(
            url, json={"query": "hello", "max_new_tokens": context}, timeout=60))
        self.assertEqual(error["param"], "max_new_tokens", error)
        self.assertIn("max_new_tokens (%d) exceeds the model's context length" % context,
                      error["message"])
        self.assertNotIn("max_tokens", error["message"])


def main():
    global ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--build-dir", required=True)
    ARGS, rest = parser.parse_known_args()
    ARGS.build_dir = os.path.abspath(ARGS.build_dir)
    try:
        import requests  # noqa: F401  (Debian's python3-requests)
    except ImportError:
        print("cannot import requests: install Debian's python3-requests "
              "(scripts/install-deps.sh)", file=sys.stderr)
        return 1
    return 0 if unittest.main(argv=[sys.argv[0]] + rest, exit=False).result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
