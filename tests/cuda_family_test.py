#!/usr/bin/env python3
"""The CUDA path against the CPU, one tiny model per family (issue 20).

  tests/cuda_family_test.py --build-dir build [--family NAME]...

For each family of tests/llamacpp/make_fixture.py (llama, llama3, qwen2,
qwen3, qwen3moe, mixtral, gemma3, phi3: whatever its FAMILIES holds), makes
the family's tiny random-weight checkpoint (family_config, make_weights,
write_hf: the Hugging Face side, no gguf-py needed) and runs
streamgen-generate on it twice, --device cpu and --device cuda, both in
float32, greedy, from the same prompt token ids, 24 new tokens, EOS ignored.

Expected: identical token ids. Both runs are deterministic, and float32 on
the two devices differs by reduction order only (~1e-6 relative in the
logits; PyTorch leaves TF32 off for float32 matmuls by default), so a
differing id means a device-specific bug, except at an exact near-tie of the
two best logits. A random-weight tiny model can have such a tie; if a run
reports one, look at the step it names before suspecting the kernels (the
prompts are fixed, so a tie is reproducible, not flaky).

Skips (exit 77, ctest's SKIP_RETURN_CODE) when the engine sees no CUDA
device, detected as the engine itself detects it: `streamgen-generate
--device cuda` answering "CUDA is not available" (torch::cuda::is_available(),
as tests/cuda_test.cc's SKIP_WITHOUT_CUDA). On the project's CPU machines it
always skips; scripts/device-check.sh runs it on a lent GPU.
"""
import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import types

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
TOKENIZER = ROOT / "models" / "demo-brown" / "tokenizer.model"
NEW_TOKENS = 24
# Prompt token ids (the demo tokenizer's vocabulary of 4096; BOS first). The
# second is longer than gemma3's 16-position window, so windowed layers drop keys
# during prefill and decode.
PROMPTS = [
    [1, 415, 2936, 906, 285, 1142],
    [1] + [(37 * i + 11) % 4000 + 3 for i in range(27)],
]
SKIP = 77
# The demo tokenizer's pieces, BOS and EOS ids (models/demo-brown/tokenizer.model).
DEMO_VOCAB = (4096, 1, 2)


