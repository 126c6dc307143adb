"""Response compression negotiated the way upstream's HTTP server does it.

LAB TEST FIXTURE (QueryGPT Qdrant stand-in, NOT Qdrant).

Why: Qdrant wraps its REST API in actix-web's ``Compress`` middleware, so every
client that sends ``Accept-Encoding: gzip`` (requests, httpx and the official
qdrant-client all do by default) receives compressed bodies, snapshot downloads
included. A client that hashes or forwards the bytes it receives must ask for
``identity``; a stand-in that never compressed let that bug pass every lab test.
This module reproduces actix-web 4's rules (``AcceptEncoding::negotiate``,
``Compress`` and ``actix_http::encoding::Encoder``) with the stdlib's zlib only:

- negotiation: highest q-value first; equal q-values ranked br > zstd > gzip >
  deflate > other codings > identity/``*``; an explicit ``identity`` may win; no or
  an unparsable header means identity; identity excluded (``identity;q=0`` or
  ``*;q=0``) with no supported coding left gives 406 listing the supported codings;
- encoding is skipped for empty bodies, 101/204/206 responses, ``image/*`` (except
  SVG) and ``video/*`` content types, and responses that already carry a
  ``Content-Encoding``;
- an encoded response gets ``Content-Encoding`` and ``Vary: accept-encoding`` and
  its length is unknown up front (chunked on HTTP/1.1), like actix's
  ``BodySize::Stream``.

Only gzip and deflate are produced: br and zstd need libraries Debian 12's
python3 does not ship. A client offering only br or zstd gets identity here but
a compressed body from Qdrant (see the README).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Iterator

IDENTITY = "identity"
SUPPORTED = ("gzip", "deflate")  # the codings this stand-in can produce
# actix-web's server ranking between codings of equal q-value (encoding_rank).
_RANK = {"br": 5, "zstd": 4, "gzip": 3, "deflate": 2, IDENTITY: 0, "*": 0}
_QUALITY = re.compile(r"^(?:0(?:\.\d{0,3})?|1(?:\.0{0,3})?)$")
_TOKEN = re.compile(r"^(?:\*|[!#$%&'*+.^_`|~0-9A-Za-z-]+)$")
# flate2::Compression::fast(), the level actix uses for gzip and deflate.
_LEVEL = 1
# wbits for zlib: 16 + 15 writes a gzip member (RFC 1952), 15 a zlib stream (RFC 1950),
# which is what HTTP's "deflate" coding means and what actix's ZlibEncoder writes.
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
NOT_ACCEPTABLE_BODY = ", ".join(SUPPORTED)


def _parse(header: str) -> list[tuple[str, int]] | None:
    """(coding, q in thousandths) items, or None when the header does not parse.

    actix reads an unparsable Accept-Encoding as no header at all (identity)."""
    items: list[tuple[str, int]] = []
    for part in header.split(","):
        if not part.strip():
            continue
        token, *params = (p.strip() for p in part.split(";"))
        if not _TOKEN.match(token):
            return None
        quality = 1000
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() != "q" or not _QUALITY.match(value.strip()):
                return None
            quality = round(float(value.strip()) * 1000)
        items.append((token.lower(), quality))
    return items


def _rank(item: tuple[str, int]) -> int:
    coding, quality = item
    return 0 if quality == 0 else _RANK.get(coding, 1)


def negotiate(header: str | None) -> str | None:
    """The coding to answer with (``identity``, ``gzip``, ``deflate``), None for 406.

    ``header`` is every Accept-Encoding field of the request joined with commas, or
    None when the request has none."""
    items = None if header is None else _parse(header)
    if not items:
        return IDENTITY
    ranked = sorted(items, key=lambda item: (-item[1], -_rank(item)))  # stable: listed order
    identity_acceptable = next(
        (quality > 0 for coding, quality in ranked if coding in (IDENTITY, "*")), True)
    for coding, quality in ranked:
        if quality > 0 and coding in (IDENTITY, *SUPPORTED):
            return coding
    return IDENTITY if identity_acceptable else None


def should_encode(status: int, content_type: str, has_body: bool, headers: dict[str, str]) -> bool:
    """actix's Compress predicate and Encoder::response checks, in one place."""
    if not has_body or status in (101, 204, 206):
        return False
    if any(name.lower() == "content-encoding" for name in headers):
        return False
    mime = content_type.split(";", 1)[0].strip().lower()
    major, _, minor = mime.partition("/")
    if major == "image":
        return minor == "svg+xml"
    return major != "video"


def encode(coding: str, chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The ``coding`` of the concatenated ``chunks``, yielded as the compressor emits it."""
    compressor = zlib.compressobj(_LEVEL, zlib.DEFLATED, _WBITS[coding])
    for chunk in chunks:
        out = compressor.compress(chunk)
        if out:
            yield out
    tail = compressor.flush()
    if tail:
        yield tail
