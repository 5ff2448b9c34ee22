#!/usr/bin/env python3
"""Writes the hand-made seeds of tests/fuzz/corpus/<target>/ (files named
seed-*). Inputs the fuzzer found are kept next to them as crash-* files and are
not touched here. Run from anywhere; the validation seeds need the generated
Python protobuf module (build/python, from the ordinary build) and Debian's
python3-protobuf:

    /usr/bin/python3 tests/fuzz/make_corpus.py [--build-dir build]

Each seed's layout is the one its target's header comment documents.
"""
import argparse
import json
import os
import re
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPUS = os.path.join(ROOT, "tests", "fuzz", "corpus")
SEP = b"\n=====\n"


def write(target, name, data):
    directory = os.path.join(CORPUS, target)
    os.makedirs(directory, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(directory, "seed-" + name), "wb") as f:
        f.write(data)


def clear_seeds(target):
    directory = os.path.join(CORPUS, target)
    if os.path.isdir(directory):
        for name in os.listdir(directory):
            if name.startswith("seed-"):
                os.remove(os.path.join(directory, name))


# ---- safetensors ----

def st_file(header, data=b"", raw_header=None, length=None):
    text = raw_header if raw_header is not None else json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    n = len(text) if length is None else length
    return struct.pack("<Q", n) + text + data


def safetensors():
    t = "safetensors_fuzz"
    clear_seeds(t)
    f32 = struct.pack("<4f", 1, 2, 3, 4)
    valid = st_file({"__metadata__": {"format": "pt"},
                     "a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
                     "b": {"dtype": "BF16", "shape": [2], "data_offsets": [16, 20]},
                     "c": {"dtype": "F16", "shape": [1], "data_offsets": [20, 22]}},
                    f32 + b"\x80\x3f\x00\x40" + b"\x00\x3c")
    for mode, label in ((0, "file"), (1, "dir")):
        write(t, f"{label}-valid", bytes([mode]) + valid)
    one = [
        ("empty-header", st_file({})),
        ("metadata-only", st_file({"__metadata__": {"format": "pt", "n": 3}})),
        ("metadata-not-object", st_file({"__metadata__": [1, 2]})),
        ("zero-size", st_file({"z": {"dtype": "F32", "shape": [0, 4], "data_offsets": [0, 0]}})),
        ("scalar", st_file({"s": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]}}, f32[:4])),
        # A dimension beyond int64 after a zero: the product stays 0.
        ("zero-then-huge-dim", st_file({"z": {"dtype": "F32", "shape": [0, 18446744073709551615],
                                              "data_offsets": [0, 0]}})),
        ("zero-then-int64-max", st_file({"z": {"dtype": "F32", "shape": [0, 9223372036854775808],
                                               "data_offsets": [0, 0]}})),
        ("product-overflow", st_file({"p": {"dtype": "F32", "shape": [4294967296, 4294967296, 16],
                                            "data_offsets": [0, 0]}})),
        ("truncated-7-bytes", b"\x10\x00\x00\x00\x00\x00\x00"),
        ("header-beyond-file", st_file({}, length=4096)),
        ("header-length-2-63", struct.pack("<Q", 1 << 63) + b"{}"),
        ("header-not-json", st_file(None, raw_header=b"{\"a\": ")),
        ("header-array", st_file(None, raw_header=b"[1, 2, 3]")),
        ("header-invalid-utf8", st_file(None, raw_header=b"{\"\xff\": 1}")),
        ("duplicate-name", st_file(None, raw_header=(
            b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},'
            b' "a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}'), data=f32[:8])),
        ("overlap", st_file({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                             "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, f32)),
        ("begin-after-end", st_file({"a": {"dtype": "F32", "shape": [0], "data_offsets": [8, 4]}}, f32)),
        ("end-beyond-data", st_file({"a": {"dtype": "F32", "shape": [8], "data_offsets": [0, 32]}}, f32)),
        ("size-mismatch", st_file({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}}, f32)),
        ("dtype-i8", st_file({"a": {"dtype": "I8", "shape": [4], "data_offsets": [0, 4]}}, f32)),
        ("dtype-number", st_file({"a": {"dtype": 4, "shape": [4], "data_offsets": [0, 16]}}, f32)),
        ("shape-negative", st_file({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, f32)),
        ("shape-float", st_file({"a": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}}, f32)),
        ("shape-nested", st_file(None, raw_header=b'{"a": {"dtype": "F32", "shape": '
                                 + b"[" * 300 + b"]" * 300 + b', "data_offsets": [0, 0]}}')),
        ("offsets-three", st_file({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4, 8]}}, f32)),
        ("offsets-negative", st_file({"a": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}}, f32)),
        ("entry-not-object", st_file({"a": [1, 2]})),
        ("name-with-nul", st_file({"a\u0000b": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, f32[:4])),
    ]
    for name, data in one:
        write(t, f"file-{name}", b"\x00" + data)

    def shard(names, offset_step=4):
        header = {n: {"dtype": "F32", "shape": [1], "data_offsets": [i * 4, i * 4 + 4]}
                  for i, n in enumerate(names)}
        return st_file(header, f32[:4 * len(names)])

    def index(weight_map):
        return json.dumps({"metadata": {"total_size": 8}, "weight_map": weight_map}).encode()

    dirs = [
        ("two-shards", [index({"x": "a.safetensors", "y": "b.safetensors", "z": "b.safetensors"}),
                        shard(["x"]), shard(["y", "z"])]),
        ("shard-missing", [index({"x": "a.safetensors", "y": "c.safetensors"}), shard(["x"])]),
        ("tensor-not-in-shard", [index({"x": "a.safetensors", "w": "a.safetensors"}), shard(["x"])]),
        ("shard-tensor-unlisted", [index({"x": "a.safetensors"}), shard(["x", "extra"])]),
        ("tensor-listed-elsewhere", [index({"x": "a.safetensors", "y": "a.safetensors"}),
                                     shard(["x"]), shard(["y"])]),
        ("tensor-in-two-shards", [index({"x": "a.safetensors", "y": "b.safetensors"}),
                                  shard(["x", "y"]), shard(["y"])]),
        ("weight-map-not-object", [b'{"weight_map": ["a.safetensors"]}', shard(["x"])]),
        ("weight-map-value-number", [b'{"weight_map": {"x": 3}}', shard(["x"])]),
        ("weight-map-empty-name", [b'{"weight_map": {"x": ""}}', shard(["x"])]),
        ("index-not-json", [b'{"weight_map": {', shard(["x"])]),
        ("index-array", [b"[]", shard(["x"])]),
        ("shard-path-traversal", [index({"x": "../a.safetensors"}), shard(["x"])]),
        ("shard-dot-path", [index({"x": "./a.safetensors"}), shard(["x"])]),
        ("shard-is-index", [index({"x": "model.safetensors.index.json"})]),
        ("no-weights", [b""]),
    ]
    for name, parts in dirs:
        write(t, f"index-{name}", b"\x02" + SEP.join(parts))


