#!/usr/bin/env bash
# End-to-end speed of speculative decoding in the server: lone greedy completions of N
# tokens against `ferrochat serve`, without and with `--draft`, alternating, and whether
# the texts are identical.
#   bench/serve_draft.sh --model DIR --draft DIR [--k 3] [--tokens 200] [--requests 5] [--rounds 2]
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="" DRAFT="" K=3 TOKENS=200 REQUESTS=5 ROUNDS=2 PORT=8411
while [[ $# -gt 0 ]]; do
  case "$1" in
    --model) MODEL=$2; shift 2;; --draft) DRAFT=$2; shift 2;; --k) K=$2; shift 2;;
    --tokens) TOKENS=$2; shift 2;; --requests) REQUESTS=$2; shift 2;; --rounds) ROUNDS=$2; shift 2;;
    *) echo "unknown option $1" >&2; exit 2;;
  esac
done
[[ -n "$MODEL" && -n "$DRAFT" ]] || { echo "--model DIR and --draft DIR are required" >&2; exit 2; }
scripts/build.sh -q
B=target/release/ferrochat
OUT=target/bench-serve-draft; rm -rf "$OUT"; mkdir -p "$OUT"
body="{\"model\":\"m\",\"prompt\":\"The capital of France is\",\"max_tokens\":$TOKENS,\"temperature\":0,\"ignore_eos\":true}"
for r in $(seq "$ROUNDS"); do
  for mode in plain draft; do
    extra=(); [[ $mode == draft ]] && extra=(--draft "$DRAFT" --draft-k "$K")
    $B serve --model "m=$MODEL" --port "$PORT" --no-db "${extra[@]}" 2>/dev/null &
    pid=$!
    for _ in $(seq 100); do curl -sf "localhost:$PORT/health" >/dev/null && break; sleep 0.2; done
    t0=$(date +%s.%N)
    for _ in $(seq "$REQUESTS"); do
      curl -sf "localhost:$PORT/v1/completions" -H 'content-type: application/json' -d "$body" >"$OUT/$mode.json"
    done
    t1=$(date +%s.%N)
    kill "$pid"; wait "$pid" 2>/dev/null || true
    python3 - "$OUT/$mode.json" "$t0" "$t1" "$REQUESTS" "$mode" "$r" <<'PY'
import json, sys
f, t0, t1, n, mode, r = sys.argv[1:]
toks = json.load(open(f))["usage"]["completion_tokens"]
print(f"round {r} {mode:5}: {int(n) * toks / (float(t1) - float(t0)):.1f} tokens/s")
PY
  done
done
python3 - "$OUT" <<'PY'
import json, sys
a, b = (json.load(open(f"{sys.argv[1]}/{m}.json"))["choices"][0]["text"] for m in ("plain", "draft"))
print("texts identical:", a == b)
PY
