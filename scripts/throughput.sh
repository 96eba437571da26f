#!/usr/bin/env bash
# Throughput against the machine's ceilings (docs/performance.md, issue 14):
# wrk scenarios against the release server on PostgreSQL, and pgbench running
# the store's own SQL, alternated in the same rounds; prints a Markdown table
# of medians and the ratios.
#
#   scripts/throughput.sh                      # 3 rounds of 15 s runs
#   DURATION=5s scripts/throughput.sh          # a quick run
#
# Settings (environment): DURATION (Ns, default 15s), ROUNDS (3), CALLS
# (seeded calls, 10000), THREADS (wrk -t / pgbench -j, 2), CONNECTIONS
# (wrk -c / pgbench -c, 32), PORT (server, 18080), TWILIO_PORT (fake Twilio,
# 18765), PGHOST/PGPORT/PGUSER (127.0.0.1/5432/postgres, trust auth),
# PIN=0/1 runs PostgreSQL on CPU 0 and everything else on CPU 1 (restored on
# exit), BUILD=0 to skip `cargo build`, PROFILE=debug to smoke-test the script with
# debug binaries (not for figures), KEEP=1 to keep the work directory (request
# lists, wrk and pgbench outputs, server logs), SERVER_ENV="K=V …" adds server
# settings (e.g. SERVER_ENV="PG_LIVE_UPDATES=false DATABASE_MAX_CONNECTIONS=32").
#
# What it does:
# 1. builds the server and examples/loadgen.rs (release);
# 2. starts loadgen's fake Twilio API, creates a fresh database, starts the
#    server on it (real Twilio client pointed at the fake, relaxed rate
#    limits, no reconciliation), seeds CALLS calls through the API and writes
#    the request lists (loadgen --mode seed), then stops the server and adds
#    the table pgbench picks random calls from;
# 3. for each round, each scenario runs on a fresh copy of the seeded
#    database (CREATE DATABASE … TEMPLATE) with a freshly started server:
#    wrk on GET /healthz, GET /v1/phone/status/{id} (random calls), signed
#    status callbacks on random calls (each one a real commit while the list
#    lasts: 3 × CALLS callbacks), the same callbacks after 3 s of status
#    polls over every call (the pages' polling, which fills the server's call
#    cache: commits then skip the read), the same signed callback repeated on one
#    call, POST /v1/phone/dial/{id} (TwiML), the random callbacks again with
#    group commit off (PG_GROUP_COMMITS=false: the A/B); and pgbench on the store's SQL
#    for a callback that commits (callback.pgbench) and for a duplicate
#    (duplicate.pgbench: read + append);
# 4. prints the medians and ratios as Markdown, then stops everything it
#    started and drops its databases.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
here="$root/scripts/throughput"
: "${DURATION:=15s}" "${ROUNDS:=3}" "${CALLS:=10000}" "${THREADS:=2}" "${CONNECTIONS:=32}"
: "${PORT:=18080}" "${TWILIO_PORT:=18765}" "${BUILD:=1}" "${KEEP:=0}" "${PROFILE:=release}" "${SERVER_ENV:=}"
: "${PGHOST:=127.0.0.1}" "${PGPORT:=5432}" "${PGUSER:=postgres}"
export PGHOST PGPORT PGUSER
unset PGDATABASE PGOPTIONS

# psql, quiet (no NOTICE for DROP … IF EXISTS), stopping at the first error.
q() { PGOPTIONS="-c client_min_messages=warning" psql -q -v ON_ERROR_STOP=1 "$@"; }
die() {
  echo "throughput.sh: $*" >&2
  exit 1
}
[[ "$DURATION" =~ ^[0-9]+s$ ]] || die "DURATION must be seconds, like 15s (got $DURATION)"
secs="${DURATION%s}"
# Settings one scenario adds to the server's (see run_wrk).
scenario_env=""
for tool in wrk pgbench psql curl cargo; do
  command -v "$tool" >/dev/null || die "$tool not found"
done
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$PORT" "$TWILIO_PORT"; do
  if port_busy "$p"; then die "port $p is in use (set PORT / TWILIO_PORT)"; fi
done

work="$(mktemp -d "${TMPDIR:-/tmp}/throughput.XXXXXX")"
seed_db="bp_throughput_$$_seed"
run_db="bp_throughput_$$_run"
server_pid=""
fake_pid=""
token="loadgen-token"

