#!/usr/bin/env bash
# Builds the CUDA ferrochat (target/cuda/release/ferrochat) on a machine that has no CUDA
# toolkit, for running on one that has the driver and CUDA 13 libraries: nvcc, the
# headers and the libraries to link against come from NVIDIA's PyPI wheels, and a
# stand-in libcuda.so (the driver's symbols, empty) satisfies the linker; the real
# libcuda.so.1 is loaded at run time. With a CUDA toolkit installed, plain
# `cargo build --release -p ferrochat-cli --features cuda` does the same.
#   scripts/build_cuda.sh [COMPUTE_CAP] [--nccl]   # default 90 (H100/H200)
# --nccl adds data-parallel training across GPUs (features nccl and mpi: NCCL's library
# from its PyPI wheel, Open MPI from Debian); run it with NCCL's library on
# LD_LIBRARY_PATH too.
set -euo pipefail
cd "$(dirname "$0")/.."
CAP=90 FEATURES=cuda NCCL=
for a in "$@"; do
  case "$a" in
    --nccl) FEATURES="cuda nccl" NCCL="nvidia-nccl-cu13==2.30.*";;
    [0-9]*) CAP=$a;;
    *) echo "usage: scripts/build_cuda.sh [COMPUTE_CAP] [--nccl]" >&2; exit 2;;
  esac
done
if [[ -n "$NCCL" ]]; then
  source scripts/mpi.sh
  ensure_mpi || { echo "--nccl needs Open MPI and libclang (Debian: openmpi-bin libopenmpi-dev libclang-dev)" >&2; exit 1; }
fi
TOOLS="$(pwd)/target/cuda-tools"
python3 -m venv "$TOOLS/venv"
"$TOOLS/venv/bin/pip" install -q --disable-pip-version-check \
  "nvidia-cuda-nvcc==13.0.*" "nvidia-nvvm==13.0.*" "nvidia-cuda-crt==13.0.*" \
  "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-cccl==13.0.*" "nvidia-cuda-nvrtc==13.0.*" \
  "nvidia-cublas==13.0.*" "nvidia-curand" $NCCL
CU=$(echo "$TOOLS"/venv/lib/python3*/site-packages/nvidia/cu13)
LINK="$TOOLS/link"
mkdir -p "$LINK"
for f in "$CU"/lib/lib{cublas,cublasLt,curand,nvrtc,cudart}.so.* "$CU"/../nccl/lib/libnccl.so.*; do
  [[ -e "$f" ]] || continue
  [[ "$f" == *builtins* || "$f" == *.alt.* ]] && continue
  b=$(basename "$f"); ln -sf "$f" "$LINK/$b"; ln -sf "$f" "$LINK/${b%%.so*}.so"
done
# the driver API symbols cudarc may call, as empty functions in a libcuda.so.1 stand-in
cargo fetch -q
SYS=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-*/src/driver/sys/mod.rs | tail -1)
{ echo "/* link-time stand-in for libcuda.so.1; the driver provides these at run time */"
  grep -oE '"cu[A-Z][A-Za-z0-9_]+"' "$SYS" | tr -d '"' | sort -u | sed 's/.*/int &(void) { return 0; }/'
} > "$LINK/stub.c"
gcc -shared -fPIC -o "$LINK/libcuda.so" -Wl,-soname,libcuda.so.1 "$LINK/stub.c"
PATH="$CU/bin:$PATH" CUDA_COMPUTE_CAP=$CAP CUDA_PATH="$CU" CUDA_ROOT="$CU" LIBRARY_PATH="$LINK" \
  CARGO_TARGET_DIR=target/cuda cargo build --release -p ferrochat-cli --features "$FEATURES"
# a copy to send to the GPU machine: without debug information and compressed (about
# 25 MB instead of 210)
strip -o target/cuda/ferrochat target/cuda/release/ferrochat
gzip -f target/cuda/ferrochat
echo "built target/cuda/release/ferrochat ($FEATURES, compute capability $CAP), and target/cuda/ferrochat.gz to copy to the GPU machine; run it with the CUDA 13 libraries on LD_LIBRARY_PATH"
