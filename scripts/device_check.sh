#!/usr/bin/env bash
# One device call that checks a build on the GPU machine: unpack the bundle made by
# scripts/make_device_bundle.sh, lay out ../shared where the test binaries look for it, then run
# the sections named in $SECTIONS (default: tests generate ppl bench), in this order:
#   tests     the GPU test binaries ($TESTS, default all) against the CPU oracle
#   generate  the CLI on the tiny model, Falcon-40B in every format (decode graphs on and off),
#             a sampled 40B run and Falcon-180B nf4, all with synthetic weights
#   prefill   a cold 2,048-token Falcon-40B bf16 prefill through `generate` (the bench measures it warm)
#   ppl       `peregrine ppl` of the tiny model on the GPU (bf16 compute), one format per run
#   hfppl     transformers (+ bitsandbytes) perplexity of the tiny model (scripts/hf_ppl_reference.py)
#   bench     the transformers + bitsandbytes baseline ($BASELINE_KINDS), then `peregrine bench` with a
#             warm 2,048-token prefill per format (GPU clocks and power sampled to $OUT/bench-gpu-clocks.csv)
# Everything is logged to $OUT/log.txt; the bench report comes back as $OUT/bench.tgz.
set -uo pipefail
SECTIONS=${SECTIONS:-tests generate ppl bench}
has() { [[ " $SECTIONS " == *" $1 "* ]]; }
B=$PWD/.carry/bundle
mkdir -p "$B" && tar -xJf .carry/bundle.tar.xz -C "$B"
mkdir -p /work && ln -sfn "$B/shared" /work/shared && ln -sfn "$PWD" /work/main
export PATH="$B/bin:$PATH" PEREGRINE_KERNEL_CACHE=/tmp/peregrine-kernels
LOG=$OUT/log.txt
step() { echo "=== $*" | tee -a "$LOG"; local t0=$SECONDS; timeout "${LIMIT:-300}" "$@" >>"$LOG" 2>&1; echo "--- rc=$? ${*:0:3} $((SECONDS-t0))s" | tee -a "$LOG"; }
nvidia-smi --query-gpu=name,memory.total,memory.used,clocks.sm --format=csv | tee -a "$LOG"
TINY=/work/shared/assets/models/peregrine-tiny-falcon
SEED=12081,241,1962,544,241,13215,2464,325,14465,11659,23,480,335,28563,9315,25
if [ -f .carry/bnb.tar.xz ]; then mkdir -p /tmp/site && tar -xJf .carry/bnb.tar.xz -C /tmp/site; fi
if has tests; then
  # The bitsandbytes checkpoints are byte-identical to what `peregrine quantize` writes (tested on the CPU).
  step peregrine quantize --model $TINY --quant nf4 --out $TINY-bnb-nf4
  step peregrine quantize --model $TINY --quant int8 --out $TINY-bnb-int8
  for t in ${TESTS:-ops quant gemv sampling nvrtc_compile gpu_models}; do
    [ -x "$B/tests/$t" ] && step "$B/tests/$t" --test-threads=1 --nocapture
  done
fi
if has generate; then
  step peregrine generate --device cuda --model $TINY --prompt "Once upon a time" --max-new-tokens 40
  for q in ${QUANTS:-bf16 int8 nf4 fp4}; do
    for g in "" ${NO_GRAPH---no-graph}; do
      step peregrine generate --device cuda --dummy-weights --model falcon-40b --quant $q --prompt-ids $SEED --max-new-tokens 100 --ignore-eos --json $g
    done
  done
  if [ -z "${QUICK:-}" ]; then  # QUICK=1: the 40B decode runs only
    step peregrine generate --device cuda --dummy-weights --model falcon-40b --quant nf4 --prompt-ids $SEED --max-new-tokens 100 --temperature 0.8 --top-k 40 --top-p 0.95 --repetition-penalty 1.2 --seed 7 --json
    step peregrine generate --device cuda --dummy-weights --model falcon-180b --quant nf4 --prompt-ids $SEED --max-new-tokens 30 --ignore-eos --json
  fi
fi
if has prefill; then
  # 2,048 prompt tokens fill Falcon-40B's context, so no token follows: total_s is the prefill
  # (run twice; the second is warm).
  IDS=$(python3 -c "print(','.join(str(100 + (i * 7919) % 60000) for i in range(2048)))")
  for r in 1 2; do step peregrine generate --device cuda --dummy-weights --model falcon-40b --quant bf16 --prompt-ids "$IDS" --max-new-tokens 1 --ignore-eos --json; done
fi
if has ppl; then
  TEXT=/work/shared/assets/text/tinymix-valid.txt
  for q in bf16 int8 nf4 fp4 "int8 --int8-threshold 6"; do
    step peregrine ppl --device cuda --model $TINY --file $TEXT --ctx 256 --chunks 400 --quant $q --json
  done
fi
if has hfppl; then
  (cd /tmp/site && PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 timeout 400 python3 /work/main/scripts/hf_ppl_reference.py $TINY /work/shared/assets/text/tinymix-valid.txt) 2>&1 | grep -v Warning | tee -a "$LOG" | grep "hf ppl"
fi
if has bench; then
  BASE=""
  if [ -f .carry/bnb.tar.xz ]; then
    # The transformers + bitsandbytes baseline (../shared/anchors/hf_bnb_baseline.py and a slim
    # bitsandbytes 0.50.2 wheel, carried in .carry/bnb.tar.xz), then the bench beside it.
    for kind in ${BASELINE_KINDS:-nf4_bfloat16 bf16}; do
      echo "=== baseline $kind" | tee -a "$LOG"
      (cd /tmp/site && PYTHONPATH=/tmp/site timeout 170 python3 hf_bnb_baseline.py $kind) 2>&1 | grep -v Warning | tee -a "$OUT/baseline.log" >>"$LOG"
    done
    BASE="--baseline $OUT/baseline.log"
  fi
  # The GPU's clocks, power and temperature through the bench, every 500 ms (the H200 decodes at its
  # 700 W power limit, so the SM clock, and with it the speed, depends on the board).
  nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu,clocks_event_reasons.active \
    --format=csv -lms 500 > "$OUT/bench-gpu-clocks.csv" 2>/dev/null &
  SMI=$!
  LIMIT=280 step peregrine bench --device cuda --prefill-tokens 2048 --out "$OUT/bench" $BASE
  kill $SMI 2>/dev/null
  tar -czf "$OUT/bench.tgz" -C "$OUT" bench && rm -rf "$OUT/bench"
fi
grep -E "^(===|---)|test result|rel err|SKIPPED|tok/s|decode_tokens_per_s|total_s|hf ppl|agree|perplexity" "$LOG" | tail -100
