//! CI check that needs no GPU: every `.cu` under `kernels/` compiles with NVRTC for sm_90 (H100/H200)
//! and sm_80 (A100). Skips, visibly, when libnvrtc cannot be found (see `ci-nvrtc.sh`).
//! With `PEREGRINE_NVRTC_DUMP=<dir>` it also writes each CUBIN there as `<file>.sm<arch>.cubin`, for
//! reading the machine code with `nvdisasm` or `cuobjdump -sass`.

use peregrine_cuda::{libs, nvrtc};

#[test]
fn kernels_compile_with_nvrtc() {
    if !libs::nvrtc_present() {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: kernels_compile_with_nvrtc: libnvrtc.so.13 not found (run `eval \"$(bash crates/cuda/ci-nvrtc.sh)\"`)"
        );
        return;
    }
    let include = libs::find_cuda_include();
    let version = nvrtc::nvrtc_version().expect("nvrtcVersion");
    println!("NVRTC {}.{}, cuda_bf16.h from {:?}", version.0, version.1, include);
    // One thread per (arch, file), as the backend does at start.
    let jobs: Vec<(u32, &nvrtc::KernelSource)> = [90, 80].into_iter().flat_map(|a| nvrtc::SOURCES.iter().map(move |s| (a, s))).collect();
    let results: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .iter()
            .map(|&(arch, src)| {
                let include = include.clone();
                s.spawn(move || {
                    let start = std::time::Instant::now();
                    match nvrtc::compile_uncached(src, arch, include.as_deref()) {
                        Ok(c) => {
                            dump_cubin(src.name, arch, &c.cubin);
                            Ok(format!("  {:<12} sm_{arch}: {:>7} bytes of CUBIN in {:.2?}{}", src.name, c.cubin.len(), start.elapsed(),
                            if c.log.trim().is_empty() { String::new() } else { format!("\n    NVRTC log: {}", c.log.trim()) }))
                        }
                        Err(e) => Err(e.to_string()),
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("compile thread").unwrap_or_else(|e| format!("ERROR {e}"))).collect()
    });
    for r in &results {
        println!("{r}");
    }
    let failures: Vec<&String> = results.iter().filter(|r| r.starts_with("ERROR")).collect();
    assert!(failures.is_empty(), "NVRTC errors:\n{}", failures.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n\n"));
}

/// Writes the CUBIN to `$PEREGRINE_NVRTC_DUMP/<name>.sm<arch>.cubin` when that variable is set.
fn dump_cubin(name: &str, arch: u32, cubin: &[u8]) {
    let Some(dir) = std::env::var_os("PEREGRINE_NVRTC_DUMP") else { return };
    let path = std::path::Path::new(&dir).join(format!("{name}.sm{arch}.cubin"));
    if let Err(e) = std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(&path, cubin)) {
        panic!("PEREGRINE_NVRTC_DUMP: cannot write {}: {e}", path.display());
    }
}
