#!/usr/bin/python3
"""Writes a tiny random-weight model of one family twice: in Hugging Face's layout and as GGUF.

  make_fixture.py --family NAME --gguf-py DIR --tokenizer FILE --out DIR [--seed N]

--family is one of FAMILIES (below; FIXTURES.md beside this script says what
each one exercises and how it is shaped around llama.cpp's own conventions).
--gguf-py is llama.cpp's own gguf-py folder (from the source bundle that the
node-llama-cpp package ships; llamacpp_reference_test.py clones it), so the
GGUF file is written by llama.cpp's writer. --tokenizer is a sentencepiece
tokenizer.model (the vocabulary both files carry; token ids are what the test
compares). --out gets:
  hf/config.json, hf/model.safetensors, hf/tokenizer.model   (transformers' keys)
  model.gguf                                                 (float32)
  weights.sha256                                             (of model.safetensors)

model.safetensors is in the family's usual dtype (FAMILIES[...]["config"]
["torch_dtype"]: bfloat16 for every family but `llama`, which stays float32);
the weights are drawn in float32 and rounded to that dtype first, so the GGUF
file's float32 tensors hold exactly the same values.

The GGUF file follows the family's class in the bundle's convert_hf_to_gguf.py
(conversion/llama.py, qwen.py, gemma.py, phi.py on top of base.py's TextModel):
the same metadata keys (TextModel.set_gguf_parameters and the class's additions
or, for Phi-3, its replacement), the same tensor transforms (q/k permuted per
head for the llama architecture only, +1 on every Gemma 3 *norm.weight, experts
stacked into 3D tensors, rope_freqs for llama3 RoPE, long/short factors for
longrope), HF tensor names mapped by gguf.get_tensor_name_map, and the
vocabulary as _set_vocab_sentencepiece writes it. The converter itself needs
torch, which this project does not install; this script repeats its steps
with numpy.

Other scripts import this one: family_config(), make_weights() and
write_hf() give the Hugging Face side without gguf-py.
"""

import argparse
import copy
import hashlib
import json
import math
import pathlib
import shutil
import struct
import sys

try:
    import numpy as np
    import sentencepiece  # noqa: F401  (the vocabulary, read as the converter reads it)
except ImportError as error:
    sys.exit(f"make_fixture.py: needs Python's {error.name} (scripts/install-deps.sh "
             "installs python3-numpy and python3-sentencepiece)")

# Keys every config.json here carries (vocab_size and the special ids come from
# the tokenizer). The shapes are tiny; grouped-query attention (fewer kv heads
# than heads) everywhere, so the k permute's kv-head rule and the kv-head
# broadcast are exercised.
_COMMON = {
    "attention_dropout": 0.0,
    "initializer_range": 0.02,
    "use_cache": True,
}

# Tied embeddings: the layers' outputs outweigh the embedding in the residual
# (else the model repeats its input token) and the final norm spreads the logits.
TIED = {"o": 4.0, "mlp": 3.0, "final_norm": 2.0}

# Gemma 3: the embedding (scaled by sqrt(hidden) on the way in) small beside
# the layers' outputs, the MLP's share small (llama.cpp's float16 GELU table is
# the largest error; see llamacpp_reference_test.py), q/k norms above 1 so
# attention is not uniform, the final norm spreading the logits.
GEMMA3 = {"embed": 0.05, "final_norm": 16.0, "post_ffn_norm": 0.25, "qk_norm": 1.5}

