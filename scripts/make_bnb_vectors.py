#!/usr/bin/env python3
"""Write reference vectors from bitsandbytes (4-bit NF4/FP4 and LLM.int8) for Peregrine's bit-compatibility tests.

Role: ground truth for Peregrine's readers and kernels of bitsandbytes-quantised weights. Each case is one small
safetensors file under `<out>/bnb/`, listed with its parameters in `<out>/bnb/manifest.json` (with the exact
bitsandbytes / torch / CUDA versions and the GPU).

Key design choices:
- Everything is produced by bitsandbytes' public entry points exactly as transformers uses them: `quantize_4bit` /
  `dequantize_4bit` / `matmul_4bit` for 4-bit, `Int8Params(...).cuda()` and `Linear8bitLt` for LLM.int8. Inputs are
  made on the CPU from a seeded generator (N(0,1) plus a few large outliers) so they are reproducible anywhere.
- Besides what the brief asks for, a few cheap intermediates are stored to localise a mismatch: the float32 absmax
  actually used after double quantisation (`absmax_dequant`), the exact absmax of a non-nested run (`absmax_exact`),
  the quantised activations of LLM.int8 (`CA_*`, `SCA_*`) and single-row
  (decode, M=1) matmuls next to the multi-row ones.
- The script also measures, and records in the manifest, behaviour a re-implementation must match: whether each
  nibble is the nearest code point, how the partial last block and an odd element count are stored, and whether
  Int8Params casts to float16 before quantising.
Run with `--device cpu` only to test the script's logic: the committed vectors come from CUDA.
"""
import argparse
import datetime
import json
import os
import sys

import torch
import bitsandbytes as bnb
import bitsandbytes.functional as F
from safetensors.torch import save_file

DTYPES = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}
NESTED_BLOCKSIZE = 256  # bitsandbytes' fixed blocksize for double quantisation of absmax

# (name, quant_type, blocksize, compress_statistics, input dtype, shape, matmul)
FOUR_BIT_CASES = [
    *[(f"{qt}_bs64_{'dq' if dq else 'nodq'}_{dt}_64x64", qt, 64, dq, dt, (64, 64), False)
      for qt in ("nf4", "fp4") for dq in (False, True) for dt in ("bf16", "f16", "f32")],
    ("nf4_bs64_dq_f16_96x200", "nf4", 64, True, "f16", (96, 200), False),
    ("fp4_bs128_nodq_f32_96x200", "fp4", 128, False, "f32", (96, 200), False),
    ("fp4_bs64_nodq_bf16_96x200_matmul", "fp4", 64, False, "bf16", (96, 200), True),
    ("nf4_bs64_dq_bf16_256x320_matmul", "nf4", 64, True, "bf16", (256, 320), True),
    ("nf4_bs64_dq_bf16_7x50", "nf4", 64, True, "bf16", (7, 50), False),
    ("fp4_bs128_nodq_f32_7x50", "fp4", 128, False, "f32", (7, 50), False),
    ("nf4_bs64_nodq_f16_5x13", "nf4", 64, False, "f16", (5, 13), False),
    ("fp4_bs64_dq_bf16_5x13", "fp4", 64, True, "bf16", (5, 13), False),
]
INT8_CASES = [(f"int8_{dt}_{r}x{c}", dt, (r, c)) for (r, c) in ((64, 128), (200, 96)) for dt in ("bf16", "f16")]
INT8_MATMUL = dict(name="int8_linear8bitlt_f16_96x128_matmul", out_features=96, in_features=128, rows=4,
                   outlier_col=17, outlier_values=(7.5, -9.25, 12.0, 6.5))


