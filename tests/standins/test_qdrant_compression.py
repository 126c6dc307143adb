"""Response compression of the Qdrant stand-in (lab/standins/qdrant, a LAB TEST FIXTURE, not Qdrant).

Upstream wraps its REST API in actix-web's Compress middleware, so the stand-in negotiates
Accept-Encoding the same way (compression.py). These tests talk raw HTTP (http.client, which
neither asks for nor decodes any coding by itself) so the bytes on the wire are what is
checked: the codings decode to the identity body, the snapshot file comes back byte for
byte as identity, encoded responses are chunked with Vary, and keep-alive survives mixing
chunked and Content-Length responses on one connection.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import socket
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from qdrant_cluster_testkit import standin_module

ROOT = Path(__file__).resolve().parents[2]
QDRANT_SRC = ROOT / "lab" / "standins" / "qdrant"
KEY = "compression-test-key"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    def __init__(self, port: int, snapshots: Path) -> None:
        self.port = port
        self.snapshots = snapshots

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def request(self, method: str, path: str, body: Any = None, encoding: str | None = None,
                key: str | None = KEY, conn: http.client.HTTPConnection | None = None,
                ) -> tuple[http.client.HTTPResponse, bytes]:
        """One request; ``encoding`` is the Accept-Encoding value (None: no such header)."""
        headers = {} if key is None else {"api-key": key}
        if encoding is not None:
            headers["Accept-Encoding"] = encoding
        payload = None if body is None else json.dumps(body).encode()
        if payload is not None:
            headers["Content-Type"] = "application/json"
        connection = conn or self.connect()
        # skip_accept_encoding: http.client would otherwise add "Accept-Encoding: identity" itself
        connection.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        if payload is not None:
            connection.putheader("Content-Length", str(len(payload)))
        connection.endheaders(payload)
        response = connection.getresponse()
        data = response.read()
        if conn is None:
            connection.close()
        return response, data


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("qdrant-compression")
    port = _free_port()
    config = work / "config.yaml"
    config.write_text(
        "log_level: WARN\n"
        f"storage:\n  storage_path: {work / 'storage'}\n  snapshots_path: {work / 'snapshots'}\n"
        f"service:\n  host: 127.0.0.1\n  http_port: {port}\n  grpc_port: null\n  api_key: '{KEY}'\n"
    )
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONPATH": str(QDRANT_SRC)}
    log = work / "stderr.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "qdrant_standin", "--config-path", str(config)],
                                cwd=work, env=env, stderr=err)
    try:
        deadline = time.monotonic() + 10
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
        yield Server(port, work / "snapshots")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture()
def collection(server: Server) -> Iterator[str]:
    name = f"compress-{uuid.uuid4().hex[:10]}"
    server.request("PUT", f"/collections/{name}", {"vectors": {"size": 4, "distance": "Dot"}})
    points = [{"id": i, "vector": [i, 1.0, 0.5, 0.25], "payload": {"doc": f"document {i % 3}", "n": i}}
              for i in range(200)]
    response, _ = server.request("PUT", f"/collections/{name}/points?wait=true", {"points": points})
    assert response.status == 200
    yield name
    server.request("DELETE", f"/collections/{name}")


DECODE: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.decompress, "deflate": zlib.decompress}  # HTTP deflate = zlib stream


def _without_time(body: bytes) -> Any:
    document = json.loads(body)
    document.pop("time", None)
    return document


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
@pytest.mark.parametrize("path", ["/", "/collections", "/collections/{c}", "/readyz", "/metrics"])
def test_encoded_bodies_decode_to_the_identity_body(server: Server, collection: str, coding: str,
                                                    path: str) -> None:
    path = path.format(c=collection)
    plain, plain_body = server.request("GET", path, encoding="identity")
    encoded, encoded_body = server.request("GET", path, encoding=coding)
    assert plain.status == encoded.status == 200
    assert plain.getheader("Content-Encoding") is None and plain.getheader("Vary") is None
    assert plain.getheader("Content-Length") == str(len(plain_body))
    assert encoded.getheader("Content-Encoding") == coding
    assert encoded.getheader("Vary") == "accept-encoding"
    assert encoded.getheader("Transfer-Encoding") == "chunked" and encoded.getheader("Content-Length") is None
    assert encoded.getheader("Content-Type") == plain.getheader("Content-Type")
    decoded = DECODE[coding](encoded_body)
    assert decoded != encoded_body
    if plain.getheader("Content-Type") == "application/json":
        assert _without_time(decoded) == _without_time(plain_body)  # "time" differs per call
    elif path == "/metrics":  # counters move between the calls: compare the metric names
        assert [line.split(" ")[0] for line in decoded.decode().splitlines() if line.startswith("#")] == \
            [line.split(" ")[0] for line in plain_body.decode().splitlines() if line.startswith("#")]
    else:
        assert decoded == plain_body


def test_errors_are_encoded_too_but_401_is_not(server: Server) -> None:
    """Empty bodies are never encoded either: test_encoding_predicate_follows_actix (no stand-in
    route answers with an empty body any more)."""
    missing, body = server.request("GET", "/collections/nope", encoding="gzip")
    assert missing.status == 404 and missing.getheader("Content-Encoding") == "gzip"
    assert "doesn't exist" in json.loads(gzip.decompress(body))["status"]["error"]
    # upstream's auth middleware sits outside Compress: its plain-text 401 is never encoded
    unauthorized, body = server.request("GET", "/collections", encoding="gzip", key=None)
    assert unauthorized.status == 401 and unauthorized.getheader("Content-Encoding") is None
    assert body == b"Must provide an API key or an Authorization bearer token"
    unknown, body = server.request("GET", "/no/such/route", encoding="gzip")
    assert unknown.status == 400 and unknown.getheader("Content-Encoding") == "gzip"
    assert "GET /no/such/route" in json.loads(gzip.decompress(body))["status"]["error"]


def _snapshot(server: Server, collection: str) -> dict[str, Any]:
    response, body = server.request("POST", f"/collections/{collection}/snapshots?wait=true", encoding="identity")
    assert response.status == 200
    return dict(json.loads(body)["result"])


def test_snapshot_download_as_identity_is_the_file(server: Server, collection: str) -> None:
    snapshot = _snapshot(server, collection)
    on_disk = (server.snapshots / collection / snapshot["name"]).read_bytes()
    path = f"/collections/{collection}/snapshots/{snapshot['name']}"
    for encoding in ("identity", None, "identity, gzip;q=0.5"):
        response, body = server.request("GET", path, encoding=encoding)
        assert response.status == 200 and response.getheader("Content-Encoding") is None
        assert response.getheader("Content-Length") == str(len(on_disk))
        assert body == on_disk
        assert hashlib.sha256(body).hexdigest() == snapshot["checksum"] and len(body) == snapshot["size"]


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_snapshot_download_is_streamed_encoded_when_accepted(server: Server, collection: str,
                                                             coding: str) -> None:
    snapshot = _snapshot(server, collection)
    on_disk = (server.snapshots / collection / snapshot["name"]).read_bytes()
    response, body = server.request("GET", f"/collections/{collection}/snapshots/{snapshot['name']}",
                                    encoding=coding)
    assert response.getheader("Content-Encoding") == coding
    assert response.getheader("Vary") == "accept-encoding"
    assert response.getheader("Transfer-Encoding") == "chunked" and response.getheader("Content-Length") is None
    assert response.getheader("Content-Disposition") == f'attachment; filename="{snapshot["name"]}"'
    assert DECODE[coding](body) == on_disk
    # the trap a backup must avoid: the bytes as received are not the file Qdrant checksummed
    assert hashlib.sha256(body).hexdigest() != snapshot["checksum"]


def test_keep_alive_across_chunked_and_sized_responses(server: Server, collection: str) -> None:
    snapshot = _snapshot(server, collection)
    conn = server.connect()
    try:
        first, _ = server.request("GET", "/collections", encoding="gzip", conn=conn)
        local = conn.sock.getsockname()
        sequence = [
            ("GET", f"/collections/{collection}/snapshots/{snapshot['name']}", "gzip"),
            ("GET", f"/collections/{collection}/snapshots/{snapshot['name']}", "identity"),
            ("POST", f"/collections/{collection}/points/count", "deflate"),
            ("GET", "/no/such/route", "gzip"),
            ("GET", "/collections", None),
        ]
        for method, path, encoding in sequence:
            response, _ = server.request(method, path, {} if method == "POST" else None, encoding, conn=conn)
            assert not response.will_close, (method, path, encoding)
            assert conn.sock is not None and conn.sock.getsockname() == local  # same connection
    finally:
        conn.close()
    assert first.status == 200


def test_http_1_0_client_gets_the_encoded_body_until_close(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(f"GET /collections HTTP/1.0\r\napi-key: {KEY}\r\nAccept-Encoding: gzip\r\n\r\n".encode())
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode().lower().split("\r\n")
    assert "content-encoding: gzip" in lines and "connection: close" in lines
    assert not any(line.startswith(("transfer-encoding", "content-length")) for line in lines)
    assert json.loads(gzip.decompress(body))["result"] == json.loads(
        server.request("GET", "/collections", encoding="identity")[1])["result"]


def test_not_acceptable_when_identity_is_excluded_and_nothing_supported(server: Server) -> None:
    response, body = server.request("GET", "/collections", encoding="compress, *;q=0")
    assert response.status == 406 and body == b"gzip, deflate"
    assert response.getheader("Vary") == "Accept-Encoding"
    assert server.request("GET", "/collections", encoding="gzip, *;q=0")[0].getheader("Content-Encoding") == "gzip"


@pytest.fixture(scope="module")
def compression() -> ModuleType:
    return standin_module("compression")


@pytest.mark.parametrize(("header", "expected"), [
    (None, "identity"),                        # no header: never encode
    ("", "identity"),
    ("gzip, deflate", "gzip"),                 # requests' default
    ("deflate, gzip", "gzip"),                 # equal q: server ranking, not listed order
    ("gzip, deflate, br, zstd", "gzip"),       # br/zstd are not produced by the stand-in
    ("br", "identity"),
    ("deflate", "deflate"),
    ("gzip;q=0.5, deflate", "deflate"),
    ("identity", "identity"),
    ("gzip, identity", "gzip"),
    ("identity;q=1, gzip;q=0.5", "identity"),  # an explicit identity can win
    ("gzip;q=0", "identity"),
    ("*", "identity"),
    ("br, identity;q=0", None),                # nothing acceptable: 406
    ("compress, *;q=0", None),
    ("gzip, *;q=0", "gzip"),
    ("gzip;q=2", "identity"),                  # unparsable header: treated as absent
    ("GZIP", "gzip"),
])
def test_negotiation_follows_actix(compression: ModuleType, header: str | None, expected: str | None) -> None:
    assert compression.negotiate(header) == expected


@pytest.mark.parametrize(("status", "content_type", "has_body", "headers", "expected"), [
    (200, "application/json", True, {}, True),
    (200, "application/octet-stream", True, {}, True),
    (200, "application/json", False, {}, False),
    (204, "application/json", True, {}, False),
    (206, "application/octet-stream", True, {}, False),
    (200, "image/png", True, {}, False),
    (200, "image/svg+xml", True, {}, True),
    (200, "video/mp4", True, {}, False),
    (200, "application/octet-stream", True, {"content-encoding": "gzip"}, False),
])
def test_encoding_predicate_follows_actix(compression: ModuleType, status: int, content_type: str,
                                          has_body: bool, headers: dict[str, str], expected: bool) -> None:
    assert compression.should_encode(status, content_type, has_body, headers) is expected