def generate(binary, model_dir, device, prompt):
    """streamgen-generate's JSON for one greedy float32 run, or the failed run."""
    cmd = [str(binary), "--model", str(model_dir), "--device", device, "--dtype", "float32",
           "--prompt-token-ids", ",".join(map(str, prompt)), "--max-new-tokens", str(NEW_TOKENS),
           "--temperature", "0", "--ignore-eos", "--threads", "2", "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        return None, done
    return json.loads(done.stdout), done


def cuda_missing(binary):
    """The engine's reason for having no CUDA device, or None when it has one."""
    out, done = generate(binary, ROOT / "models" / "demo-brown", "cuda", [1, 415])
    if out is not None:
        return None
    if "CUDA is not available" in done.stderr:
        return done.stderr.strip()
    sys.exit(f"cuda_family_test: streamgen-generate --device cuda failed on the demo model, "
             f"not for want of a GPU:\n{done.stderr}")


def reexec_with_numpy():
    """The GPU machine's /usr/bin/python3 may lack numpy where its PyTorch
    python has it: run this script again under STREAMGEN_PYTHON or the PATH's
    python3 when either has numpy (make_weights draws with numpy)."""
    try:
        import numpy  # noqa: F401
        return
    except ImportError:
        pass
    for p in (os.environ.get("STREAMGEN_PYTHON"), shutil.which("python3")):
        if p and os.path.realpath(p) != os.path.realpath(sys.executable) and subprocess.run(
                [p, "-c", "import numpy"], capture_output=True).returncode == 0:
            print(f"cuda_family_test: {sys.executable} has no numpy; running under {p}", flush=True)
            os.execv(p, [p, str(pathlib.Path(__file__).resolve())] + sys.argv[1:])
    sys.exit(f"cuda_family_test: no python with numpy ({sys.executable}, $STREAMGEN_PYTHON, "
             "python3): make_fixture.py draws the weights with it")


def load_fixture_maker():
    """tests/llamacpp/make_fixture.py as a module, with its family API."""
    sys.path.insert(0, str(HERE / "llamacpp"))
    try:
        import sentencepiece  # noqa: F401
    except ImportError:
        # make_fixture.py imports it for its GGUF half only; the Hugging Face
        # half (family_config, make_weights, write_hf) never calls it, and the
        # vocabulary's numbers are DEMO_VOCAB's. The GPU machine may not have it.
        sys.modules["sentencepiece"] = types.ModuleType("sentencepiece")
    import make_fixture  # exits with a message when numpy is missing
    for name in ("FAMILIES", "family_config", "make_weights", "write_hf"):
        if not hasattr(make_fixture, name):
            sys.exit(f"cuda_family_test: tests/llamacpp/make_fixture.py has no {name}: "
                     "this test needs its per-family models (make_fixture.py --family)")
    return make_fixture


def demo_vocab():
    """(pieces, bos, eos) of the demo tokenizer: read with sentencepiece where
    it is installed (and checked against DEMO_VOCAB), else DEMO_VOCAB."""
    try:
        from sentencepiece import SentencePieceProcessor
    except ImportError:
        return DEMO_VOCAB
    sp = SentencePieceProcessor()
    sp.LoadFromFile(str(TOKENIZER))
    got = (sp.vocab_size(), sp.bos_id(), sp.eos_id())
    if got != DEMO_VOCAB:
        sys.exit(f"cuda_family_test: {TOKENIZER} has (pieces, bos, eos) {got}, not {DEMO_VOCAB}: "
                 "update DEMO_VOCAB")
    return got


def make_model(mf, family, out_dir):
    config = mf.family_config(family, *demo_vocab())
    mf.write_hf(out_dir, config, mf.make_weights(config, 20), TOKENIZER)
    return config


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build-dir", required=True, type=pathlib.Path)
    parser.add_argument("--family", action="append", help="only these families (default: all)")
    args = parser.parse_args()
    binary = args.build_dir.resolve() / "tools" / "streamgen-generate"
    if not os.access(binary, os.X_OK):
        sys.exit(f"cuda_family_test: {binary} is not built (cmake --build --target streamgen-generate)")
    reason = cuda_missing(binary)
    if reason is not None:
        print(f"cuda_family_test: skipped: no CUDA device ({reason})")
        return SKIP
    reexec_with_numpy()
    mf = load_fixture_maker()
    families = args.family or list(mf.FAMILIES)
    unknown = [f for f in families if f not in mf.FAMILIES]
    if unknown:
        sys.exit(f"cuda_family_test: unknown families {unknown} (known: {', '.join(mf.FAMILIES)})")
    failures = []
    with tempfile.TemporaryDirectory(prefix="cuda_family_test.") as tmp:
        for family in families:
            model = pathlib.Path(tmp) / family
            config = make_model(mf, family, model)
            for n, prompt in enumerate(PROMPTS):
                runs = {}
                for device in ("cpu", "cuda"):
                    out, done = generate(binary, model, device, prompt)
                    if out is None:
                        failures.append(f"{family} prompt {n} on {device}: exit {done.returncode}: "
                                        f"{done.stderr.strip()[-2000:]}")
                        break
                    runs[device] = out["token_ids"]
                if len(runs) < 2:
                    continue
                cpu, cuda = runs["cpu"], runs["cuda"]
                if len(cpu) != NEW_TOKENS:
                    failures.append(f"{family} prompt {n}: the CPU gave {len(cpu)} tokens, "
                                    f"not {NEW_TOKENS}")
                if cpu != cuda:
                    step = next((i for i, (a, b) in enumerate(zip(cpu, cuda)) if a != b),
                                min(len(cpu), len(cuda)))
                    failures.append(f"{family} prompt {n}: CUDA differs from the CPU at new token "
                                    f"{step}:\n  cpu  {cpu}\n  cuda {cuda}")
                else:
                    print(f"{family} ({config['architectures'][0]}) prompt {n}: "
                          f"{NEW_TOKENS} identical ids")
    if failures:
        print("cuda_family_test: FAILED\n" + "\n".join(failures), file=sys.stderr)
        return 1
    print(f"cuda_family_test: {len(families)} families, CUDA and CPU agree (float32, greedy)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
