#!/usr/bin/python3
"""Trains streamgen's demo model: a small Llama on the Brown corpus, with
Debian's python3-torch (1.13) and python3-sentencepiece. Never run by the
server; tools/demo_model/train.sh runs it (corpus, tokenizer, this).

The model here is its own implementation of the Hugging Face Llama forward
pass (RMSNorm in float32, rotate-half rotary embeddings, SiLU-gated MLP,
causal softmax attention), independent of the engine: after training it
writes greedy continuations computed with this forward pass, on the weights
exactly as stored (bfloat16, upcast to float32), and tests/demo_model_test.cc
checks that the engine reproduces them token for token in float32.

    /usr/bin/python3 tools/demo_model/train.py --corpus DIR --template DIR --out DIR [options]

--corpus: make_corpus.py's output (train.jsonl, valid.jsonl). --template: a
directory written by streamgen-make-tiny-model with the tokenizer trained on
the corpus (config.json, tokenizer.model, tokenizer_config.json,
generation_config.json): its config gives the architecture; this script
replaces the random weights with trained ones.

--distill-from DIR (a draft model for speculative decoding,
tools/demo_model/train_draft.sh): DIR is a trained model with the same
tokenizer (the demo model); its logits on each training window are computed
on the fly (this file's Llama, no gradient) and the loss is the
distillation loss KL(teacher || student) on every position, mixed with the
corpus' next-token loss by --distill-alpha (1: KL only). A draft is
accepted where its greedy token equals the teacher's, so it should imitate
the teacher's distribution, not the corpus': the corpus' next token is the
teacher's own argmax only part of the time.

--init-layers 0,1 (with --distill-from): the student starts as the
teacher with only those layers (its embedding, final norm and head, and the
listed layers in order; the template must have the teacher's widths and as
many layers as listed), then is distilled. A layer-skipping draft starts
far closer to the teacher than random weights (on the demo model, layers
0,1 alone agree with the full model's argmax on 41% of validation
positions before any training), which matters when training time is short.
"""
import argparse
import json
import math
import os
import random
import shutil
import struct
import sys
import time

import torch
import torch.nn.functional as F

GREEDY_PROMPTS = ["Once upon a time", "The president said", "In the morning",
                  "The jury said", "It was a cold night", "Science is"]
SAMPLE_PROMPTS = ["Once upon a time", "The president said", "In the morning"]


# ---- the model (Hugging Face Llama semantics) ----

