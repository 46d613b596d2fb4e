#!/usr/bin/env bash
# Load test of POST /process-job on loopback, bounded in time: wrk drives
# the real API (release build, rate limit off, durable commits, files on the
# local disk) with C connections for D seconds, then pgbench inserts single
# rows into a table shaped like `jobs` with the same C clients for D
# seconds on the same PostgreSQL: the database's own durable commit rate,
# the physical limit of a submission here. Prints both, the ratio, and the
# API's p50/p99; fails on any error under load.
#
# Then the floor: the same wrk against the lightest API this stack allows
# (api/examples/http_floor.rs: salvo reads the JSON, sqlx inserts pgbench's
# row with one durable commit, nothing else), and against the same server
# with no insert (HTTP alone), and with the inserts of concurrent requests
# batched into one statement and commit (what batching adds to the floor).
#
#   scripts/load-test.sh            LOAD_CONNECTIONS=16 LOAD_SECONDS=15
#
# LOAD_STORAGE_DIR=/dev/shm puts the file store on another file system,
# LOAD_STORAGE_URL=s3://... the documents on S3;
# LOAD_API_BIN=PATH runs that build of the API instead of the checkout's.
# Also prints the CPU time the API and PostgreSQL used per submission (the
# two share the machine's cores with wrk). LOAD_PROFILE=1 records the API
# with `perf record -e cpu-clock -g` during the run and prints the top of
# the report; LOAD_PROFILE=all records the whole machine and prints the
# share of each program, then the top of PostgreSQL's report. The perf
# data stays in LOAD_PROFILE_OUT if set.
#
# Needs PAPERHOOK_TEST_DATABASE_URL (a superuser URL) and CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_apt wrk postgresql-client

conns="${LOAD_CONNECTIONS:-16}"
secs="${LOAD_SECONDS:-15}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/paperhook-target}"
: "${PAPERHOOK_TEST_DATABASE_URL:?set PAPERHOOK_TEST_DATABASE_URL}"
log "building the API (release)"
fresh_stack load release
cargo build --release --locked --quiet -p paperhook-api --example http_floor
pids=()
cleanup() {
    kill "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
    drop_stack
    rm -rf "$storage_dir"
}
trap cleanup EXIT
loopback_api
# LOAD_STORAGE_DIR puts the file store elsewhere (another disk, a tmpfs).
storage_dir="${LOAD_STORAGE_DIR:-$work}/storage-$$"
# LOAD_STORAGE_URL=s3://BUCKET/PREFIX stores on S3 instead (with the
# PAPERHOOK_S3_* settings from the environment).
export PAPERHOOK_STORAGE_URL="${LOAD_STORAGE_URL:-file://$storage_dir}"
export PAPERHOOK_RATE_LIMIT_PER_SEC=0
export PAPERHOOK_DB_MAX_CONNECTIONS=$((conns + 4))
export RUST_LOG=warn
# LOAD_API_BIN runs another build of the API (to compare two builds in
# alternating runs on the same machine).
api_bin="${LOAD_API_BIN:-$bin/paperhook-api}"
"$api_bin" migrate >/dev/null
"$api_bin" serve > "$work/api.log" 2>&1 & pids+=($!)
wait_healthy
key=$(new_key "Load Co" 100000000)
template=$(new_template "$key")

