#!/usr/bin/env bash
# Build the release binary and the GPU test binaries here, and pack them with the tiny
# model into .carry/bundle.tar.xz (git-ignored) for scripts/device_check.sh; the device
# tool's `carry` takes it along (the tree that travels is limited to 64 MiB).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p peregrine
stage=$(mktemp -d)
mkdir -p "$stage/bin" "$stage/tests" "$stage/shared/assets/models"
cp target/release/peregrine "$stage/bin/"
cargo test --release -p peregrine-cuda -p peregrine-engine --no-run --message-format=json 2>/dev/null |
  python3 -c '
import sys, json
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["target"]["name"], m["executable"])' |
  while read -r name exe; do case $name in ops|quant|gemv|perf|nvrtc_compile|gpu_models|sampling) cp "$exe" "$stage/tests/$name";; esac; done
strip "$stage"/bin/* "$stage"/tests/*
cp -r ../shared/assets/models/peregrine-tiny-falcon "$stage/shared/assets/models/"
cp ../shared/assets/models/bnb-reference-logits.json "$stage/shared/assets/models/"
mkdir -p "$stage/shared/assets/text" && cp ../shared/assets/text/tinymix-valid.txt "$stage/shared/assets/text/"
mkdir -p .carry && tar -cJf .carry/bundle.tar.xz -C "$stage" . && rm -rf "$stage"
ls -la .carry/bundle.tar.xz
