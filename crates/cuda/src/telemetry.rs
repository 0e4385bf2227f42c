//! telemetry.rs: the GPU's SM clock, board power and power-cap state, read through NVML
//! (libnvidia-ml.so.1, loaded at run time like libcuda, so a machine without it just has no
//! readings). An H200 decodes at its 700 W power limit, and the SM clock a board holds there
//! decides how fast the instruction-heavy kernels run (BENCHMARKS.md, 2026-11-30), so the CUDA
//! backend offers this as its `ClockProbe` and the benchmark records it beside every configuration.

use std::ffi::{c_char, c_int, c_uint, c_ulonglong, c_void, CStr};

use cudarc::driver::sys as drv_sys;
use libloading::Library;
use peregrine_core::{ClockProbe, ClockSample};

type NvmlReturn = c_int;
type NvmlDevice = *mut c_void;
const NVML_SUCCESS: NvmlReturn = 0;
/// nvmlClockType_t NVML_CLOCK_SM.
const NVML_CLOCK_SM: c_uint = 1;
/// nvmlClocksEventReasonSwPowerCap: the clocks are lowered to stay under the power limit.
const REASON_SW_POWER_CAP: c_ulonglong = 0x4;
/// nvmlClocksEventReasonHwPowerBrakeSlowdown (the board's external power brake).
const REASON_HW_POWER_BRAKE: c_ulonglong = 0x80;

type InitFn = unsafe extern "C" fn() -> NvmlReturn;
type HandleByPciFn = unsafe extern "C" fn(*const c_char, *mut NvmlDevice) -> NvmlReturn;
type ClockFn = unsafe extern "C" fn(NvmlDevice, c_uint, *mut c_uint) -> NvmlReturn;
type UintFn = unsafe extern "C" fn(NvmlDevice, *mut c_uint) -> NvmlReturn;
type ReasonsFn = unsafe extern "C" fn(NvmlDevice, *mut c_ulonglong) -> NvmlReturn;

/// An NVML handle on one GPU. NVML is thread-safe, so one handle may be read from a sampling
/// thread while the device works.
pub struct Nvml {
    device: NvmlDevice,
    clock: ClockFn,
    power: UintFn,
    power_limit: UintFn,
    reasons: ReasonsFn,
    shutdown: unsafe extern "C" fn() -> NvmlReturn,
    // Last, so the library outlives the function pointers above until drop.
    _lib: Library,
}

// SAFETY: the handle is an opaque NVML pointer and NVML's device queries are thread-safe.
unsafe impl Send for Nvml {}
unsafe impl Sync for Nvml {}

impl Nvml {
    /// NVML for CUDA device `ordinal` (matched by PCI bus id, so CUDA_VISIBLE_DEVICES and NVML's own
    /// order cannot disagree), or None where NVML or the device is not available.
    pub fn for_cuda_ordinal(ordinal: usize) -> Option<Nvml> {
        let bus_id = pci_bus_id(ordinal)?;
        // SAFETY: loading NVML runs its library initialisers only.
        let lib = unsafe { Library::new("libnvidia-ml.so.1") }.ok()?;
        // SAFETY: the symbols are NVML's documented C entry points with these signatures, copied out
        // as plain function pointers; `lib` is kept in the struct, so they stay valid.
        unsafe {
            let init = *lib.get::<InitFn>(b"nvmlInit_v2\0").ok()?;
            let by_pci = *lib.get::<HandleByPciFn>(b"nvmlDeviceGetHandleByPciBusId_v2\0").ok()?;
            let clock = *lib.get::<ClockFn>(b"nvmlDeviceGetClockInfo\0").ok()?;
            let power = *lib.get::<UintFn>(b"nvmlDeviceGetPowerUsage\0").ok()?;
            let power_limit = *lib.get::<UintFn>(b"nvmlDeviceGetEnforcedPowerLimit\0").ok()?;
            let reasons = match lib.get::<ReasonsFn>(b"nvmlDeviceGetCurrentClocksEventReasons\0") {
                Ok(f) => *f,
                Err(_) => *lib.get::<ReasonsFn>(b"nvmlDeviceGetCurrentClocksThrottleReasons\0").ok()?,
            };
            let shutdown = *lib.get::<unsafe extern "C" fn() -> NvmlReturn>(b"nvmlShutdown\0").ok()?;
            if init() != NVML_SUCCESS {
                return None;
            }
            let mut device: NvmlDevice = std::ptr::null_mut();
            if by_pci(bus_id.as_ptr(), &mut device) != NVML_SUCCESS {
                shutdown();
                return None;
            }
            Some(Nvml { device, clock, power, power_limit, reasons, shutdown, _lib: lib })
        }
    }

}

