#!/usr/bin/python3
"""transformers' math for eight causal-LM families, in plain numpy float64.

  hf_reference.py --model DIR --prompts PROMPTS.json --new-tokens N

DIR is a Hugging Face checkpoint (config.json, *.safetensors in F32, BF16 or
F16). PROMPTS.json is a list of prompts (each a list of token ids). Prints the
same JSON as llamacpp_greedy.mjs: for each prompt {prompt, ids (N greedy ids,
EOS ignored), min_gap (the smallest top-2 logit gap over the N steps)}, so
either can be the golden.

This is a second, independent reading of transformers' modeling files, written
from them and not from the engine: where llama.cpp cannot express a family's
semantics (a Gemma 3 layer pattern other than every sixth layer global,
query_pre_attn_scalar != head_dim, sliding windows that its converter drops),
the engine is checked against this instead. The sources, transformers
(src/transformers/...):
  modeling_rope_utils.py                 inv_freq and attention_factor per rope type
  models/llama/modeling_llama.py         the decoder layer, RMSNorm, RoPE, GQA
  models/mistral/modeling_mistral.py     sliding window on every layer
  models/qwen2/configuration_qwen2.py    layer_types from use_sliding_window/max_window_layers
  models/qwen3/modeling_qwen3.py         q_norm/k_norm on head_dim before RoPE
  models/qwen3_moe/modeling_qwen3_moe.py Qwen3MoeSparseMoeBlock, decoder_sparse_step
  models/mixtral/modeling_mixtral.py     MixtralSparseMoeBlock (w1/w3/w2)
  models/gemma3/modeling_gemma3.py       (1 + w) norms, four per layer, scaled
                                         embeddings, query_pre_attn_scalar,
                                         local/global RoPE, soft-capping
  models/phi3/modeling_phi3.py           fused qkv_proj/gate_up_proj, partial
                                         rotary, longrope's dynamic switch
The forward pass keeps a KV cache like transformers' generate(): the prompt in
one call, then one token per call. That matters only for longrope, whose
factors transformers picks per call from the largest position in it (short
until the sequence outgrows original_max_position_embeddings, long after;
cached keys keep the rotation they were made with).
"""

import argparse
import json
import math
import os
import pathlib
import struct
import sys

# One BLAS thread: the matrices are tiny, and OpenBLAS's threads spin-wait on a
# busy 2-core machine (measured: 40 s instead of 1 s for Gemma 3's fixture).
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

try:
    import numpy as np
except ImportError as error:
    sys.exit(f"hf_reference.py: needs Python's {error.name} (scripts/install-deps.sh "
             "installs python3-numpy)")

SUPPORTED = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM",
             "Qwen3MoeForCausalLM", "MixtralForCausalLM", "Gemma3ForCausalLM",
             "Phi3ForCausalLM")


class ReferenceError(Exception):
    """Bad input: the message names the file or key at fault."""


# ---------------------------------------------------------------------------
# Reading a checkpoint
# ---------------------------------------------------------------------------

def read_safetensors(path):
    """{name: float64 array} of one .safetensors file (F32, F16, BF16)."""
    data = path.read_bytes()
    if len(data) < 8:
        raise ReferenceError(f"{path}: too short for a safetensors header")
    (length,) = struct.unpack("<Q", data[:8])
    try:
        header = json.loads(data[8:8 + length])
    except ValueError as error:
        raise ReferenceError(f"{path}: the safetensors header is not JSON ({error})")
    base = 8 + length
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = (base + o for o in info["data_offsets"])
        raw = data[start:end]
        dtype = info["dtype"]
        if dtype == "F32":
            array = np.frombuffer(raw, dtype="<f4")
        elif dtype == "F16":
            array = np.frombuffer(raw, dtype="<f2")
        elif dtype == "BF16":
            # bfloat16 is the top half of a float32.
            array = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise ReferenceError(f"{path}: tensor '{name}' has dtype {dtype}; "
                                 "hf_reference.py reads F32, F16 and BF16")
        out[name] = array.astype(np.float64).reshape(info["shape"])
    return out


