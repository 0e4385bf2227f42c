#!/usr/bin/env bash
# Session 5, device call 6: where a 2,048-token NF4 prefill spends its time (dequantize + cuBLAS
# chunks), and whether the bf16 19-token TTFT outlier is a first-use cost (two runs per prompt).
set -u
B=$PWD/.carry/bundle; mkdir -p "$B" && tar -xJf .carry/slim.tar.xz -C "$B"
export PEREGRINE_KERNEL_CACHE=/tmp/peregrine-kernels
nvidia-smi --query-gpu=name,pci.bus_id,clocks.max.sm,power.limit --format=csv
timeout 200 "$B/bin/peregrine" bench --device cuda --quant bf16,nf4 --runs 2 --out $OUT/bench 2>&1 | grep -v "^$" | tail -12
cut -d, -f1,5,6,7,8,11 $OUT/bench/results.csv
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
IDS=$(python3 -c "print(','.join(str(100 + (i * 7919) % 60000) for i in range(2048)))")
for q in nf4 int8; do
  echo "=== ncu: one 2,048-token $q prefill (kernels serialised)"
  timeout 240 "$NCU" --clock-control none --metrics gpu__time_duration.sum --csv -k 'regex:^(?!fill_normal)' \
    "$B/bin/peregrine" generate --device cuda --dummy-weights --model falcon-40b --quant $q --prompt-ids "$IDS" --max-new-tokens 1 --ignore-eos --json \
    > $OUT/ncu-prefill-$q.csv 2>$OUT/ncu-$q.err
  echo "ncu rc=$?"
done
