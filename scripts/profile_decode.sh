#!/usr/bin/env bash
# Lab run on the GPU machine: Nsight Compute counters of the decode kernels of a Falcon-40B synthetic
# generate (graphs off, so every launch is profiled on its own; ncu serialises kernels, so its times
# are per kernel without overlap). Clocks are left alone (--clock-control none, device/METHOD.md).
#   QUANT    format (default nf4)
#   KERNELS  kernel-name regex (default gemv4t_fast_dq_t1: the NF4 decode GEMVs)
#   SKIP     matching launches skipped first (default 120: past the prompt and the first step)
#   COUNT    launches profiled (default 4: one layer's qkv, h->4h, dense, 4h->h for nf4)
#   DETAIL   1: also instruction counts, pipe utilisation and L1 wavefronts (shared vs global), the
#            counters behind "instructions and wavefronts per 512 B" in crates/cuda/NOTES.md
#   STALLS   a name: also warp-stall sampling per SASS instruction. The report is saved and exported
#            as $OUT/$STALLS-raw.csv (every metric, incl. the stall reasons per issued instruction)
#            and $OUT/$STALLS-sass.csv (the source page: samples per SASS instruction)
# Needs the release binary as .carry/bundle/bin/peregrine or .carry/peregrine; writes ncu's report
# to stdout.
set -uo pipefail
BIN=$PWD/.carry/bundle/bin/peregrine
[ -x "$BIN" ] || BIN=$PWD/.carry/peregrine
[ -x "$BIN" ] || { echo "profile_decode.sh: no release binary in .carry/bundle/bin or .carry" >&2; exit 2; }
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
[ -n "$NCU" ] || { echo "profile_decode.sh: ncu not found" >&2; exit 2; }
export PEREGRINE_KERNEL_CACHE=/tmp/peregrine-kernels
SEED=12081,241,1962,544,241,13215,2464,325,14465,11659,23,480,335,28563,9315,25
EXTRA_ARGS=()
if [ "${DETAIL:-0}" = 1 ]; then
  M=smsp__inst_executed.sum,smsp__issue_active.avg.pct_of_peak_sustained_active,sm__cycles_elapsed.avg.per_second
  M=$M,dram__bytes_read.sum.per_second,gpu__time_duration.sum,l1tex__data_pipe_lsu_wavefronts.sum
  M=$M,l1tex__data_pipe_lsu_wavefronts_mem_shared.sum,l1tex__data_pipe_lsu_wavefronts_mem_shared_op_ld.sum
  M=$M,l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum,l1tex__data_pipe_lsu_wavefronts.avg.pct_of_peak_sustained_elapsed
  M=$M,l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum,sm__inst_executed_pipe_lsu.avg.pct_of_peak_sustained_active
  M=$M,sm__pipe_alu_cycles_active.avg.pct_of_peak_sustained_active,sm__pipe_fma_cycles_active.avg.pct_of_peak_sustained_active
  EXTRA_ARGS=(--section InstructionStats --section ComputeWorkloadAnalysis --metrics "$M")
fi
REPORT=""
if [ -n "${STALLS:-}" ]; then
  REPORT=${OUT:-/tmp}/$STALLS
  EXTRA_ARGS+=(--section SourceCounters -f -o "$REPORT")
fi
"$NCU" --clock-control none -k "regex:${KERNELS:-gemv4t_fast_dq_t1}" --launch-skip "${SKIP:-120}" \
  --launch-count "${COUNT:-4}" --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats \
  --section SchedulerStats --section Occupancy --section LaunchStats "${EXTRA_ARGS[@]}" \
  "$BIN" generate --device cuda --dummy-weights --model falcon-40b --quant "${QUANT:-nf4}" --prompt-ids "$SEED" \
  --max-new-tokens 6 --ignore-eos --no-graph
if [ -n "$REPORT" ] && [ -f "$REPORT.ncu-rep" ]; then
  "$NCU" -i "$REPORT.ncu-rep" --page raw --csv > "$REPORT-raw.csv"
  "$NCU" -i "$REPORT.ncu-rep" --page details --print-details all > "$REPORT-details.txt" 2>&1
  "$NCU" -i "$REPORT.ncu-rep" --page source --csv --print-source sass > "$REPORT-sass.csv" 2>&1
  rm -f "$REPORT.ncu-rep"
fi
