"""PDF validation: magic bytes *and* a successful parse, with a reason for
every refusal (PDFs are generated with reportlab, encrypted with pypdf)."""

from __future__ import annotations

import io

import pytest
from querygpt.errors import UploadRejected
from querygpt.pdf import extract_pages, read_limited
from querygpt_testkit import encrypt_pdf, make_pdf


def _rejected(data: bytes) -> UploadRejected:
    with pytest.raises(UploadRejected) as info:
        extract_pages(data)
    return info.value


def test_normal_pdf_gives_text_per_page(schema_pdf: bytes) -> None:
    pages = extract_pages(schema_pdf)
    assert [p.number for p in pages] == [1, 2]
    assert "customers.id INTEGER PRIMARY KEY" in pages[0].text
    assert "orders.customer_id" in pages[1].text


def test_blank_pages_are_skipped_but_numbering_is_kept() -> None:
    data = make_pdf([["first"]], blank_pages=1) + b""
    pages = extract_pages(data)
    assert [(p.number, p.text) for p in pages] == [(1, "first")]
    later = make_pdf([["a"], [], ["c"]])
    assert [p.number for p in extract_pages(later)] == [1, 3]


def test_empty_file() -> None:
    error = _rejected(b"")
    assert (error.reason, error.status_code) == ("empty", 400)


@pytest.mark.parametrize(
    "data",
    [b"hello, this is text", b"\x89PNG\r\n\x1a\n" + b"\0" * 64, b"PK\x03\x04 pretend docx"],
)
def test_not_a_pdf(data: bytes) -> None:
    error = _rejected(data)
    assert (error.reason, error.status_code) == ("not_pdf", 415)
    assert "not a PDF" in error.detail


def test_pdf_header_on_garbage_is_corrupt() -> None:
    error = _rejected(b"%PDF-1.7\n" + bytes(range(256)) * 10)
    assert (error.reason, error.status_code) == ("corrupt", 422)


def test_truncated_pdf_is_corrupt(schema_pdf: bytes) -> None:
    error = _rejected(schema_pdf[: len(schema_pdf) // 3])
    assert error.reason in ("corrupt", "no_text")
    assert error.status_code == 422


def test_pdf_without_text() -> None:
    error = _rejected(make_pdf([], blank_pages=2))
    assert (error.reason, error.status_code) == ("no_text", 422)
    assert "OCR" in error.detail


@pytest.mark.parametrize("algorithm", ["RC4-128", "AES-256"])
def test_password_protected_pdf(schema_pdf: bytes, algorithm: str) -> None:
    error = _rejected(encrypt_pdf(schema_pdf, "user-secret", algorithm=algorithm))
    assert (error.reason, error.status_code) == ("encrypted", 422)
    assert "password" in error.detail


def test_owner_password_only_pdf_is_readable(schema_pdf: bytes) -> None:
    pages = extract_pages(encrypt_pdf(schema_pdf, "", algorithm="RC4-128"))
    assert "customers" in pages[0].text


def test_read_limited_stops_at_limit() -> None:
    assert read_limited(io.BytesIO(b"x" * 100), 100) == b"x" * 100

    class Endless(io.RawIOBase):
        reads = 0

        def readable(self) -> bool:
            return True

        def read(self, n: int = -1) -> bytes:
            Endless.reads += 1
            return b"y" * (n if n > 0 else 10)

    with pytest.raises(UploadRejected) as info:
        read_limited(Endless(), 5 * 1024 * 1024)  # type: ignore[arg-type]
    assert (info.value.reason, info.value.status_code) == ("too_large", 413)
    assert Endless.reads <= 7, "stops reading right after passing the limit"
