"""Validate an uploaded PDF and extract its text page by page.

The extension and content type are chosen by the client, so they prove
nothing: the file must start with the PDF magic bytes *and* parse. Every
refusal is an UploadRejected with a reason (metric label) and a sentence the
user can act on.

Extraction is bounded (``PdfLimits``): pages, extracted characters and chunks are
counted while the text is extracted and the work stops at the first bound passed,
and pypdf's own decompression limits are set from the same settings. The backend
runs this code in a child process with memory and CPU limits (``pdf_worker``), so
a PDF that slips past these counts still cannot take the server down.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO

from pypdf import PdfReader, apply_configuration
from pypdf.errors import DependencyError, LimitReachedError

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


@dataclass(frozen=True)
class PdfLimits:
    """Bounds on one document's extraction (QUERYGPT_PDF_* settings, config.py).

    ``max_stream_bytes`` caps what any one stream may inflate to (pypdf's
    decompression limits); chunks are counted with the chunking settings so the
    bound is the number of chunks the indexer would embed.
    """

    max_pages: int = 1000
    max_chars: int = 2_000_000
    max_chunks: int = 5000
    max_stream_bytes: int = 4 * 1024 * 1024
    chunk_size: int = 600
    chunk_overlap: int = 90
    chunk_unit: str = "chars"


class _TooMuchText(Exception):
    """Raised from pypdf's text visitor to stop a page's extraction mid-way."""


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


def extract_pages(data: bytes, limits: PdfLimits | None = None) -> list[PageText]:
    """Check that ``data`` is a readable PDF and return the text of its pages.

    Pages without text are kept out of the result; if no page has text the
    upload is refused, since there would be nothing to search. Stops with a 413
    as soon as a bound of ``limits`` is passed.
    """
    limits = limits or PdfLimits()
    check_header(data)
    with _pypdf_limits(limits):
        reader = _open(data, limits)
        page_count = len(reader.pages)
        if page_count > limits.max_pages:
            raise too_many_pages(page_count, limits.max_pages)
        pages = _extract(reader, limits)
    if not pages:
        raise UploadRejected(
            "no_text",
            "The PDF contains no extractable text (is it a scanned image?); "
            "run it through OCR or export it with text and upload again.",
            status_code=422,
        )
    return pages


def check_header(data: bytes) -> None:
    """The cheap checks, done before any parsing (and before starting a worker)."""
    if not data:
        raise UploadRejected("empty", "The uploaded file is empty.", status_code=400)
    if PDF_MAGIC not in data[:_MAGIC_WINDOW]:
        raise UploadRejected(
            "not_pdf",
            "The uploaded file is not a PDF (it does not start with '%PDF-'); "
            "export the schema documentation as PDF and upload that.",
            status_code=415,
        )


def _extract(reader: PdfReader, limits: PdfLimits) -> list[PageText]:
    from .chunking import count_chunks  # chunking imports PageText from here

    pages: list[PageText] = []
    chars = 0
    chunks = 0

    def count(text: Any, *_: Any) -> None:
        nonlocal chars
        chars += len(text)
        if chars > limits.max_chars:
            raise _TooMuchText

    try:
        for index, page in enumerate(reader.pages):
            text = _normalize(page.extract_text(visitor_text=count) or "")
            if not text:
                continue
            chunks += count_chunks(
                text, limits.chunk_size, limits.chunk_overlap, limits.chunk_unit
            )
            if chunks > limits.max_chunks:
                raise too_many_chunks(index + 1, limits.max_chunks)
            pages.append(PageText(number=index + 1, text=text))
    except UploadRejected:
        raise
    except DependencyError as exc:
        raise _encrypted(exc) from exc
    except _TooMuchText:
        raise too_much_text(len(pages) + 1, limits.max_chars) from None
    except LimitReachedError as exc:
        raise parser_limit(limits.max_stream_bytes, exc) from None
    except MemoryError:  # an Exception too, but the worker's memory limit: not "damaged"
        raise
    except Exception as exc:  # pypdf raises many types on malformed content
        log.info("pdf text extraction failed", extra={"error": repr(exc)})
        raise _corrupt() from exc
    return pages


@contextmanager
def _pypdf_limits(limits: PdfLimits) -> Iterator[None]:
    """pypdf's own resource limits, set explicitly rather than left at its defaults.

    Every decompression filter stops at ``max_stream_bytes`` of output, and the
    accumulated work per stream (filter chains, content-stream parsing) is capped in
    proportion, so one stream cannot inflate to gigabytes before a count is made.
    """
    cap = limits.max_stream_bytes
    with apply_configuration(
        zlib_maximum_output_length=cap,
        lzw_maximum_output_length=cap,
        run_length_maximum_output_length=cap,
        brotli_maximum_output_length=cap,
        jbig2_maximum_output_length=cap,
        array_based_stream_maximum_output_length=cap,
        image_maximum_buffer_size=cap,
        stream_decoding_work_maximum_length=4 * cap,
        # Operators + operands per content stream. A parsed token costs ~150 bytes of
        # memory, so pypdf's default (2 million) alone needs ~300 MiB; one token per 8
        # bytes of stream is far above real pages (a dense page of text is ~10,000).
        stream_parsing_work_maximum_count=max(cap // 8, 50_000),
        page_tree_maximum_entries=max(limits.max_pages * 4, 10_000),
        jbig2dec_binary=None,  # text extraction never needs an external image decoder
    ):
        yield


def too_many_pages(pages: int, max_pages: int) -> UploadRejected:
    return UploadRejected(
        "too_many_pages",
        f"The PDF has {pages} pages, more than the {max_pages}-page limit; split it into "
        "smaller documents (or raise QUERYGPT_PDF_MAX_PAGES) and upload those.",
        status_code=413,
    )


def too_much_text(page: int, max_chars: int) -> UploadRejected:
    return UploadRejected(
        "too_much_text",
        f"The PDF holds more than the {max_chars} characters of text one document may have "
        f"(passed on page {page}); split it into smaller documents (or raise "
        "QUERYGPT_PDF_MAX_CHARS) and upload those.",
        status_code=413,
    )


def too_many_chunks(page: int, max_chunks: int) -> UploadRejected:
    return UploadRejected(
        "too_many_chunks",
        f"The PDF would be indexed as more than {max_chunks} chunks (passed on page {page}); "
        "split it into smaller documents (or raise QUERYGPT_PDF_MAX_CHUNKS) and upload those.",
        status_code=413,
    )


def parser_limit(max_bytes: int, exc: Exception) -> UploadRejected:
    """pypdf stopped at one of its limits (_pypdf_limits): usually a stream that
    inflates past ``max_bytes``, else an oversized page tree or object."""
    log.info("pdf over a parser limit", extra={"error": repr(exc)})
    return UploadRejected(
        "parser_limit",
        "The PDF has a stream or structure larger than this server reads (a stream may "
        f"inflate to at most {_human_size(max_bytes)}; the parser said: {str(exc)[:160]}); "
        "re-export the document (print to PDF) or split it, or raise "
        "QUERYGPT_PDF_MAX_STREAM_BYTES.",
        status_code=413,
    )


def _open(data: bytes, limits: PdfLimits) -> PdfReader:
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            _decrypt_or_reject(reader)
        len(reader.pages)  # forces the page tree to be parsed
    except UploadRejected:
        raise
    except LimitReachedError as exc:
        raise parser_limit(limits.max_stream_bytes, exc) from None
    except MemoryError:
        raise
    except Exception as exc:  # PyPdfError, but also ValueError/KeyError/...
        log.info("pdf parse failed", extra={"error": repr(exc)})
        raise _corrupt() from exc
    return reader


def _decrypt_or_reject(reader: PdfReader) -> None:
    """Open PDFs that are only restricted by an owner password; refuse others.

    Many exported documents are "encrypted" with an empty user password just
    to forbid editing; those open and are indexed (RC4 and AES alike: AES needs
    the ``cryptography`` package, a dependency of the backend). A real user
    password cannot be guessed, so such a PDF is refused with that reason.
    """
    try:
        opened = reader.decrypt("")
    except DependencyError as exc:
        raise _encrypted(exc) from exc
    if not opened:
        raise _encrypted()


def _encrypted(missing: DependencyError | None = None) -> UploadRejected:
    if missing is not None:
        # cryptography is a dependency of the wheel: this is a broken install, say so.
        log.error("cannot decrypt the PDF: pypdf lacks a dependency", extra={"error": str(missing)})
    return UploadRejected(
        "encrypted",
        "The PDF is encrypted; upload a copy without a password.",
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
