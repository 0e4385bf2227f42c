//! Every Backend op on the GPU against the CPU oracle (`peregrine_cpu::CpuBackend`), on fresh
//! random bf16-representable inputs, outputs poisoned with NaN first. Each test prints one
//! row per op (max diff, relative error, tolerance) and skips visibly without a CUDA driver.

mod common;

use common::*;
use peregrine_core::{AttentionParams, Backend, LayerKv, LinearWeight, QkvLayout, RotaryParams};
use peregrine_cuda::{CudaBackend, PrefillAttention};

#[test]
fn no_gpu_means_a_clear_error_not_a_panic() {
    if peregrine_cuda::driver_available() {
        println!("SKIPPED: no_gpu_means_a_clear_error_not_a_panic: a driver is present");
        return;
    }
    let err = CudaBackend::new(0).err().expect("no driver, yet the backend started");
    let msg = err.to_string();
    println!("CudaBackend::new(0) without a driver: {msg}");
    assert!(msg.contains("CUDA") && !msg.contains('\n'), "{msg}");
}

#[test]
fn embedding_matches_cpu() {
    let Some(gpu) = cuda("embedding_matches_cpu") else { return };
    let cpu = cpu();
    let mut rng = Rng::new(1);
    let (v, d) = (500, 192);
    let table = bf16_tensor(v, d, &rng.bf16_vec(v * d, 1.0));
    let ids: Vec<u32> = (0..7).map(|_| rng.below(v as u32)).chain([0, v as u32 - 1]).collect();
    let gt = gpu.load_linear(LinearWeight::Dense(table.clone())).unwrap();
    let ct = cpu.load_linear(LinearWeight::Dense(table)).unwrap();
    let mut go = poisoned(&gpu, ids.len() * d);
    let mut co = cpu.alloc(ids.len() * d).unwrap();
    gpu.embedding(&gt, &ids, &mut go).unwrap();
    cpu.embedding(&ct, &ids, &mut co).unwrap();
    let (max, _) = check("embedding (dense, T=9, D=192)", &gpu.download(&go, 0, ids.len() * d).unwrap(), &co[..], 0.0);
    assert_eq!(max, 0.0, "a gather must be exact");
    assert!(gpu.embedding(&gt, &[v as u32], &mut go).is_err(), "an id beyond the vocabulary must be an error");
}

#[test]
fn layer_norm_matches_cpu() {
    let Some(gpu) = cuda("layer_norm_matches_cpu") else { return };
    let cpu = cpu();
    let mut rng = Rng::new(2);
    for (rows, dim) in [(5, 1000), (3, 8192), (1, 64)] {
        let x: Vec<f32> = rng.bf16_vec(rows * dim, 2.0).iter().map(|v| round_bf16(v + 0.5)).collect();
        let w: Vec<f32> = rng.bf16_vec(dim, 0.2).iter().map(|v| round_bf16(v + 1.0)).collect();
        let b = rng.bf16_vec(dim, 0.1);
        let (gx, gw, gb) = (gpu.upload(&x).unwrap(), gpu.upload(&w).unwrap(), gpu.upload(&b).unwrap());
        let mut go = poisoned(&gpu, rows * dim);
        gpu.layer_norm(&gx, rows, dim, &gw, &gb, 1e-5, &mut go).unwrap();
        let mut co = cpu.alloc(rows * dim).unwrap();
        let (cx, cw, cb) = (cpu.upload(&x).unwrap(), cpu.upload(&w).unwrap(), cpu.upload(&b).unwrap());
        cpu.layer_norm(&cx, rows, dim, &cw, &cb, 1e-5, &mut co).unwrap();
        check(&format!("layer_norm ({rows} x {dim})"), &gpu.download(&go, 0, rows * dim).unwrap(), &co[..], TOL_BF16);
    }
}

