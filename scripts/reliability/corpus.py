"""The bad-input corpus: hostile and broken submissions, each with the
outcome Paperhook documents for it. Files are generated (small, at test
time) rather than stored; `python3 corpus.py DIR` writes them out for a look.

Each case is a dict:
  name     a short identifier
  file     the document bytes (submitted as JSON base64), or
  request  (content_type, body bytes) sent as-is to POST /process-job
  expect   ("http", status, code): the API refuses it, or
           ("job", job status, job error code or None, [document codes]):
           it is accepted and ends so; a document code None means success.
"""

import base64
import hashlib
import io
import json
import pathlib
import struct
import subprocess
import sys
import tempfile
import zipfile
import zlib

import harness

ROOT = harness.ROOT


# --- building blocks ---------------------------------------------------------------


def png(width, height, rows=None):
    """A grayscale PNG whose header says width x height; `rows` is the raw
    IDAT payload (default: the real image, white)."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    if rows is None:
        rows = zlib.compress(b"".join(b"\x00" + b"\xff" * width for _ in range(height)))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def jpeg_header(width, height):
    """A baseline JPEG that declares width x height, with no image data."""
    sof = struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00"
    dqt = b"\x00" + bytes([1] * 64)
    return (b"\xff\xd8" + b"\xff\xdb" + struct.pack(">H", len(dqt) + 2) + dqt
            + b"\xff\xc0" + struct.pack(">H", len(sof) + 2) + sof + b"\xff\xd9")


def jpeg_resized(jpeg, width, height):
    """A real JPEG whose frame header (SOF0) is patched to declare width x height."""
    at = jpeg.index(b"\xff\xc0") + 5
    return jpeg[:at] + struct.pack(">HH", height, width) + jpeg[at + 4:]


def tiff_header(width, height, ifd=True):
    """A little-endian TIFF declaring width x height, 8-bit gray, one strip
    of 16 bytes; without `ifd`, the first-IFD offset is 0 (no pages)."""
    if not ifd:
        return b"II*\x00" + struct.pack("<I", 0) + b"\x00" * 16
    tags = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 1), (262, 3, 1),
            (273, 4, 8 + 2 + 12 * 8 + 4), (278, 4, height), (279, 4, 16)]
    ifd_bytes = struct.pack("<H", len(tags)) + b"".join(
        struct.pack("<HHI", tag, typ, 1) + (struct.pack("<HH", val, 0) if typ == 3 else struct.pack("<I", val))
        for tag, typ, val in tags) + struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd_bytes + b"\x80" * 16


def rendered(fmt):
    """The example invoice as JPEG or TIFF, rendered by poppler's pdftoppm."""
    with tempfile.TemporaryDirectory() as d:
        subprocess.run(["pdftoppm", "-r", "100", "-gray", f"-{fmt}", "-singlefile",
                        str(ROOT / "examples" / "invoice.pdf"), f"{d}/p"], check=True)
        return next(pathlib.Path(d).glob("p.*")).read_bytes()


def pdf(objs, root=1, trailer_extra=b""):
    out = harness.pdf_from_objects(objs, root)
    if trailer_extra:
        out = out.replace(b"/Root %d 0 R >>" % root, b"/Root %d 0 R " % root + trailer_extra + b" >>")
    return out


INVOICE_LINE = b"BT /F1 11 Tf 56 780 Td (Invoice No: INV-1) Tj ET"


def page_objs(pages, media=b"[0 0 595 842]", content=INVOICE_LINE):
    """A catalog, a page tree of `pages` leaves sharing one content stream."""
    kids = b" ".join(b"%d 0 R" % (5 + i) for i in range(pages))
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [" + kids + b"] /Count %d >>" % pages,
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
            b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream"]
    objs += [b"<< /Type /Page /Parent 2 0 R /MediaBox " + media
             + b" /Resources << /Font << /F1 3 0 R >> >> /Contents 4 0 R >>"] * pages
    return objs


def rc4(key, data):
    s, j, out = list(range(256)), 0, bytearray()
    for i in range(256):
        j = (j + s[i] + key[i % len(key)]) % 256
        s[i], s[j] = s[j], s[i]
    i = j = 0
    for b in data:
        i = (i + 1) % 256
        j = (j + s[i]) % 256
        s[i], s[j] = s[j], s[i]
        out.append(b ^ s[(s[i] + s[j]) % 256])
    return bytes(out)


