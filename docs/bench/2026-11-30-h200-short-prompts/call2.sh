#!/usr/bin/env bash
# Session 5, device call 2: short-prompt timings with LLM.int8 weight-only weights (call 1 had the
# synthetic default, threshold 6.0: the mixed decomposition), bf16 back on cuBLAS from T = 2.
set -u
B=$PWD/.carry/bundle; mkdir -p "$B" && tar -xJf .carry/slim.tar.xz -C "$B"
export PEREGRINE_KERNEL_CACHE=/tmp/peregrine-kernels
nvidia-smi --query-gpu=name,pci.bus_id,clocks.max.sm,power.limit --format=csv
timeout 300 "$B/tests/perf" short_prompt --nocapture --test-threads=1 2>&1 | grep -E "^\||device|test result" | tee $OUT/perf-short.txt
timeout 200 "$B/bin/peregrine" bench --device cuda --quant bf16,int8 --out $OUT/bench 2>&1 | grep -v "^$" | tail -14
