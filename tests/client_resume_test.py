#!/usr/bin/python3
"""Resumable streams end to end, without a gateway: two real streamgen-server
processes on one model, and a client whose target lists both
("ipv4:127.0.0.1:A,127.0.0.1:B": gRPC's pick_first takes A while it lives,
then B). Mid-stream, A is killed with SIGKILL; the client (the C++
streamgen-client, and the Python client's ResumableStream) resumes on B by
itself, and what it printed is exactly the uninterrupted run's output: text
and token ids, greedy and sampled (with and without a seed of the user's).
Also the contract over gRPC: the first message names the seed and the model
fingerprint, and the server refuses resumes it cannot honour.

GatewayResumeTest does it through the gateway (real nginx running
docker/gateway/nginx.conf, tests/gateway.py) as deployments do: the replica
serving the stream (the one whose running gauge is up) is killed with
SIGKILL, nginx resets the client's stream (INTERNAL "RST_STREAM"), the client
resumes through the same gateway address, nginx sends it to the other replica,
and the output is again exactly the uninterrupted run's.

    /usr/bin/python3 tests/client_resume_test.py --build-dir BUILD_DIR
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gateway import Gateway  # noqa: E402
from streamgen_server import StreamgenServer, metric_value  # noqa: E402

ARGS = None
SOURCE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPT = "The lighthouse keeper"
MAX_NEW = 96
KILL_AFTER_MESSAGES = 12
SAMPLED = ["--temperature=0.9", "--top-p=0.95", "--presence-penalty=0.3",
           "--frequency-penalty=0.2", "--repetition-penalty=1.1"]


def healthy(url):
    try:
        with urllib.request.urlopen(url + "/health", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def make_slow_model(build_dir):
    """A random 512-wide, 8-layer model: slow enough on 2 cores (tens of
    tokens/s) that a stream is surely in flight when the server is killed."""
    out = tempfile.mkdtemp(prefix="streamgen-resume-model-")
    subprocess.run([os.path.join(build_dir, "tools", "streamgen-make-tiny-model"),
                    "--out", out,
                    "--tokenizer", os.path.join(build_dir, "models", "tiny-builtin",
                                                "tokenizer.model"),
                    "--hidden-size", "512", "--intermediate-size", "1376", "--layers", "8",
                    "--heads", "8", "--kv-heads", "8"],
                   check=True, stdout=subprocess.DEVNULL, timeout=120)
    return out


def client_path():
    return os.path.join(ARGS.build_dir, "client", "streamgen-client")


def run_client(target, flags):
    """streamgen-client --json generate: (messages, stderr, exit code); `target`
    is an address, or a list of streamgen-client flags (TLS)."""
    target = ["--server", target] if isinstance(target, str) else target
    done = subprocess.run([client_path()] + target + ["--json", "generate", PROMPT,
                           "--max-new-tokens=%d" % MAX_NEW, "--ignore-eos"] + flags,
                          capture_output=True, text=True, timeout=300)
    return [json.loads(line) for line in done.stdout.splitlines()], done.stderr, done.returncode


def ids_of(messages):
    # Proto3's JSON mapping (streamgen-client --json, like grpcurl) leaves out
    # fields at their default: a sampled token 0 (<unk>) has no "id" key.
    return [t.get("id", 0) for m in messages for t in m.get("tokens", [])]


def text_of(messages):
    return "".join(m.get("text", "") for m in messages)


def import_python_client():
    sys.path.insert(0, os.path.join(ARGS.build_dir, "python"))
    sys.path.insert(0, os.path.join(SOURCE_DIR, "client", "python"))
    global grpc, streamgen_client, generate_pb2, generate_pb2_grpc
    import grpc
    import streamgen_client
    from streamgen.v1 import generate_pb2, generate_pb2_grpc


def kill_when_streaming(child_stdout, victim, sink):
    """Reads the client's JSON lines into `sink`; after KILL_AFTER_MESSAGES of
    them, SIGKILLs victim() (a StreamgenServer)."""
    for line in child_stdout:
        sink.append(json.loads(line))
        if len(sink) == KILL_AFTER_MESSAGES:
            victim().process.send_signal(signal.SIGKILL)


def run_client_and_kill(test, flags, victim):
    """streamgen-client --json generate with `flags`, victim() SIGKILLed
    mid-stream; checks that the client resumed once and exited 0. Returns its
    messages and stderr."""
    child = subprocess.Popen([client_path()] + flags, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    messages, killed = [], []
    reader = threading.Thread(target=kill_when_streaming,
                              args=(child.stdout, lambda: killed.append(victim()) or killed[0],
                                    messages))
    reader.start()
    errors = child.stderr.read()
    test.assertEqual(child.wait(timeout=300), 0, errors)
    reader.join()
    child.stdout.close()
    child.stderr.close()
    test.assertEqual(killed[0].process.wait(timeout=30), -signal.SIGKILL)
    test.assertIn("resuming, 1 of 3", errors)
    return messages, errors, killed[0]


def expect_same(test, resumed, reference):
    test.assertEqual(len(ids_of(reference)), MAX_NEW)
    test.assertEqual(ids_of(resumed), ids_of(reference))
    test.assertEqual(text_of(resumed), text_of(reference))
    test.assertEqual(resumed[-1]["finishReason"], "FINISH_REASON_LENGTH")
    test.assertEqual(resumed[-1]["usage"]["completionTokens"], MAX_NEW)
    # A resumed call did happen: messages came after the kill.
    test.assertGreater(len(ids_of(resumed)), KILL_AFTER_MESSAGES)


class ClientResumeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        import_python_client()
        cls.model = make_slow_model(ARGS.build_dir)
        # B serves whatever A leaves; A is started anew for every kill.
        cls.b = StreamgenServer(ARGS.build_dir, ["--model", cls.model], healthy=healthy)

    @classmethod
    def tearDownClass(cls):
        cls.b.stop()
        shutil.rmtree(cls.model, ignore_errors=True)

    def start_a(self):
        a = StreamgenServer(ARGS.build_dir, ["--model", self.model], healthy=healthy)
        self.addCleanup(lambda: a.stop() if a.process.poll() is None else a.log.close())
        return a

    def both(self, a):
        return "ipv4:%s,%s" % (a.grpc_address, self.b.grpc_address)

    def cpp_client_resumes(self, flags):
        a = self.start_a()
        messages, errors, _ = run_client_and_kill(
            self, ["--server", self.both(a), "--json", "generate", PROMPT,
                   "--max-new-tokens=%d" % MAX_NEW, "--ignore-eos"] + flags, lambda: a)
        self.assertIn("UNAVAILABLE", errors)
        return messages, errors

    def test_cpp_client_greedy(self):
        reference, _, code = run_client(self.b.grpc_address, [])
        self.assertEqual(code, 0)
        resumed, errors = self.cpp_client_resumes([])
        expect_same(self, resumed, reference)

    def test_cpp_client_sampled_with_the_servers_seed(self):
        # No seed from the user: the client resumes with the one the first
        # message reported; the reference reruns with that seed.
        resumed, _ = self.cpp_client_resumes(SAMPLED)
        seed = int(resumed[0]["seed"])
        self.assertEqual(int(resumed[-1]["seed"]), seed)
        reference, errors, code = run_client(self.b.grpc_address, SAMPLED + ["--seed=%d" % seed])
        self.assertEqual(code, 0, errors)
        expect_same(self, resumed, reference)

    def test_cpp_client_without_retries_reports_the_break(self):
        a = self.start_a()
        child = subprocess.Popen([client_path(), "--server", self.both(a), "--json", "generate",
                                  PROMPT, "--max-new-tokens=%d" % MAX_NEW, "--ignore-eos",
                                  "--resume-retries=0"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        messages = []
        reader = threading.Thread(target=kill_when_streaming,
                                  args=(child.stdout, lambda: a, messages))
        reader.start()
        errors = child.stderr.read()
        self.assertEqual(child.wait(timeout=300), 1)
        reader.join()
        child.stdout.close()
        child.stderr.close()
        self.assertIn("UNAVAILABLE", errors)
        self.assertNotIn("resuming", errors)
        self.assertLess(len(ids_of(messages)), MAX_NEW)

    def test_a_refusal_before_the_first_message_is_retried_then_reported(self):
        # A draining server (SIGTERM while a stream holds it) refuses new calls
        # with UNAVAILABLE before any message: the client makes the same call
        # again (behind a gateway it would land elsewhere), here three times,
        # then reports the refusal.
        a = self.start_a()
        holder = subprocess.Popen([client_path(), "--server", a.grpc_address, "generate", PROMPT,
                                   "--max-new-tokens=400", "--ignore-eos"],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        holder.stdout.read(1)  # streaming
        a.process.send_signal(signal.SIGTERM)
        messages, errors, code = run_client(a.grpc_address, [])
        self.assertEqual(code, 1)
        self.assertEqual(messages, [])
        for n in (1, 2, 3):
            self.assertIn("retrying, %d of 3" % n, errors)
        self.assertIn("UNAVAILABLE: the server is shutting down", errors)
        self.assertNotIn("resuming", errors)
        holder.kill()
        holder.wait()
        holder.stdout.close()

    def test_python_client_resumes_seeded_sampling(self):
        a = self.start_a()
        fields = dict(prompt=PROMPT, max_new_tokens=MAX_NEW, ignore_eos=True, temperature=0.9,
                      top_p=0.95, presence_penalty=0.3, seed=1234)
        with grpc.insecure_channel(self.both(a)) as channel:
            stub = generate_pb2_grpc.TextGenerationStub(channel)
            breaks = []
            stream = streamgen_client.ResumableStream(
                stub, generate_pb2.GenerateRequest(**fields), timeout=300,
                on_resume=lambda error, tokens: breaks.append((error.code(), tokens)))
            resumed = []
            for message in stream:
                resumed.append(message)
                if len(resumed) == KILL_AFTER_MESSAGES:
                    a.process.send_signal(signal.SIGKILL)
        self.assertEqual(stream.resumes, 1)
        self.assertEqual(breaks[0][0], grpc.StatusCode.UNAVAILABLE)
        self.assertGreaterEqual(breaks[0][1], KILL_AFTER_MESSAGES)
        with grpc.insecure_channel(self.b.grpc_address) as channel:
            stub = generate_pb2_grpc.TextGenerationStub(channel)
            reference = list(stub.Generate(generate_pb2.GenerateRequest(**fields), timeout=300))
        self.assertEqual([t.id for m in resumed for t in m.tokens],
                         [t.id for m in reference for t in m.tokens])
        self.assertEqual("".join(m.text for m in resumed), "".join(m.text for m in reference))
        self.assertEqual(len([t for m in reference for t in m.tokens]), MAX_NEW)

    def test_first_message_names_seed_and_model_and_refusals(self):
        with grpc.insecure_channel(self.b.grpc_address) as channel:
            stub = generate_pb2_grpc.TextGenerationStub(channel)
            info = stub.GetModelInfo(generate_pb2.GetModelInfoRequest(), timeout=30)
            self.assertRegex(info.fingerprint, r"^sg1-[0-9a-f]{32}$")
            request = generate_pb2.GenerateRequest(prompt=PROMPT, max_new_tokens=6,
                                                   temperature=0.8)
            messages = list(stub.Generate(request, timeout=60))
            self.assertTrue(messages[0].HasField("seed"))
            self.assertEqual(messages[0].seed, messages[-1].seed)
            self.assertEqual(messages[0].model_fingerprint, info.fingerprint)
            if len(messages) > 1:
                self.assertEqual(messages[1].model_fingerprint, "")
            ids = [t.id for m in messages for t in m.tokens]

            def refused(**fields):
                with self.assertRaises(grpc.RpcError) as caught:
                    list(stub.Generate(generate_pb2.GenerateRequest(
                        prompt=PROMPT, max_new_tokens=6, **fields), timeout=60))
                return caught.exception

            error = refused(temperature=0.8, resume_token_ids=ids[:2])
            self.assertEqual(error.code(), grpc.StatusCode.INVALID_ARGUMENT)
            self.assertIn("resumes exactly only with the seed it used", error.details())
            error = refused(resume_token_ids=ids[:2],
                            model_fingerprint="sg1-" + "0" * 32)
            self.assertEqual(error.code(), grpc.StatusCode.FAILED_PRECONDITION)
            self.assertIn("model_fingerprint: the request is for model sg1-" + "0" * 32 +
                          " but this server runs " + info.fingerprint, error.details())
            error = refused(resume_token_ids=[info.vocab_size + 7])
            self.assertEqual(error.code(), grpc.StatusCode.INVALID_ARGUMENT)
            self.assertIn("resume_token_ids[0]", error.details())
            error = refused(resume_token_ids=ids[:6])
            self.assertIn("leave nothing to generate", error.details())
            # Accepted: the rest of the same greedy stream, with usage counting all.
            greedy = list(stub.Generate(generate_pb2.GenerateRequest(
                prompt=PROMPT, max_new_tokens=6), timeout=60))
            greedy_ids = [t.id for m in greedy for t in m.tokens]
            rest = list(stub.Generate(generate_pb2.GenerateRequest(
                prompt=PROMPT, max_new_tokens=6, resume_token_ids=greedy_ids[:4],
                model_fingerprint=info.fingerprint), timeout=60))
            self.assertEqual(greedy_ids[:4] + [t.id for m in rest for t in m.tokens], greedy_ids)
            self.assertEqual(rest[-1].usage.completion_tokens, 6)


class GatewayResumeTest(unittest.TestCase):
    """Two replicas of one model behind real nginx (the shipped config); each
    test kills the replica that serves its stream, so each starts its own pair."""

    @classmethod
    def setUpClass(cls):
        import_python_client()
        cls.model = make_slow_model(ARGS.build_dir)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.model, ignore_errors=True)

    def setUp(self):
        self.replicas = [StreamgenServer(ARGS.build_dir, ["--model", self.model, "--threads", "1"],
                                         healthy=healthy) for _ in range(2)]
        self.gateway = Gateway(SOURCE_DIR, [r.grpc_address for r in self.replicas],
                               ["127.0.0.1:%d" % r.http_port for r in self.replicas])
        self.client_flags = ["--server", self.gateway.address, "--tls-ca", self.gateway.ca_file,
                             "--tls-server-name", self.gateway.server_name]

    def tearDown(self):
        self.assertEqual(self.gateway.stop(), 0)
        for replica in self.replicas:
            if replica.process.poll() is None:
                self.assertEqual(replica.stop(), 0)
            else:
                replica.log.close()

    def serving(self):
        """The one replica whose engine runs a request now."""
        running = [r for r in self.replicas if r.process.poll() is None and
                   (metric_value(urllib.request.urlopen(r.url + "/metrics", timeout=10)
                                 .read().decode(), "streamgen:num_requests_running") or 0) > 0]
        self.assertEqual(len(running), 1)
        return running[0]

    def resumed_log_line(self, replica):
        """The survivor's log line for the resumed call."""
        for line in replica.logs().splitlines():
            if line.startswith("{") and "resumed_tokens" in line:
                return json.loads(line)
        return None

    def test_cpp_client_resumes_through_the_gateway(self):
        reference, errors, code = run_client(self.client_flags, SAMPLED + ["--seed=77"])
        self.assertEqual(code, 0, errors)
        resumed, errors, victim = run_client_and_kill(
            self, self.client_flags + ["--json", "generate", PROMPT,
                                       "--max-new-tokens=%d" % MAX_NEW, "--ignore-eos"] +
            SAMPLED + ["--seed=77"], self.serving)
        self.assertIn("INTERNAL: Received RST_STREAM", errors)
        expect_same(self, resumed, reference)
        survivor = [r for r in self.replicas if r is not victim][0]
        entry = self.resumed_log_line(survivor)
        self.assertIsNotNone(entry, survivor.logs()[-2000:])
        self.assertGreaterEqual(entry["resumed_tokens"], KILL_AFTER_MESSAGES)
        self.assertEqual(entry["completion_tokens"], MAX_NEW)

    def test_python_client_resumes_through_the_gateway(self):
        fields = dict(prompt=PROMPT, max_new_tokens=MAX_NEW, ignore_eos=True)
        with streamgen_client.make_channel(self.gateway.address, True,
                                           self.gateway.ca_file) as channel:
            stub = generate_pb2_grpc.TextGenerationStub(channel)
            reference = list(stub.Generate(generate_pb2.GenerateRequest(**fields), timeout=300))
            breaks = []
            stream = streamgen_client.ResumableStream(
                stub, generate_pb2.GenerateRequest(**fields), timeout=300,
                on_resume=lambda error, tokens: breaks.append(error))
            resumed = []
            for message in stream:
                resumed.append(message)
                if len(resumed) == KILL_AFTER_MESSAGES:
                    self.serving().process.send_signal(signal.SIGKILL)
        self.assertEqual(stream.resumes, 1)
        self.assertEqual(breaks[0].code(), grpc.StatusCode.INTERNAL)
        self.assertIn("RST_STREAM", breaks[0].details())
        self.assertEqual([t.id for m in resumed for t in m.tokens],
                         [t.id for m in reference for t in m.tokens])
        self.assertEqual("".join(m.text for m in resumed), "".join(m.text for m in reference))
        self.assertEqual(resumed[-1].usage.completion_tokens, MAX_NEW)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--build-dir", required=True)
    ARGS, rest = parser.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
