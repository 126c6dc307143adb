"""The Qdrant LAB STAND-IN's heartbeat connections (cluster.KeptLinks): one kept-alive
connection per peer, as upstream keeps a gRPC channel, replaced when the peer restarts, and a
peer that is gone is unavailable at once."""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

import pytest

from qdrant_cluster_testkit import standin_module
from test_qdrant_tls import Pki


@pytest.fixture(scope="module")
def cluster() -> ModuleType:
    return standin_module("cluster")


class Peer:
    """A p2p port that answers /p2p/status on HTTP/1.1 and counts the connections it accepted."""

    def __init__(self, port: int = 0, tls: ssl.SSLContext | None = None) -> None:
        self.scheme = "https" if tls else "http"
        self.connections = 0
        self.sockets: list[socket.socket] = []
        self.stopped = False
        peer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                peer.connections += 1
                peer.sockets.append(self.request)
                super().setup()

            def do_POST(self) -> None:  # noqa: N802 - stdlib naming
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path == "/p2p/status":
                    status, body = 200, {"peer_id": 7, "commit": 3}
                else:
                    status, body = 404, {"status": 404, "message": f"Not found: p2p route {self.path}"}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        class Server(ThreadingHTTPServer):
            allow_reuse_address = True

            def finish_request(self, request, client_address):  # type: ignore[no-untyped-def]
                super().finish_request(tls.wrap_socket(request, server_side=True) if tls else request,
                                       client_address)

        self.server = Server(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """The process gone: the listener and every connection it accepted closed."""
        if self.stopped:
            return
        self.stopped = True
        self.server.shutdown()
        self.server.server_close()
        for sock in self.sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # closed already

    @property
    def uri(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"


@pytest.fixture
def peer() -> Iterator[Peer]:
    running = Peer()
    yield running
    running.stop()


def test_pings_share_one_connection(cluster: ModuleType, peer: Peer) -> None:
    links = cluster.KeptLinks(None)
    try:
        for _ in range(5):
            assert links.call(peer.uri, "/p2p/status", {}, timeout=2) == {"peer_id": 7, "commit": 3}
        assert peer.connections == 1
    finally:
        links.close()


@pytest.mark.parametrize("over_tls", [False, True], ids=["plain", "tls"])
def test_a_peer_that_restarted_is_reached_on_a_new_connection_without_a_failure(
        cluster: ModuleType, tmp_path: Path, over_tls: bool) -> None:
    """The process restarts on the same port: the kept connection is closed under the client.
    Over TLS a dying process sends no close_notify, so it ends in a TLS EOF: a closed connection
    to replace, not an unavailable peer."""
    server = client = None
    if over_tls:
        pki = Pki.create(tmp_path / "pki")
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.load_cert_chain(pki.cert_file, pki.key_file)
        client = ssl.create_default_context(cafile=str(pki.ca_file))
    links = cluster.KeptLinks(client)
    first = Peer(tls=server)
    try:
        for _ in range(3):
            assert links.call(first.uri, "/p2p/status", timeout=2)["peer_id"] == 7
        assert first.connections == 1
        first.stop()
        again = Peer(first.port, tls=server)
        try:
            assert links.call(again.uri, "/p2p/status", timeout=2)["commit"] == 3
            assert again.connections == 1
        finally:
            again.stop()
    finally:
        links.close()


def test_a_peer_that_is_gone_is_unavailable_and_an_error_answer_keeps_its_status(cluster: ModuleType,
                                                                                 peer: Peer) -> None:
    links = cluster.KeptLinks(None)
    try:
        with pytest.raises(cluster.ApiError) as answered:
            links.call(peer.uri, "/p2p/nothing", timeout=2)
        assert answered.value.status == 404 and "p2p route /p2p/nothing" in answered.value.message
        uri = peer.uri
        peer.stop()
        with pytest.raises(cluster.PeerUnavailable):
            links.call(uri, "/p2p/status", timeout=2)
        assert uri not in links.links
    finally:
        links.close()


def test_the_scheme_must_match_the_tls_setting(cluster: ModuleType, peer: Peer) -> None:
    import ssl

    with pytest.raises(cluster.PeerUnavailable, match="cluster.p2p.enable_tls is true"):
        cluster.KeptLinks(ssl.create_default_context()).call(peer.uri, "/p2p/status")
    with pytest.raises(cluster.PeerUnavailable, match="cluster.p2p.enable_tls is false"):
        cluster.KeptLinks(None).call(peer.uri.replace("http://", "https://"), "/p2p/status")
