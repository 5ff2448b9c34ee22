#!/usr/bin/env python3
"""Helpers of scripts/device-check.sh (issue 13): one file, one subcommand each.

  make-model      a random-weight model in Hugging Face layout (LAYOUTS: Llama,
                  Qwen3, Qwen3-MoE), written with torch (on the GPU for the
                  large shapes; numpy on a CPU without torch): config.json,
                  sharded safetensors with model.safetensors.index.json, tokenizer
  torch-info      torch's version, CUDA, GPU name and CMake prefix (JSON)
  copy-bandwidth  device-to-device copy bandwidth of a >= 4 GiB tensor (JSON)
  env             git commit, host, GPU (nvidia-smi), torch, tools (JSON)
  model-info      what make-model prints, for a model the C++ tool wrote
  tests-summary   pass/fail counts and names from a ctest log (JSON)
  record          appends one step's record to the steps file (JSON lines)
  report          device-check.json and device-check.md from the step records
                  and the figures the steps wrote

Only make-model (where it has it), torch-info and copy-bandwidth import torch; record and report
need nothing but the standard library (the CPU dry run has no torch, perhaps).
The safetensors files are written here byte by byte (the format is an 8-byte
header length, a JSON header and the raw tensors), so the safetensors package
is not needed either.
"""
import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import time

# Llama-2-7B's shape (its config.json), and a tiny model of the same layout.
# Issue 20's families: Qwen3-0.6B's shape (q/k norm, head_dim 128 over a
# hidden size of 1024, tied embeddings, its 151,936-row vocabulary), and
# Qwen3-30B-A3B's layer shape (128 experts, 8 routed per token, expert
# width 768) with 2 of its 48 layers, so that the model is made and loaded
# in seconds on the device (3.6 GB); each with a tiny twin for the dry run.
# The demo tokenizer's 4,096 pieces use the first rows of the vocabulary.
LAYOUTS = {
    "7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
               num_attention_heads=32, num_key_value_heads=32, vocab_size=32000,
               max_position_embeddings=4096, rms_norm_eps=1e-5, rope_theta=10000.0),
    "tiny": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                 num_attention_heads=4, num_key_value_heads=4, vocab_size=32000,
                 max_position_embeddings=4096, rms_norm_eps=1e-5, rope_theta=10000.0),
    "qwen3": dict(family="qwen3", hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                  num_attention_heads=16, num_key_value_heads=8, head_dim=128, vocab_size=151936,
                  max_position_embeddings=40960, rms_norm_eps=1e-6, rope_theta=1000000.0,
                  tie_word_embeddings=True),
    "tiny-qwen3": dict(family="qwen3", hidden_size=256, intermediate_size=688, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=128,
                       vocab_size=32000, max_position_embeddings=4096, rms_norm_eps=1e-6,
                       rope_theta=1000000.0, tie_word_embeddings=True),
    "qwen3moe": dict(family="qwen3moe", hidden_size=2048, intermediate_size=6144,
                     num_hidden_layers=2, num_attention_heads=32, num_key_value_heads=4,
                     head_dim=128, vocab_size=151936, max_position_embeddings=40960,
                     rms_norm_eps=1e-6, rope_theta=1000000.0, num_experts=128,
                     num_experts_per_tok=8, moe_intermediate_size=768),
    "tiny-qwen3moe": dict(family="qwen3moe", hidden_size=256, intermediate_size=688,
                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                          head_dim=64, vocab_size=32000, max_position_embeddings=4096,
                          rms_norm_eps=1e-6, rope_theta=1000000.0, num_experts=8,
                          num_experts_per_tok=2, moe_intermediate_size=128),
}


