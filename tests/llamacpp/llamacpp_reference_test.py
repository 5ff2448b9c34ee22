#!/usr/bin/python3
"""llama.cpp as the reference for the engine's forward pass (plain Llama).

  llamacpp_reference_test.py --build-dir BUILD

Clones the llama.cpp source bundle that node-llama-cpp ships (for its gguf-py)
into BUILD/llamacpp/llama.cpp, makes the fixture (make_fixture.py: a tiny
random Llama in Hugging Face's layout and the same weights as GGUF, fixed
seed), runs llama.cpp's greedy decoding on several prompts through the prebuilt
binary (llamacpp_greedy.mjs, float32 on CPU), and checks that
streamgen-generate (float32, temperature 0) gives the same token ids. Every
step's top-2 logit gap must clear GAP_FLOOR, so a near-tie cannot make the
comparison pass or fail by chance. Also checks the scripts' error messages.
Needs tests/llamacpp/node_modules (the llamacpp_npm_install fixture).
"""

import argparse
import json
import pathlib
import subprocess
import sys
import unittest

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
SOURCE = HERE.parent.parent
BUNDLE = HERE / "node_modules" / "node-llama-cpp" / "llama" / "gitRelease.bundle"
TOKENIZER = SOURCE / "models" / "demo-brown" / "tokenizer.model"
SEED = 20
NEW_TOKENS = 40
# The smallest top-2 logit gap (in logits) a compared step may have: far above
# float32 rounding in logits of this size, so two correct float32 forward passes
# pick the same argmax. The prompts' seed (3) was chosen so every prompt clears it.
GAP_FLOOR = 5e-3


def run(args, **kwargs):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True,
                          timeout=300, **kwargs)


def prompts(vocab_size):
    """Token-id prompts of different lengths, all starting with BOS (1)."""
    rng = np.random.default_rng(3)
    out = [[1]]
    for length in (3, 16, 75):
        out.append([1] + [int(i) for i in rng.integers(3, vocab_size, length)])
    from sentencepiece import SentencePieceProcessor
    sp = SentencePieceProcessor()
    sp.LoadFromFile(str(TOKENIZER))
    out.append([1] + sp.EncodeAsIds("The old man walked slowly down the road to the river."))
    return out


class LlamaCppReferenceTest(unittest.TestCase):
    build = None  # set by main()

    @classmethod
    def setUpClass(cls):
        work = cls.build / "llamacpp"
        work.mkdir(parents=True, exist_ok=True)
        cls.llama_cpp = work / "llama.cpp"
        if not (cls.llama_cpp / "gguf-py" / "gguf").is_dir():
            if not BUNDLE.is_file():
                raise unittest.SkipTest(f"{BUNDLE} is missing: run the llamacpp_npm_install test")
            done = run(["git", "clone", "--quiet", BUNDLE, cls.llama_cpp])
            if done.returncode != 0:
                raise RuntimeError(f"git clone {BUNDLE}: {done.stderr}")
        cls.fixture = work / "fixture"
        done = run([sys.executable, HERE / "make_fixture.py", "--gguf-py",
                    cls.llama_cpp / "gguf-py", "--tokenizer", TOKENIZER,
                    "--out", cls.fixture, "--seed", SEED])
        if done.returncode != 0:
            raise RuntimeError(f"make_fixture.py failed: {done.stderr}")
        cls.made = json.loads(done.stdout)

    def test_greedy_ids_match_llama_cpp(self):
        cases = prompts(self.made["vocab_size"])
        prompts_file = self.fixture / "prompts.json"
        prompts_file.write_text(json.dumps(cases))
        done = run(["node", HERE / "llamacpp_greedy.mjs", self.fixture / "model.gguf",
                    prompts_file, NEW_TOKENS], cwd=HERE)
        self.assertEqual(done.returncode, 0, done.stderr)
        golden = json.loads(done.stdout)
        self.assertEqual(len(golden), len(cases))
        generate = self.build / "tools" / "streamgen-generate"
        for case in golden:
            with self.subTest(prompt_tokens=len(case["prompt"])):
                self.assertEqual(len(case["ids"]), NEW_TOKENS)
                self.assertGreater(case["min_gap"], GAP_FLOOR,
                                   "llama.cpp's top-2 logits nearly tie: change the seed")
                done = run([generate, "--model", self.fixture / "hf",
                            "--prompt-token-ids", ",".join(map(str, case["prompt"])),
                            "--max-new-tokens", NEW_TOKENS, "--temperature", "0",
                            "--dtype", "float32", "--ignore-eos", "--json", "--threads", "1"])
                self.assertEqual(done.returncode, 0, done.stderr)
                ours = json.loads(done.stdout)["token_ids"]
                self.assertEqual(ours, case["ids"])
                print(f"prompt of {len(case['prompt'])} tokens: {NEW_TOKENS} ids equal, "
                      f"smallest top-2 gap {case['min_gap']:.4f}")

    def test_make_fixture_names_a_bad_gguf_py(self):
        done = run([sys.executable, HERE / "make_fixture.py", "--gguf-py", HERE,
                    "--tokenizer", TOKENIZER, "--out", self.build / "llamacpp" / "unused"])
        self.assertNotEqual(done.returncode, 0)
        self.assertIn(f"--gguf-py: {HERE} holds no gguf package (gguf/__init__.py)", done.stderr)

    def test_make_fixture_names_a_missing_tokenizer(self):
        missing = HERE / "no-such-tokenizer.model"
        done = run([sys.executable, HERE / "make_fixture.py", "--gguf-py",
                    self.llama_cpp / "gguf-py", "--tokenizer", missing,
                    "--out", self.build / "llamacpp" / "unused"])
        self.assertNotEqual(done.returncode, 0)
        self.assertIn(f"--tokenizer: {missing} is not a file", done.stderr)

    def test_make_fixture_names_a_missing_python_package(self):
        # -S: no site-packages, so Debian's numpy is out of reach.
        done = run([sys.executable, "-S", HERE / "make_fixture.py", "--help"])
        self.assertNotEqual(done.returncode, 0)
        self.assertIn("make_fixture.py: needs Python's numpy (scripts/install-deps.sh "
                      "installs python3-numpy and python3-sentencepiece)", done.stderr)

    def test_greedy_script_usage(self):
        done = run(["node", HERE / "llamacpp_greedy.mjs"], cwd=HERE)
        self.assertEqual(done.returncode, 2)
        self.assertIn("usage: node llamacpp_greedy.mjs MODEL.gguf PROMPTS.json N", done.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build-dir", required=True, type=pathlib.Path)
    args, rest = parser.parse_known_args()
    LlamaCppReferenceTest.build = args.build_dir.resolve()
    unittest.main(argv=[sys.argv[0], "-v"] + rest)


if __name__ == "__main__":
    main()
