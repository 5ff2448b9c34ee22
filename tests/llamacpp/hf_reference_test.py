#!/usr/bin/python3
"""The checks llama.cpp cannot make: streamgen-generate against hf_reference.py.

  hf_reference_test.py --build-dir BUILD [unittest args]

llama.cpp is the golden where it shares transformers' semantics
(llamacpp_reference_test.py). Where it does not (its converter drops Mistral's
and Mixtral's sliding_window and turns Phi-3's off; it has no Qwen2/Qwen3
use_sliding_window with max_window_layers; it assumes every sixth Gemma 3 layer
global and scales attention by 1/sqrt(head_dim) whatever query_pre_attn_scalar
says; its qwen3moe has experts in every layer and always renormalizes the top-k
weights; it picks Phi-3's long or short factors once, from the context size),
the golden is hf_reference.py: a numpy float64 reading of transformers'
modeling files.

  ReferenceAgreesWithLlamaCppTest  the reference itself against llama.cpp on
      every make_fixture.py family (ids, and top-2 gaps: the logits agree).
  HfReferenceTest  each case takes a family's fixture, rewrites its
      config.json (VARIANTS; a dense Qwen3-MoE layer also rewrites weights),
      and checks that the rewrite moves the reference's ids on a compared
      prompt (else the case could not fail), that every compared step's top-2
      gap clears GAP_FLOOR (no tie decides it), that the runs are not one id
      repeated, and that streamgen-generate (float32, greedy, --ignore-eos)
      gives the reference's ids.
  RopeSpellingTest  transformers v5's rope_parameters means what v4's keys
      meant, in the reference and in the engine.
  SoftcapLogprobTest  Gemma 3's final soft-capping, which keeps the argmax, on
      streamgen-server's logprobs.
  HfReferenceErrorsTest  the reference's safetensors reader and error messages.

Needs tests/llamacpp/node_modules (the llamacpp_npm_install fixture: llama.cpp,
and its source bundle's gguf-py for make_fixture.py).
"""

import argparse
import json
import pathlib
import shutil
import subprocess
import sys
import unittest

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
SOURCE = HERE.parent.parent
BUNDLE = HERE / "node_modules" / "node-llama-cpp" / "llama" / "gitRelease.bundle"
TOKENIZER = SOURCE / "models" / "demo-brown" / "tokenizer.model"
REFERENCE = HERE / "hf_reference.py"
NEW_TOKENS = 40
# The smallest top-2 logit gap a compared step may have: far above float32's
# rounding in these logits, so float32 and float64 pick the same argmax.
GAP_FLOOR = 5e-3
# Of the candidate prompts, how many must clear GAP_FLOOR, and how many of
# those are compared (one streamgen-generate run each, ~0.5 s of CPU for start-up).
MIN_PROMPTS = 4
MAX_PROMPTS = 4

# A VARIANTS key (not written to config.json): rewrite the weights so that
# layer 0 has a dense MLP instead of experts.
DENSE_LAYER0 = "__dense_layer0"

