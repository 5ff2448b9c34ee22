#!/usr/bin/env python3
"""The Hugging Face baseline of scripts/device-check.sh (issue 13): transformers'
generate() streaming through a TextIteratorStreamer, greedy, batch 1, on the
same weights and device as streamgen's figures.

  bench/hf_baseline.py --model DIR [--device cuda:0] [--dtype bfloat16]
      [--prompt-tokens 128 2048] [--new-tokens 128] [--valid-vocab N]

For each prompt length: TTFT (generate() called -> the first new token handed
to the streamer) and batch-1 decode tokens/s ((new tokens - 1) / (last token -
first token), timed at the streamer's put(), i.e. as the tokens leave
generate(); the text is still decoded and read from the streamer as a server
would). One short warm-up generate() first (CUDA context, cuBLAS handles).

The prompts are BOS + ids drawn with a fixed seed from [3, valid vocab); EOS is
never produced (min_new_tokens = max_new_tokens, as streamgen's ignore_eos).
--valid-vocab: the model's embedding may have more rows than its tokenizer has
pieces (the device check's 7B-shaped model: 32000 rows, a 4096-piece
tokenizer); logits past the tokenizer are masked, as streamgen's sampler
does, so every token can be decoded.

Prints one JSON object. Where torch or transformers cannot be imported it
prints {"status": "skipped", "reason": ...} and exits 0 (the CPU dry run).
"""
import argparse
import json
import random
import sys
import threading
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--device", default="cuda:0")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--prompt-tokens", type=int, nargs="+", default=[128, 2048])
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--valid-vocab", type=int, default=0, help="0: the tokenizer's piece count")
    ap.add_argument("--decode-prompt-tokens", type=int, default=0,
                    help="the prompt length whose run gives the decode figure (0: the first)")
    a = ap.parse_args()
    try:
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, LogitsProcessor, LogitsProcessorList
        from transformers import TextIteratorStreamer
    except Exception as e:  # ImportError, or a broken install
        print(json.dumps({"status": "skipped", "reason": "cannot import torch/transformers: %r" % e}))
        return 0

    t_load = time.time()
    tok = load_tokenizer(a.model)
    valid = a.valid_vocab or tok.piece_count
    dtype = getattr(torch, a.dtype)
    try:
        model = AutoModelForCausalLM.from_pretrained(a.model, dtype=dtype, device_map=a.device)
    except TypeError:  # transformers 4.x: torch_dtype
        model = AutoModelForCausalLM.from_pretrained(a.model, torch_dtype=dtype).to(a.device)
    except (ValueError, ImportError):  # device_map without accelerate
        model = AutoModelForCausalLM.from_pretrained(a.model, dtype=dtype).to(a.device)
    model.eval()
    load_s = time.time() - t_load

    class MaskPastTokenizer(LogitsProcessor):
        def __call__(self, input_ids, scores):
            scores[:, valid:] = -float("inf")
            return scores

    class TimedStreamer(TextIteratorStreamer):
        """Stamps every new token as generate() hands it over."""
        def __init__(self, *args, **kw):
            super().__init__(*args, **kw)
            self.stamps = []
            self.prompt_seen = False

        def put(self, value):
            if not self.prompt_seen:  # the first put() is the prompt
                self.prompt_seen = True
            else:
                self.stamps.append(time.perf_counter())
            super().put(value)

    def run(prompt_len, new_tokens):
        rng = random.Random(prompt_len)
        ids = [1] + [rng.randrange(3, valid) for _ in range(prompt_len - 1)]
        input_ids = torch.tensor([ids], device=a.device)
        streamer = TimedStreamer(tok, skip_prompt=True, timeout=600)
        kw = dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                  max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                  streamer=streamer, logits_processor=LogitsProcessorList([MaskPastTokenizer()]),
                  pad_token_id=0, eos_token_id=2)
        errors = []

        def target():
            try:
                with torch.inference_mode():
                    model.generate(**kw)
            except Exception as e:  # surfaces below
                errors.append(repr(e))
                streamer.end()

        t0 = time.perf_counter()
        th = threading.Thread(target=target)
        th.start()
        text = "".join(streamer)  # read as a server would
        th.join()
        if errors:
            raise RuntimeError(errors[0])
        s = streamer.stamps
        out = {"prompt_tokens": prompt_len, "new_tokens": len(s),
               "ttft_ms": round((s[0] - t0) * 1000, 3) if s else None,
               "decode_tokens_per_s": round((len(s) - 1) / (s[-1] - s[0]), 2) if len(s) > 1 else None,
               "total_s": round(time.perf_counter() - t0, 3), "text_chars": len(text)}
        return out

    run(16, 8)  # warm-up
    runs = [run(p, a.new_tokens) for p in a.prompt_tokens]
    print(json.dumps({
        "status": "ok", "model": a.model, "device": a.device, "dtype": a.dtype,
        "torch": torch.__version__, "transformers": transformers.__version__,
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "tokenizer": tok.name, "valid_vocab": valid, "load_s": round(load_s, 2),
        "decode_prompt_tokens": a.decode_prompt_tokens or a.prompt_tokens[0],
        "new_tokens": a.new_tokens, "runs": runs}))
    return 0


class SpmTokenizer:
    """What TextIteratorStreamer needs of a tokenizer (decode), from the
    model's sentencepiece tokenizer.model."""
    def __init__(self, path):
        import sentencepiece
        self.sp = sentencepiece.SentencePieceProcessor(model_file=path)
        self.piece_count = self.sp.get_piece_size()
        self.name = "sentencepiece " + path

    def decode(self, ids, **kw):
        return self.sp.decode([int(i) for i in ids])


class HfTokenizer:
    def __init__(self, path):
        from transformers import AutoTokenizer
        self.tok = AutoTokenizer.from_pretrained(path)
        self.piece_count = len(self.tok)
        self.name = "transformers " + type(self.tok).__name__

    def decode(self, ids, **kw):
        return self.tok.decode(ids, **kw)


def load_tokenizer(model_dir):
    try:
        return SpmTokenizer(model_dir + "/tokenizer.model")
    except ImportError:
        return HfTokenizer(model_dir)


if __name__ == "__main__":
    sys.exit(main())
