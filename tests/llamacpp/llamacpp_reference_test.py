#!/usr/bin/python3
"""llama.cpp as the reference for the engine's forward pass, one model family at a time.

  llamacpp_reference_test.py --build-dir BUILD [--family NAME]

Clones the llama.cpp source bundle that node-llama-cpp ships (for its gguf-py)
into BUILD/llamacpp/llama.cpp, makes the family's fixture (make_fixture.py: a
tiny random model in Hugging Face's layout and the same weights as GGUF, the
family's fixed seed) in BUILD/llamacpp/fixture-NAME, runs llama.cpp's greedy
decoding on several prompts through the prebuilt binary (llamacpp_greedy.mjs,
float32 on CPU), and checks that streamgen-generate (float32, temperature 0)
gives the same token ids. Every step's top-2 logit gap must clear the
family's floor (gap_floor()), so a near-tie cannot make the comparison pass or
fail by chance. With --family llama (the default) it also checks the scripts'
error messages. Needs tests/llamacpp/node_modules (the llamacpp_npm_install
fixture). FIXTURES.md says what each family's fixture exercises.
"""

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time
import unittest

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
SOURCE = HERE.parent.parent
BUNDLE = HERE / "node_modules" / "node-llama-cpp" / "llama" / "gitRelease.bundle"
TOKENIZER = SOURCE / "models" / "demo-brown" / "tokenizer.model"
NEW_TOKENS = 40

sys.path.insert(0, str(HERE))
import make_fixture  # noqa: E402  (FAMILIES: the names and their seeds)

# The smallest top-2 logit gap (in logits) a compared step may have. It must
# dwarf the difference between llama.cpp's float32 logits and exact ones:
# measured against a float64 reading of transformers' math (hf_reference.py,
# teacher-forced on llama.cpp's ids) on every fixture, no step's top-2 gap
# moved by more than 1e-4 for the SiLU families, so 1e-2 leaves a factor of
# 100 for llama.cpp's error and the engine's together.
GAP_FLOOR = 1e-2
# Gemma 3: llama.cpp's CPU GELU reads a float16 table (input rounded to
# float16, value stored in float16: ~1e-3 relative error per activation). It
# moved this fixture's top-2 gaps by up to 1.6e-3 (3.6e-3 at most over 20
# seeds of the same shape), measured as above: the floor is 15 (7) times that.
FAMILY_GAP_FLOOR = {"gemma3": 2.5e-2}


def gap_floor(family):
    return FAMILY_GAP_FLOOR.get(family, GAP_FLOOR)


def run(args, **kwargs):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True,
                          timeout=300, **kwargs)


def prompts(vocab_size):
    """Token-id prompts of 1, 4, 17, 76 and 13 tokens, all starting with BOS (1).

    76 + NEW_TOKENS is longer than every fixture's sliding window.
    """
    rng = np.random.default_rng(3)
    out = [[1]]
    for length in (3, 16, 75):
        out.append([1] + [int(i) for i in rng.integers(3, vocab_size, length)])
    from sentencepiece import SentencePieceProcessor
    sp = SentencePieceProcessor()
    sp.LoadFromFile(str(TOKENIZER))
    out.append([1] + sp.EncodeAsIds("The old man walked slowly down the road to the river."))
    return out


def clone_llama_cpp(build):
    """BUILD/llamacpp/llama.cpp, cloned from the bundle once (tests of several families
    may start together: each clones to a folder of its own and renames it into place)."""
    work = build / "llamacpp"
    work.mkdir(parents=True, exist_ok=True)
    llama_cpp = work / "llama.cpp"
    if (llama_cpp / "gguf-py" / "gguf").is_dir():
        return llama_cpp
    if not BUNDLE.is_file():
        raise unittest.SkipTest(f"{BUNDLE} is missing: run the llamacpp_npm_install test")
    scratch = work / f"llama.cpp.clone-{os.getpid()}"
    done = run(["git", "clone", "--quiet", BUNDLE, scratch])
    if done.returncode != 0:
        raise RuntimeError(f"git clone {BUNDLE}: {done.stderr}")
    try:
        scratch.rename(llama_cpp)
    except OSError:  # another test renamed its clone first
        shutil.rmtree(scratch)
    return llama_cpp


