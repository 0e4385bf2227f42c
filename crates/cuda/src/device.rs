//! One CUDA device: its context, a created (non-default) stream, a cuBLAS handle bound to that
//! stream, the kernel modules compiled for its architecture, and the memory tracker.
//!
//! Key design choice: every launch goes through `Device::launch` with raw pointers and scalars
//! (`Args`), and every allocation through `Device::alloc*`, so checking, accounting and (later)
//! graph capture live in one place. Errors are `Error::Device` lines naming the call.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use cudarc::cublas::{sys as cublas_sys, CudaBlas};
use cudarc::driver::{result as drv, sys as drv_sys, CudaContext, CudaFunction, CudaGraph, CudaModule, CudaStream, DeviceRepr, ValidAsZeroBits};
use cudarc::nvrtc::Ptx;
use half::bf16;
use peregrine_core::{Error, Result};

use crate::alloc::{DeviceBuffer, MemTracker};
use crate::{libs, nvrtc};

/// Kernel arguments, each stored in 8 bytes (pointers, i64/u64, and 4-byte scalars in the low
/// half, which is where a little-endian reader of 4 bytes finds them).
#[derive(Default)]
pub struct Args {
    vals: Vec<u64>,
}

impl Args {
    pub fn new() -> Self {
        Args { vals: Vec::with_capacity(16) }
    }
    /// A device pointer.
    pub fn ptr(mut self, p: u64) -> Self {
        self.vals.push(p);
        self
    }
    /// A nullable device pointer (0 = null).
    pub fn opt(self, p: Option<u64>) -> Self {
        self.ptr(p.unwrap_or(0))
    }
    pub fn i32(mut self, v: i32) -> Self {
        self.vals.push(v as u32 as u64);
        self
    }
    pub fn i64(mut self, v: i64) -> Self {
        self.vals.push(v as u64);
        self
    }
    pub fn u64(mut self, v: u64) -> Self {
        self.vals.push(v);
        self
    }
    pub fn f32(mut self, v: f32) -> Self {
        self.vals.push(v.to_bits() as u64);
        self
    }
}

/// A 1-D, 2-D or 3-D launch shape.
#[derive(Clone, Copy, Debug)]
pub struct Grid {
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
    pub smem: u32,
    /// Launch as a programmatic dependent of the previous kernel (see `with_pdl`).
    pub pdl: bool,
}

impl Grid {
    pub fn new(grid: (u32, u32, u32), threads: u32) -> Self {
        Grid { grid, block: (threads, 1, 1), smem: 0, pdl: false }
    }
    pub fn with_smem(mut self, bytes: u32) -> Self {
        self.smem = bytes;
        self
    }
    /// Programmatic dependent launch (sm_90): the kernel may be scheduled while the previous
    /// one drains, hiding the launch gap. Only for kernels that run `PDL_WAIT()` (prelude.cuh)
    /// before reading anything an earlier kernel wrote.
    pub fn with_pdl(mut self) -> Self {
        self.pdl = true;
        self
    }
}

/// Loaded kernels by (module, name), with the dynamic shared memory limit set on each.
type FunctionTable = HashMap<(&'static str, &'static str), (CudaFunction, u32)>;

/// Static shared memory a block may use without opting in.
const DEFAULT_SMEM_LIMIT: u32 = 48 * 1024;
/// cuBLAS's workspace, given to it at start so that no GEMM allocates (which a recorded
/// decode step must not do).
const CUBLAS_WORKSPACE_BYTES: usize = 32 << 20;

pub struct Device {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    pub blas: CudaBlas,
    pub mem: Arc<MemTracker>,
    /// Compute capability as major*10 + minor (90 on H100/H200).
    pub arch: u32,
    pub sm_count: u32,
    pub name: String,
    modules: HashMap<&'static str, Arc<CudaModule>>,
    functions: Mutex<FunctionTable>,
    /// Programmatic dependent launches in use (sm_90 and newer, unless PEREGRINE_NO_PDL is set).
    pdl: bool,
    /// True between `begin_capture` and `end_capture`: allocations are refused then.
    capturing: AtomicBool,
    /// Set when an allocation was refused during the last capture.
    capture_refused: AtomicBool,
    /// Held for cuBLAS (see CUBLAS_WORKSPACE_BYTES).
    _cublas_workspace: DeviceBuffer<u8>,
}

