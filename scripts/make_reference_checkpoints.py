#!/usr/bin/env python3
"""Write tiny random Falcon checkpoints and their float64 reference outputs, made with HF transformers.

Role: ground truth for Peregrine's loader and forward pass. For each variant this writes, under
`<out>/checkpoints/<variant>/`, exactly what `save_pretrained` writes (config.json, generation_config.json,
model.safetensors or two shards + index) plus `reference.safetensors` (input_ids, logits, greedy prompt, 24 greedy
ids and their top1-top2 margins) and `reference.json` (description, dtypes, versions, seed, summary numbers).

Key design choices:
- Weights are drawn in float64 from a seeded CPU generator, rounded to the on-disk dtype, and the reference is computed
  by transformers itself in float64 on the CPU from those rounded weights (reloaded from disk with `from_pretrained`),
  so the reference is "what transformers computes", quirks included (ALiBi slopes rounded to bf16, rotary cos/sin in
  float32). Nothing transformers does is "fixed".
- Every variant is also checked against an independent, hand-written float64 forward (`manual_forward`) that follows
  the original Falcon / RefinedWeb semantics, so a transformers quirk shows up as a number, not as a silent reference.
- Attention: eager for rotary variants, as asked. For the ALiBi variant transformers 5.17's eager path adds the ALiBi
  bias twice (once inside the attention, once folded into the causal mask); its default SDPA path adds it once, like
  the original RW code. The stored reference uses SDPA; the eager logits are stored too, as `logits_eager`.
- The greedy prompt is chosen among a few seeded candidates as the one whose smallest greedy margin is largest, so
  that the 24 greedy ids are robust to float32 rounding in the engine under test.
"""
import argparse
import copy
import json
import math
import os
import shutil
import sys
import tempfile

import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers import FalconConfig, FalconForCausalLM

VOCAB = 1000
SEQ_LEN = 14  # T: tokens in input_ids (one forward, all positions)
PROMPT_LEN = 5  # the first PROMPT_LEN ids of input_ids are the greedy prompt
GEN_STEPS = 24
PROMPT_CANDIDATES = 8
MAX_POS = 256
BOS = EOS = 11

W_STD, LN_W_STD, LN_B_STD, LIN_B_STD = 0.08, 0.2, 0.1, 0.05
RELOAD_TOL = 0.0  # reloaded float64 logits must equal the in-memory ones bit for bit
MANUAL_TOL = 1e-9  # hand-written float64 forward vs transformers (max abs over logits)

COMMON = dict(vocab_size=VOCAB, max_position_embeddings=MAX_POS, bos_token_id=BOS, eos_token_id=EOS)
ARCH_7B = dict(hidden_size=80, num_hidden_layers=2, num_attention_heads=5, multi_query=True,
               new_decoder_architecture=False, parallel_attn=True, bias=False, alibi=False)
ARCH_40B = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=8, num_kv_heads=2,
                new_decoder_architecture=True, num_ln_in_parallel_attn=2, parallel_attn=True, bias=False, alibi=False)

