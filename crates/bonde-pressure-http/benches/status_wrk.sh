#!/usr/bin/env bash
# GET /v1/phone/status/{id} against the same server's GET /healthz, with wrk
# (docs/performance.md). Creates a scratch PostgreSQL database, starts the
# release server on it (simulated telephony, rate limits off, no
# reconciliation), seeds 10,000 calls with SQL (copies of
# crates/bonde-pressure-store/benches/commit_setup.sql's call, random ids),
# then alternates wrk on /healthz and on random status ids, RUNS times each;
# drops the database.
#
#   cargo build --release -p bonde-pressure-http --bin bonde-pressure
#   PGHOST=127.0.0.1 PGUSER=postgres crates/bonde-pressure-http/benches/status_wrk.sh
#
# STATUS_CACHE_SIZE=0 measures without the status cache; PG_LIVE_UPDATES and
# STATUS_CACHE_MAX_AGE_MS are passed through too. WRK_ARGS defaults to "-t2 -c32 -d15s", RUNS to 3.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
: "${PGHOST:=127.0.0.1}" "${PGPORT:=5432}" "${PGUSER:=postgres}"
export PGHOST PGPORT PGUSER
: "${WRK_ARGS:=-t2 -c32 -d15s}" "${RUNS:=3}" "${PORT:=8000}"
db="bps_wrk_$$"
ids="$(mktemp)"
lua="$(mktemp --suffix=.lua)"
health="$(mktemp --suffix=.lua)"
psql -q -d postgres -c "CREATE DATABASE $db"
server=""
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null || true
  psql -q -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)"
  rm -f "$ids" "$lua" "$health"
}
trap cleanup EXIT
env -i PATH="$PATH" DATABASE_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$db" HOST=127.0.0.1 PORT="$PORT" \
  LOG_LEVEL=warn RECONCILE_INTERVAL_SECS=0 RATE_LIMIT_PER_IP=off RATE_LIMIT_PER_ACTIVIST=off \
  RATE_LIMIT_PER_TARGET=off STATUS_CACHE_SIZE="${STATUS_CACHE_SIZE:-100000}" \
  PG_LIVE_UPDATES="${PG_LIVE_UPDATES:-true}" STATUS_CACHE_MAX_AGE_MS="${STATUS_CACHE_MAX_AGE_MS:-10000}" \
  "${BIN:-$root/target/release/bonde-pressure}" 2>/dev/null &
server=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
# 10,000 calls: the commit benchmark's connected call with random ids.
sed -e "s/'00000000-0000-4000-8000-000000000001'/gen_random_uuid()/" \
    -e 's/^VALUES (/SELECT /' -e "s/, 0, now(), now())$/, 0, now(), now() FROM generate_series(1, 10000)/" \
    -e '/^ON CONFLICT/d' "$root/crates/bonde-pressure-store/benches/commit_setup.sql" | psql -q -d "$db"
psql -qAt -d "$db" -c "SELECT id FROM phone_calls" > "$ids"
cat > "$lua" <<LUA
local ids = {}
for line in io.lines("$ids") do ids[#ids + 1] = line end
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/v1/phone/status/" .. ids[math.random(#ids)])
end
LUA
# /healthz through a request function too, so wrk spends the same on both.
cat > "$health" <<LUA
request = function() return wrk.format("GET", "/healthz") end
LUA
echo "calls seeded: $(wc -l < "$ids"); wrk $WRK_ARGS; STATUS_CACHE_SIZE=${STATUS_CACHE_SIZE:-100000}"
for run in $(seq "$RUNS"); do
  for target in healthz status; do
    if [ "$target" = healthz ]; then
      out=$(wrk $WRK_ARGS --latency -s "$health" "http://127.0.0.1:$PORT")
    else
      out=$(wrk $WRK_ARGS --latency -s "$lua" "http://127.0.0.1:$PORT")
    fi
    echo "$out" | awk -v run="$run" -v t="$target" '
      /Requests\/sec/ {rps=$2} / 99%/ {p99=$2} /Non-2xx/ {bad=$NF}
      END {printf "run %s %-8s %10s req/s  p99 %-8s non-2xx %s\n", run, t, rps, p99, (bad == "" ? 0 : bad)}'
  done
done
