"""Lab test fixture: request-body framing, so no response leaves a kept-alive connection out of step.

http.server hands the handler a raw socket file: bytes of a request body that
nobody reads stay in it and are parsed as the next request line. The 403, 404
and 405 answers never looked at the body, so a client that reused the
connection (the official `ollama` client does: `copy`, which the stand-in
404s, then `show`) got a garbled reply. Upstream runs on Go's net/http, which
after the handler discards up to 256 KiB of unread body and closes the
connection instead when more is left; RequestBody gives the stand-in the same
rule, for Content-Length and chunked bodies alike.
"""

from __future__ import annotations

from email.message import Message
from typing import BinaryIO

# Go's net/http maxPostHandlerReadBytes: unread body it still discards to keep a connection.
MAX_DRAIN = 256 * 1024


class BodyError(Exception):
    """The request's body framing is unusable; answer 400 and close the connection."""


class RequestBody:
    """The body of one request: read it whole, or settle (discard) what a handler left."""

    def __init__(self, rfile: BinaryIO, headers: Message) -> None:
        self._rfile = rfile
        encoding = (headers.get("Transfer-Encoding") or "").lower()
        self.chunked = "chunked" in encoding
        self._remaining = 0  # Content-Length bytes left, or bytes left in the current chunk
        self._done = False
        self._broken = False  # framing failed: the stream position is unknown, only closing is safe
        if self.chunked:
            return
        length = headers.get("Content-Length")
        if length is None:
            self._done = True
            return
        if not length.strip().isdigit():
            self._done = True  # nothing can be trusted: the caller closes the connection
            raise BodyError(f"invalid Content-Length {length!r}")
        self._remaining = int(length)
        self._done = self._remaining == 0

    @property
    def done(self) -> bool:
        """True once every byte of the body has been consumed."""
        return self._done

    def _read_exact(self, size: int) -> bytes:
        data = self._rfile.read(size)
        if len(data) < size:
            raise BodyError("request body ended early")
        return data

    def _next_chunk(self) -> None:
        """Parse a chunk-size line; a zero-size chunk ends the body after its trailers."""
        line = self._rfile.readline(1024)
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise BodyError("malformed chunked request body") from None
        if size == 0:
            while self._rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                pass
            self._done = True
        self._remaining = size

    def _read_some(self, limit: int) -> bytes:
        """Up to limit bytes of body (fewer at a chunk boundary); b"" at the end."""
        if self._broken:
            raise BodyError("request body already failed to parse")
        try:
            return self._read_framed(limit)
        except BodyError:
            self._broken = True
            raise

    def _read_framed(self, limit: int) -> bytes:
        if self._done:
            return b""
        if self.chunked and self._remaining == 0:
            self._next_chunk()
            if self._done:
                return b""
        data = self._read_exact(min(limit, self._remaining))
        self._remaining -= len(data)
        if self._remaining == 0:
            if self.chunked:
                self._read_exact(2)  # the CRLF after a chunk's data
            else:
                self._done = True
        return data

    def read(self) -> bytes:
        """The whole (remaining) body."""
        parts = []
        while not self._done:
            parts.append(self._read_some(1 << 20))
        return b"".join(parts)

    def settle(self) -> bool:
        """Discard what is left, as Go does; False when too much is left and the connection must close."""
        if self._broken or (not self.chunked and self._remaining > MAX_DRAIN):
            return False
        budget = MAX_DRAIN
        try:
            while not self._done and budget >= 0:
                budget -= len(self._read_some(min(budget + 1, 64 * 1024)))
        except BodyError:
            return False
        return self._done
