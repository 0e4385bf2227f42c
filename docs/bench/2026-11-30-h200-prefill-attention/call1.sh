#!/usr/bin/env bash
# Device call 1 (2026-11-30, fourth session): the 8-warp prefill attention against the previous
# build (kernel timing and the 2,048-token prefill end to end), and G4_SCALE16 for NF4 decode.
set -u
B=$PWD/.carry/bundle; mkdir -p "$B" && tar -xJf .carry/slim.tar.xz -C "$B"
mkdir -p /work && ln -sfn "$B/shared" /work/shared && ln -sfn "$PWD" /work/main
export PEREGRINE_KERNEL_CACHE=/tmp/peregrine-kernels
tar -xJf .carry/old.tar.xz -C .carry
NEW=$B/bin/peregrine; OLD=$PWD/.carry/old/peregrine
nvidia-smi --query-gpu=name,clocks.sm,power.limit --format=csv
echo "=== ops (new attention against the CPU)"
timeout 240 "$B/tests/ops" --test-threads=1 --nocapture 2>&1 | grep -E "attention|test result|FAIL|panic" | tail -40
echo "=== quant with G4_SCALE16=1"
PEREGRINE_NVRTC_DEFINES=G4_SCALE16=1 timeout 240 "$B/tests/quant" --test-threads=1 --nocapture 2>&1 | grep -E "test result|FAIL|panic|worst|max rel" | tail -12
for i in 1 2; do
  echo "=== perf old ($i)"; timeout 240 .carry/old/perf --nocapture 2>&1 | grep -E "attention"
  echo "=== perf new ($i)"; timeout 240 "$B/tests/perf" --nocapture 2>&1 | grep -E "attention"
done
for i in 1 2; do
  for v in OLD NEW; do
    bin=$OLD; [ $v = NEW ] && bin=$NEW
    echo "=== prefill bench $v ($i)"
    rm -rf /tmp/pb; timeout 300 "$bin" bench --device cuda --quant bf16 --prefill-tokens 2048 --runs 3 --max-new-tokens 8 --out /tmp/pb 2>&1 | grep -i -E "prefill|error" | tail -6
  done
done
for i in 1 2 3; do
  BIN=$NEW VARIANTS="; PEREGRINE_NVRTC_DEFINES=G4_SCALE16=1" QUANTS="nf4" REPEAT=1 bash scripts/decode_variants.sh
done