# One submission: the 1-page example PDF as JSON with base64, as the
# product page shows.
python3 - "$template" > "$work/body.json" <<'PY'
import base64, json, sys
pdf = base64.b64encode(open("examples/invoice.pdf", "rb").read()).decode()
print(json.dumps({"template_id": sys.argv[1], "actual_image": pdf, "static_values": {"batch": 7}}))
PY
cat > "$work/submit.lua" <<LUA
wrk.method = "POST"
wrk.headers["x-auth"] = "$key"
wrk.headers["content-type"] = "application/json"
local f = io.open("$work/body.json", "r"); wrk.body = f:read("*a"); f:close()
done = function(summary, latency, requests)
  io.write(string.format("RESULT requests=%d non2xx=%d errors=%d p50_ms=%.2f p99_ms=%.2f\n",
    summary.requests, summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
LUA
log "wrk: $conns connections, ${secs}s against POST /process-job"
curl -sf -o /dev/null -H "x-auth: $key" -H 'content-type: application/json' --data @"$work/body.json" \
    "http://127.0.0.1:$port/process-job" || die "a single submission failed"
# CPU seconds (user + system) of the API, and of all PostgreSQL processes.
cpu_secs() {
    local api_pid=$1 tick
    tick=$(getconf CLK_TCK)
    awk -v t="$tick" '{print ($14 + $15) / t}' "/proc/$api_pid/stat"
    for p in $(pgrep -x postgres); do cat "/proc/$p/stat" 2>/dev/null; done |
        awk -v t="$tick" '{s += $14 + $15} END {print s / t}'
}
# Statements and commits the database ran, from its own statistics.
db_stats() {
    psql "$DATABASE_URL" -Atqc "select pg_stat_force_next_flush()" >/dev/null
    psql "$DATABASE_URL" -AtF' ' -qc "select xact_commit, tup_returned, tup_fetched, tup_inserted, tup_updated
        from pg_stat_database where datname = current_database()"
}
api_pid=${pids[0]}
read -r -d '' api0 pg0 < <(cpu_secs "$api_pid") || true
stats0=$(db_stats)
perf_data="${LOAD_PROFILE_OUT:-$work/perf.data}"
if [ "${LOAD_PROFILE:-}" = all ]; then
    perf record -q -a -e cpu-clock -g -o "$perf_data" -- sleep "$secs" 2>/dev/null &
    perf_pid=$!
elif [ -n "${LOAD_PROFILE:-}" ]; then
    perf record -q -e cpu-clock -g -p "$api_pid" -o "$perf_data" -- sleep "$secs" 2>/dev/null &
    perf_pid=$!
fi
# run_wrk PORT OUT: the load against http://127.0.0.1:PORT/process-job.
run_wrk() {
    wrk -t2 -c"$conns" -d"${secs}s" --timeout 10s -s "$work/submit.lua" "http://127.0.0.1:$1/process-job" | tee "$2"
}
run_wrk "$port" "$work/wrk.out"
read -r -d '' api1 pg1 < <(cpu_secs "$api_pid") || true
stats1=$(db_stats)
if [ "${LOAD_PROFILE:-}" = all ]; then
    wait "$perf_pid" || true
    perf report -q -i "$perf_data" --no-children -g none --sort comm 2>/dev/null | head -8 || true
    perf report -q -i "$perf_data" --comms postgres --children -g none --sort sym \
        --percent-limit 2 2>/dev/null | head -60 || true
elif [ -n "${LOAD_PROFILE:-}" ]; then
    wait "$perf_pid" || true
    perf report -q -i "$perf_data" --no-children -g none --sort dso 2>/dev/null | head -8 || true
    perf report -q -i "$perf_data" --children -g none --sort sym --percent-limit 3 2>/dev/null |
        head -60 || true
fi
result=$(grep '^RESULT' "$work/wrk.out")
rps=$(awk '/^Requests\/sec:/ {print $2}' "$work/wrk.out")
jobs=$(psql "$DATABASE_URL" -Atqc "select count(*) from jobs")

log "pgbench: $conns clients, ${secs}s of single-row inserts (durable commits)"
psql "$DATABASE_URL" -qc "create table load_jobs (like jobs including defaults)" >/dev/null
cat > "$work/insert.sql" <<'SQL'
INSERT INTO load_jobs (id, account_id, template_id, content_type, file_name, size_bytes, storage_key, static_values)
VALUES (gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), 'pdf', 'invoice.pdf', 985, 'documents/x/y/original', '{"batch": 7}');
SQL
pgbench -n -c "$conns" -j 2 -T "$secs" -f "$work/insert.sql" "$DATABASE_URL" > "$work/pgbench.out"
tps=$(awk '/^tps = / {print $3}' "$work/pgbench.out")

# floor_rps [--no-db|--batch]: submissions/s of the floor server under the same load.
floor_rps() {
    local floor_port out pid
    floor_port=$(free_port)
    out="$work/floor$*.out"
    "$CARGO_TARGET_DIR/release/examples/http_floor" "127.0.0.1:$floor_port" "$((conns + 4))" "$@" \
        > "$work/floor.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do
        curl -s -o /dev/null -H 'content-type: application/json' --data @"$work/body.json" \
            "http://127.0.0.1:$floor_port/process-job" && break
        sleep 0.1
    done
    log "wrk against the floor server $* ($conns connections, ${secs}s)" >&2
    run_wrk "$floor_port" "$out" >&2
    kill "$pid"; wait "$pid" 2>/dev/null || true
    grep -q 'non2xx=0 errors=0' "$out" || die "the floor server $* failed requests: $(grep RESULT "$out")"
    awk '/^Requests\/sec:/ {print $2}' "$out"
}
floor=$(floor_rps)
floor_batch=$(floor_rps --batch)
floor_http=$(floor_rps --no-db)

# The statements of one submission (the key lookup; the job and task
# insert, which checks the template, with the document when it is kept
# inline), run back to back by pgbench with the same clients: what the
# database alone allows for this API's submissions.
log "pgbench: $conns clients, ${secs}s of the submission's own statements"
account=$(psql "$DATABASE_URL" -Atqc "select account_id from templates where id = '$template'")
read -r prefix hash < <(psql "$DATABASE_URL" -AtF' ' -qc \
    "select prefix, encode(key_hash, 'hex') from api_keys where account_id = '$account'")
inline_cte=""
if [ "${PAPERHOOK_INLINE_DOCUMENT_MAX_BYTES:-65536}" -ge 985 ]; then
    inline_cte=", inline AS (INSERT INTO inline_documents (key, job_id, data)
    SELECT 'inline/' || account_id || '/' || id, id, decode(repeat('ab', 985), 'hex') FROM job)"