PAD = bytes.fromhex("28BF4E5E4E758A4164004E56FFFA01082E2E00B6D0683E802F0CA9FE6453697A")


def encrypted_pdf(user_password=b""):
    """The example invoice encrypted with the standard security handler
    (RC4 40-bit, revision 2). With an empty user password any reader opens
    it; with a user password it needs that password."""
    src = (ROOT / "examples" / "invoice.pdf").read_bytes()
    start = src.index(b"stream\n", src.index(b"5 0 obj")) + 7
    stream = zlib.decompress(src[start:src.index(b"\nendstream", start)])
    owner = hashlib.md5(b"owner" + PAD).digest()[:5]
    o_entry = rc4(owner, (b"owner-secret" + PAD)[:32])
    file_id = hashlib.md5(b"paperhook-corpus").digest()
    p = -44  # print and copy allowed
    key = hashlib.md5((user_password + PAD)[:32] + o_entry + struct.pack("<i", p) + file_id).digest()[:5]
    u_entry = rc4(key, PAD)
    z = zlib.compress(stream)
    obj_key = hashlib.md5(key + struct.pack("<I", 5)[:3] + b"\x00\x00").digest()[:10]
    body = rc4(obj_key, z)
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
            b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(body) + body + b"\nendstream",
            b"<< /Filter /Standard /V 1 /R 2 /O <" + o_entry.hex().encode() + b"> /U <"
            + u_entry.hex().encode() + b"> /P %d >>" % p]
    return pdf(objs, trailer_extra=b"/Encrypt 6 0 R /ID [<" + file_id.hex().encode() + b"> <"
               + file_id.hex().encode() + b">]")


def zip_of(entries, compress=zipfile.ZIP_DEFLATED):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compress) as z:
        for name, data in entries:
            if name.endswith("/"):
                z.mkdir(name[:-1]) if hasattr(z, "mkdir") else z.writestr(name, b"")
            else:
                info = zipfile.ZipInfo(name, (2026, 1, 1, 0, 0, 0))
                info.compress_type = compress
                z.writestr(info, data)
    return buf.getvalue()


def mark_encrypted(data, name):
    """Sets the 'encrypted' flag of entry `name` in its local and central headers."""
    out = bytearray(data)
    for sig, flag_at, name_len_at, name_at in ((b"PK\x03\x04", 6, 26, 30), (b"PK\x01\x02", 8, 28, 46)):
        pos = 0
        while (pos := out.find(sig, pos)) >= 0:
            n = struct.unpack_from("<H", out, pos + name_len_at)[0]
            if out[pos + name_at:pos + name_at + n] == name.encode():
                out[pos + flag_at] |= 1
            pos += 4
    return bytes(out)


def lying_sizes(data, claimed):
    """Patches every entry's uncompressed size (local and central) to `claimed`."""
    out = bytearray(data)
    for sig, at in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        pos = 0
        while (pos := out.find(sig, pos)) >= 0:
            struct.pack_into("<I", out, pos + at, claimed)
            pos += 4
    return bytes(out)


def overlapping_bomb(entries=200, kernel_bytes=4_000_000):
    """David Fifield's overlapping-files construction, simplified: one
    deflated kernel and `entries` central-directory records that all point
    at the same local file header."""
    kernel = b"%PDF-1.4\n" + b"\x00" * kernel_bytes
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    deflated = comp.compress(kernel) + comp.flush()
    crc = zlib.crc32(kernel)
    name = b"k.pdf"
    local = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 8, 0, 0, crc, len(deflated),
                        len(kernel), len(name), 0) + name + deflated
    central = b""
    for i in range(entries):
        n = b"k%03d.pdf" % i
        central += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, crc,
                               len(deflated), len(kernel), len(n), 0, 0, 0, 0, 0, 0) + n
    eocd = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, entries, entries, len(central), len(local), 0)
    return local + central + eocd


def nested_bomb(depth=3, width=8):
    """42.zip in miniature: ZIPs of ZIPs, the innermost holding zeros."""
    data = zip_of([(f"z{i}.pdf", b"%PDF-1.4\n" + b"\x00" * 1_000_000) for i in range(width)])
    for _ in range(depth):
        data = zip_of([(f"z{i}.zip", data) for i in range(width)])
    return data


