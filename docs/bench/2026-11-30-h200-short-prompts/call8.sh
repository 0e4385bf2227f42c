#!/usr/bin/env bash
# Session 5, device call 8: time to first token per prompt, the previous build (3750450: quantized
# prompts of 9-32 tokens in 8-row GEMV chunks) against this one, same machine, alternating.
set -u
B=$PWD/.carry/bundle; mkdir -p "$B" && tar -xJf .carry/slim.tar.xz -C "$B"
export PEREGRINE_KERNEL_CACHE=/tmp/peregrine-kernels
nvidia-smi --query-gpu=name,pci.bus_id,clocks.max.sm,power.limit --format=csv
for round in 1 2; do
  for which in old bin; do
    echo "=== $which (round $round)"
    rm -rf /tmp/b; timeout 200 "$B/$which/peregrine" bench --device cuda --quant bf16,int8,nf4 --runs 2 --out /tmp/b 2>&1 | grep -E "^\| (bf16|int8|nf4) "
    mkdir -p $OUT/$which-$round && cp /tmp/b/results.csv $OUT/$which-$round/
    python3 - /tmp/b/results.csv <<'PY'
import csv, sys, collections
rows = [r for r in csv.DictReader(open(sys.argv[1])) if r["warmup"] == "false"]
by = collections.defaultdict(list)
for r in rows: by[(r["config"], int(r["prompt_tokens"]))].append(float(r["ttft_s"]) * 1e3)
print("TTFT ms per prompt length (runs):", "; ".join(f"{c} T={t}: " + "/".join(f"{v:.1f}" for v in vs) for (c, t), vs in sorted(by.items())))
PY
  done
done
