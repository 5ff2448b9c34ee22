#!/usr/bin/python3
"""The streamgen-client command lines of the README and docs/, run as written
against a freshly started streamgen-server with its default model (the demo
model). Every line of a ```sh block that starts with `streamgen-client` or
`build/client/streamgen-client` runs under bash with the built client and the
test server's address (`--server HOST:PORT` and `localhost:50051` point at it);
each must exit 0 and print something. Lines that need what a plain local
server does not have (TLS certificates, an API key, a gateway) are the
deployment tests' (tests/gateway_test.py, tests/security_test.py), and are
listed here with that reason, never silently dropped.

    /usr/bin/python3 tests/docs_client_examples_test.py --build-dir BUILD_DIR
"""
import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import unittest

from streamgen_server import StreamgenServer

ARGS = None
SOURCE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILES = ["README.md", "docs/grpc-api.md", "docs/serving.md", "docs/structured-outputs.md"]
ELSEWHERE = ("--tls", "--api-key", ":8443")  # the gateway and security tests run these


def client_lines():
    """(file, line) of every streamgen-client command in a ```sh block."""
    found = []
    for name in FILES:
        with open(os.path.join(SOURCE_DIR, name), encoding="utf-8") as f:
            text = f.read()
        for block in re.findall(r"```sh\n(.*?)```", text, re.S):
            for line in block.splitlines():
                line = line.strip()
                # A synopsis ("streamgen-client [--server HOST:PORT] ...") is not a command.
                if re.match(r"(build/client/)?streamgen-client ", line) and " [" not in line:
                    found.append((name, line))
    return found


class DocsClientExamplesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        client = os.path.join(ARGS.build_dir, "client", "streamgen-client")
        cls.client = client
        cls.server = StreamgenServer(
            ARGS.build_dir, prefix="streamgen-docs-test-", model=None,  # the demo model
            healthy=lambda url: subprocess.run(["curl", "-sf", url + "/health"],
                                               capture_output=True).returncode == 0)

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def check_constrained(self, line, out):
        """A constrained example's text matches its constraint (the flag's own
        value, read back from the command line)."""
        text = out.rstrip("\n")
        args = shlex.split(line)
        value = lambda flag: args[args.index(flag) + 1]
        if "--choice" in args:
            self.assertIn(text, value("--choice").split(","), line)
        if "--regex" in args:
            self.assertRegex(text, "^(?:%s)$" % value("--regex"), line)
        if "--json-schema" in args:
            schema = json.loads(value("--json-schema"))
            document = json.loads(text)  # the whole text is one JSON value
            self.assertIsInstance(document, dict, line)
            self.assertEqual(set(document), set(schema["required"]), line)
            for name, spec in schema["properties"].items():
                self.assertIsInstance(document[name], int, line)
                self.assertGreaterEqual(document[name], spec["minimum"], line)
                self.assertLessEqual(document[name], spec["maximum"], line)

    def test_every_client_line_runs_as_written(self):
        lines = client_lines()
        self.assertGreaterEqual(len(lines), 10, "found too few client examples: %r" % lines)
        ran = 0
        for name, line in lines:
            if any(marker in line for marker in ELSEWHERE):
                print("docs_client_examples_test: %s: left to the gateway/security tests: %s"
                      % (name, line))
                continue
            command = re.sub(r"^(build/client/)?streamgen-client",
                             self.client + " --server " + self.server.grpc_address, line)
            command = command.replace("--server localhost:50051 ", "")
            with self.subTest(file=name, line=line):
                run = subprocess.run(["bash", "-c", command], capture_output=True, text=True,
                                     timeout=300)
                self.assertEqual(run.returncode, 0, "%s\n%s%s" % (line, run.stdout, run.stderr))
                self.assertTrue(run.stdout.strip(), "%s printed nothing" % line)
                self.check_constrained(line, run.stdout)
                ran += 1
        self.assertGreaterEqual(ran, 10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--build-dir", required=True)
    ARGS, rest = parser.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
