#!/usr/bin/env bash
# PostgreSQL for agentkit-runtime's tests (the `postgres` feature).
#
#   scripts/install-postgres.sh           install the Debian `postgresql` package if missing
#   scripts/install-postgres.sh --start   also start a throwaway cluster on 127.0.0.1 (a free
#                                         port, a temp dir, owned by the `postgres` user when
#                                         run as root) and write its URL to
#                                         target/agentkit-postgres.url
#   scripts/install-postgres.sh --stop    stop that cluster and delete it
#
# The tests do not need --start: without AGENTKIT_PG_URL they start (and stop) a cluster of
# their own with the same binaries. To point them at the --start cluster:
#   export AGENTKIT_PG_URL="$(cat target/agentkit-postgres.url)"
set -euo pipefail
cd "$(dirname "$0")/.."

state=target/agentkit-postgres
url_file=target/agentkit-postgres.url

bindir() {
  if command -v pg_config >/dev/null && [ -x "$(pg_config --bindir)/initdb" ]; then
    pg_config --bindir
    return
  fi
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

if [ -z "$(bindir)" ] || [ ! -x "$(bindir)/initdb" ]; then
  echo "installing the Debian postgresql package"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq postgresql >/dev/null
  # The package may start a system cluster; the tests do not use it.
  (command -v pg_ctlcluster >/dev/null && pg_lsclusters -h 2>/dev/null | while read -r ver name _; do
     pg_ctlcluster "$ver" "$name" stop || true; done) || true
fi
bin="$(bindir)"
echo "postgresql binaries: $bin ($("$bin/postgres" --version))"

case "${1:-}" in
  --start)
    mkdir -p target
    if [ -f "$state/dir" ]; then
      echo "a cluster is already running: $(cat "$url_file")"
      exit 0
    fi
    dir="$(mktemp -d /tmp/agentkit-pg.XXXXXX)"
    chmod 755 "$dir"
    mkdir "$dir/data"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir/data"
    as_pg "$bin/initdb" -D "$dir/data" -A trust -U agentkit --no-sync -E UTF8 >/dev/null
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/data/server.log" -w \
      -o "-p $port -k $dir/data -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null
    mkdir -p "$state"
    echo "$dir" >"$state/dir"
    echo "postgres://agentkit@127.0.0.1:$port/postgres" >"$url_file"
    echo "started: $(cat "$url_file")"
    ;;
  --stop)
    if [ -f "$state/dir" ]; then
      dir="$(cat "$state/dir")"
      as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
      rm -rf "$dir" "$state" "$url_file"
      echo "stopped"
    fi
    ;;
  "") ;;
  *) echo "usage: $0 [--start|--stop]" >&2; exit 2 ;;
esac