# name -> (make_fixture.py family, config.json changes, why llama.cpp cannot check it).
# Windows are shorter than the shortest prompt + NEW_TOKENS, so they bite.
VARIANTS = {
    "mistral_window": (
        "llama", {"architectures": ["MistralForCausalLM"], "model_type": "mistral",
                  "sliding_window": 12},
        "llama.cpp's converter maps Mistral to its llama architecture and drops sliding_window"),
    "mixtral_window": (
        "mixtral", {"sliding_window": 12},
        "llama.cpp's converter maps Mixtral to its llama architecture and drops sliding_window"),
    "qwen2_window_layers": (
        "qwen2", {"use_sliding_window": True, "sliding_window": 10, "max_window_layers": 1},
        "llama.cpp's qwen2 has no sliding window (use_sliding_window, max_window_layers)"),
    "qwen3_window_layers": (
        "qwen3", {"use_sliding_window": True, "sliding_window": 10, "max_window_layers": 1},
        "llama.cpp's qwen3 has no sliding window (use_sliding_window, max_window_layers)"),
    "phi3_window": (
        "phi3", {"sliding_window": 12},
        "llama.cpp turns Phi-3's sliding window off"),
    "gemma3_layer_types": (
        "gemma3", {"sliding_window": 10, "sliding_window_pattern": None,
                   "layer_types": "alternate:full_attention,sliding_attention"},
        "llama.cpp assumes every sixth Gemma 3 layer global"),
    "gemma3_query_pre_attn_scalar": (
        "gemma3", {"query_pre_attn_scalar": "head_dim*0.25"},
        "llama.cpp scales Gemma 3's attention by 1/sqrt(head_dim) (but for the 27B)"),
    "qwen3moe_no_norm_topk_prob": (
        "qwen3moe", {"norm_topk_prob": False},
        "llama.cpp's qwen3moe always renormalizes the top-k weights"),
    # Layer 0 dense (its experts replaced by an MLP of intermediate_size: DENSE_LAYER0).
    "qwen3moe_mlp_only_layers": (
        "qwen3moe", {"mlp_only_layers": [0], DENSE_LAYER0: True},
        "llama.cpp's qwen3moe has experts in every layer"),
    "qwen3moe_decoder_sparse_step": (
        "qwen3moe", {"decoder_sparse_step": 2, DENSE_LAYER0: True},
        "llama.cpp's qwen3moe has experts in every layer"),
    # transformers' Phi3RotaryEmbedding picks long factors per forward call
    # (longrope_frequency_update: max(position_ids) + 1 > original): short for
    # a short prompt's prefill, long once the sequence outgrows 24, and the
    # cached keys keep the rotation they got. llama.cpp picks once, from the
    # context size.
    "phi3_longrope_switch": (
        "phi3", {"original_max_position_embeddings": 24, "max_position_embeddings": 128},
        "llama.cpp chooses long or short factors from the context size, not per step"),
}


def run(args, **kwargs):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True,
                          timeout=300, **kwargs)


def prompts(vocab_size):
    """Candidate token-id prompts of different lengths, all starting with BOS (1)."""
    rng = np.random.default_rng(5)
    return [[1] + [int(i) for i in rng.integers(3, vocab_size, n - 1)]
            for n in (1, 5, 20, 61, 2, 9, 33, 47)]


def llama_cpp_source(build):
    """BUILD/llamacpp/llama.cpp, cloned from node-llama-cpp's bundle once (its gguf-py)."""
    source = build / "llamacpp" / "llama.cpp"
    if not (source / "gguf-py" / "gguf").is_dir():
        if not BUNDLE.is_file():
            raise unittest.SkipTest(f"{BUNDLE} is missing: run the llamacpp_npm_install test")
        source.parent.mkdir(parents=True, exist_ok=True)
        done = run(["git", "clone", "--quiet", BUNDLE, source])
        if done.returncode != 0:
            raise RuntimeError(f"git clone {BUNDLE}: {done.stderr}")
    return source


_MADE = {}


def make_family_fixture(build, family):
    """make_fixture.py --family FAMILY into BUILD/llamacpp/hf-ref/FAMILY (once per
    process); the HF folder."""
    if family in _MADE:
        return _MADE[family]
    out = build / "llamacpp" / "hf-ref" / family
    done = run([sys.executable, HERE / "make_fixture.py", "--family", family,
                "--gguf-py", llama_cpp_source(build) / "gguf-py", "--tokenizer", TOKENIZER,
                "--out", out])  # the family's own seed
    if done.returncode != 0:
        raise AssertionError(f"make_fixture.py --family {family} failed: {done.stderr}")
    _MADE[family] = out / "hf"
    return out / "hf"


def resolve(value, config):
    """A VARIANTS value: 'head_dim*K' and 'alternate:A,B' are computed from the config."""
    if isinstance(value, str) and value.startswith("head_dim*"):
        head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
        return int(head_dim * float(value[len("head_dim*"):]))
    if isinstance(value, str) and value.startswith("alternate:"):
        kinds = value[len("alternate:"):].split(",")
        return [kinds[i % len(kinds)] for i in range(config["num_hidden_layers"])]
    return value


