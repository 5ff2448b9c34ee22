#!/usr/bin/python3
"""Engine-level exactness per family kind, through a real streamgen-server.

  family_batch_resume_test.py --build-dir BUILD [unittest args]

For one dense family (Qwen3), one mixture of experts (Qwen3-MoE) and one
sliding-window family (Mistral with a window shorter than prompt + output),
each a make_fixture.py fixture served in float32 with greedy decoding:

  (a) batching: each of 16 prompts of different lengths, sent alone, gives the
      same ids as when the 16 are sent at once (released together by a
      barrier, so the engine decodes them in shared steps);
  (b) resumes: a request with resume_token_ids = the first k ids of a greedy
      run continues with exactly the remaining ids, for every k in 0..N-1.

Needs tests/llamacpp/node_modules (the llamacpp_npm_install fixture: the
llama.cpp source bundle's gguf-py writes the fixtures' GGUF half).
"""

import argparse
import os
import pathlib
import sys
import threading
import time
import unittest

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from hf_reference_test import make_family_fixture, write_variant  # noqa: E402
from streamgen_server import StreamgenServer, http_healthy  # noqa: E402

NEW_TOKENS = 32
BATCH = 16
# name -> (make_fixture.py family, config.json changes)
CASES = {
    "dense_qwen3": ("qwen3", {}),
    "moe_qwen3moe": ("qwen3moe", {}),
    "window_mistral": ("llama", {"architectures": ["MistralForCausalLM"],
                                 "model_type": "mistral", "sliding_window": 12}),
}


def batch_prompts(vocab_size):
    """BATCH prompts of 1 to 70 tokens, all starting with BOS (1)."""
    rng = np.random.default_rng(11)
    lengths = [1] + [int(n) for n in rng.integers(2, 70, BATCH - 1)]
    return [[1] + [int(i) for i in rng.integers(3, vocab_size, n - 1)] for n in lengths]


class FamilyBatchResumeTest(unittest.TestCase):
    build = None  # set by main()

    @classmethod
    def setUpClass(cls):
        sys.path.insert(0, str(cls.build / "python"))
        global grpc, generate_pb2, generate_pb2_grpc
        import grpc
        from streamgen.v1 import generate_pb2, generate_pb2_grpc

    def serve(self, name):
        family, changes = CASES[name]
        base = make_family_fixture(self.build, family)
        model = self.build / "llamacpp" / "batch-resume" / name / "hf"
        config = write_variant(base, model, changes)
        server = StreamgenServer(str(self.build), ["--model", str(model), "--dtype", "float32",
                                                   "--threads", "1", "--max-batch", str(BATCH)],
                                 healthy=http_healthy)
        self.addCleanup(server.stop)
        channel = grpc.insecure_channel(server.grpc_address)
        self.addCleanup(channel.close)
        return generate_pb2_grpc.TextGenerationStub(channel), config

    def generate(self, stub, prompt, resume=(), times=None):
        """Greedy ids; `times` (a list) gets the arrival times of the first and
        the last message that carried ids."""
        request = generate_pb2.GenerateRequest(
            prompt_token_ids=prompt, max_new_tokens=NEW_TOKENS, temperature=0,
            ignore_eos=True, resume_token_ids=list(resume))
        ids, arrivals = [], []
        for message in stub.Generate(request, timeout=120):
            if message.tokens:
                arrivals.append(time.monotonic())
            ids += [t.id for t in message.tokens]
        if times is not None:
            times += [arrivals[0], arrivals[-1]]
        return ids

    def check(self, name):
        stub, config = self.serve(name)
        prompts = batch_prompts(config["vocab_size"])
        alone = [self.generate(stub, p) for p in prompts]
        for ids in alone:
            self.assertEqual(len(ids), NEW_TOKENS)

        together = [None] * BATCH
        spans = [[] for _ in range(BATCH)]
        errors = []
        barrier = threading.Barrier(BATCH)

        def one(i):
            try:
                barrier.wait()
                together[i] = self.generate(stub, prompts[i], times=spans[i])
            except Exception as error:  # reported below, with the prompt's index
                errors.append((i, error))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(BATCH)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        # Between its first and its last id a request is in the running batch,
        # which the engine's one loop decodes in shared steps: the most spans
        # open at one instant is how many requests were decoded together.
        shared = max(sum(1 for s in spans if s[0] <= start[0] <= s[1]) for start in spans)
        self.assertGreaterEqual(shared, BATCH // 2,
                                f"{name}: at most {shared} of the {BATCH} requests were "
                                "decoding at once; the batch was not exercised")
        for i in range(BATCH):
            self.assertEqual(together[i], alone[i],
                             f"{name}: prompt {i} ({len(prompts[i])} tokens) alone vs among "
                             f"{BATCH - 1} others")

        # The resumed run: the one with the most distinct ids (a run that
        # repeats one id would resume correctly from any wrong state).
        probe = max(range(BATCH), key=lambda i: (len(set(alone[i])), len(prompts[i])))
        full = alone[probe]
        self.assertGreaterEqual(len(set(full)), NEW_TOKENS // 4,
                                f"{name}: every greedy run repeats a few ids (at most "
                                f"{len(set(full))} distinct of {NEW_TOKENS}): the fixture "
                                "cannot show a wrong resume")
        for k in range(NEW_TOKENS):
            self.assertEqual(self.generate(stub, prompts[probe], resume=full[:k]), full[k:],
                             f"{name}: resumed after {k} of {NEW_TOKENS} ids")
        print(f"{name}: {BATCH} prompts alone == batched (up to {shared} decoding at once); resumes exact at k = 0..{NEW_TOKENS - 1} "
              f"(prompt of {len(prompts[probe])} tokens)")

    def test_dense_qwen3(self):
        self.check("dense_qwen3")

    def test_moe_qwen3moe(self):
        self.check("moe_qwen3moe")

    def test_window_mistral(self):
        self.check("window_mistral")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build-dir", required=True, type=pathlib.Path)
    args, rest = parser.parse_known_args()
    FamilyBatchResumeTest.build = args.build_dir.resolve()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    unittest.main(argv=[sys.argv[0], "-v"] + rest)


if __name__ == "__main__":
    main()
