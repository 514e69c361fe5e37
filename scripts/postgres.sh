# Sourced by the test script: a throwaway PostgreSQL server on loopback for the feedback
# store's tests, installed from Debian's packages on first use.
#   start_postgres   # sets FERROCHAT_TEST_POSTGRES; returns 1 if it cannot start one
start_postgres() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  if [[ -z "$bin" || ! -x "$bin/postgres" ]]; then
    echo "installing Debian's postgresql (first run only)" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; } >&2 || return 1
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  fi
  PGDIR=$(mktemp -d /tmp/ferrochat-pg.XXXXXX)
  local port=$((20000 + RANDOM % 20000))
  local as=()
  if [[ $(id -u) == 0 ]]; then
    # the server refuses to run as root
    id postgres >/dev/null 2>&1 || useradd --system --home-dir "$PGDIR" postgres || return 1
    chown postgres "$PGDIR"
    as=(runuser -u postgres --)
  fi
  "${as[@]}" "$bin/initdb" -D "$PGDIR/data" -A trust -U ferrochat --no-sync >"$PGDIR/initdb.log" 2>&1 \
    || { cat "$PGDIR/initdb.log" >&2; return 1; }
  "${as[@]}" "$bin/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/server.log" -w \
    -o "-p $port -k $PGDIR -c listen_addresses=127.0.0.1 -c fsync=on" start >/dev/null \
    || { cat "$PGDIR/server.log" >&2; return 1; }
  PG_STOP=("${as[@]}" "$bin/pg_ctl" -D "$PGDIR/data" -m immediate stop)
  "$bin/createdb" -h 127.0.0.1 -p "$port" -U ferrochat ferrochat_test || return 1
  export FERROCHAT_TEST_POSTGRES="postgres://ferrochat@127.0.0.1:$port/ferrochat_test"
}
stop_postgres() {
  if [[ -n "${PG_STOP+x}" ]]; then "${PG_STOP[@]}" >/dev/null 2>&1 || true; rm -rf "$PGDIR"; fi
}