def deep_page_tree(depth):
    """A page tree `depth` levels deep with one page at the bottom."""
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>"]
    for level in range(depth):
        me, child = 2 + level, 3 + level
        parent = b" /Parent %d 0 R" % (me - 1) if level else b""
        objs.append(b"<< /Type /Pages /Kids [%d 0 R] /Count 1%s >>" % (child, parent))
    objs.append(b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 595 842] >>" % (1 + depth))
    return pdf(objs)


def inline_page_tree(pages):
    """A page tree of `pages` empty dictionaries inline, 4 bytes a page:
    the PDF reader kept a few hundred bytes for each when it opened the
    file (5 million pages in 20 MB: 4.7 GB)."""
    return pdf([b"<< /Type /Catalog /Pages 2 0 R >>",
                b"<< /Type /Pages /Kids [" + b"<<>>" * pages + b"] /Count 1 >>"])


def packed_bomb_pdf(objects_mb=0, table_mb=0):
    """A PDF 1.5 file whose page tree sits in a deflated object stream
    padded with `objects_mb` MB of spaces, and whose deflated
    cross-reference stream has `table_mb` MB of zeros after its rows: the
    PDF reader decoded both whole when it opened the file (a gigabyte from
    a megabyte), before any check."""
    def deflated(head, pad, mb):
        comp = zlib.compressobj(9)
        chunk = pad * 2**20
        return comp.compress(head) + b"".join(comp.compress(chunk) for _ in range(mb)) + comp.flush()
    header = b"2 0 "
    packed = deflated(header + b"<< /Type /Pages /Kids [<< /Type /Page /MediaBox [0 0 595 842] >>] /Count 1 >>",
                      b" ", objects_mb)
    out = bytearray(b"%PDF-1.7\n")
    o1 = len(out)
    out += b"1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
    o4 = len(out)
    out += (b"4 0 obj\n<< /Type /ObjStm /N 1 /First %d /Filter /FlateDecode /Length %d >>\nstream\n"
            % (len(header), len(packed)) + packed + b"\nendstream\nendobj\n")
    o3 = len(out)
    rows = [(0, 0, 255), (1, o1, 0), (2, 4, 0), (1, o3, 0), (1, o4, 0)]
    table = deflated(b"".join(bytes([k]) + f.to_bytes(4, "big") + bytes([g]) for k, f, g in rows), b"\0", table_mb)
    out += (b"3 0 obj\n<< /Type /XRef /Size 5 /W [1 4 1] /Root 1 0 R /Filter /FlateDecode /Length %d >>\nstream\n"
            % len(table) + table + b"\nendstream\nendobj\nstartxref\n%d\n%%%%EOF\n" % o3)
    return bytes(out)


