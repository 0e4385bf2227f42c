#!/usr/bin/env bash
# Session 5, device call 1: the tensor-core GEMVs for short prompts (T <= 32): GPU tests of the
# linears against the CPU oracle, the short-prompt timings, then the seed's bench (TTFT per prompt).
set -u
SECTIONS="tests" TESTS="gemv quant" bash scripts/device_check.sh
grep -E "^(test |test result|---)|rel err|relative" $OUT/log.txt | tail -40
B=$PWD/.carry/bundle
export PEREGRINE_KERNEL_CACHE=/tmp/peregrine-kernels
timeout 200 "$B/tests/perf" short_prompt --nocapture --test-threads=1 2>&1 | grep -E "^\||device|test result" | tee $OUT/perf-short.txt
nvidia-smi --query-gpu=name,pci.bus_id,clocks.max.sm,power.limit --format=csv
timeout 300 "$B/bin/peregrine" bench --device cuda --out $OUT/bench 2>&1 | grep -v "^$" | tail -25
