#!/usr/bin/env bash
# Device call 6: decode of the previous build (fffda70) against this one (1fdba91), same machine:
# the decode kernels did not change, so any difference is noise; plus the bench's int8 figure.
set -u
B=$PWD/.carry/bundle; mkdir -p "$B" && tar -xJf .carry/slim.tar.xz -C "$B"; tar -xJf .carry/old.tar.xz -C .carry
for i in 1 2 3; do
  for v in old new; do
    bin=$PWD/.carry/old/peregrine; [ $v = new ] && bin=$B/bin/peregrine
    BIN=$bin QUANTS="int8 nf4" REPEAT=1 bash scripts/decode_variants.sh | sed "s/^/$v /"
  done
done