fi
cat > "$work/submission.sql" <<SQL
SELECT a.id, a.name, a.credits, a.created_at, k.id, k.key_hash, k.last_used_at
  FROM api_keys k JOIN accounts a ON a.id = k.account_id
  WHERE k.prefix = '$prefix' AND k.key_hash = '\\x$hash' AND k.revoked_at IS NULL;
WITH job AS (
    INSERT INTO jobs (id, account_id, template_id, content_type, file_name, size_bytes, storage_key, static_values)
    SELECT gen_random_uuid(), '$account', '$template', 'pdf', NULL, 985, 'documents/x/y', '{"batch": 7}'
    FROM templates WHERE id = '$template' AND account_id = '$account' AND deleted_at IS NULL
    RETURNING *
), task AS (INSERT INTO tasks (kind, ref_id) SELECT 'job', id FROM job)$inline_cte
SELECT * FROM job;
SQL
pgbench -n -M prepared -c "$conns" -j 2 -T "$secs" -f "$work/submission.sql" "$DATABASE_URL" > "$work/pgbench-submission.out"
statements_tps=$(awk '/^tps = / {print $3}' "$work/pgbench-submission.out")

python3 - "$rps" "$tps" "$result" "$jobs" "$conns" "$api0" "$api1" "$pg0" "$pg1" "$stats0" "$stats1" "$statements_tps" "$floor" "$floor_http" "$floor_batch" <<'PY'
import sys
rps, tps, result, jobs, conns = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
api0, api1, pg0, pg1 = map(float, sys.argv[6:10])
fields = dict(kv.split("=") for kv in result.split()[1:])
n = int(fields["requests"])
print(f"load test, {conns} connections: POST /process-job {rps:.0f} submissions/s "
      f"(p50 {float(fields['p50_ms']):.1f} ms, p99 {float(fields['p99_ms']):.1f} ms); "
      f"pgbench single-row inserts {tps:.0f} tps; ratio {rps / tps:.2f}")
print(f"CPU per submission: API {1e6 * (api1 - api0) / n:.0f} µs, PostgreSQL {1e6 * (pg1 - pg0) / n:.0f} µs")
names = ["commits", "rows scanned", "rows fetched", "rows inserted", "rows updated"]
delta = [b - a for a, b in zip(map(int, sys.argv[10].split()), map(int, sys.argv[11].split()))]
print("per submission: " + ", ".join(f"{name} {d / n:.2f}" for name, d in zip(names, delta)))
statements = float(sys.argv[12])
print(f"the submission's statements alone (pgbench): {statements:.0f}/s; "
      f"the API reaches {rps / statements:.2f} of that")
floor, floor_http, floor_batch = map(float, sys.argv[13:16])
print(f"floor (salvo + one sqlx insert per request, nothing else): {floor:.0f}/s, "
      f"ratio {floor / tps:.2f}; with batched inserts {floor_batch:.0f}/s, ratio {floor_batch / tps:.2f}; "
      f"HTTP alone, no insert: {floor_http:.0f}/s")
bad = int(fields["non2xx"]) + int(fields["errors"])
if bad:
    sys.exit(f"{bad} requests failed under load")
if jobs < int(fields["requests"]) - int(conns):
    sys.exit(f"only {jobs} jobs stored for {fields['requests']} answered requests")
PY
