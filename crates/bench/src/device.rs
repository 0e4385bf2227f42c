//! Spec-sheet memory bandwidth of common GPUs, the ceiling `achieved_gbps` is compared to
//! when the caller has no measured figure.
//!
//! Design choice: a short table matched on the device name (most specific entry first),
//! returning `None` for anything unknown rather than guessing; the report then leaves the
//! "% of bandwidth" column out. Figures are the vendors' peak HBM/GDDR bandwidth in GB/s
//! (10^9 bytes/s); measured copies reach about 85-90% of them (4.27 of 4.8 TB/s on an H200).

/// (substring of the device name, GB/s); the first match wins, so specific names come first.
const SPEC_BANDWIDTH_GBPS: [(&str, f64); 17] = [
    ("GH200", 4000.0), // the 96 GB HBM3 variant; the 144 GB HBM3e one has 4900
    ("H200", 4800.0),
    ("H100 NVL", 3900.0),
    ("H100 PCIe", 2000.0),
    ("H100", 3350.0),
    ("A100-SXM4-80GB", 2039.0),
    ("A100 80GB PCIe", 1935.0),
    ("A100-PCIE-80GB", 1935.0),
    ("A100", 1555.0),
    ("L40S", 864.0),
    ("L40", 864.0),
    ("L4", 300.0),
    ("A10G", 600.0),
    ("A10", 600.0),
    ("RTX 4090", 1008.0),
    ("RTX 3090", 936.0),
    ("V100", 900.0),
];

/// The spec-sheet bandwidth of the device called `name` (e.g. "cuda:0 NVIDIA H200"), if known.
pub fn spec_bandwidth_gbps(name: &str) -> Option<f64> {
    SPEC_BANDWIDTH_GBPS.iter().find(|(key, _)| name.contains(key)).map(|&(_, gbps)| gbps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specific_names_win() {
        assert_eq!(spec_bandwidth_gbps("cuda:0 NVIDIA H200"), Some(4800.0));
        assert_eq!(spec_bandwidth_gbps("NVIDIA GH200 480GB"), Some(4000.0));
        assert_eq!(spec_bandwidth_gbps("NVIDIA H100 PCIe"), Some(2000.0));
        assert_eq!(spec_bandwidth_gbps("NVIDIA H100 80GB HBM3"), Some(3350.0));
        assert_eq!(spec_bandwidth_gbps("NVIDIA A100-SXM4-80GB"), Some(2039.0));
        assert_eq!(spec_bandwidth_gbps("NVIDIA L40S"), Some(864.0));
        assert_eq!(spec_bandwidth_gbps("cpu (16 threads)"), None);
    }
}
