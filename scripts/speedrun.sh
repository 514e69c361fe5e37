#!/usr/bin/env bash
# Installs what ferrochat needs, builds it, and runs the whole pipeline on the
# built-in world into runs/speedrun/ (extra arguments go to `ferrochat speedrun`).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null; then
  echo "installing the Rust toolchain (rustup)" >&2
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  source "$HOME/.cargo/env"
fi
if ! command -v cc >/dev/null; then
  echo "installing a C compiler (needed by a few dependencies)" >&2
  if command -v apt-get >/dev/null; then
    ${SUDO:-$( [[ $EUID -ne 0 ]] && echo sudo )} apt-get install -y build-essential
  fi
fi
scripts/build.sh
exec target/release/ferrochat speedrun "$@"
