//! CI check that needs no GPU: every `.cu` under `kernels/` compiles with NVRTC for sm_90 (H100/H200)
//! and sm_80 (A100). Skips, visibly, when libnvrtc cannot be found (see `ci-nvrtc.sh`).

use peregrine_cuda::{libs, nvrtc};

#[test]
fn kernels_compile_with_nvrtc() {
    if !libs::nvrtc_present() {
        println!("SKIPPED: kernels_compile_with_nvrtc: libnvrtc.so.13 not found (run `eval \"$(bash crates/cuda/ci-nvrtc.sh)\"`)");
        return;
    }
    let include = libs::find_cuda_include();
    let version = nvrtc::nvrtc_version().expect("nvrtcVersion");
    println!("NVRTC {}.{}, cuda_bf16.h from {:?}", version.0, version.1, include);
    let mut failures = Vec::new();
    for arch in [90, 80] {
        for src in nvrtc::SOURCES {
            let start = std::time::Instant::now();
            match nvrtc::compile_uncached(src, arch, include.as_deref()) {
                Ok(c) => {
                    println!("  {:<12} sm_{arch}: {:>7} bytes of CUBIN in {:.2?}", src.name, c.cubin.len(), start.elapsed());
                    if !c.log.trim().is_empty() {
                        println!("    NVRTC log: {}", c.log.trim());
                    }
                }
                Err(e) => failures.push(e.to_string()),
            }
        }
    }
    assert!(failures.is_empty(), "NVRTC errors:\n{}", failures.join("\n\n"));
}