fn drv_err(what: &str) -> impl Fn(drv::DriverError) -> Error + '_ {
    move |e| Error::device(format!("CUDA {what}: {e:?}"))
}

/// True when libcuda loads, cuInit succeeds and at least one device is visible. Never panics.
pub fn driver_available() -> bool {
    libs::libcuda_present() && CudaContext::device_count().map(|n| n > 0).unwrap_or(false)
}

impl Device {
    /// Open device `ordinal`: driver, context, stream, NVRTC-compiled modules (cached), cuBLAS.
    pub fn new(ordinal: usize) -> Result<Self> {
        if !libs::libcuda_present() {
            return Err(Error::device("no CUDA driver: libcuda.so.1 cannot be loaded (is an NVIDIA driver installed?)"));
        }
        let count = CudaContext::device_count().map_err(drv_err("cuInit / device count"))?;
        if ordinal >= count.max(0) as usize {
            return Err(Error::device(format!("CUDA device {ordinal} requested but {count} device(s) visible")));
        }
        let ctx = CudaContext::new(ordinal).map_err(drv_err("context creation"))?;
        // SAFETY: this backend uses one stream for everything, so cudarc's cross-stream event
        // tracking is unnecessary; it must be switched off before the first allocation.
        unsafe { ctx.disable_event_tracking() };
        let (major, minor) = ctx.compute_capability().map_err(drv_err("compute capability"))?;
        let arch = (major * 10 + minor) as u32;
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        if arch < 80 {
            return Err(Error::device(format!("{name} has compute capability {major}.{minor}; the bf16 kernels need 8.0 or newer")));
        }
        let sm_count = ctx
            .attribute(drv_sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(drv_err("multiprocessor count"))? as u32;
        let stream = ctx.new_stream().map_err(drv_err("stream creation"))?;
        if !libs::nvrtc_present() {
            return Err(Error::device("NVRTC (libnvrtc.so.13) not found: install the CUDA 13 toolkit or `pip install nvidia-cuda-nvrtc`, or set PEREGRINE_NVRTC_LIB"));
        }
        if !libs::cublas_present() {
            return Err(Error::device("cuBLAS (libcublas.so.13) not found: install the CUDA 13 toolkit or `pip install nvidia-cublas`, or set PEREGRINE_CUBLAS_LIB"));
        }
        let blas = CudaBlas::new(stream.clone()).map_err(|e| Error::device(format!("cuBLAS handle: {e:?}")))?;
        // Compile (or read from the cache) every module in parallel: NVRTC programs are independent.
        let cubins: Vec<Result<nvrtc::Compiled>> = std::thread::scope(|s| {
            let jobs: Vec<_> = nvrtc::SOURCES.iter().map(|src| s.spawn(move || nvrtc::compile_cached(src, arch))).collect();
            jobs.into_iter().map(|j| j.join().unwrap_or_else(|_| Err(Error::device("NVRTC compile thread panicked")))).collect()
        });
        let mem = Arc::new(MemTracker::default());
        let workspace = stream
            .alloc_zeros::<u8>(CUBLAS_WORKSPACE_BYTES)
            .map_err(|e| Error::device(format!("cuBLAS workspace of {CUBLAS_WORKSPACE_BYTES} bytes: {e:?}")))?;
        let workspace = DeviceBuffer::new(workspace, CUBLAS_WORKSPACE_BYTES, mem.clone());
        // SAFETY: the workspace outlives the handle's use (both live in this Device); the size is its length.
        let status = unsafe { cublas_sys::cublasSetWorkspace_v2(*blas.handle(), workspace.ptr() as *mut c_void, CUBLAS_WORKSPACE_BYTES) };
        if status != cublas_sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
            return Err(Error::device(format!("cuBLAS workspace: {status:?}")));
        }
        let mut modules = HashMap::new();
        for (src, compiled) in nvrtc::SOURCES.iter().zip(cubins) {
            let module = ctx
                .load_module(Ptx::from_binary(compiled?.cubin))
                .map_err(|e| Error::device(format!("loading kernels/{}.cu for sm_{arch}: {e:?}", src.name)))?;
            modules.insert(src.name, module);
        }
        Ok(Device {
            ctx,
            stream,
            blas,
            mem,
            arch,
            sm_count,
            name,
            modules,
            functions: Mutex::new(HashMap::new()),
            pdl: arch >= 90 && std::env::var_os("PEREGRINE_NO_PDL").is_none(),
            capturing: AtomicBool::new(false),
            capture_refused: AtomicBool::new(false),
            _cublas_workspace: workspace,
        })
    }