def to_bfloat16_bytes(array):
    """Round-to-nearest-even float32 -> bfloat16, as torch's .to(torch.bfloat16)."""
    bits = np.ascontiguousarray(array, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2").tobytes()


def dense_layer0(hf_dir, out, config):
    """model.safetensors of hf_dir with layer 0's router and experts replaced
    by a dense MLP of intermediate_size (fixed seed, the fixture's dtype)."""
    sys.path.insert(0, str(HERE))
    from hf_reference import read_safetensors
    tensors = read_safetensors(hf_dir / "model.safetensors")
    tensors = {k: v for k, v in tensors.items()
               if not k.startswith(("model.layers.0.mlp.gate.", "model.layers.0.mlp.experts."))}
    rng = np.random.default_rng(7)
    h, ff = config["hidden_size"], config["intermediate_size"]
    for name, rows, cols in (("gate_proj", ff, h), ("up_proj", ff, h), ("down_proj", h, ff)):
        tensors[f"model.layers.0.mlp.{name}.weight"] = rng.standard_normal((rows, cols)) / np.sqrt(cols)
    bf16 = config.get("torch_dtype") == "bfloat16"
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        data = (to_bfloat16_bytes(tensors[name]) if bf16
                else np.ascontiguousarray(tensors[name], dtype="<f4").tobytes())
        header[name] = {"dtype": "BF16" if bf16 else "F32", "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(out / "model.safetensors", "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text + b"".join(blobs))


def write_variant(hf_dir, out, changes):
    """A copy of hf_dir (weights and tokenizer linked) with config.json changed;
    a None value deletes the key."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    config = json.loads((hf_dir / "config.json").read_text())
    changes = dict(changes)
    dense = changes.pop(DENSE_LAYER0, False)
    for item in hf_dir.iterdir():
        if item.name != "config.json" and not (dense and item.name == "model.safetensors"):
            (out / item.name).symlink_to(item.resolve())
    if dense:
        dense_layer0(hf_dir, out, config)
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = resolve(value, config)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return config


def assert_diverse(test, name, cases):
    """Greedy runs that repeat the prompt's last id (a tied-embedding model whose
    residual stream is its input embedding does) depend on little else: at
    least one compared run must hold a quarter of its ids distinct."""
    most = max(len(set(c["ids"])) for c in cases)
    test.assertGreaterEqual(most, NEW_TOKENS // 4,
                            f"{name}: the fixture's greedy runs repeat a few ids (at most "
                            f"{most} distinct of {NEW_TOKENS}), so they show little of the "
                            "model: make_fixture.py should shape this family's weights so "
                            "that its output is not its input")


def reference(model_dir, cases, work):
    """hf_reference.py's [{prompt, ids, min_gap}] for `cases`."""
    prompts_file = work / "prompts.json"
    prompts_file.write_text(json.dumps(cases))
    done = run([sys.executable, REFERENCE, "--model", model_dir, "--prompts", prompts_file,
                "--new-tokens", NEW_TOKENS])
    if done.returncode != 0:
        raise AssertionError(f"hf_reference.py --model {model_dir} failed: {done.stderr}")
    return json.loads(done.stdout)


def generate(build, model_dir, prompt, count):
    """streamgen-generate's greedy float32 ids (EOS ignored)."""
    done = run([build / "tools" / "streamgen-generate", "--model", model_dir,
                "--prompt-token-ids", ",".join(map(str, prompt)), "--max-new-tokens", count,
                "--temperature", "0", "--dtype", "float32", "--ignore-eos", "--json",
                "--threads", "1"])
    if done.returncode != 0:
        raise AssertionError(f"streamgen-generate --model {model_dir}: {done.stderr}")
    return json.loads(done.stdout)["token_ids"]


