"""The backup program against a Qdrant that compresses its responses, as the real one does.

Real Qdrant wraps its REST API in actix-web's Compress middleware: a client that accepts
gzip (requests does by default) gets gzip, snapshot downloads included. The program used
to hash and upload the raw, still-compressed download, so in production every backup was
judged unverified and deleted while the non-compressing lab passed. The Qdrant stand-in
(a test fixture, NOT Qdrant) now compresses like upstream, and these tests pin the fix:
the snapshot is fetched as identity, and a hop that encodes it anyway is refused loudly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import ssl
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest

from backup_testkit import BUCKET, QdrantStandin

NOW = datetime(2026, 11, 26, 2, 17, 0, tzinfo=timezone.utc)


def test_standin_compresses_snapshot_downloads_like_qdrant(qdrant: QdrantStandin, collection: str) -> None:
    """The precondition of the tests below: a requests default download arrives gzip-encoded,
    and those raw bytes do not hash to the snapshot's checksum (the production trap)."""
    qdrant.make_collection(collection, 30)
    snapshot = qdrant.call("POST", f"/collections/{collection}/snapshots", params={"wait": "true"})
    url = f"{qdrant.url}/collections/{collection}/snapshots/{snapshot['name']}"
    with qdrant.http.get(url, stream=True, timeout=30) as response:
        raw = response.raw.read(decode_content=False)
        assert response.headers["Content-Encoding"] == "gzip"
    assert hashlib.sha256(raw).hexdigest() != snapshot["checksum"]
    qdrant.call("DELETE", f"/collections/{collection}/snapshots/{snapshot['name']}")


def test_backup_from_compressing_qdrant_uploads_the_snapshot_file(
        qb: ModuleType, qdrant: QdrantStandin, s3: Any, config: Any, collection: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails on the old program: it uploaded the gzip stream and then deleted it as unverified."""
    qdrant.make_collection(collection, 40)
    reported: list[dict[str, Any]] = []
    create_snapshot = qb.Qdrant.create_snapshot

    def recording(self: Any, name: str) -> dict[str, Any]:
        described = create_snapshot(self, name)
        reported.append(described)
        return described

    monkeypatch.setattr(qb.Qdrant, "create_snapshot", recording)

    assert qb.run_backup(config, now=NOW) == 0

    snapshot = reported[-1]  # what the stand-in reported for the file it wrote
    key = f"{config.s3_prefix}/{collection}/{NOW:%Y%m%dT%H%M%SZ}.snapshot"
    obj = s3.get_object(Bucket=BUCKET, Key=key)
    body = obj["Body"].read()
    assert hashlib.sha256(body).hexdigest() == snapshot["checksum"]
    assert len(body) == snapshot["size"]
    assert obj["Metadata"]["sha256"] == snapshot["checksum"]
    assert obj["Metadata"]["snapshot-name"] == snapshot["name"]
    assert [(b.key, b.good) for b in qb.list_backups(config, s3, collection)] == [(key, True)]
    assert qdrant.call("GET", f"/collections/{collection}/snapshots") == []


class _ForceGzip(BaseHTTPRequestHandler):
    """A hop that re-encodes: forwards to the stand-in with Accept-Encoding: gzip whatever the
    client asked for, and passes the encoded body back (like a misconfigured proxy)."""

    protocol_version = "HTTP/1.1"
    target: tuple[str, int]
    ca_file: str

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in ("accept-encoding", "host", "connection", "content-length")}
        headers["Accept-Encoding"] = "gzip"
        upstream = http.client.HTTPSConnection(*self.target, timeout=30,
                                               context=ssl.create_default_context(cafile=self.ca_file))
        try:
            upstream.request(self.command, self.path, body=body, headers=headers)
            answer = upstream.getresponse()
            data = answer.read()  # de-chunked, still encoded
        finally:
            upstream.close()
        self.send_response(answer.status)
        for name, value in answer.getheaders():
            if name.lower() not in ("transfer-encoding", "content-length", "connection", "server", "date"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _forward

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass


@pytest.fixture()
def gzip_hop(qdrant: QdrantStandin) -> Iterator[str]:
    target = urlsplit(qdrant.url)
    handler = type("Hop", (_ForceGzip,), {"target": (target.hostname, target.port), "ca_file": qdrant.ca_file})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_encoded_snapshot_download_is_refused_with_a_clear_error(
        qb: ModuleType, qdrant: QdrantStandin, s3: Any, config: Any, collection: str, gzip_hop: str,
        caplog: pytest.LogCaptureFixture) -> None:
    qdrant.make_collection(collection, 10)
    through_hop = dataclasses.replace(config, qdrant_url=gzip_hop)

    assert qb.run_backup(through_hop, now=NOW) == 1

    assert "Content-Encoding gzip although the request asked for identity" in caplog.text
    assert gzip_hop in caplog.text  # names the qdrant_url to fix
    listing = s3.list_objects_v2(Bucket=BUCKET, Prefix=config.s3_prefix + "/")
    assert listing.get("Contents", []) == []  # nothing was uploaded
    assert qdrant.call("GET", f"/collections/{collection}/snapshots") == []  # local snapshot cleaned up


@pytest.mark.parametrize(("header", "codings"), [
    ("", []), ("identity", []), ("gzip", ["gzip"]), (" GZip ", ["gzip"]),
    ("gzip, identity", ["gzip"]), ("deflate,br", ["deflate", "br"]),
])
def test_content_codings(qb: ModuleType, header: str, codings: list[str]) -> None:
    assert qb.content_codings(header) == codings
