#!/usr/bin/env bash
# Device call 4: rotary_append with one block a token (all heads, angles once) against the previous
# build: correctness (ops), kernel timing (perf), the 2,048-token prefill end to end.
set -u
B=$PWD/.carry/bundle; mkdir -p "$B" && tar -xJf .carry/slim.tar.xz -C "$B"; tar -xJf .carry/old.tar.xz -C .carry
export PEREGRINE_KERNEL_CACHE=/tmp/peregrine-kernels
NEW=$B/bin/peregrine; OLD=$PWD/.carry/old/peregrine
nvidia-smi --query-gpu=name,clocks.sm,power.limit --format=csv
echo "=== ops"
timeout 240 "$B/tests/ops" --test-threads=1 --nocapture 2>&1 | grep -E "rotary|append|cache slot|test result|FAIL|panic" | tail -30
echo "=== perf new"; timeout 240 "$B/tests/perf" --nocapture 2>&1 | grep -E "attention prefill T|rotary"
for i in 1 2; do
  for v in OLD NEW; do
    bin=$OLD; [ $v = NEW ] && bin=$NEW
    echo "=== prefill bench $v ($i)"
    rm -rf /tmp/pb; timeout 300 "$bin" bench --device cuda --quant bf16 --prefill-tokens 2048 --runs 5 --max-new-tokens 8 --out /tmp/pb 2>&1 | grep -A2 "prefill tokens" | tail -1
  done
done