class Llama(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        d, i, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
        self.heads, self.kv_heads = c["num_attention_heads"], c["num_key_value_heads"]
        self.head_dim = c.get("head_dim") or d // self.heads
        hd = self.head_dim
        self.embed = torch.nn.Parameter(torch.empty(v, d))  # [vocab, hidden]
        self.layers = torch.nn.ModuleList()
        for _ in range(c["num_hidden_layers"]):
            layer = torch.nn.Module()
            layer.input_norm = torch.nn.Parameter(torch.ones(d))
            layer.q = torch.nn.Parameter(torch.empty(self.heads * hd, d))     # [out, in]
            layer.k = torch.nn.Parameter(torch.empty(self.kv_heads * hd, d))
            layer.v = torch.nn.Parameter(torch.empty(self.kv_heads * hd, d))
            layer.o = torch.nn.Parameter(torch.empty(d, self.heads * hd))
            layer.post_norm = torch.nn.Parameter(torch.ones(d))
            layer.gate = torch.nn.Parameter(torch.empty(i, d))
            layer.up = torch.nn.Parameter(torch.empty(i, d))
            layer.down = torch.nn.Parameter(torch.empty(d, i))
            self.layers.append(layer)
        self.norm = torch.nn.Parameter(torch.ones(d))
        self.tied = c.get("tie_word_embeddings", False)
        self.lm_head = None if self.tied else torch.nn.Parameter(torch.empty(v, d))
        std = c.get("initializer_range", 0.02)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                torch.nn.init.normal_(p, std=std)
        # GPT-2 style: the residual projections start smaller.
        for layer in self.layers:
            torch.nn.init.normal_(layer.o, std=std / math.sqrt(2 * len(self.layers)))
            torch.nn.init.normal_(layer.down, std=std / math.sqrt(2 * len(self.layers)))
        inv_freq = 1.0 / (c["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def rms_norm(self, x, weight):
        eps = self.c["rms_norm_eps"]
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
        return weight * x32.to(x.dtype)

    @staticmethod
    def rotate_half(x):
        half = x.shape[-1] // 2
        return torch.cat((-x[..., half:], x[..., :half]), dim=-1)

    def forward(self, ids):  # ids [batch, seq] -> logits [batch, seq, vocab]
        b, t = ids.shape
        x = F.embedding(ids, self.embed)  # [b, t, d]
        positions = torch.arange(t, dtype=torch.float32)
        freqs = torch.outer(positions, self.inv_freq)  # [t, hd/2]
        emb = torch.cat((freqs, freqs), dim=-1)         # [t, hd]
        cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
        mask = torch.full((t, t), float("-inf")).triu(1)
        hd, groups = self.head_dim, self.heads // self.kv_heads
        for layer in self.layers:
            h = self.rms_norm(x, layer.input_norm)
            q = (h @ layer.q.t()).view(b, t, self.heads, hd).transpose(1, 2)     # [b, H, t, hd]
            k = (h @ layer.k.t()).view(b, t, self.kv_heads, hd).transpose(1, 2)  # [b, KV, t, hd]
            v = (h @ layer.v.t()).view(b, t, self.kv_heads, hd).transpose(1, 2)
            q = q * cos + self.rotate_half(q) * sin
            k = k * cos + self.rotate_half(k) * sin
            if groups > 1:
                k = k.repeat_interleave(groups, dim=1)
                v = v.repeat_interleave(groups, dim=1)
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(hd) + mask          # [b, H, t, t]
            attn = torch.softmax(scores.float(), dim=-1).to(q.dtype) @ v       # [b, H, t, hd]
            x = x + attn.transpose(1, 2).reshape(b, t, self.heads * hd) @ layer.o.t()
            h = self.rms_norm(x, layer.post_norm)
            x = x + (F.silu(h @ layer.gate.t()) * (h @ layer.up.t())) @ layer.down.t()
        x = self.rms_norm(x, self.norm)
        return x @ (self.embed if self.tied else self.lm_head).t()

    @torch.no_grad()
    def generate_greedy(self, prompts, new_tokens):
        """Greedy continuations of a batch of equal-length prompts ([batch, t]
        ids), with a key/value cache (what forward computes, one position at
        a time; for making training text, not for reference outputs).
        Returns [batch, t + new_tokens]."""
        b = prompts.shape[0]
        hd = self.head_dim
        groups = self.heads // self.kv_heads
        cache = [None] * len(self.layers)  # per layer: keys, values [b, KV, pos, hd]
        ids, chunk, pos = prompts, prompts, 0
        for _ in range(new_tokens):
            t = chunk.shape[1]
            x = F.embedding(chunk, self.embed)  # [b, t, d]
            freqs = torch.outer(torch.arange(pos, pos + t, dtype=torch.float32), self.inv_freq)
            emb = torch.cat((freqs, freqs), dim=-1)  # [t, hd]
            cos, sin = emb.cos(), emb.sin()
            # Row i sees cached positions and chunk positions <= i.
            mask = torch.cat((torch.zeros(t, pos), torch.full((t, t), float("-inf")).triu(1)), dim=1)
            for n, layer in enumerate(self.layers):
                h = self.rms_norm(x, layer.input_norm)
                q = (h @ layer.q.t()).view(b, t, self.heads, hd).transpose(1, 2)     # [b, H, t, hd]
                k = (h @ layer.k.t()).view(b, t, self.kv_heads, hd).transpose(1, 2)  # [b, KV, t, hd]
                v = (h @ layer.v.t()).view(b, t, self.kv_heads, hd).transpose(1, 2)
                q = q * cos + self.rotate_half(q) * sin
                k = k * cos + self.rotate_half(k) * sin
                if cache[n] is not None:
                    k = torch.cat((cache[n][0], k), dim=2)
                    v = torch.cat((cache[n][1], v), dim=2)
                cache[n] = (k, v)
                if groups > 1:
                    k = k.repeat_interleave(groups, dim=1)
                    v = v.repeat_interleave(groups, dim=1)
                scores = (q @ k.transpose(-1, -2)) / math.sqrt(hd) + mask  # [b, H, t, pos + t]
                attn = torch.softmax(scores, dim=-1) @ v                    # [b, H, t, hd]
                x = x + attn.transpose(1, 2).reshape(b, t, self.heads * hd) @ layer.o.t()
                h = self.rms_norm(x, layer.post_norm)
                x = x + (F.silu(h @ layer.gate.t()) * (h @ layer.up.t())) @ layer.down.t()
            x = self.rms_norm(x[:, -1:], self.norm)
            logits = x @ (self.embed if self.tied else self.lm_head).t()  # [b, 1, vocab]
            pos += t
            chunk = logits.argmax(-1)  # [b, 1]
            ids = torch.cat((ids, chunk), dim=1)
        return ids

    def hf_tensors(self):
        """The weights under Hugging Face's names."""
        out = {"model.embed_tokens.weight": self.embed, "model.norm.weight": self.norm}
        if not self.tied:
            out["lm_head.weight"] = self.lm_head
        for n, layer in enumerate(self.layers):
            p = f"model.layers.{n}."
            out[p + "input_layernorm.weight"] = layer.input_norm
            out[p + "self_attn.q_proj.weight"] = layer.q
            out[p + "self_attn.k_proj.weight"] = layer.k
            out[p + "self_attn.v_proj.weight"] = layer.v
            out[p + "self_attn.o_proj.weight"] = layer.o
            out[p + "post_attention_layernorm.weight"] = layer.post_norm
            out[p + "mlp.gate_proj.weight"] = layer.gate
            out[p + "mlp.up_proj.weight"] = layer.up
            out[p + "mlp.down_proj.weight"] = layer.down
        return out


# ---- safetensors (the format is a JSON header and raw little-endian bytes) ----

def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().to(torch.bfloat16).contiguous()
        data = t.view(torch.int16).numpy().tobytes()
        header[name] = {"dtype": "BF16", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


# ---- data ----

def load_documents(path, sp, bos, eos):
    docs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)
            docs.append([bos] + sp.encode(doc["text"]) + [eos])
    return docs


def windows(stream, seq):
    """Non-overlapping [seq + 1] windows of a token stream (validation)."""
    return [stream[i:i + seq + 1] for i in range(0, len(stream) - seq, seq)]


@torch.no_grad()
def evaluate(model, valid_windows, batch):
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(valid_windows), batch):
        chunk = torch.tensor(valid_windows[i:i + batch])
        logits = model(chunk[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), chunk[:, 1:].reshape(-1),
                               reduction="sum")
        total += loss.item()
        count += chunk[:, 1:].numel()
    model.train()
    return total / count


@torch.no_grad()
def greedy(model, sp, bos, eos, prompt, new_tokens):
    ids = [bos] + sp.encode(prompt)
    prompt_ids = list(ids)
    out, margins = [], []
    for _ in range(new_tokens):
        logits = model(torch.tensor([ids]))[0, -1]
        top = torch.topk(logits, 2)
        margins.append(float(top.values[0] - top.values[1]))
        nxt = int(top.indices[0])
        out.append(nxt)
        ids.append(nxt)
        if nxt == eos:
            break
    return {"prompt": prompt, "prompt_ids": prompt_ids, "ids": out,
            "text": continuation_text(sp, prompt_ids[1:], out), "min_top2_margin": min(margins)}


def continuation_text(sp, prompt_ids, ids):
    """The text the continuation adds to the prompt's, as a streaming server
    shows it: its first piece keeps its leading space (sentencepiece drops it
    only at the start of a whole text)."""
    head = sp.decode(prompt_ids)
    full = sp.decode(prompt_ids + ids)
    assert full.startswith(head), (head, full)
    return full[len(head):]


def read_safetensors(path):
    """name -> float32 tensor (the BF16 files write_safetensors writes)."""
    with open(path, "rb") as f:
        length = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(length))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "BF16", (name, info["dtype"])
        begin, end = info["data_offsets"]
        raw = torch.frombuffer(bytearray(data[begin:end]), dtype=torch.int16)
        out[name] = raw.view(torch.bfloat16).float().reshape(info["shape"])
    return out


def load_teacher(directory, student_config):
    """The model to distill from, in float32 (its BF16 weights upcast), frozen."""
    with open(os.path.join(directory, "config.json")) as f:
        config = json.load(f)
    if config["vocab_size"] != student_config["vocab_size"]:
        raise SystemExit(f"--distill-from {directory}: vocab_size {config['vocab_size']} differs "
                         f"from the template's {student_config['vocab_size']} (a draft shares the tokenizer)")
    teacher = Llama(config)
    weights = read_safetensors(os.path.join(directory, "model.safetensors"))
    with torch.no_grad():
        for name, p in teacher.hf_tensors().items():
            p.copy_(weights[name])
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def teacher_text(teacher, train_stream, valid_docs, args, generator_seed):
    """Windows of [seq + 1] tokens: the teacher's greedy continuation of
    corpus prefixes (16 tokens, from random training positions; the first 16
    windows continue validation prefixes, held out for measuring)."""
    g = torch.Generator().manual_seed(generator_seed + 1)
    prefix = 16
    valid_stream = [t for d in valid_docs for t in d]
    starts = torch.randint(0, len(valid_stream) - prefix, (16,), generator=g).tolist()
    prompts = [valid_stream[s:s + prefix] for s in starts]
    starts = torch.randint(0, len(train_stream) - prefix, (args.self_text,), generator=g).tolist()
    prompts += [train_stream[s:s + prefix] for s in starts]
    out, began = [], time.time()
    for i in range(0, len(prompts), 64):
        ids = teacher.generate_greedy(torch.tensor(prompts[i:i + 64]), args.seq + 1 - prefix)
        out += ids.tolist()
        print(f"teacher text: {len(out)}/{len(prompts)} windows ({time.time() - began:.0f} s)", flush=True)
    return out


@torch.no_grad()
def init_from_teacher(student, teacher, layers):
    """Copies the teacher's embedding, final norm, head and `layers` (in that
    order) into the student, whose shapes must match."""
    if len(layers) != len(student.layers) or any(not 0 <= n < len(teacher.layers) for n in layers):
        raise SystemExit(f"--init-layers {layers}: the student has {len(student.layers)} layers, "
                         f"the teacher {len(teacher.layers)}")
    names = student.hf_tensors()
    source = teacher.hf_tensors()
    for name, p in names.items():
        if name.startswith("model.layers."):
            n = int(name.split(".")[2])
            src = source[name.replace(f"model.layers.{n}.", f"model.layers.{layers[n]}.", 1)]
        else:
            src = source[name]
        if p.shape != src.shape:
            raise SystemExit(f"--init-layers: {name} is {list(p.shape)} in the student, "
                             f"{list(src.shape)} in the teacher (the template needs the teacher's widths)")
        p.copy_(src)


@torch.no_grad()
def greedy_agreement(model, teacher, valid_windows, batch):
    """How often the model's argmax equals the teacher's on the validation
    windows: the acceptance rate of greedy speculative decoding on corpus text."""
    model.eval()
    same, count = 0, 0
    for i in range(0, len(valid_windows), batch):
        chunk = torch.tensor(valid_windows[i:i + batch])[:, :-1]
        same += int((model(chunk).argmax(-1) == teacher(chunk).argmax(-1)).sum())
        count += chunk.numel()
    model.train()
    return same / count


@torch.no_grad()
def sample(model, sp, bos, eos, prompt, new_tokens, temperature, top_p, generator):
    ids = [bos] + sp.encode(prompt)
    out = []
    for _ in range(new_tokens):
        logits = model(torch.tensor([ids]))[0, -1].float() / temperature
        probs = torch.softmax(logits, -1)
        sorted_probs, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_probs, 0) - sorted_probs < top_p
        sorted_probs = sorted_probs * keep
        nxt = int(order[torch.multinomial(sorted_probs / sorted_probs.sum(), 1, generator=generator)])
        if nxt == eos:
            break
        out.append(nxt)
        ids.append(nxt)
    return continuation_text(sp, ids[1:len(ids) - len(out)], out)