VARIANTS = [
    dict(name="falcon-7b-style", seed=1001, dtype="float32", cfg=ARCH_7B,
         desc="multi-query (1 kv head), 5 heads of 16, parallel attn+MLP sharing one input_layernorm, rotary, tied lm_head"),
    dict(name="falcon-40b-style", seed=1002, dtype="float32", cfg=ARCH_40B,
         desc="new decoder architecture, 8 query heads in 2 kv groups, ln_attn + ln_mlp, rotary, tied lm_head"),
    dict(name="falcon-180b-style", seed=1003, dtype="float32", shards=2,
         cfg=dict(ARCH_40B, hidden_size=96, num_hidden_layers=3, num_kv_heads=4, ffn_hidden_size=200),
         desc="new decoder architecture, 8 heads of 12 in 4 kv groups, explicit ffn_hidden_size 200, 3 layers, "
              "saved in 2 safetensors shards with an index"),
    dict(name="falcon2-11b-style", seed=1004, dtype="float32",
         cfg=dict(ARCH_40B, num_ln_in_parallel_attn=1, rope_parameters={"rope_type": "default", "rope_theta": 500042.0},
                  tie_word_embeddings=False),
         desc="new decoder architecture with one input_layernorm (num_ln_in_parallel_attn 1), rope theta 500042, "
              "untied lm_head.weight"),
    dict(name="falcon-rw-1b-style", seed=1005, dtype="float32", attn="sdpa",
         cfg=dict(hidden_size=72, num_hidden_layers=2, num_attention_heads=6, multi_query=False,
                  new_decoder_architecture=False, parallel_attn=False, bias=True, alibi=True),
         desc="ALiBi (6 heads: non-power-of-two, extra slopes), sequential attn then MLP with post_attention_layernorm, "
              "biases on every linear, full multi-head attention, tied lm_head"),
    dict(name="falcon-40b-style-bf16", seed=1006, dtype="bfloat16", cfg=ARCH_40B,
         desc="falcon-40b-style architecture stored in bfloat16; reference from the bf16 weights upcast to float64"),
    dict(name="falcon-7b-style-f16", seed=1007, dtype="float16", cfg=ARCH_7B,
         desc="falcon-7b-style architecture stored in float16; reference from the f16 weights upcast to float64"),
    dict(name="rw-40b-old-config", seed=1008, dtype="float32", cfg=ARCH_40B, old="RefinedWeb",
         desc="falcon-40b-style weights with the old remote-code config.json (model_type RefinedWeb, RWForCausalLM, "
              "n_head/n_head_kv/n_layer, no new_decoder_architecture key)"),
    dict(name="rw-7b-old-config", seed=1009, dtype="float32", cfg=ARCH_7B, old="RefinedWebModel",
         desc="falcon-7b-style weights with the old remote-code config.json (model_type RefinedWebModel, "
              "RWForCausalLM, n_head/n_layer, multi_query true)"),
]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def make_config(variant: dict) -> FalconConfig:
    return FalconConfig(**COMMON, **variant["cfg"])


def fill_weights(model: torch.nn.Module, seed: int, store_dtype: torch.dtype) -> None:
    """Draw every parameter in float64 from one seeded generator, rounded to `store_dtype` (model stays float64)."""
    gen = torch.Generator().manual_seed(seed)
    seen = set()

    def draw(p: torch.Tensor, mean: float, std: float) -> None:
        if id(p) in seen:  # a tied lm_head shares the embedding
            return
        seen.add(id(p))
        v = mean + std * torch.randn(p.shape, generator=gen, dtype=torch.float64)
        p.copy_(v.to(store_dtype).to(torch.float64))

    with torch.no_grad():
        for _, mod in model.named_modules():
            if isinstance(mod, torch.nn.LayerNorm):
                draw(mod.weight, 1.0, LN_W_STD)
                draw(mod.bias, 0.0, LN_B_STD)
            elif isinstance(mod, (torch.nn.Linear, torch.nn.Embedding)):
                draw(mod.weight, 0.0, W_STD)
                if getattr(mod, "bias", None) is not None:
                    draw(mod.bias, 0.0, LIN_B_STD)
    for name, p in model.named_parameters():
        if id(p) not in seen:
            raise RuntimeError(f"parameter {name} was not initialised")


def build_model(cfg: FalconConfig, attn: str) -> FalconForCausalLM:
    model = FalconForCausalLM._from_config(cfg, attn_implementation=attn, dtype=torch.float64)
    return model.eval()


@torch.no_grad()
def forward_logits(model, ids: torch.Tensor) -> torch.Tensor:
    """[T] int64 -> [T, V] float64, one full forward without a cache."""
    return model(ids[None], use_cache=False).logits[0].to(torch.float64)