#[test]
fn layer_norm2_matches_two_cpu_layer_norms() {
    let Some(gpu) = cuda("layer_norm2_matches_two_cpu_layer_norms") else { return };
    let cpu = cpu();
    let mut rng = Rng::new(21);
    // 8192: the register kernel (Falcon-40B); 14848: Falcon-180B; 1000: the generic fallback.
    for (rows, dim) in [(1, 8192), (4, 14848), (3, 1000), (2, 256)] {
        let x: Vec<f32> = rng.bf16_vec(rows * dim, 2.0).iter().map(|v| round_bf16(v + 0.5)).collect();
        let norms: Vec<(Vec<f32>, Vec<f32>)> = (0..2)
            .map(|_| (rng.bf16_vec(dim, 0.2).iter().map(|v| round_bf16(v + 1.0)).collect(), rng.bf16_vec(dim, 0.1)))
            .collect();
        let gx = gpu.upload(&x).unwrap();
        let g: Vec<_> = norms.iter().map(|(w, b)| (gpu.upload(w).unwrap(), gpu.upload(b).unwrap())).collect();
        let (mut ga, mut gb) = (poisoned(&gpu, rows * dim), poisoned(&gpu, rows * dim));
        gpu.layer_norm2(&gx, rows, dim, (&g[0].0, &g[0].1), (&g[1].0, &g[1].1), 1e-5, &mut ga, &mut gb).unwrap();
        let cx = cpu.upload(&x).unwrap();
        for (i, got) in [ga, gb].iter().enumerate() {
            let (cw, cb) = (cpu.upload(&norms[i].0).unwrap(), cpu.upload(&norms[i].1).unwrap());
            let mut co = cpu.alloc(rows * dim).unwrap();
            cpu.layer_norm(&cx, rows, dim, &cw, &cb, 1e-5, &mut co).unwrap();
            check(&format!("layer_norm2 output {i} ({rows} x {dim})"), &gpu.download(got, 0, rows * dim).unwrap(), &co[..], TOL_BF16);
        }
    }
}

#[test]
fn dense_linear_matches_cpu() {
    let Some(gpu) = cuda("dense_linear_matches_cpu") else { return };
    let cpu = cpu();
    let mut rng = Rng::new(3);
    let (n, k) = (320, 256);
    let w = bf16_tensor(n, k, &rng.bf16_vec(n * k, 0.05));
    let bias = rng.bf16_vec(n, 0.1);
    let gw = gpu.load_linear(LinearWeight::Dense(w.clone())).unwrap();
    let cw = cpu.load_linear(LinearWeight::Dense(w)).unwrap();
    assert_eq!(gpu.linear_dims(&gw), (n, k));
    assert_eq!(gpu.linear_bytes(&gw), n * k * 2);
    for rows in [1, 5, 40] {
        for with_bias in [false, true] {
            let x = rng.bf16_vec(rows * k, 1.0);
            let gx = gpu.upload(&x).unwrap();
            let gb = gpu.upload(&bias).unwrap();
            let mut go = poisoned(&gpu, rows * n);
            gpu.linear(&gx, rows, &gw, with_bias.then_some(&gb), &mut go).unwrap();
            let mut co = cpu.alloc(rows * n).unwrap();
            let (cx, cb) = (cpu.upload(&x).unwrap(), cpu.upload(&bias).unwrap());
            cpu.linear(&cx, rows, &cw, with_bias.then_some(&cb), &mut co).unwrap();
            let name = format!("linear bf16 cuBLAS (T={rows}, {n}x{k}, bias={with_bias})");
            check(&name, &gpu.download(&go, 0, rows * n).unwrap(), &co[..], TOL_BF16);
        }
    }
}

