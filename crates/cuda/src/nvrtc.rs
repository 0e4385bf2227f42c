//! Run-time compilation of the `.cu` files under `kernels/` with NVRTC, for the device's own
//! architecture (`sm_XY` from its compute capability), with an on-disk cache of the CUBIN.
//!
//! Key design choice: we ask NVRTC for a CUBIN for a *real* architecture (not PTX), so loading a
//! cached module costs no driver JIT. The cache key is the sha256 of the prelude, the source,
//! the NVRTC options (which include the architecture and the include folder) and the NVRTC
//! version, so any change recompiles. The cache lives in `$PEREGRINE_KERNEL_CACHE`, else
//! `$XDG_CACHE_HOME/peregrine/kernels`, else `~/.cache/peregrine/kernels`; a cache that cannot
//! be written is skipped silently (compiling again is only slower).

use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};

use cudarc::nvrtc::sys;
use peregrine_core::{Error, Result};
use sha2::{Digest, Sha256};

use crate::libs;

/// One kernel family's source file.
#[derive(Clone, Copy, Debug)]
pub struct KernelSource {
    /// File stem under `kernels/` (also the module's name).
    pub name: &'static str,
    pub code: &'static str,
}

/// Shared helpers every kernel file includes as `#include "prelude.cuh"`.
pub const PRELUDE: &str = include_str!("../kernels/prelude.cuh");

/// Every kernel family, compiled into one module each.
pub const SOURCES: &[KernelSource] = &[
    KernelSource { name: "elementwise", code: include_str!("../kernels/elementwise.cu") },
    KernelSource { name: "layernorm", code: include_str!("../kernels/layernorm.cu") },
    KernelSource { name: "rotary", code: include_str!("../kernels/rotary.cu") },
    KernelSource { name: "attention", code: include_str!("../kernels/attention.cu") },
    KernelSource { name: "quant4", code: include_str!("../kernels/quant4.cu") },
    KernelSource { name: "int8", code: include_str!("../kernels/int8.cu") },
    KernelSource { name: "gemv8", code: include_str!("../kernels/gemv8.cu") },
    KernelSource { name: "random", code: include_str!("../kernels/random.cu") },
    KernelSource { name: "sample", code: include_str!("../kernels/sample.cu") },
    KernelSource { name: "score", code: include_str!("../kernels/score.cu") },
];

/// NVRTC's version as (major, minor). Call only after `libs::nvrtc_present()`.
pub fn nvrtc_version() -> Result<(i32, i32)> {
    let (mut major, mut minor) = (0, 0);
    // SAFETY: two out-pointers to live integers.
    unsafe { sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| Error::device(format!("nvrtcVersion failed: {e:?}")))?;
    Ok((major, minor))
}

/// The options we compile with for `sm_{arch}`.
pub fn compile_options(arch: u32, include: Option<&Path>) -> Vec<String> {
    let mut opts = vec![
        format!("--gpu-architecture=sm_{arch}"),
        "--std=c++17".to_string(),
        // No --use_fast_math: erf, exp and division stay exact (the oracle is f32 on the CPU).
        "--device-as-default-execution-space".to_string(),
    ];
    if let Some(dir) = include {
        opts.push(format!("--include-path={}", dir.display()));
    }
    // Registers, shared memory and spills per kernel in NVRTC's log (for the notes).
    if std::env::var_os("PEREGRINE_NVRTC_VERBOSE").is_some() {
        opts.push("--ptxas-options=-v".to_string());
    }
    opts.extend(lab_defines());
    opts
}

/// `-D` options from `$PEREGRINE_NVRTC_DEFINES` (`NAME` or `NAME=VALUE`, separated by whitespace or
/// commas, so a list fits in one `env` word): the
/// way to try a compile-time alternative of a kernel on the device without a rebuild
/// (scripts/decode_variants.sh). They enter the cache key like every other option.
fn lab_defines() -> Vec<String> {
    let Some(v) = std::env::var_os("PEREGRINE_NVRTC_DEFINES") else { return Vec::new() };
    let list = v.to_string_lossy().replace(',', " ");
    list.split_whitespace().map(|d| format!("-D{}", d.trim_start_matches("-D"))).collect()
}

/// The folder the cache lives in (not created here).
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(v) = std::env::var_os("PEREGRINE_KERNEL_CACHE") {
        return Some(PathBuf::from(v));
    }
    if let Some(v) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(v).join("peregrine/kernels"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/peregrine/kernels"))
}

