#!/usr/bin/env bash
# ferrochat's training step against PyTorch eager training Hugging Face's
# LlamaForCausalLM built from the same config.json, back to back in one session.
#   bench/compare_train.sh [--preset small] [--batch 8] [--seq 256] [--rounds 3]
set -euo pipefail
cd "$(dirname "$0")/.."
PRESET=small BATCH=8 SEQ=256 ROUNDS=3 STEPS=10
while [[ $# -gt 0 ]]; do
  case "$1" in
    --preset) PRESET=$2; shift 2;; --batch) BATCH=$2; shift 2;; --seq) SEQ=$2; shift 2;;
    --rounds) ROUNDS=$2; shift 2;; --steps) STEPS=$2; shift 2;;
    *) echo "unknown option $1" >&2; exit 2;;
  esac
done
source scripts/pyenv.sh
ensure_pyenv torch transformers
scripts/build.sh -q
OUT=target/bench-train; mkdir -p "$OUT"
# field JSON NAME: one field of a one-line JSON result
field() { echo "$1" | "$PYENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$2"; }
ours=(); theirs=(); peak_ours=(); peak_theirs=()
for r in $(seq "$ROUNDS"); do
  o=$(target/release/ferrochat bench train --preset "$PRESET" --batch "$BATCH" --seq "$SEQ" --steps "$STEPS" --output "$OUT" | tail -1)
  t=$("$PYENV/bin/python" bench/torch_train.py "$OUT" --batch "$BATCH" --seq "$SEQ" --steps "$STEPS" | tail -1)
  ours+=("$(field "$o" tokens_per_sec)")
  theirs+=("$(field "$t" tokens_per_sec)")
  peak_ours+=("$(field "$o" matmul_peak_gflops)")
  peak_theirs+=("$(field "$t" matmul_peak_gflops)")
  echo "round $r: ferrochat ${ours[-1]} tokens/s, pytorch ${theirs[-1]} tokens/s"
done
"$PYENV/bin/python" - "${ours[*]}" "${theirs[*]}" "${peak_ours[*]}" "${peak_theirs[*]}" <<'PY'
import statistics, sys
o, t, po, pt = ([float(x) for x in a.split()] for a in sys.argv[1:5])
mo, mt = statistics.median(o), statistics.median(t)
print(f"median: ferrochat {mo:.0f} tokens/s, PyTorch {mt:.0f} tokens/s, ratio {mo/mt:.2f}x")
# the matmul alone, on the same shapes: when ours is faster there and the step is not,
# the difference lies outside the matrix products
mpo, mpt = statistics.median(po), statistics.median(pt)
print(f"f32 matmul peak on the model's shapes: ferrochat {mpo:.0f} GFLOP/s, "
      f"PyTorch {mpt:.0f} GFLOP/s, ratio {mpo/mpt:.2f}x")
PY
