//! The code books of bitsandbytes and the exact rules its CUDA kernels use to pick a code.
//!
//! Key design choice: codes are chosen by the same comparisons, against the same f32
//! constants, in the same order as bitsandbytes' kernels (`dQuantizeNF4`, `dQuantizeFP4`,
//! and the 7-step binary search `dQuantize<0>` for the 8-bit dynamic map), not by a
//! nearest-value search: the two disagree at ties, for NaN, and at the ends of the 8-bit map.
//! The decimal constants are copied digit for digit so that they round to the same f32.
#![allow(clippy::excessive_precision)]

/// NF4 values (`get_4bit_type("nf4")`, also the CUDA dequantization table), index = code.
pub const NF4_CODE: [f32; 16] = [
    -1.0,
    -0.696_192_800_998_687_7,
    -0.525_073_051_452_636_7,
    -0.394_917_488_098_144_53,
    -0.284_441_381_692_886_35,
    -0.184_773_430_228_233_34,
    -0.091_050_036_251_544_95,
    0.0,
    0.079_580_299_556_255_34,
    0.160_930_201_411_247_25,
    0.246_112_301_945_686_34,
    0.337_915_241_718_292_24,
    0.440_709_829_330_444_34,
    0.562_617_003_917_694_1,
    0.722_956_836_223_602_3,
    1.0,
];

/// FP4 magnitudes of codes 0..8 as the CUDA dequantization tree returns them (f32
/// literals in the kernel); bit 3 of a code is the sign.
const FP4_MAGNITUDE: [f32; 8] = [
    0.0,
    5.208_333_333e-3,
    0.666_666_67,
    1.0,
    0.333_333_33,
    0.5,
    0.166_666_67,
    0.25,
];

/// The FP4 `quant_map` bitsandbytes stores: `[0, 0.0625, 8, 12, 4, 6, 2, 3, -0, ...] / 12`
/// in f32. Entry 8 is +0.0 (Python's `-0` is the integer 0), while the CUDA kernel
/// dequantizes code 8 to -0.0.
pub fn fp4_quant_map() -> [f32; 16] {
    const RAW: [f32; 16] =
        [0.0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0, 0.0, -0.0625, -8.0, -12.0, -4.0, -6.0, -2.0, -3.0];
    RAW.map(|v| v / 12.0)
}

/// The value the CUDA kernel decodes an FP4 code to (before scaling by absmax).
#[inline]
pub fn fp4_value(code: u8) -> f32 {
    let sign = if code & 0b1000 != 0 { -1.0 } else { 1.0 };
    FP4_MAGNITUDE[(code & 0b111) as usize] * sign
}

/// The value the CUDA kernel decodes an NF4 code to (before scaling by absmax).
#[inline]
pub fn nf4_value(code: u8) -> f32 {
    NF4_CODE[(code & 0xF) as usize]
}

/// The 15 NF4 decision thresholds of `dQuantizeNF4`, ascending.
const NF4_THRESHOLDS: [f32; 15] = [
    -0.8480964004993439,
    -0.6106329262256622,
    -0.4599952697753906,
    -0.33967943489551544,
    -0.23460740596055984,
    -0.13791173323988914,
    -0.045525018125772476,
    0.03979014977812767,
    0.1202552504837513,
    0.2035212516784668,
    0.2920137718319893,
    0.3893125355243683,
    0.5016634166240692,
    0.6427869200706482,
    0.8614784181118011,
];

/// The 7 FP4 magnitude thresholds of `dQuantizeFP4`, ascending, and the code the
/// magnitude gets for each number of thresholds it exceeds.
const FP4_THRESHOLDS: [f32; 7] = [0.00260417, 0.0859375, 0.20833333, 0.29166667, 0.4166667, 0.583333, 0.8333333];
const FP4_CODE_FOR_COUNT: [u8; 8] = [0b000, 0b001, 0b110, 0b111, 0b100, 0b101, 0b010, 0b011];

/// `dQuantizeNF4`, the code for `x = w * (1/absmax)`, computed branch-free: the kernel's
/// tree is a binary search over `NF4_THRESHOLDS` (`x > t` goes right), so the code is the
/// number of thresholds x exceeds (`quantize_nf4_tree` is the literal tree; the tests
/// check they agree). NaN (an all-zero block) exceeds none: code 0.
#[inline]
pub fn quantize_nf4(x: f32) -> u8 {
    NF4_THRESHOLDS.iter().map(|&t| (x > t) as u8).sum()
}

