#!/usr/bin/env bash
# Decode speed of a checkpoint in f32, q8_0 and q4_0: ours (`bench generate`) against
# llama.cpp (llama-cpp-python, built from PyPI) on the very GGUF files ours reads,
# alternating in one sitting; batch 1, greedy, medians of the rounds.
#   bench/compare_decode.sh --model DIR [--tokens 200] [--rounds 3]
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="" TOKENS=200 ROUNDS=3
while [[ $# -gt 0 ]]; do
  case "$1" in
    --model) MODEL=$2; shift 2;; --tokens) TOKENS=$2; shift 2;; --rounds) ROUNDS=$2; shift 2;;
    *) echo "unknown option $1" >&2; exit 2;;
  esac
done
[[ -n "$MODEL" ]] || { echo "--model DIR is required" >&2; exit 2; }
# llama.cpp built for this host's SIMD, in its own environment (the tests' build is portable).
PYENV="$(pwd)/target/pyenv-host"
source scripts/pyenv.sh
ensure_llama_cpp host
scripts/build.sh -q
B=target/release/ferrochat
OUT=target/bench-decode; rm -rf "$OUT"; mkdir -p "$OUT"
$B export gguf --model "$MODEL" --output "$OUT/f32.gguf" --type f32 >/dev/null
for q in q8_0 q4_0; do $B quantize --model "$MODEL" --output "$OUT/$q" --type "$q" >/dev/null; done
declare -A ours theirs
for r in $(seq "$ROUNDS"); do
  for q in f32 q8_0 q4_0; do
    dir="$OUT/$q"; file="$OUT/$q/model.gguf"
    [[ $q == f32 ]] && { dir="$MODEL"; file="$OUT/f32.gguf"; }
    o=$($B bench generate --model "$dir" --batch 1 --tokens "$TOKENS" --runs 1 2>/dev/null | tail -1 \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["decode_tokens_per_sec"])')
    t=$("$PYENV/bin/python" bench/llama_cpp_decode.py "$file" --tokens "$TOKENS" --runs 1 2>/dev/null \
      | tail -1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["decode_tokens_per_sec"])')
    ours[$q]+="$o "; theirs[$q]+="$t "
    printf 'round %s %-5s ours %6.0f  llama.cpp %6.0f tokens/s\n' "$r" "$q" "$o" "$t"
  done
done
for q in f32 q8_0 q4_0; do
  python3 - "$q" "${ours[$q]}" "${theirs[$q]}" <<'PY'
import statistics, sys
q = sys.argv[1]
o = statistics.median(float(x) for x in sys.argv[2].split())
t = statistics.median(float(x) for x in sys.argv[3].split())
print(f"median {q:5}: ours {o:.0f} tokens/s, llama.cpp {t:.0f} tokens/s, ratio {o / t:.2f}x")
PY
done