@torch.no_grad()
def greedy(logits_fn, prompt: torch.Tensor, steps: int):
    """Repeated full forwards with argmax; returns (generated ids [steps], top1-top2 margins [steps])."""
    ids = prompt.clone()
    out, margins = [], []
    for _ in range(steps):
        last = logits_fn(ids)[-1]
        top = torch.topk(last, 2)
        out.append(int(top.indices[0]))
        margins.append(float(top.values[0] - top.values[1]))
        ids = torch.cat([ids, top.indices[:1]])
    return torch.tensor(out, dtype=torch.int64), torch.tensor(margins, dtype=torch.float64)


# ---------------------------------------------------------------------------------------------------------------
# Independent float64 Falcon forward (original Falcon / RefinedWeb semantics), used only as a cross-check.
# ---------------------------------------------------------------------------------------------------------------

def alibi_bias(n_heads: int, n_keys: int) -> torch.Tensor:
    """[H, K] bias, as the original code and transformers build it: slopes rounded to bf16, slope*pos rounded to bf16."""
    p2 = 2 ** math.floor(math.log2(n_heads))
    base = 2.0 ** (-(2.0 ** -(math.log2(p2) - 3)))
    slopes = [base ** i for i in range(1, p2 + 1)]
    if p2 != n_heads:
        extra = 2.0 ** (-(2.0 ** -(math.log2(2 * p2) - 3)))
        slopes += [extra ** i for i in range(1, 2 * min(p2, n_heads - p2), 2)]
    s = torch.tensor(slopes, dtype=torch.float32).to(torch.bfloat16)
    pos = torch.arange(n_keys, dtype=torch.float32).to(torch.bfloat16)
    return (s[:, None] * pos[None, :]).to(torch.float64)