class HfReferenceTest(unittest.TestCase):
    build = None  # set by main()

    def check_variant(self, name):
        family, changes, why = VARIANTS[name]
        base = make_family_fixture(self.build, family)
        work = self.build / "llamacpp" / "hf-ref" / "variants" / name
        config = write_variant(base, work / "hf", changes)
        cases = prompts(config["vocab_size"])
        golden = reference(work / "hf", cases, work)
        unchanged = {tuple(c["prompt"]): c["ids"] for c in reference(base, cases, work)}
        # Prompts whose greedy run has a near-tie somewhere are left out: there
        # float32 and float64 may pick different ids by chance.
        clear = [c for c in golden if c["min_gap"] > GAP_FLOOR]
        self.assertGreaterEqual(len(clear), MIN_PROMPTS,
                                f"{name}: only {len(clear)} of {len(golden)} prompts have every "
                                f"top-2 gap above {GAP_FLOOR}: add candidate prompts")
        # The compared prompts must include some whose ids the change moves,
        # else an engine that ignored it would pass.
        clear = sorted(clear, key=lambda c: c["ids"] == unchanged[tuple(c["prompt"])])
        moved = sum(c["ids"] != unchanged[tuple(c["prompt"])] for c in clear[:MAX_PROMPTS])
        self.assertGreater(moved, 0, f"{name}: the config change {changes} does not change "
                           "the reference's ids on any compared prompt, so this case could "
                           "not fail")
        assert_diverse(self, name, clear[:MAX_PROMPTS])
        for case in clear[:MAX_PROMPTS]:
            with self.subTest(variant=name, prompt_tokens=len(case["prompt"])):
                self.assertEqual(generate(self.build, work / "hf", case["prompt"], NEW_TOKENS),
                                 case["ids"], f"{name} ({why})")
        print(f"{name}: {min(len(clear), MAX_PROMPTS)} prompts of {len(golden)} "
              f"({NEW_TOKENS} ids each) equal, {moved} of them moved by the change, "
              f"smallest top-2 gap {min(c['min_gap'] for c in clear[:MAX_PROMPTS]):.4f}")

    def test_mistral_window(self):
        self.check_variant("mistral_window")

    def test_mixtral_window(self):
        self.check_variant("mixtral_window")

    def test_qwen2_window_layers(self):
        self.check_variant("qwen2_window_layers")

    def test_qwen3_window_layers(self):
        self.check_variant("qwen3_window_layers")

    def test_phi3_window(self):
        self.check_variant("phi3_window")

    def test_gemma3_layer_types(self):
        self.check_variant("gemma3_layer_types")

    def test_gemma3_query_pre_attn_scalar(self):
        self.check_variant("gemma3_query_pre_attn_scalar")

    def test_qwen3moe_no_norm_topk_prob(self):
        self.check_variant("qwen3moe_no_norm_topk_prob")

    def test_qwen3moe_mlp_only_layers(self):
        self.check_variant("qwen3moe_mlp_only_layers")

    def test_qwen3moe_decoder_sparse_step(self):
        self.check_variant("qwen3moe_decoder_sparse_step")

    def test_phi3_longrope_switch(self):
        self.check_variant("phi3_longrope_switch")


def v5_rope_spelling(config):
    """config.json's RoPE keys as transformers v5 writes them: one
    rope_parameters dict (rope_type, rope_theta, partial_rotary_factor and the
    scaling keys), or one per layer type for Gemma 3, in place of rope_theta,
    rope_scaling and rope_local_base_freq (Phi-3's original_max_position_embeddings
    is kept at the top level as well, where its checkpoints have it)."""
    config = dict(config)
    scaling = dict(config.pop("rope_scaling", None) or {"rope_type": "default"})
    if "type" in scaling:
        scaling.setdefault("rope_type", scaling.pop("type"))
    scaling["rope_theta"] = config.pop("rope_theta")
    if "partial_rotary_factor" in config:
        scaling["partial_rotary_factor"] = config.pop("partial_rotary_factor")
    if "original_max_position_embeddings" in config:
        scaling["original_max_position_embeddings"] = config["original_max_position_embeddings"]
    if config["architectures"] == ["Gemma3ForCausalLM"]:
        local = {"rope_type": "default", "rope_theta": config.pop("rope_local_base_freq")}
        config["rope_parameters"] = {"full_attention": scaling, "sliding_attention": local}
    else:
        config["rope_parameters"] = scaling
    return config


