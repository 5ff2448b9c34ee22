#!/usr/bin/python3
"""The Python client (client/python, stubs generated with Debian's protoc +
grpc_python_plugin, run on Debian's python3-grpcio) against a freshly started
streamgen-server subprocess: the proof that generated clients in other
languages work, and that the Python and C++ client examples of docs/grpc-api.md
("Clients") work as written. Also: SIGTERM makes the server exit 0.

    /usr/bin/python3 tests/server_python_client_test.py --build-dir BUILD_DIR
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest

ARGS = None
SOURCE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE_DIR = os.path.join(SOURCE_DIR, "..", "shared", "fixtures", "tiny-llama")
PROMPT = "Once upon a time"


def import_client():
    sys.path.insert(0, os.path.join(ARGS.build_dir, "python"))
    sys.path.insert(0, os.path.join(SOURCE_DIR, "client", "python"))
    import grpc  # noqa: F401  (Debian's python3-grpcio)
    import streamgen_client
    from streamgen.v1 import generate_pb2, generate_pb2_grpc
    return streamgen_client, generate_pb2, generate_pb2_grpc


class Server:
    """streamgen-server on 127.0.0.1, any free port, until stop()."""

    def __init__(self, model):
        self.dir = tempfile.mkdtemp(prefix="streamgen-py-test-")
        port_file = os.path.join(self.dir, "port")
        self.log = open(os.path.join(self.dir, "server.log"), "w+")
        self.process = subprocess.Popen(
            [os.path.join(ARGS.build_dir, "server", "streamgen-server"), "--model", model,
             "--listen", "127.0.0.1:0", "--port-file", port_file, "--metrics-listen=", "--http-listen=",
             "--log-format=json", "--drain-timeout=30s"],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while not read_text(port_file).strip():
            if self.process.poll() is not None or time.time() > deadline:
                raise RuntimeError("the server did not start:\n" + self.logs())
            time.sleep(0.02)
        self.address = "127.0.0.1:" + read_text(port_file).strip()
        self.wait_until_serving(deadline)

    def wait_until_serving(self, deadline):
        import grpc
        _, generate_pb2, generate_pb2_grpc = import_client()
        with grpc.insecure_channel(self.address) as channel:
            stub = generate_pb2_grpc.TextGenerationStub(channel)
            while True:
                try:
                    stub.GetModelInfo(generate_pb2.GetModelInfoRequest(), timeout=10)
                    return
                except grpc.RpcError as error:
                    if error.code() != grpc.StatusCode.UNAVAILABLE or time.time() > deadline:
                        raise
                    time.sleep(0.05)

    def logs(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self):
        """SIGTERM; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        if code != 0:
            print(self.logs(), file=sys.stderr)
        self.log.close()
        return code


def read_text(path):
    if not os.path.exists(path):
        return ""
    with open(path) as f:
        return f.read()


