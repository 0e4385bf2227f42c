//! clocks.rs: reading a device's SM clock and board power while it works. A GPU that runs at
//! its power limit holds whatever clock that limit allows, and boards differ in it, so a speed
//! figure is only comparable with its clock beside it (BENCHMARKS.md, 2026-11-30). A backend
//! that can read its device offers a `ClockProbe` (`Backend::clock_probe`); the benchmark samples
//! it from a thread while the device works.

/// One reading of the device.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClockSample {
    pub sm_mhz: f64,
    pub power_w: f64,
    /// The clocks are held down by the power limit at this instant.
    pub power_capped: bool,
}

/// Something that can read the device's clock and power now (NVML for a CUDA GPU).
pub trait ClockProbe: Send + Sync {
    /// A reading now, or None when the device refuses one.
    fn sample(&self) -> Option<ClockSample>;
    /// The board's enforced power limit, watts.
    fn power_limit_w(&self) -> Option<f64>;
}
