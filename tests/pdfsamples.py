"""Small PDF files written by hand for the preview tests (PDF 1.4: a
catalog, a page tree, pages and their content streams, and the cross-reference
table of byte offsets every reader starts from)."""

from __future__ import annotations

import zlib


def _assemble(objs: list[bytes], info: bytes | None = None) -> bytes:
    """The PDF file of ``objs`` (object 1 the catalog); ``info``: a document
    information dictionary (PDF 1.7 14.3.3) added as the last object."""
    if info is not None:
        objs = [*objs, info]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objs):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % (i + 1) + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    trailer_info = b" /Info %d 0 R" % len(objs) if info is not None else b""
    out += b"trailer\n<< /Size %d /Root 1 0 R%s >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, trailer_info, xref)
    return bytes(out)


def text_pdf(pages: list[str], info: bytes | None = None) -> bytes:
    """A valid PDF of A4 pages (595 x 842 pt), each with one line of large
    Helvetica text (``pages``: ASCII without parentheses or backslashes);
    ``info``: its document information dictionary, if any."""
    n = len(pages)
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(n))
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>",
            f"<< /Type /Pages /Kids [{kids}] /Count {n} >>".encode(),
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    for i, text in enumerate(pages):
        stream = f"BT /F1 48 Tf 72 700 Td ({text}) Tj ET".encode()
        objs.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
                    f"/Resources << /Font << /F1 3 0 R >> >> /Contents {5 + 2 * i} 0 R >>".encode())
        objs.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    return _assemble(objs, info)


def slow_pdf(fills: int = 200_000, pages: int = 5) -> bytes:
    """A decompression bomb that is slow to draw: ``pages`` pages sharing
    one Flate content stream of ``fills`` page-sized filled rectangles
    (about 14 KB on disk for 200 000 fills, 5.6 MB of operators inflated)."""
    content = zlib.compress(b"1 0 0 rg 10 10 500 700 re f\n" * fills, 9)
    kids = " ".join(f"{4 + i} 0 R" for i in range(pages))
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>",
            f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode(),
            b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(content) + content + b"\nendstream"]
    objs += [b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 3 0 R >>"] * pages
    return _assemble(objs)


def image_bomb(side: int = 20_000) -> bytes:
    """A one-page PDF holding a ``side`` x ``side`` RGB image of zeros under
    FlateDecode: about 1.2 MB on disk for 20 000, 1.2 GB of pixels inflated."""
    packer = zlib.compressobj(9)
    row = b"\x00" * (side * 3)
    data = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    content = b"q 595 0 0 842 0 0 cm /Im1 Do Q"
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
            b"/Resources << /XObject << /Im1 5 0 R >> >> /Contents 4 0 R >>",
            b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
            b"<< /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceRGB "
            b"/BitsPerComponent 8 /Filter /FlateDecode /Length %d >>\nstream\n" % (side, side, len(data))
            + data + b"\nendstream"]
    return _assemble(objs)
