#!/usr/bin/env bash
# API fuzzing: Schemathesis (PyPI) generates requests from /openapi.json
# against the real API on a fresh database, signed in with a valid key, and
# fails on any 5xx and on any response that breaks the schema (status code,
# content type, headers, body). Called by scripts/test.sh; needs
# PAPERHOOK_TEST_DATABASE_URL and CARGO_TARGET_DIR.
#
#   API_FUZZ_EXAMPLES=25 (examples per operation and phase)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

python3 -c 'import schemathesis' 2>/dev/null ||
    python3 -m pip install -q 'schemathesis==4.32.5' || die "pip install schemathesis failed"

fresh_stack apifuzz
loopback_api
export PAPERHOOK_STORAGE_URL="file://$work/storage"
# Thousands of requests from one key: the rate limit has its own tests.
export PAPERHOOK_RATE_LIMIT_PER_SEC=0
pids=()
cleanup() {
    kill "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
    drop_stack
}
trap cleanup EXIT

"$bin/paperhook-api" migrate >/dev/null
"$bin/paperhook-api" serve > "$work/api.log" 2>&1 & pids+=($!)
wait_healthy
key=$(new_key "Fuzz Co" 100000)
# Something to find: a template (with a webhook) and a job.
template=$(new_template "$key")
curl -sf -o /dev/null -H "x-auth: $key" -F "template_id=$template" -F actual_image=@examples/invoice.pdf \
    "http://127.0.0.1:$port/process-job"

# run_fuzz NAME FILTERS...: one Schemathesis run; its output in $work/NAME.out.
run_fuzz() {
    local name=$1
    shift
    if ! (cd "$work" && schemathesis run "http://127.0.0.1:$port/openapi.json" \
        --header "x-auth: $key" \
        --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
        --max-examples "${API_FUZZ_EXAMPLES:-25}" --workers 2 --seed 1 \
        --phases examples,coverage,fuzzing --suppress-health-check all --no-color "$@") 2>&1 |
        tee "$work/$name.out"; then
        echo "--- api log ---"; grep -E 'ERROR|WARN|panick' "$work/api.log" | tail -n 30
        die "schemathesis found failures ($name)"
    fi
}

# Revoking keys and deleting the template go last: the fuzzer finds the
# fuzzing key's own prefix in GET /v1/api-keys and revoked it half-way,
# leaving every later request a 401 that tested nothing.
destructive=(--exclude-name "POST /v1/api-keys/{prefix}/revoke" --exclude-name "DELETE /v1/templates/{id}")
log "schemathesis against /openapi.json"
run_fuzz main "${destructive[@]}"
# Only the dashboard's session endpoint may answer nothing but 401 (it
# wants a session cookie, not a key): any other means the key stopped
# working and the operation was not tested.
unauthorized=$(awk '/^401 Unauthorized \(/ {on = 1; next} on && /^  - / {print; next} on {on = 0}' "$work/main.out" |
    grep -v ' /v1/session$' || true)
[ -z "$unauthorized" ] || die "operations answered only 401 with a valid key (not tested):
$unauthorized"
log "schemathesis: key revocation and template deletion"
run_fuzz destructive --include-name "POST /v1/api-keys/{prefix}/revoke" --include-name "DELETE /v1/templates/{id}"
