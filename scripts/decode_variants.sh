#!/usr/bin/env bash
# Lab run on the GPU machine: Falcon-40B synthetic decode (batch 1, graphs on) under several sets
# of kernel switches, to measure a kernel-level alternative end to end in one device call.
#   VARIANTS  ';'-separated sets of environment assignments (an empty set is the default), e.g.
#             "; PEREGRINE_NO_PAIR_GEMV=1; PEREGRINE_NVRTC_DEFINES=SWITCH_A=2,SWITCH_B"
#   QUANTS    formats (default: bf16 int8 nf4), TOKENS new tokens (default 200), REPEAT runs each (2)
# Needs the release binary as $BIN, .carry/bundle/bin/peregrine (scripts/device_check.sh unpacks it)
# or .carry/peregrine. Prints one line per run: variant, format, decode tok/s, and the GPU's clocks
# over the run's last 2 s, its decode (nvidia-smi every 200 ms: median SM and memory MHz, peak power
# W, peak temperature C).
set -uo pipefail
BIN=${BIN:-$PWD/.carry/bundle/bin/peregrine}
[ -x "$BIN" ] || BIN=$PWD/.carry/peregrine
[ -x "$BIN" ] || { echo "decode_variants.sh: no release binary in .carry/bundle/bin or .carry" >&2; exit 2; }
export PEREGRINE_KERNEL_CACHE=/tmp/peregrine-kernels
SEED=12081,241,1962,544,241,13215,2464,325,14465,11659,23,480,335,28563,9315,25
IFS=';' read -ra SETS <<< "${VARIANTS:-}"
[ ${#SETS[@]} -eq 0 ] && SETS=("")
for defs in "${SETS[@]}"; do
  for q in ${QUANTS:-bf16 int8 nf4}; do
    for r in $(seq "${REPEAT:-2}"); do
      # shellcheck disable=SC2086 # $defs is a list of NAME=VALUE words
      nvidia-smi --query-gpu=clocks.sm,clocks.mem,power.draw,temperature.gpu --format=csv,noheader,nounits -lms 200 \
        > /tmp/decode_variants.clk 2>/dev/null &
      smi=$!
      rate=$(env $defs timeout 300 "$BIN" generate --device cuda --dummy-weights --model falcon-40b \
        --quant "$q" --prompt-ids $SEED --max-new-tokens "${TOKENS:-200}" --ignore-eos --json 2>&1 |
        python3 -c 'import sys,json
for l in sys.stdin:
    if l.startswith("{"): print("%.2f" % json.loads(l)["timings"]["decode_tokens_per_s"]); break
else: print("failed")')
      kill $smi 2>/dev/null; wait $smi 2>/dev/null
      clk=$(python3 -c 'import sys
rows = [[float(v) for v in l.split(",")] for l in open(sys.argv[1]) if l.count(",") == 3 and "N/A" not in l]
rows = rows[-10:]  # the last 2 s: the decode (it ends the run)
if not rows: print("clocks: none"); sys.exit()
med = lambda i: sorted(r[i] for r in rows)[len(rows) // 2]
print("sm %.0f MHz, mem %.0f MHz, peak %.0f W, %.0f C" % (med(0), med(1), max(r[2] for r in rows), max(r[3] for r in rows)))' /tmp/decode_variants.clk)
      printf '%-50s %-5s %-8s %s\n' "[${defs# }]" "$q" "$rate" "$clk"
    done
  done
done
