#!/usr/bin/env bash
# Builds the release binary, target/release/ferrochat. On Linux x86-64 its matrix
# products go through Intel MKL's sgemm (scripts/mkl.sh fetches the static libraries
# once), as PyTorch's do: the training step ran 13% faster here (README, "Matrix products").
# Elsewhere, when the download fails, or with FERROCHAT_MKL=0, the gemm crate does them.
# Extra arguments go to `cargo build` (e.g. -q, --features mpi).
set -euo pipefail
cd "$(dirname "$0")/.."
features=()
if [[ "${FERROCHAT_MKL:-1}" != 0 ]]; then
  if dir=$(scripts/mkl.sh); then
    export FERROCHAT_MKL_DIR="$dir"
    features=(--features mkl)
  else
    echo "build.sh: building without MKL (the gemm crate does the matrix products)" >&2
  fi
fi
cargo build --release -p ferrochat-cli "${features[@]}" "$@"