class LlamaCppReferenceTest(unittest.TestCase):
    build = None  # set by main()
    family = None

    @classmethod
    def setUpClass(cls):
        cls.llama_cpp = clone_llama_cpp(cls.build)
        cls.fixture = cls.build / "llamacpp" / f"fixture-{cls.family}"
        started = time.monotonic()
        done = run([sys.executable, HERE / "make_fixture.py", "--family", cls.family,
                    "--gguf-py", cls.llama_cpp / "gguf-py", "--tokenizer", TOKENIZER,
                    "--out", cls.fixture])
        if done.returncode != 0:
            raise RuntimeError(f"make_fixture.py --family {cls.family} failed: {done.stderr}")
        cls.made = json.loads(done.stdout)
        print(f"{cls.family}: fixture made in {time.monotonic() - started:.1f} s")

    def test_greedy_ids_match_llama_cpp(self):
        family, floor = self.family, gap_floor(self.family)
        cases = prompts(self.made["vocab_size"])
        prompts_file = self.fixture / "prompts.json"
        prompts_file.write_text(json.dumps(cases))
        started = time.monotonic()
        done = run(["node", HERE / "llamacpp_greedy.mjs", self.fixture / "model.gguf",
                    prompts_file, NEW_TOKENS], cwd=HERE)
        self.assertEqual(done.returncode, 0, f"{family}: llama.cpp failed: {done.stderr}")
        golden = json.loads(done.stdout)
        print(f"{family}: llama.cpp's goldens in {time.monotonic() - started:.1f} s")
        self.assertEqual(len(golden), len(cases))
        # The fixture's own checks first: they hold whatever the engine does.
        for case in golden:
            n = len(case["prompt"])
            self.assertEqual(len(case["ids"]), NEW_TOKENS,
                             f"{family}: prompt of {n} tokens: llama.cpp stopped early")
            self.assertGreater(case["min_gap"], floor,
                               f"{family}: prompt of {n} tokens: llama.cpp's top-2 logits "
                               f"nearly tie (gap {case['min_gap']:.4g}, floor {floor:g}): "
                               "change the family's seed in make_fixture.py")
        generate = self.build / "tools" / "streamgen-generate"
        started = time.monotonic()
        for case in golden:
            n = len(case["prompt"])
            with self.subTest(family=family, prompt_tokens=n):
                done = run([generate, "--model", self.fixture / "hf",
                            "--prompt-token-ids", ",".join(map(str, case["prompt"])),
                            "--max-new-tokens", NEW_TOKENS, "--temperature", "0",
                            "--dtype", "float32", "--ignore-eos", "--json", "--threads", "1"])
                self.assertEqual(done.returncode, 0,
                                 f"{family}: prompt of {n} tokens: streamgen-generate failed "
                                 f"(llama.cpp's ids: {case['ids']}):\n{done.stderr}")
                ours = json.loads(done.stdout)["token_ids"]
                step = next((i for i, (a, b) in enumerate(zip(ours, case["ids"])) if a != b),
                            min(len(ours), len(case["ids"])))
                if ours != case["ids"]:
                    self.fail(f"{family}: prompt of {n} tokens: the ids differ from new "
                              f"token {step} on\n"
                              f"  llama.cpp:          {case['ids']}\n"
                              f"  streamgen-generate: {ours}")
                print(f"{family}: prompt of {n} tokens: {NEW_TOKENS} ids equal, "
                      f"smallest top-2 gap {case['min_gap']:.4f} (floor {floor:g})")
        print(f"{family}: streamgen-generate in {time.monotonic() - started:.1f} s")
        self.check_other_weight_dtypes(golden)

    def check_other_weight_dtypes(self, golden):
        """bfloat16 and int8 weights load and serve the family (the family's
        loader, its bfloat16 norms and activations, its int8 experts). Only
        that: these tiny random models' top-2 gaps (~1e-2) are within
        bfloat16's and int8's rounding, so their ids may differ from float32's
        from the first token (their accuracy is measured on real weights by
        bench/perplexity.sh)."""
        generate = self.build / "tools" / "streamgen-generate"
        case = max(golden, key=lambda c: len(c["prompt"]))  # the longest prompt
        for dtype, quantization in (("bfloat16", "none"), ("bfloat16", "int8")):
            with self.subTest(family=self.family, dtype=dtype, quantization=quantization):
                done = run([generate, "--model", self.fixture / "hf",
                            "--prompt-token-ids", ",".join(map(str, case["prompt"])),
                            "--max-new-tokens", 8, "--temperature", "0",
                            "--dtype", dtype, "--quantization", quantization,
                            "--ignore-eos", "--json", "--threads", "1"])
                self.assertEqual(done.returncode, 0, done.stderr)
                out = json.loads(done.stdout)
                self.assertEqual(out["dtype"], dtype)
                self.assertEqual(out["quantization"], quantization)
                ids = out["token_ids"]
                self.assertEqual(len(ids), 8)
                self.assertTrue(all(0 <= i < self.made["vocab_size"] for i in ids), ids)


