#!/usr/bin/python3
"""Writes a tiny random-weight Llama twice: in Hugging Face's layout and as GGUF.

  make_fixture.py --gguf-py DIR --tokenizer FILE --out DIR [--seed N]

--gguf-py is llama.cpp's own gguf-py folder (from the source bundle that the
node-llama-cpp package ships; tests/llamacpp/CMakeLists.txt clones it), so the
GGUF file is written by llama.cpp's writer. --tokenizer is a sentencepiece
tokenizer.model (the vocabulary both files carry; token ids are what the test
compares). --out gets:
  hf/config.json, hf/model.safetensors, hf/tokenizer.model   (transformers' keys)
  model.gguf                                                 (float32)
  weights.sha256                                             (of model.safetensors)

The GGUF file follows convert_hf_to_gguf.py's LlamaModel (conversion/llama.py
and conversion/base.py in the bundle): the same metadata keys, q_proj and
k_proj permuted per head (LlamaModel.permute, k with the kv-head count), HF
tensor names mapped by gguf.get_tensor_name_map, and the vocabulary as
_set_vocab_sentencepiece writes it. The converter itself needs torch, which this
project does not install; this script repeats its steps with numpy.
"""

import argparse
import hashlib
import json
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

# The model's shape: grouped-query attention (2 kv heads for 4 heads) so the
# k permute's kv-head rule is exercised; untied output so output.weight exists.
CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 160,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
    "hidden_act": "silu",
    "rms_norm_eps": 1e-05,
    "rope_theta": 10000.0,
    "rope_scaling": None,
    "attention_bias": False,
    "mlp_bias": False,
    "tie_word_embeddings": False,
    "initializer_range": 0.02,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "torch_dtype": "float32",
    "use_cache": True,
}


def fail(message):
    sys.exit(f"make_fixture.py: {message}")


def make_weights(config, seed):
    """HF-named float32 weights. Scaled so logits spread (greedy choices are not near-ties)."""
    rng = np.random.default_rng(seed)
    h, ff, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    n_head, n_kv = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = h // n_head

    def mat(rows, cols, scale=1.0):
        return (rng.standard_normal((rows, cols)) * scale / np.sqrt(cols)).astype(np.float32)

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    w = {"model.embed_tokens.weight": (rng.standard_normal((v, h))).astype(np.float32)}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = norm(h)
        w[p + "self_attn.q_proj.weight"] = mat(n_head * head_dim, h, 2.0)
        w[p + "self_attn.k_proj.weight"] = mat(n_kv * head_dim, h, 2.0)
        w[p + "self_attn.v_proj.weight"] = mat(n_kv * head_dim, h)
        w[p + "self_attn.o_proj.weight"] = mat(h, n_head * head_dim)
        w[p + "post_attention_layernorm.weight"] = norm(h)
        w[p + "mlp.gate_proj.weight"] = mat(ff, h)
        w[p + "mlp.up_proj.weight"] = mat(ff, h)
        w[p + "mlp.down_proj.weight"] = mat(h, ff)
    w["model.norm.weight"] = norm(h)
    w["lm_head.weight"] = mat(v, h, 4.0)
    return w


def write_safetensors(path, tensors):
    header, offset, blobs = {}, 0, []
    for name in sorted(tensors):
        data = np.ascontiguousarray(tensors[name]).tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


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


def write_gguf(gguf, path, hf_dir, config, weights, tokenizer_path):
    c = config
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    writer.add_name("streamgen llama.cpp reference fixture")
    # TextModel.set_gguf_parameters, then LlamaModel's additions.
    writer.add_block_count(c["num_hidden_layers"])
    writer.add_context_length(c["max_position_embeddings"])
    writer.add_embedding_length(c["hidden_size"])
    writer.add_feed_forward_length(c["intermediate_size"])
    writer.add_head_count(c["num_attention_heads"])
    writer.add_head_count_kv(c["num_key_value_heads"])
    writer.add_rope_freq_base(c["rope_theta"])
    writer.add_layer_norm_rms_eps(c["rms_norm_eps"])
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_vocab_size(c["vocab_size"])
    writer.add_rope_dimension_count(c["hidden_size"] // c["num_attention_heads"])
    # _set_vocab_sentencepiece.
    tokens, scores, toktypes = sentencepiece_vocab(gguf, tokenizer_path, c["vocab_size"])
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(toktypes)
    gguf.SpecialVocab(hf_dir, n_vocab=len(tokens)).add_to_gguf(writer)
    # LlamaModel.modify_tensors: q/k permuted; names through the tensor map.
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, c["num_hidden_layers"])
    for hf_name, data in weights.items():
        if hf_name.endswith("q_proj.weight"):
            data = permute(data, c["num_attention_heads"], c["num_attention_heads"])
        elif hf_name.endswith("k_proj.weight"):
            data = permute(data, c["num_attention_heads"], c["num_key_value_heads"])
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
    parser.add_argument("--gguf-py", required=True, type=pathlib.Path,
                        help="llama.cpp's gguf-py folder (holds the gguf package)")
    parser.add_argument("--tokenizer", required=True, type=pathlib.Path,
                        help="a sentencepiece tokenizer.model")
    parser.add_argument("--out", required=True, type=pathlib.Path, help="output folder")
    parser.add_argument("--seed", type=int, default=20, help="the weights' random seed")
    args = parser.parse_args()
    if not (args.gguf_py / "gguf" / "__init__.py").is_file():
        fail(f"--gguf-py: {args.gguf_py} holds no gguf package (gguf/__init__.py)")
    if not args.tokenizer.is_file():
        fail(f"--tokenizer: {args.tokenizer} is not a file")
    sys.path.insert(0, str(args.gguf_py))
    import gguf  # llama.cpp's own writer

    from sentencepiece import SentencePieceProcessor
    sp = SentencePieceProcessor()
    sp.LoadFromFile(str(args.tokenizer))
    config = dict(CONFIG, vocab_size=sp.vocab_size())

    hf_dir = args.out / "hf"
    hf_dir.mkdir(parents=True, exist_ok=True)
    (hf_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    shutil.copyfile(args.tokenizer, hf_dir / "tokenizer.model")
    weights = make_weights(config, args.seed)
    write_safetensors(hf_dir / "model.safetensors", weights)
    digest = hashlib.sha256((hf_dir / "model.safetensors").read_bytes()).hexdigest()
    (args.out / "weights.sha256").write_text(digest + "  hf/model.safetensors\n")
    write_gguf(gguf, args.out / "model.gguf", hf_dir, config, weights, args.tokenizer)
    print(json.dumps({"hf": str(hf_dir), "gguf": str(args.out / "model.gguf"),
                      "vocab_size": config["vocab_size"], "sha256": digest}))


if __name__ == "__main__":
    main()