/// Hex sha256 over everything that determines the CUBIN.
fn cache_key(src: &KernelSource, opts: &[String], version: (i32, i32)) -> String {
    let mut h = Sha256::new();
    h.update(PRELUDE.as_bytes());
    h.update([0u8]);
    h.update(src.code.as_bytes());
    for o in opts {
        h.update([0u8]);
        h.update(o.as_bytes());
    }
    h.update(format!("nvrtc {}.{}", version.0, version.1).as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Owns an nvrtcProgram and destroys it on drop.
struct Program(sys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: the handle came from nvrtcCreateProgram and is destroyed once.
        let _ = unsafe { sys::nvrtcDestroyProgram(&mut self.0) };
    }
}

impl Program {
    fn create(src: &KernelSource) -> Result<Self> {
        let code = cstring(src.code, src.name)?;
        let name = cstring(&format!("{}.cu", src.name), src.name)?;
        let header = cstring(PRELUDE, "prelude.cuh")?;
        let header_name = cstring("prelude.cuh", "prelude.cuh")?;
        let headers = [header.as_ptr()];
        let names = [header_name.as_ptr()];
        let mut prog: sys::nvrtcProgram = std::ptr::null_mut();
        // SAFETY: all strings outlive the call (NVRTC copies them); arrays hold 1 entry each.
        unsafe { sys::nvrtcCreateProgram(&mut prog, code.as_ptr(), name.as_ptr(), 1, headers.as_ptr(), names.as_ptr()) }
            .result()
            .map_err(|e| Error::device(format!("nvrtcCreateProgram({}.cu): {e:?}", src.name)))?;
        Ok(Program(prog))
    }

    fn log(&self) -> String {
        let mut size = 0usize;
        // SAFETY: valid program, out-pointer to a live usize.
        if unsafe { sys::nvrtcGetProgramLogSize(self.0, &mut size) }.result().is_err() || size == 0 {
            return String::new();
        }
        let mut buf = vec![0u8; size];
        // SAFETY: buf holds `size` bytes as NVRTC asked.
        if unsafe { sys::nvrtcGetProgramLog(self.0, buf.as_mut_ptr() as *mut _) }.result().is_err() {
            return String::new();
        }
        CStr::from_bytes_until_nul(&buf).map(|c| c.to_string_lossy().into_owned()).unwrap_or_default()
    }

    fn cubin(&self) -> Result<Vec<u8>> {
        let mut size = 0usize;
        // SAFETY: valid compiled program, out-pointer to a live usize.
        unsafe { sys::nvrtcGetCUBINSize(self.0, &mut size) }
            .result()
            .map_err(|e| Error::device(format!("nvrtcGetCUBINSize: {e:?}")))?;
        let mut buf = vec![0u8; size];
        // SAFETY: buf holds `size` bytes as NVRTC asked.
        unsafe { sys::nvrtcGetCUBIN(self.0, buf.as_mut_ptr() as *mut _) }
            .result()
            .map_err(|e| Error::device(format!("nvrtcGetCUBIN: {e:?}")))?;
        Ok(buf)
    }
}

fn cstring(s: &str, what: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::device(format!("{what}: source contains a NUL byte")))
}

/// What a compilation produced: the CUBIN and NVRTC's log (warnings), and whether it came from the cache.
pub struct Compiled {
    pub cubin: Vec<u8>,
    pub log: String,
    pub cached: bool,
}

/// Compile `src` for `sm_{arch}` with NVRTC, without the cache. Errors carry NVRTC's log.
pub fn compile_uncached(src: &KernelSource, arch: u32, include: Option<&Path>) -> Result<Compiled> {
    if !libs::nvrtc_present() {
        return Err(Error::device("NVRTC (libnvrtc.so.13) not found: set PEREGRINE_NVRTC_LIB or LD_LIBRARY_PATH"));
    }
    let opts = compile_options(arch, include);
    let prog = Program::create(src)?;
    let c_opts: Vec<CString> = opts.iter().map(|o| cstring(o, "option")).collect::<Result<_>>()?;
    let ptrs: Vec<*const std::ffi::c_char> = c_opts.iter().map(|c| c.as_ptr()).collect();
    // SAFETY: `ptrs` points into `c_opts`, alive for the call.
    let res = unsafe { sys::nvrtcCompileProgram(prog.0, ptrs.len() as i32, ptrs.as_ptr()) };
    let log = prog.log();
    if res.result().is_err() {
        return Err(Error::device(format!(
            "NVRTC failed to compile kernels/{}.cu for sm_{arch} ({res:?}):\n{}",
            src.name,
            log.trim()
        )));
    }
    Ok(Compiled { cubin: prog.cubin()?, log, cached: false })
}

/// Compile `src` for `sm_{arch}`, reading and filling the on-disk cache.
pub fn compile_cached(src: &KernelSource, arch: u32) -> Result<Compiled> {
    if !libs::nvrtc_present() {
        return Err(Error::device("NVRTC (libnvrtc.so.13) not found: set PEREGRINE_NVRTC_LIB or LD_LIBRARY_PATH"));
    }
    let include = libs::find_cuda_include();
    let opts = compile_options(arch, include.as_deref());
    let key = cache_key(src, &opts, nvrtc_version()?);
    let path = cache_dir().map(|d| d.join(format!("{}-sm{arch}-{}.cubin", src.name, &key[..24])));
    if let Some(p) = &path {
        if let Ok(cubin) = std::fs::read(p) {
            if !cubin.is_empty() {
                return Ok(Compiled { cubin, log: String::new(), cached: true });
            }
        }
    }
    let compiled = compile_uncached(src, arch, include.as_deref()).map_err(|e| match include {
        None => Error::device(format!(
            "{e}\n(no folder with cuda_bf16.h was found: set PEREGRINE_CUDA_INCLUDE; searched {:?})",
            libs::cuda_include_dirs()
        )),
        Some(_) => e,
    })?;
    if let Some(p) = &path {
        write_atomically(p, &compiled.cubin);
    }
    Ok(compiled)
}

/// Best effort: write to a temporary name, then rename, so readers never see half a file.
fn write_atomically(path: &Path, bytes: &[u8]) {
    let Some(dir) = path.parent() else { return };
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    if std::fs::write(&tmp, bytes).is_ok() && std::fs::rename(&tmp, path).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}
