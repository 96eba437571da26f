#!/usr/bin/env bash
# Plain-SQL baseline for the commit benchmark (docs/storage.md):
# creates a scratch database, migrates it with the store's CLI, then runs
# pgbench on commit.pgbench (PgCallStore's single statement) and
# commit_multi.pgbench (the same work as a 5-statement transaction), with
# synchronous_commit on and off, one client, 10 s each; drops the database.
#
#   PGHOST=127.0.0.1 PGUSER=postgres crates/bonde-pressure-store/benches/pgbench.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
: "${PGHOST:=127.0.0.1}" "${PGPORT:=5432}" "${PGUSER:=postgres}"
export PGHOST PGPORT PGUSER
db="bps_pgbench_$$"
cli="${STORE_CLI:-cargo run -q -p bonde-pressure-store --bin bonde-pressure-store --}"
psql -q -d postgres -c "CREATE DATABASE $db"
trap 'psql -q -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)"' EXIT
$cli migrate --database-url "postgres://$PGUSER@$PGHOST:$PGPORT/$db"
for sync in on off; do
  for script in commit commit_multi; do
    psql -q -d "$db" -f "$here/commit_setup.sql"
    printf '%-13s synchronous_commit=%-3s ' "$script" "$sync"
    PGOPTIONS="-c synchronous_commit=$sync" \
      pgbench -n -M prepared -D v=0 -f "$here/$script.pgbench" -c 1 -T "${SECS:-10}" "$db" 2>&1 |
      awk '/^tps/ {tps=$3} /latency average/ {lat=$4} END {printf "tps=%s latency=%s ms\n", tps, lat}'
  done
done