#[test]
fn gelu_add_copy_rows_match_cpu() {
    let Some(gpu) = cuda("gelu_add_copy_rows_match_cpu") else { return };
    let cpu = cpu();
    let mut rng = Rng::new(4);
    let n = 5000;
    let x = rng.bf16_vec(n, 2.0);
    let mut gx = gpu.upload(&x).unwrap();
    let mut cx = cpu.upload(&x).unwrap();
    gpu.gelu(&mut gx, n).unwrap();
    cpu.gelu(&mut cx, n).unwrap();
    check("gelu (erf, 5000)", &gpu.download(&gx, 0, n).unwrap(), &cx[..], TOL_BF16);

    let y = rng.bf16_vec(n, 1.0);
    let gy = gpu.upload(&y).unwrap();
    gpu.add(&mut gx, &gy, n).unwrap();
    let cy = cpu.upload(&y).unwrap();
    cpu.add(&mut cx, &cy, n).unwrap();
    check("add (5000)", &gpu.download(&gx, 0, n).unwrap(), &cx[..], TOL_BF16);

    let (dim, src_row, rows) = (100, 7, 13);
    let mut gd = poisoned(&gpu, rows * dim);
    let mut cd = cpu.alloc(rows * dim).unwrap();
    gpu.copy_rows(&gy, src_row, rows, dim, &mut gd).unwrap();
    cpu.copy_rows(&cy, src_row, rows, dim, &mut cd).unwrap();
    let (max, _) = check("copy_rows (13 rows of 100 from row 7)", &gpu.download(&gd, 0, rows * dim).unwrap(), &cd[..], 0.0);
    assert_eq!(max, 0.0);
}

/// One attention scenario: several forward steps over one cache (prefill, decode rows,
/// continued prefill), each with fresh qkv; rotary (if any) and append_kv on both backends.
/// One model's attention over `steps` of query rows, the GPU against the CPU: rotary, the cache
/// append and attention each checked. `one_launch`: one-row steps go through `append_attend` (the
/// CUDA decode kernel that also rotates and appends); the cache must then match the CPU's too.
#[allow(clippy::too_many_arguments)]
fn attention_case(gpu: &CudaBackend, name: &str, layout: QkvLayout, alibi: bool, rope: Option<RotaryParams>, steps: &[Vec<u32>], seed: u64, one_launch: bool) {
    let cpu = cpu();
    let mut rng = Rng::new(seed);
    let capacity = steps.iter().flatten().copied().max().unwrap_or(0) as usize + 1;
    let per = capacity * layout.n_kv * layout.head_dim;
    let mut gcache = LayerKv::<CudaBackend> { k: gpu.alloc(per).unwrap(), v: gpu.alloc(per).unwrap() };
    let mut ccache = LayerKv::<peregrine_cpu::CpuBackend> { k: cpu.alloc(per).unwrap(), v: cpu.alloc(per).unwrap() };
    let slopes: Vec<f32> = (0..layout.n_head).map(|h| round_bf16(2f32.powf(-8.0 * (h + 1) as f32 / layout.n_head as f32))).collect();
    for (step, positions) in steps.iter().enumerate() {
        let t = positions.len();
        let width = layout.row_width();
        let qkv = rng.bf16_vec(t * width, 0.7);
        let mut gq = gpu.upload(&qkv).unwrap();
        let mut cq = cpu.upload(&qkv).unwrap();
        let tag = format!("{name} T={t} from pos {}", positions[0]);
        let params = AttentionParams {
            layout,
            positions,
            scale: 1.0 / (layout.head_dim as f32).sqrt(),
            alibi_slopes: alibi.then_some(slopes.as_slice()),
        };
        let out_len = t * layout.n_head * layout.head_dim;
        let mut co = cpu.alloc(out_len).unwrap();
        if one_launch && t == 1 {
            let mut go = poisoned(gpu, out_len);
            gpu.append_attend(&mut gq, &mut gcache, rope, &params, &mut go).unwrap();
            peregrine_core::backend::append_then_attend(&cpu, &mut cq, &mut ccache, rope, &params, &mut co).unwrap();
            check(&format!("append_attend, one launch ({tag})"), &gpu.download(&go, 0, out_len).unwrap(), &co[..], TOL_BF16_CHAIN);
            let cached = (positions[0] as usize + 1) * layout.n_kv * layout.head_dim;
            for (what, g, c) in [("k", &gcache.k, &ccache.k), ("v", &gcache.v, &ccache.v)] {
                check(&format!("append_attend {what} cache ({tag})"), &gpu.download(g, 0, cached).unwrap(), &c[..cached], TOL_BF16);
            }
            continue;
        }
        // Rotary models alternate between the fused rotary_append and rotary then append_kv.
        let fused = rope.is_some() && step % 2 == 1;
        if let Some(r) = rope {
            match fused {
                true => gpu.rotary_append(&mut gq, layout, positions, r, &mut gcache).unwrap(),
                false => gpu.rotary(&mut gq, layout, positions, r).unwrap(),
            }
            cpu.rotary(&mut cq, layout, positions, r).unwrap();
            let what = if fused { "rotary_append" } else { "rotary" };
            check(&format!("{what} ({tag})"), &gpu.download(&gq, 0, t * width).unwrap(), &cq[..], TOL_BF16);
        }
        if !fused {
            gpu.append_kv(&gq, layout, positions, &mut gcache).unwrap();
        }
        cpu.append_kv(&cq, layout, positions, &mut ccache).unwrap();
        let mut go = poisoned(gpu, out_len);
        gpu.attention(&gq, &gcache, &params, &mut go).unwrap();
        cpu.attention(&cq, &ccache, &params, &mut co).unwrap();
        let kind = if t <= peregrine_cuda::backend::DECODE_MAX_ROWS { "decode" } else { "prefill" };
        check(&format!("attention {kind} ({tag})"), &gpu.download(&go, 0, out_len).unwrap(), &co[..], TOL_BF16_CHAIN);
    }
}

