#!/usr/bin/python3
"""streamgen-server --chat-template FILE (issue 19), end to end over HTTP on the
demo model: a file holding the model's own chat_template (the published
Llama-2-chat template) gives the same prompt ids on /tokenize as the built-in
llama2 format; the template's raise_exception reaches the client as a 400
with its message; a missing file and a template that does not parse stop the
server at startup, naming the file, line and column.

    tests/chat_template_file_test.py --build-dir build
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

from streamgen_server import StreamgenServer, http_healthy as healthy, post_json as post, post_sse

ARGS = None
DEMO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models", "demo-brown")
CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hello there"},
    {"role": "assistant", "content": "Hi!"},
    {"role": "user", "content": "How are you? ünïcode"},
]






class ChatTemplateFileTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="streamgen-chat-template-")

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def write(self, name, text):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def tokenize(self, chat_template, messages):
        server = StreamgenServer(ARGS.build_dir, ["--model", DEMO, "--chat-template", chat_template],
                                 healthy=healthy)
        try:
            return post(server.url + "/tokenize", {"messages": messages})
        finally:
            self.assertEqual(server.stop(), 0)

    def test_the_models_template_as_a_file_renders_as_the_built_in(self):
        with open(os.path.join(DEMO, "tokenizer_config.json")) as f:
            template = json.load(f)["chat_template"]
        path = self.write("llama2.jinja", template)
        status, from_file = self.tokenize(path, CONVERSATION)
        self.assertEqual(status, 200, from_file)
        status, built_in = self.tokenize("llama2", CONVERSATION)
        self.assertEqual(status, 200, built_in)
        self.assertEqual(from_file["tokens"], built_in["tokens"])
        self.assertEqual(from_file["token_strs"][0], "<s>")  # BOS as its id, not as text

    def test_raise_exception_is_a_400_with_the_templates_message(self):
        path = self.write("strict.jinja",
                          "{% if messages[-1].role != 'user' %}"
                          "{{ raise_exception('The last message must be the user\\'s') }}"
                          "{% endif %}{% for m in messages %}{{ m.content }}{% endfor %}")
        status, body = self.tokenize(path, [{"role": "assistant", "content": "x"}])
        self.assertEqual(status, 400, body)
        self.assertEqual(body["error"]["message"], "The last message must be the user's")

    def start_fails(self, chat_template):
        run = subprocess.run(
            [os.path.join(ARGS.build_dir, "server", "streamgen-server"), "--model", DEMO,
             "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--metrics-listen=",
             "--chat-template", chat_template],
            capture_output=True, text=True, timeout=120)
        self.assertNotEqual(run.returncode, 0)
        return run.stdout + run.stderr

    def test_a_missing_file_or_a_bad_template_stops_the_server(self):
        missing = os.path.join(self.dir, "missing.jinja")
        self.assertIn('--chat-template: \\"%s\\" is neither a chat template family (llama2, '
                      'mistral, chatml or none) nor a readable Jinja template file' % missing,
                      self.start_fails(missing))
        bad = self.write("bad.jinja", "{% for m in messages %}\n{{ m.content }}\n{% endif %}")
        self.assertIn("--chat-template=%s: %s:3:4: expected 'else' or 'endfor' to close the "
                      "'for' at 1:4, got 'endif'" % (bad, bad), self.start_fails(bad))


def main():
    global ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--build-dir", required=True)
    ARGS, rest = parser.parse_known_args()
    ARGS.build_dir = os.path.abspath(ARGS.build_dir)
    return 0 if unittest.main(argv=[sys.argv[0]] + rest, exit=False).result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
