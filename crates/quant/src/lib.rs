//! bitsandbytes-compatible int8, NF4 and FP4 quantization: pack, unpack, CPU reference matmuls.
