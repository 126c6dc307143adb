"""Fidelity of the Ollama LAB STAND-IN (a test fixture, not Ollama): HTTP framing.

No answer, error or not, leaves a request body unread on a kept-alive
connection, as with upstream's Go net/http. Driven with the official `ollama`
client, and with raw HTTP on one socket.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import ollama
import pytest
import test_ollama_standin as base
from test_ollama_standin import (
    GEN,
    Server,
)

mirror = base.mirror  # the module-scoped fixtures, shared rather than copied
shared = base.shared


# ---------------------------------------------------------------- request bodies and keep-alive
def test_copy_then_show_on_one_client(shared: Server) -> None:
    client = shared.client()
    with pytest.raises(ollama.ResponseError) as err:
        client.copy(GEN, "my-copy")  # the stand-in has no /api/copy: a 404 that ignores the body
    assert err.value.status_code == 404
    assert client.show(GEN).capabilities == ["completion"]


def read_response(reader: Any) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response from a socket file (Content-Length or chunked)."""
    status = int(reader.readline().split()[1])
    headers: dict[str, str] = {}
    while (line := reader.readline()) not in (b"\r\n", b""):
        key, _, value = line.decode().partition(":")
        headers[key.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while size := int(reader.readline().strip(), 16):
            body += reader.read(size)
            reader.readline()
        reader.readline()
        return status, headers, body
    return status, headers, reader.read(int(headers.get("content-length", 0)))


def chunked(data: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (data[:5], data[5:])) + b"0\r\n\r\n"


BODY = json.dumps({"source": GEN, "destination": "my-copy"}).encode()


@pytest.mark.parametrize(
    ("first", "status"),
    [
        (b"POST /api/copy HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY), 404),
        (b"POST /api/version HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY), 405),
        (b"POST /api/show HTTP/1.1\r\nHost: evil.example\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY), 403),
        (b"POST /api/copy HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(BODY), 404),
        (b"POST /api/show HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(BODY), 400),
        (b"GET /api/tags HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY), 200),
    ],
    ids=["404", "405", "403", "404-chunked", "handler-chunked", "get-with-body"],
)
def test_kept_alive_connection_survives_any_answer(shared: Server, first: bytes, status: int) -> None:
    with socket.create_connection(("127.0.0.1", shared.port), timeout=5) as sock:
        reader = sock.makefile("rb")
        sock.sendall(first)
        assert read_response(reader)[0] == status
        sock.sendall(b"GET /api/version HTTP/1.1\r\nHost: localhost\r\n\r\n")
        code, _, body = read_response(reader)
        assert (code, json.loads(body)) == (200, {"version": "0.14.2"})


def test_body_too_large_to_discard_closes_the_connection(shared: Server) -> None:
    with socket.create_connection(("127.0.0.1", shared.port), timeout=5) as sock:
        reader = sock.makefile("rb")
        sock.sendall(b"POST /api/copy HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1048576\r\n\r\n")
        code, headers, _ = read_response(reader)
        assert (code, headers.get("connection")) == (404, "close")
        assert reader.read() == b""  # closed instead of parsing the body as requests
