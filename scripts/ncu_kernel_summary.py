"""Summarise an Nsight Compute CSV of `gpu__time_duration.sum` per launch (made with
`ncu --metrics gpu__time_duration.sum --csv ... peregrine generate ...`, as the device-call scripts under
docs/bench/ do for a whole prefill): the total, then the kernels (name and grid) with the most time, their
launch count, share and time per launch. Any lines the profiled program printed before the CSV header
(its JSON output) are skipped.
Usage: python3 scripts/ncu_kernel_summary.py profile.csv [TOP]
"""
import csv, sys, collections

rows = list(csv.reader(open(sys.argv[1])))
top = int(sys.argv[2]) if len(sys.argv) > 2 else 14
start = next(i for i, r in enumerate(rows) if r and r[0] == "ID")
head = rows[start]
ki, gi = head.index("Kernel Name"), head.index("Grid Size")
vi, ui = head.index("Metric Value"), head.index("Metric Unit")
to_us = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3}
total, count = collections.defaultdict(float), collections.Counter()
for r in rows[start + 1:]:
    if len(r) <= vi:
        continue
    name = r[ki].split("(")[0][:70] + " " + r[gi]
    total[name] += float(r[vi].replace(",", "")) * to_us.get(r[ui], 1.0)
    count[name] += 1
whole = sum(total.values())
print(f"total {whole / 1e3:.2f} ms over {sum(count.values())} launches")
for name, t in sorted(total.items(), key=lambda kv: -kv[1])[:top]:
    print(f"{name:90s} {count[name]:5d} {t / 1e3:9.2f} ms {100 * t / whole:5.1f}%  {t / count[name]:9.1f} us each")