def read_weights(model_dir):
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise ReferenceError(f"{model_dir}: no *.safetensors file")
    weights = {}
    for path in files:
        weights.update(read_safetensors(path))
    return weights


def round_to_float32(value):
    return float(np.float32(value))


# ---------------------------------------------------------------------------
# The configuration, with transformers' defaults per family
# ---------------------------------------------------------------------------

# Defaults of the configuration_*.py classes that the fixtures may leave out.
FAMILY_DEFAULTS = {
    "LlamaForCausalLM": dict(rms_norm_eps=1e-6, tie_word_embeddings=False, rope_theta=10000.0,
                             sliding_window=None),
    "MistralForCausalLM": dict(rms_norm_eps=1e-6, tie_word_embeddings=False, rope_theta=10000.0,
                               sliding_window=4096),
    "Qwen2ForCausalLM": dict(rms_norm_eps=1e-6, tie_word_embeddings=False, rope_theta=10000.0,
                             sliding_window=4096),
    "Qwen3ForCausalLM": dict(rms_norm_eps=1e-6, tie_word_embeddings=False, rope_theta=10000.0,
                             sliding_window=4096),
    "Qwen3MoeForCausalLM": dict(rms_norm_eps=1e-6, tie_word_embeddings=False,
                                rope_theta=10000.0, sliding_window=4096),
    "MixtralForCausalLM": dict(rms_norm_eps=1e-5, tie_word_embeddings=False, rope_theta=1e6,
                               sliding_window=None),
    "Gemma3ForCausalLM": dict(rms_norm_eps=1e-6, tie_word_embeddings=True, rope_theta=1e6,
                              sliding_window=4096),
    "Phi3ForCausalLM": dict(rms_norm_eps=1e-5, tie_word_embeddings=False, rope_theta=10000.0,
                            sliding_window=None),
}


def rope_params_for(config, layer_type):
    """The rope dictionary of one layer type, in transformers v5's standardized
    form (rope_type, rope_theta, partial_rotary_factor, ...), from either
    spelling: v5's rope_parameters (flat, or keyed by layer type) or v4's
    rope_theta + rope_scaling (+ Gemma 3's rope_local_base_freq)."""
    arch = config["architectures"][0]
    params = config.get("rope_parameters")
    if params and set(params) <= {"full_attention", "sliding_attention"}:
        if layer_type not in params:
            raise ReferenceError(f"config.json: rope_parameters has no '{layer_type}' entry")
        params = dict(params[layer_type])
    elif params:
        params = dict(params)
    else:
        # v4: Gemma3RotaryEmbedding for local layers is a copy of the config with
        # rope_theta = rope_local_base_freq and rope_scaling = default.
        if arch == "Gemma3ForCausalLM" and layer_type == "sliding_attention":
            params = {"rope_type": "default",
                      "rope_theta": config.get("rope_local_base_freq", 10000.0)}
        else:
            params = dict(config.get("rope_scaling") or {})
    params.setdefault("rope_type", params.get("type", "default"))
    if "rope_theta" not in params:
        params["rope_theta"] = config.get("rope_theta", FAMILY_DEFAULTS[arch]["rope_theta"])
    if "partial_rotary_factor" not in params and "partial_rotary_factor" in config:
        params["partial_rotary_factor"] = config["partial_rotary_factor"]
    if params["rope_type"] in ("llama3", "yarn", "longrope"):
        # Phi-3 keeps original_max_position_embeddings outside the rope dict;
        # transformers v5's standardize_rope_params gives that one priority.
        if "original_max_position_embeddings" in config:
            params["original_max_position_embeddings"] = config["original_max_position_embeddings"]
        params.setdefault("original_max_position_embeddings", config["max_position_embeddings"])
    return params


