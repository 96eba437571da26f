#!/usr/bin/env bash
# The cost of the NOTIFY in PgCallStore's commit (docs/storage.md): pgbench
# on commit.pgbench and commit_notify.pgbench, alternated RUNS times (default
# 3), one client, synchronous_commit on, 10 s each, on a scratch database
# migrated with the store's CLI (then dropped). A listener is attached
# during the NOTIFY runs (psql LISTEN in the background), as in production.
#
#   PGHOST=127.0.0.1 PGUSER=postgres crates/bonde-pressure-store/benches/notify_pgbench.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
: "${PGHOST:=127.0.0.1}" "${PGPORT:=5432}" "${PGUSER:=postgres}"
export PGHOST PGPORT PGUSER
db="bps_notify_$$"
cli="${STORE_CLI:-cargo run -q -p bonde-pressure-store --bin bonde-pressure-store --}"
psql -q -d postgres -c "CREATE DATABASE $db"
listener=""
trap '[ -n "$listener" ] && kill $listener 2>/dev/null; psql -q -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)"' EXIT
$cli migrate --database-url "postgres://$PGUSER@$PGHOST:$PGPORT/$db"
# A session that LISTENs for the whole run (it never reads: the server
# queues the notifications for it, as for a replica between two reads).
(echo "LISTEN bonde_pressure_calls;"; sleep 100000) | psql -q -d "$db" >/dev/null &
listener=$!
for run in $(seq "${RUNS:-3}"); do
  for script in commit commit_notify; do
    psql -q -d "$db" -f "$here/commit_setup.sql"
    printf 'run %s %-14s ' "$run" "$script"
    pgbench -n -M prepared -D v=0 -f "$here/$script.pgbench" -c 1 -T "${SECS:-10}" "$db" 2>&1 |
      awk '/^tps/ {tps=$3} /latency average/ {lat=$4} END {printf "tps=%s latency=%s ms\n", tps, lat}'
  done
done
