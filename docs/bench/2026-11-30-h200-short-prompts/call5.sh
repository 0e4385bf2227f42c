#!/usr/bin/env bash
# Session 5, device call 5: NF4/FP4 tile GEMV with 2 and 4 n-tiles (9..32 rows) and int8 tensor-core GEMV up to
# 32 rows: GPU tests against the CPU oracle, short-prompt timings, the seed's bench.
set -u
SECTIONS="tests" TESTS="gemv quant gpu_models nvrtc_compile" bash scripts/device_check.sh
grep -E "^(test |test result|---)|T=(9|12|16|17|24|32) " $OUT/log.txt | tail -80
B=$PWD/.carry/bundle
export PEREGRINE_KERNEL_CACHE=/tmp/peregrine-kernels
timeout 300 "$B/tests/perf" short_prompt --nocapture --test-threads=1 2>&1 | grep -E "^\||device|test result" > $OUT/perf-short.txt
grep -E "T=(8|12|16|19) |T=1 " $OUT/perf-short.txt
nvidia-smi --query-gpu=name,pci.bus_id,clocks.max.sm,power.limit --format=csv
timeout 300 "$B/bin/peregrine" bench --device cuda --out $OUT/bench 2>&1 | grep -v "^$" | tail -16
