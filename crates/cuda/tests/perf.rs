//! Timings of the main kernels at Falcon-40B shapes (hidden 8192, 128 query heads, 8 KV
//! groups, head dim 64), printed as a table, never asserted: they are measurements for the
//! notes, not pass/fail. Each figure is the median over 7 trials of 10 back-to-back calls
//! timed with a host clock around one stream synchronize (see `time`). Inputs are random
//! (never zeros). Skips visibly without a CUDA driver.

mod common;

use std::time::Instant;

use common::*;
use peregrine_core::{AttentionParams, Backend, LayerKv, QkvLayout, QuantKind, RotaryParams};
use peregrine_cuda::{CudaBackend, PrefillAttention};

/// Seconds per call of `f`: the median over 7 trials of 10 back-to-back calls followed by one
/// stream synchronize, after 3 warm-up calls (launch overhead is amortised, as in a decode loop).
fn time(gpu: &CudaBackend, mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    gpu.synchronize().unwrap();
    let mut v: Vec<f64> = (0..7)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..10 {
                f();
            }
            gpu.synchronize().unwrap();
            t.elapsed().as_secs_f64() / 10.0
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[3]
}

fn row(what: &str, secs: f64, extra: String) {
    println!("| {what:<52} | {:>9.1} us | {extra} |", secs * 1e6);
}

#[test]
fn kernel_timings_at_falcon_40b_shapes() {
    let Some(gpu) = cuda("kernel_timings_at_falcon_40b_shapes") else { return };
    println!("device: {}", gpu.name());
    let d = 8192;
    let mut rng = Rng::new(30);
    // Linears: decode (T=1) and prefill (T=512) for every storage kind, qkv-sized (9216 x 8192)
    // and the MLP's down projection (8192 x 32768).
    for (n, k, what) in [(9216usize, 8192usize, "qkv 9216x8192"), (8192, 32768, "4h->h 8192x32768")] {
        for kind in [QuantKind::Bf16, QuantKind::Nf4, QuantKind::Fp4, QuantKind::Int8] {
            let t0 = Instant::now();
            let w = gpu.random_linear(kind, n, k, 0.02, 1).unwrap();
            gpu.synchronize().unwrap();
            let make = t0.elapsed().as_secs_f64();
            let bytes = gpu.linear_bytes(&w) as f64;
            for rows in [1usize, 512] {
                let x = gpu.upload(&rng.bf16_vec(rows * k, 1.0)).unwrap();
                let mut out = gpu.alloc(rows * n).unwrap();
                let s = time(&gpu, || gpu.linear(&x, rows, &w, None, &mut out).unwrap());
                let flops = 2.0 * (rows * n * k) as f64;
                row(
                    &format!("linear {kind} {what} T={rows}"),
                    s,
                    format!("{:>7.0} GB/s weights, {:>6.1} TFLOP/s", bytes / s / 1e9, flops / s / 1e12),
                );
            }
            row(&format!("  synthetic {kind} {what} made on device"), make, format!("{:.2} G weights/s", (n * k) as f64 / make / 1e9));
        }
    }
    // Attention over a 2048-position cache: decode (T=1) and a 2048-token prefill, Falcon-40B's
    // heads (128q/8kv hd64), then a prefill with Falcon2-11B's (32q/8kv hd128).
    let falcon_40b = QkvLayout { n_head: 128, n_kv: 8, head_dim: 64 };
    let falcon2_11b = QkvLayout { n_head: 32, n_kv: 8, head_dim: 128 };
    let p = 2048;
    let cases = [
        (falcon_40b, 1usize, p - 1, PrefillAttention::TensorCore),
        (falcon_40b, 2048, 0, PrefillAttention::Simt),
        (falcon_40b, 2048, 0, PrefillAttention::TensorCore),
        (falcon_40b, 512, 0, PrefillAttention::TensorCore),
        (falcon2_11b, 2048, 0, PrefillAttention::TensorCore),
    ];
    for (layout, t, start, kind) in cases {
        let per = p * layout.n_kv * layout.head_dim;
        let cache = LayerKv::<CudaBackend> { k: gpu.upload(&rng.bf16_vec(per, 1.0)).unwrap(), v: gpu.upload(&rng.bf16_vec(per, 1.0)).unwrap() };
        gpu.set_prefill_attention(kind);
        let positions: Vec<u32> = (start..start + t).map(|v| v as u32).collect();
        let qkv = gpu.upload(&rng.bf16_vec(t * layout.row_width(), 1.0)).unwrap();
        let width = layout.n_head * layout.head_dim;
        let mut out = gpu.alloc(t * width * 2).unwrap();
        let params = AttentionParams { layout, positions: &positions, scale: 0.125, alibi_slopes: None };
        let s = time(&gpu, || gpu.attention(&qkv, &cache, &params, &mut out).unwrap());
        let kv_bytes = (2 * per * 2) as f64;
        let flops = 4.0 * (t as f64) * (start as f64 + t as f64 / 2.0) * width as f64;
        let label = if t == 1 { "decode".to_string() } else { format!("prefill {kind:?}") };
        let heads = format!("{}q/{}kv hd{}", layout.n_head, layout.n_kv, layout.head_dim);
        row(&format!("attention {label} {heads} T={t} over {}", start + t), s, format!("{:>7.0} GB/s KV, {:>6.2} TFLOP/s", kv_bytes / s / 1e9, flops / s / 1e12));
    }
    // Rotary + KV append of a 2,048-token prompt, Falcon-40B heads.
    let layout = falcon_40b;
    let t = 2048;
    let per = t * layout.n_kv * layout.head_dim;
    let mut cache = LayerKv::<CudaBackend> { k: gpu.alloc(per).unwrap(), v: gpu.alloc(per).unwrap() };
    let mut qkv = gpu.upload(&rng.bf16_vec(t * layout.row_width(), 1.0)).unwrap();
    let positions: Vec<u32> = (0..t as u32).collect();
    let rope = RotaryParams { theta: 10000.0, position_scale: 1.0 };
    let s = time(&gpu, || gpu.rotary_append(&mut qkv, layout, &positions, rope, &mut cache).unwrap());
    let bytes = (t * (layout.n_head + layout.n_kv) * layout.head_dim * 2 * 2 + 2 * per * 2) as f64;
    row("rotary_append 128q/8kv hd64 T=2048", s, format!("{:>7.0} GB/s", bytes / s / 1e9));
    // Small ops at T=512.
    let rows = 512;
    let x = gpu.upload(&rng.bf16_vec(rows * d, 1.0)).unwrap();
    let w = gpu.upload(&rng.bf16_vec(d, 1.0)).unwrap();
    let b = gpu.upload(&rng.bf16_vec(d, 1.0)).unwrap();
    let mut out = gpu.alloc(rows * d).unwrap();
    let s = time(&gpu, || gpu.layer_norm(&x, rows, d, &w, &b, 1e-5, &mut out).unwrap());
    row("layer_norm 512 x 8192", s, format!("{:>7.0} GB/s", (4 * rows * d) as f64 / s / 1e9));
    let mut h = gpu.upload(&rng.bf16_vec(rows * 4 * d, 1.0)).unwrap();
    let s = time(&gpu, || gpu.gelu(&mut h, rows * 4 * d).unwrap());
    row("gelu 512 x 32768", s, format!("{:>7.0} GB/s", (4 * rows * 4 * d) as f64 / s / 1e9));
    println!("memory: {:?}", gpu.memory());
}

