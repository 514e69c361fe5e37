# Sourced by the test script: Open MPI and libclang (to build the `mpi` crate's
# bindings), from Debian's packages on first use, for the data-parallel tests.
#   ensure_mpi   # returns 1 if they cannot be installed
ensure_mpi() {
  if command -v mpirun >/dev/null && [[ -f /usr/lib/x86_64-linux-gnu/openmpi/include/mpi.h || -f /usr/include/mpi.h ]] \
     && ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1; then
    return 0
  fi
  echo "installing Debian's Open MPI and libclang (first run only)" >&2
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      openmpi-bin libopenmpi-dev libclang-dev; } >&2
}
