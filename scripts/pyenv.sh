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
# llama.cpp's Python binding, built from its PyPI source, only the library (no
# multimodal part, tools or examples), which halves the build (~5 min on 2 cores).
#   ensure_llama_cpp portable   # baseline x86-64 code (SSE2): runs on any machine. For
#                               # the tests: a host's `native` choice, or even ggml's
#                               # default set (SSE4.2, AVX2, BMI2...), can name
#                               # instructions a VM traps (seen: SIGILL in q8_0 on CI).
#   ensure_llama_cpp host       # SSE4.2/AVX/AVX2/BMI2/FMA/F16C where /proc/cpuinfo has them. For
#                               # the decode benchmark, in its own environment.
# The build's flags are kept beside it; another choice rebuilds.
ensure_llama_cpp() {
  local mode=${1:-portable} flags="-DGGML_NATIVE=OFF"
  local isa=(SSE42:sse4_2 AVX:avx AVX2:avx2 BMI2:bmi2 FMA:fma F16C:f16c)
  for pair in "${isa[@]}"; do
    local on=OFF
    if [[ $mode == host ]] && grep -qw "${pair#*:}" /proc/cpuinfo 2>/dev/null; then on=ON; fi
    flags+=" -DGGML_${pair%%:*}=$on"
  done
  flags+=" -DGGML_AVX512=OFF -DGGML_AVX_VNNI=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF"
  ensure_pyenv gguf safetensors numpy || return 1
  local stamp="$PYENV/llama-cpp-flags"
  if "$PYENV/bin/python" -c "import llama_cpp" 2>/dev/null && [[ "$(cat "$stamp" 2>/dev/null)" == "$flags" ]]; then
    return 0
  fi
  echo "building llama-cpp-python ($mode) into $PYENV (first run only, a few minutes)" >&2
  rm -f "$stamp"
  CMAKE_ARGS="$flags -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF" \
    "$PYENV/bin/pip" install -q --disable-pip-version-check --no-cache-dir --force-reinstall --no-deps \
    "llama-cpp-python==0.3.36" >&2 || return 1
  "$PYENV/bin/pip" install -q --disable-pip-version-check "llama-cpp-python==0.3.36" >&2 || return 1
  echo "$flags" >"$stamp"
}
