//! Finding the CUDA shared libraries before cudarc touches them.
//!
//! cudarc loads libcuda, libnvrtc and libcublas(Lt) lazily by *name* and panics when a name
//! cannot be opened. We therefore probe first and, where a library lives in a folder the
//! dynamic loader does not search (a pip wheel, `/usr/local/cuda/lib64`), open it by its full
//! path and keep it loaded: glibc then satisfies cudarc's later `dlopen("libnvrtc.so.13")`
//! with the already-loaded object, because it matches loaded objects by their SONAME.
//!
//! Search order for each library: an explicit environment variable (a file or a folder),
//! `$CUDA_HOME`/`$CUDA_PATH`, `/usr/local/cuda`, the NVIDIA pip wheels (`nvidia/cu13/lib`,
//! `nvidia/<pkg>/lib`) under the usual Python prefixes, then the loader's own search path.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The CUDA major version cudarc was built for (feature `cuda-13000`).
const CUDA_MAJOR: u32 = 13;

/// Keep every library we opened by path alive for the life of the process.
fn keep(lib: libloading::Library) {
    std::mem::forget(lib);
}

/// Open `path` and leak the handle. True on success.
fn preload(path: &Path) -> bool {
    // SAFETY: loading a vendor library runs its initialisers; these are NVIDIA's CUDA libraries,
    // which are designed to be dlopen'ed.
    match unsafe { libloading::Library::new(path) } {
        Ok(lib) => {
            keep(lib);
            true
        }
        Err(_) => false,
    }
}

/// `prefix/lib/python3*/{site,dist}-packages` folders that exist.
fn python_site_dirs(prefix: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for lib in ["lib", "lib64", "local/lib"] {
        let Ok(entries) = std::fs::read_dir(prefix.join(lib)) else { continue };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if !name.starts_with("python3") {
                continue;
            }
            for sub in ["site-packages", "dist-packages"] {
                let p = e.path().join(sub);
                if p.is_dir() {
                    out.push(p);
                }
            }
        }
    }
    out
}

/// Folders where NVIDIA pip wheels may have put `nvidia/...`.
fn python_prefixes() -> Vec<PathBuf> {
    let mut prefixes: Vec<PathBuf> = Vec::new();
    for var in ["VIRTUAL_ENV", "CONDA_PREFIX"] {
        if let Ok(v) = std::env::var(var) {
            prefixes.push(v.into());
        }
    }
    if let Ok(home) = std::env::var("HOME") {
        prefixes.push(PathBuf::from(home).join(".local"));
    }
    for p in ["/usr", "/usr/local", "/opt/torch/.venv", "/opt/conda", "/opt/venv"] {
        prefixes.push(p.into());
    }
    let mut sites: Vec<PathBuf> = prefixes.iter().flat_map(|p| python_site_dirs(p)).collect();
    sites.push("/usr/lib/python3/dist-packages".into());
    sites
}

/// Candidate folders for a CUDA library shipped in the pip wheel `wheel_dir` (e.g. "cublas").
fn library_dirs(wheel_dir: &str) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for var in ["CUDA_HOME", "CUDA_PATH", "CUDA_ROOT"] {
        if let Ok(v) = std::env::var(var) {
            dirs.push(PathBuf::from(&v).join("lib64"));
            dirs.push(PathBuf::from(&v).join("lib"));
        }
    }
    dirs.push("/usr/local/cuda/lib64".into());
    dirs.push("/usr/local/cuda/targets/x86_64-linux/lib".into());
    dirs.push(format!("/usr/local/cuda-{CUDA_MAJOR}/lib64").into());
    for site in python_prefixes() {
        dirs.push(site.join(format!("nvidia/cu{CUDA_MAJOR}/lib")));
        dirs.push(site.join(format!("nvidia/{wheel_dir}/lib")));
    }
    dirs
}

/// Preload `names` (in order, dependencies first) from the first folder holding the last of them.
/// Returns the folder used, if any.
fn preload_from_dirs(dirs: &[PathBuf], names: &[&str]) -> Option<PathBuf> {
    let main = names.last()?;
    for dir in dirs {
        if dir.join(main).is_file() {
            for n in names {
                let p = dir.join(n);
                if p.is_file() {
                    preload(&p);
                }
            }
            return Some(dir.clone());
        }
    }
    None
}

