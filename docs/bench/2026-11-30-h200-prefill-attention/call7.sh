#!/usr/bin/env bash
# Device call 7: the head-dim-128 prefill attention, the previous session's kernel (perf_old, built in
# its own target folder) against this session's with 8-warp blocks (perf) and 4-warp blocks (perf_w4).
set -u
B=$PWD/.carry/slim3; mkdir -p "$B" && tar -xJf .carry/slim3.tar.xz -C "$B"
export PEREGRINE_KERNEL_CACHE=/tmp/peregrine-kernels
echo "=== ops_w4"; timeout 240 "$B/tests/ops_w4" --test-threads=1 --nocapture 2>&1 | grep -E "prefill \(TensorCore MQA|prefill \(TensorCore MHA 4 heads hd128|test result|FAIL|panic" | tail -12
for i in 1 2; do
  for p in perf_old perf perf_w4; do
    echo "=== $p ($i)"; timeout 240 "$B/tests/$p" --nocapture 2>&1 | grep -E "attention prefill T|rotary"
  done
done
