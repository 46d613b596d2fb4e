#!/usr/bin/env bash
# Brings the whole system up on embedded defaults: PostgreSQL ($DATABASE_URL,
# else 127.0.0.1:5432, else a private cluster), local file storage in
# .paperhook/, the API on http://127.0.0.1:8080, a worker and the janitor; also
# builds the paperhook command-line client.
# Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/paperhook-target}"
export OMP_THREAD_LIMIT=1
profile="${PAPERHOOK_PROFILE:-dev}"

ensure_apt ca-certificates curl pkg-config clang libclang-dev \
    tesseract-ocr tesseract-ocr-eng tesseract-ocr-deu tesseract-ocr-fra libtesseract-dev libleptonica-dev
if [ -z "${DATABASE_URL:-}" ]; then
    ensure_postgres
    export DATABASE_URL="${PH_PG_URL%/*}/paperhook"
fi
ensure_database "$DATABASE_URL"

mkdir -p .paperhook
if [ -z "${PAPERHOOK_ENCRYPTION_KEYS:-}" ]; then
    if [ ! -s .paperhook/encryption.key ]; then
        (umask 077; printf '0:%s\n' "$(head -c 32 /dev/urandom | base64 -w0)" > .paperhook/encryption.key)
    fi
    PAPERHOOK_ENCRYPTION_KEYS="$(cat .paperhook/encryption.key)"
    export PAPERHOOK_ENCRYPTION_KEYS
fi
export PAPERHOOK_STORAGE_URL="${PAPERHOOK_STORAGE_URL:-file://.paperhook/storage}"

log "building ($profile profile)"
cargo build --profile "$profile" --locked --bins -p paperhook-api -p paperhook-worker -p paperhook-janitor -p paperhook-cli
dir="$CARGO_TARGET_DIR/$([ "$profile" = dev ] && echo debug || echo "$profile")"

"$dir/paperhook-api" migrate >/dev/null
addr="${PAPERHOOK_API_ADDR:-127.0.0.1:8080}"
host="${addr%:*}"; host="${host#[}"; host="${host%]}"; port="${addr##*:}"
[ "$host" = 0.0.0.0 ] && host=127.0.0.1
[ "$host" = :: ] && host=::1
url="http://$([[ "$host" == *:* ]] && echo "[$host]" || echo "$host"):$port"
# Another server answering there would pass the readiness check below.
if curl -sf -o /dev/null --max-time 2 "$url/healthz" 2>/dev/null; then
    die "a server already answers on $addr (another up.sh?); stop it, or set PAPERHOOK_API_ADDR to another address"
fi
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait' EXIT INT TERM
"$dir/paperhook-api" serve & pids+=($!)
# The worker exits non-zero when it must be replaced (an extraction stuck
# in a decoder): start a fresh one, as a service manager would.
supervise() {
  local child
  trap 'kill "$child" 2>/dev/null; wait "$child"; exit 0' TERM INT
  while :; do
    "$@" & child=$!
    wait "$child" && return
    echo "up.sh: $1 exited with an error; starting it again in 2 s" >&2
    sleep 2
  done
}
supervise "$dir/paperhook-worker" & pids+=($!)
"$dir/paperhook-janitor" & pids+=($!)

deadline=$((SECONDS + 120))
until curl -sf "$url/healthz" >/dev/null 2>&1; do
    kill -0 "${pids[0]}" 2>/dev/null || die "the API did not start (its error is above)"
    ((SECONDS < deadline)) || die "the API did not answer $url/healthz within 120 s (its log is above)"
    sleep 0.5
done
cat <<MSG

Paperhook is up: API on $url (docs at /docs), storage in .paperhook/storage.
Create an account and API key in another terminal:

  DATABASE_URL=$DATABASE_URL PAPERHOOK_ENCRYPTION_KEYS=\$(cat .paperhook/encryption.key) \\
    $dir/paperhook-api admin create-account --name "My Company" --credits 100

then log the command-line client in with the api_key it prints:

  $dir/paperhook login --url $url --key ph_...

Ctrl-C stops everything.
MSG
# Runs until Ctrl-C or until the API stops.
wait "${pids[0]}"