def inv_freq_and_scale(params, head_dim, max_positions, seq_len):
    """modeling_rope_utils.py's ROPE_INIT_FUNCTIONS: (inv_freq [rot_dim/2],
    attention_factor) for one rope dict. seq_len matters only for longrope."""
    base = float(params["rope_theta"])
    dim = int(head_dim * params.get("partial_rotary_factor", 1.0))
    exponents = np.arange(0, dim, 2, dtype=np.float64) / dim
    inv_freq = 1.0 / base ** exponents
    kind = params["rope_type"]
    if kind == "default":
        return inv_freq, 1.0
    if kind == "linear":
        return inv_freq / params["factor"], 1.0
    if kind == "llama3":
        factor = params["factor"]
        low, high = params["low_freq_factor"], params["high_freq_factor"]
        old = params["original_max_position_embeddings"]
        low_wavelen, high_wavelen = old / low, old / high
        wavelen = 2 * math.pi / inv_freq
        scaled = np.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
        smooth = (old / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        return np.where(medium, smoothed, scaled), 1.0
    if kind == "yarn":
        original = params["original_max_position_embeddings"]
        factor = params.get("factor")
        if factor is None:
            factor = max_positions / original

        def get_mscale(scale, mscale=1.0):
            return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0

        attention_factor = params.get("attention_factor")
        if attention_factor is None:
            if params.get("mscale") and params.get("mscale_all_dim"):
                attention_factor = (get_mscale(factor, params["mscale"])
                                    / get_mscale(factor, params["mscale_all_dim"]))
            else:
                attention_factor = get_mscale(factor)
        beta_fast = params.get("beta_fast") or 32
        beta_slow = params.get("beta_slow") or 1

        def correction_dim(rotations):
            return (dim * math.log(original / (rotations * 2 * math.pi))) / (2 * math.log(base))

        low, high = correction_dim(beta_fast), correction_dim(beta_slow)
        if params.get("truncate", True):
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, dim - 1)
        if low == high:
            high += 0.001  # transformers' guard against a zero-width ramp
        ramp = np.clip((np.arange(dim // 2, dtype=np.float64) - low) / (high - low), 0, 1)
        extrapolation = 1 - ramp
        pos_freqs = base ** exponents
        inv = (1.0 / (factor * pos_freqs)) * (1 - extrapolation) + (1.0 / pos_freqs) * extrapolation
        return inv, attention_factor
    if kind == "longrope":
        original = params["original_max_position_embeddings"]
        factor = params.get("factor")
        if factor is None:
            factor = max_positions / original
        attention_factor = params.get("attention_factor")
        if attention_factor is None:
            attention_factor = (1.0 if factor <= 1.0 else
                                math.sqrt(1 + math.log(factor) / math.log(original)))
        key = "long_factor" if seq_len > original else "short_factor"
        ext = np.asarray(params[key], dtype=np.float64)
        if ext.shape != (dim // 2,):
            raise ReferenceError(f"config.json: rope {key} has {ext.size} entries, "
                                 f"the rotary dimension needs {dim // 2}")
        return 1.0 / (ext * base ** exponents), attention_factor
    raise ReferenceError(f"config.json: rope type '{kind}' is not one hf_reference.py computes "
                         "(default, linear, llama3, yarn, longrope)")


class Model:
    """The configuration read the way transformers reads it, and the weights."""

    def __init__(self, model_dir):
        model_dir = pathlib.Path(model_dir)
        config_path = model_dir / "config.json"
        if not config_path.is_file():
            raise ReferenceError(f"{config_path}: no such file")
        c = json.loads(config_path.read_text())
        archs = c.get("architectures") or []
        if len(archs) != 1 or archs[0] not in SUPPORTED:
            raise ReferenceError(f"{config_path}: architectures {archs} is not one of "
                                 f"{', '.join(SUPPORTED)}")
        self.arch = arch = archs[0]
        self.c = c
        defaults = FAMILY_DEFAULTS[arch]
        self.hidden = c["hidden_size"]
        self.layers = c["num_hidden_layers"]
        self.heads = c["num_attention_heads"]
        self.kv_heads = c.get("num_key_value_heads") or self.heads
        self.head_dim = c.get("head_dim") or self.hidden // self.heads
        self.eps = c.get("rms_norm_eps", defaults["rms_norm_eps"])
        self.max_positions = c["max_position_embeddings"]
        self.tied = c.get("tie_word_embeddings", defaults["tie_word_embeddings"])
        self.gemma = arch == "Gemma3ForCausalLM"
        act = c.get("hidden_activation") if self.gemma else c.get("hidden_act", "silu")
        act = act or "gelu_pytorch_tanh"
        if act not in ("silu", "gelu_pytorch_tanh"):
            raise ReferenceError(f"{config_path}: activation '{act}' is not silu or "
                                 "gelu_pytorch_tanh")
        self.act = act
        # Attention scale: head_dim**-0.5, Gemma 3 query_pre_attn_scalar**-0.5.
        scalar = c.get("query_pre_attn_scalar", 256) if self.gemma else self.head_dim
        self.scaling = scalar ** -0.5
        self.attn_softcap = c.get("attn_logit_softcapping") if self.gemma else None
        self.final_softcap = c.get("final_logit_softcapping") if self.gemma else None
        # A key left out takes the configuration class's default; null is none.
        self.window = c.get("sliding_window", defaults["sliding_window"])
        self.layer_types = self._layer_types()
        self.windows = [self.window if t == "sliding_attention" else None
                        for t in self.layer_types]
        self.rope = {t: rope_params_for(c, t) for t in set(self.layer_types)}
        self.w = read_weights(model_dir)
        if self.tied or "lm_head.weight" not in self.w:
            if not self.tied:
                raise ReferenceError(f"{model_dir}: tie_word_embeddings is false but there "
                                     "is no lm_head.weight")
            self.lm_head = self.w["model.embed_tokens.weight"]
        else:
            self.lm_head = self.w["lm_head.weight"]
        # Gemma3TextScaledWordEmbedding: embed * embed_scale.to(dtype); float32
        # here, the dtype the engine is compared in.
        self.embed_scale = round_to_float32(self.hidden ** 0.5) if self.gemma else 1.0

    def _layer_types(self):
        c, n, window = self.c, self.layers, self.window
        if self.arch in ("Qwen2ForCausalLM", "Qwen3ForCausalLM"):
            # configuration_qwen2.py: sliding_window is None unless
            # use_sliding_window; then layers from max_window_layers on slide.
            if not c.get("use_sliding_window", False):
                return ["full_attention"] * n
            if c.get("layer_types"):
                return list(c["layer_types"])
            first = c.get("max_window_layers", 28)
            return ["sliding_attention" if window is not None and i >= first
                    else "full_attention" for i in range(n)]
        if self.arch == "Qwen3MoeForCausalLM":
            # Qwen3MoeAttention passes config.sliding_window to every layer
            # (max_window_layers is unused); the config drops it unless
            # use_sliding_window.
            slide = c.get("use_sliding_window", False) and window is not None
            return ["sliding_attention" if slide else "full_attention"] * n
        if self.gemma:
            if c.get("layer_types"):
                return list(c["layer_types"])
            pattern = c.get("sliding_window_pattern", 6)
            return ["sliding_attention" if (i + 1) % pattern else "full_attention"
                    for i in range(n)]
        if self.arch in ("MistralForCausalLM", "MixtralForCausalLM", "Phi3ForCausalLM"):
            return ["sliding_attention" if window is not None else "full_attention"] * n
        return ["full_attention"] * n

    def get(self, name):
        if name not in self.w:
            raise ReferenceError(f"the checkpoint has no tensor '{name}'")
        return self.w[name]

    def maybe(self, name):
        return self.w.get(name)


# ---------------------------------------------------------------------------
# The forward pass
# ---------------------------------------------------------------------------

def linear(x, weight, bias=None):
    """nn.Linear: x [n, in] @ weight[out, in].T (+ bias[out])."""
    y = x @ weight.T
    return y if bias is None else y + bias


def rms_norm(x, weight, eps, gemma):
    """LlamaRMSNorm: w * x / sqrt(mean(x^2) + eps); Gemma3RMSNorm: (1 + w) * ..."""
    normed = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    return normed * ((1.0 + weight) if gemma else weight)


def activation(x, kind):
    if kind == "silu":
        return x / (1.0 + np.exp(-x))
    # gelu_pytorch_tanh: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def apply_rope(x, positions, inv_freq, attention_factor):
    """apply_rotary_pos_emb on the first rot_dim dims (Phi-3's partial rotary
    keeps the rest): x [heads, n, head_dim], positions [n]."""
    rot = 2 * inv_freq.size
    freqs = positions[:, None].astype(np.float64) * inv_freq[None, :]  # [n, rot/2]
    emb = np.concatenate([freqs, freqs], axis=-1)  # [n, rot]
    cos, sin = np.cos(emb) * attention_factor, np.sin(emb) * attention_factor
    x_rot, x_pass = x[..., :rot], x[..., rot:]
    half = rot // 2
    rotated = np.concatenate([-x_rot[..., half:], x_rot[..., :half]], axis=-1)
    return np.concatenate([x_rot * cos + rotated * sin, x_pass], axis=-1)


def softmax(x, axis=-1):
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


class Sequence:
    """One prompt's KV cache and forward calls."""

    def __init__(self, model):
        self.m = model
        self.keys = [None] * model.layers    # per layer [kv_heads, t, head_dim], after RoPE
        self.values = [None] * model.layers  # per layer [kv_heads, t, head_dim]
        self.length = 0

    def attention(self, i, x, positions):
        m, p = self.m, f"model.layers.{i}.self_attn."
        n = x.shape[0]
        if m.arch == "Phi3ForCausalLM":
            qkv = linear(x, m.get(p + "qkv_proj.weight"), m.maybe(p + "qkv_proj.bias"))
            q_size, kv_size = m.heads * m.head_dim, m.kv_heads * m.head_dim
            q, k, v = (qkv[:, :q_size], qkv[:, q_size:q_size + kv_size],
                       qkv[:, q_size + kv_size:])
        else:
            q = linear(x, m.get(p + "q_proj.weight"), m.maybe(p + "q_proj.bias"))
            k = linear(x, m.get(p + "k_proj.weight"), m.maybe(p + "k_proj.bias"))
            v = linear(x, m.get(p + "v_proj.weight"), m.maybe(p + "v_proj.bias"))
        q = q.reshape(n, m.heads, m.head_dim).transpose(1, 0, 2)     # [heads, n, hd]
        k = k.reshape(n, m.kv_heads, m.head_dim).transpose(1, 0, 2)  # [kv, n, hd]
        v = v.reshape(n, m.kv_heads, m.head_dim).transpose(1, 0, 2)
        if p + "q_norm.weight" in m.w:  # Qwen3, Qwen3-MoE, Gemma 3: per head, before RoPE
            q = rms_norm(q, m.get(p + "q_norm.weight"), m.eps, m.gemma)
            k = rms_norm(k, m.get(p + "k_norm.weight"), m.eps, m.gemma)
        layer_type = m.layer_types[i]
        # dynamic_rope_update: longrope looks at max(position_ids) + 1 of this call.
        inv_freq, factor = inv_freq_and_scale(m.rope[layer_type], m.head_dim, m.max_positions,
                                              int(positions.max()) + 1)
        q = apply_rope(q, positions, inv_freq, factor)
        k = apply_rope(k, positions, inv_freq, factor)
        if self.keys[i] is not None:
            k = np.concatenate([self.keys[i], k], axis=1)
            v = np.concatenate([self.values[i], v], axis=1)
        self.keys[i], self.values[i] = k, v
        group = m.heads // m.kv_heads
        k = np.repeat(k, group, axis=0)  # repeat_kv: [heads, t, hd]
        v = np.repeat(v, group, axis=0)
        scores = q @ k.transpose(0, 2, 1) * m.scaling  # [heads, n, t]
        if m.attn_softcap:
            scores = np.tanh(scores / m.attn_softcap) * m.attn_softcap
        key_pos = np.arange(k.shape[1])
        allowed = key_pos[None, :] <= positions[:, None]
        window = m.windows[i]
        if window is not None:
            # masking_utils.sliding_window_overlay: kv_idx > q_idx - sliding_window.
            allowed &= key_pos[None, :] > positions[:, None] - window
        scores = np.where(allowed[None], scores, -np.inf)
        out = softmax(scores) @ v  # [heads, n, hd]
        out = out.transpose(1, 0, 2).reshape(n, m.heads * m.head_dim)
        return linear(out, m.get(p + "o_proj.weight"), m.maybe(p + "o_proj.bias"))

    def dense_mlp(self, prefix, x):
        m = self.m
        if m.maybe(prefix + "gate_up_proj.weight") is not None:  # Phi-3: gate first, then up
            gate, up = np.split(linear(x, m.get(prefix + "gate_up_proj.weight")), 2, axis=-1)
        else:
            gate = linear(x, m.get(prefix + "gate_proj.weight"), m.maybe(prefix + "gate_proj.bias"))
            up = linear(x, m.get(prefix + "up_proj.weight"), m.maybe(prefix + "up_proj.bias"))
        return linear(activation(gate, m.act) * up, m.get(prefix + "down_proj.weight"),
                      m.maybe(prefix + "down_proj.bias"))

    def moe(self, i, x):
        """Qwen3MoeSparseMoeBlock / MixtralSparseMoeBlock: softmax in float32
        (here float64) over all experts, top-k, renormalized (Mixtral always,
        Qwen3-MoE when norm_topk_prob), a weighted sum of the chosen experts."""
        m, c = self.m, self.m.c
        if m.arch == "MixtralForCausalLM":
            p = f"model.layers.{i}.block_sparse_moe."
            count, top_k, renorm = c["num_local_experts"], c["num_experts_per_tok"], True
            names = ("w1", "w3", "w2")  # gate, up, down
        else:
            p = f"model.layers.{i}.mlp."
            count, top_k = c["num_experts"], c["num_experts_per_tok"]
            renorm = c.get("norm_topk_prob", False)
            names = ("gate_proj", "up_proj", "down_proj")
        probs = softmax(linear(x, m.get(p + "gate.weight")))  # [n, experts]
        out = np.zeros_like(x)
        for t in range(x.shape[0]):
            # torch.topk: the largest first; ties go to the lower index here.
            chosen = np.argsort(-probs[t], kind="stable")[:top_k]
            weights = probs[t, chosen]
            if renorm:
                weights = weights / weights.sum()
            for e, weight in zip(chosen, weights):
                q = f"{p}experts.{e}."
                h = (activation(linear(x[t], m.get(q + names[0] + ".weight")), m.act)
                     * linear(x[t], m.get(q + names[1] + ".weight")))
                out[t] += weight * linear(h, m.get(q + names[2] + ".weight"))
        return out

    def is_sparse(self, i):
        m, c = self.m, self.m.c
        if m.arch == "MixtralForCausalLM":
            return True
        if m.arch == "Qwen3MoeForCausalLM":
            return (i not in (c.get("mlp_only_layers") or []) and c["num_experts"] > 0
                    and (i + 1) % c.get("decoder_sparse_step", 1) == 0)
        return False

    def forward(self, token_ids):
        """Logits [n, vocab] of the new tokens, after the cached ones."""
        m = self.m
        positions = np.arange(self.length, self.length + len(token_ids))
        x = m.get("model.embed_tokens.weight")[token_ids] * m.embed_scale  # [n, hidden]
        for i in range(m.layers):
            p = f"model.layers.{i}."
            h = rms_norm(x, m.get(p + "input_layernorm.weight"), m.eps, m.gemma)
            h = self.attention(i, h, positions)
            if m.gemma:
                h = rms_norm(h, m.get(p + "post_attention_layernorm.weight"), m.eps, True)
                x = x + h
                h = rms_norm(x, m.get(p + "pre_feedforward_layernorm.weight"), m.eps, True)
                h = self.dense_mlp(p + "mlp.", h)
                x = x + rms_norm(h, m.get(p + "post_feedforward_layernorm.weight"), m.eps, True)
                continue
            x = x + h
            h = rms_norm(x, m.get(p + "post_attention_layernorm.weight"), m.eps, False)
            x = x + (self.moe(i, h) if self.is_sparse(i) else self.dense_mlp(p + "mlp.", h))
        self.length += len(token_ids)
        x = rms_norm(x, m.get("model.norm.weight"), m.eps, m.gemma)
        logits = x @ m.lm_head.T
        if m.final_softcap:
            logits = np.tanh(logits / m.final_softcap) * m.final_softcap
        return logits


def top2_gap(logits):
    a, b = np.partition(logits, -2)[-2:]
    return float(abs(b - a))


def log_softmax(logits):
    shifted = logits - np.max(logits)
    return shifted - math.log(np.sum(np.exp(shifted)))


def greedy(model, prompt, count, logprobs=None):
    """count greedy ids after prompt (EOS not special) and the smallest top-2
    gap; `logprobs` (a list) gets each chosen id's log-softmax."""
    seq = Sequence(model)
    logits = seq.forward(np.asarray(prompt))[-1]
    ids, min_gap = [], math.inf
    while True:
        best = int(np.argmax(logits))
        min_gap = min(min_gap, top2_gap(logits))
        ids.append(best)
        if logprobs is not None:
            logprobs.append(float(log_softmax(logits)[best]))
        if len(ids) == count:
            return ids, min_gap
        logits = seq.forward(np.asarray([best]))[-1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=pathlib.Path,
                        help="a Hugging Face model folder (config.json, *.safetensors)")
    parser.add_argument("--prompts", required=True, type=pathlib.Path,
                        help="a JSON list of prompts, each a list of token ids")
    parser.add_argument("--new-tokens", required=True, type=int, help="greedy ids per prompt")
    args = parser.parse_args()
    try:
        if args.new_tokens < 1:
            raise ReferenceError(f"--new-tokens must be at least 1, got {args.new_tokens}")
        try:
            prompts = json.loads(args.prompts.read_text())
        except (OSError, ValueError) as error:
            raise ReferenceError(f"--prompts: {args.prompts}: {error}")
        if not isinstance(prompts, list) or not all(
                isinstance(p, list) and p and all(isinstance(t, int) for t in p) for p in prompts):
            raise ReferenceError(f"--prompts: {args.prompts} must hold a list of non-empty "
                                 "lists of token ids")
        model = Model(args.model)
        vocab = model.get("model.embed_tokens.weight").shape[0]
        results = []
        for prompt in prompts:
            bad = [t for t in prompt if not 0 <= t < vocab]
            if bad:
                raise ReferenceError(f"--prompts: token id {bad[0]} is outside the "
                                     f"vocabulary (0..{vocab - 1})")
            ids, gap = greedy(model, prompt, args.new_tokens)
            results.append({"prompt": prompt, "ids": ids, "min_gap": gap})
    except ReferenceError as error:
        sys.exit(f"hf_reference.py: {error}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
