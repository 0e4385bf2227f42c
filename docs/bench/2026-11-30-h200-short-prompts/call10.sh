#!/usr/bin/env bash
# Session 5, device call 10: the NF4 tiles dequantization loading each tile word once for its two rows
# (dequant4t_pairs_bf16): tests against bitsandbytes' values and the CPU oracle, then
# a 2,048-token nf4 prefill, the previous build (3750450, the same NF4 path but this kernel) against this one, alternating.
set -u
SECTIONS="tests" TESTS="quant gpu_models" bash scripts/device_check.sh
grep -E "^(test result|---)|dequantize|embedding rows|T=33" $OUT/log.txt | tail -30
B=$PWD/.carry/bundle; mkdir -p .carry/old && xz -dc .carry/oldp.xz > .carry/old/peregrine && chmod +x .carry/old/peregrine
export PEREGRINE_KERNEL_CACHE=/tmp/peregrine-kernels
nvidia-smi --query-gpu=name,pci.bus_id,clocks.max.sm,power.limit --format=csv
for round in 1 2; do
  for bin in .carry/old/peregrine $B/bin/peregrine; do
    echo "=== $bin (round $round)"
    rm -rf /tmp/pb; timeout 200 "$bin" bench --device cuda --quant nf4 --prefill-tokens 2048 --runs 5 --max-new-tokens 8 --out /tmp/pb 2>&1 | grep -A4 "prefill tokens" | grep -E "^\| (int8|nf4) "
  done
done
