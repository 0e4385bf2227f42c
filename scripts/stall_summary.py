"""Summarise an Nsight Compute source page exported by scripts/profile_decode.sh (STALLS=name writes
$OUT/name-sass.csv): for one profiled launch, the executed instructions and warp-stall samples by
opcode, the stall reasons over the kernel, and the SASS instructions with the most samples.
Usage: python3 scripts/stall_summary.py name-sass.csv LAUNCH [TOP]   (LAUNCH: 0-based, in report order)
"""
import csv, sys, collections
fn, which = sys.argv[1], int(sys.argv[2])
rows = list(csv.reader(open(fn)))
starts = [i for i, r in enumerate(rows) if r and r[0] == "Kernel Name"]
s = starts[which]; e = starts[which + 1] if which + 1 < len(starts) else len(rows)
print(rows[s][1])
hdr = rows[s + 1]; data = rows[s + 2:e]
H = {h: i for i, h in enumerate(hdr)}
def f(r, k):
    v = r[H[k]].replace(",", "")
    try: return float(v)
    except: return 0.0
tot_inst = sum(f(r, "Instructions Executed") for r in data)
tot_samp = sum(f(r, "Warp Stall Sampling (All Samples)") for r in data)
print("instructions executed", tot_inst, "samples", tot_samp)
ops = collections.Counter(); opsamp = collections.Counter()
stalls = [h for h in hdr if h.startswith("stall_") and "Not Issued" not in h]
for r in data:
    op = r[H["Source"]].split()
    op = [o for o in op if not o.startswith("@")]
    o = op[0].split(".")[0] if op else "?"
    ops[o] += f(r, "Instructions Executed"); opsamp[o] += f(r, "Warp Stall Sampling (All Samples)")
print("by opcode (share of executed, share of samples):")
for o, c in ops.most_common(25): print(f"  {o:10s} {100*c/tot_inst:5.1f}%  {100*opsamp[o]/tot_samp:5.1f}%")
st = collections.Counter()
for r in data:
    for h in stalls: st[h] += f(r, h)
print("stall totals:", ", ".join(f"{k[6:]} {100*v/tot_samp:.1f}%" for k, v in st.most_common(12)))
top = sorted(data, key=lambda r: -f(r, "Warp Stall Sampling (All Samples)"))[:int(sys.argv[3]) if len(sys.argv) > 3 else 25]
for r in top:
    det = sorted(((f(r, h), h[6:]) for h in stalls), reverse=True)[:3]
    print(f"  {r[H['Address']]:>6} {100*f(r,'Warp Stall Sampling (All Samples)')/tot_samp:5.1f}% ex={f(r,'Instructions Executed'):9.0f} {r[H['Source']][:60]:60s} " + " ".join(f"{n}:{int(v)}" for v, n in det))
