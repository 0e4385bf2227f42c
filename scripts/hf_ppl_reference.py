"""Perplexity of the tiny Falcon with transformers (+ bitsandbytes) on the GPU machine, by the
protocol `peregrine ppl` uses: non-overlapping windows of --ctx tokens of the whole tokenized
text, the first --chunks windows, every token after a window's first one scored (labels =
input_ids, transformers' own shifted loss). Prints one line per configuration, so Peregrine's
figures can be compared with the reference stack's under one protocol.

Usage (on the device machine, bitsandbytes on PYTHONPATH):
  python3 hf_ppl_reference.py MODEL_DIR TEXT_FILE [--ctx 256] [--chunks 400]
"""
import argparse
import math
import time

import torch
import bitsandbytes as bnb
from transformers import AutoModelForCausalLM, AutoTokenizer


def configs():
    """(name, how to quantize the block linears): None = keep bf16."""
    yield "bf16", None
    yield "int8 (threshold 6.0)", ("int8", None, None)
    for qt in ("nf4", "fp4"):
        for dq in (True, False):
            yield f"{qt}{' double-quant' if dq else ''}", (qt, dq, torch.bfloat16)


def quantize_blocks(model, how):
    """Swap every block linear for its bitsandbytes module, as ../shared/anchors/hf_bnb_baseline.py
    does (transformers' quantization_config finds no linear in this tiny model)."""
    kind, double_quant, compute = how
    for layer in model.transformer.h:
        for parent in (layer.self_attention, layer.mlp):
            for name, lin in list(parent.named_children()):
                if not isinstance(lin, torch.nn.Linear):
                    continue
                w = lin.weight.data
                if kind == "int8":
                    q = bnb.nn.Linear8bitLt(w.shape[1], w.shape[0], bias=False, has_fp16_weights=False, threshold=6.0, device="meta")
                    q.weight = bnb.nn.Int8Params(w.half(), requires_grad=False, has_fp16_weights=False)
                else:
                    q = bnb.nn.Linear4bit(w.shape[1], w.shape[0], bias=False, compute_dtype=compute, quant_type=kind, compress_statistics=double_quant, device="meta")
                    q.weight = bnb.nn.Params4bit(w, requires_grad=False, quant_type=kind, compress_statistics=double_quant, blocksize=64)
                setattr(parent, name, q.cuda())


@torch.no_grad()
def perplexity(model, ids, ctx, chunks):
    nll, count = 0.0, 0
    for w in range(min(chunks, len(ids) // ctx)):
        window = torch.tensor([ids[w * ctx:(w + 1) * ctx]], device="cuda")
        loss = model(input_ids=window, labels=window).loss.float().item()
        nll += loss * (ctx - 1)
        count += ctx - 1
    return math.exp(nll / count), count


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("text")
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument("--chunks", type=int, default=400)
    a = ap.parse_args()
    ids = AutoTokenizer.from_pretrained(a.model)(open(a.text, encoding="utf-8").read())["input_ids"]
    print(f"tokens {len(ids)}", flush=True)
    f32 = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32, device_map="cuda").eval()
    ppl, n = perplexity(f32, ids, a.ctx, a.chunks)
    print(f"hf ppl f32: {ppl:.4f} over {n} tokens", flush=True)
    del f32
    for name, how in configs():
        t0 = time.time()
        model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.bfloat16, device_map="cuda").eval()
        if how is not None:
            quantize_blocks(model, how)
        ppl, n = perplexity(model, ids, a.ctx, a.chunks)
        print(f"hf ppl {name}: {ppl:.4f} over {n} tokens ({time.time() - t0:.1f} s)", flush=True)
        del model
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