def make_input(shape, dtype: torch.dtype, seed: int, n_outliers: int = 3) -> torch.Tensor:
    """N(0,1) with a few large outliers (+-8..20), drawn on the CPU in float32, then cast."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g)
    flat = x.view(-1)
    idx = torch.randperm(flat.numel(), generator=g)[:n_outliers]
    mag = 8.0 + 12.0 * torch.rand(n_outliers, generator=g)
    sign = torch.where(torch.rand(n_outliers, generator=g) < 0.5, -1.0, 1.0)
    flat[idx] = mag * sign
    return x.to(dtype)


def unpack_nibbles(packed: torch.Tensor, n: int) -> torch.Tensor:
    """Flat U8 -> [n] codes, high nibble first (bitsandbytes' order)."""
    p = packed.view(-1).to(torch.int64)
    out = torch.stack([p >> 4, p & 0xF], dim=1).view(-1)
    return out[:n]


def blockwise_absmax(x: torch.Tensor, blocksize: int) -> torch.Tensor:
    flat = x.float().view(-1)
    pad = (-flat.numel()) % blocksize
    flat = torch.cat([flat, flat.new_zeros(pad)])
    return flat.view(-1, blocksize).abs().amax(dim=1)


def nearest_code_mismatches(inp: torch.Tensor, codes: torch.Tensor, absmax: torch.Tensor, code: torch.Tensor,
                            blocksize: int) -> int:
    """How many nibbles differ from argmin |code - x/absmax| (float32, ties to the lower index)."""
    n = inp.numel()
    scale = absmax.repeat_interleave(blocksize)[:n]
    xn = inp.float().view(-1) / scale
    nearest = (xn[:, None] - code[None, :]).abs().argmin(dim=1)
    # FP4's table holds both +0 and -0: either index is the same value.
    same_value = code[nearest] == code[codes]
    return int((~same_value).sum())


def tensor_table(tensors: dict) -> dict:
    return {k: dict(dtype=str(v.dtype).replace("torch.", ""), shape=list(v.shape)) for k, v in tensors.items()}


def four_bit_case(case, seed: int, device: str, out_dir: str) -> dict:
    name, qt, bs, dq, dt, shape, matmul = case
    inp = make_input(shape, DTYPES[dt], seed)
    a = inp.to(device)
    packed, qs = F.quantize_4bit(a, blocksize=bs, compress_statistics=dq, quant_type=qt)
    dequant = F.dequantize_4bit(packed, qs)
    n = inp.numel()
    t = dict(input=inp, packed=packed.view(-1), absmax=qs.absmax, code=qs.code.float(),
             dequant=dequant.float())
    info = dict(name=name, kind="4bit", file=f"{name}.safetensors", quant_type=qt, blocksize=bs,
                compress_statistics=dq, input_dtype=dt, shape=list(shape), numel=n,
                n_blocks=-(-n // bs), packed_bytes=packed.numel(), packed_shape_as_returned=list(packed.shape),
                quant_state_dtype=str(qs.dtype).replace("torch.", ""))
    # The exact absmax (what a non-nested run stores); its packed nibbles must be identical.
    packed_plain, qs_plain = F.quantize_4bit(a, blocksize=bs, compress_statistics=False, quant_type=qt)
    if not torch.equal(packed_plain, packed):
        raise RuntimeError(f"{name}: packed data depends on compress_statistics")
    absmax_exact = qs_plain.absmax.float()
    info["absmax_equals_blockwise_max_abs_of_input"] = bool(torch.equal(absmax_exact.cpu(),
                                                                       blockwise_absmax(inp, bs)))
    if dq:
        absmax_dq = F.dequantize_blockwise(qs.absmax, qs.state2) + qs.offset
        t.update(nested_absmax=qs.state2.absmax.float(), nested_code=qs.state2.code.float(),
                 offset=qs.offset.float().reshape(1), absmax_dequant=absmax_dq.float(), absmax_exact=absmax_exact)
        info.update(nested_blocksize=qs.state2.blocksize, n_nested_blocks=qs.state2.absmax.numel(),
                    offset=float(qs.offset), absmax_dequant_max_rel_err=float(
                        ((absmax_dq.float() - absmax_exact) / absmax_exact).abs().max()))
        used_absmax = absmax_dq.float()
    else:
        used_absmax = absmax_exact
    # dequantize in float32 from the same state: the product code*absmax before rounding to the input dtype.
    qs32 = F.QuantState(absmax=qs.absmax, shape=qs.shape, code=qs.code, blocksize=bs, quant_type=qt,
                        dtype=torch.float32, offset=qs.offset, state2=qs.state2)
    dequant_f32 = F.dequantize_4bit(packed, qs32).float().cpu()  # checked below, not stored (size)
    codes = unpack_nibbles(packed.cpu(), n)
    # Quantisation always uses the exact absmax (double quantisation happens afterwards).
    info["nearest_code_mismatches"] = nearest_code_mismatches(inp, codes, absmax_exact.cpu(), qs.code.float().cpu(), bs)
    info["dequant_f32_equals_code_times_absmax"] = bool(torch.equal(
        dequant_f32.view(-1), qs.code.float().cpu()[codes] * used_absmax.cpu().repeat_interleave(bs)[:n]))
    info["dequant_equals_dequant_f32_rounded"] = bool(torch.equal(
        dequant.cpu(), dequant_f32.to(dequant.dtype).view(dequant.shape)))
    if n % 2:
        info["odd_numel_last_byte_low_nibble"] = int(packed.view(-1)[-1].item() & 0xF)
    if n % bs:
        info["partial_last_block_len"] = n % bs
    packed_dict = qs.as_dict(packed=True)
    key = f"quant_state.bitsandbytes__{qt}"
    t["state_json"] = packed_dict[key]
    info["state_json"] = json.loads(bytes(packed_dict[key].cpu().tolist()).decode())
    info["as_dict_packed_keys"] = sorted(packed_dict.keys())
    if matmul:
        info.update(matmul_case(t, packed, qs, shape, seed, device))
    save_tensors(t, out_dir, info)
    return info


def matmul_case(t: dict, packed, qs, shape, seed: int, device: str) -> dict:
    """y = bnb.matmul_4bit(x, W.t(), quant_state) for x bf16 [3, K] and a decode-style x1 [1, K]."""
    n_out, k = shape
    x = (torch.randn((3, k), generator=torch.Generator().manual_seed(seed + 7)) * 0.5).to(torch.bfloat16)
    with torch.no_grad():
        y = bnb.matmul_4bit(x.to(device), packed.t(), quant_state=qs)
        y1 = bnb.matmul_4bit(x[:1].to(device), packed.t(), quant_state=qs)
    w32 = t["dequant"].view(n_out, k)
    t.update(x=x, y=y.float(), y1=y1.float(), y_ref_f32=x.float().to(device) @ w32.t())
    custom = k % qs.blocksize == 0
    return dict(matmul=True, x_shape=[3, k], y_dtype_as_returned=str(y.dtype).replace("torch.", ""),
                matmul_path_expected="fused cgemm_4bit kernel (M <= 4)" if custom else
                "dequantize_4bit + F.linear fallback (K not a multiple of blocksize)",
                y_vs_ref_f32_max_abs=float((y.float() - t["y_ref_f32"]).abs().max()),
                y1_equals_y_row0=bool(torch.equal(y1[0], y[0])))


def int8_case(case, seed: int, device: str, out_dir: str) -> dict:
    name, dt, shape = case
    w = (make_input(shape, torch.float32, seed) * 0.05).to(DTYPES[dt])
    p = bnb.nn.Int8Params(w.clone(), requires_grad=False, has_fp16_weights=False).to(device)
    cb, scb = p.CB, p.SCB
    direct_cb, direct_scb, _ = F.int8_vectorwise_quant(w.to(device).to(torch.float16))
    t = dict(input=w, CB=cb, SCB=scb)
    info = dict(name=name, kind="int8", file=f"{name}.safetensors", input_dtype=dt, shape=list(shape),
                equals_int8_vectorwise_quant_of_fp16_cast=bool(torch.equal(cb, direct_cb) and
                                                               torch.equal(scb, direct_scb)),
                SCB_equals_rowwise_max_abs_of_fp16_cast=bool(torch.equal(
                    scb.cpu(), w.to(torch.float16).float().abs().amax(dim=1))))
    if dt == "bf16":
        info["note"] = "Int8Params._quantize casts the weight to float16 before int8_vectorwise_quant"
    save_tensors(t, out_dir, info)
    return info


def int8_matmul_case(seed: int, device: str, out_dir: str) -> dict:
    c = INT8_MATMUL
    k, n_out = c["in_features"], c["out_features"]
    w = (make_input((n_out, k), torch.float32, seed) * 0.05).to(torch.float16)
    x = torch.randn((c["rows"], k), generator=torch.Generator().manual_seed(seed + 1))
    x[:, c["outlier_col"]] = torch.tensor(c["outlier_values"])
    x = x.to(torch.float16)
    t = dict(input=w, x=x)
    info = dict(name=c["name"], kind="int8_matmul", file=f"{c['name']}.safetensors", input_dtype="f16",
                shape=[n_out, k], x_shape=list(x.shape), outlier_col=c["outlier_col"],
                outlier_values=list(c["outlier_values"]), module="bnb.nn.Linear8bitLt(bias=False, "
                "has_fp16_weights=False, threshold=T), weight=Int8Params(W f16), .to(device).eval(), no_grad")
    for thr in (6.0, 0.0):
        tag = "threshold6" if thr else "threshold0"
        lin = bnb.nn.Linear8bitLt(k, n_out, bias=False, has_fp16_weights=False, threshold=thr)
        lin.weight = bnb.nn.Int8Params(w.clone(), requires_grad=False, has_fp16_weights=False)
        lin = lin.to(device).eval()
        with torch.no_grad():
            y = lin(x.to(device))
            y1 = lin(x[:1].to(device))  # decode-style single row (outliers handled inside the quant kernel)
        ca, sca, cols = F.int8_vectorwise_quant(x.to(device).clone(), threshold=thr)
        t[f"y_{tag}"], t[f"y1_{tag}"] = y.float(), y1.float()
        t[f"CA_{tag}"], t[f"SCA_{tag}"] = ca, sca
        if tag == "threshold6":  # after a forward the int8 weight lives in the module's MatmulLtState
            t["CB"], t["SCB"] = lin.state.CB, lin.state.SCB
            info["outlier_cols_threshold6"] = [] if cols is None else cols.cpu().tolist()
        info[f"y_{tag}_dtype_as_returned"] = str(y.dtype).replace("torch.", "")
    t["y_ref_f32"] = x.float().to(device) @ w.float().to(device).t()
    for tag in ("threshold6", "threshold0"):
        info[f"y1_{tag}_equals_y_row0"] = bool(torch.equal(t[f"y1_{tag}"][0], t[f"y_{tag}"][0]))
    info["y_threshold6_vs_ref_max_abs"] = float((t["y_threshold6"] - t["y_ref_f32"]).abs().max())
    info["y_threshold0_vs_ref_max_abs"] = float((t["y_threshold0"] - t["y_ref_f32"]).abs().max())
    save_tensors(t, out_dir, info)
    return info


def save_tensors(t: dict, out_dir: str, info: dict) -> None:
    t = {k: v.detach().cpu().contiguous() for k, v in t.items()}
    info["tensors"] = tensor_table(t)
    save_file(t, os.path.join(out_dir, info["file"]), metadata={"case": info["name"]})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="reference", help="root folder; vectors go to <out>/bnb/")
    ap.add_argument("--device", default="cuda", help="cuda for the real vectors; cpu only to test this script")
    args = ap.parse_args()
    out_dir = os.path.join(args.out, "bnb")
    os.makedirs(out_dir, exist_ok=True)
    cases = []
    for i, case in enumerate(FOUR_BIT_CASES):
        cases.append(four_bit_case(case, 5000 + i, args.device, out_dir))
    for i, case in enumerate(INT8_CASES):
        cases.append(int8_case(case, 6000 + i, args.device, out_dir))
    cases.append(int8_matmul_case(7000, args.device, out_dir))
    gpu = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "none (cpu logic test)"
    manifest = dict(
        bitsandbytes_version=bnb.__version__, torch_version=torch.__version__, cuda_version=torch.version.cuda,
        device=args.device, gpu=gpu, date=datetime.date.today().isoformat(), script="scripts/make_bnb_vectors.py",
        conventions=dict(
            packed="U8, flat; element 2i in the high nibble of byte i, 2i+1 in the low nibble; quantize_4bit returns "
                   "it as [(numel+1)//2, 1], which is how Params4bit weights appear in a checkpoint",
            absmax="F32 [ceil(numel/blocksize)], or U8 when compress_statistics (double quant: absmax - offset "
                   "quantised blockwise with the 256-entry dynamic code `nested_code`, blocksize 256, scales in "
                   "`nested_absmax`)",
            dequant="dequantize_4bit output in the input dtype, converted to F32",
            dequant_f32_rule="not stored: dequantize_4bit with dtype float32 equals code[nibble] * absmax "
                             "(absmax_dequant when double-quantised), see dequant_f32_equals_code_times_absmax; "
                             "`dequant` is that product rounded to the input dtype, see "
                             "dequant_equals_dequant_f32_rounded",
            state_json="quant_state.as_dict(packed=True)['quant_state.bitsandbytes__<type>'] (U8 JSON bytes), "
                       "as transformers serialises it"),
        cases=cases)
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(out_dir, f)) for f in os.listdir(out_dir))
    for c in cases:
        keys = ("nearest_code_mismatches", "partial_last_block_len", "odd_numel_last_byte_low_nibble",
                "absmax_equals_blockwise_max_abs_of_input", "absmax_dequant_max_rel_err",
                "dequant_f32_equals_code_times_absmax", "dequant_equals_dequant_f32_rounded", "matmul_path_expected",
                "y_vs_ref_f32_max_abs", "y1_equals_y_row0", "equals_int8_vectorwise_quant_of_fp16_cast",
                "SCB_equals_rowwise_max_abs_of_fp16_cast", "outlier_cols_threshold6", "y_threshold6_vs_ref_max_abs",
                "y_threshold0_vs_ref_max_abs", "y1_threshold6_equals_y_row0", "y1_threshold0_equals_y_row0")
        print(c["name"], {k: c[k] for k in keys if k in c}, flush=True)
    print(f"bnb: {len(cases)} cases, {total} bytes in {out_dir}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