stop_server() {
  if [[ -n "$server_pid" ]]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
  fi
}
cleanup() {
  local rc=$?
  stop_server
  if [[ -n "$fake_pid" ]]; then
    kill -TERM "$fake_pid" 2>/dev/null || true
    wait "$fake_pid" 2>/dev/null || true
  fi
  q -d postgres -c "DROP DATABASE IF EXISTS $run_db WITH (FORCE)" >/dev/null 2>&1 || true
  q -d postgres -c "DROP DATABASE IF EXISTS $seed_db WITH (FORCE)" >/dev/null 2>&1 || true
  unpin_postgres
  if [[ "$KEEP" == 1 || $rc -ne 0 ]]; then
    echo "work directory kept: $work" >&2
  else
    rm -rf "$work"
  fi
}
# PIN="PG_CPUS/CLIENT_CPUS" (e.g. PIN=0/1): PostgreSQL's processes on
# PG_CPUS, the server, wrk, pgbench and loadgen on CLIENT_CPUS, so that the
# service's CPU does not come out of the database's (as in a deployment,
# where PostgreSQL has its own cores or host). PostgreSQL must run on this
# machine; its affinity is restored on exit.
pin=()
pg_affinity=""
pg_pm=""
pin_postgres() {
  local pg_cpus="${PIN%/*}" client_cpus="${PIN#*/}" p
  [[ "$PIN" == */* && -n "$pg_cpus" && -n "$client_cpus" ]] || die "PIN must be PG_CPUS/CLIENT_CPUS, like 0/1"
  command -v taskset >/dev/null || die "taskset not found"
  local pm
  pm="$(head -n1 "$(q -Atd postgres -c 'SHOW data_directory')/postmaster.pid")" || die "PIN: postmaster.pid not readable"
  pg_affinity="$(taskset -pc "$pm" | sed 's/.*: //')"
  # This cluster's postmaster and its children only (backends forked later
  # inherit the postmaster's affinity); one that exits meanwhile is fine.
  for p in "$pm" $(pgrep -P "$pm"); do taskset -apc "$pg_cpus" "$p" >/dev/null 2>&1 || true; done
  pg_pm="$pm"
  pin=(taskset -c "$client_cpus")
}
unpin_postgres() {
  local p
  if [[ -n "$pg_affinity" ]]; then
    for p in "$pg_pm" $(pgrep -P "$pg_pm"); do taskset -apc "$pg_affinity" "$p" >/dev/null 2>&1 || true; done
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ -n "${PIN:-}" ]]; then pin_postgres; fi

case "$PROFILE" in
  release) profile_flag=--release ;;
  debug) profile_flag= ;;
  *) die "PROFILE must be release or debug" ;;
esac
if [[ "$BUILD" == 1 ]]; then
  (cd "$root" && cargo build -q $profile_flag -p bonde-pressure-http --bin bonde-pressure --example loadgen)
fi
target_dir="${CARGO_TARGET_DIR:-$root/target}"
bin="$target_dir/$PROFILE/bonde-pressure"
loadgen="$target_dir/$PROFILE/examples/loadgen"
[[ -x "$bin" && -x "$loadgen" ]] || die "$PROFILE binaries missing (run without BUILD=0)"

# The server's whole configuration: nothing from the caller's environment,
# and no .env (it runs in the work directory).
start_server() {
  local db="$1"
  (cd "$work" && exec env -i PATH="$PATH" \
    DATABASE_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$db" \
    TWILIO_ACCOUNT_SID=AC00000000000000000000000000000000 TWILIO_AUTH_TOKEN="$token" \
    TWILIO_PHONE_NUMBER=+5511999990000 TWILIO_API_BASE="http://127.0.0.1:$TWILIO_PORT" \
    BASE_URL="http://127.0.0.1:$PORT" HOST=127.0.0.1 PORT="$PORT" LOG_LEVEL=warn \
    RECONCILE_INTERVAL_SECS=0 RATE_LIMIT_PER_IP=1000000/s RATE_LIMIT_PER_ACTIVIST=1000000/s \
    RATE_LIMIT_PER_TARGET=1000000/s ACTIVIST_CALLS_PER_DAY=0 SHUTDOWN_GRACE_SECS=2 \
    DO_NOT_CALL_HASH_KEY=throughput-benchmark-key \
    $SERVER_ENV $scenario_env \
    ${pin[@]+"${pin[@]}"} "$bin") >>"$work/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 300); do
    if curl -sf -o /dev/null "http://127.0.0.1:$PORT/readyz"; then return 0; fi
    kill -0 "$server_pid" 2>/dev/null || die "server exited; see $work/server.log"
    sleep 0.1
  done
  die "server not ready after 30 s; see $work/server.log"
}

fresh_copy() {
  q -d postgres -c "DROP DATABASE IF EXISTS $run_db WITH (FORCE)" >/dev/null
  q -d postgres -c "CREATE DATABASE $run_db TEMPLATE $seed_db" >/dev/null
}

# --- seed -------------------------------------------------------------------
${pin[@]+"${pin[@]}"} "$loadgen" --mode fake-twilio --fake-twilio "127.0.0.1:$TWILIO_PORT" >"$work/fake.log" 2>&1 &
fake_pid=$!
q -d postgres -c "CREATE DATABASE $seed_db" >/dev/null
start_server "$seed_db"
echo "seeding $CALLS calls…" >&2
${pin[@]+"${pin[@]}"} "$loadgen" --mode seed --calls "$CALLS" --concurrency "$CONNECTIONS" \
  --server "http://127.0.0.1:$PORT" --auth-token "$token" --out "$work/requests" >&2
stop_server
q -d "$seed_db" >/dev/null <<SQL
CREATE TABLE throughput_calls (n int PRIMARY KEY, id uuid NOT NULL, sid text NOT NULL);
\copy throughput_calls FROM '$work/requests/calls.tsv'
VACUUM ANALYZE;
SQL

# --- rounds -----------------------------------------------------------------
results="$work/results.txt" # scenario round rps p99_ms non2xx s503
: >"$results"
loads=()
random_sent=0
run_wrk() {
  local round="$1" scenario="$2" out="$work/r$1-$2.wrk" list="$2"
  fresh_copy
  # callback_single: callback_random's list with group commit off (the A/B).
  if [[ "$scenario" == callback_single ]]; then scenario_env="PG_GROUP_COMMITS=false" list=callback_random; fi
  start_server "$run_db"
  scenario_env=""
  if [[ "$scenario" == callback_warm ]]; then
    # The calls' pages poll their status (every 2 s in the widget), which
    # puts each call in the server's cache: 3 s of the status list, which
    # holds every seeded call, before the same callbacks as callback_random.
    ${pin[@]+"${pin[@]}"} wrk -t"$THREADS" -c"$CONNECTIONS" -d3s -s "$here/requests.lua" \
      "http://127.0.0.1:$PORT" -- "$work/requests/status.req" "$THREADS" >"$out.warm" 2>&1
    list=callback_random
  fi
  ${pin[@]+"${pin[@]}"} wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" -s "$here/requests.lua" \
    "http://127.0.0.1:$PORT" -- "$work/requests/$list.req" "$THREADS" >"$out" 2>&1
  stop_server
  local line
  line="$(grep '^RESULT ' "$out")" || die "no RESULT from wrk; see $out"
  local v
  v() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $line"; }
  if [[ "$scenario" == callback_random || "$scenario" == callback_warm || "$scenario" == callback_single ]]; then random_sent=$(($(v requests) > random_sent ? $(v requests) : random_sent)); fi
  echo "$scenario $round $(v rps) $(awk -v us="$(v p99_us)" 'BEGIN {printf "%.1f", us / 1000}') \
$(($(v non2xx) + $(v socket_errors))) $(v s503)" >>"$results"
}
run_pgbench() {
  local round="$1" scenario="$2" script="$3" prefix="$work/r$1-$2"
  fresh_copy
  (cd "$work" && ${pin[@]+"${pin[@]}"} pgbench -n -M prepared -c "$CONNECTIONS" -j "$THREADS" -T "$secs" \
    -D ncalls="$CALLS" -f "$here/$script" -l --log-prefix="$prefix.log" "$run_db") \
    >"$prefix.out" 2>&1 || die "pgbench failed; see $prefix.out"
  local tps failed p99
  tps="$(awk '/^tps = / {print $3; exit}' "$prefix.out")"
  failed="$(awk '/number of failed transactions/ {print $5; exit}' "$prefix.out")"
  p99="$(cat "$prefix".log.* | awk '{print $3}' | sort -n |
    awk '{a[NR] = $1} END {i = int(NR * 0.99 + 0.5); if (i < 1) i = 1; printf "%.1f", a[i] / 1000}')"
  rm -f "$prefix".log.*
  echo "$scenario $round $tps $p99 ${failed:-0} 0" >>"$results"
}

for round in $(seq 1 "$ROUNDS"); do
  loads+=("$(cut -d' ' -f1-3 /proc/loadavg)")
  echo "round $round of $ROUNDS (load average ${loads[-1]})…" >&2
  run_wrk "$round" healthz
  run_wrk "$round" status
  run_wrk "$round" callback_random
  run_pgbench "$round" pg_commit callback.pgbench
  run_wrk "$round" callback_single
  run_wrk "$round" callback_warm
  run_wrk "$round" callback_repeat
  run_pgbench "$round" pg_append duplicate.pgbench
  run_wrk "$round" dial
done
loads+=("$(cut -d' ' -f1-3 /proc/loadavg)")
kill -TERM "$fake_pid" 2>/dev/null || true
wait "$fake_pid" 2>/dev/null || true
fake_pid=""

# --- report -----------------------------------------------------------------
median() { sort -g | awk '{a[NR] = $1} END {if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
col() { awk -v s="$1" -v c="$2" '$1 == s {print $c}' "$results"; }
runs() { col "$1" 3 | awk '{printf "%s%.0f", (NR > 1 ? ", " : ""), $1}'; }
sum() { col "$1" "$2" | awk '{t += $1} END {print t + 0}'; }
row() {
  printf '| %s | %.0f (%s) | %s ms | %s | %s |\n' "$2" "$(col "$1" 3 | median)" "$(runs "$1")" \
    "$(col "$1" 4 | median)" "$(sum "$1" 5)" "$(sum "$1" 6)"
}
# median of the per-round ratios a/b, and the ratios themselves
ratio() {
  local rs
  rs="$(join <(awk -v s="$1" '$1 == s {print $2, $3}' "$results" | sort) \
    <(awk -v s="$2" '$1 == s {print $2, $3}' "$results" | sort) | awk '{printf "%.2f\n", $2 / $3}')"
  printf '%.2f (%s)' "$(median <<<"$rs")" "$(paste -sd, <<<"$rs" | sed 's/,/, /g')"
}

echo
echo "Measured $(date -u +%Y-%m-%d) with $PROFILE binaries at $(git -C "$root" rev-parse --short HEAD)$(git -C "$root" diff --quiet HEAD -- crates examples || echo ' (with uncommitted changes)'):" \
  "$ROUNDS rounds, wrk -t$THREADS -c$CONNECTIONS -d$DURATION, pgbench -M prepared -c $CONNECTIONS -j $THREADS -T $secs," \
  "$CALLS seeded calls, $(nproc) cores${PIN:+ (PostgreSQL pinned to CPU ${PIN%/*}, the server, wrk and pgbench to CPU ${PIN#*/})}, load average (1/5/15 min) at each round's start and at the end: $(printf '%s; ' "${loads[@]}" | sed 's/; $//')."