class RopeSpellingTest(unittest.TestCase):
    """transformers v5's rope_parameters spelling means what v4's rope_theta +
    rope_scaling (+ rope_local_base_freq) meant: the reference gives the same
    ids for both, and so must the engine. Each fixture's RoPE settings matter:
    without them (default RoPE, theta 10000) the reference's ids change."""
    build = None
    FAMILIES = ("llama3", "qwen2-yarn", "phi3", "gemma3")

    def test_v5_rope_parameters(self):
        for family in self.FAMILIES:
            with self.subTest(family=family):
                base = make_family_fixture(self.build, family)
                work = self.build / "llamacpp" / "hf-ref" / "variants" / f"{family}-v5-rope"
                config = json.loads((base / "config.json").read_text())
                v5 = v5_rope_spelling(config)
                write_variant(base, work / "hf", {k: v5.get(k) for k in set(config) | set(v5)})
                plain = {"rope_scaling": None, "rope_theta": 10000.0, "rope_parameters": None,
                         "rope_local_base_freq": 10000.0, "partial_rotary_factor": None}
                write_variant(base, work / "plain", plain)
                cases = prompts(config["vocab_size"])
                old, new = reference(base, cases, work), reference(work / "hf", cases, work)
                self.assertEqual([c["ids"] for c in new], [c["ids"] for c in old])
                plain_ids = {tuple(c["prompt"]): c["ids"]
                             for c in reference(work / "plain", cases, work)}
                # Compared: prompts clear of near-ties, those that plain RoPE
                # would get wrong first (an engine ignoring rope_parameters fails).
                clear = sorted([c for c in new if c["min_gap"] > GAP_FLOOR],
                               key=lambda c: c["ids"] == plain_ids[tuple(c["prompt"])])
                clear = clear[:MAX_PROMPTS]
                self.assertGreaterEqual(len(clear), MIN_PROMPTS)
                self.assertTrue(any(c["ids"] != plain_ids[tuple(c["prompt"])] for c in clear),
                                f"{family}: its RoPE settings do not change the ids")
                assert_diverse(self, family, clear)
                for case in clear:
                    self.assertEqual(generate(self.build, work / "hf", case["prompt"],
                                              NEW_TOKENS), case["ids"],
                                     f"{family} with rope_parameters, prompt of "
                                     f"{len(case['prompt'])} tokens")


class ReferenceAgreesWithLlamaCppTest(unittest.TestCase):
    """The reference itself, checked where llama.cpp can check it: on every
    make_fixture.py family (as llama.cpp reads it: the fixtures are shaped so
    that both agree), the same greedy ids as llama.cpp's, and top-2 gaps
    within GAP_AGREEMENT: the logits agree, not only their argmax."""
    build = None
    # float32 against float64; Gemma 3's GELU goes through llama.cpp's float16 table.
    GAP_AGREEMENT = {"gemma3": 5e-3}
    GAP_AGREEMENT_DEFAULT = 2e-4

    def test_every_family(self):
        sys.path.insert(0, str(HERE))
        import make_fixture
        self.assertTrue(hasattr(make_fixture, "FAMILIES"), "make_fixture.py has no FAMILIES")
        for family in make_fixture.FAMILIES:
            with self.subTest(family=family):
                hf = make_family_fixture(self.build, family)
                work = hf.parent
                cases = prompts(json.loads((hf / "config.json").read_text())["vocab_size"])
                ours = reference(hf, cases, work)
                done = run(["node", HERE / "llamacpp_greedy.mjs", work / "model.gguf",
                            work / "prompts.json", NEW_TOKENS], cwd=HERE)
                self.assertEqual(done.returncode, 0, done.stderr)
                theirs = json.loads(done.stdout)
                tolerance = self.GAP_AGREEMENT.get(family, self.GAP_AGREEMENT_DEFAULT)
                compared = 0
                for a, b in zip(ours, theirs):
                    if min(a["min_gap"], b["min_gap"]) <= tolerance:
                        continue  # a near-tie: either pick is right
                    compared += 1
                    self.assertEqual(a["ids"], b["ids"], f"{family}, prompt of "
                                     f"{len(a['prompt'])} tokens")
                    self.assertAlmostEqual(a["min_gap"], b["min_gap"], delta=tolerance)
                self.assertGreaterEqual(compared, MIN_PROMPTS, f"{family}: only {compared} "
                                        "prompts free of near-ties")
                print(f"{family}: hf_reference.py == llama.cpp on {compared} of {len(cases)} "
                      "prompts")


