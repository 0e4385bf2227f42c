#!/usr/bin/env bash
# Session 5, device call 11: the int8 tensor-core GEMV with a warp's k-blocks of a step adjacent
# (GEMV8_MMA_KB_CONTIG=1, an NVRTC define of one binary) against the interleaved order: gemv tests
# with it, then the short-prompt timings of both, two alternating rounds.
set -u
B=$PWD/.carry/bundle; mkdir -p "$B" && tar -xJf .carry/slim.tar.xz -C "$B"
export PEREGRINE_KERNEL_CACHE=/tmp/peregrine-kernels
PEREGRINE_NVRTC_DEFINES="GEMV8_MMA_KB_CONTIG=1" timeout 120 "$B/tests/gemv" --test-threads=1 --nocapture 2>&1 | grep -E "^test result|int8 .*T=(2|8|9|16|17|32) " | sort -t'|' -k4 | tail -4
for round in 1 2; do
  for d in "" "GEMV8_MMA_KB_CONTIG=1"; do
    echo "=== defines [$d] (round $round)"
    PEREGRINE_NVRTC_DEFINES="$d" timeout 120 "$B/tests/perf" short_prompt --nocapture --test-threads=1 2>&1 | grep -E "int8 .*T=(2|8|16|32) engine"
  done
done
