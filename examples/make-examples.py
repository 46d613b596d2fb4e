#!/usr/bin/env python3
"""Writes examples/invoice.pdf (a one-page digital invoice with a text layer)
and, with poppler's pdftoppm, examples/invoice.png (the same page as a
150 DPI scan). Run from the repository root: python3 examples/make-examples.py
"""
import subprocess, zlib, pathlib

HERE = pathlib.Path(__file__).parent
LINES = [
    # (x, y, size, text) in PDF points, origin bottom-left of an A4 page.
    (56, 780, 22, "ACME Supplies Ltd"),
    (56, 756, 10, "12 Harbour Road, Bristol BS1 4DJ"),
    (380, 780, 18, "INVOICE"),
    (380, 750, 11, "Invoice No: INV-2026-0042"),
    (380, 734, 11, "Invoice Date: 14/11/2026"),
    (380, 718, 11, "Due Date: 14/12/2026"),
    (56, 690, 11, "Bill To: Globex Corporation"),
    (56, 640, 11, "Description"),
    (330, 640, 11, "Qty"),
    (400, 640, 11, "Unit Price"),
    (490, 640, 11, "Amount"),
    (56, 620, 11, "Paper A4 box"),
    (330, 620, 11, "3"),
    (400, 620, 11, "24.50"),
    (490, 620, 11, "73.50"),
    (56, 604, 11, "Toner cartridge"),
    (330, 604, 11, "2"),
    (400, 604, 11, "89.00"),
    (490, 604, 11, "178.00"),
    (56, 588, 11, "Stapler"),
    (330, 588, 11, "1"),
    (400, 588, 11, "12.25"),
    (490, 588, 11, "12.25"),
    (380, 550, 11, "Subtotal: 263.75"),
    (380, 534, 11, "VAT 20%: 52.75"),
    (380, 514, 13, "Total Due: 316.50 GBP"),
]

def esc(s):
    return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

def pdf():
    content = "".join(
        f"BT /F1 {size} Tf {x} {y} Td ({esc(t)}) Tj ET\n" for x, y, size, t in LINES
    ).encode()
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    z = zlib.compress(content)
    objs.append(b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(z) + z + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return bytes(out)

(HERE / "invoice.pdf").write_bytes(pdf())
subprocess.run(
    ["pdftoppm", "-r", "150", "-gray", "-png", "-singlefile", str(HERE / "invoice.pdf"), str(HERE / "invoice")],
    check=True,
)
print("wrote examples/invoice.pdf and examples/invoice.png")
