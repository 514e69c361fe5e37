#!/usr/bin/env bash
# The test command: formatting, lints, every Rust test, then the interoperability
# checks against real outside clients (Hugging Face transformers, llama.cpp, the openai
# client, a browser), which install themselves (PyPI into target/pyenv, Debian's chromium,
# playwright-core from npm). Open MPI comes from Debian's packages for the data-parallel
# tests (the `mpi` feature).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
# Each section's header says how long the run has taken so far, so a slow CI run shows
# where its time went.
section() { echo "== [$((SECONDS / 60))m$((SECONDS % 60))s] $*"; }

section "machine: $(nproc) cores, $(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "   SIMD: $(grep -m1 -ow "sse4_2\|avx\|avx2\|bmi2\|fma\|f16c\|avx512f" /proc/cpuinfo | sort -u | xargs 2>/dev/null)"
section "cargo fmt --check"
cargo fmt --all -- --check
# The interop checks' Python packages (torch alone is about 3 GB with its CUDA libraries)
# download while the Rust code builds; the interop section waits for them.
source scripts/pyenv.sh
mkdir -p target
ensure_pyenv torch transformers >target/pyenv-install.log 2>&1 &
PYENV_PID=$!
section "Open MPI, for the data-parallel tests"
source scripts/mpi.sh
FEATURES=()
if ensure_mpi; then
  FEATURES=(--features ferrochat-cli/mpi)
else
  echo "!!! SKIPPED: could not install Open MPI; the data-parallel tests will not run !!!" >&2
fi
section "cargo clippy"
cargo clippy --workspace --all-targets "${FEATURES[@]}" -q -- -D warnings
section "PostgreSQL on loopback, for the feedback store's tests"
source scripts/postgres.sh
trap stop_postgres EXIT
if start_postgres; then
  export FERROCHAT_REQUIRE_POSTGRES=1
else
  echo "!!! SKIPPED: could not install or start PostgreSQL; the store's PostgreSQL tests will not run !!!" >&2
fi
section "cargo test"
cargo test --workspace "${FEATURES[@]}" -q
section "interop: Hugging Face transformers"
cargo build -q -p ferrochat-cli "${FEATURES[@]}"
wait "$PYENV_PID" || cat target/pyenv-install.log >&2
if ensure_pyenv torch transformers; then
  "$PYENV/bin/python" tests/interop/hf_parity.py --ferrochat target/debug/ferrochat
  "$PYENV/bin/python" tests/interop/hf_import.py --ferrochat target/debug/ferrochat
else
  echo "!!! SKIPPED: could not install torch + transformers from PyPI; the Hugging Face parity check did not run !!!" >&2
fi
section "interop: the openai client, a 32-client streaming load, the chat page in Chromium"
tests/serve_checks.sh target/debug/ferrochat
section "interop: GGUF exports in llama.cpp"
if ensure_llama_cpp portable; then
  # a small mixture of experts (4 experts, top 2) on the same run's data, beside the
  # dense chat model
  moe=target/serve-checks/moe
  rm -rf "$moe"
  target/debug/ferrochat pretrain --data target/serve-checks/run/data --output "$moe" \
    --preset tiny --steps 40 --batch 4 --seq 64 --experts 4 --experts-per-token 2 --quiet >/dev/null
  "$PYENV/bin/python" tests/interop/gguf_check.py --ferrochat target/debug/ferrochat \
    --model target/serve-checks/run/chat --model "$moe"
else
  echo "!!! SKIPPED: could not build llama-cpp-python from PyPI; the GGUF check did not run !!!" >&2
fi
echo "all tests passed in $((SECONDS / 60))m$((SECONDS % 60))s"
