#!/usr/bin/python3
"""The HTTP examples of docs/http-api.md (its "## Examples" section), run as
written against a freshly started streamgen-server (the only change:
`localhost:8000` points at the test's server on a free port). Every ```sh block
runs under bash, the ```js block under node with tests/http's pinned `openai`
package, the ```python block under Debian's python3 with python3-requests.

    /usr/bin/python3 tests/http_readme_test.py --build-dir BUILD_DIR
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import unittest

from streamgen_server import StreamgenServer

ARGS = None
SOURCE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join("docs", "http-api.md")
SECTION = "\n## Examples\n"


def readme_blocks():
    """(language, code) of every fenced block in docs/http-api.md's Examples section."""
    with open(os.path.join(SOURCE_DIR, DOC), encoding="utf-8") as f:
        text = f.read()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start:end if end >= 0 else len(text)]
    return re.findall(r"```(\w+)\n(.*?)```", section, re.S)


def Server():
    """streamgen-server (its default model, as the docs run it) on loopback, free ports."""
    server = StreamgenServer(
        ARGS.build_dir, prefix="streamgen-readme-test-", model=None,  # the default: the demo model
        healthy=lambda url: subprocess.run(["curl", "-sf", url + "/health"],
                                           capture_output=True).returncode == 0)
    server.address = "127.0.0.1:%d" % server.http_port
    return server


class ReadmeHttpExamplesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server()
        cls.blocks = readme_blocks()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def code(self, language):
        blocks = [code for lang, code in self.blocks if lang == language]
        self.assertTrue(blocks, f"{DOC}'s Examples section has no ```{language} block")
        return [b.replace("localhost:8000", self.server.address) for b in blocks]

    def run_checked(self, command, **kwargs):
        result = subprocess.run(command, capture_output=True, text=True, timeout=300, **kwargs)
        self.assertEqual(result.returncode, 0,
                         f"{command} failed:\n{result.stdout}\n{result.stderr}\n{self.server.logs()}")
        return result.stdout

    def test_shell_examples(self):
        for block in self.code("sh"):
            out = self.run_checked(["bash", "-euo", "pipefail", "-c", block])
            # Each curl's answer, in order.
            models = json.loads(out.split("\n", 1)[0])
            self.assertEqual(models["data"][0]["id"], "demo-brown")  # the server's default model
            self.assertIn('"object":"text_completion"', out)
            self.assertIn("data: [DONE]", out)
            self.assertIn('"object":"chat.completion"', out)
            self.assertRegex(out, r'"usage":\{"prompt_tokens":\d+,"completion_tokens":\d+,')
            self.assertRegex(out, r'\{"count":\d+,"max_model_len":\d+,"tokens":\[1,')
            self.assertIn('{"prompt":"Hello world"}', out)  # [1, 437, 306, 4030, 882]: <s> ▁He ll o ▁world
            self.assertIn('{"prompt":"<s>[INST] Hello [/INST]"}', out)  # the model's Llama 2 template
            # The plain-text stream comes last, after the last JSON line.
            self.assertTrue(out.rstrip().split("\n")[-1].strip(), out)

    def test_openai_node_example(self):
        with tempfile.TemporaryDirectory() as tmp:
            # The pinned packages, found by node's resolution from the script's folder.
            os.symlink(os.path.join(SOURCE_DIR, "tests", "http", "node_modules"),
                       os.path.join(tmp, "node_modules"))
            for block in self.code("js"):
                script = os.path.join(tmp, "example.mjs")
                with open(script, "w") as f:
                    f.write(block)
                out = self.run_checked(["node", script])
                self.assertRegex(out, r"completion_tokens: \d+")
                self.assertRegex(out, r"prompt_tokens: \d+")

    def test_seed_python_example(self):
        for block in self.code("python"):
            out = self.run_checked(["/usr/bin/python3", "-c", block])
            self.assertGreater(len(out.strip()), 0, "no text came back")


def main():
    global ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--build-dir", required=True)
    ARGS, rest = parser.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