def listed_objects_pdf(objects):
    """A PDF whose deflated cross-reference stream lists `objects` objects
    (6 bytes each, packed a thousand to one): the PDF reader kept some
    tens of bytes for each when it opened the file (40 million from
    350 KB: 2.7 GB)."""
    out = bytearray(b"%PDF-1.7\n")
    o1 = len(out)
    out += b"1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
    o2 = len(out)
    out += b"2 0 obj\n<< /Type /Pages /Kids [<< /Type /Page >>] /Count 1 >>\nendobj\n"
    o3 = len(out)
    head = b"".join(bytes([k]) + f.to_bytes(4, "big") + bytes([g])
                    for k, f, g in [(0, 0, 255), (1, o1, 0), (1, o2, 0), (1, o3, 0)])
    comp = zlib.compressobj(9)
    rows = b"\x01\x00\x00\x00\x09\x00" * 100_000
    table = comp.compress(head) + b"".join(comp.compress(rows) for _ in range(objects // 100_000)) + comp.flush()
    out += (b"3 0 obj\n<< /Type /XRef /Size %d /W [1 4 1] /Root 1 0 R /Filter /FlateDecode /Length %d >>\nstream\n"
            % (4 + objects, len(table)) + table + b"\nendstream\nendobj\nstartxref\n%d\n%%%%EOF\n" % o3)
    return bytes(out)


def image_bomb_pdf(side=20_000):
    """A page showing one side x side grayscale image whose Flate stream
    (zeros) is about a thousand times smaller than its pixels."""
    comp = zlib.compressobj(9)
    row = bytes(side * 100)
    stream = b"".join(comp.compress(row) for _ in range(side // 100)) + comp.flush()
    content = b"q 595 0 0 842 0 0 cm /Im1 Do Q"
    return pdf([b"<< /Type /Catalog /Pages 2 0 R >>",
                b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
                b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
                b"/Resources << /XObject << /Im1 5 0 R >> >> /Contents 4 0 R >>",
                b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
                b"<< /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceGray "
                b"/BitsPerComponent 8 /Filter /FlateDecode /Length %d >>\nstream\n" % (side, side, len(stream))
                + stream + b"\nendstream"])


def big_content_pdf(pages, contents=b"4 0 R", megabytes=68):
    """`pages` pages whose /Contents is `contents`, object 4 being an invoice
    line and `megabytes` MB of spaces in about 100 KB of deflate: a renderer
    that keeps each page's decoded content holds it once per page."""
    content = INVOICE_LINE
    content += b" " * (megabytes * 2**20 - len(content))
    return deflated_content_pdf(zlib.compress(content, 1), pages, contents)


def deflated_content_pdf(packed, pages=1, contents=b"4 0 R"):
    """`pages` pages whose /Contents is `contents`, object 4 being `packed`
    with /FlateDecode."""
    objs = page_objs(pages)
    objs[3] = b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(packed) + packed + b"\nendstream"
    objs[4:] = [o.replace(b"/Contents 4 0 R", b"/Contents " + contents) for o in objs[4:]]
    return pdf(objs)


def flate_bomb_pdf(lenient=False, megabytes=300):
    """A one-page PDF whose content stream inflates to `megabytes` MB of
    spaces from about 0.1% of that. `lenient`: raw deflate behind a zlib
    header and a stored block with a wrong NLEN, which both strict deflate
    readings refuse and hayro's lenient third reading inflates whole."""
    if lenient:
        comp = zlib.compressobj(9, zlib.DEFLATED, -15)
        packed = b"\x78\x01\x00\x00\x00\x00\x00"
    else:
        comp = zlib.compressobj(9)
        packed = b""
    chunk = b" " * 2**20
    packed += b"".join(comp.compress(chunk) for _ in range(megabytes)) + comp.flush()
    return deflated_content_pdf(packed)


def static_job(template_id, **overrides):
    body = {"template_id": template_id, "actual_image": base64.b64encode(
        (ROOT / "examples" / "invoice.pdf").read_bytes()).decode()}
    body.update(overrides)
    return body


# --- the corpus ---------------------------------------------------------------------


def cases(template_id):
    invoice_pdf = (ROOT / "examples" / "invoice.pdf").read_bytes()
    invoice_png = (ROOT / "examples" / "invoice.png").read_bytes()
    jpeg, tiff = rendered("jpeg"), rendered("tiff")
    ok = None
    job = lambda status, code, docs: ("job", status, code, docs)  # noqa: E731
    http = lambda status, code: ("http", status, code)  # noqa: E731
    failed_doc = lambda code: job("FAILED", code, [code])  # noqa: E731
    deep = "0"
    for _ in range(5000):
        deep = '{"k":' + deep + "}"
    out = [
        # ZIP batches
        dict(name="zip-slip", file=zip_of([("ok.pdf", invoice_pdf), ("../evil.pdf", invoice_pdf),
                                           ("/etc/abs.pdf", invoice_pdf), ("dir\\win.pdf", invoice_pdf),
                                           ("..\\..\\win2.pdf", invoice_pdf)]),
             expect=job("FAILED", "documents_failed", [ok] + ["zip_unsafe_path"] * 4)),
        dict(name="zip-encrypted-entry", file=mark_encrypted(zip_of([("a.pdf", invoice_pdf), ("s.pdf", invoice_pdf)]), "s.pdf"),
             expect=job("FAILED", "documents_failed", [ok, "zip_entry_encrypted"])),
        dict(name="zip-folders", file=zip_of([("docs/", b""), ("docs/a.pdf", invoice_pdf), ("b.pdf", invoice_pdf)]),
             expect=job("FAILED", "documents_failed", ["zip_entry_in_folder", ok])),
        dict(name="zip-nested", file=zip_of([("inner.zip", zip_of([("a.pdf", invoice_pdf)]))]),
             expect=job("FAILED", "documents_failed", ["zip_nested"])),
        dict(name="zip-nested-bomb", file=nested_bomb(),
             expect=job("FAILED", "documents_failed", ["zip_nested"] * 8)),
        dict(name="zip-ratio-bomb", file=zip_of([("zeros.pdf", b"%PDF-1.4\n" + b"\x00" * 40_000_000)]),
             expect=job("FAILED", "documents_failed", ["zip_ratio_exceeded"])),
        dict(name="zip-overlapping-bomb", file=overlapping_bomb(),
             expect=job("FAILED", "documents_failed", ["zip_ratio_exceeded"] * 200)),
        dict(name="zip-lying-sizes", file=lying_sizes(zip_of([("a.pdf", invoice_pdf + b"\x00" * 500_000)]), 100),
             expect=job("FAILED", "invalid_zip", ["invalid_zip"])),
        dict(name="zip-empty", file=zip_of([]), expect=job("FAILED", "zip_empty", ["zip_empty"])),
        dict(name="zip-only-ignored", file=zip_of([("__MACOSX/._a.pdf", b"x"), (".DS_Store", b"x"), ("d/", b"")]),
             expect=job("FAILED", "zip_empty", ["zip_empty"])),
        dict(name="zip-truncated", file=zip_of([("a.pdf", invoice_pdf)])[:-30],
             expect=job("FAILED", "invalid_zip", ["invalid_zip"])),
        dict(name="zip-too-many-entries", file=zip_of([(f"{i}.txt", b"") for i in range(1001)], zipfile.ZIP_STORED),
             expect=job("FAILED", "zip_too_many_entries", ["zip_too_many_entries"])),
        # PDFs
        dict(name="pdf-corrupt", file=b"%PDF-1.7\n" + bytes(range(256)) * 64, expect=failed_doc("corrupt_document")),
        # hayro recovers what it can: the page tree survives, its text does not.
        dict(name="pdf-truncated", file=invoice_pdf[:300], expect=failed_doc("template_mismatch")),
        dict(name="pdf-encrypted-empty-password", file=encrypted_pdf(), expect=job("SUCCESS", None, [ok])),
        dict(name="pdf-password-protected", file=encrypted_pdf(b"s3cret"), expect=failed_doc("encrypted_pdf")),
        dict(name="pdf-kids-loop", file=pdf([b"<< /Type /Catalog /Pages 2 0 R >>",
                                            b"<< /Type /Pages /Kids [2 0 R 3 0 R] /Count 2 >>",
                                            b"<< /Type /Pages /Parent 2 0 R /Kids [2 0 R] /Count 1 >>"]),
             expect=failed_doc("corrupt_document")),
        dict(name="pdf-length-loop", file=pdf([b"<< /Type /Catalog /Pages 2 0 R >>",
                                              b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
                                              b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R >>",
                                              b"<< /Length 5 0 R >>\nstream\nBT ET\nendstream",
                                              b"4 0 R"]),
             expect=failed_doc("template_mismatch")),
        dict(name="pdf-deep-page-tree", file=deep_page_tree(20_000), expect=failed_doc("template_mismatch")),
        dict(name="pdf-huge-page-count", file=pdf(page_objs(1)[:1] + [b"<< /Type /Pages /Kids [5 0 R] /Count 2000000000 >>"]
                                                   + page_objs(1)[2:]), expect=failed_doc("required_field_missing")),
        dict(name="pdf-over-max-pages", file=pdf(page_objs(501)), expect=failed_doc("page_limit_exceeded")),
        dict(name="pdf-inline-page-tree", file=inline_page_tree(5_000_000), expect=failed_doc("page_limit_exceeded")),
        # A gigabyte from a megabyte, in the streams that hold the objects.
        dict(name="pdf-object-stream-bomb", file=packed_bomb_pdf(objects_mb=1024), expect=failed_doc("stream_too_large")),
        dict(name="pdf-xref-stream-bomb", file=packed_bomb_pdf(table_mb=1024), expect=failed_doc("stream_too_large")),
        dict(name="pdf-40-million-objects", file=listed_objects_pdf(40_000_000), expect=failed_doc("document_too_complex")),
        # A huge page with a text layer needs no rendering; one without needs OCR.
        dict(name="pdf-huge-page", file=pdf(page_objs(1, b"[0 0 14400 14400]")), expect=failed_doc("required_field_missing")),
        dict(name="pdf-huge-page-scan", file=pdf(page_objs(1, b"[0 0 14400 14400]", content=b"")),
             expect=failed_doc("page_too_large")),
        # 400 KB of content painting the page 16,000 times over: the renderer
        # would hold 1.7 GB of drawing commands.
        dict(name="pdf-overdraw-bomb", file=pdf(page_objs(1, content=b"\n".join(
            b"%.2f g 0 0 595 842 re f" % ((i % 100) / 100) for i in range(16_000)))),
             expect=failed_doc("page_too_complex")),
        # Inline images whose end the PDF reader cannot tell at once: a chain
        # of them recursed as deep as it was long (the stack overflowed and
        # the worker aborted), and `EI`s were each checked against every
        # later one (hours).
        dict(name="pdf-inline-image-chain", file=deflated_content_pdf(zlib.compress(
            b"q BI /W 1 /H 1 /BPC 8 /CS /G ID " + b"EI EI BI /W 1 /H 1 /BPC 8 /CS /G ID " * 200_000
            + b"EI Q\n" + INVOICE_LINE)), expect=failed_doc("required_field_missing")),
        dict(name="pdf-inline-image-eis", file=deflated_content_pdf(zlib.compress(
            b"q BI /W 1 /H 1 /BPC 8 /CS /G ID " + b"EI " * 1_000_000 + b"\x80 EI Q\n" + INVOICE_LINE)),
             expect=failed_doc("required_field_missing")),
        # A damaged file is rebuilt by a scan for its objects: unclosed
        # strings made it read the rest of the file at each one (hours).
        dict(name="pdf-damaged-unclosed-strings", file=b"%PDF-1.4\n" + b"1 0 obj ( " * 1_000_000,
             expect=failed_doc("corrupt_document")),
        dict(name="pdf-absurd-mediabox", file=pdf(page_objs(1, b"[0 0 1e30 1e30]")), expect=failed_doc("corrupt_document")),
        dict(name="pdf-image-bomb", file=image_bomb_pdf(), expect=failed_doc("image_too_large")),
        # 300 MB of content from 300 KB, beyond the 256 MB a stream may
        # expand to (max_pdf_stream_bytes); and 600 MB through the lenient reading alone (decoded,
        # a gigabyte of worker memory).
        dict(name="pdf-flate-bomb", file=flate_bomb_pdf(), expect=failed_doc("stream_too_large")),
        dict(name="pdf-flate-bomb-lenient", file=flate_bomb_pdf(lenient=True, megabytes=600),
             expect=failed_doc("stream_too_large")),
        # One 68 MiB content stream (70 KB packed) on eight pages: kept once
        # per page, 544 MiB; and listed four times by one page, joined into
        # 272 MiB.
        dict(name="pdf-content-shared-by-pages", file=big_content_pdf(8), expect=failed_doc("required_field_missing")),
        dict(name="pdf-content-listed-4-times", file=big_content_pdf(1, b"[4 0 R 4 0 R 4 0 R 4 0 R]"),
             expect=failed_doc("stream_too_large")),
        # Images
        dict(name="png-billions-of-pixels", file=png(100_000, 100_000, rows=zlib.compress(b"\x00" * 1000)),
             expect=failed_doc("image_too_large")),
        dict(name="png-truncated", file=invoice_png[:len(invoice_png) // 2], expect=failed_doc("corrupt_document")),
        dict(name="jpeg-billions-of-pixels", file=jpeg_resized(jpeg, 65_000, 65_000), expect=failed_doc("image_too_large")),
        dict(name="jpeg-header-only", file=jpeg_header(65_000, 65_000), expect=failed_doc("corrupt_document")),
        # The decoder keeps the rows it could read: the top of the page, without its totals.
        dict(name="jpeg-truncated", file=jpeg[:len(jpeg) // 3], expect=failed_doc("required_field_missing")),
        dict(name="tiff-billions-of-pixels", file=tiff_header(200_000, 200_000), expect=failed_doc("image_too_large")),
        dict(name="tiff-truncated", file=tiff[:len(tiff) // 2], expect=failed_doc("corrupt_document")),
        dict(name="tiff-zero-pages", file=tiff_header(0, 0, ifd=False), expect=failed_doc("corrupt_document")),
        dict(name="polyglot-pdf-zip", file=invoice_pdf + zip_of([("a.pdf", invoice_pdf)]), expect=job("SUCCESS", None, [ok])),
        dict(name="polyglot-png-zip", file=invoice_png + zip_of([("a.pdf", invoice_pdf)]), expect=job("SUCCESS", None, [ok])),
        dict(name="polyglot-zip-pdf", file=zip_of([("a.pdf", invoice_pdf)]) + invoice_pdf, expect=job("SUCCESS", None, [ok])),
        # Refused at the door
        dict(name="wrong-magic-gif", file=b"GIF89a" + b"\x00" * 100, expect=http(415, "unsupported_document_type")),
        dict(name="wrong-magic-text", file=b"Invoice No: 42\nTotal Due: 1.00\n", expect=http(415, "unsupported_document_type")),
        # PDF readers accept junk before %PDF (within 1 KiB), and so does the sniffer.
        dict(name="pdf-magic-late", file=b"\n\n  junk %PDF-1.4", expect=failed_doc("corrupt_document")),
        dict(name="invalid-base64", request=("application/json", json.dumps(static_job(template_id, actual_image="%%%%")).encode()),
             expect=http(422, "invalid_base64")),
        dict(name="base64-bad-length", request=("application/json", json.dumps(static_job(template_id, actual_image="QUJDQ")).encode()),
             expect=http(422, "invalid_base64")),
        dict(name="huge-json", request=("application/json", json.dumps(static_job(
            template_id, actual_image=base64.b64encode(b"%PDF-1.4\n" + b"\x00" * 30_000_000).decode())).encode()),
             expect=http(413, "document_too_large")),
        dict(name="huge-static-values", request=("application/json", json.dumps(static_job(
            template_id, static_values={f"k{i}": "v" * 100 for i in range(2000)})).encode()),
             expect=http(422, "invalid_static_values")),
        # 28 MB of numbers (the body limit allows it): a parsed JSON value
        # takes 32 bytes each, 450 MB before any size check.
        dict(name="static-values-huge-array", request=("application/json", (
            '{"template_id": "%s", "actual_image": "%s", "static_values": {"a": [%s0]}}' % (
                template_id, base64.b64encode(invoice_pdf).decode(), "0," * 14_000_000)).encode()),
             expect=http(422, "invalid_static_values")),
        dict(name="template-id-huge-array", request=("application/json", (
            '{"template_id": [%s0], "actual_image": "%s"}' % (
                "0," * 14_000_000, base64.b64encode(invoice_pdf).decode())).encode()),
             expect=http(422, "invalid_template_id")),
        dict(name="deep-static-values", request=("application/json", (
            '{"template_id": "%s", "actual_image": "%s", "static_values": %s}' % (
                template_id, base64.b64encode(invoice_pdf).decode(), deep)).encode()),
             expect=http(422, "invalid_static_values")),
        dict(name="deep-json-array", request=("application/json", b"[" * 100_000 + b"]" * 100_000),
             expect=http(400, "malformed_json")),
        dict(name="multipart-no-boundary", request=("multipart/form-data", b"--x\r\n\r\n"),
             expect=http(400, "malformed_body")),
        dict(name="multipart-wrong-boundary", request=harness.multipart_raw(
            template_id, invoice_pdf, header_boundary="AAA", body_boundary="BBB"), expect=http(400, "malformed_body")),
        dict(name="multipart-no-file", request=harness.multipart_raw(template_id, None),
             expect=http(422, "missing_field")),
        dict(name="not-json-or-multipart", request=("application/x-www-form-urlencoded", b"template_id=x"),
             expect=http(415, "unsupported_media_type")),
    ]
    return out


if __name__ == "__main__":
    target = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "corpus-out")
    target.mkdir(exist_ok=True)
    for case in cases("00000000-0000-0000-0000-000000000000"):
        data = case.get("file") or case["request"][1]
        (target / case["name"]).write_bytes(data)
        print(f"{case['name']:32} {len(data):>9} bytes  {case['expect']}")
