#!/usr/bin/env bash
# Runs the cargo-fuzz targets for a bounded time each: the document decoders
# (extract/fuzz: document), PDF page content read and drawn (extract/fuzz:
# content), the template parser (extract/fuzz: template) and the ZIP batch
# reader (worker/fuzz: zip). A crash, a timeout or an
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
[ ${#targets[@]} -gt 0 ] || targets=(document content template zip)
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
        document) cp examples/invoice.pdf examples/invoice.png "$dir/"
            # Small PDFs whose structure lies in the open (the example's
            # content is deflated: mutations of it rarely reach the content
            # parser): inline images, forms, a text layer, a file without
            # its cross-reference data, a page tree in an object stream.
            python3 - "$dir" <<'PY'
import sys, zlib
sys.path.insert(0, "scripts/reliability")
import corpus
out = sys.argv[1]
text = b"BT /F1 12 Tf 72 720 Td (Total 5.00) Tj 0 -14 Td (Date 2026-01-02) Tj ET"
image = b"q 10 0 0 10 72 600 cm BI /W 2 /H 2 /BPC 8 /CS /G ID \x00\xffEI\x10 EI Q "
a85 = b"q BI /W 1 /H 1 /BPC 8 /CS /G /F /A85 ID z~> EI Q "
def write(name, data):
    with open(f"{out}/{name}", "wb") as f:
        f.write(data)
write("text.pdf", corpus.pdf(corpus.page_objs(1, content=text)))
write("inline-images.pdf", corpus.pdf(corpus.page_objs(2, content=image + a85 + text)))
objs = corpus.page_objs(1, content=b"q /X1 Do Q " + text)
objs[4] = objs[4].replace(b"/Font << /F1 3 0 R >>", b"/Font << /F1 3 0 R >> /XObject << /X1 6 0 R >>")
form = b"0 0 m 10 10 l S " + image
objs.append(b"<< /Type /XObject /Subtype /Form /BBox [0 0 50 50] /Length %d >>\nstream\n" % len(form)
            + form + b"\nendstream")
write("form.pdf", corpus.pdf(objs))
whole = corpus.pdf(corpus.page_objs(1, content=text))
write("no-xref.pdf", whole[:whole.rindex(b"xref")])
write("object-streams.pdf", corpus.packed_bomb_pdf(objects_mb=0))
PY
            ;;
        content) # Page content streams: text, paths, clips, images, forms,
            # patterns, a Type 3 glyph, marked content, and inline images
            # whose end is unclear (the content parser searches for it).
            printf '%s' 'BT /F1 12 Tf 72 720 Td (Total 5.00) Tj 0 -14 Td [(Date) -250 (2026-01-02)] TJ ET' > "$dir/text"
            printf '%s' 'q 1 0 0 rg 10 10 50 50 re f 0 0 m 100 100 l 50 0 c h S Q q 20 20 100 100 re W n 0.5 g 0 0 200 200 re f Q' > "$dir/paths"
            printf '%s' 'q /G1 gs 50 0 0 50 10 10 cm /Im1 Do Q q 0.5 0 0 0.5 0 0 cm /X1 Do Q' > "$dir/xobjects"
            printf '%s' 'q /Pattern cs /P1 scn 0 0 100 100 re f Q BT /F3 20 Tf 10 10 Td (AAA) Tj ET' > "$dir/pattern-type3"
            printf '%s' '/Span << /ActualText (x) >> BDC BT /F1 9 Tf 5 5 Td (Total 1) Tj ET EMC /OC /X BDC EMC' > "$dir/marked"
            printf 'q 10 0 0 10 72 60 cm BI /W 2 /H 2 /BPC 8 /CS /G ID \x00\xffEI\x10 EI Q BI /W 1 /H 1 /BPC 8 /CS /G /F /A85 ID z~> EI BI /W 2 /H 1 /BPC 1 /CS /CS1 /D [1 0] ID \x80 EI' > "$dir/inline-images"
            printf '%s' 'BI ID EI EI BI ID EI EI BI ID EI EI' > "$dir/inline-chain"
            ;;
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
        document | content | template) crate=extract/fuzz ;;
        zip) crate=worker/fuzz ;;
        *) die "unknown fuzz target $target (document, content, template, zip)" ;;
    esac
    corpus=$(seed "$target")
    dict=()
    if [ "$target" = content ]; then
        # The content operators and the page's resource names, which
        # byte-level mutations rarely spell out.
        printf '"%s"\n' q Q cm w J j M d ri i gs m l c v y h re S s f F 'f*' B 'B*' b 'b*' n W 'W*' \
            BT ET Tc Tw Tz TL Tf Tr Ts Td TD Tm 'T*' Tj TJ "'" '\"' d0 d1 CS cs SC SCN sc scn G g RG rg K k \
            sh BI ID EI Do MP DP BMC BDC EMC BX EX /F1 /F3 /X1 /Im1 /P1 /G1 /CS1 /Pattern /DeviceRGB \
            '<<' '>>' '[' ']' '(' ')' '<' '>' true false null > "$work/content.dict"
        dict=(-dict="$work/content.dict")
    fi
    log "fuzzing $target for ${seconds}s"
    (cd "$crate" && cargo fuzz run --target-dir "$CARGO_TARGET_DIR/fuzz" "$target" "$corpus" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=20 -detect_leaks=0 \
        -artifact_prefix="$artifacts/" -print_final_stats=1 "${dict[@]}" 2>&1 | grep -Ev '^"|# Uses: |recommended dictionary' | tail -n 30) ||
        die "fuzz target $target failed; the input is in $artifacts (keep it: turn it into a regression test)"
done