/// An environment variable naming a library file or the folder holding it.
fn preload_from_env(var: &str, names: &[&str]) -> Option<PathBuf> {
    let v = std::env::var_os(var)?;
    let p = PathBuf::from(v);
    if p.is_dir() {
        return preload_from_dirs(&[p], names);
    }
    if p.is_file() {
        if let Some(dir) = p.parent() {
            // Dependencies beside it (libnvrtc-builtins) first, then the named file.
            for n in &names[..names.len().saturating_sub(1)] {
                let dep = dir.join(n);
                if dep.is_file() {
                    preload(&dep);
                }
            }
        }
        return preload(&p).then(|| p.parent().map(Path::to_path_buf).unwrap_or_default());
    }
    None
}

/// libcuda (the driver) can be opened. Never panics.
pub fn libcuda_present() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    *PRESENT.get_or_init(|| {
        // SAFETY: only tries to dlopen a list of names.
        unsafe { cudarc::driver::sys::is_culib_present() }
    })
}

/// libnvrtc can be opened (after preloading it from `PEREGRINE_NVRTC_LIB`, CUDA_HOME,
/// /usr/local/cuda or a pip wheel). Never panics.
pub fn nvrtc_present() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    *PRESENT.get_or_init(|| {
        let names = [format!("libnvrtc-builtins.so.{CUDA_MAJOR}.0"), format!("libnvrtc.so.{CUDA_MAJOR}")];
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        if preload_from_env("PEREGRINE_NVRTC_LIB", &names).is_none() {
            preload_from_dirs(&library_dirs("cuda_nvrtc"), &names);
        }
        // SAFETY: only tries to dlopen a list of names.
        unsafe { cudarc::nvrtc::sys::is_culib_present() }
    })
}

/// libcublasLt and libcublas can be opened (after preloading them like NVRTC). Never panics.
pub fn cublas_present() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    *PRESENT.get_or_init(|| {
        let names = [format!("libcublasLt.so.{CUDA_MAJOR}"), format!("libcublas.so.{CUDA_MAJOR}")];
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        if preload_from_env("PEREGRINE_CUBLAS_LIB", &names).is_none() {
            preload_from_dirs(&library_dirs("cublas"), &names);
        }
        // SAFETY: only tries to dlopen a list of names.
        unsafe { cudarc::cublaslt::sys::is_culib_present() && cudarc::cublas::sys::is_culib_present() }
    })
}

/// Folders that may hold `cuda_bf16.h`, best first: `PEREGRINE_CUDA_INCLUDE`, `$CUDA_HOME/include`,
/// `/usr/local/cuda/include`, then the pip wheel layouts of `nvidia-cuda-runtime`
/// (`nvidia/cu13/include` for CUDA 13 wheels, `nvidia/cuda_runtime/include` for older ones).
pub fn cuda_include_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Ok(v) = std::env::var("PEREGRINE_CUDA_INCLUDE") {
        dirs.extend(std::env::split_paths(&v));
    }
    for var in ["CUDA_HOME", "CUDA_PATH", "CUDA_ROOT"] {
        if let Ok(v) = std::env::var(var) {
            dirs.push(PathBuf::from(v).join("include"));
        }
    }
    dirs.push("/usr/local/cuda/include".into());
    dirs.push("/usr/local/cuda/targets/x86_64-linux/include".into());
    // A wheel-installed libnvrtc usually sits beside the runtime wheel's headers.
    if let Ok(v) = std::env::var("PEREGRINE_NVRTC_LIB") {
        let p = PathBuf::from(v);
        let lib_dir = if p.is_dir() { Some(p) } else { p.parent().map(Path::to_path_buf) };
        if let Some(parent) = lib_dir.and_then(|d| d.parent().map(Path::to_path_buf)) {
            dirs.push(parent.join("include"));
        }
    }
    for site in python_prefixes() {
        dirs.push(site.join(format!("nvidia/cu{CUDA_MAJOR}/include")));
        dirs.push(site.join("nvidia/cuda_runtime/include"));
    }
    dirs
}

/// The first folder that holds `cuda_bf16.h`, if any.
pub fn find_cuda_include() -> Option<PathBuf> {
    cuda_include_dirs().into_iter().find(|d| d.join("cuda_bf16.h").is_file())
}