def engine_reference(model, prompt, max_new_tokens):
    """streamgen-generate --json: the engine's text and ids, no server."""
    out = subprocess.run(
        [os.path.join(ARGS.build_dir, "tools", "streamgen-generate"), "--model", model,
         "--prompt", prompt, "--max-new-tokens", str(max_new_tokens), "--dtype", "float32",
         "--json"], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def python_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.join(ARGS.build_dir, "python")
    return env


class PythonClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.model = os.path.join(ARGS.build_dir, "models", "tiny-builtin")
        cls.server = Server(cls.model)

    @classmethod
    def tearDownClass(cls):
        code = cls.server.stop()
        assert code == 0, "streamgen-server exited with %d after SIGTERM" % code

    def stub(self):
        import grpc
        streamgen_client, generate_pb2, generate_pb2_grpc = import_client()
        channel = grpc.insecure_channel(self.server.address)
        self.addCleanup(channel.close)
        return streamgen_client, generate_pb2, generate_pb2_grpc.TextGenerationStub(channel)

    def test_generated_client_streams_the_engines_text(self):
        streamgen_client, generate_pb2, stub = self.stub()
        responses = list(streamgen_client.generate(stub, PROMPT, max_new_tokens=16))
        self.assertGreater(len(responses), 0)
        text = "".join(r.text for r in responses)
        ids = [t.id for r in responses for t in r.tokens]
        last = responses[-1]
        self.assertEqual(last.finish_reason, generate_pb2.FINISH_REASON_LENGTH)
        self.assertEqual(last.usage.completion_tokens, 16)
        self.assertTrue(last.HasField("seed"))
        reference = engine_reference(self.model, PROMPT, 16)
        self.assertEqual(text, reference["text"])
        self.assertEqual(ids, reference["token_ids"])
        self.assertEqual(last.usage.prompt_tokens, len(reference["prompt_token_ids"]))

    def test_invalid_argument_reaches_python(self):
        import grpc
        streamgen_client, _, stub = self.stub()
        with self.assertRaises(grpc.RpcError) as raised:
            list(streamgen_client.generate(stub, PROMPT, temperature=-1.0))
        self.assertEqual(raised.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("temperature", raised.exception.details())

    def test_readme_python_command(self):
        reference = engine_reference(self.model, PROMPT, 16)
        run = subprocess.run(
            ["/usr/bin/python3", os.path.join(SOURCE_DIR, "client", "python", "streamgen_client.py"),
             "--server", self.server.address, PROMPT, "--max-new-tokens", "16"],
            env=python_env(), capture_output=True, text=True, timeout=120)
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual(run.stdout, reference["text"] + "\n")
        self.assertIn("FINISH_REASON_LENGTH", run.stderr)

    def test_readme_python_json_command(self):
        run = subprocess.run(
            ["/usr/bin/python3", os.path.join(SOURCE_DIR, "client", "python", "streamgen_client.py"),
             "--server", self.server.address, PROMPT, "--max-new-tokens", "4", "--json"],
            env=python_env(), capture_output=True, text=True, timeout=120)
        self.assertEqual(run.returncode, 0, run.stderr)
        lines = [json.loads(line) for line in run.stdout.splitlines()]
        self.assertEqual(lines[-1]["finishReason"], "FINISH_REASON_LENGTH")
        self.assertEqual(lines[-1]["usage"]["completionTokens"], 4)

    def test_readme_cpp_client_commands(self):
        client = os.path.join(ARGS.build_dir, "client", "streamgen-client")
        reference = engine_reference(self.model, PROMPT, 16)
        run = subprocess.run([client, "--server", self.server.address, "generate", PROMPT,
                              "--max-new-tokens", "16"], capture_output=True, text=True,
                             timeout=120)
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual(run.stdout, reference["text"] + "\n")
        self.assertIn("FINISH_REASON_LENGTH", run.stderr)

        run = subprocess.run([client, "--server", self.server.address, "--json", "generate",
                              PROMPT, "--max-new-tokens", "16"], capture_output=True,
                             text=True, timeout=120)
        self.assertEqual(run.returncode, 0, run.stderr)
        lines = [json.loads(line) for line in run.stdout.splitlines()]
        self.assertEqual("".join(line.get("text", "") for line in lines), reference["text"])
        self.assertEqual(lines[-1]["finishReason"], "FINISH_REASON_LENGTH")

        run = subprocess.run([client, "--server", self.server.address, "tokenize", PROMPT,
                              "--add-special-tokens"], capture_output=True, text=True,
                             timeout=120)
        self.assertEqual(run.returncode, 0, run.stderr)
        ids = [int(line.split("\t")[0]) for line in run.stdout.splitlines()]
        self.assertEqual(ids, reference["prompt_token_ids"])

        run = subprocess.run([client, "--server", self.server.address, "--json", "info"],
                             capture_output=True, text=True, timeout=120)
        self.assertEqual(run.returncode, 0, run.stderr)
        info = json.loads(run.stdout)
        self.assertEqual(info["name"], "tiny-builtin")
        self.assertEqual(info["limits"]["maxTopLogprobs"], 20)

        run = subprocess.run([client, "--server", self.server.address, "generate", PROMPT,
                              "--temperature=-1"], capture_output=True, text=True, timeout=120)
        self.assertEqual(run.returncode, 1)
        self.assertIn("INVALID_ARGUMENT: temperature", run.stderr)


class FixtureTest(unittest.TestCase):
    def test_golden_over_python(self):
        if not os.path.exists(os.path.join(FIXTURE_DIR, "golden.json")):
            self.skipTest("../shared/fixtures/tiny-llama is absent")
        golden = json.loads(read_text(os.path.join(FIXTURE_DIR, "golden.json")))[0]
        server = Server(FIXTURE_DIR)
        try:
            import grpc
            streamgen_client, generate_pb2, generate_pb2_grpc = import_client()
            with grpc.insecure_channel(server.address) as channel:
                stub = generate_pb2_grpc.TextGenerationStub(channel)
                responses = list(streamgen_client.generate(
                    stub, golden["prompt"], max_new_tokens=golden["max_new_tokens"]))
            self.assertEqual("".join(r.text for r in responses), golden["generated_text"])
            self.assertEqual([t.id for r in responses for t in r.tokens],
                             golden["generated_token_ids"])
        finally:
            self.assertEqual(server.stop(), 0)


def main():
    global ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--build-dir", required=True)
    ARGS, rest = parser.parse_known_args()
    try:
        import_client()
    except ImportError as error:
        print("cannot import the generated client (%s): build the streamgen_python_proto "
              "target and install python3-grpcio" % error, file=sys.stderr)
        return 1
    return 0 if unittest.main(argv=[sys.argv[0]] + rest, exit=False).result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
