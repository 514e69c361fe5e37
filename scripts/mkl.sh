#!/usr/bin/env bash
# Fetches Intel MKL's static libraries (the three the `mkl` feature links: the LP64
# interface, the sequential threading layer, the core) from PyPI's mkl-static wheel
# into target/mkl/ and prints that folder. Linux x86-64 only; exits 1 elsewhere or
# when the download fails, so callers can build without it.
#   FERROCHAT_MKL_DIR=$(scripts/mkl.sh) cargo build --release -p ferrochat-cli --features mkl
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="$(pwd)/target/mkl"
VERSION=2024.2.2
LIBS=(libmkl_intel_lp64.a libmkl_sequential.a libmkl_core.a)
have() { for l in "${LIBS[@]}"; do [[ -f "$DIR/$l" ]] || return 1; done; }
if have; then echo "$DIR"; exit 0; fi
if [[ "$(uname -s)-$(uname -m)" != Linux-x86_64 ]]; then
  echo "mkl.sh: Intel MKL is for Linux on x86-64; this is $(uname -s) $(uname -m)" >&2
  exit 1
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
echo "mkl.sh: downloading mkl-static $VERSION from PyPI (about 210 MB, first run only)" >&2
python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
  --platform manylinux1_x86_64 --python-version 3 --dest "$tmp" "mkl-static==$VERSION" >&2 || {
  echo "mkl.sh: could not download mkl-static from PyPI" >&2; exit 1; }
mkdir -p "$DIR"
python3 - "$tmp"/mkl_static-*.whl "$DIR" "${LIBS[@]}" <<'PY'
import os, sys, zipfile
wheel, out, libs = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(wheel) as z:
    members = {os.path.basename(n): n for n in z.namelist() if n.endswith(".a")}
    for lib in libs:
        if lib not in members:
            sys.exit(f"mkl.sh: {wheel} has no {lib}")
        # written beside, then renamed: a half-written archive is never taken for a whole one
        part = os.path.join(out, lib + ".part")
        with z.open(members[lib]) as src, open(part, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        os.replace(part, os.path.join(out, lib))
PY
have || { echo "mkl.sh: the libraries did not arrive in $DIR" >&2; exit 1; }
echo "$DIR"