echo
echo "| scenario | req/s or tps: median (runs) | p99 (median) | non-2xx / failed (all runs) | of which 503 |"
echo "|---|---|---|---|---|"
row healthz '`GET /healthz`'
row status '`GET /v1/phone/status/{id}` (random calls)'
row callback_random 'status-callback on random calls'
row pg_commit 'pgbench: the store'"'"'s read + commit (`callback.pgbench`)'
row callback_single 'status-callback on random calls, group commit off (`PG_GROUP_COMMITS=false`)'
row callback_warm 'status-callback on random calls, cache warmed by the pages'"'"' polling'
row callback_repeat 'the same callback repeated on one call'
row pg_append 'pgbench: the store'"'"'s read + append (`duplicate.pgbench`)'
row dial '`POST /v1/phone/dial/{id}` (TwiML)'
echo
echo "| ratio | median of the rounds' ratios (per round) |"
echo "|---|---|"
echo "| status-callback on random calls (group commit on) / pgbench read + commit of one callback (goal ≥ 0.8) | $(ratio callback_random pg_commit) |"
echo "| status-callback, warm cache (group commit on) / pgbench read + commit of one callback (goal ≥ 0.8) | $(ratio callback_warm pg_commit) |"
echo "| status-callback, group commit off / pgbench read + commit of one callback | $(ratio callback_single pg_commit) |"
echo "| repeated callback / pgbench read + append | $(ratio callback_repeat pg_append) |"
echo "| repeated callback / callbacks on random calls (goal ≈ 1) | $(ratio callback_repeat callback_random) |"
echo "| \`GET /status\` / \`GET /healthz\` (goal ≥ 0.5) | $(ratio status healthz) |"
echo
if ((random_sent > 3 * CALLS)); then
  echo "Note: a random-callback run sent $random_sent callbacks, more than the list's $((3 * CALLS)) distinct" \
    "ones: the rest repeated known facts (append only). Raise CALLS to keep every callback a commit."
else
  echo "Every random callback was a real commit (at most $random_sent sent per run, list of $((3 * CALLS)))."
fi
echo "pgbench runs the store's SQL for one callback per transaction (the read, then the single-call commit statement):" \
  "the ceiling of a server that reads and commits each callback on its own. The server sends less SQL per callback:" \
  "no read when the call is cached, and, under load, one grouped statement for several calls' commits (PG_GROUP_COMMITS;" \
  "the group-commit-off row is the same server with one statement per commit)."
echo "Fake Twilio: $(grep 'fake Twilio requests' "$work/fake.log" || echo 'no report') (seeding makes $CALLS activist calls)."
