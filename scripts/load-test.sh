#!/usr/bin/env bash
# Load test of POST /process-job on loopback, bounded in time: wrk drives
# the real API (release build, rate limit off, durable commits, files on the
# local disk) with C connections for D seconds, then pgbench inserts single
# rows into a table shaped like `jobs` with the same C clients for D
# seconds on the same PostgreSQL: the database's own durable commit rate,
# the physical limit of a submission here. Prints both, the ratio, and the
# API's p50/p99; fails on any error under load.
#
#   scripts/load-test.sh            LOAD_CONNECTIONS=16 LOAD_SECONDS=15
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
pids=()
cleanup() {
    kill "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
    drop_stack
}
trap cleanup EXIT
loopback_api
export PAPERHOOK_STORAGE_URL="file://$work/storage"
export PAPERHOOK_RATE_LIMIT_PER_SEC=0
export PAPERHOOK_DB_MAX_CONNECTIONS=$((conns + 4))
export RUST_LOG=warn
"$bin/paperhook-api" migrate >/dev/null
"$bin/paperhook-api" serve > "$work/api.log" 2>&1 & pids+=($!)
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
wrk -t2 -c"$conns" -d"${secs}s" --timeout 10s -s "$work/submit.lua" "http://127.0.0.1:$port/process-job" | tee "$work/wrk.out"
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

python3 - "$rps" "$tps" "$result" "$jobs" "$conns" <<'PY'
import sys
rps, tps, result, jobs, conns = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
fields = dict(kv.split("=") for kv in result.split()[1:])
print(f"load test, {conns} connections: POST /process-job {rps:.0f} submissions/s "
      f"(p50 {float(fields['p50_ms']):.1f} ms, p99 {float(fields['p99_ms']):.1f} ms); "
      f"pgbench single-row inserts {tps:.0f} tps; ratio {rps / tps:.2f}")
bad = int(fields["non2xx"]) + int(fields["errors"])
if bad:
    sys.exit(f"{bad} requests failed under load")
if jobs < int(fields["requests"]) - int(conns):
    sys.exit(f"only {jobs} jobs stored for {fields['requests']} answered requests")
PY