class SoftcapLogprobTest(unittest.TestCase):
    """Gemma 3's final_logit_softcapping, tanh(logits / cap) * cap, keeps the
    argmax, so greedy ids cannot see it: the engine's logprobs (the
    log-softmax of its final logits, through streamgen-server) must equal the
    reference's, and differ from those without the cap."""
    build = None
    TOLERANCE = 1e-3  # float32 against float64, on log-probabilities of order 1
    STEPS = 16

    def test_gemma3_final_logit_softcapping_logprobs(self):
        sys.path.insert(0, str(HERE))
        sys.path.insert(0, str(SOURCE / "tests"))
        sys.path.insert(0, str(self.build / "python"))
        import grpc
        import hf_reference
        from streamgen.v1 import generate_pb2, generate_pb2_grpc
        from streamgen_server import StreamgenServer, http_healthy

        hf = make_family_fixture(self.build, "gemma3")
        capped, uncapped = hf_reference.Model(hf), hf_reference.Model(hf)
        self.assertTrue(capped.final_softcap, "the gemma3 fixture has no final_logit_softcapping")
        uncapped.final_softcap = None
        server = StreamgenServer(str(self.build), ["--model", str(hf), "--dtype", "float32",
                                                   "--threads", "1"], healthy=http_healthy)
        self.addCleanup(server.stop)
        channel = grpc.insecure_channel(server.grpc_address)
        self.addCleanup(channel.close)
        stub = generate_pb2_grpc.TextGenerationStub(channel)
        compared = 0
        for prompt in prompts(capped.c["vocab_size"]):
            if compared == MIN_PROMPTS:
                break
            want, plain = [], []
            ids, gap = hf_reference.greedy(capped, prompt, self.STEPS, logprobs=want)
            if gap <= GAP_FLOOR:
                continue  # a near-tie: float32 may pick the other id
            compared += 1
            hf_reference.greedy(uncapped, prompt, self.STEPS, logprobs=plain)
            with self.subTest(prompt_tokens=len(prompt)):
                self.assertGreater(max(abs(a - b) for a, b in zip(want, plain)),
                                   20 * self.TOLERANCE, "the cap does not move the logprobs")
                request = generate_pb2.GenerateRequest(
                    prompt_token_ids=prompt, max_new_tokens=self.STEPS, temperature=0,
                    ignore_eos=True, top_logprobs=1)
                tokens = [t for m in stub.Generate(request, timeout=120) for t in m.tokens]
                self.assertEqual([t.id for t in tokens], ids)
                for step, (token, logprob) in enumerate(zip(tokens, want)):
                    self.assertAlmostEqual(token.logprob, logprob, delta=self.TOLERANCE,
                                           msg=f"step {step}")
        self.assertGreaterEqual(compared, MIN_PROMPTS)