class ScriptMessagesTest(unittest.TestCase):
    """The scripts' messages for bad input (run once, with the llama family)."""
    build = None  # set by main()

    def test_make_fixture_names_a_bad_gguf_py(self):
        done = run([sys.executable, HERE / "make_fixture.py", "--gguf-py", HERE,
                    "--tokenizer", TOKENIZER, "--out", self.build / "llamacpp" / "unused"])
        self.assertNotEqual(done.returncode, 0)
        self.assertIn(f"--gguf-py: {HERE} holds no gguf package (gguf/__init__.py)", done.stderr)

    def test_make_fixture_names_a_missing_tokenizer(self):
        missing = HERE / "no-such-tokenizer.model"
        done = run([sys.executable, HERE / "make_fixture.py", "--gguf-py",
                    clone_llama_cpp(self.build) / "gguf-py", "--tokenizer", missing,
                    "--out", self.build / "llamacpp" / "unused"])
        self.assertNotEqual(done.returncode, 0)
        self.assertIn(f"--tokenizer: {missing} is not a file", done.stderr)

    def test_make_fixture_names_an_unknown_family(self):
        done = run([sys.executable, HERE / "make_fixture.py", "--family", "gpt2",
                    "--gguf-py", HERE, "--tokenizer", TOKENIZER,
                    "--out", self.build / "llamacpp" / "unused"])
        self.assertNotEqual(done.returncode, 0)
        self.assertIn("--family: unknown family 'gpt2' (known: llama, llama3, llama-linear, "
                      "qwen2, qwen2-yarn, qwen3, qwen3moe, mixtral, gemma3, phi3)", done.stderr)

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
    parser.add_argument("--family", default="llama",
                        help=f"one of {', '.join(make_fixture.FAMILIES)} (default llama)")
    args = parser.parse_args()
    if args.family not in make_fixture.FAMILIES:
        sys.exit(f"llamacpp_reference_test.py: --family: unknown family '{args.family}' "
                 f"(known: {', '.join(make_fixture.FAMILIES)})")
    build = args.build_dir.resolve()
    LlamaCppReferenceTest.build, LlamaCppReferenceTest.family = build, args.family
    ScriptMessagesTest.build = build
    loader = unittest.TestLoader()
    suite = unittest.TestSuite([loader.loadTestsFromTestCase(LlamaCppReferenceTest)])
    if args.family == "llama":
        suite.addTest(loader.loadTestsFromTestCase(ScriptMessagesTest))
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    sys.exit(0 if result.wasSuccessful() else 1)


if __name__ == "__main__":
    main()