fn steps() -> Vec<Vec<u32>> {
    vec![(0..40).collect(), vec![40], (41..44).collect(), (44..81).collect(), vec![81]]
}

#[test]
fn rotary_append_attention_match_cpu() {
    let Some(gpu) = cuda("rotary_append_attention_match_cpu") else { return };
    let rope = RotaryParams { theta: 10000.0, position_scale: 1.0 };
    let gqa = QkvLayout { n_head: 8, n_kv: 2, head_dim: 64 };
    let mqa = QkvLayout { n_head: 8, n_kv: 1, head_dim: 128 };
    let mha = QkvLayout { n_head: 4, n_kv: 4, head_dim: 64 };
    // Long enough for several decode splits (256 keys each) and several prefill key tiles.
    let long: Vec<Vec<u32>> = vec![(0..300).collect(), vec![300], (301..304).collect(), (304..620).collect(), vec![620]];
    // Every case twice: one-row steps as separate launches, then through the one-launch decode.
    for (kind, one) in [(PrefillAttention::TensorCore, false), (PrefillAttention::Simt, false), (PrefillAttention::TensorCore, true)] {
        gpu.set_prefill_attention(kind);
        let k = format!("{kind:?}{}", if one { " one-launch decode" } else { "" });
        attention_case(&gpu, &format!("{k} GQA 8q/2kv hd64 rope"), gqa, false, Some(rope), &steps(), 10, one);
        attention_case(&gpu, &format!("{k} MQA 8q/1kv hd128 rope/2"), mqa, false, Some(RotaryParams { theta: 500000.0, position_scale: 2.0 }), &steps(), 11, one);
        attention_case(&gpu, &format!("{k} MHA 4 heads hd64 alibi"), mha, true, None, &steps(), 12, one);
        attention_case(&gpu, &format!("{k} GQA 8q/2kv hd64 rope long"), gqa, false, Some(rope), &long, 13, one);
        attention_case(&gpu, &format!("{k} MHA 4 heads hd128 alibi long"), QkvLayout { n_head: 4, n_kv: 4, head_dim: 128 }, true, None, &long, 14, one);
    }
}