# ---- model_config ----

def model_config():
    t = "model_config_fuzz"
    clear_seeds(t)
    with open(os.path.join(ROOT, "models", "demo-brown", "config.json")) as f:
        demo = json.load(f)
    with open(os.path.join(ROOT, "models", "demo-brown", "tokenizer_config.json")) as f:
        demo_tok = f.read()
    gen = json.dumps({"bos_token_id": 1, "eos_token_id": [2, 7]})

    def cfg(**changes):
        c = dict(demo)
        for k, v in changes.items():
            if v is None and k.startswith("del_"):
                c.pop(k[4:], None)
            else:
                c[k] = v
        return json.dumps(c)

    seeds = [
        ("demo-brown", SEP.join([json.dumps(demo).encode(), gen.encode(), demo_tok.encode()])),
        ("config-only", cfg()),
        ("mistral-window", cfg(architectures=["MistralForCausalLM"], sliding_window=4096)),
        # The other families (docs/models.md), each with the keys it reads.
        ("llama3-rope", cfg(rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                          "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                          "original_max_position_embeddings": 64})),
        ("qwen2-window", cfg(architectures=["Qwen2ForCausalLM"], use_sliding_window=True,
                             sliding_window=16, max_window_layers=1)),
        ("qwen3-layer-types", cfg(architectures=["Qwen3ForCausalLM"], sliding_window=8,
                                  layer_types=["sliding_attention", "full_attention"])),
        ("qwen3moe", cfg(architectures=["Qwen3MoeForCausalLM"], num_experts=8,
                         num_experts_per_tok=2, moe_intermediate_size=32, norm_topk_prob=True,
                         decoder_sparse_step=1, mlp_only_layers=[0])),
        ("mixtral", cfg(architectures=["MixtralForCausalLM"], num_local_experts=4,
                        num_experts_per_tok=2)),
        ("gemma3", cfg(architectures=["Gemma3ForCausalLM"], query_pre_attn_scalar=64,
                       sliding_window=8, sliding_window_pattern=2, rope_local_base_freq=10000.0,
                       final_logit_softcapping=30.0, hidden_activation="gelu_pytorch_tanh")),
        ("phi3-longrope", cfg(architectures=["Phi3ForCausalLM"], partial_rotary_factor=0.5,
                              original_max_position_embeddings=32,
                              rope_scaling={"type": "longrope", "short_factor": [1.0] * 8,
                                            "long_factor": [2.0] * 8})),
        ("rope-parameters-yarn", cfg(rope_parameters={"rope_type": "yarn", "rope_theta": 1e6,
                                                      "factor": 4.0})),
        ("quantization-config", cfg(quantization_config={"quant_method": "awq"})),
        ("mistral-window-zero", cfg(architectures=["MistralForCausalLM"], sliding_window=0)),
        ("unsupported-arch", cfg(architectures=["GPT2LMHeadModel"])),
        ("arch-empty", cfg(architectures=[])),
        ("arch-missing", cfg(del_architectures=None)),
        ("hidden-missing", cfg(del_hidden_size=None)),
        ("hidden-string", cfg(hidden_size="256")),
        ("hidden-float", cfg(hidden_size=256.0)),
        ("hidden-negative", cfg(hidden_size=-256)),
        ("hidden-2-31", cfg(hidden_size=2 ** 31)),
        ("hidden-not-divisible", cfg(del_head_dim=None, hidden_size=255)),
        ("head-dim-odd", cfg(head_dim=63)),
        ("kv-not-dividing", cfg(num_key_value_heads=3)),
        ("kv-heads-null", cfg(num_key_value_heads=None)),
        ("rope-scaling", cfg(rope_scaling={"type": "linear", "factor": 2.0})),
        ("rope-scaling-nested", cfg(rope_scaling=[[[[[[[[1]]]]]]]])),
        ("hidden-act-gelu", cfg(hidden_act="gelu")),
        ("hidden-act-number", cfg(hidden_act=1)),
        ("attention-bias", cfg(attention_bias=True)),
        ("eps-zero", cfg(rms_norm_eps=0)),
        ("theta-string", cfg(rope_theta="1e4")),
        ("tie-string", cfg(tie_word_embeddings="yes")),
        ("eos-list", cfg(eos_token_id=[2, 32000])),
        ("eos-negative", cfg(eos_token_id=-1)),
        ("eos-nested", cfg(eos_token_id=[[2]])),
        ("eos-huge", cfg(eos_token_id=2 ** 40)),
        ("bos-two", cfg(bos_token_id=[1, 2])),
        ("dtype-number", cfg(torch_dtype=16)),
        # Sizes at the readers' bound (2^30): the derived sizes must still fit.
        ("layers-2-30", cfg(num_hidden_layers=2 ** 30)),
        ("heads-times-head-dim-overflow", cfg(num_attention_heads=2 ** 30, num_key_value_heads=1,
                                              head_dim=2 ** 30)),
        ("all-sizes-2-30", cfg(hidden_size=2 ** 30, intermediate_size=2 ** 30,
                               num_attention_heads=2 ** 30, num_key_value_heads=2 ** 30,
                               head_dim=2, vocab_size=2 ** 30, max_position_embeddings=2 ** 30)),
        ("not-object", "[1, 2, 3]"),
        ("invalid-json", '{"architectures": ["LlamaForCausalLM"'),
        ("empty", ""),
        ("generation-invalid", SEP.join([cfg().encode(), b"{", b"{}"])),
        ("generation-eos-string", SEP.join([cfg().encode(), b'{"eos_token_id": "2"}'])),
        ("generation-bos-list", SEP.join([cfg().encode(), b'{"bos_token_id": [5], "eos_token_id": 3}'])),
        ("tokenizer-template-list", SEP.join([cfg().encode(), b"{}", json.dumps(
            {"chat_template": [{"name": "tool_use", "template": "x"},
                               {"name": "default", "template": "<|im_start|>"}]}).encode()])),
        ("tokenizer-template-number", SEP.join([cfg().encode(), b"{}", b'{"chat_template": 3}'])),
        ("tokenizer-add-bos-string", SEP.join([cfg().encode(), b"{}", b'{"add_bos_token": "true"}'])),
        ("tokenizer-not-object", SEP.join([cfg().encode(), b"{}", b'"text"'])),
    ]
    for name, data in seeds:
        write(t, name, data)


# ---- chat_template ----

def chat_template():
    t = "chat_template_fuzz"
    clear_seeds(t)
    roles = {"system": 0, "user": 1, "assistant": 2}

    def conv(flags, messages, rest=b""):
        out = bytes([flags, len(messages)])
        for role, content in messages:
            content = content.encode() if isinstance(content, str) else content
            if len(content) % 2:
                content += b" "
            if role in roles:
                out += bytes([roles[role]])
            else:
                r = role.encode()
                out += bytes([3, len(r)]) + r
            out += bytes([len(content) // 2]) + content
        return out + rest

    with open(os.path.join(ROOT, "models", "demo-brown", "tokenizer_config.json")) as f:
        jinja = json.load(f)["chat_template"].encode()
    ok = [("system", " Be brief. "), ("user", "Hi there"), ("assistant", "Hello!  "), ("user", "\u00a0Why?\u3000")]
    seeds = []
    for flags, family in ((0, "llama2"), (1, "chatml"), (2, "mistral"), (3, "none")):
        seeds += [
            (f"{family}-conversation", conv(flags, ok, jinja)),
            (f"{family}-no-system", conv(flags, ok[1:])),
            (f"{family}-single-user", conv(flags, [("user", "x")], family.encode())),
            (f"{family}-ends-assistant", conv(flags, ok[:3])),
            (f"{family}-two-users", conv(flags, [("user", "a"), ("user", "b")])),
            (f"{family}-system-only", conv(flags, [("system", "s")])),
            (f"{family}-empty", conv(flags, [])),
            (f"{family}-tool-role", conv(flags, [("user", "a"), ("tool", "{}")])),
            (f"{family}-system-second", conv(flags, [("user", "a"), ("system", "b"), ("user", "c")])),
            (f"{family}-invalid-utf8", conv(flags, [("user", b"\xff\xfe\xe2\x80")])),
            (f"{family}-no-bos", conv(flags | 4, ok[1:])),
            (f"{family}-no-eos", conv(flags | 8, ok[1:])),
            (f"{family}-no-im-start", conv(flags | 16, ok[1:])),
        ]
    seeds.append(("chatml-jinja", conv(1, ok, b"{% for m in messages %}<|im_start|>{{ m.role }}")))
    seeds.append(("mistral-jinja", conv(2, ok[1:], b"{{ '[INST] ' + message['content'] + ' [/INST]' }}")))
    for name, data in seeds:
        write(t, name, data)


# ---- detokenizer ----

def detokenizer():
    t = "detokenizer_fuzz"
    clear_seeds(t)

    def byte(b):
        return bytes([0x00, b])

    def piece(i):
        return bytes([0x80]) + struct.pack("<H", i)

    BOS, EOS, UNK, NEG, OOR = b"\xc1", b"\xc2", b"\xc0", b"\xc3", b"\xc4"

    def seed(stops, prompt, generated):
        out = bytes([len(stops)])
        for s in stops:
            if isinstance(s, tuple):  # a slice of the generated text
                out += bytes([1]) + struct.pack("<H", s[0]) + bytes([s[1] - 1])
            else:
                s = s.encode() if isinstance(s, str) else s
                out += bytes([0, len(s)]) + s
        return out + bytes([len(prompt)]) + b"".join(prompt) + b"".join(generated)

    emoji = [byte(b) for b in "\U0001F600".encode()]
    text = [byte(b) for b in "caf\u00e9 \u4e16\u754c".encode()]
    words = [piece(i) for i in (300, 301, 500, 777, 1000, 2048, 4000, 29, 4095)]
    seeds = [
        ("words", seed([], [BOS], words)),
        ("emoji-in-output", seed([], [BOS] + words[:2], emoji + words[2:4])),
        ("emoji-across-prompt", seed([], [BOS] + emoji[:2], emoji[2:] + words[:2])),
        ("prompt-ends-lead-byte", seed([], [BOS, byte(0xE4)], [byte(0xB8), byte(0x96)])),
        ("multibyte-text", seed([], [BOS], text)),
        ("overlong-c0", seed([], [BOS], [byte(0xC0), byte(0xAF)] + words[:1])),
        ("e0-80", seed([], [BOS], [byte(0xE0), byte(0x80), byte(0x80)])),
        ("surrogate", seed([], [BOS], [byte(0xED), byte(0xA0), byte(0x80)])),
        ("above-10ffff", seed([], [BOS], [byte(0xF4), byte(0x90), byte(0x80), byte(0x80)])),
        ("f4-8f-ok", seed([], [BOS], [byte(0xF4), byte(0x8F), byte(0xBF), byte(0xBF)])),
        ("lone-continuations", seed([], [], [byte(0x80), byte(0xBF), byte(0x80)])),
        ("lead-then-ascii", seed([], [BOS], [byte(0xF0), byte(0x9F), byte(0x41)])),
        ("held-at-end", seed([], [BOS], words[:2] + [byte(0xF0), byte(0x9F), byte(0x98)])),
        ("control-in-middle", seed([], [BOS], words[:2] + [EOS, BOS, UNK] + words[2:4])),
        ("out-of-range-ids", seed([], [NEG, BOS, OOR], [NEG] + words[:3] + [OOR])),
        ("empty-prompt", seed([], [], words)),
        ("stop-literal-ascii", seed(["the", "and"], [BOS], words * 3)),
        ("stop-literal-multibyte", seed(["\u00e9", "\u4e16\u754c"], [BOS], text)),
        ("stop-slice", seed([(0, 3), (10, 8)], [BOS], words * 2)),
        ("stop-slice-emoji", seed([(2, 4)], [BOS], words[:2] + emoji + words[2:])),
        ("stop-across-tokens", seed([(1, 6)], [BOS], text + words)),
        ("stop-prefix-overlap", seed(["aab", "ab", "b\u00e9"], [BOS], [byte(ord("a"))] * 3 + [byte(ord("b"))] + text)),
        ("stop-replacement-char", seed(["\ufffd"], [BOS], [byte(0xFF)] + words[:2])),
        ("stop-invalid-literal", seed([b"\xff", "x"], [BOS], words)),
        ("stop-space", seed([" "], [BOS], words)),
        ("stop-held-byte-flush", seed(["\U0001F600!"], [BOS], emoji[:3])),
    ]
    for name, data in seeds:
        write(t, name, data)


# ---- validation (serialized GenerateRequest) ----

def validation(build_dir):
    t = "validation_fuzz"
    sys.path.insert(0, os.path.join(build_dir, "python"))
    try:
        from streamgen.v1 import generate_pb2 as pb
    except ImportError as error:
        print(f"validation seeds skipped ({error}); build first, run with /usr/bin/python3",
              file=sys.stderr)
        return
    clear_seeds(t)

    def req(**fields):
        r = pb.GenerateRequest()
        for k, v in fields.items():
            if k == "messages":
                for role, content in v:
                    m = r.messages.add()
                    m.role, m.content = role, content
            elif isinstance(v, list):
                getattr(r, k).extend(v)
            else:
                setattr(r, k, v)
        return r.SerializeToString()

    chat = [("system", "be brief"), ("user", "hi")]
    seeds = [
        ("prompt", req(prompt="Once upon a time", max_new_tokens=16, temperature=0.7, top_p=0.9, seed=7)),
        ("prompt-defaults", req(prompt="x")),
        ("ids", req(prompt_token_ids=[1, 450, 4996], max_new_tokens=4)),
        ("ids-out-of-range", req(prompt_token_ids=[1, 32000])),
        ("ids-negative", req(prompt_token_ids=[-1])),
        ("chat", req(messages=chat, max_new_tokens=8)),
        ("chat-bad-roles", req(messages=[("assistant", "a"), ("user", "b")])),
        ("chat-empty-role", req(messages=[("", "a")])),
        ("chat-five", req(messages=[("user", "a"), ("assistant", "b")] * 2 + [("user", "c")])),
        ("prompt-and-ids", req(prompt="x", prompt_token_ids=[1])),
        ("nothing", req(max_new_tokens=3)),
        ("temperature-nan", req(prompt="x", temperature=float("nan"))),
        ("temperature-inf", req(prompt="x", temperature=float("inf"))),
        ("top-p-1.5", req(prompt="x", top_p=1.5)),
        ("min-p-1", req(prompt="x", min_p=1.0)),
        ("repetition-11", req(prompt="x", repetition_penalty=11)),
        ("presence-nan", req(prompt="x", presence_penalty=float("nan"))),
        ("frequency-3", req(prompt="x", frequency_penalty=-3)),
        ("top-k-huge", req(prompt="x", top_k=4294967295)),
        ("top-logprobs-21", req(prompt="x", top_logprobs=21)),
        ("stops", req(prompt="x", stop=["\n", "END"], stop_token_ids=[2])),
        ("stop-empty", req(prompt="x", stop=[""])),
        ("stop-long", req(prompt="x", stop=["y" * 300])),
        ("stops-17", req(prompt="x", stop=[str(i) for i in range(17)])),
        ("stop-id-negative", req(prompt="x", stop_token_ids=[-5])),
        ("request-id-129", req(prompt="x", request_id="r" * 129)),
        ("fingerprint-other", req(prompt="x", model_fingerprint="other-model")),
        ("fingerprint-same", req(prompt="x", model_fingerprint="llama-2-7b-0123456789abcdef")),
        ("max-new-huge", req(prompt="x", max_new_tokens=4294967295)),
        ("max-new-context", req(prompt="x" * 40, max_new_tokens=30)),
        ("resume", req(prompt="x", resume_token_ids=[5, 6, 7], seed=1, temperature=1)),
        ("prompt-long", req(prompt="y" * 4200)),
    ]
    # Selector byte: bit 0 the limits (0 large, 1 small), bits 1-2 the chat family
    # (chatml, llama2, mistral, none). Chat seeds get every family.
    for name, data in seeds:
        for selector in ((0, 3, 5, 6) if name.startswith("chat") else (0, 3)):
            write(t, f"{name}-{selector}", bytes([selector]) + data)


# ---- openai_request (JSON bodies) ----

def openai_request():
    t = "openai_request_fuzz"
    clear_seeds(t)
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    bodies = {
        "completion": {"model": "demo-brown", "prompt": "Once upon a time", "max_tokens": 16,
                       "stream": True, "stream_options": {"include_usage": True}},
        "completion-ids": {"prompt": [1, 450, 4996], "max_tokens": 4, "logprobs": 2},
        "completion-ids-big": {"prompt": [1, 2147483648]},
        "completion-ids-float": {"prompt": [1.5]},
        "completion-ids-strings": {"prompt": ["a", "b"]},
        "chat": {"messages": msgs, "max_completion_tokens": 8, "logprobs": True, "top_logprobs": 3},
        "chat-parts": {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                                 {"type": "text", "text": "b"}]}]},
        "chat-image-part": {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
        "chat-null-content": {"messages": [{"role": "user", "content": None}]},
        "chat-role-number": {"messages": [{"role": 1, "content": "x"}]},
        "chat-message-string": {"messages": ["hi"]},
        "sampling": {"prompt": "x", "temperature": 0.7, "top_p": 0.9, "top_k": 40, "min_p": 0.05,
                     "repetition_penalty": 1.1, "presence_penalty": 0.5, "frequency_penalty": -0.5,
                     "seed": 42},
        # Positive, but zero as a float: must not become the proto's "off".
        "top-p-denormal": {"prompt": "x", "top_p": 1e-50},
        "repetition-denormal": {"prompt": "x", "repetition_penalty": 1e-46},
        "top-p-zero": {"prompt": "x", "top_p": 0},
        "temperature-huge": {"prompt": "x", "temperature": 1e300},
        "max-tokens-float": {"prompt": "x", "max_tokens": 16.0},
        "max-tokens-1e30": {"prompt": "x", "max_tokens": 1e30},
        "max-tokens-uint64": {"prompt": "x", "max_tokens": 18446744073709551615},
        "seed-negative": {"prompt": "x", "seed": -1},
        "seed-uint64": {"prompt": "x", "seed": 18446744073709551615},
        "seed-2-63": {"prompt": "x", "seed": 9223372036854775808},
        "n-2": {"prompt": "x", "n": 2},
        "logprobs-21": {"prompt": "x", "logprobs": 21},
        "top-logprobs-without": {"messages": msgs, "top_logprobs": 2},
        "stop-array": {"prompt": "x", "stop": ["\n", "END"], "stop_token_ids": [2]},
        "stop-mixed": {"prompt": "x", "stop": ["a", 1]},
        "stop-empty-string": {"prompt": "x", "stop": ""},
        "echo": {"prompt": "x", "echo": True},
        "best-of": {"prompt": "x", "best_of": 2},
        "suffix": {"prompt": "x", "suffix": "y"},
        "logit-bias": {"prompt": "x", "logit_bias": {"50256": -100}},
        "tools": {"messages": msgs, "tools": [{"type": "function"}]},
        "response-format": {"messages": msgs, "response_format": {"type": "json_object"}},
        "stream-options-bad": {"prompt": "x", "stream": True, "stream_options": {"include_usage": 1}},
        "query-stream": {"query": "What is a river?", "max_new_tokens": 32},
        "query-stream-zero": {"query": "x", "max_new_tokens": 0},
        "tokenize-prompt": {"prompt": "Hello", "add_special_tokens": False},
        "tokenize-messages": {"messages": msgs, "add_generation_prompt": True},
        "tokenize-both": {"prompt": "x", "messages": msgs},
        "tokenize-no-generation-prompt": {"messages": msgs, "add_generation_prompt": False},
        "detokenize": {"tokens": [1, 450, 4996]},
        "detokenize-negative": {"tokens": [-1]},
        "fingerprint-field-ignored": {"prompt": "x", "model_fingerprint": "abc"},
        "nulls": {"prompt": "x", "temperature": None, "stop": None, "seed": None, "n": None},
    }
    for name, body in bodies.items():
        write(t, name, json.dumps(body))
    write(t, "array-body", "[1, 2, 3]")
    write(t, "string-body", '"prompt"')
    write(t, "empty-object", "{}")
    write(t, "invalid-json", '{"prompt": ')
    write(t, "invalid-utf8", b'{"prompt": "\xff"}')
    write(t, "escaped-surrogate", '{"prompt": "\\ud83d\\ude00 \\u00e9"}')
    write(t, "duplicate-keys", '{"prompt": "a", "prompt": 3}')
    write(t, "deep-nesting", '{"prompt": "x", "stop": ' + "[" * 500 + "]" * 500 + "}")


# ---- openai_encoder ----

def openai_encoder():
    t = "openai_encoder_fuzz"
    clear_seeds(t)

    def token(tid, logprob, alts=()):
        out = struct.pack("<h", tid) + struct.pack("<f", logprob) + bytes([len(alts)])
        for aid, alp in alts:
            out += struct.pack("<h", aid) + struct.pack("<f", alp)
        return out

    def seed(flags, messages, finish=0, prompt=5, completion=3, code=0, message=b""):
        out = bytes([flags, len(messages) - 1])
        for text, tokens in messages:
            text = text.encode() if isinstance(text, str) else text
            out += bytes([len(text)]) + text + bytes([len(tokens)]) + b"".join(tokens)
        return out + bytes([finish]) + struct.pack("<II", prompt, completion) + bytes([code, len(message)]) + message

    words = [("Once", [token(300, -0.5)]), (" upon", [token(301, -1.25, [(302, -2.0)])]), (" a time", [])]
    nan = struct.unpack("<f", struct.pack("<I", 0x7fc00000))[0]
    seeds = []
    for flags in range(16):
        seeds.append((f"flags-{flags}", seed(flags, words)))
    seeds += [
        ("byte-pieces-chat", seed(0x05, [("\U0001F600", [token(3 + 0xF0, -0.1), token(3 + 0x9F, -0.1),
                                                          token(3 + 0x98, -0.1), token(3 + 0x80, -0.1)])])),
        ("byte-pieces-completions", seed(0x04, [("\u00e9", [token(3 + 0xC3, -1), token(3 + 0xA9, -1)])])),
        ("odd-pieces", seed(0x05, [("x", [token(i, -1.0, [(i + 1, -2.0)]) for i in range(259, 262)]),
                                   ("y", [token(i, -1.0) for i in range(262, 269)])])),
        ("unknown-ids", seed(0x04, [("z", [token(-5, -1.0, [(30000, -2.0)]), token(0, 0.0)])])),
        ("logprob-nan-inf", seed(0x05, [("a", [token(300, nan, [(301, float("inf"))]),
                                                token(302, float("-inf"))])])),
        ("invalid-utf8-text", seed(0x03, [(b"\xff\xfe", []), (b"\xe2\x82", []), (b"\xac", [])])),
        ("empty-texts", seed(0x07, [("", []), ("", [token(300, -1)]), ("", [])])),
        ("finish-length", seed(0x02, words, finish=0)),
        ("finish-stop", seed(0x03, words, finish=2)),
        ("finish-cancelled", seed(0x02, words, finish=3)),
        ("error-status", seed(0x03, words, finish=4, code=13, message=b"the engine failed")),
        ("error-unavailable", seed(0x02, words, code=14, message=b"draining")),
        ("error-invalid-utf8", seed(0x01, words, code=3, message=b"bad \xff")),
        ("usage-int-max", seed(0x03, words, prompt=2 ** 31 - 1, completion=1)),
        ("usage-uint32-max", seed(0x02, words, prompt=2 ** 32 - 1, completion=2 ** 32 - 1)),
        ("newlines", seed(0x03, [("a\n\nb", []), ("data: [DONE]\n\n", []), ("\r\n", [])])),
    ]
    for name, data in seeds:
        write(t, name, data)


def grammar():
    """grammar_fuzz: a mode byte (even: GBNF grammar, odd: regex), then the text."""
    t = "grammar_fuzz"
    clear_seeds(t)
    grammars = {
        # The built-in JSON grammar, as engine/grammar/grammar.cc holds it.
        "json": re.search(r'kObjectRoot\[\] = R"\((.*?)\)";', open(os.path.join(
            ROOT, "engine", "grammar", "grammar.cc")).read(), re.S).group(1),
        "list": '# a list\nroot ::= item ("," item)*\nitem ::=\n  "a" |\n  "b" ( "c"\n  | "d" )\n',
        "repeat": 'root ::= [a-c]{2,4} "x"? [^"\\\\] . ("\\u00e9" | "\\U0001F600")+\n',
        "nested": 'root ::= x\nx ::= "[" (x | "a")? "]" | "{" x "}"\n',
        "bad-undefined": "root ::= foo\n",
        "bad-paren": 'root ::= ("a"\n',
        "bad-left": 'root ::= x\nx ::= x "a"\n',
        "bad-class": "root ::= [\n",
    }
    for name, text in grammars.items():
        write(t, "gbnf-" + name, b"\x00" + text.encode())
    regexes = {
        "date": "[0-9]{4}-[0-9]{2}-[0-9]{2}",
        "email": "\\w+@\\w+\\.(com|org)",
        "alt": "^(a|ab)(c|bcd)(d*)$",
        "class": "[^\\d\\s]+[é-ë]?\\x{1F600}",
        "bad-backref": "(a)\\1",
        "bad-look": "a(?=b)",
    }
    for name, text in regexes.items():
        write(t, "regex-" + name, b"\x01" + text.encode())


# ---- JSON Schema -> grammar: the schema's JSON text ----
def json_schema():
    t = "json_schema_fuzz"
    clear_seeds(t)
    corpus = os.path.join(ROOT, "tests", "json_schema_suite", "corpus")
    for name in sorted(os.listdir(corpus)):
        with open(os.path.join(corpus, name), "rb") as f:
            write(t, "corpus-" + name, f.read())
    write(t, "empty", "{}")
    write(t, "false", "false")
    write(t, "not-json", '{"type": ')
    write(t, "pattern", json.dumps({"type": "string", "pattern": "^(a|[b-d]{2,3})+\\d*(?:x|\\u00e9)$"}))
    write(t, "pattern-lookahead", json.dumps({"type": "string", "pattern": "a(?!b)"}))
    write(t, "int-range", json.dumps({"type": "integer", "minimum": -1234, "exclusiveMaximum": 98765}))
    write(t, "recursive-allof", json.dumps({"$defs": {"a": {"allOf": [{"$ref": "#/$defs/a"}, {"$ref": "#/$defs/a"}]}},
                                            "$ref": "#/$defs/a"}))
    write(t, "deep", '{"items":' * 200 + "{}" + "}" * 200)
    write(t, "keys", json.dumps({"type": "object", "properties": {"a": {}, "ab": {}, "\u00e9\"\\": {}},
                                 "additionalProperties": {"type": "boolean"}}))
    write(t, "tuple", json.dumps({"type": "array", "prefixItems": [{"const": 1}, {"enum": [[1, {"b": 2.0}]]}],
                                  "items": {"format": "date-time"}, "minItems": 1, "maxItems": 5}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build-dir", default=os.path.join(ROOT, "build"))
    args = parser.parse_args()
    safetensors()
    model_config()
    chat_template()
    detokenizer()
    validation(args.build_dir)
    openai_request()
    openai_encoder()
    grammar()
    json_schema()
    for target in sorted(os.listdir(CORPUS)):
        print(f"{target}: {len(os.listdir(os.path.join(CORPUS, target)))} files")


if __name__ == "__main__":
    main()