    /// Start recording the stream's work into a graph (nothing queued from here on runs).
    pub fn begin_capture(&self) -> Result<()> {
        self.stream
            .begin_capture(drv_sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(drv_err("beginning a graph capture"))?;
        self.capture_refused.store(false, Ordering::Release);
        self.capturing.store(true, Ordering::Release);
        Ok(())
    }

    /// Whether the last capture failed because something asked for memory while recording.
    pub fn capture_needed_memory(&self) -> bool {
        self.capture_refused.load(Ordering::Acquire)
    }

    /// Stop recording and instantiate the graph.
    pub fn end_capture(&self) -> Result<CudaGraph> {
        self.capturing.store(false, Ordering::Release);
        let graph = self
            .stream
            .end_capture(drv_sys::CUgraphInstantiate_flags(0))
            .map_err(drv_err("ending a graph capture"))?;
        graph.ok_or_else(|| Error::device("graph capture recorded nothing"))
    }

    /// True while a graph is being recorded.
    pub fn is_capturing(&self) -> bool {
        self.capturing.load(Ordering::Acquire)
    }

    fn refuse_while_capturing(&self, bytes: usize) -> Result<()> {
        if self.is_capturing() {
            self.capture_refused.store(true, Ordering::Release);
            return Err(Error::device(format!("an allocation of {bytes} bytes was asked for while recording a decode step (graphs must not allocate)")));
        }
        Ok(())
    }

    /// The kernel `kernel` of module `module`, with its dynamic shared memory limit raised to `smem`.
    fn function(&self, module: &'static str, kernel: &'static str, smem: u32) -> Result<CudaFunction> {
        let mut map = self.functions.lock().map_err(|_| Error::device("kernel table lock poisoned"))?;
        if let Some((f, limit)) = map.get(&(module, kernel)) {
            if smem <= *limit.max(&DEFAULT_SMEM_LIMIT) {
                return Ok(f.clone());
            }
        }
        let m = self.modules.get(module).ok_or_else(|| Error::device(format!("no kernel module `{module}`")))?;
        let f = m.load_function(kernel).map_err(|e| Error::device(format!("kernel `{kernel}` in {module}.cu: {e:?}")))?;
        let mut limit = DEFAULT_SMEM_LIMIT;
        if smem > DEFAULT_SMEM_LIMIT {
            // SAFETY: `f` is a loaded function; the attribute takes a byte count.
            unsafe {
                drv::function::set_function_attribute(
                    f.cu_function(),
                    drv_sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    smem as i32,
                )
            }
            .map_err(drv_err(&format!("raising shared memory of {kernel} to {smem} bytes")))?;
            limit = smem;
        }
        map.insert((module, kernel), (f.clone(), limit));
        Ok(f)
    }

    /// Queue `kernel` on the stream.
    ///
    /// # Safety
    /// `args` must match the kernel's C signature in order and width, and
    /// every pointer must address a live buffer large enough for the ranges the kernel touches
    /// (each launcher checks the lengths first).
    pub unsafe fn launch(&self, module: &'static str, kernel: &'static str, g: Grid, mut args: Args) -> Result<()> {
        let f = self.function(module, kernel, g.smem)?;
        self.bind()?;
        let mut params: Vec<*mut c_void> = args.vals.iter_mut().map(|v| v as *mut u64 as *mut c_void).collect();
        let err = |e: drv::DriverError| Error::device(format!("CUDA launch of {kernel} (grid {:?}, block {:?}): {e:?}", g.grid, g.block));
        if !(g.pdl && self.pdl) {
            return drv::launch_kernel(f.cu_function(), g.grid, g.block, g.smem, self.stream.cu_stream(), &mut params).map_err(err);
        }
        let mut attr: drv_sys::CUlaunchAttribute = std::mem::zeroed();
        attr.id = drv_sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
        attr.value.programmaticStreamSerializationAllowed = 1;
        let config = drv_sys::CUlaunchConfig {
            gridDimX: g.grid.0,
            gridDimY: g.grid.1,
            gridDimZ: g.grid.2,
            blockDimX: g.block.0,
            blockDimY: g.block.1,
            blockDimZ: g.block.2,
            sharedMemBytes: g.smem,
            hStream: self.stream.cu_stream(),
            attrs: &mut attr,
            numAttrs: 1,
        };
        drv_sys::cuLaunchKernelEx(&config, f.cu_function(), params.as_mut_ptr(), std::ptr::null_mut()).result().map_err(err)
    }

    /// Make this device's context current on the calling thread (raw driver calls need it).
    pub fn bind(&self) -> Result<()> {
        self.ctx.bind_to_thread().map_err(drv_err("binding the context to this thread"))
    }

    /// Blocks for a grid-stride loop over `n` items: enough to fill the chip, at most one per item.
    pub fn blocks_for(&self, n: usize, threads: u32) -> u32 {
        let wanted = n.div_ceil(threads as usize).max(1);
        wanted.min(self.sm_count as usize * 16) as u32
    }

    /// `len` zeroed elements.
    pub fn alloc_zeros<T: DeviceRepr + ValidAsZeroBits>(&self, len: usize) -> Result<DeviceBuffer<T>> {
        self.refuse_while_capturing(len * std::mem::size_of::<T>())?;
        let s = self.stream.alloc_zeros::<T>(len.max(1)).map_err(|e| self.oom(e, len * std::mem::size_of::<T>()))?;
        Ok(DeviceBuffer::new(s, len, self.mem.clone()))
    }

    /// `len` elements whose contents are unspecified (every user writes them before reading).
    pub fn alloc_uninit<T: DeviceRepr>(&self, len: usize) -> Result<DeviceBuffer<T>> {
        self.refuse_while_capturing(len * std::mem::size_of::<T>())?;
        // SAFETY: the memory is only read after a kernel or copy has written it.
        let s = unsafe { self.stream.alloc::<T>(len.max(1)) }.map_err(|e| self.oom(e, len * std::mem::size_of::<T>()))?;
        Ok(DeviceBuffer::new(s, len, self.mem.clone()))
    }

    fn oom(&self, e: drv::DriverError, bytes: usize) -> Error {
        let (free, total) = self.ctx.mem_get_info().unwrap_or((0, 0));
        Error::device(format!(
            "CUDA allocation of {bytes} bytes failed ({e:?}); {free} of {total} bytes free, {} held by peregrine",
            self.mem.stats().current_bytes
        ))
    }

    /// A buffer holding `values`.
    pub fn upload<T: DeviceRepr>(&self, values: &[T]) -> Result<DeviceBuffer<T>> {
        let buf = self.alloc_uninit::<T>(values.len())?;
        self.write(&buf, values)?;
        Ok(buf)
    }

    /// Copy `values` into the start of `buf` (queued on the stream; pageable host values are
    /// staged before this returns, so they may be dropped afterwards).
    pub fn write<T: DeviceRepr>(&self, buf: &DeviceBuffer<T>, values: &[T]) -> Result<()> {
        if values.len() > buf.len() {
            return Err(Error::device(format!("write of {} values into a buffer of {}", values.len(), buf.len())));
        }
        // SAFETY: the destination holds at least values.len() elements (checked above).
        unsafe { self.write_raw(buf.ptr(), values) }
    }

    /// Copy `values` to the device address `dst` (queued; the host values are staged first).
    ///
    /// # Safety
    /// `dst` must address at least `values.len()` elements of a live allocation.
    pub unsafe fn write_raw<T: DeviceRepr>(&self, dst: u64, values: &[T]) -> Result<()> {
        self.bind()?;
        if !values.is_empty() {
            drv::memcpy_htod_async(dst, values, self.stream.cu_stream()).map_err(drv_err("host-to-device copy"))?;
        }
        Ok(())
    }

    /// `len` elements of `buf` from `offset`, copied to the host (waits for queued work).
    pub fn download<T: DeviceRepr + Default + Clone>(&self, buf: &DeviceBuffer<T>, offset: usize, len: usize) -> Result<Vec<T>> {
        if offset + len > buf.len() {
            return Err(Error::device(format!("download of [{offset}, {}) from a buffer of {}", offset + len, buf.len())));
        }
        // SAFETY: the source range was checked above.
        unsafe { self.download_raw(buf.ptr_at(offset), len) }
    }

    /// `len` elements from the device address `src`, copied to the host (waits for queued work).
    ///
    /// # Safety
    /// `src` must address at least `len` elements of a live allocation.
    pub unsafe fn download_raw<T: DeviceRepr + Default + Clone>(&self, src: u64, len: usize) -> Result<Vec<T>> {
        let mut out = vec![T::default(); len];
        self.bind()?;
        if len > 0 {
            drv::memcpy_dtoh_async(&mut out, src, self.stream.cu_stream()).map_err(drv_err("device-to-host copy"))?;
        }
        self.synchronize()?;
        Ok(out)
    }

    /// Copy `bytes` bytes between device addresses.
    ///
    /// # Safety
    /// Both ranges must lie inside live device allocations (checked by the caller).
    pub unsafe fn copy_d2d(&self, dst: u64, src: u64, bytes: usize) -> Result<()> {
        self.bind()?;
        drv::memcpy_dtod_async(dst, src, bytes, self.stream.cu_stream()).map_err(drv_err("device-to-device copy"))
    }

    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(drv_err("stream synchronize"))?;
        self.ctx.check_err().map_err(drv_err("deferred error"))
    }

