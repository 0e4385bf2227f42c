#!/usr/bin/env bash
# Session 5, device call 4: k-blocks a step (U) of the int8 tensor-core GEMV per n-tile count
# (NVRTC defines, one binary), and where a 19-token bf16 prefill spends the time a 16-token one does not.
set -u
B=$PWD/.carry/bundle; mkdir -p "$B" && tar -xJf .carry/slim.tar.xz -C "$B"
export PEREGRINE_KERNEL_CACHE=/tmp/peregrine-kernels
nvidia-smi --query-gpu=name,pci.bus_id,clocks.max.sm,power.limit --format=csv
for round in 1 2; do
  for d in "" "GEMV8_MMA_U8=3,GEMV8_MMA_U16=3,GEMV8_MMA_U32=3" "GEMV8_MMA_U8=4,GEMV8_MMA_U16=4,GEMV8_MMA_U32=3"; do
    echo "=== int8 short prompts, defines [$d] (round $round)"
    PEREGRINE_NVRTC_DEFINES="$d" timeout 200 "$B/tests/perf" short_prompt --nocapture --test-threads=1 2>&1 | grep -E "int8 .*T=(2|8|12|16|19|32) engine"
  done
done
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
for T in 16 19; do  # (the inline summary below failed on the JSON line before the CSV header; the committed summaries come from scripts/ncu_kernel_summary.py)
  IDS=$(python3 -c "print(','.join(str(100 + (i * 7919) % 60000) for i in range($T)))")
  echo "=== ncu: one $T-token bf16 prefill (kernels serialised)"
  timeout 200 "$NCU" --clock-control none --metrics gpu__time_duration.sum --csv -k 'regex:^(?!fill_normal)' \
    "$B/bin/peregrine" generate --device cuda --dummy-weights --model falcon-40b --quant bf16 --prompt-ids "$IDS" --max-new-tokens 1 --ignore-eos --json \
    > $OUT/ncu-bf16-T$T.csv 2>$OUT/ncu-T$T.err
  python3 - $OUT/ncu-bf16-T$T.csv <<'PY'
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
head = rows[0]; ki = head.index("Kernel Name"); vi = head.index("Metric Value"); ui = head.index("Metric Unit")
tot = collections.defaultdict(float); cnt = collections.Counter()
for r in rows[1:]:
    v = float(r[vi].replace(",", "")); u = r[ui]
    us = v / 1e3 if u == "nsecond" else v if u == "usecond" else v * 1e3 if u == "msecond" else v
    name = r[ki].split("(")[0][:70]; tot[name] += us; cnt[name] += 1
s = sum(tot.values())
print(f"total {s/1e3:.2f} ms over {sum(cnt.values())} launches")
for n, t in sorted(tot.items(), key=lambda x: -x[1])[:12]:
    print(f"{n:70s} {cnt[n]:5d} {t/1e3:9.2f} ms {100*t/s:5.1f}%  {t/cnt[n]:9.1f} us each")
PY
done
