#!/usr/bin/env bash
# `ferrochat serve` against real outside clients on loopback: the official `openai` Python
# client (from PyPI; with a 32-client streaming load), a 20-second soak of 64 clients
# (hang-ups mid-stream, ratings, memory measured), and Debian's Chromium driving the chat
# page through playwright-core (from npm), and schemathesis (from PyPI) fuzzing the API from
# its own openapi.json. Each installs itself on first use; one
# that cannot be installed is skipped with a loud message.
#   tests/serve_checks.sh target/debug/ferrochat
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$(realpath "${1:-target/debug/ferrochat}")"
WORK="$(pwd)/target/serve-checks"
rm -rf "$WORK"
mkdir -p "$WORK"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

echo "-- a chat model to serve (the quick speedrun)"
"$BIN" speedrun --quick --quiet --output "$WORK/run" >"$WORK/speedrun.log" 2>&1 \
  || { cat "$WORK/speedrun.log"; exit 1; }

# start_server NAME ARGS...: runs `ferrochat serve` on a free port; sets ADDR
start_server() {
  local name=$1
  shift
  "$BIN" serve --port 0 --model "chat=$WORK/run/chat" "$@" 2>"$WORK/$name.log" &
  PIDS+=($!)
  for _ in $(seq 1 300); do
    ADDR=$(sed -n 's|^listening on http://\([^ ]*\).*|\1|p' "$WORK/$name.log")
    [[ -n "$ADDR" ]] && return 0
    kill -0 "${PIDS[-1]}" 2>/dev/null || break
    sleep 0.1
  done
  echo "server $name did not start:" >&2
  cat "$WORK/$name.log" >&2
  return 1
}

source scripts/pyenv.sh
if ensure_pyenv openai httpx; then
  start_server keyed --db "$WORK/keyed.db" --api-key sk-check
  "$PYENV/bin/python" tests/interop/openai_client.py --base-url "http://$ADDR" --api-key sk-check
  start_server soak --db "$WORK/soak.db"
  "$PYENV/bin/python" tests/interop/soak.py --base-url "http://$ADDR" --pid "${PIDS[-1]}" \
    --db "$WORK/soak.db" --clients 64 --seconds 20
else
  echo "!!! SKIPPED: could not install the openai client and httpx from PyPI; the OpenAI client check and the soak did not run !!!" >&2
fi

if ensure_pyenv schemathesis; then
  # the API fuzzed from its own description: no input may cause a server error, and every
  # answer must match the documented shapes (a fixed seed keeps runs comparable)
  start_server fuzz --db "$WORK/fuzz.db"
  "$PYENV/bin/schemathesis" run "http://$ADDR/openapi.json" --seed 1 -n 30 --request-timeout 30 \
    -c not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance
else
  echo "!!! SKIPPED: could not install schemathesis from PyPI; the API fuzzing did not run !!!" >&2
fi

browser_ready() {
  if ! command -v chromium >/dev/null; then
    echo "installing Debian's chromium (first run only)" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >&2 || return 1
  fi
  if [[ ! -d tests/browser/node_modules/playwright-core ]]; then
    (cd tests/browser && npm ci --no-audit --no-fund --silent) >&2 || return 1
  fi
}
if browser_ready; then
  start_server page --db "$WORK/page.db"
  node tests/browser/chat_page.mjs "http://$ADDR" "$WORK/page.db"
else
  echo "!!! SKIPPED: could not install chromium or playwright-core; the browser test did not run !!!" >&2
fi
