#!/usr/bin/env bash
# Device call 2: the prefill attention with ex2.approx.ftz against the previous build.
set -u
B=$PWD/.carry/bundle; mkdir -p "$B" && tar -xJf .carry/slim.tar.xz -C "$B"; tar -xJf .carry/old.tar.xz -C .carry
export PEREGRINE_KERNEL_CACHE=/tmp/peregrine-kernels
NEW=$B/bin/peregrine; OLD=$PWD/.carry/old/peregrine
nvidia-smi --query-gpu=name,clocks.sm,power.limit --format=csv
echo "=== ops"
timeout 240 "$B/tests/ops" --test-threads=1 --nocapture 2>&1 | grep -E "attention prefill \(TensorCore|test result|FAIL|panic" | tail -30
for i in 1 2; do
  echo "=== perf old ($i)"; timeout 240 .carry/old/perf --nocapture 2>&1 | grep -E "attention prefill T"
  echo "=== perf new ($i)"; timeout 240 "$B/tests/perf" --nocapture 2>&1 | grep -E "attention prefill T"
done
for i in 1 2; do
  for v in OLD NEW; do
    bin=$OLD; [ $v = NEW ] && bin=$NEW
    echo "=== prefill bench $v ($i)"
    rm -rf /tmp/pb; timeout 300 "$bin" bench --device cuda --quant bf16 --prefill-tokens 2048 --runs 5 --max-new-tokens 8 --out /tmp/pb 2>&1 | grep -A2 "prefill tokens" | tail -1
  done
done