def rotary(x: torch.Tensor, theta: float) -> torch.Tensor:
    """x: [H, T, D] float64; cos/sin computed in float32 like transformers, then applied in float64."""
    d, t = x.shape[-1], x.shape[-2]
    inv = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
    freqs = torch.arange(t, dtype=torch.float32)[:, None] * inv[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    cos, sin = emb.cos().to(torch.float64), emb.sin().to(torch.float64)
    rot = torch.cat([-x[..., d // 2:], x[..., : d // 2]], dim=-1)
    return x * cos + rot * sin


def manual_forward(sd: dict, c: dict, ids: torch.Tensor) -> torch.Tensor:
    """sd: float64 state dict (transformers names); c: normalised architecture dict; ids [T] -> logits [T, V]."""
    def ln(x, prefix):
        return torch.nn.functional.layer_norm(x, x.shape[-1:], sd[prefix + ".weight"], sd[prefix + ".bias"], c["eps"])

    def lin(x, prefix):
        y = x @ sd[prefix + ".weight"].T
        return y + sd[prefix + ".bias"] if prefix + ".bias" in sd else y

    nh, nkv, hd, t = c["heads"], c["kv_heads"], c["head_dim"], ids.shape[0]
    x = sd["transformer.word_embeddings.weight"][ids]
    causal = torch.full((t, t), float("-inf"), dtype=torch.float64).triu(1)
    for i in range(c["layers"]):
        p = f"transformer.h.{i}"
        if c["ln2"]:
            a_in, m_in = ln(x, p + ".ln_attn"), ln(x, p + ".ln_mlp")
        else:
            a_in = m_in = ln(x, p + ".input_layernorm")
        qkv = lin(a_in, p + ".self_attention.query_key_value")
        if c["new_arch"]:
            g = qkv.view(t, nkv, nh // nkv + 2, hd)
            q = g[:, :, :-2].reshape(t, nh, hd)
            k = g[:, :, -2].repeat_interleave(nh // nkv, dim=1)
            v = g[:, :, -1].repeat_interleave(nh // nkv, dim=1)
        elif c["multi_query"]:
            g = qkv.view(t, nh + 2, hd)
            q, k, v = g[:, :nh], g[:, nh:nh + 1].expand(t, nh, hd), g[:, nh + 1:].expand(t, nh, hd)
        else:
            g = qkv.view(t, nh, 3, hd)
            q, k, v = g[:, :, 0], g[:, :, 1], g[:, :, 2]
        q, k, v = (z.transpose(0, 1) for z in (q, k, v))  # [H, T, D]
        if c["alibi"]:
            scores = (q @ k.transpose(1, 2) + alibi_bias(nh, t)[:, None, :]) / math.sqrt(hd)
        else:
            q, k = rotary(q, c["theta"]), rotary(k, c["theta"])
            scores = q @ k.transpose(1, 2) / math.sqrt(hd)
        attn = torch.softmax(scores + causal, dim=-1) @ v  # [H, T, D]
        attn = lin(attn.transpose(0, 1).reshape(t, nh * hd), p + ".self_attention.dense")
        if c["parallel"]:
            m_out = lin(torch.nn.functional.gelu(lin(m_in, p + ".mlp.dense_h_to_4h")), p + ".mlp.dense_4h_to_h")
            x = x + attn + m_out
        else:
            r = x + attn
            h = ln(r, p + ".post_attention_layernorm")
            x = r + lin(torch.nn.functional.gelu(lin(h, p + ".mlp.dense_h_to_4h")), p + ".mlp.dense_4h_to_h")
    x = ln(x, "transformer.ln_f")
    head = sd.get("lm_head.weight", sd["transformer.word_embeddings.weight"])
    return x @ head.T


def arch_summary(cfg: FalconConfig) -> dict:
    new_arch = bool(cfg.new_decoder_architecture)
    heads = cfg.num_attention_heads
    kv = cfg.num_kv_heads if new_arch else (1 if cfg.multi_query else heads)
    return dict(heads=heads, kv_heads=kv, head_dim=cfg.hidden_size // heads, layers=cfg.num_hidden_layers,
                new_arch=new_arch, multi_query=bool(cfg.multi_query), alibi=bool(cfg.alibi),
                parallel=new_arch or bool(cfg.parallel_attn), ln2=new_arch and cfg.num_ln_in_parallel_attn == 2,
                eps=cfg.layer_norm_epsilon, theta=float(cfg.rope_parameters["rope_theta"]))


# ---------------------------------------------------------------------------------------------------------------
# Saving
# ---------------------------------------------------------------------------------------------------------------

def save_checkpoint(model: FalconForCausalLM, out_dir: str, store_dtype: torch.dtype, shards: int) -> None:
    """save_pretrained in the on-disk dtype; with shards=2, pick max_shard_size so that exactly 2 files come out.

    A deep copy is cast and saved: casting the model itself to bf16 and back would also round the float32 rotary
    inv_freq buffer to bf16 (transformers' `.to(dtype)` casts buffers), changing the in-memory model's outputs."""
    to_save = copy.deepcopy(model).to(store_dtype)
    if shards == 1:
        to_save.save_pretrained(out_dir)
        return
    total = sum(p.numel() * p.element_size() for p in to_save.state_dict().values())
    for frac in (0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.5):
        shutil.rmtree(out_dir, ignore_errors=True)
        to_save.save_pretrained(out_dir, max_shard_size=int(total * frac))
        files = [f for f in os.listdir(out_dir) if f.startswith("model-") and f.endswith(".safetensors")]
        if len(files) == shards and os.path.exists(os.path.join(out_dir, "model.safetensors.index.json")):
            return
    raise RuntimeError(f"could not save {out_dir} in exactly {shards} shards")


def old_config_json(cfg: FalconConfig, model_type: str, store_dtype: str) -> dict:
    """The pre-transformers-4.33 remote-code (RW) form of config.json."""
    old = {
        "alibi": False,
        "apply_residual_connection_post_layernorm": False,
        "architectures": ["RWForCausalLM"],
        "attention_dropout": 0.0,
        "auto_map": {"AutoConfig": "configuration_RW.RWConfig", "AutoModelForCausalLM": "modelling_RW.RWForCausalLM"},
        "bias": False,
        "bos_token_id": BOS,
        "eos_token_id": EOS,
        "hidden_dropout": 0.0,
        "hidden_size": cfg.hidden_size,
        "initializer_range": 0.02,
        "layer_norm_epsilon": cfg.layer_norm_epsilon,
        "model_type": model_type,
        "n_head": cfg.num_attention_heads,
        "n_layer": cfg.num_hidden_layers,
        "parallel_attn": True,
        "torch_dtype": store_dtype,
        "transformers_version": "4.27.4",
        "use_cache": True,
        "vocab_size": cfg.vocab_size,
    }
    if model_type == "RefinedWeb":  # Falcon-40B: grouped kv heads, always two layer norms
        old["n_head_kv"] = cfg.num_kv_heads
    else:  # Falcon-7B: multi-query
        old["multi_query"] = True
    return dict(sorted(old.items()))


def load_weights_f64(out_dir: str) -> dict:
    """All tensors of a (possibly sharded) checkpoint folder, upcast to float64."""
    sd = {}
    for f in sorted(os.listdir(out_dir)):
        if f.endswith(".safetensors") and f.startswith("model"):
            sd.update({k: v.to(torch.float64) for k, v in load_file(os.path.join(out_dir, f)).items()})
    return sd


def reload_model(variant: dict, cfg: FalconConfig, out_dir: str, attn: str) -> FalconForCausalLM:
    """Reload from disk: from_pretrained for new configs, the equivalent new-style config + state dict for old ones."""
    if "old" not in variant:
        return FalconForCausalLM.from_pretrained(out_dir, dtype=torch.float64, attn_implementation=attn).eval()
    model = build_model(cfg, attn)
    sd = load_weights_f64(out_dir)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if unexpected or [m for m in missing if m != "lm_head.weight"]:
        raise RuntimeError(f"{out_dir}: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    return model


# ---------------------------------------------------------------------------------------------------------------
# One variant
# ---------------------------------------------------------------------------------------------------------------

def choose_prompt(model, seed: int):
    """Among PROMPT_CANDIDATES seeded sequences pick the one whose greedy run has the largest smallest margin."""
    best = None
    for cand in range(PROMPT_CANDIDATES):
        ids = torch.randint(0, VOCAB, (SEQ_LEN,), generator=torch.Generator().manual_seed(seed * 100 + cand))
        g_ids, margins = greedy(lambda x: forward_logits(model, x), ids[:PROMPT_LEN], GEN_STEPS)
        if best is None or margins.min() > best[3].min():
            best = (cand, ids, g_ids, margins)
    return best


def make_variant(variant: dict, root: str) -> dict:
    name, store = variant["name"], DTYPES[variant["dtype"]]
    attn = variant.get("attn", "eager")
    out_dir = os.path.join(root, "checkpoints", name)
    shutil.rmtree(out_dir, ignore_errors=True)
    cfg = make_config(variant)
    model = build_model(cfg, attn)
    fill_weights(model, variant["seed"], store)
    save_checkpoint(model, out_dir, store, variant.get("shards", 1))
    if "old" in variant:
        with open(os.path.join(out_dir, "config.json"), "w") as f:
            json.dump(old_config_json(cfg, variant["old"], variant["dtype"]), f, indent=2)
            f.write("\n")

    ref_model = reload_model(variant, cfg, out_dir, attn)
    cand, ids, g_ids, margins = choose_prompt(ref_model, variant["seed"])
    logits = forward_logits(ref_model, ids)

    mem_logits = forward_logits(model, ids)
    reload_diff = (mem_logits - logits).abs().max().item()
    if reload_diff > RELOAD_TOL:
        raise RuntimeError(f"{name}: reloaded logits differ from in-memory logits by {reload_diff}")
    g2, m2 = greedy(lambda x: forward_logits(model, x), ids[:PROMPT_LEN], GEN_STEPS)
    if not torch.equal(g2, g_ids):
        raise RuntimeError(f"{name}: greedy ids differ between in-memory and reloaded model")

    arch = arch_summary(cfg)
    sd = load_weights_f64(out_dir)
    manual_diff = (manual_forward(sd, arch, ids) - logits).abs().max().item()
    tensors = dict(input_ids=ids, logits=logits, greedy_prompt_ids=ids[:PROMPT_LEN].clone(), greedy_ids=g_ids,
                   greedy_margins=margins)
    extra = {}
    if arch["alibi"]:
        eager = forward_logits(build_eager_copy(cfg, sd), ids)
        tensors["logits_eager"] = eager
        extra["eager_vs_reference_max_abs_diff"] = (eager - logits).abs().max().item()
        extra["eager_vs_manual_max_abs_diff"] = (eager - manual_forward(sd, arch, ids)).abs().max().item()
        print(f"  {name}: transformers eager differs from sdpa by {extra['eager_vs_reference_max_abs_diff']:.4g} "
              f"(eager adds the ALiBi bias twice); stored logits = sdpa", flush=True)
    if manual_diff > MANUAL_TOL:
        raise RuntimeError(f"{name}: hand-written float64 forward differs from transformers by {manual_diff}")

    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(out_dir, "reference.safetensors"),
              metadata={"variant": name})
    summary = dict(
        variant=name, description=variant["desc"], on_disk_dtype=variant["dtype"], seed=variant["seed"],
        torch_version=torch.__version__, transformers_version=transformers.__version__,
        reference_compute="float64 on CPU, FalconForCausalLM reloaded from this folder, full forwards, no KV cache",
        attn_implementation=attn, architecture=arch, vocab_size=VOCAB, seq_len=SEQ_LEN, prompt_len=PROMPT_LEN,
        greedy_steps=GEN_STEPS, prompt_candidate=cand, prompt_candidates=PROMPT_CANDIDATES,
        prompt_seed=variant["seed"] * 100 + cand, prompt_rule="torch.randint(0, vocab, (seq_len,), "
        "generator=torch.Generator().manual_seed(prompt_seed)); the candidate with the largest min greedy margin",
        weight_init=dict(linear_and_embedding_std=W_STD, layernorm_weight="1 + N(0, %g)" % LN_W_STD,
                         layernorm_bias_std=LN_B_STD, linear_bias_std=LIN_B_STD),
        max_abs_logit=logits.abs().max().item(), min_greedy_margin=margins.min().item(),
        reload_max_abs_diff=reload_diff, manual_forward_max_abs_diff=manual_diff,
        files=sorted(os.listdir(out_dir)) + ["reference.json"], **extra)
    if "old" in variant:
        summary["equivalent_new_config"] = cfg.to_diff_dict()
    with open(os.path.join(out_dir, "reference.json"), "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    print(f"{name}: T={SEQ_LEN} V={VOCAB} max|logit|={summary['max_abs_logit']:.4f} "
          f"min greedy margin={summary['min_greedy_margin']:.4g} (candidate {cand}) manual diff={manual_diff:.3g} "
          f"files={summary['files']}", flush=True)
    return summary


def build_eager_copy(cfg: FalconConfig, sd: dict) -> FalconForCausalLM:
    model = build_model(cfg, "eager")
    model.load_state_dict(sd, strict=False)
    model.tie_weights()
    return model


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="reference", help="root folder; checkpoints go to <out>/checkpoints/<variant>")
    ap.add_argument("--only", nargs="*", help="variant names to make (default: all)")
    args = ap.parse_args()
    torch.set_num_threads(min(8, os.cpu_count() or 1))
    summaries = [make_variant(v, args.out) for v in VARIANTS if not args.only or v["name"] in args.only]
    print("SUMMARY")
    for s in summaries:
        print(f"  {s['variant']:24s} T={s['seq_len']} V={s['vocab_size']} max|logit|={s['max_abs_logit']:.4f} "
              f"min margin={s['min_greedy_margin']:.4g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
