#!/usr/bin/env bash
# Device call 8: the seed's bench on another machine start (the build of 1fdba91), for the spread of
# int8 and the prefill across boards.
set -u
B=$PWD/.carry/bundle; mkdir -p "$B" && tar -xJf .carry/slim.tar.xz -C "$B"
export PEREGRINE_KERNEL_CACHE=/tmp/peregrine-kernels
nvidia-smi --query-gpu=name,pci.bus_id,serial,clocks.max.sm,power.limit --format=csv
timeout 500 "$B/bin/peregrine" bench --device cuda --prefill-tokens 2048 --out $OUT/bench 2>&1 | grep -v "^$" | tail -30
