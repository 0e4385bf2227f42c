#!/usr/bin/env bash
# Device call 3: cuBLAS workspace for the prefill GEMMs (CUBLAS_WORKSPACE_CONFIG, no code change),
# the head-dim-128 prefill attention old vs new, and a per-kernel breakdown of a 2,048-token prefill.
set -u
B=$PWD/.carry/bundle; mkdir -p "$B" && tar -xJf .carry/slim.tar.xz -C "$B"; tar -xJf .carry/old.tar.xz -C .carry
export PEREGRINE_KERNEL_CACHE=/tmp/peregrine-kernels
NEW=$B/bin/peregrine
nvidia-smi --query-gpu=name,clocks.sm,power.limit --format=csv
for i in 1 2; do
  echo "=== perf old ($i)"; timeout 240 .carry/old/perf --nocapture 2>&1 | grep -E "attention prefill T"
  echo "=== perf new ($i)"; timeout 240 "$B/tests/perf" --nocapture 2>&1 | grep -E "attention prefill T"
done
for i in 1 2 3; do
  for ws in "" ":32768:2" ":65536:1"; do
    echo "=== prefill bench CUBLAS_WORKSPACE_CONFIG=$ws ($i)"
    rm -rf /tmp/pb; env ${ws:+CUBLAS_WORKSPACE_CONFIG=$ws} timeout 300 "$NEW" bench --device cuda --quant bf16 --prefill-tokens 2048 --runs 5 --max-new-tokens 8 --out /tmp/pb 2>&1 | grep -A2 "prefill tokens" | tail -1
  done
done
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
IDS=$(python3 -c "print(','.join(str(100 + (i * 7919) % 60000) for i in range(2048)))")
echo "=== ncu breakdown of one 2,048-token bf16 prefill (kernels serialised, clocks free)"
timeout 400 "$NCU" --clock-control none --metrics gpu__time_duration.sum --csv -k 'regex:^(?!fill_normal)' \
  "$NEW" generate --device cuda --dummy-weights --model falcon-40b --quant bf16 --prompt-ids "$IDS" --max-new-tokens 1 --ignore-eos --json \
  > $OUT/ncu-prefill.csv 2>$OUT/ncu-prefill.err
echo "ncu rc=$?"
python3 - $OUT/ncu-prefill.csv <<'PY'
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
head = rows[0]; ki = head.index("Kernel Name"); vi = head.index("Metric Value"); ui = head.index("Metric Unit")
tot = collections.defaultdict(float); cnt = collections.Counter()
for r in rows[1:]:
    v = float(r[vi].replace(",", "")); u = r[ui]
    us = v / 1e3 if u == "nsecond" else v if u == "usecond" else v * 1e3 if u == "msecond" else v
    name = r[ki].split("(")[0][:60]; tot[name] += us; cnt[name] += 1
s = sum(tot.values())
print(f"total {s/1e3:.2f} ms over {sum(cnt.values())} launches")
for n, t in sorted(tot.items(), key=lambda x: -x[1])[:20]:
    print(f"{n:60s} {cnt[n]:5d} {t/1e3:9.2f} ms {100*t/s:5.1f}%  {t/cnt[n]:9.1f} us each")
PY
