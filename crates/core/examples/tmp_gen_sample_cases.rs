// TEMPORARY (not committed): writes sampling cases with the CPU sampler's token for the host emulation of sample.cu.
use peregrine_core::sampling::{Sampler, SamplingParams};
use std::io::Write;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 { self.0 ^= self.0 >> 12; self.0 ^= self.0 << 25; self.0 ^= self.0 >> 27; self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) }
    fn uni(&mut self) -> f32 { (self.next() >> 40) as f32 / (1u64 << 24) as f32 }
    fn normal(&mut self) -> f32 { let u1 = self.uni().max(1e-7); let u2 = self.uni(); (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos() }
    fn below(&mut self, n: u64) -> u64 { self.next() % n }
}

fn main() {
    let path = std::env::args().nth(1).unwrap();
    let count: usize = std::env::args().nth(2).unwrap().parse().unwrap();
    let big: bool = std::env::args().nth(3).map(|s| s == "big").unwrap_or(false);
    let mut f = std::fs::File::create(path).unwrap();
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for c in 0..count {
        let n = if big { 65024 } else { [1usize, 2, 3, 7, 33, 100, 257, 1000, 3000][rng.below(9) as usize] };
        let style = rng.below(5);
        let std = [1.0f32, 3.0, 10.0, 0.5][rng.below(4) as usize];
        let mut logits: Vec<f32> = (0..n).map(|_| {
            let x = rng.normal() * std;
            match style { 0 => (x * 2.0).round() / 2.0, 1 => if rng.below(10) == 0 { f32::NEG_INFINITY } else { x }, _ => x }
        }).map(|x| half_bf16(x)).collect();
        if style == 4 && n > 3 { for i in 0..n / 3 { logits[i] = logits[0]; } }
        let t = [0.0f32, 0.3, 0.7, 1.0, 1.5, 1.0, 0.9][rng.below(7) as usize];
        let top_k = [0usize, 0, 1, 5, 50, n.saturating_sub(1), n, n + 5][rng.below(8) as usize];
        let top_p = [1.0f32, 1.0, 0.9, 0.5, 0.1, 0.95][rng.below(6) as usize];
        let pen = [1.0f32, 1.0, 1.2, 2.0, 0.8][rng.below(5) as usize];
        let h = rng.below(40) as usize;
        let hist: Vec<u32> = (0..h).map(|_| rng.below(n as u64 + 3) as u32).collect();
        let seed = c as u64 * 7 + 1;
        let p = SamplingParams { temperature: t, top_k, top_p, repetition_penalty: pen, seed };
        let expected = Sampler::new(p.clone()).sample(&mut logits.clone(), &hist);
        let r = if t == 0.0 { 0.0 } else { Sampler::new(p).next_uniform() };
        let mut b = Vec::new();
        for v in [n as u32, h as u32] { b.extend(v.to_le_bytes()); }
        b.extend(t.to_le_bytes()); b.extend((top_k as u32).to_le_bytes()); b.extend(top_p.to_le_bytes()); b.extend(pen.to_le_bytes());
        b.extend(seed.to_le_bytes()); b.extend(r.to_le_bytes()); b.extend(expected.to_le_bytes());
        for &x in &logits { b.extend(((x.to_bits() >> 16) as u16).to_le_bytes()); }
        for &id in &hist { b.extend(id.to_le_bytes()); }
        f.write_all(&b).unwrap();
    }
}

fn half_bf16(x: f32) -> f32 {
    // round to nearest even to bf16 (finite values), keep inf
    if !x.is_finite() { return f32::from_bits(x.to_bits() & 0xffff_0000); }
    let b = x.to_bits();
    let r = b.wrapping_add(0x7fff + ((b >> 16) & 1));
    f32::from_bits(r & 0xffff_0000)
}
