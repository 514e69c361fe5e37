# Sourced by test and benchmark scripts: a Python virtual environment under target/
# with the packages a check needs, installed from PyPI on first use.
#   ensure_pyenv torch transformers   # sets PYENV; returns 1 if it cannot be installed
PYENV="${PYENV:-$(pwd)/target/pyenv}"
ensure_pyenv() {
  local want=("$@")
  if [[ ! -x "$PYENV/bin/python" ]]; then
    python3 -m venv "$PYENV" || return 1
  fi
  local missing=()
  for p in "${want[@]}"; do
    "$PYENV/bin/python" -c "import ${p//-/_}" 2>/dev/null || missing+=("$p")
  done
  if [[ ${#missing[@]} -gt 0 ]]; then
    echo "installing ${missing[*]} into $PYENV (first run only)" >&2
    "$PYENV/bin/pip" install -q --disable-pip-version-check "${missing[@]}" >&2 || return 1
  fi
}
