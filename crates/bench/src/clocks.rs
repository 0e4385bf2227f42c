//! clocks.rs: the device's SM clock and board power while a configuration's measured runs go.
//! A GPU that decodes at its power limit holds whatever SM clock that limit allows, and boards
//! differ in it, so a tok/s figure is only comparable with its clock beside it (BENCHMARKS.md,
//! 2026-11-30: the same kernels decoded int8 3.5% apart on boards holding 1710 and 1800-1815 MHz).
//!
//! A target whose backend can read its device offers a `ClockProbe` (peregrine_core;
//! `BenchTarget::clock_probe`); the runner then samples it every `SAMPLE_PERIOD` on a thread from
//! the first measured run to the last (warm-ups and the prefill measurement excluded) and keeps a
//! `ClockSummary`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub use peregrine_core::{ClockProbe, ClockSample};
use serde::{Deserialize, Serialize};

use crate::stats::percentile;

/// How often the sampler reads the probe.
pub const SAMPLE_PERIOD: Duration = Duration::from_millis(100);

/// The readings over a configuration's measured runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClockSummary {
    /// Readings taken (one every 100 ms).
    pub samples: usize,
    pub sm_mhz_median: f64,
    pub sm_mhz_min: f64,
    pub sm_mhz_max: f64,
    pub power_w_median: f64,
    pub power_w_max: f64,
    /// The board's power limit, watts.
    pub power_limit_w: Option<f64>,
    /// Share of the readings (0..1) in which the power limit held the clocks down.
    pub power_capped_share: f64,
}

impl ClockSummary {
    /// Summarise `samples`; None when there are none.
    pub fn of(samples: &[ClockSample], power_limit_w: Option<f64>) -> Option<ClockSummary> {
        if samples.is_empty() {
            return None;
        }
        let sm: Vec<f64> = samples.iter().map(|s| s.sm_mhz).collect();
        let power: Vec<f64> = samples.iter().map(|s| s.power_w).collect();
        let capped = samples.iter().filter(|s| s.power_capped).count();
        Some(ClockSummary {
            samples: samples.len(),
            sm_mhz_median: percentile(&sm, 50.0)?,
            sm_mhz_min: percentile(&sm, 0.0)?,
            sm_mhz_max: percentile(&sm, 100.0)?,
            power_w_median: percentile(&power, 50.0)?,
            power_w_max: percentile(&power, 100.0)?,
            power_limit_w,
            power_capped_share: capped as f64 / samples.len() as f64,
        })
    }
}

/// Reads a probe every `SAMPLE_PERIOD` on its own thread until `finish`.
pub struct ClockSampler {
    probe: Arc<dyn ClockProbe>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<ClockSample>>,
}

impl ClockSampler {
    /// Start sampling: the first reading is taken here, the rest every `SAMPLE_PERIOD` after.
    pub fn start(probe: Arc<dyn ClockProbe>) -> ClockSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let first = probe.sample();
        let (p, s) = (probe.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut samples: Vec<ClockSample> = first.into_iter().collect();
            loop {
                std::thread::sleep(SAMPLE_PERIOD);
                if s.load(Ordering::Relaxed) {
                    return samples;
                }
                samples.extend(p.sample());
            }
        });
        ClockSampler { probe, stop, thread }
    }

    /// Stop and summarise (None if no reading was taken).
    pub fn finish(self) -> Option<ClockSummary> {
        self.stop.store(true, Ordering::Relaxed);
        let samples = self.thread.join().unwrap_or_default();
        ClockSummary::of(&samples, self.probe.power_limit_w())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(sm: f64, w: f64, capped: bool) -> ClockSample {
        ClockSample { sm_mhz: sm, power_w: w, power_capped: capped }
    }

    #[test]
    fn summary_takes_medians_extremes_and_the_capped_share() {
        let v = [s(1980.0, 650.0, false), s(1830.0, 699.0, true), s(1710.0, 701.0, true), s(1815.0, 700.0, true)];
        let c = ClockSummary::of(&v, Some(700.0)).unwrap();
        assert_eq!(c.samples, 4);
        assert_eq!((c.sm_mhz_median, c.sm_mhz_min, c.sm_mhz_max), (1822.5, 1710.0, 1980.0));
        assert_eq!((c.power_w_median, c.power_w_max), (699.5, 701.0));
        assert_eq!(c.power_capped_share, 0.75);
        assert_eq!(c.power_limit_w, Some(700.0));
        assert!(ClockSummary::of(&[], None).is_none());
    }

    /// A steady device that counts its readings.
    #[derive(Default)]
    struct Fixed(std::sync::atomic::AtomicUsize);
    impl ClockProbe for Fixed {
        fn sample(&self) -> Option<ClockSample> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Some(s(1500.0, 300.0, false))
        }
        fn power_limit_w(&self) -> Option<f64> {
            None
        }
    }

    #[test]
    fn sampler_reads_until_finished() {
        let probe = Arc::new(Fixed::default());
        let sampler = ClockSampler::start(probe.clone());
        assert_eq!(probe.0.load(Ordering::SeqCst), 1, "the first reading is taken at the start");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while probe.0.load(Ordering::SeqCst) < 3 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let c = sampler.finish().unwrap();
        assert!(c.samples >= 3, "{c:?}");
        assert_eq!((c.sm_mhz_median, c.power_w_max, c.power_capped_share, c.power_limit_w), (1500.0, 300.0, 0.0, None));
    }
}