def llama_config(shape):
    """config.json of a layout: transformers' keys for its family."""
    shape = dict(shape)
    family = shape.pop("family", "llama")
    if family == "llama":
        c = {"architectures": ["LlamaForCausalLM"], "model_type": "llama"}
        c.update(shape)
        c.update(head_dim=shape["hidden_size"] // shape["num_attention_heads"], hidden_act="silu",
                 rope_scaling=None, attention_bias=False, mlp_bias=False, tie_word_embeddings=False,
                 initializer_range=0.02, bos_token_id=1, eos_token_id=2, torch_dtype="bfloat16",
                 use_cache=True)
        return c
    # Qwen3 / Qwen3-MoE (configuration_qwen3.py, configuration_qwen3_moe.py).
    moe = family == "qwen3moe"
    c = {"architectures": ["Qwen3MoeForCausalLM" if moe else "Qwen3ForCausalLM"],
         "model_type": "qwen3_moe" if moe else "qwen3"}
    c.update(shape)
    c.update(hidden_act="silu", rope_scaling=None, attention_bias=False, attention_dropout=0.0,
             use_sliding_window=False, sliding_window=None,
             max_window_layers=shape["num_hidden_layers"], initializer_range=0.02,
             bos_token_id=1, eos_token_id=2, torch_dtype="bfloat16", use_cache=True)
    c.setdefault("tie_word_embeddings", False)
    if moe:
        c.update(decoder_sparse_step=1, mlp_only_layers=[], norm_topk_prob=True,
                 output_router_logits=False, router_aux_loss_coef=0.001)
    return c


def llama_tensors(c):
    """[(name, shape)] in Hugging Face's names, the order a checkpoint has them."""
    h, i, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    d = c["head_dim"]
    q, kv = c["num_attention_heads"] * d, c["num_key_value_heads"] * d
    qk_norm = c["model_type"] in ("qwen3", "qwen3_moe")
    experts = c.get("num_experts", 0)
    out = [("model.embed_tokens.weight", (v, h))]
    for l in range(c["num_hidden_layers"]):
        p = "model.layers.%d." % l
        out += [(p + "input_layernorm.weight", (h,)),
                (p + "self_attn.q_proj.weight", (q, h)), (p + "self_attn.k_proj.weight", (kv, h)),
                (p + "self_attn.v_proj.weight", (kv, h)), (p + "self_attn.o_proj.weight", (h, q))]
        if qk_norm:
            out += [(p + "self_attn.q_norm.weight", (d,)), (p + "self_attn.k_norm.weight", (d,))]
        out += [(p + "post_attention_layernorm.weight", (h,))]
        if experts:
            m = c["moe_intermediate_size"]
            out += [(p + "mlp.gate.weight", (experts, h))]
            for e in range(experts):
                x = p + "mlp.experts.%d." % e
                out += [(x + "gate_proj.weight", (m, h)), (x + "up_proj.weight", (m, h)),
                        (x + "down_proj.weight", (h, m))]
        else:
            out += [(p + "mlp.gate_proj.weight", (i, h)), (p + "mlp.up_proj.weight", (i, h)),
                    (p + "mlp.down_proj.weight", (h, i))]
    out += [("model.norm.weight", (h,))]
    if not c.get("tie_word_embeddings"):
        out += [("lm_head.weight", (v, h))]
    return out


def numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def write_tensor(f, t):
    """A CPU tensor's bytes into f (through numpy when torch has it)."""
    try:
        f.write(t.view(torch_int16(t)).numpy())
    except (RuntimeError, TypeError):  # a torch built without numpy
        import ctypes
        f.write(ctypes.string_at(t.data_ptr(), t.numel() * t.element_size()))


def torch_int16(t):
    import torch
    return torch.int16 if t.element_size() == 2 else torch.uint8


def reusable(a, c, tensors):
    """The model in a.out is this one: same config, seed, std and every shard whole."""
    try:
        if json.load(open(os.path.join(a.out, "config.json"))) != c:
            return False
        index = json.load(open(os.path.join(a.out, "model.safetensors.index.json")))
        meta = index["metadata"]
        if meta.get("seed") != a.seed or meta.get("std") != a.std:
            return False
        files = set(index["weight_map"].values())
        if len(files) != a.shards or set(index["weight_map"]) != {n for n, _ in tensors}:
            return False
        size = 0
        for f in files:
            with open(os.path.join(a.out, f), "rb") as fh:
                n = int.from_bytes(fh.read(8), "little")
                size += os.path.getsize(os.path.join(a.out, f)) - 8 - n
        return size == meta["total_size"] and os.path.exists(os.path.join(a.out, "tokenizer.model"))
    except (OSError, ValueError, KeyError):
        return False


def numpy_bf16(rng, shape, std):
    """Random normal * std as bfloat16 bytes, drawn with numpy (no torch):
    float32 rounded to the nearest even bfloat16, as torch's .to() rounds."""
    import numpy as np
    x = rng.standard_normal(numel(shape), dtype=np.float32) * np.float32(std)
    u = x.view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2").tobytes()


