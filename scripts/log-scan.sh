#!/usr/bin/env bash
# Secrets never reach the logs: runs the real API, worker and janitor at the
# most verbose level (RUST_LOG=trace) on a fresh database and S3 storage,
# drives everything that handles a secret (API keys, dashboard sessions,
# webhook header values, whsec_ secrets revealed and rotated, signed
# deliveries with retries, test events), then scans every log line for each
# secret value. Also checks that webhook delivery ignores proxy settings
# from the environment (a proxy would resolve and connect past the SSRF
# guard). Called by scripts/test.sh; needs PAPERHOOK_TEST_DATABASE_URL,
# PAPERHOOK_TEST_S3_* and CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_apt jq

fresh_stack logscan
loopback_api
export PAPERHOOK_STORAGE_URL="s3://$PAPERHOOK_TEST_S3_BUCKET/logscan-$$-$(date +%s)"
export PAPERHOOK_S3_ENDPOINT="$PAPERHOOK_TEST_S3_ENDPOINT"
export PAPERHOOK_S3_ACCESS_KEY_ID="$PAPERHOOK_TEST_S3_ACCESS_KEY"
export PAPERHOOK_S3_SECRET_ACCESS_KEY="$PAPERHOOK_TEST_S3_SECRET_KEY"
export PAPERHOOK_WEBHOOK_RETRY_SCHEDULE="0s,1s,1s"
export PAPERHOOK_WORKER_POLL_MS=200
export PAPERHOOK_JANITOR_INTERVAL_SECS=1
export RUST_LOG=trace
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    # PAPERHOOK_LOG_SCAN_KEEP=DIR keeps the logs for a look.
    [ -n "${PAPERHOOK_LOG_SCAN_KEEP:-}" ] && mkdir -p "$PAPERHOOK_LOG_SCAN_KEEP" && cp "$work"/*.log "$PAPERHOOK_LOG_SCAN_KEEP"/
    drop_stack
}
trap cleanup EXIT

# The webhook receiver: answers 500 to the first request of each
# webhook-id (so every delivery is retried), then 200; records what it got.
recv_port=$(free_port)
python3 - "$recv_port" "$work/received.jsonl" > "$work/receiver.log" 2>&1 <<'PY' & pids+=($!)
import http.server, json, sys
seen = set()
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        msg = self.headers.get("webhook-id", "")
        status = 200 if msg in seen or msg.startswith("msg_test_") else 500
        seen.add(msg)
        with open(sys.argv[2], "a") as f:
            f.write(json.dumps({"status": status, "headers": dict(self.headers), "body": body.decode()}) + "\n")
        self.send_response(status); self.send_header("content-length", "2"); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY

"$bin/paperhook-api" migrate > "$work/migrate.log" 2>&1
"$bin/paperhook-api" serve > "$work/api.log" 2>&1 & pids+=($!)
# The worker runs with proxy settings pointing at a port nothing listens on:
# deliveries must still arrive, straight at the checked address. (NO_PROXY
# keeps S3 direct; the receiver is reached by the name localhost.)
dead_port=$(free_port)
HTTP_PROXY="http://127.0.0.1:$dead_port" HTTPS_PROXY="http://127.0.0.1:$dead_port" \
    ALL_PROXY="http://127.0.0.1:$dead_port" http_proxy="http://127.0.0.1:$dead_port" \
    NO_PROXY="127.0.0.1" no_proxy="127.0.0.1" \
    "$bin/paperhook-worker" > "$work/worker.log" 2>&1 & pids+=($!)
"$bin/paperhook-janitor" > "$work/janitor.log" 2>&1 & pids+=($!)
wait_healthy

base="$url"
out=$("$bin/paperhook-api" admin create-account --name "Log Scan Co" --credits 100 2>>"$work/admin.log")
key=$(jq -r .api_key <<<"$out")
account=$(jq -r .account_id <<<"$out")
key2=$("$bin/paperhook-api" admin create-key --account "$account" 2>>"$work/admin.log" | jq -r .api_key)
hdr_auth="Bearer hdr-$(head -c 18 /dev/urandom | base64 -w0 | tr '+/' '-_')"
hdr_other="xo-$(head -c 18 /dev/urandom | base64 -w0 | tr '+/' '-_')"
api() { # api METHOD PATH [JSON] with the first key; prints the body, fails on >= 400
    curl -sf -X "$1" -H "x-auth: $key" ${3:+-H 'content-type: application/json' --data "$3"} "$base$2"
}

template=$(jq -c --arg url "http://localhost:$recv_port/hook" --arg a "$hdr_auth" --arg o "$hdr_other" \
    '.webhook = {url: $url, headers: {Authorization: $a, "X-Other-Secret": $o}}' examples/template.json)
tid=$(api POST /v1/templates "$template" | jq -r .id)
secret1=$(api GET "/v1/templates/$tid/webhook-secret" | jq -r .secret)
secret2=$(api POST "/v1/templates/$tid/webhook-secret/rotate" | jq -r .secret)
[ "$(api GET "/v1/templates/$tid/webhook-secret" | jq -r .secret)" = "$secret2" ] || die "rotation did not stick"
# An update that sends the masked values back keeps the stored ones.
api PUT "/v1/templates/$tid" "$(api GET "/v1/templates/$tid" | jq -c '{name, fields, keywords, languages, webhook}')" >/dev/null
new_key=$(api POST /v1/api-keys | jq -r .api_key)
curl -sf -H "x-auth: $new_key" "$base/v1/account" >/dev/null
api POST "/v1/api-keys/${new_key:0:10}/revoke" >/dev/null
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "x-auth: $new_key" "$base/v1/account")" = 401 ] || die "revoked key still works"
wrong_key="${key:0:11}$(head -c 27 /dev/urandom | base64 -w0 | tr '+/' '-_')"
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "x-auth: $wrong_key" "$base/v1/account")" = 401 ] || die "a wrong key was accepted"
# A dashboard session: its cookie token and CSRF token are secrets too.
signin=$(curl -sf -D "$work/signin.headers" -H 'content-type: application/json' \
    --data "{\"api_key\":\"$key2\"}" "$base/v1/session/sign-in")
csrf=$(jq -r .csrf_token <<<"$signin")
session=$(sed -n 's/^set-cookie: paperhook_session=\([^;]*\).*/\1/ip' "$work/signin.headers" | tr -d '\r')
[ -n "$session" ] || die "no session cookie"
curl -sf -H "cookie: paperhook_session=$session" "$base/v1/templates" >/dev/null
curl -sf -X POST -H "cookie: paperhook_session=$session" -H "x-csrf-token: $csrf" \
    "$base/v1/templates/$tid/webhook-test" >/dev/null