    /// (free, total) bytes of device memory as the driver sees them.
    pub fn free_memory(&self) -> Result<(usize, usize)> {
        self.ctx.mem_get_info().map_err(drv_err("memory info"))
    }

    /// out (rows, n; row stride ldo) = x (rows, k) @ w^T, where w is (n, k) row-major; all bf16,
    /// f32 accumulation (cuBLAS GemmEx, COMPUTE_32F). `beta` 0 overwrites, 1 accumulates.
    ///
    /// # Safety
    /// x must hold rows*k, w n*k and out (rows-1)*ldo + n bf16 values on this device.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn gemm_xwt_bf16(&self, x: u64, rows: usize, w: u64, n: usize, k: usize, out: u64, ldo: usize, beta: f32) -> Result<()> {
        use cublas_sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType_t};
        self.bind()?;
        let alpha = 1.0f32;
        // Column-major view: C (n x rows, ldc = ldo) = W^T... i.e. op(A) = A^T with A = w as (k x n), lda = k;
        // B = x as (k x rows), ldb = k.
        cudarc::cublas::result::gemm_ex(
            *self.blas.handle(),
            cublasOperation_t::CUBLAS_OP_T,
            cublasOperation_t::CUBLAS_OP_N,
            n as i32,
            rows as i32,
            k as i32,
            &alpha as *const f32 as *const c_void,
            w as *const c_void,
            cudaDataType_t::CUDA_R_16BF,
            k as i32,
            x as *const c_void,
            cudaDataType_t::CUDA_R_16BF,
            k as i32,
            &beta as *const f32 as *const c_void,
            out as *mut c_void,
            cudaDataType_t::CUDA_R_16BF,
            ldo as i32,
            cublasComputeType_t::CUBLAS_COMPUTE_32F,
            cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
        .map_err(|e| Error::device(format!("cuBLAS bf16 GEMM ({rows} x {k}) @ ({n} x {k})^T: {e:?}")))
    }

    /// Convert f32 host values to bf16 (round to nearest even).
    pub fn to_bf16(values: &[f32]) -> Vec<bf16> {
        values.iter().map(|&v| bf16::from_f32(v)).collect()
    }
}
