"""Entry point: ``qdrant --config-path FILE`` and ``qdrant --version``.

LAB TEST FIXTURE (QueryGPT Qdrant stand-in, NOT Qdrant).

Why: the qdrant role runs ``qdrant --config-path /etc/qdrant/config.yaml`` under
systemd and probes the HTTP and gRPC ports, so the stand-in keeps that command
line, binds both ports on ``service.host`` (the gRPC port only accepts and
closes: nothing here speaks gRPC; with ``service.enable_tls`` it completes a TLS
handshake first, so a plaintext client never gets a plaintext answer), stops
cleanly on SIGTERM, and says loudly that it is not Qdrant. TLS handshakes run in
each connection's thread (tls.py), never in the accept loop.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import ssl
import sys
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import FrameType

from .cluster import Cluster
from .cluster_api import ClusterApp
from .config import ConfigError, Settings, load_settings
from .http_api import App, RequestHandler
from .snapshots import SnapshotManager
from .storage import Store
from .tls import PerConnectionTls, ServerTls, TlsSetup, TlsSetupError, build_tls, handshake
from .version import VERSION

LOG = logging.getLogger("qdrant")
BANNER = "QueryGPT lab stand-in, not Qdrant"
_LEVELS = {"TRACE": logging.DEBUG, "DEBUG": logging.DEBUG, "INFO": logging.INFO,
           "WARN": logging.WARNING, "WARNING": logging.WARNING, "ERROR": logging.ERROR,
           "OFF": logging.CRITICAL + 1}


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


class _HttpServer(PerConnectionTls, ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


def _close_after_handshake(connection: socket.socket, address: object, tls: ServerTls) -> None:
    try:
        wrapped = tls.context().wrap_socket(connection, server_side=True, do_handshake_on_connect=False)
    except (OSError, ValueError) as err:
        LOG.debug("gRPC placeholder: cannot set up TLS for %s: %s", address, err)
        connection.close()
        return
    if handshake(wrapped, address):
        wrapped.close()


def _grpc_placeholder(host: str, port: int, tls: ServerTls | None = None) -> socket.socket:
    """Hold the gRPC port so firewall and port checks see it; connections are closed at once,
    after a TLS handshake (in a thread per connection) when ``tls`` is set."""
    listener = socket.socket(_family(host), socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(16)

    def accept_and_close() -> None:
        while True:
            try:
                connection, address = listener.accept()
            except OSError:
                return  # listener closed on shutdown
            if tls is None:
                connection.close()
                continue
            threading.Thread(target=_close_after_handshake, args=(connection, address, tls),
                             name="grpc-placeholder-tls", daemon=True).start()

    threading.Thread(target=accept_and_close, name="grpc-placeholder", daemon=True).start()
    return listener


def build_http_server(settings: Settings, cluster: Cluster | None = None,
                      tls: ServerTls | None = None) -> ThreadingHTTPServer:
    """Bind the REST server; with ``tls`` (``service.enable_tls``, see tls.build_tls) every
    connection is TLS, handshaken in its own thread."""
    store = Store(settings.storage_path, VERSION)
    app: App = (App(settings, store, SnapshotManager(settings.snapshots_path, store)) if cluster is None
                else ClusterApp(settings, store, cluster))
    handler = type("BoundHandler", (RequestHandler,), {"app": app})
    server_class = type("Server", (_HttpServer,), {"address_family": _family(settings.host), "tls": tls})
    server: ThreadingHTTPServer = server_class((settings.host, settings.http_port), handler)
    return server


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="qdrant", description=f"Qdrant API stand-in ({BANNER})")
    parser.add_argument("--config-path", type=Path, help="path to the YAML config file")
    parser.add_argument("--version", action="version", version=f"qdrant {VERSION} ({BANNER})")
    # upstream's distributed-mode flags (and their environment variables)
    parser.add_argument("--bootstrap", metavar="URI", default=os.environ.get("QDRANT_BOOTSTRAP") or None,
                        help="p2p URI of a peer of the cluster to join (env QDRANT_BOOTSTRAP)")
    parser.add_argument("--uri", metavar="URI", default=os.environ.get("QDRANT_URI") or None,
                        help="this peer's p2p URI, required on the first peer (env QDRANT_URI)")
    return parser.parse_args(argv)


def start_cluster(settings: Settings, args: argparse.Namespace,
                  tls: TlsSetup | None = None) -> tuple[Cluster, ThreadingHTTPServer]:
    """Listen on the p2p port, then bootstrap, join or rejoin (cluster.enabled only)."""
    tls = tls or TlsSetup()
    cluster = Cluster(settings.storage_path, VERSION, settings.p2p_port, settings.cluster_peer_id,
                      settings.bootstrap_timeout_sec, settings.standin_transfer_delay_ms,
                      tls_client=tls.p2p_client)
    p2p = cluster.build_p2p_server(settings.host, tls.p2p_server)
    threading.Thread(target=p2p.serve_forever, name="p2p", daemon=True).start()
    try:
        cluster.start(args.uri, args.bootstrap)
    except BaseException:
        p2p.shutdown()
        p2p.server_close()
        raise
    LOG.info("Qdrant p2p (HTTP/JSON, not gRPC) listening on %s%s as peer %d", settings.p2p_port,
             " (TLS, peers' client certificates required)" if tls.p2p_server else "", cluster.peer_id)
    return cluster, p2p


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        settings = load_settings(args.config_path)
    except ConfigError as err:
        print(f"qdrant ({BANNER}): {err}", file=sys.stderr)
        return 1
    logging.basicConfig(
        level=_LEVELS.get(settings.log_level.split(",")[0].strip().upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    LOG.warning("This is NOT Qdrant: %s reporting version %s, a REST API subset for tests only.",
                BANNER, VERSION)
    cluster = p2p = None
    try:
        tls = build_tls(settings)
    except TlsSetupError as err:
        LOG.error("cannot start: %s", err)
        return 1
    if settings.verify_https_client_certificate and not settings.enable_tls:
        LOG.warning("service.verify_https_client_certificate has no effect: service.enable_tls is false")
    try:
        if settings.cluster_enabled:
            cluster, p2p = start_cluster(settings, args, tls)
        elif args.bootstrap or args.uri:
            LOG.warning("--bootstrap/--uri are ignored: cluster.enabled is false")
        server = build_http_server(settings, cluster, tls.rest)
        grpc = (None if settings.grpc_port is None
                else _grpc_placeholder(settings.host, settings.grpc_port, tls.grpc))
    except (OSError, ssl.SSLError, ValueError) as err:
        LOG.error("cannot start: %s", err)
        if p2p is not None:
            p2p.shutdown()
        return 1

    def stop(signum: int, _frame: FrameType | None) -> None:
        LOG.info("received signal %d, shutting down", signum)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if not settings.telemetry_disabled:
        LOG.info("telemetry_disabled is false, but the stand-in never sends telemetry anywhere")
    if tls.rest is not None:
        LOG.info("TLS enabled for REST API (%s)", f"TTL: {tls.rest.ttl} s" if tls.rest.ttl else "no TTL")
    LOG.info("Qdrant HTTP listening on %s%s", settings.http_port, " (TLS)" if tls.rest else "")
    if settings.grpc_port is not None:
        LOG.info("Qdrant gRPC listening on %s (placeholder: accepts%s and closes)", settings.grpc_port,
                 ", completes a TLS handshake (TTL not supported)" if tls.grpc else "")
    try:
        server.serve_forever()
    finally:
        server.server_close()
        if grpc is not None:
            grpc.close()
        if cluster is not None and p2p is not None:
            cluster.stop()
            p2p.shutdown()
            p2p.server_close()
    return 0
