#!/usr/bin/python3
"""Writes a ~100-150M-parameter random-weight benchmark model of one family.

  make_family_model.py --family NAME --tokenizer FILE --out DIR [--dtype bfloat16|float32]

The shapes are those of bench/make_bench_model.sh's Llama (hidden 768,
intermediate 2048, 12 layers, 12 heads of 64, 12 kv heads, vocab 32000), so
that the families differ only in what makes them a family: Qwen2's q/k/v
biases, Qwen3's per-head q/k norms, Gemma 3's four norms per layer, GELU,
q/k norms, softcapping and 5 sliding : 1 global layers, Phi-3's fused
qkv_proj and gate_up_proj, and the MoE's 8 experts (top 2) of intermediate
1024, so that a token's active MLP bytes equal the dense model's.

The family's config.json, weights and layout come from
tests/llamacpp/make_fixture.py (family_config, make_weights, write_hf): only
the shapes (and the keys that depend on them) are replaced here. --out gets
config.json, model.safetensors and tokenizer.model (a copy of --tokenizer).
"""

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests" / "llamacpp"))
import make_fixture  # noqa: E402  (family_config, make_weights, write_hf)

# make_fixture's family for each benchmark family.
FIXTURE = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "gemma3": "gemma3",
           "phi3": "phi3", "qwen3moe": "qwen3moe"}

# The Llama benchmark model's shapes (bench/make_bench_model.sh).
SHAPE = {"hidden_size": 768, "intermediate_size": 2048, "num_hidden_layers": 12,
         "num_attention_heads": 12, "num_key_value_heads": 12, "max_position_embeddings": 2048}


def bench_config(family, vocab_size, bos, eos, dtype):
    config = make_fixture.family_config(FIXTURE[family], vocab_size, bos, eos)
    config.update(SHAPE, torch_dtype=dtype)
    kind = config["model_type"]
    if "head_dim" in config:
        config["head_dim"] = 64
    if kind in ("qwen2", "qwen3", "qwen3_moe"):
        config["max_window_layers"] = SHAPE["num_hidden_layers"]
        if kind == "qwen2":
            config["sliding_window"] = SHAPE["max_position_embeddings"]
    if kind == "qwen3_moe":
        config["moe_intermediate_size"] = 1024  # top 2 x 1024 = the dense intermediate
    if kind == "gemma3_text":  # Gemma 3 1B's pattern: every sixth layer global
        config["query_pre_attn_scalar"] = 64
        config["sliding_window"] = 512
        config["layer_types"] = (["sliding_attention"] * 5 + ["full_attention"]) * 2
    if kind == "phi3":
        # Phi-3.5-mini's RoPE (longrope over an original 4096), the factors
        # resized to the rotary half of head_dim 64 (16 values).
        config["max_position_embeddings"] = 131072
        config["rope_scaling"] = {"type": "longrope", "short_factor": [1.0] * 16,
                                  "long_factor": [1.0 + i for i in range(16)]}
    return config


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", required=True, help=f"one of {', '.join(FIXTURE)}")
    parser.add_argument("--tokenizer", required=True, type=pathlib.Path,
                        help="a sentencepiece tokenizer.model (32000 pieces)")
    parser.add_argument("--out", required=True, type=pathlib.Path, help="output folder")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"],
                        help="the safetensors dtype (default bfloat16)")
    parser.add_argument("--seed", type=int, default=20)
    args = parser.parse_args()
    if args.family not in FIXTURE:
        sys.exit(f"make_family_model.py: --family: unknown family '{args.family}' "
                 f"(known: {', '.join(FIXTURE)})")
    if not args.tokenizer.is_file():
        sys.exit(f"make_family_model.py: --tokenizer: {args.tokenizer} is not a file")
    from sentencepiece import SentencePieceProcessor
    sp = SentencePieceProcessor()
    sp.LoadFromFile(str(args.tokenizer))
    config = bench_config(args.family, sp.vocab_size(), sp.bos_id(), sp.eos_id(), args.dtype)
    scales = make_fixture.FAMILIES[FIXTURE[args.family]].get("scales")
    weights = make_fixture.make_weights(config, args.seed, scales)
    params = sum(w.size for w in weights.values())
    make_fixture.write_hf(args.out, config, weights, args.tokenizer)
    print(f"make_family_model.py: {args.family}: {params / 1e6:.1f}M parameters in {args.out}")


if __name__ == "__main__":
    main()
