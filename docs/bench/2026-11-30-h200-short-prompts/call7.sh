#!/usr/bin/env bash
# Session 5, device call 7: the acceptance run of this session's build: every GPU test, then the
# transformers + bitsandbytes baseline and the seed's bench with a warm 2,048-token prefill.
set -u
SECTIONS="tests bench" BASELINE_KINDS="nf4_bfloat16 bf16" bash scripts/device_check.sh
grep -E "^(=== |--- |test result)" $OUT/log.txt | tail -40