/// `dQuantizeFP4`, branch-free like `quantize_nf4`: sign bit from `x < 0` (so -0.0 and NaN
/// are positive), magnitude code from how many of `FP4_THRESHOLDS` |x| exceeds.
#[inline]
pub fn quantize_fp4(x: f32) -> u8 {
    let sign = if x < 0.0 { 0b1000 } else { 0 };
    let a = x.abs();
    let count: u8 = FP4_THRESHOLDS.iter().map(|&t| (a > t) as u8).sum();
    FP4_CODE_FOR_COUNT[count as usize] + sign
}

/// `dQuantizeNF4` transcribed literally from bitsandbytes' `kernels.cu`.
pub fn quantize_nf4_tree(x: f32) -> u8 {
    if x > 0.03979014977812767 {
        if x > 0.3893125355243683 {
            if x > 0.6427869200706482 {
                if x > 0.8614784181118011 { 0b1111 } else { 0b1110 }
            } else if x > 0.5016634166240692 {
                0b1101
            } else {
                0b1100
            }
        } else if x > 0.2035212516784668 {
            if x > 0.2920137718319893 { 0b1011 } else { 0b1010 }
        } else if x > 0.1202552504837513 {
            0b1001
        } else {
            0b1000
        }
    } else if x > -0.33967943489551544 {
        if x > -0.13791173323988914 {
            if x > -0.045525018125772476 { 0b0111 } else { 0b0110 }
        } else if x > -0.23460740596055984 {
            0b0101
        } else {
            0b0100
        }
    } else if x > -0.6106329262256622 {
        if x > -0.4599952697753906 { 0b0011 } else { 0b0010 }
    } else if x > -0.8480964004993439 {
        0b0001
    } else {
        0b0000
    }
}

/// `dQuantizeFP4` transcribed literally from bitsandbytes' `kernels.cu`.
pub fn quantize_fp4_tree(x: f32) -> u8 {
    let sign = if x < 0.0 { 0b1000 } else { 0 };
    let a = x.abs();
    let magnitude = if a > 0.291_666_67 {
        if a > 0.583_333 {
            if a > 0.833_333_3 { 0b011 } else { 0b010 }
        } else if a > 0.416_666_7 {
            0b101
        } else {
            0b100
        }
    } else if a > 0.085_937_5 {
        if a > 0.208_333_33 { 0b111 } else { 0b110 }
    } else if a > 0.002_604_17 {
        0b001
    } else {
        0b000
    };
    magnitude + sign
}

/// bitsandbytes' signed dynamic 8-bit map (`create_dynamic_map(signed=True)`), the code
/// book of the nested (double) quantization, as the exact f32 bit patterns bitsandbytes
/// 0.50.2 produced (read from a real `nested_quant_map`; torch's f32 `linspace` rounding
/// is not worth re-deriving). Sorted ascending; 0.0 at index 127, 1.0 at index 255.
pub fn dynamic_map() -> [f32; 256] {
    DYNAMIC_MAP_BITS.map(f32::from_bits)
}

/// `dQuantize<0>`: the 7-step binary search of bitsandbytes' 8-bit blockwise kernel,
/// then a choice between the last pivot and its bracketing neighbour by the midpoint
/// `(a + b) * 0.5` in f32. `code` must be sorted ascending (256 entries).
pub fn quantize_dynamic(code: &[f32; 256], x: f32) -> u8 {
    let mut pivot = 127usize;
    let (mut lower_pivot, mut upper_pivot) = (0usize, 255usize);
    let (mut lower, mut upper) = (-1.0f32, 1.0f32);
    let mut val = code[pivot];
    let mut step = 64usize;
    while step > 0 {
        if x > val {
            lower_pivot = pivot;
            lower = val;
            pivot += step;
        } else {
            upper_pivot = pivot;
            upper = val;
            pivot -= step;
        }
        val = code[pivot];
        step >>= 1;
    }
    if upper_pivot == 255 {
        upper = code[255];
    }
    if lower_pivot == 0 {
        lower = code[0];
    }
    let chosen = if x > val {
        if x > (upper + val) * 0.5 { upper_pivot } else { pivot }
    } else if x < (lower + val) * 0.5 {
        lower_pivot
    } else {
        pivot
    };
    chosen as u8
}