class HfReferenceErrorsTest(unittest.TestCase):
    """hf_reference.py reads F32, F16 and BF16 exactly, and names what is wrong
    with its input."""
    build = None

    def reference_fails(self, model, prompts_text, count=4):
        work = self.build / "llamacpp" / "hf-ref" / "errors"
        work.mkdir(parents=True, exist_ok=True)
        prompts_file = work / "prompts.json"
        prompts_file.write_text(prompts_text)
        done = run([sys.executable, REFERENCE, "--model", model, "--prompts", prompts_file,
                    "--new-tokens", count])
        self.assertNotEqual(done.returncode, 0)
        return done.stderr, prompts_file

    def model_with(self, config, tensors=None):
        """A folder with `config` and one F32 safetensors file of `tensors`."""
        out = self.build / "llamacpp" / "hf-ref" / "errors" / "model"
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        (out / "config.json").write_text(json.dumps(config))
        header, blob = {}, b""
        for name, (dtype, shape, data) in (tensors or {}).items():
            header[name] = {"dtype": dtype, "shape": shape,
                            "data_offsets": [len(blob), len(blob) + len(data)]}
            blob += data
        text = json.dumps(header).encode()
        (out / "model.safetensors").write_bytes(len(text).to_bytes(8, "little") + text + blob)
        return out

    def test_reads_f32_f16_bf16(self):
        sys.path.insert(0, str(HERE))
        from hf_reference import read_safetensors
        values = np.array([1.5, -2.25, 0.1, 3e-3], dtype=np.float32)
        bf16_bits = to_bfloat16_bytes(values)
        model = self.model_with({}, {
            "f32": ("F32", [2, 2], values.astype("<f4").tobytes()),
            "f16": ("F16", [4], values.astype("<f2").tobytes()),
            "bf16": ("BF16", [4], bf16_bits)})
        tensors = read_safetensors(model / "model.safetensors")
        self.assertEqual(tensors["f32"].tolist(), values.astype(np.float64).reshape(2, 2).tolist())
        self.assertEqual(tensors["f16"].tolist(), values.astype(np.float16).astype(np.float64).tolist())
        # bfloat16: the upper 16 bits of the float32, rounded to nearest even.
        expected = (np.frombuffer(bf16_bits, "<u2").astype(np.uint32) << 16).view(np.float32)
        self.assertEqual(tensors["bf16"].tolist(), expected.astype(np.float64).tolist())
        self.assertEqual(tensors["bf16"][:2].tolist(), [1.5, -2.25])
        self.assertNotEqual(tensors["bf16"][2], float(values[2]))  # 0.1 is not a bfloat16

    def test_missing_config(self):
        missing = self.build / "llamacpp" / "hf-ref" / "no-such-model"
        stderr, _ = self.reference_fails(missing, "[[1]]")
        self.assertIn(f"hf_reference.py: {missing / 'config.json'}: no such file", stderr)

    def test_unsupported_architecture(self):
        model = self.model_with({"architectures": ["GPT2LMHeadModel"]})
        stderr, _ = self.reference_fails(model, "[[1]]")
        self.assertIn("architectures ['GPT2LMHeadModel'] is not one of LlamaForCausalLM, "
                      "MistralForCausalLM", stderr)

    def test_bad_prompts(self):
        model = self.model_with({"architectures": ["LlamaForCausalLM"]})
        stderr, path = self.reference_fails(model, '[[1, "a"]]')
        self.assertIn(f"hf_reference.py: --prompts: {path} must hold a list of non-empty "
                      "lists of token ids", stderr)

    def test_bad_new_tokens(self):
        stderr, _ = self.reference_fails(self.build, "[[1]]", count=0)
        self.assertIn("hf_reference.py: --new-tokens must be at least 1, got 0", stderr)

    def test_unsupported_dtype_and_missing_tensor(self):
        config = {"architectures": ["LlamaForCausalLM"], "hidden_size": 4,
                  "num_hidden_layers": 1, "num_attention_heads": 1,
                  "max_position_embeddings": 16}
        model = self.model_with(config, {"model.embed_tokens.weight": ("I8", [2, 4], b"\0" * 8)})
        stderr, _ = self.reference_fails(model, "[[1]]")
        self.assertIn("tensor 'model.embed_tokens.weight' has dtype I8; hf_reference.py reads "
                      "F32, F16 and BF16", stderr)
        model = self.model_with(dict(config, tie_word_embeddings=True), {
            "model.embed_tokens.weight": ("F32", [2, 4], b"\0" * 32)})
        stderr, _ = self.reference_fails(model, "[[1]]")
        self.assertIn("hf_reference.py: the checkpoint has no tensor "
                      "'model.layers.0.input_layernorm.weight'", stderr)
        stderr, _ = self.reference_fails(model, "[[1, 2]]")
        self.assertIn("hf_reference.py: --prompts: token id 2 is outside the vocabulary (0..1)",
                      stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build-dir", required=True, type=pathlib.Path)
    args, rest = parser.parse_known_args()
    HfReferenceTest.build = HfReferenceErrorsTest.build = args.build_dir.resolve()
    SoftcapLogprobTest.build = ReferenceAgreesWithLlamaCppTest.build = HfReferenceTest.build
    RopeSpellingTest.build = HfReferenceTest.build
    unittest.main(argv=[sys.argv[0], "-v"] + rest)


if __name__ == "__main__":
    main()
