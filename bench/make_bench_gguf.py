#!/usr/bin/python3
"""Writes a Llama checkpoint (config.json, model.safetensors, tokenizer.model) as GGUF.

  make_bench_gguf.py --hf DIR --gguf-py LLAMA_CPP/gguf-py --outtype f32|bf16|q8_0 --out FILE

For bench/llamacpp_compare.sh: llama.cpp runs the same weights as streamgen.
convert_hf_to_gguf.py needs PyTorch, which the bench machines lack, so this
script reads the safetensors with numpy and writes the file with llama.cpp's
own gguf-py, laid out as that converter lays out a LlamaForCausalLM
(tests/llamacpp/make_fixture.py's write_gguf, whose helpers it reuses: the
q/k permutation, the vocabulary, the hyperparameters). As the converter does
for --outtype bf16 / q8_0, 2-D weights get the type and 1-D norms stay
float32.
"""

import argparse
import json
import pathlib
import struct
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests" / "llamacpp"))
import make_fixture  # noqa: E402


def read_safetensors(path):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    body = memoryview(raw)[8 + n:]
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        begin, end = meta["data_offsets"]
        buf = body[begin:end]
        if meta["dtype"] == "F32":
            arr = np.frombuffer(buf, dtype=np.float32)
        elif meta["dtype"] == "BF16":
            arr = (np.frombuffer(buf, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            make_fixture.fail(f"{path}: tensor '{name}' has dtype {meta['dtype']} (F32 or BF16 expected)")
        out[name] = arr.reshape(meta["shape"]).copy()
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hf", required=True, type=pathlib.Path)
    parser.add_argument("--gguf-py", required=True, type=pathlib.Path)
    parser.add_argument("--outtype", required=True, choices=["f32", "bf16", "q8_0"])
    parser.add_argument("--out", required=True, type=pathlib.Path)
    args = parser.parse_args()
    sys.path.insert(0, str(args.gguf_py))
    import gguf

    config = json.loads((args.hf / "config.json").read_text())
    if config.get("architectures", ["?"])[0] != "LlamaForCausalLM":
        make_fixture.fail(f"{args.hf}: not a LlamaForCausalLM checkpoint")
    config.setdefault("model_type", "llama")
    weights = read_safetensors(args.hf / "model.safetensors")
    tokenizer = args.hf / "tokenizer.model"
    qtype = {"f32": gguf.GGMLQuantizationType.F32, "bf16": gguf.GGMLQuantizationType.BF16,
             "q8_0": gguf.GGMLQuantizationType.Q8_0}[args.outtype]

    arch = gguf.MODEL_ARCH.LLAMA
    writer = gguf.GGUFWriter(str(args.out), gguf.MODEL_ARCH_NAMES[arch])
    writer.add_name("streamgen benchmark model")
    writer.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "bf16": gguf.LlamaFileType.MOSTLY_BF16,
                          "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[args.outtype])
    rope = make_fixture.rope_parameters(config)
    make_fixture.family_parameters(gguf, writer, config, rope)
    tokens, scores, toktypes = make_fixture.sentencepiece_vocab(gguf, tokenizer, config["vocab_size"])
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(toktypes)
    gguf.SpecialVocab(args.hf, n_vocab=len(tokens)).add_to_gguf(writer)
    names = gguf.get_tensor_name_map(arch, config["num_hidden_layers"])
    for hf_name, data in make_fixture.gguf_tensors(config, weights):
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            make_fixture.fail(f"gguf-py has no GGUF name for tensor '{hf_name}'")
        data = np.ascontiguousarray(data, dtype=np.float32)
        if data.ndim == 2 and qtype != gguf.GGMLQuantizationType.F32:
            writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    print(json.dumps({"gguf": str(args.out), "outtype": args.outtype}))


if __name__ == "__main__":
    main()