const DYNAMIC_MAP_BITS: [u32; 256] = [
    0xbf7e3333, 0xbf7a999a, 0xbf770000, 0xbf736666, 0xbf6fcccd, 0xbf6c3333, 0xbf68999a, 0xbf650000,
    0xbf616666, 0xbf5dcccd, 0xbf5a3333, 0xbf56999a, 0xbf530000, 0xbf4f6666, 0xbf4bcccd, 0xbf483333,
    0xbf44999a, 0xbf410000, 0xbf3d6666, 0xbf39cccd, 0xbf363334, 0xbf32999a, 0xbf2f0000, 0xbf2b6666,
    0xbf27cccd, 0xbf243334, 0xbf20999a, 0xbf1d0000, 0xbf196666, 0xbf15cccd, 0xbf123334, 0xbf0e999a,
    0xbf0b0000, 0xbf076666, 0xbf03cccc, 0xbf003333, 0xbef93332, 0xbef20000, 0xbeeacccc, 0xbee3999a,
    0xbedc6666, 0xbed53333, 0xbece0000, 0xbec6cccc, 0xbebf999a, 0xbeb86666, 0xbeb13333, 0xbeaa0000,
    0xbea2cccc, 0xbe9b999a, 0xbe946666, 0xbe8d3334, 0xbe860000, 0xbe7d9999, 0xbe6f3333, 0xbe60cccd,
    0xbe526666, 0xbe440000, 0xbe35999a, 0xbe273333, 0xbe18cccd, 0xbe0a6666, 0xbdf80000, 0xbddb3334,
    0xbdc9eb85, 0xbdc428f7, 0xbdbe6667, 0xbdb8a3d7, 0xbdb2e148, 0xbdad1eb8, 0xbda75c2a, 0xbda1999a,
    0xbd9bd70a, 0xbd96147b, 0xbd9051eb, 0xbd8a8f5d, 0xbd84cccd, 0xbd7e147b, 0xbd728f5d, 0xbd670a3d,
    0xbd5b851f, 0xbd500000, 0xbd447ae1, 0xbd38f5c3, 0xbd2d70a3, 0xbd21eb85, 0xbd166667, 0xbd0ae148,
    0xbcfeb852, 0xbce7ae15, 0xbcd0a3d7, 0xbcb9999a, 0xbca28f5d, 0xbc8b851f, 0xbc68f5c3, 0xbc3ae148,
    0xbc1f3b64, 0xbc160418, 0xbc0ccccd, 0xbc039581, 0xbbf4bc6a, 0xbbe24dd3, 0xbbcfdf3b, 0xbbbd70a4,
    0xbbab020d, 0xbb989374, 0xbb8624dd, 0xbb676c8a, 0xbb428f5c, 0xbb1db22d, 0xbaf1a9fc, 0xbaa7ef9d,
    0xba7765ff, 0xba59e83e, 0xba3c6a80, 0xba1eecc1, 0xba016f01, 0xb9c7e283, 0xb98ce705, 0xb923d70b,
    0xb8ba1f4b, 0xb88aefb3, 0xb8378034, 0xb7b24206, 0xb70205ff, 0xb65a1a94, 0xb513a3b7, 0x00000000,
    0x3513a3b7, 0x365a1a94, 0x370205ff, 0x37b24206, 0x38378034, 0x388aefb3, 0x38ba1f4b, 0x3923d70b,
    0x398ce705, 0x39c7e283, 0x3a016f01, 0x3a1eecc1, 0x3a3c6a80, 0x3a59e83e, 0x3a7765ff, 0x3aa7ef9d,
    0x3af1a9fc, 0x3b1db22d, 0x3b428f5c, 0x3b676c8a, 0x3b8624dd, 0x3b989374, 0x3bab020d, 0x3bbd70a4,
    0x3bcfdf3b, 0x3be24dd3, 0x3bf4bc6a, 0x3c039581, 0x3c0ccccd, 0x3c160418, 0x3c1f3b64, 0x3c3ae148,
    0x3c68f5c3, 0x3c8b851f, 0x3ca28f5d, 0x3cb9999a, 0x3cd0a3d7, 0x3ce7ae15, 0x3cfeb852, 0x3d0ae148,
    0x3d166667, 0x3d21eb85, 0x3d2d70a3, 0x3d38f5c3, 0x3d447ae1, 0x3d500000, 0x3d5b851f, 0x3d670a3d,
    0x3d728f5d, 0x3d7e147b, 0x3d84cccd, 0x3d8a8f5d, 0x3d9051eb, 0x3d96147b, 0x3d9bd70a, 0x3da1999a,
    0x3da75c2a, 0x3dad1eb8, 0x3db2e148, 0x3db8a3d7, 0x3dbe6667, 0x3dc428f7, 0x3dc9eb85, 0x3ddb3334,
    0x3df80000, 0x3e0a6666, 0x3e18cccd, 0x3e273333, 0x3e35999a, 0x3e440000, 0x3e526666, 0x3e60cccd,
    0x3e6f3333, 0x3e7d9999, 0x3e860000, 0x3e8d3334, 0x3e946666, 0x3e9b999a, 0x3ea2cccc, 0x3eaa0000,
    0x3eb13333, 0x3eb86666, 0x3ebf999a, 0x3ec6cccc, 0x3ece0000, 0x3ed53333, 0x3edc6666, 0x3ee3999a,
    0x3eeacccc, 0x3ef20000, 0x3ef93332, 0x3f003333, 0x3f03cccc, 0x3f076666, 0x3f0b0000, 0x3f0e999a,
    0x3f123334, 0x3f15cccd, 0x3f196666, 0x3f1d0000, 0x3f20999a, 0x3f243334, 0x3f27cccd, 0x3f2b6666,
    0x3f2f0000, 0x3f32999a, 0x3f363334, 0x3f39cccd, 0x3f3d6666, 0x3f410000, 0x3f44999a, 0x3f483333,
    0x3f4bcccd, 0x3f4f6666, 0x3f530000, 0x3f56999a, 0x3f5a3333, 0x3f5dcccd, 0x3f616666, 0x3f650000,
    0x3f68999a, 0x3f6c3333, 0x3f6fcccd, 0x3f736666, 0x3f770000, 0x3f7a999a, 0x3f7e3333, 0x3f800000,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fp4_kernel_table_equals_quant_map_except_negative_zero() {
        let map = fp4_quant_map();
        for code in 0..16u8 {
            assert_eq!(fp4_value(code), map[code as usize], "code {code}");
        }
        assert!(fp4_value(8).is_sign_negative() && map[8].is_sign_positive());
    }

    #[test]
    fn quantizers_pick_exact_code_values() {
        for code in 0..16u8 {
            assert_eq!(quantize_nf4(nf4_value(code)), code);
            if code != 8 {
                assert_eq!(quantize_fp4(fp4_value(code)), code);
            }
        }
        assert_eq!(quantize_nf4(f32::NAN), 0);
        assert_eq!(quantize_fp4(f32::NAN), 0);
        assert_eq!(quantize_fp4(-0.0), 0);
        assert_eq!(quantize_fp4(-1e-6), 8);
    }

    #[test]
    fn branch_free_quantizers_equal_the_kernel_trees() {
        let mut probes = vec![f32::NAN, 0.0, -0.0, 1.0, -1.0, 2.0, -2.0, f32::INFINITY, f32::NEG_INFINITY];
        for t in NF4_THRESHOLDS.iter().chain(&FP4_THRESHOLDS).flat_map(|&t| [t, -t]) {
            let b = t.to_bits();
            probes.extend((b - 3..=b + 3).map(f32::from_bits));
        }
        probes.extend((0..200_000u32).map(|i| f32::from_bits(0x3000_0000 + i * 0x1F37)).flat_map(|v| [v, -v]));
        for x in probes {
            assert_eq!(quantize_nf4(x), quantize_nf4_tree(x), "nf4 {x:e}");
            assert_eq!(quantize_fp4(x), quantize_fp4_tree(x), "fp4 {x:e}");
        }
    }

    #[test]
    fn dynamic_map_is_sorted_and_search_hits_every_entry() {
        let code = dynamic_map();
        assert!(code.windows(2).all(|w| w[0] < w[1]));
        assert_eq!((code[127], code[255]), (0.0, 1.0));
        for (i, &v) in code.iter().enumerate() {
            assert_eq!(quantize_dynamic(&code, v) as usize, i, "entry {i} = {v}");
        }
        assert_eq!(quantize_dynamic(&code, -1.0), 0);
        assert_eq!(quantize_dynamic(&code, 2.0), 255);
    }
}
