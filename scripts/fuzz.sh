#!/usr/bin/env bash
# Runs the cargo-fuzz targets for a bounded time each: the document decoders
# (extract/fuzz: document), the template parser (extract/fuzz: template)
# and the ZIP batch reader (worker/fuzz: zip). A crash, a timeout or an
# out-of-memory fails the run and leaves the input in $FUZZ_ARTIFACTS.
#
#   scripts/fuzz.sh [TARGET...]     FUZZ_SECONDS=30 per target by default
#
# cargo-fuzz needs the sanitizer flags of a nightly compiler; the stable
# toolchain accepts them with RUSTC_BOOTSTRAP=1. Build output goes to
# $CARGO_TARGET_DIR/fuzz, so later runs only rebuild what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

seconds="${FUZZ_SECONDS:-30}"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(document template zip)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/paperhook-target}"
export RUSTC_BOOTSTRAP=1 OMP_THREAD_LIMIT=1
cargo fuzz --version >/dev/null 2>&1 || {
    log "installing cargo-fuzz"
    cargo install --locked --quiet cargo-fuzz@0.13.2 || die "cargo install cargo-fuzz failed"
}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
artifacts="${FUZZ_ARTIFACTS:-$work/artifacts}"
mkdir -p "$artifacts"

# Seeds: real documents and templates, and a few archives.
seed() { # seed TARGET: fills $work/TARGET with starting inputs
    local dir="$work/corpus-$1"; mkdir -p "$dir"
    case "$1" in
        document) cp examples/invoice.pdf examples/invoice.png "$dir/" ;;
        template) cp examples/template.json "$dir/"; echo '{"fields":[]}' > "$dir/empty.json" ;;
        zip) python3 - "$dir" <<'PY'
import io, sys, zipfile
out = sys.argv[1]
def write(name, entries, method=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(f"{out}/{name}", "w", method) as z:
        for entry, data in entries:
            z.writestr(entry, data)
pdf = open("examples/invoice.pdf", "rb").read()
write("batch.zip", [("a.pdf", pdf), ("b.png", open("examples/invoice.png", "rb").read()[:2048])])
write("folders.zip", [("dir/a.pdf", pdf), ("__MACOSX/._a.pdf", b"x"), (".hidden", b"x")])
write("stored.zip", [("a.pdf", pdf), ("../evil.pdf", pdf)], zipfile.ZIP_STORED)
write("bomb.zip", [("zeros.pdf", b"%PDF-" + bytes(2 << 20))])
PY
        ;;
    esac
    echo "$dir"
}

for target in "${targets[@]}"; do
    case "$target" in
        document | template) crate=extract/fuzz ;;
        zip) crate=worker/fuzz ;;
        *) die "unknown fuzz target $target (document, template, zip)" ;;
    esac
    corpus=$(seed "$target")
    log "fuzzing $target for ${seconds}s"
    (cd "$crate" && cargo fuzz run --target-dir "$CARGO_TARGET_DIR/fuzz" "$target" "$corpus" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=20 -detect_leaks=0 \
        -artifact_prefix="$artifacts/" -print_final_stats=1 2>&1 | grep -Ev '^"|# Uses: |recommended dictionary' | tail -n 30) ||
        die "fuzz target $target failed; the input is in $artifacts (keep it: turn it into a regression test)"
done
