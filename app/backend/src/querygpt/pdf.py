"""Validate an uploaded PDF and extract its text page by page.

The extension and content type are chosen by the client, so they prove
nothing: the file must start with the PDF magic bytes *and* parse. Every
refusal is an UploadRejected with a reason (metric label) and a sentence the
user can act on.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import BinaryIO

from pypdf import PdfReader
from pypdf.errors import DependencyError

from .errors import UploadRejected

log = logging.getLogger(__name__)

PDF_MAGIC = b"%PDF-"
# Readers accept the header anywhere in the first 1024 bytes (PDF 1.7, 7.5.2).
_MAGIC_WINDOW = 1024
_READ_BLOCK = 1024 * 1024


@dataclass(frozen=True)
class PageText:
    """Text of one page; ``number`` is 1-based like a PDF viewer shows it."""

    number: int
    text: str


def read_limited(stream: BinaryIO, max_bytes: int) -> bytes:
    """Read ``stream`` but stop as soon as it exceeds ``max_bytes`` (413)."""
    buffer = bytearray()
    while True:
        block = stream.read(min(_READ_BLOCK, max_bytes + 1 - len(buffer)))
        if not block:
            return bytes(buffer)
        buffer.extend(block)
        if len(buffer) > max_bytes:
            raise too_large(max_bytes)


def too_large(max_bytes: int) -> UploadRejected:
    return UploadRejected(
        "too_large",
        f"File is larger than the {_human_size(max_bytes)} upload limit; "
        "split the document or raise QUERYGPT_MAX_UPLOAD_BYTES.",
        status_code=413,
    )


def extract_pages(data: bytes) -> list[PageText]:
    """Check that ``data`` is a readable PDF and return the text of its pages.

    Pages without text are kept out of the result; if no page has text the
    upload is refused, since there would be nothing to search.
    """
    if not data:
        raise UploadRejected("empty", "The uploaded file is empty.", status_code=400)
    if PDF_MAGIC not in data[:_MAGIC_WINDOW]:
        raise UploadRejected(
            "not_pdf",
            "The uploaded file is not a PDF (it does not start with '%PDF-'); "
            "export the schema documentation as PDF and upload that.",
            status_code=415,
        )
    reader = _open(data)
    pages: list[PageText] = []
    try:
        for index, page in enumerate(reader.pages):
            text = _normalize(page.extract_text() or "")
            if text:
                pages.append(PageText(number=index + 1, text=text))
    except UploadRejected:
        raise
    except Exception as exc:  # pypdf raises many types on malformed content
        log.info("pdf text extraction failed", extra={"error": repr(exc)})
        raise _corrupt() from exc
    if not pages:
        raise UploadRejected(
            "no_text",
            "The PDF contains no extractable text (is it a scanned image?); "
            "run it through OCR or export it with text and upload again.",
            status_code=422,
        )
    return pages


def _open(data: bytes) -> PdfReader:
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            _decrypt_or_reject(reader)
        len(reader.pages)  # forces the page tree to be parsed
    except UploadRejected:
        raise
    except Exception as exc:  # PyPdfError, but also ValueError/KeyError/...
        log.info("pdf parse failed", extra={"error": repr(exc)})
        raise _corrupt() from exc
    return reader


def _decrypt_or_reject(reader: PdfReader) -> None:
    """Open PDFs that are only restricted by an owner password; refuse others.

    Many exported documents are "encrypted" with an empty user password just
    to forbid editing; those open fine. A real password cannot be guessed.
    """
    try:
        opened = reader.decrypt("")
    except DependencyError as exc:
        raise UploadRejected(
            "encrypted",
            "The PDF is encrypted with AES and this server cannot decrypt it; "
            "remove the encryption (print to PDF) and upload again.",
            status_code=422,
        ) from exc
    if not opened:
        raise UploadRejected(
            "encrypted",
            "The PDF is password-protected; remove the password and upload again.",
            status_code=422,
        )


def _corrupt() -> UploadRejected:
    return UploadRejected(
        "corrupt",
        "The PDF is damaged and cannot be read; re-export it and upload again.",
        status_code=422,
    )


def _normalize(text: str) -> str:
    """Collapse runs of spaces per line and drop blank lines.

    Keeps line breaks, since schema docs are often tables where a line is a
    column definition.
    """
    lines = (" ".join(line.split()) for line in text.splitlines())
    return "\n".join(line for line in lines if line)


def _human_size(n: int) -> str:
    if n >= 1024 * 1024 and n % (1024 * 1024) == 0:
        return f"{n // (1024 * 1024)} MiB"
    if n >= 1024 and n % 1024 == 0:
        return f"{n // 1024} KiB"
    return f"{n} bytes"
