import csv, sys, collections
rows = list(csv.reader(open(sys.argv[1])))
start = next(i for i, r in enumerate(rows) if r and r[0] == "ID")
head = rows[start]; ki = head.index("Kernel Name"); vi = head.index("Metric Value"); ui = head.index("Metric Unit")
tot = collections.defaultdict(float); cnt = collections.Counter()
for r in rows[start + 1:]:
    if len(r) <= vi: continue
    v = float(r[vi].replace(",", "")); u = r[ui]
    us = v / 1e3 if u in ("nsecond", "ns") else v if u in ("usecond", "us") else v * 1e3 if u in ("msecond", "ms") else v
    name = r[ki].split("(")[0][:70] + " " + r[8]; tot[name] += us; cnt[name] += 1
s = sum(tot.values())
print(f"total {s/1e3:.2f} ms over {sum(cnt.values())} launches")
for n, t in sorted(tot.items(), key=lambda x: -x[1])[:14]:
    print(f"{n:90s} {cnt[n]:5d} {t/1e3:9.2f} ms {100*t/s:5.1f}%  {t/cnt[n]:9.1f} us each")
