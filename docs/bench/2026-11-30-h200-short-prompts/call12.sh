#!/usr/bin/env bash
# Session 5, device call 12: the GPU tests with the int8 tensor-core GEMV's adjacent k-blocks as the
# default (gemv, quant, gpu_models, nvrtc_compile).
set -u
SECTIONS="tests" TESTS="gemv quant gpu_models nvrtc_compile" bash scripts/device_check.sh
grep -E "^(test result|---)" $OUT/log.txt
grep -E "int8 .*T=(2|3|8|9|12|16|17|19|24|32) " $OUT/log.txt | sed 's/.*rel err *\([0-9.e-]*\).*/\1/' | sort -g | tail -1
grep -cE "int8 .*T=(2|3|8|9|12|16|17|19|24|32) " $OUT/log.txt
