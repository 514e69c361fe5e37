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
# llama.cpp's Python binding, built from its PyPI source: for a portable AVX2 machine
# code (a host's `native` choice can pick instructions its VM does not allow), and only
# the library (no multimodal part, tools or examples), which halves the build (~5 min on
# 2 cores).
ensure_llama_cpp() {
  ensure_pyenv gguf safetensors numpy || return 1
  "$PYENV/bin/python" -c "import llama_cpp" 2>/dev/null && return 0
  echo "building llama-cpp-python into $PYENV (first run only, a few minutes)" >&2
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
-DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF" \
    "$PYENV/bin/pip" install -q --disable-pip-version-check "llama-cpp-python==0.3.36" >&2
}
