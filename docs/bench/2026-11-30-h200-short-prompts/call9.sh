#!/usr/bin/env bash
# Session 5, device call 9: the dequantization kernels of the quantized prefill with 16-byte stores
# that cover 512 contiguous bytes a warp: tests against the CPU oracle and bitsandbytes' values, then
# a 2,048-token int8 and nf4 prefill, the previous build (3750450) against this one, alternating.
set -u
SECTIONS="tests" TESTS="quant ops gpu_models" bash scripts/device_check.sh
grep -E "^(test result|---)|dequantize|embedding rows|T=33" $OUT/log.txt | tail -30
B=$PWD/.carry/bundle; mkdir -p .carry/old && xz -dc .carry/oldp.xz > .carry/old/peregrine && chmod +x .carry/old/peregrine
export PEREGRINE_KERNEL_CACHE=/tmp/peregrine-kernels
nvidia-smi --query-gpu=name,pci.bus_id,clocks.max.sm,power.limit --format=csv
for round in 1 2; do
  for bin in .carry/old/peregrine $B/bin/peregrine; do
    echo "=== $bin (round $round)"
    rm -rf /tmp/pb; timeout 200 "$bin" bench --device cuda --quant int8,nf4 --prefill-tokens 2048 --runs 5 --max-new-tokens 8 --out /tmp/pb 2>&1 | grep -A4 "prefill tokens" | grep -E "^\| (int8|nf4) "
  done
done
timeout 200 "$B/tests/perf" kernel_timings --nocapture --test-threads=1 2>&1 | grep -E "T=512" | tee $OUT/perf-t512.txt