/// Short prompts (T = 1..32 activation rows) through each linear at Falcon-40B's shapes, with the
/// engine's dispatch (bf16: the T = 1 GEMV, then cuBLAS; LLM.int8 weight-only: the CUDA-core GEMV
/// at T = 1, then the tensor-core one with 1, 2 or 4 n-tiles; NF4: the tile GEMV with 1, 2 or 4
/// n-tiles), and for the quantized ones beside the 8-row chunks the wider kernels replaced, timed
/// in the same process.
/// GB/s counts the weight bytes once per call.
#[test]
fn short_prompt_linears_at_falcon_40b_shapes() {
    let Some(gpu) = cuda("short_prompt_linears_at_falcon_40b_shapes") else { return };
    println!("device: {}", gpu.name());
    let dev = gpu.device();
    let mut rng = Rng::new(31);
    let weight_only = peregrine_cuda::SyntheticOptions { int8_threshold: None, ..Default::default() };
    let shapes = [(9216usize, 8192usize, "qkv"), (8192, 8192, "dense"), (32768, 8192, "h->4h"), (8192, 32768, "4h->h")];
    for (n, k, what) in shapes {
        for kind in [QuantKind::Bf16, QuantKind::Int8, QuantKind::Nf4] {
            let w = gpu.random_linear_with(kind, n, k, 0.02, 1, weight_only).unwrap();
            let bytes = gpu.linear_bytes(&w) as f64;
            for rows in [1usize, 2, 4, 8, 12, 16, 19, 24, 32] {
                let x = gpu.upload(&rng.bf16_vec(rows * k, 1.0)).unwrap();
                let mut out = gpu.alloc(rows * n).unwrap();
                let gbs = |s: f64| format!("{:>7.0} GB/s", bytes / s / 1e9);
                let s = time(&gpu, || gpu.linear(&x, rows, &w, None, &mut out).unwrap());
                row(&format!("short {kind} {what} {n}x{k} T={rows} engine"), s, gbs(s));
                if kind == QuantKind::Bf16 && rows > 1 {
                    let s = time(&gpu, || gpu.linear_fused(&x, rows, &w, None, peregrine_core::Epilogue::Accumulate, &mut out).unwrap());
                    row(&format!("short {kind} {what} T={rows} engine, out +="), s, gbs(s));
                }
                if kind != QuantKind::Bf16 && rows > 8 {
                    let (xp, op) = (x.ptr(), out.ptr());
                    let s = time(&gpu, || {
                        for r0 in (0..rows).step_by(8) {
                            let r = (rows - r0).min(8);
                            let (xr, or) = (xp + (r0 * k * 2) as u64, op + (r0 * n * 2) as u64);
                            unsafe { peregrine_cuda::linear::matmul(dev, xr, r, &w, None, peregrine_core::Epilogue::Store, or).unwrap() };
                        }
                    });
                    row(&format!("short {kind} {what} T={rows} 8-row chunks"), s, gbs(s));
                }
            }
        }
    }
}
