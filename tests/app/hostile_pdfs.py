"""Hostile PDFs, generated (never stored): small files that cost a naive reader
gigabytes or minutes. Shared by tests/app/test_backend_pdf_limits.py and
benchmarks/upload_bounds.py.

The PDFs are written by hand (objects, xref, trailer) because reportlab will not
produce them. Compressed streams are built block by block: a 1 MiB block of
repeated text deflated after a full flush encodes to the same bytes every time,
so a stream that inflates to gigabytes costs one block's compression, not a
gigabyte's, and still carries a correct adler32 (a valid zlib stream).
"""

from __future__ import annotations

import zlib

_BLOCK = 1024 * 1024
#: A text operator sequence for Helvetica; 32 bytes, so a 1 MiB block holds it whole.
TEXT_OPS = b"BT /F1 9 Tf 9 9 Td (AAAA) Tj ET\n"
#: A matrix operator that shows no text: parsing costs CPU, extraction yields nothing.
CM_OPS = b"1 0 0 1 0 0 cm \n"

_FONT = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"


def inflating_zlib(pattern: bytes, size: int) -> bytes:
    """A zlib stream inflating to ``pattern`` repeated over ``size`` bytes
    (rounded down to whole 1 MiB blocks; ``pattern`` must divide 1 MiB evenly or
    the blocks just repeat the first one's tail)."""
    block = (pattern * (_BLOCK // len(pattern) + 1))[:_BLOCK]
    blocks = max(1, size // _BLOCK)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)
    parts = [first]
    if blocks > 1:
        repeat = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)
        parts.append(repeat * (blocks - 1))
    parts.append(c.flush(zlib.Z_FINISH))
    assert _BLOCK % len(pattern) == 0, "the pattern must tile a block exactly"
    adler = 1
    for _ in range(blocks):
        adler = zlib.adler32(block, adler)
    return b"\x78\xda" + b"".join(parts) + adler.to_bytes(4, "big")


def build_pdf(objects: list[bytes], page_ids: list[int]) -> bytes:
    """A PDF whose objects 3.. are ``objects``; 1 is the catalog, 2 the page tree
    listing ``page_ids`` (object numbers among ``objects``)."""
    kids = b" ".join(b"%d 0 R" % n for n in page_ids)
    every = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [" + kids + b"] /Count %d >>" % len(page_ids),
        *objects,
    ]
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(every, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(every) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(every) + 1,
        xref,
    )
    return bytes(out)


def _stream(data: bytes, *, flate: bool) -> bytes:
    extra = b" /Filter /FlateDecode" if flate else b""
    return b"<< /Length %d%s >>\nstream\n" % (len(data), extra) + data + b"\nendstream"


def _page(contents: bytes, extra: bytes = b"") -> bytes:
    return (
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /Font << /F1 3 0 R >> >> /Contents " + contents + extra + b" >>"
    )


def shared_stream_pdf(pages: int, inflated: int, pattern: bytes = TEXT_OPS) -> bytes:
    """``pages`` pages whose /Contents all reference one FlateDecode stream that
    inflates to ``inflated`` bytes of ``pattern``: the measured 138 KB bomb is
    ``shared_stream_pdf(10, 70 * 2**20)``."""
    objects = [_FONT, _stream(inflating_zlib(pattern, inflated), flate=True)]
    objects += [_page(b"4 0 R") for _ in range(pages)]
    return build_pdf(objects, list(range(5, 5 + pages)))


def pdf_bomb() -> bytes:
    """The issue's PDF: 10 pages sharing one stream of ~70 MiB of text operators."""
    return shared_stream_pdf(10, 70 * 1024 * 1024)


def zip_bomb(inflated: int = 2 * 1024**3) -> bytes:
    """One page, one stream inflating to ``inflated`` bytes (2 GiB by default)."""
    return shared_stream_pdf(1, inflated)


def nested_arrays_pdf(depth: int = 100_000, where: str = "page") -> bytes:
    """Arrays nested ``depth`` deep, in the page dictionary or in its content stream."""
    nested = b"[" * depth + b"]" * depth
    if where == "page":
        objects = [_FONT, _stream(TEXT_OPS, flate=False), _page(b"4 0 R", b" /Nested " + nested)]
    else:
        objects = [_FONT, _stream(TEXT_OPS + nested + b" TJ\n", flate=False), _page(b"4 0 R")]
    return build_pdf(objects, [5])


def many_pages_pdf(pages: int) -> bytes:
    """``pages`` small pages of text sharing one content stream (~70 bytes a page)."""
    objects = [_FONT, _stream(TEXT_OPS, flate=False)]
    objects += [_page(b"4 0 R") for _ in range(pages)]
    return build_pdf(objects, list(range(5, 5 + pages)))


def encrypted(data: bytes, user_password: str, algorithm: str) -> bytes:
    import io

    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    writer.encrypt(user_password, owner_password="owner-secret", algorithm=algorithm)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def main() -> None:
    """Write the PDFs the backend role's molecule scenario uploads on its instance:
    ``hostile_pdfs.py OUT_DIR SCHEMA_PDF``."""
    import sys
    from pathlib import Path

    out, schema = Path(sys.argv[1]), Path(sys.argv[2]).read_bytes()
    out.mkdir(parents=True, exist_ok=True)
    (out / "bomb.pdf").write_bytes(pdf_bomb())
    (out / "aes-open.pdf").write_bytes(encrypted(schema, "", "AES-256"))
    (out / "aes-locked.pdf").write_bytes(encrypted(schema, "user-secret", "AES-256"))


if __name__ == "__main__":
    main()
