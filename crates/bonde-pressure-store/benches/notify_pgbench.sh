#!/usr/bin/env bash
# The cost of the NOTIFY in PgCallStore's commit (docs/storage.md): pgbench
# on commit.pgbench and commit_notify.pgbench, alternated RUNS times
# (default 3), synchronous_commit on, SECS (default 10) s each, with 1 client
# and with 16 clients (CLIENTS="1 16"), on a scratch database migrated with
# the store's CLI (then dropped). With several clients each commits its own
# call (its own row and leg ids, derived from pgbench's :client_id), so only
# the NOTIFY's commit-time lock can make them wait for each other. A session
# LISTENs during the whole run, as a replica's listener would.
#
#   PGHOST=127.0.0.1 PGUSER=postgres crates/bonde-pressure-store/benches/notify_pgbench.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
: "${PGHOST:=127.0.0.1}" "${PGPORT:=5432}" "${PGUSER:=postgres}" "${SECS:=10}" "${RUNS:=3}"
export PGHOST PGPORT PGUSER
db="bps_notify_$$"
tmp="$(mktemp -d)"
cli="${STORE_CLI:-cargo run -q -p bonde-pressure-store --bin bonde-pressure-store --}"
psql -q -d postgres -c "CREATE DATABASE $db"
cleanup() {
  [ -s "$tmp/listener.pid" ] && kill "$(cat "$tmp/listener.pid")" 2>/dev/null || true
  psql -q -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)"
  rm -rf "$tmp"
}
trap cleanup EXIT
$cli migrate --database-url "postgres://$PGUSER@$PGHOST:$PGPORT/$db"
# The listening session (it never reads: notifications queue for it).
( echo "$BASHPID" > "$tmp/listener.pid"; echo "LISTEN bonde_pressure_calls;"; exec sleep 100000 ) \
  2>/dev/null | psql -q -d "$db" >/dev/null 2>&1 &
# Per-client variants: row id and leg ids from :client_id.
a=CA0a1b2c3d4e5f60718293a4b5c6d7e8f9 b=CA1b2c3d4e5f60718293a4b5c6d7e8f90a
id="'00000000-0000-4000-8000-000000000001'"
for script in commit commit_notify; do
  sed -e "s/$id/('00000000-0000-4000-8000-' || lpad(:client_id::text, 12, '0'))::uuid/" \
      -e "s/'$a'/('$a' || :client_id::text)/g" -e "s/'$b'/('$b' || :client_id::text)/g" \
      "$here/$script.pgbench" > "$tmp/$script.pgbench"
done
setup() { # $1 clients: calls 0..$1-1 at version 0
  sed -e "s/$id/('00000000-0000-4000-8000-' || lpad(g::text, 12, '0'))::uuid/" \
      -e 's/^VALUES (/SELECT /' -e "s/, 0, now(), now())$/, 0, now(), now() FROM generate_series(0, $(($1 - 1))) g/" \
      "$here/commit_setup.sql" | psql -q -d "$db"
}
for clients in ${CLIENTS:-1 16}; do
  for run in $(seq "$RUNS"); do
    for script in commit commit_notify; do
      setup "$clients"
      printf 'clients %-3s run %s %-14s ' "$clients" "$run" "$script"
      pgbench -n -M prepared -D v=0 -f "$tmp/$script.pgbench" -c "$clients" -j 2 -T "$SECS" "$db" 2>&1 |
        awk '/^tps/ {tps=$3} /latency average/ {lat=$4} /failed/ {f=$0} END {printf "tps=%s latency=%s ms\n", tps, lat}'
    done
  done
done