# Documents: one as multipart, one as JSON with base64; each delivery fails once, then arrives.
jobs=()
jobs+=("$(curl -sf -H "x-auth: $key" -F "template_id=$tid" -F actual_image=@examples/invoice.pdf \
    -F 'static_values={"batch":1}' "$base/process-job" | jq -r .job_id)")
jobs+=("$(jq -n --arg t "$tid" --arg d "$(base64 -w0 examples/invoice.png)" '{template_id: $t, actual_image: $d}' |
    curl -sf -H "x-auth: $key" -H 'content-type: application/json' --data @- "$base/process-job" | jq -r .job_id)")
deadline=$((SECONDS + 120))
for job in "${jobs[@]}"; do
    until [ "$(grep -c "\"status\": 200" "$work/received.jsonl" 2>/dev/null || true)" -ge 3 ] &&
        curl -sf -X POST -H "x-auth: $key" -H 'content-type: application/json' \
            --data "{\"job_id\":\"$job\",\"result_format\":\"json\"}" "$base/v1/job-results" >/dev/null; do
        [ $SECONDS -lt $deadline ] || { tail -n 20 "$work/worker.log"; die "job $job was not delivered within 120 s"; }
        sleep 0.3
    done
done
curl -sf -X POST -H "cookie: paperhook_session=$session" -H "x-csrf-token: $csrf" "$base/v1/jobs/${jobs[0]}/redeliver" >/dev/null
curl -sf -X DELETE -H "cookie: paperhook_session=$session" -H "x-csrf-token: $csrf" "$base/v1/session" -o /dev/null
# The receiver got the secrets it should: the header values, signed with the rotated secret.
grep -q "$hdr_auth" "$work/received.jsonl" || die "the receiver did not get the Authorization header"
grep -q "$hdr_other" "$work/received.jsonl" || die "the receiver did not get X-Other-Secret"
for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
wait 2>/dev/null || true
pids=()
# Rotating the encryption key (README), with the services stopped:
# a new key first, then reencrypt.
new_enc_key="$(head -c 32 /dev/urandom | base64 -w0)"
PAPERHOOK_ENCRYPTION_KEYS="1:$new_enc_key,0:$enc_key" "$bin/paperhook-api" admin reencrypt \
    2>>"$work/admin.log" | grep -q '"reencrypted":1' || die "admin reencrypt did not rewrite the template"

logs=("$work/api.log" "$work/worker.log" "$work/janitor.log" "$work/migrate.log" "$work/admin.log")
lines=$(cat "${logs[@]}" | wc -l)
debug=$(cat "${logs[@]}" | grep -Ec 'DEBUG|TRACE' || true)
[ "$debug" -ge 100 ] || die "only $debug debug/trace lines in $lines: the scan would prove nothing"
grep -q 'webhook attempt' "$work/worker.log" || die "the worker logged no webhook attempt"
# Each secret as it is given out, and its secret part alone (an API key's
# public prefix, a whsec_ prefix and a header's "Bearer " may appear).
secrets=(
    "api key=${key:11}" "second api key=${key2:11}" "created api key=${new_key:11}" "wrong api key=${wrong_key:11}"
    "header Authorization=${hdr_auth#Bearer }" "header X-Other-Secret=$hdr_other"
    "whsec before rotation=${secret1#whsec_}" "whsec after rotation=${secret2#whsec_}"
    "encryption key=$enc_key" "new encryption key=$new_enc_key" "S3 secret key=$PAPERHOOK_TEST_S3_SECRET_KEY"
    "session token=$session" "csrf token=$csrf"
)
found=0
for entry in "${secrets[@]}"; do
    name="${entry%%=*}"; value="${entry#*=}"
    [ ${#value} -ge 12 ] || die "$name is too short to scan for: ${#value} characters"
    if grep -F -n -- "$value" "${logs[@]}" >"$work/hits" 2>/dev/null; then
        echo "SECRET IN LOGS: $name"; head -n 3 "$work/hits" | cut -c1-300
        found=1
    fi
done
[ "$found" = 0 ] || die "secrets were logged (see above)"
echo "log scan: ${#secrets[@]} secrets absent from $lines log lines ($debug at debug/trace level)"
echo "log scan: webhooks arrived with proxy variables pointing at a dead port (proxies are not used)"