#[test]
fn position_beyond_cache_is_an_error() {
    let Some(gpu) = cuda("position_beyond_cache_is_an_error") else { return };
    let layout = QkvLayout { n_head: 2, n_kv: 1, head_dim: 64 };
    let mut cache = LayerKv::<CudaBackend> { k: gpu.alloc(4 * 64).unwrap(), v: gpu.alloc(4 * 64).unwrap() };
    let qkv = gpu.alloc(layout.row_width()).unwrap();
    assert!(gpu.append_kv(&qkv, layout, &[4], &mut cache).is_err());
    assert!(gpu.append_kv(&qkv, layout, &[3], &mut cache).is_ok());
}

#[test]
fn memory_is_accounted() {
    let Some(gpu) = cuda("memory_is_accounted") else { return };
    gpu.synchronize().unwrap();
    let before = gpu.memory().current_bytes;
    gpu.reset_peak_memory();
    let a = gpu.alloc(1 << 20).unwrap();
    let b = gpu.alloc(1 << 19).unwrap();
    let mid = gpu.memory();
    assert_eq!(mid.current_bytes - before, 3 << 20, "bf16 buffers: 2 bytes per element");
    drop(b);
    drop(a);
    let after = gpu.memory();
    assert_eq!(after.current_bytes, before);
    assert_eq!(after.peak_bytes, before + (3 << 20));
    let (free, total) = gpu.free_device_memory();
    println!("memory: peak {} bytes over the test; device {free} free of {total}", after.peak_bytes - before);
    assert!(free > 0 && total >= free);
}

/// f32 exponentials and f64 sums on the device against f64 on the host: log-probabilities agree
/// to this (absolute, nats).
const SCORE_LOGPROB_ABS: f64 = 1e-5;
/// KL agrees to this relative error, plus 1e-6 absolute for near-zero divergences.
const SCORE_KL_REL: f64 = 1e-3;

#[test]
fn score_rows_match_the_host_scoring() {
    let Some(gpu) = cuda("score_rows_match_the_host_scoring") else { return };
    let mut rng = Rng::new(31);
    for vocab in [65024usize, 1000, 7] {
        let (first, rows) = (2, 5);
        let total = (first + rows) * vocab;
        let x = rng.bf16_vec(total, 3.0);
        // The reference: x plus noise, so the KL divergences are small but not zero.
        let r: Vec<f32> = x.iter().map(|&v| round_bf16(v + 0.3 * rng.normal())).collect();
        let targets: Vec<u32> = (0..rows).map(|_| rng.below(vocab as u32)).collect();
        let (gx, gr) = (gpu.upload(&x).unwrap(), gpu.upload(&r).unwrap());
        for with_ref in [true, false] {
            let got = gpu.score_rows(&gx, with_ref.then_some(&gr), first, vocab, &targets).unwrap();
            for (i, g) in got.iter().enumerate() {
                let row = &x[(first + i) * vocab..(first + i + 1) * vocab];
                let reference = with_ref.then(|| &r[(first + i) * vocab..(first + i + 1) * vocab]);
                let want = peregrine_core::scoring::score_row(row, reference, targets[i]);
                let tag = format!("score_rows V={vocab} row {i} reference {with_ref}");
                assert!((g.target_logprob - want.target_logprob).abs() < SCORE_LOGPROB_ABS, "{tag}: {g:?} vs {want:?}");
                assert_eq!((g.argmax, g.ref_argmax), (want.argmax, want.ref_argmax), "{tag}");
                if let (Some(a), Some(b)) = (g.kl, want.kl) {
                    assert!((a - b).abs() <= 1e-6 + SCORE_KL_REL * b, "{tag}: KL {a} vs {b}");
                }
                assert_eq!(g.kl.is_some(), with_ref, "{tag}");
            }
            println!("score_rows V={vocab} reference {with_ref}: {} rows agree with the host", got.len());
        }
    }
}