# The families. "config" is transformers' config.json for that architecture
# (the keys of its configuration_*.py that the family's real checkpoints
# carry); "gguf_arch" the gguf.MODEL_ARCH that the bundle's converter class
# writes; "seed" the weights' seed, chosen so that every step of llama.cpp's
# greedy continuations has a top-2 logit gap over llamacpp_reference_test.py's
# floor (and, for MoE, every token's k-th and (k+1)-th router logits differ by
# more than 1e-3, measured with hf_reference.py); "scales" overrides SCALES.
# Values chosen to make llama.cpp and transformers agree are explained in
# FIXTURES.md.
FAMILIES = {
    # Llama 2 shape: untied output, plain RoPE, float32 (the first fixture).
    "llama": {"seed": 20, "gguf_arch": "LLAMA", "config": dict(_COMMON, **{
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 256, "hidden_act": "silu", "rms_norm_eps": 1e-05,
        "rope_theta": 10000.0, "rope_scaling": None, "attention_bias": False,
        "mlp_bias": False, "pretraining_tp": 1, "tie_word_embeddings": False,
        "torch_dtype": "float32"})},
    # Llama 3.2 shape: llama3 RoPE whose original context (32) is inside the
    # prompts, explicit head_dim (24) != hidden / heads (16), tied embeddings.
    "llama3": {"seed": 20, "scales": TIED, "gguf_arch": "LLAMA", "config": dict(_COMMON, **{
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 24,
        "max_position_embeddings": 256, "hidden_act": "silu", "rms_norm_eps": 1e-05,
        "rope_theta": 500000.0,
        "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 32, "rope_type": "llama3"},
        "attention_bias": False, "mlp_bias": False, "pretraining_tp": 1,
        "tie_word_embeddings": True, "torch_dtype": "bfloat16"})},
    # Llama with linear RoPE scaling (positions divided by 4), spelt rope_type.
    "llama-linear": {"seed": 21, "gguf_arch": "LLAMA", "config": dict(_COMMON, **{
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 1024, "hidden_act": "silu", "rms_norm_eps": 1e-05,
        "rope_theta": 10000.0, "rope_scaling": {"factor": 4.0, "rope_type": "linear"},
        "attention_bias": False, "mlp_bias": False, "pretraining_tp": 1,
        "tie_word_embeddings": False, "torch_dtype": "bfloat16"})},
    # Qwen2.5 shape: q/k/v biases (not o), tied embeddings, sliding window
    # configured but off (use_sliding_window false), as its checkpoints ship.
    "qwen2": {"seed": 21, "scales": TIED, "gguf_arch": "QWEN2", "config": dict(_COMMON, **{
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
        "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 256, "hidden_act": "silu", "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0, "rope_scaling": None, "use_sliding_window": False,
        "sliding_window": 256, "max_window_layers": 2,
        "tie_word_embeddings": True, "torch_dtype": "bfloat16"})},
    # Qwen2 with YaRN (factor 4 over an original context of 32, inside the
    # prompts), spelt rope_scaling.type as Qwen2.5's model cards write it.
    "qwen2-yarn": {"seed": 20, "gguf_arch": "QWEN2", "config": dict(_COMMON, **{
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
        "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 128, "hidden_act": "silu", "rms_norm_eps": 1e-06,
        "rope_theta": 10000.0,
        "rope_scaling": {"factor": 4.0, "original_max_position_embeddings": 32,
                         "type": "yarn"},
        "use_sliding_window": False, "sliding_window": 128, "max_window_layers": 2,
        "tie_word_embeddings": False, "torch_dtype": "bfloat16"})},
    # Qwen3 shape: per-head q_norm/k_norm before RoPE, head_dim (32) != hidden / heads (16).
    "qwen3": {"seed": 20, "scales": TIED, "gguf_arch": "QWEN3", "config": dict(_COMMON, **{
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
        "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
        "max_position_embeddings": 256, "hidden_act": "silu", "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0, "rope_scaling": None, "attention_bias": False,
        "use_sliding_window": False, "sliding_window": None, "max_window_layers": 2,
        "tie_word_embeddings": True, "torch_dtype": "bfloat16"})},
    # Qwen3-30B-A3B shape: 8 experts, top 2, renormalized (norm_topk_prob);
    # every layer sparse (llama.cpp's qwen3moe has no dense layer: mlp_only_layers []).
    "qwen3moe": {"seed": 32, "gguf_arch": "QWEN3MOE", "config": dict(_COMMON, **{
        "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe",
        "hidden_size": 64, "intermediate_size": 160, "moe_intermediate_size": 48,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 32, "num_experts": 8, "num_experts_per_tok": 2,
        "norm_topk_prob": True, "decoder_sparse_step": 1, "mlp_only_layers": [],
        "output_router_logits": False, "router_aux_loss_coef": 0.001,
        "max_position_embeddings": 256, "hidden_act": "silu", "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0, "rope_scaling": None, "attention_bias": False,
        "use_sliding_window": False, "sliding_window": None, "max_window_layers": 2,
        "tie_word_embeddings": False, "torch_dtype": "bfloat16"})},
    # Mixtral shape: 8 experts (w1/w3/w2), top 2; sliding_window null (llama.cpp drops it).
    "mixtral": {"seed": 23, "gguf_arch": "LLAMA", "config": dict(_COMMON, **{
        "architectures": ["MixtralForCausalLM"], "model_type": "mixtral",
        "hidden_size": 64, "intermediate_size": 48, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2,
        "num_local_experts": 8, "num_experts_per_tok": 2,
        "output_router_logits": False, "router_aux_loss_coef": 0.02,
        "max_position_embeddings": 256, "hidden_act": "silu", "rms_norm_eps": 1e-05,
        "rope_theta": 1000000.0, "sliding_window": None,
        "tie_word_embeddings": False, "torch_dtype": "bfloat16"})},
    # Gemma 3 (1B shape): 6 layers, the sixth global (llama.cpp's fixed pattern),
    # sliding window 16 with its own RoPE base, four norms per layer, q/k norms,
    # GELU-tanh, embeddings * sqrt(hidden), final logit soft-capping.
    "gemma3": {"seed": 32, "scales": GEMMA3, "gguf_arch": "GEMMA3", "config": dict(_COMMON, **{
        "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
        "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 6,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
        "query_pre_attn_scalar": 32, "hidden_activation": "gelu_pytorch_tanh",
        "max_position_embeddings": 1024, "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0, "rope_local_base_freq": 100.0, "rope_scaling": None,
        "sliding_window": 16, "sliding_window_pattern": 6,
        "layer_types": ["sliding_attention"] * 5 + ["full_attention"],
        "attention_bias": False, "attn_logit_softcapping": None,
        "final_logit_softcapping": 30.0, "cache_implementation": "hybrid",
        "tie_word_embeddings": True, "torch_dtype": "bfloat16"})},
    # Phi-3 (mini-128k shape): fused qkv_proj and gate_up_proj, longrope whose
    # original context (4096) holds every prompt (short factors, attention
    # factor from 131072 / 4096), partial rotary (half of head_dim), no window.
    "phi3": {"seed": 20, "gguf_arch": "PHI3", "config": dict(_COMMON, **{
        "architectures": ["Phi3ForCausalLM"], "model_type": "phi3",
        "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 131072, "original_max_position_embeddings": 4096,
        "partial_rotary_factor": 0.5, "hidden_act": "silu", "rms_norm_eps": 1e-05,
        "rope_theta": 10000.0,
        "rope_scaling": {"type": "longrope",
                         "short_factor": [1.0, 1.25, 2.0, 3.5],
                         "long_factor": [1.0, 4.0, 16.0, 40.0]},
        "attention_bias": False, "sliding_window": None, "embd_pdrop": 0.0,
        "resid_pdrop": 0.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16"})},
}


def fail(message):
    sys.exit(f"make_fixture.py: {message}")


def family_config(family, vocab_size, bos_token_id=1, eos_token_id=2):
    """The family's config.json for a vocabulary of vocab_size."""
    if family not in FAMILIES:
        fail(f"--family: unknown family '{family}' (known: {', '.join(FAMILIES)})")
    config = copy.deepcopy(FAMILIES[family]["config"])
    config.update(vocab_size=vocab_size, bos_token_id=bos_token_id, eos_token_id=eos_token_id)
    if config["model_type"] == "gemma3_text":
        config["pad_token_id"] = 0
    return config


def head_dim(config):
    return config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]


def round_to_dtype(array, dtype):
    """float32 values that `dtype` represents exactly (bfloat16: round to nearest even)."""
    array = np.ascontiguousarray(array, dtype=np.float32)
    if dtype == "float32":
        return array
    if dtype != "bfloat16":
        fail(f"unsupported torch_dtype '{dtype}'")
    bits = array.view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.astype(np.uint32).view(np.float32)


# Standard deviations of the random weights, in units of 1/sqrt(fan-in)
# (embeddings: absolute), and the final norm's mean weight. q/k larger than 1
# so attention is not uniform; the output projection larger still so logits
# spread (greedy choices are not near-ties). A family's "scales" entry
# overrides some: tied embeddings need the layers' outputs to outweigh the
# embedding in the residual (else the model repeats its input token) and the
# final norm to spread the logits instead of lm_head.
SCALES = {"embed": 1.0, "qk": 2.0, "v": 1.0, "o": 1.0, "mlp": 1.0, "lm_head": 8.0,
          "router": 4.0, "final_norm": 1.0, "post_ffn_norm": 1.0,
          "qk_norm": 1.0}


def make_weights(config, seed, scales=None):
    """HF-named float32 weights (already rounded to config's torch_dtype), per family layout.

    Gemma 3's norm weights are offsets (x * (1 + w)); they are drawn so that
    both w and 1 + w are exact in bfloat16, since llama.cpp's converter adds 1
    to the bfloat16 tensor (Gemma3Model.norm_shift) before writing float32.
    """
    sc = dict(SCALES, **(scales or {}))
    rng = np.random.default_rng(seed)
    kind = config["model_type"]
    h, v = config["hidden_size"], config["vocab_size"]
    n_head, n_kv, hd = config["num_attention_heads"], config["num_key_value_heads"], head_dim(config)
    gemma = kind == "gemma3_text"

    def mat(rows, cols, scale=1.0):
        return rng.standard_normal((rows, cols)) * scale / np.sqrt(cols)

    def norm(n, mean=1.0):
        weight = mean * (1.0 + 0.1 * rng.standard_normal(n))
        if not gemma:
            return weight
        # The stored offset w = (1 + w) - 1, with 1 + w rounded first (to
        # multiples of 1/256, which w in (-1, 1) can hold in bfloat16 too).
        weight = np.round(round_to_dtype(weight, "bfloat16") * 256.0) / 256.0
        offset = round_to_dtype(weight, "float32") - np.float32(1.0)
        if (round_to_dtype(offset, "bfloat16") != offset).any():
            fail("a Gemma norm offset is not exact in bfloat16")
        return offset

    def mlp(prefix, ff, gate, up, down):
        w[prefix + gate] = mat(ff, h, sc["mlp"])
        w[prefix + up] = mat(ff, h, sc["mlp"])
        w[prefix + down] = mat(h, ff, sc["mlp"])

    w = {"model.embed_tokens.weight": rng.standard_normal((v, h)) * sc["embed"]}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = norm(h)
        q, k = mat(n_head * hd, h, sc["qk"]), mat(n_kv * hd, h, sc["qk"])
        vv = mat(n_kv * hd, h, sc["v"])
        if kind == "phi3":  # one fused projection, rows q | k | v
            w[p + "self_attn.qkv_proj.weight"] = np.concatenate([q, k, vv])
        else:
            w[p + "self_attn.q_proj.weight"] = q
            w[p + "self_attn.k_proj.weight"] = k
            w[p + "self_attn.v_proj.weight"] = vv
        if kind == "qwen2":  # Qwen2Attention: bias on q, k, v, never on o
            for name, rows in (("q", n_head * hd), ("k", n_kv * hd), ("v", n_kv * hd)):
                w[p + f"self_attn.{name}_proj.bias"] = 0.5 * rng.standard_normal(rows)
        w[p + "self_attn.o_proj.weight"] = mat(h, n_head * hd, sc["o"])
        if kind in ("qwen3", "qwen3_moe", "gemma3_text"):  # per-head RMSNorm of q and k
            w[p + "self_attn.q_norm.weight"] = norm(hd, sc["qk_norm"])
            w[p + "self_attn.k_norm.weight"] = norm(hd, sc["qk_norm"])
        w[p + "post_attention_layernorm.weight"] = norm(h)
        if gemma:  # the sandwich: post_attention_layernorm is on the attention's output
            w[p + "pre_feedforward_layernorm.weight"] = norm(h)
            w[p + "post_feedforward_layernorm.weight"] = norm(h, sc["post_ffn_norm"])
        if kind == "phi3":  # one fused projection, rows gate | up
            ff = config["intermediate_size"]
            w[p + "mlp.gate_up_proj.weight"] = np.concatenate([mat(ff, h, sc["mlp"]),
                                                                mat(ff, h, sc["mlp"])])
            w[p + "mlp.down_proj.weight"] = mat(h, ff, sc["mlp"])
        elif kind == "mixtral":
            n_exp = config["num_local_experts"]
            w[p + "block_sparse_moe.gate.weight"] = mat(n_exp, h, sc["router"])
            for e in range(n_exp):
                mlp(p + f"block_sparse_moe.experts.{e}.", config["intermediate_size"],
                    "w1.weight", "w3.weight", "w2.weight")
        elif kind == "qwen3_moe" and is_sparse_layer(config, i):
            w[p + "mlp.gate.weight"] = mat(config["num_experts"], h, sc["router"])
            for e in range(config["num_experts"]):
                mlp(p + f"mlp.experts.{e}.", config["moe_intermediate_size"],
                    "gate_proj.weight", "up_proj.weight", "down_proj.weight")
        else:
            mlp(p + "mlp.", config["intermediate_size"],
                "gate_proj.weight", "up_proj.weight", "down_proj.weight")
    w["model.norm.weight"] = norm(h, sc["final_norm"])
    if not config["tie_word_embeddings"]:
        w["lm_head.weight"] = mat(v, h, sc["lm_head"])
    return {name: round_to_dtype(data, config["torch_dtype"]) for name, data in w.items()}


def is_sparse_layer(config, layer):
    """Qwen3MoeDecoderLayer's rule for a layer with experts."""
    return (layer not in config["mlp_only_layers"] and config["num_experts"] > 0
            and (layer + 1) % config["decoder_sparse_step"] == 0)


def write_safetensors(path, tensors, dtype):
    header, offset, blobs = {}, 0, []
    for name in sorted(tensors):
        data = np.ascontiguousarray(tensors[name], dtype=np.float32)
        if dtype == "bfloat16":  # the upper half of each (already rounded) float32
            data = (data.view(np.uint32) >> 16).astype("<u2")
        blob = data.tobytes()
        header[name] = {"dtype": "BF16" if dtype == "bfloat16" else "F32",
                        "shape": list(data.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


def write_hf(hf_dir, config, weights, tokenizer_path):
    """config.json, tokenizer.model and model.safetensors; returns the weights' sha256."""
    hf_dir.mkdir(parents=True, exist_ok=True)
    (hf_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    shutil.copyfile(tokenizer_path, hf_dir / "tokenizer.model")
    write_safetensors(hf_dir / "model.safetensors", weights, config["torch_dtype"])
    return hashlib.sha256((hf_dir / "model.safetensors").read_bytes()).hexdigest()


# ---------------------------------------------------------------------------
# GGUF, as convert_hf_to_gguf.py writes it.


def find_hparam(config, keys):
    """ModelBase.find_hparam(optional=True): the first key present (its value may be None)."""
    for key in keys:
        if key in config:
            return config[key]
    return None


def rope_parameters(config):
    """TextModel.__init__'s self.rope_parameters: rope_scaling with the top-level keys mirrored."""
    rope = copy.deepcopy(config.get("rope_parameters", config.get("rope_scaling")) or {})
    theta = find_hparam(config, ["global_rope_theta", "rope_global_theta", "rope_theta_global",
                                 "rope_theta", "rotary_emb_base"])
    local = find_hparam(config, ["local_rope_theta", "rope_local_theta", "rope_theta_local",
                                 "swa_rope_theta", "rope_local_base_freq"])
    partial = find_hparam(config, ["partial_rotary_factor", "rope_pct", "rope_percent"])
    original = find_hparam(config, ["original_max_position_embeddings"])
    if "full_attention" not in rope and "sliding_attention" not in rope:
        if local is not None:
            rope["sliding_attention"] = {"rope_theta": local}
        if "rope_theta" not in rope and theta is not None:
            rope["rope_theta"] = theta
        if "rope_type" not in rope and rope.get("type") is not None:
            rope["rope_type"] = rope["type"]
        if "partial_rotary_factor" not in rope and partial is not None:
            rope["partial_rotary_factor"] = partial
        if "original_max_position_embeddings" not in rope and original is not None:
            rope["original_max_position_embeddings"] = original
    return rope


def text_model_parameters(gguf, writer, config, rope):
    """TextModel.set_gguf_parameters (conversion/base.py), the keys these configs reach."""
    c = config
    writer.add_block_count(c["num_hidden_layers"])
    writer.add_context_length(c["max_position_embeddings"])
    writer.add_embedding_length(c["hidden_size"])
    writer.add_feed_forward_length(c["intermediate_size"])
    writer.add_head_count(c["num_attention_heads"])
    writer.add_head_count_kv(c["num_key_value_heads"])
    params = rope.get("full_attention", rope)
    rope_type = params.get("rope_type")
    if rope_type == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(params["factor"])
    elif rope_type == "yarn":
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(params["factor"])
        writer.add_rope_scaling_orig_ctx_len(params["original_max_position_embeddings"])
        for key, add in (("extrapolation_factor", writer.add_rope_scaling_yarn_ext_factor),
                         ("attention_factor", writer.add_rope_scaling_yarn_attn_factor),
                         ("beta_fast", writer.add_rope_scaling_yarn_beta_fast),
                         ("beta_slow", writer.add_rope_scaling_yarn_beta_slow)):
            if params.get(key) is not None:
                add(params[key])
    elif rope_type in ("su", "longrope"):
        writer.add_rope_scaling_type(gguf.RopeScalingType.LONGROPE)
    elif rope_type not in (None, "llama3"):  # llama3: the rope_freqs tensor
        fail(f"the converter knows no RoPE type '{rope_type}'")
    if params.get("rope_theta") is not None:
        writer.add_rope_freq_base(params["rope_theta"])
    if rope.get("sliding_attention", {}).get("rope_theta") is not None:
        writer.add_rope_freq_base_swa(rope["sliding_attention"]["rope_theta"])
    writer.add_layer_norm_rms_eps(c["rms_norm_eps"])
    n_experts = find_hparam(c, ["num_local_experts", "num_experts", "n_routed_experts"])
    if n_experts is not None:
        writer.add_expert_count(n_experts)
    n_used = find_hparam(c, ["num_experts_per_tok", "num_experts_per_token", "top_k_experts"])
    if n_used is not None:
        writer.add_expert_used_count(n_used)
    if c.get("head_dim") is not None:
        writer.add_key_length(c["head_dim"])
        writer.add_value_length(c["head_dim"])
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)


def phi3_parameters(gguf, writer, config, rope):
    """Phi3MiniModel.set_gguf_parameters (conversion/phi.py): replaces TextModel's."""
    c = config
    rope_dims = int(rope.get("partial_rotary_factor", 1.0) * c["hidden_size"]) // c["num_attention_heads"]
    writer.add_context_length(c["max_position_embeddings"])
    writer.add_rope_scaling_orig_ctx_len(rope["original_max_position_embeddings"])
    writer.add_embedding_length(c["hidden_size"])
    writer.add_feed_forward_length(c["intermediate_size"])
    writer.add_block_count(c["num_hidden_layers"])
    writer.add_head_count(c["num_attention_heads"])
    writer.add_head_count_kv(c["num_key_value_heads"])
    writer.add_layer_norm_rms_eps(c["rms_norm_eps"])
    writer.add_rope_dimension_count(rope_dims)
    writer.add_rope_freq_base(rope.get("full_attention", rope)["rope_theta"])
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_sliding_window(c.get("sliding_window") or 0)
    # Phi3MiniModel.generate_extra_tensors writes the attention factor.
    scale = c["max_position_embeddings"] / rope["original_max_position_embeddings"]
    original = rope["original_max_position_embeddings"]
    if rope.get("long_factor"):
        writer.add_rope_scaling_attn_factors(
            math.sqrt(1 + math.log(scale) / math.log(original)) if scale > 1.0 else 1.0)


def family_parameters(gguf, writer, config, rope):
    """The converter class's set_gguf_parameters for the family."""
    c, kind = config, config["model_type"]
    if kind == "phi3":
        phi3_parameters(gguf, writer, c, rope)
        return
    text_model_parameters(gguf, writer, c, rope)
    if kind in ("llama", "mixtral"):  # LlamaModel
        writer.add_vocab_size(c["vocab_size"])
        writer.add_rope_dimension_count(head_dim(c))
    elif kind == "qwen3_moe":  # Qwen2MoeModel
        writer.add_expert_feed_forward_length(c["moe_intermediate_size"])
    elif kind == "gemma3_text":  # Gemma3Model: its defaults over TextModel's keys
        writer.add_context_length(c.get("max_position_embeddings", 131072))
        writer.add_head_count(c.get("num_attention_heads", 8))
        writer.add_layer_norm_rms_eps(c.get("rms_norm_eps", 1e-6))
        writer.add_key_length(c.get("head_dim", 256))
        writer.add_value_length(c.get("head_dim", 256))
        writer.add_rope_freq_base(rope.get("full_attention", rope).get("rope_theta", 1_000_000.0))
        if c.get("final_logit_softcapping"):
            writer.add_final_logit_softcapping(c["final_logit_softcapping"])
        if c.get("sliding_window_pattern") != 1:
            writer.add_sliding_window(c["sliding_window"])
        writer.add_head_count_kv(c.get("num_key_value_heads", 4))


def permute(weights, n_head, n_head_kv):
    """LlamaModel.permute (conversion/llama.py): HF's rotate-half layout to GGUF's interleaved one."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2)
            .reshape(weights.shape))


def sentencepiece_vocab(gguf, tokenizer_path, vocab_size):
    """TextModel._create_vocab_sentencepiece (conversion/base.py), without added tokens."""
    from sentencepiece import SentencePieceProcessor
    types = gguf.TokenType  # the converter's SentencePieceTokenTypes has these values
    sp = SentencePieceProcessor()
    sp.LoadFromFile(str(tokenizer_path))
    tokens = [f"[PAD{i}]".encode() for i in range(vocab_size)]
    scores = [-10000.0] * vocab_size
    toktypes = [types.UNUSED] * vocab_size
    for i in range(min(sp.vocab_size(), vocab_size)):
        kind = types.NORMAL
        if sp.IsUnknown(i):
            kind = types.UNKNOWN
        elif sp.IsControl(i):
            kind = types.CONTROL
        elif sp.IsUnused(i):
            kind = types.UNUSED
        elif sp.IsByte(i):
            kind = types.BYTE
        tokens[i], scores[i], toktypes[i] = sp.IdToPiece(i).encode(), sp.GetScore(i), kind
    return tokens, scores, toktypes


def gguf_tensors(config, weights):
    """(HF-style name, float32 array) pairs after the family's modify_tensors.

    The names are still HF's (merged experts get the converter's merged names);
    gguf.get_tensor_name_map turns them into GGUF's.
    """
    c, kind = config, config["model_type"]
    n_head, n_kv = c["num_attention_heads"], c["num_key_value_heads"]
    out = []
    for name, data in weights.items():
        if kind in ("llama", "mixtral"):  # LlamaModel.modify_tensors: undo_permute
            if name.endswith(("q_proj.weight", "q_proj.bias")):
                data = permute(data, n_head, n_head)
            elif name.endswith(("k_proj.weight", "k_proj.bias")):
                data = permute(data, n_head, n_kv)
        if kind == "gemma3_text" and name.endswith("norm.weight"):
            data = data + np.float32(1.0)  # Gemma3Model.norm_shift: x * (1 + w) stored as 1 + w
        if ".experts." not in name:
            out.append((name, data))
    # Experts: one 3D tensor [expert, rows, cols] per projection.
    for layer in range(c["num_hidden_layers"]):
        if kind == "mixtral":  # LlamaModel: block_sparse_moe.experts.N.wK -> feed_forward.experts.wK
            n_exp = c["num_local_experts"]
            for wid in ("w1", "w2", "w3"):
                stacked = np.stack([weights[f"model.layers.{layer}.block_sparse_moe.experts.{e}.{wid}.weight"]
                                    for e in range(n_exp)])
                out.append((f"layers.{layer}.feed_forward.experts.{wid}.weight", stacked))
        elif kind == "qwen3_moe" and is_sparse_layer(c, layer):  # Qwen2MoeModel
            for wname in ("down_proj", "gate_proj", "up_proj"):
                stacked = np.stack([weights[f"model.layers.{layer}.mlp.experts.{e}.{wname}.weight"]
                                    for e in range(c["num_experts"])])
                out.append((f"model.layers.{layer}.mlp.experts.{wname}.weight", stacked))
    return out


def extra_tensors(gguf, config, rope):
    """generate_extra_tensors: (GGUF name, float32 array) pairs."""
    c = config
    params = rope.get("full_attention", rope)
    if params.get("rope_type", "").lower() == "llama3":  # LlamaModel
        base, dim = params.get("rope_theta", 10000.0), head_dim(c)
        freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
        factor = params.get("factor", 8.0)
        low, high = params.get("low_freq_factor", 1.0), params.get("high_freq_factor", 4.0)
        old_context = params.get("original_max_position_embeddings", 8192)
        factors = []
        for freq in freqs:
            wavelen = 2 * math.pi / freq
            if wavelen < old_context / high:
                factors.append(1)
            elif wavelen > old_context / low:
                factors.append(factor)
            else:
                smooth = (old_context / wavelen - low) / (high - low)
                factors.append(1 / ((1 - smooth) / factor + smooth))
        yield (gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight",
               np.array(factors, dtype=np.float32))
    if c["model_type"] == "phi3" and params.get("long_factor"):  # Phi3MiniModel
        rope_dims = int(params.get("partial_rotary_factor", 1.0) * c["hidden_size"]) // c["num_attention_heads"]
        for key in ("long_factor", "short_factor"):
            if len(params[key]) != rope_dims // 2:
                fail(f"phi3: rope_scaling.{key} has {len(params[key])} values, not {rope_dims // 2}")
        yield (gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FACTORS_LONG] + ".weight",
               np.array(params["long_factor"], dtype=np.float32))
        yield (gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FACTORS_SHORT] + ".weight",
               np.array(params["short_factor"], dtype=np.float32))


def write_gguf(gguf, path, hf_dir, family, config, weights, tokenizer_path):
    c = config
    arch = getattr(gguf.MODEL_ARCH, FAMILIES[family]["gguf_arch"])
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[arch])
    # Never "phi3" or "phi-3" in the name: llama.cpp (src/llama-vocab.cpp) then
    # sets attributes of Phi-3's special tokens, which this vocabulary lacks, and
    # refuses the model ("error loading model vocabulary: _Map_base::at").
    writer.add_name("streamgen llama.cpp reference fixture")
    rope = rope_parameters(c)
    family_parameters(gguf, writer, c, rope)
    # _set_vocab_sentencepiece (Phi3MiniModel.set_vocab does the same for this tokenizer).
    tokens, scores, toktypes = sentencepiece_vocab(gguf, tokenizer_path, c["vocab_size"])
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(toktypes)
    gguf.SpecialVocab(hf_dir, n_vocab=len(tokens)).add_to_gguf(writer)
    if c["model_type"] == "gemma3_text":
        writer.add_add_space_prefix(False)
    names = gguf.get_tensor_name_map(arch, c["num_hidden_layers"])
    for gguf_name, data in extra_tensors(gguf, c, rope):
        writer.add_tensor(gguf_name, data)
    for hf_name, data in gguf_tensors(c, weights):
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            fail(f"gguf-py has no GGUF name for tensor '{hf_name}'")
        writer.add_tensor(name, np.ascontiguousarray(data, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="llama",
                        help=f"the model family: {', '.join(FAMILIES)} (default llama)")
    parser.add_argument("--gguf-py", required=True, type=pathlib.Path,
                        help="llama.cpp's gguf-py folder (holds the gguf package)")
    parser.add_argument("--tokenizer", required=True, type=pathlib.Path,
                        help="a sentencepiece tokenizer.model")
    parser.add_argument("--out", required=True, type=pathlib.Path, help="output folder")
    parser.add_argument("--seed", type=int,
                        help="the weights' random seed (default: the family's, chosen so that "
                             "llama.cpp's top-2 logit gaps clear the test's floor)")
    args = parser.parse_args()
    if args.family not in FAMILIES:
        fail(f"--family: unknown family '{args.family}' (known: {', '.join(FAMILIES)})")
    if not (args.gguf_py / "gguf" / "__init__.py").is_file():
        fail(f"--gguf-py: {args.gguf_py} holds no gguf package (gguf/__init__.py)")
    if not args.tokenizer.is_file():
        fail(f"--tokenizer: {args.tokenizer} is not a file")
    sys.path.insert(0, str(args.gguf_py))
    import gguf  # llama.cpp's own writer

    from sentencepiece import SentencePieceProcessor
    sp = SentencePieceProcessor()
    sp.LoadFromFile(str(args.tokenizer))
    config = family_config(args.family, sp.vocab_size(), sp.bos_id(), sp.eos_id())
    family = FAMILIES[args.family]
    seed = family.get("seed", 20) if args.seed is None else args.seed
    weights = make_weights(config, seed, family.get("scales"))
    hf_dir = args.out / "hf"
    digest = write_hf(hf_dir, config, weights, args.tokenizer)
    (args.out / "weights.sha256").write_text(digest + "  hf/model.safetensors\n")
    write_gguf(gguf, args.out / "model.gguf", hf_dir, args.family, config, weights, args.tokenizer)
    print(json.dumps({"family": args.family, "seed": seed, "hf": str(hf_dir), "gguf": str(args.out / "model.gguf"),
                      "vocab_size": config["vocab_size"], "sha256": digest}))


if __name__ == "__main__":
    main()
