#!/usr/bin/env bash
# Makes NVRTC (and the CUDA headers the kernels include) available on a machine without a GPU or a CUDA
# toolkit, so that the test `kernels_compile_with_nvrtc` compiles every kernel instead of skipping.
# It pip-installs two NVIDIA wheels into a folder and prints the environment exports that point the test
# at them. Usage (what .ci/run does):
#     eval "$(bash crates/cuda/ci-nvrtc.sh)"          # folder: $PEREGRINE_NVRTC_DIR or ~/.cache/peregrine/nvrtc-13.0
#     cargo test -p peregrine-cuda --release
# Progress goes to stderr; only the `export` lines go to stdout.
set -euo pipefail
dir="${1:-${PEREGRINE_NVRTC_DIR:-$HOME/.cache/peregrine/nvrtc-13.0}}"
lib="$dir/nvidia/cu13/lib"
inc="$dir/nvidia/cu13/include"
if [ ! -f "$lib/libnvrtc.so.13" ] || [ ! -f "$inc/cuda_bf16.h" ]; then
    echo "ci-nvrtc: installing nvidia-cuda-nvrtc 13.0.88 and nvidia-cuda-runtime 13.0.96 into $dir" >&2
    python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$dir" \
        nvidia-cuda-nvrtc==13.0.88 nvidia-cuda-runtime==13.0.96 >&2
fi
for f in "$lib/libnvrtc.so.13" "$lib/libnvrtc-builtins.so.13.0" "$inc/cuda_bf16.h"; do
    [ -f "$f" ] || { echo "ci-nvrtc: expected $f after the install" >&2; exit 1; }
done
echo "export PEREGRINE_NVRTC_LIB=$lib/libnvrtc.so.13"
echo "export PEREGRINE_CUDA_INCLUDE=$inc"
echo "export LD_LIBRARY_PATH=$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