impl ClockProbe for Nvml {
    /// The device's clock, power and power-cap state now (None if NVML refuses a query).
    fn sample(&self) -> Option<ClockSample> {
        let (mut mhz, mut mw, mut reasons): (c_uint, c_uint, c_ulonglong) = (0, 0, 0);
        // SAFETY: valid handle and out-pointers to locals.
        unsafe {
            if (self.clock)(self.device, NVML_CLOCK_SM, &mut mhz) != NVML_SUCCESS {
                return None;
            }
            if (self.power)(self.device, &mut mw) != NVML_SUCCESS {
                return None;
            }
            if (self.reasons)(self.device, &mut reasons) != NVML_SUCCESS {
                reasons = 0;
            }
        }
        let power_capped = reasons & (REASON_SW_POWER_CAP | REASON_HW_POWER_BRAKE) != 0;
        Some(ClockSample { sm_mhz: mhz as f64, power_w: mw as f64 / 1000.0, power_capped })
    }

    /// The power limit the board enforces, watts.
    fn power_limit_w(&self) -> Option<f64> {
        let mut mw: c_uint = 0;
        // SAFETY: valid handle and out-pointer.
        (unsafe { (self.power_limit)(self.device, &mut mw) } == NVML_SUCCESS).then_some(mw as f64 / 1000.0)
    }
}

impl Drop for Nvml {
    fn drop(&mut self) {
        // SAFETY: paired with the successful nvmlInit_v2 in `for_cuda_ordinal`.
        unsafe {
            (self.shutdown)();
        }
    }
}

/// "0000:19:00.0"-style PCI bus id of CUDA device `ordinal` (the driver must load).
fn pci_bus_id(ordinal: usize) -> Option<Vec<c_char>> {
    if !crate::libs::libcuda_present() {
        return None;
    }
    let mut buf = vec![0 as c_char; 32];
    // SAFETY: cuInit is idempotent; cuDeviceGet writes one handle; cuDeviceGetPCIBusId writes a
    // NUL-terminated string of at most `len` bytes into `buf`.
    unsafe {
        if drv_sys::cuInit(0) != drv_sys::CUresult::CUDA_SUCCESS {
            return None;
        }
        let mut dev: drv_sys::CUdevice = 0;
        if drv_sys::cuDeviceGet(&mut dev, ordinal as c_int) != drv_sys::CUresult::CUDA_SUCCESS {
            return None;
        }
        if drv_sys::cuDeviceGetPCIBusId(buf.as_mut_ptr(), buf.len() as c_int, dev) != drv_sys::CUresult::CUDA_SUCCESS {
            return None;
        }
        CStr::from_ptr(buf.as_ptr()).to_str().ok().filter(|s| !s.is_empty())?;
    }
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_driver_or_nvml_means_no_readings_not_a_panic() {
        // On a machine without a GPU (CI) this is None; on the GPU machine a reading is plausible.
        if let Some(nvml) = Nvml::for_cuda_ordinal(0) {
            let r = nvml.sample().expect("NVML opened but refused a reading");
            assert!(r.sm_mhz > 0.0 && r.power_w > 0.0, "{r:?}");
        }
        assert!(Nvml::for_cuda_ordinal(4096).is_none());
    }
}