def cmd_make_model(a):
    try:
        import torch  # noqa: the only torch user besides the two below
    except ImportError:  # the dry run on a machine without python's torch: numpy draws
        torch = None
        if not a.device.startswith("cpu"):
            sys.exit("make-model: no python torch, and --device %s is not the CPU" % a.device)
    t0 = time.time()
    shape = dict(LAYOUTS[a.layout])
    c = llama_config(shape)
    tensors = llama_tensors(c)
    if torch is not None:
        device = torch.device(a.device)
        gen = torch.Generator(device=device)
        gen.manual_seed(a.seed)
    else:
        import numpy as np
        device = "cpu (numpy)"
        rng = np.random.default_rng(a.seed)
    os.makedirs(a.out, exist_ok=True)
    # A model this run already made (a warm machine keeps build-device/).
    if reusable(a, c, tensors):
        print(json.dumps({"layout": a.layout, "config": c, "weight_bytes": sum(
            2 * numel(s) for _, s in tensors), "shards": a.shards, "tokenizer": a.tokenizer,
            "generated_on": "reused: made earlier by this command",
            "torch": torch.__version__ if torch else None,
            "seconds": round(time.time() - t0, 2)}))
        return
    for stale in os.listdir(a.out):
        if stale.endswith(".safetensors") or stale == "model.safetensors.index.json":
            os.remove(os.path.join(a.out, stale))
    # Contiguous shards of roughly equal bytes (bfloat16: 2 bytes an element).
    total = sum(2 * numel(s) for _, s in tensors)
    per_shard = total / a.shards
    shards, acc = [[]], 0
    for name, s in tensors:
        if acc >= per_shard * len(shards) and len(shards) < a.shards:
            shards.append([])
        shards[-1].append((name, s))
        acc += 2 * numel(s)
    weight_map = {}
    for k, group in enumerate(shards, 1):
        fname = "model-%05d-of-%05d.safetensors" % (k, len(shards))
        header, off = {}, 0
        for name, s in group:
            n = 2 * numel(s)
            header[name] = {"dtype": "BF16", "shape": list(s), "data_offsets": [off, off + n]}
            off += n
            weight_map[name] = fname
        header["__metadata__"] = {"format": "pt"}
        hb = json.dumps(header, separators=(",", ":")).encode()
        hb += b" " * (-len(hb) % 8)
        with open(os.path.join(a.out, fname), "wb") as f:
            f.write(len(hb).to_bytes(8, "little"))
            f.write(hb)
            for name, s in group:
                if name.endswith("norm.weight"):
                    if torch is None:
                        f.write(b"\x80\x3f" * numel(s))  # bfloat16 1.0
                        continue
                    t = torch.ones(s, dtype=torch.bfloat16)
                elif torch is None:
                    f.write(numpy_bf16(rng, s, a.std))
                    continue
                else:
                    # std 0.02 (HF's initializer_range): activations stay finite
                    # through 32 layers; drawn on the device, copied once.
                    t = torch.randn(s, generator=gen, device=device, dtype=torch.float32)
                    t = t.mul_(a.std).to(torch.bfloat16).cpu()
                write_tensor(f, t.contiguous())
    with open(os.path.join(a.out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total, "seed": a.seed, "std": a.std},
                   "weight_map": weight_map}, f, indent=1)
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(c, f, indent=2)
    with open(os.path.join(a.out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": 1, "eos_token_id": 2}, f)
    shutil.copyfile(a.tokenizer, os.path.join(a.out, "tokenizer.model"))
    tok_cfg = os.path.join(os.path.dirname(a.tokenizer), "tokenizer_config.json")
    cfg = json.load(open(tok_cfg)) if os.path.exists(tok_cfg) else {}
    cfg["model_max_length"] = c["max_position_embeddings"]
    with open(os.path.join(a.out, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    print(json.dumps({"layout": a.layout, "config": c, "weight_bytes": total, "shards": len(shards),
                      "tokenizer": a.tokenizer, "generated_on": str(device),
                      "torch": torch.__version__ if torch else None,
                      "seconds": round(time.time() - t0, 2)}))


def cmd_torch_info(a):
    import torch
    import torch.utils
    info = {"python": sys.executable, "torch": torch.__version__,
            "cuda": getattr(torch.version, "cuda", None),
            "cmake_prefix_path": getattr(torch.utils, "cmake_prefix_path", None),
            "cuda_available": torch.cuda.is_available()}
    if info["cuda_available"]:
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_memory_bytes"] = torch.cuda.get_device_properties(0).total_memory
    for mod in ("transformers", "safetensors", "sentencepiece", "grpc", "numpy"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception as e:  # noqa: only recorded
            info[mod] = None
    print(json.dumps(info))


def cmd_copy_bandwidth(a):
    import torch
    dev = torch.device(a.device)
    n = int(a.gib * (1 << 30))
    x = torch.ones(n, dtype=torch.uint8, device=dev)
    y = torch.empty_like(x)
    y.copy_(x)  # warm-up
    torch.cuda.synchronize(dev)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(a.iters):
        y.copy_(x)
    end.record()
    torch.cuda.synchronize(dev)
    s = start.elapsed_time(end) / 1000.0
    print(json.dumps({"device": str(dev), "bytes": n, "iters": a.iters, "seconds": round(s, 6),
                      "copy_gb_per_s": round(2.0 * n * a.iters / s / 1e9, 2),
                      "method": "y.copy_(x) of %d bytes, %d times, CUDA events; "
                                "bytes read + written / time" % (n, a.iters)}))


def cmd_record(a):
    rec = {"name": a.name, "status": a.status, "seconds": round(a.seconds, 2), "rc": a.rc,
           "command": a.command, "log": a.log or None}
    if a.reason:
        rec["reason"] = a.reason
    if a.status not in ("ok", "skipped") and a.log and os.path.exists(a.log):
        with open(a.log, errors="replace") as f:
            lines = f.read().splitlines()
        rec["log_tail"] = lines[-25:]
        # The first errors, which a long log's tail may not show (ninja -k 0).
        marks = ("error:", "Error", "FAILED:", "CMake Error", "undefined reference", "***Failed")
        rec["log_errors"] = [l[:400] for l in lines if any(m in l for m in marks)][:30]
    with open(a.file, "a") as f:
        f.write(json.dumps(rec) + "\n")


def run_out(cmd, cwd=None):
    """First lines of a command's output, or None where it cannot run."""
    try:
        r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def cmd_env(a):
    root = a.root
    commit = run_out(["git", "rev-parse", "HEAD"], cwd=root)
    dirty = None
    if commit:
        dirty = bool(run_out(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root))
    else:
        commit = os.environ.get("GIT_COMMIT") or None
    pretty = None
    if os.path.exists("/etc/os-release"):
        for line in open("/etc/os-release"):
            if line.startswith("PRETTY_NAME="):
                pretty = line.split("=", 1)[1].strip().strip('"')
    mem = None
    if os.path.exists("/proc/meminfo"):
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    import platform
    host = {"os": pretty, "kernel": platform.release(), "cpus": os.cpu_count(), "memory_bytes": mem,
            "glibc": " ".join(platform.libc_ver()),
            "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                         if l.startswith("model name")), None) if os.path.exists("/proc/cpuinfo") else None}
    tools = {}
    for name, cmd in (("cmake", ["cmake", "--version"]), ("ninja", ["ninja", "--version"]),
                      ("cxx", ["c++", "--version"]), ("nvcc", ["nvcc", "--version"])):
        out = run_out(cmd)
        tools[name] = (out.splitlines()[-1] if name == "nvcc" else out.splitlines()[0]) if out else None
    host["tools"] = tools
    gpu = None
    smi = run_out(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,compute_cap",
                   "--format=csv,noheader"])
    if smi:
        f = [x.strip() for x in smi.splitlines()[0].split(",")]
        gpu = dict(zip(["name", "driver", "memory_total", "compute_cap"], f))
        gpu["count"] = len(smi.splitlines())
    else:
        gpu = {"reason": "nvidia-smi absent or failed"}
    torch_info = last_json(a.torch_info) if a.torch_info else None
    fixture = os.path.join(root, "..", "shared", "fixtures", "tiny-llama", "model.safetensors")
    print(json.dumps({"git_commit": commit, "git_dirty": dirty, "host": host, "gpu": gpu,
                      "torch": torch_info or {"reason": "no python with torch"},
                      "libtorch": a.libtorch,
                      "fixture_tiny_llama_present": os.path.exists(fixture)}))


def cmd_model_info(a):
    c = json.load(open(os.path.join(a.dir, "config.json")))
    c.setdefault("head_dim", c["hidden_size"] // c["num_attention_heads"])
    files = sorted(f for f in os.listdir(a.dir) if f.endswith(".safetensors"))
    print(json.dumps({"layout": a.layout, "config": c,
                      "weight_bytes": sum(2 * numel(s) for _, s in llama_tensors(c)),
                      "file_bytes": sum(os.path.getsize(os.path.join(a.dir, f)) for f in files),
                      "shards": len(files), "tokenizer": a.tokenizer, "generated_on": a.made_by}))


def cmd_tests_summary(a):
    """Counts and names from a ctest log (its per-test lines and its summary)."""
    import re
    results = {}
    out = {"excluded_regex": a.exclude, "logs": [os.path.basename(l) for l in a.log],
           "fixture_tiny_llama_present": os.path.exists(
               os.path.join(a.root, "..", "shared", "fixtures", "tiny-llama", "model.safetensors")),
           "total": 0, "failed": 0, "passed": 0, "skipped": 0}
    for log in a.log:  # one ctest run each
        text = open(log, errors="replace").read() if os.path.exists(log) else ""
        mine = {}
        for m in re.finditer(r"Test\s+#\d+: (\S+) \.+\s*(\*\*\*)?(\w[\w: ]*?)\s+[\d.]+ sec", text):
            mine[m.group(1)] = m.group(3).strip()
        results.update(mine)
        skipped = sum(1 for v in mine.values() if v in ("Skipped", "Not Run"))
        summary = re.search(r"(\d+)% tests passed, (\d+) tests failed out of (\d+)", text)
        if summary:  # ctest counts a skipped test as not failed
            total, failed = int(summary.group(3)), int(summary.group(2))
        else:
            out["note"] = ("%s has no ctest summary line (cut at its cap?): counts from its "
                           "per-test lines" % os.path.basename(log))
            total = len(mine)
            failed = sum(1 for v in mine.values() if v not in ("Passed", "Skipped", "Not Run"))
        out["total"] += total
        out["failed"] += failed
        out["skipped"] += skipped
        out["passed"] += total - failed - skipped
    out["failed_names"] = sorted(k for k, v in results.items()
                                 if v not in ("Passed", "Skipped", "Not Run"))
    out["cuda_tests"] = {k: v for k, v in sorted(results.items()) if "cuda" in k.lower()}
    print(json.dumps(out))


# ---- report ----

def read_json_lines(path):
    out = []
    if os.path.exists(path):
        for line in open(path, errors="replace"):
            line = line.strip()
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
    return out


def last_json(path):
    rows = read_json_lines(path)
    return rows[-1] if rows else None


def cmd_report(a):
    out = a.out
    fig_dir = os.path.join(out, "figures")
    steps = read_json_lines(os.path.join(out, "steps.jsonl"))
    by_name = {s["name"]: s for s in steps}
    env = last_json(os.path.join(fig_dir, "env.out")) or {}
    cmds = {s["name"]: s.get("command") for s in steps}
    figures = []

    def fig(name, value, unit, step, note=None):
        if value is None:
            return
        f = {"name": name, "value": value, "unit": unit, "step": step, "command": cmds.get(step)}
        if note:
            f["note"] = note
        figures.append(f)

    def load(step):
        s = by_name.get(step)
        if not s or s["status"] != "ok":
            return None
        return last_json(os.path.join(fig_dir, step + ".out"))

    model = last_json(os.path.join(fig_dir, "model.out"))
    weight_bytes = None
    e128 = load("engine_bench_128")
    if e128:
        weight_bytes = e128.get("decode_weight_bytes")
        fig("engine_decode_tokens_per_s_batch1", e128["decode_tokens_per_s"], "tokens/s",
            "engine_bench_128", "streamgen-bench-engine: one greedy request through the engine API, "
            "%d-token prompt, mean of the timed runs" % e128.get("prefill_tokens", 0))
        fig("engine_ttft_ms_prompt128", e128["prefill_ms"], "ms", "engine_bench_128",
            "admission to first token (TokenEvent.prefill_ms), best run")
        fig("engine_model_step_ms_batch1", e128["model_step_ms"], "ms", "engine_bench_128")
        fig("engine_model_step_ms_batch%d" % e128["batch"], e128["batch_step_ms"], "ms",
            "engine_bench_128")
        fig("decode_weight_bytes", weight_bytes, "bytes", "engine_bench_128",
            "weights one decode step reads (embedding excluded)")
        if e128.get("probe_gbs"):
            fig("cpu_read_probe_gb_per_s", e128["probe_gbs"], "GB/s", "engine_bench_128")
    e2048 = load("engine_bench_2048")
    if e2048:
        fig("engine_ttft_ms_prompt2048", e2048["prefill_ms"], "ms", "engine_bench_2048",
            "admission to first token (TokenEvent.prefill_ms)")
    # Issue 20's family models (device-check.sh's families step).
    for s in steps:
        if s["name"].startswith("engine_bench_qwen3"):
            fam = s["name"][len("engine_bench_"):]
            e = load(s["name"])
            if not e:
                continue
            note = "streamgen-bench-engine on the %s-shaped model (model_%s), %d-token prompt" % (
                fam, fam, e.get("prefill_tokens", 0))
            fig("engine_decode_tokens_per_s_batch1_" + fam, e["decode_tokens_per_s"], "tokens/s",
                s["name"], note)
            fig("engine_ttft_ms_prompt128_" + fam, e["prefill_ms"], "ms", s["name"])
            fig("engine_model_step_ms_batch%d_%s" % (e["batch"], fam), e["batch_step_ms"], "ms",
                s["name"])
    for s in steps:
        if s["name"].startswith("grpc_") and s["status"] == "ok":
            r = last_json(os.path.join(fig_dir, s["name"] + ".out"))
            if not r:
                continue
            c, p = r["concurrency"], r["prompt_tokens"]
            tag = "c%d_prompt%d_out%d" % (c, p, r["max_new_tokens"])
            fig("grpc_output_tokens_per_s_" + tag, r["output_tokens_per_s"], "tokens/s", s["name"],
                "streamgen-client bench: %d measured calls after %d warm-up, %d errors"
                % (r["requests"], r["warmup"], r["errors"]))
            fig("grpc_ttft_p50_ms_" + tag, r["ttft_ms"]["p50"], "ms", s["name"])
            fig("grpc_itl_p50_ms_" + tag, r["itl_ms"]["p50"], "ms", s["name"])
    hf = load("hf_baseline")
    hf_tps = None
    if hf and hf.get("status") == "ok":
        for run in hf["runs"]:
            p = run["prompt_tokens"]
            fig("hf_ttft_ms_prompt%d" % p, run["ttft_ms"], "ms", "hf_baseline",
                "generate() call to the first new token at the TextIteratorStreamer")
            if p == hf["decode_prompt_tokens"]:
                hf_tps = run["decode_tokens_per_s"]
                fig("hf_decode_tokens_per_s_batch1", hf_tps, "tokens/s", "hf_baseline",
                    "(new tokens - 1) / (last token - first token), %d-token prompt" % p)
    bw = load("copy_bandwidth")
    ref_gbs, ref_name, ref_step = None, None, None
    if bw:
        ref_gbs, ref_name, ref_step = bw["copy_gb_per_s"], "device copy", "copy_bandwidth"
        fig("device_copy_gb_per_s", ref_gbs, "GB/s", "copy_bandwidth", bw.get("method"))
    elif e128 and e128.get("probe_gbs"):
        ref_gbs, ref_name, ref_step = e128["probe_gbs"], "CPU read probe", "engine_bench_128"
    eng_tps = e128["decode_tokens_per_s"] if e128 else None
    if weight_bytes and ref_gbs:
        for who, tps in (("streamgen", eng_tps), ("hf", hf_tps)):
            if tps:
                gbs = weight_bytes * tps / 1e9
                fig(who + "_weight_gb_per_s", round(gbs, 2), "GB/s", ref_step,
                    "decode_weight_bytes x batch-1 decode tokens/s")
                fig(who + "_weight_bandwidth_fraction", round(gbs / ref_gbs, 4), "fraction",
                    ref_step, "of the %s bandwidth (%.1f GB/s) measured in this run"
                    % (ref_name, ref_gbs))
    if eng_tps and hf_tps:
        fig("streamgen_over_hf_decode", round(eng_tps / hf_tps, 3), "ratio", "hf_baseline")
    tests = last_json(os.path.join(fig_dir, "tests.out"))
    failed_steps = [s["name"] for s in steps if s["status"] in ("failed", "timeout")]
    report = {
        "schema": "streamgen-device-check/1",
        "mode": a.mode,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git_commit": env.get("git_commit"),
        "git_dirty": env.get("git_dirty"),
        "host": env.get("host"),
        "gpu": env.get("gpu"),
        "torch": env.get("torch"),
        "libtorch": env.get("libtorch"),
        "device": a.device,
        "dtype": a.dtype,
        "budget_s": a.budget,
        "total_s": round(a.total, 1),
        "fixture_tiny_llama_present": env.get("fixture_tiny_llama_present"),
        "model": model,
        "tests": tests,
        "steps": steps,
        "figures": figures,
        "failed_steps": failed_steps,
        "ok": not failed_steps,
    }
    with open(os.path.join(out, "device-check.json"), "w") as f:
        json.dump(report, f, indent=1)
    md = ["# streamgen device check (%s)" % a.mode, "",
          "%s, commit %s%s, device %s, dtype %s, %.0f s of a %s s budget." % (
              report["date"], report["git_commit"], " (dirty)" if report["git_dirty"] else "",
              a.device, a.dtype, a.total, a.budget),
          "GPU: %s. torch: %s." % (
              (env.get("gpu") or {}).get("name", "none"), (env.get("torch") or {}).get("torch", "none")),
          ""]
    if tests:
        md += ["Tests: %s passed, %s failed of %s run (excluded: `%s`)." % (
            tests.get("passed"), tests.get("failed"), tests.get("total"), tests.get("excluded_regex")), ""]
    md += ["| figure | value | unit |", "|---|---|---|"]
    md += ["| %s | %s | %s |" % (f["name"], f["value"], f["unit"]) for f in figures]
    md += ["", "| step | status | seconds | note |", "|---|---|---|---|"]
    md += ["| %s | %s | %s | %s |" % (s["name"], s["status"], s["seconds"],
                                      s.get("reason", "").replace("|", "/")) for s in steps]
    with open(os.path.join(out, "device-check.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("make-model")
    p.add_argument("--out", required=True)
    p.add_argument("--layout", choices=sorted(LAYOUTS), default="7b")
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--device", default="cuda:0")
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--std", type=float, default=0.02)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=cmd_make_model)
    p = sub.add_parser("torch-info")
    p.set_defaults(fn=cmd_torch_info)
    p = sub.add_parser("copy-bandwidth")
    p.add_argument("--device", default="cuda:0")
    p.add_argument("--gib", type=float, default=4.0)
    p.add_argument("--iters", type=int, default=10)
    p.set_defaults(fn=cmd_copy_bandwidth)
    p = sub.add_parser("record")
    for k in ("file", "name", "status", "log", "reason", "command"):
        p.add_argument("--" + k, default="")
    p.add_argument("--seconds", type=float, default=0)
    p.add_argument("--rc", type=int, default=0)
    p.set_defaults(fn=cmd_record)
    p = sub.add_parser("env")
    p.add_argument("--root", required=True)
    p.add_argument("--torch-info", default="")
    p.add_argument("--libtorch", default="")
    p.set_defaults(fn=cmd_env)
    p = sub.add_parser("model-info")
    p.add_argument("--dir", required=True)
    p.add_argument("--layout", required=True)
    p.add_argument("--tokenizer", default="")
    p.add_argument("--made-by", default="")
    p.set_defaults(fn=cmd_model_info)
    p = sub.add_parser("tests-summary")
    p.add_argument("--log", action="append", required=True)
    p.add_argument("--exclude", default="")
    p.add_argument("--root", required=True)
    p.set_defaults(fn=cmd_tests_summary)
    p = sub.add_parser("report")
    p.add_argument("--out", required=True)
    p.add_argument("--mode", required=True)
    p.add_argument("--device", required=True)
    p.add_argument("--dtype", required=True)
    p.add_argument("--budget", type=int, required=True)
    p.add_argument("--total", type=float, required=True)
    p.set_defaults(fn=cmd_report)
    a = ap.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
