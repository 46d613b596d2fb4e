#!/usr/bin/env bash
# Browser tests of the dashboard: starts the API (and a worker, when there
# is one) on a fresh database and a temporary file store, then drives
# Debian's Chromium with Playwright. Called by scripts/test.sh; needs
# PAPERHOOK_TEST_DATABASE_URL (a superuser URL) and CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_apt chromium
command -v npm >/dev/null || ensure_apt nodejs npm
[ -d e2e/node_modules/playwright-core ] || (cd e2e && npm ci --no-audit --no-fund --loglevel=error)

fresh_stack e2e
loopback_api
export PAPERHOOK_STORAGE_URL="file://$work/storage"
pids=()
cleanup() {
    kill "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
    drop_stack
}
trap cleanup EXIT

"$bin/paperhook-api" migrate >/dev/null
"$bin/paperhook-api" serve > "$work/api.log" 2>&1 & pids+=($!)
wport=$(free_port); jport=$(free_port)
PAPERHOOK_METRICS_ADDR="127.0.0.1:$wport" "$bin/paperhook-worker" > "$work/worker.log" 2>&1 & pids+=($!)
PAPERHOOK_METRICS_ADDR="127.0.0.1:$jport" "$bin/paperhook-janitor" > "$work/janitor.log" 2>&1 & pids+=($!)
wait_healthy
key=$(new_key "E2E Co" 1000)

export PAPERHOOK_E2E_URL="http://127.0.0.1:$port" PAPERHOOK_E2E_KEY="$key"
if ! (cd e2e && npm test --silent); then
    echo "--- api log ---"; tail -n 50 "$work/api.log"
    [ -f "$work/worker.log" ] && { echo "--- worker log ---"; tail -n 50 "$work/worker.log"; }
    exit 1
fi
# The expositions after real traffic must satisfy Prometheus' own linter.
# (Each scrape goes to a file first: `curl | grep -q` fails under pipefail
# when grep stops reading before curl has written everything.)
for p in "$port" "$wport" "$jport"; do
    curl -sf "http://127.0.0.1:$p/metrics" > "$work/$p.metrics"
    promtool check metrics < "$work/$p.metrics"
done
cp "$work/$wport.metrics" "$work/worker.metrics"
cp "$work/$port.metrics" "$work/api.metrics"
grep -q '^paperhook_documents_processed_total{outcome="success"} [1-9]' "$work/worker.metrics" ||
    { echo "the worker's metrics do not count the documents it processed"; exit 1; }
grep -q '^paperhook_janitor_last_pass_timestamp_seconds [1-9]' "$work/$jport.metrics" ||
    { echo "the janitor's metrics show no pass"; exit 1; }
grep -q '^paperhook_janitor_started_timestamp_seconds [1-9]' "$work/$jport.metrics" ||
    { echo "the janitor's metrics lack its start time (the janitor alert counts from it)"; exit 1; }
# The browser tests processed an image and a PDF and delivered a webhook:
# each stage, the end-to-end and delivery latencies and the deleted file show.
for want in 'paperhook_jobs_finished_total{outcome="success"}' 'paperhook_job_duration_seconds_count{outcome="success"}' \
    'paperhook_webhook_delivery_latency_seconds_count' 'paperhook_storage_deleted_bytes_total' \
    'paperhook_stage_duration_seconds_count{outcome="ok",stage="render"}' 'paperhook_stage_duration_seconds_count{outcome="ok",stage="ocr"}' \
    'paperhook_stage_duration_seconds_count{outcome="ok",stage="extract"}' 'paperhook_stage_duration_seconds_count{outcome="ok",stage="deliver"}'; do
    awk -v w="$want " 'index($0, w) == 1 && $NF + 0 > 0 { ok = 1 } END { exit !ok }' "$work/worker.metrics" ||
        { echo "the worker's metrics lack a non-zero $want"; grep -F "${want%%\{*}" "$work/worker.metrics"; exit 1; }
done
grep -qE '^paperhook_stage_duration_seconds_count\{outcome="ok",stage="store"\} [1-9]' "$work/api.metrics" &&
    grep -qE '^paperhook_storage_written_bytes_total [1-9]' "$work/api.metrics" ||
    { echo "the API's metrics do not count stored uploads"; exit 1; }
grep -qE '^paperhook_webhook_retries_pending [0-9]' "$work/api.metrics" ||
    { echo "the API's metrics lack paperhook_webhook_retries_pending"; exit 1; }

# A real Prometheus scraping the API answers the dashboard's queue-depth and
# throughput queries with the numbers the database and our traffic give.
kill "${pids[1]:-}" 2>/dev/null || true   # stop the worker: the queue must hold still
wait "${pids[1]:-}" 2>/dev/null || true    # ...and has, before the counts are compared
prom_port=$(free_port)
cat > "$work/prometheus.yml" <<YML
global: { scrape_interval: 1s }
scrape_configs:
  - job_name: paperhook-api
    static_configs: [{ targets: ["127.0.0.1:$port"] }]
YML
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/prom" \
    --web.listen-address="127.0.0.1:$prom_port" > "$work/prometheus.log" 2>&1 & pids+=($!)
promql() {
    curl -sf --get "http://127.0.0.1:$prom_port/api/v1/query" --data-urlencode "query=$1" |
        python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(int(float(r[0]["value"][1])) if r else "none")'
}
wait_for() { # wait_for QUERY EXPECTED: polls for up to 30 s
    local got=""
    for _ in $(seq 1 60); do
        got=$(promql "$1" 2>/dev/null || true)
        [ "$got" = "$2" ] && { echo "prometheus: $1 = $got"; return 0; }
        sleep 0.5
    done
    echo "prometheus: $1 = $got, expected $2"; tail -n 20 "$work/prometheus.log"; return 1
}
wait_for 'up{job="paperhook-api"}' 1
before=$(promql 'sum(paperhook_jobs_submitted_total)')
template=$(curl -sf -H "x-auth: $key" "http://127.0.0.1:$port/v1/templates?limit=1" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["templates"][0]["id"])')
for _ in 1 2 3 4 5; do
    curl -sf -o /dev/null -H "x-auth: $key" -F "template_id=$template" \
        -F actual_image=@examples/invoice.pdf "http://127.0.0.1:$port/process-job"
done
waiting=$(psql "$DATABASE_URL" -Atqc "select count(*) from jobs where finished_at is null")
wait_for 'sum(max by (status) (paperhook_queue_depth))' "$waiting"
wait_for 'sum(paperhook_jobs_submitted_total)' "$((before + 5))"
echo "screenshots: e2e/artifacts/"