def write_greedy(model, sp, bos, eos, out_dir, new_tokens):
    outputs = [greedy(model, sp, bos, eos, p, new_tokens) for p in GREEDY_PROMPTS]
    with open(os.path.join(out_dir, "greedy.json"), "w") as f:
        json.dump({"new_tokens": new_tokens, "dtype": "float32", "outputs": outputs},
                  f, indent=1, ensure_ascii=False)
        f.write("\n")
    return outputs


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--template", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--min-lr", type=float, default=1e-4)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--steps", type=int, default=0, help="0: as many as --minutes allow")
    parser.add_argument("--minutes", type=float, default=50, help="training time budget")
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--greedy-tokens", type=int, default=32)
    parser.add_argument("--distill-from", default="",
                        help="a trained model (same tokenizer) to imitate: KL(teacher || student) loss")
    parser.add_argument("--distill-alpha", type=float, default=1.0,
                        help="weight of the KL loss against the corpus next-token loss (1: KL only)")
    parser.add_argument("--self-text", type=int, default=0,
                        help="with --distill-from: how many of the teacher's own greedy continuations "
                             "(of corpus prefixes, --seq tokens each) to train on besides the corpus")
    parser.add_argument("--init-layers", default="",
                        help="with --distill-from: start from the teacher's layers I,J,... (comma-separated)")
    parser.add_argument("--greedy-only", action="store_true",
                        help="only rewrite --out's greedy.json from its model.safetensors")
    args = parser.parse_args()

    import sentencepiece
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    torch.set_num_threads(args.threads)
    with open(os.path.join(args.template, "config.json")) as f:
        config = json.load(f)
    sp = sentencepiece.SentencePieceProcessor(model_file=os.path.join(args.template, "tokenizer.model"))
    bos, eos = config["bos_token_id"], config["eos_token_id"]
    if args.greedy_only:
        model = Llama(config)
        weights = read_safetensors(os.path.join(args.out, "model.safetensors"))
        with torch.no_grad():
            for name, p in model.hf_tensors().items():
                p.copy_(weights[name])
        model.eval()
        for g in write_greedy(model, sp, bos, eos, args.out, args.greedy_tokens):
            print(json.dumps({k: g[k] for k in ("prompt", "text", "min_top2_margin")}))
        return 0
    train_docs = load_documents(os.path.join(args.corpus, "train.jsonl"), sp, bos, eos)
    valid_docs = load_documents(os.path.join(args.corpus, "valid.jsonl"), sp, bos, eos)
    train_stream = [t for d in train_docs for t in d]
    valid_windows = windows([t for d in valid_docs for t in d], args.seq)
    model = Llama(config)
    teacher = load_teacher(args.distill_from, config) if args.distill_from else None
    self_windows, self_valid = [], []
    if args.self_text:
        if teacher is None:
            raise SystemExit("--self-text needs --distill-from (the model whose text to generate)")
        self_windows = teacher_text(teacher, train_stream, valid_docs, args, generator_seed=args.seed)
        self_valid, self_windows = self_windows[:16], self_windows[16:]
    if args.init_layers:
        if teacher is None:
            raise SystemExit("--init-layers needs --distill-from (the model whose layers to copy)")
        init_from_teacher(model, teacher, [int(n) for n in args.init_layers.split(",")])
        print(f"initialised from {args.distill_from}'s layers {args.init_layers}: argmax agreement "
              f"{greedy_agreement(model, teacher, valid_windows[:16], args.batch):.3f}", flush=True)
    params = sum(p.numel() for p in model.parameters())
    print(f"model: {params / 1e6:.2f}M parameters; train {len(train_stream)} tokens "
          f"({len(train_docs)} documents), valid {len(valid_windows) * args.seq} tokens; "
          f"{args.threads} threads", flush=True)

    decay = [p for p in model.parameters() if p.dim() == 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    os.makedirs(args.out, exist_ok=True)
    log = open(os.path.join(args.out, "train_log.jsonl"), "w")

    # Step time measured on the first steps decides the step count (budget).
    start = time.time()
    steps = args.steps
    step = 0
    generator = torch.Generator().manual_seed(args.seed)
    tokens_seen = 0
    last_train = float("nan")
    while True:
        if steps == 0 and step == 20:
            per_step = (time.time() - start) / 20
            evals = 1 + (args.minutes * 60 / per_step) // args.eval_every
            steps = max(args.warmup * 2, int(args.minutes * 60 / (per_step * (1 + 0.02 * evals))))
            print(f"{per_step:.2f} s/step: {steps} steps in {args.minutes} min", flush=True)
        total = steps if steps else 10 ** 9
        if step >= total:
            break
        # Warm-up then cosine decay to min-lr.
        if step < args.warmup:
            lr = args.lr * (step + 1) / args.warmup
        else:
            progress = (step - args.warmup) / max(1, total - args.warmup)
            lr = args.min_lr + 0.5 * (args.lr - args.min_lr) * (1 + math.cos(math.pi * progress))
        for group in optimizer.param_groups:
            group["lr"] = lr
        starts = torch.randint(0, len(train_stream) - args.seq - 1, (args.batch,), generator=generator)
        batch = torch.tensor([train_stream[s:s + args.seq + 1] for s in starts.tolist()])
        if self_windows:
            # Half of each batch: the teacher's own text (what a draft sees
            # when the target generates, loops and all).
            picks = torch.randint(0, len(self_windows), (args.batch // 2,), generator=generator)
            batch[: args.batch // 2] = torch.tensor([self_windows[p] for p in picks.tolist()])
        logits = model(batch[:, :-1])  # [batch, seq, vocab]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        if teacher is not None:
            with torch.no_grad():
                teacher_logp = F.log_softmax(teacher(batch[:, :-1]).float(), -1)  # [batch, seq, vocab]
            student_logp = F.log_softmax(logits.float(), -1)
            kl = F.kl_div(student_logp.reshape(-1, student_logp.shape[-1]),
                          teacher_logp.reshape(-1, teacher_logp.shape[-1]),
                          log_target=True, reduction="batchmean")
            loss = args.distill_alpha * kl + (1 - args.distill_alpha) * loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        tokens_seen += batch[:, 1:].numel()
        last_train = loss.item()
        step += 1
        if step % 10 == 0:
            print(f"step {step}/{steps or '?'} lr {lr:.2e} train loss {last_train:.4f} "
                  f"({time.time() - start:.0f} s)", flush=True)
        if step % args.eval_every == 0 or (steps and step == steps):
            valid = evaluate(model, valid_windows, args.batch)
            record = {"step": step, "lr": lr, "train_loss": last_train, "valid_loss": valid,
                      "teacher_argmax_agreement_self_text": (greedy_agreement(model, teacher, self_valid,
                                                                              args.batch)
                                                             if self_valid else None),
                      "teacher_argmax_agreement": (greedy_agreement(model, teacher, valid_windows[:16],
                                                                    args.batch) if teacher else None),
                      "valid_ppl": math.exp(valid), "tokens": tokens_seen,
                      "seconds": round(time.time() - start, 1)}
            print(json.dumps(record), flush=True)
            log.write(json.dumps(record) + "\n")
            log.flush()
    train_seconds = time.time() - start

    # The weights as stored: bfloat16. Everything below uses them (upcast to
    # float32), so that what is reported is what the engine serves.
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    valid = evaluate(model, valid_windows, args.batch)
    agreement = greedy_agreement(model, teacher, valid_windows, args.batch) if teacher else None
    self_agreement = greedy_agreement(model, teacher, self_valid, args.batch) if self_valid else None
    if agreement is not None:
        print(f"argmax agreement with {args.distill_from} on valid: {agreement:.3f}, "
              f"on its own held-out text: {self_agreement}", flush=True)
    for name in ("tokenizer.model", "tokenizer_config.json", "generation_config.json"):
        shutil.copy(os.path.join(args.template, name), os.path.join(args.out, name))
    # How the demo model reads best: sampled (greedy decoding of a model this
    # small loops). Requests that leave temperature/top_p unset get these.
    with open(os.path.join(args.out, "generation_config.json")) as f:
        generation = json.load(f)
    generation.update({"do_sample": True, "temperature": 0.8, "top_p": 0.95})
    with open(os.path.join(args.out, "generation_config.json"), "w") as f:
        json.dump(generation, f, indent=2)
        f.write("\n")
    config["torch_dtype"] = "bfloat16"
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    write_safetensors(os.path.join(args.out, "model.safetensors"), model.hf_tensors())
    model.eval()
    greedy_outputs = write_greedy(model, sp, bos, eos, args.out, args.greedy_tokens)
    sampler = torch.Generator().manual_seed(args.seed)
    samples = [{"prompt": p, "temperature": 0.8, "top_p": 0.95,
                "text": sample(model, sp, bos, eos, p, 48, 0.8, 0.95, sampler)} for p in SAMPLE_PROMPTS]
    summary = {"parameters": params, "steps": step, "tokens_seen": tokens_seen,
               "train_seconds": round(train_seconds, 1), "final_train_loss": last_train,
               "valid_loss_bf16": valid, "valid_ppl_bf16": math.exp(valid),
               "seq": args.seq, "batch": args.batch, "lr": args.lr, "warmup": args.warmup,
               "seed": args.seed, "threads": args.threads, "train_tokens": len(train_stream),
               "valid_tokens": len(valid_windows) * args.seq, "samples": samples,
               "distill_from": args.distill_from or None, "distill_alpha": args.distill_alpha,
               "teacher_argmax_agreement_valid": agreement,
               "teacher_argmax_agreement_self_text": self_agreement, "self_text": args.self_text,
               "greedy": [{k: g[k] for k in ("prompt", "text")} for g in greedy_outputs]}
    with open(os.path.join(args.out, "train_summary.json"), "w") as f:
        json.dump(summary, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(json.dumps(summary, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    sys.exit(main())
