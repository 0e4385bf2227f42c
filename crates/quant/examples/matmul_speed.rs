//! Times the CPU reference matmul for each weight format on one Falcon-7B-sized linear
//! (4544 x 4544), for a decode step (T = 1) and a short prefill (T = 32), and prints the
//! achieved weight bandwidth, and the time to quantize it. Run: `cargo run --release -p peregrine-quant --example matmul_speed`.

use peregrine_core::{HostTensor, QuantKind};
use peregrine_quant::{matmul, quantize_linear, QuantOptions};
use std::time::Instant;

fn main() {
    let (n, k) = (4544, 4544);
    let mut state = 1u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
    };
    let w = HostTensor::from_f32(vec![n, k], &(0..n * k).map(|_| next()).collect::<Vec<_>>())
        .cast(peregrine_core::DType::BF16);
    for kind in [QuantKind::Bf16, QuantKind::Int8, QuantKind::Nf4] {
        for (label, threshold) in [("", None), (" t=6", Some(6.0))] {
            if threshold.is_some() && kind != QuantKind::Int8 {
                continue;
            }
            let t0 = Instant::now();
            let opts = QuantOptions { int8_threshold: threshold, ..Default::default() };
            let q = quantize_linear(&w, kind, &opts).unwrap();
            println!("{kind}{label:5} quantize_linear: {:8.2} ms", t0.elapsed().as_secs_f64() * 1e3);
            for rows in [1usize, 32] {
                let x: Vec<f32> = (0..rows * k).map(|_| next()).collect();
                let mut out = vec![0.0f32; rows * n];
                matmul(&x, rows, &q, &mut out).unwrap();
                let reps = 5;
                let t0 = Instant::now();
                for _ in 0..reps {
                    matmul(&x, rows, &q, &mut out).unwrap();
                }
                let s = t0.elapsed().as_secs_f64() / reps as f64;
                let gflops = 2.0 * (rows * n * k) as f64 / s / 1e9;
                println!(
                    "{kind}{label:5} T={rows:3}: {:8.2} ms  {gflops:6.2} GFLOP/s  weights {:.2} GB/s",
                    s * 1e3,
                    q.stored_bytes() as f64 / s / 1e9
                );
            }
        }
    }
}
