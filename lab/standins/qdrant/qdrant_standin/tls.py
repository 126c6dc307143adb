"""TLS for the REST, gRPC placeholder and p2p ports, from upstream's ``tls.*`` keys.

LAB TEST FIXTURE (QueryGPT Qdrant stand-in, NOT Qdrant).

Why: production turns on Qdrant's own TLS (``service.enable_tls``,
``service.verify_https_client_certificate``, ``cluster.p2p.enable_tls`` and the
``tls`` section), so the stand-in must refuse what upstream (rustls) refuses: TLS
below 1.2, non-forward-secret or non-AEAD suites, REST clients without a certificate
from ``tls.ca_cert`` when client certificates are required, p2p peers without one
(always required on p2p, as upstream), and peers whose certificate does not match the
address in their URI. A renewed certificate is picked up after ``tls.cert_ttl`` seconds
on the REST port only (upstream logs "TTL not supported" for its gRPC servers).

Handshakes run per connection in the connection's own thread (``PerConnectionTls``), so
a plaintext or stalled client never holds up the accept loop.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable

from .config import Settings

LOG = logging.getLogger("qdrant.tls")
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"  # forward-secret AEAD only; TLS 1.3 suites are all AEAD
HANDSHAKE_TIMEOUT = 10.0
_NO_EXTRAS = ssl.OP_NO_COMPRESSION | getattr(ssl, "OP_NO_RENEGOTIATION", 0)


class TlsSetupError(ValueError):
    """A certificate, key or CA cannot be loaded: the server must not start."""


def _harden(context: ssl.SSLContext) -> ssl.SSLContext:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= _NO_EXTRAS
    return context


def read_ca(ca_cert: Path, purpose: str) -> str:
    try:
        data = ca_cert.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as err:
        raise TlsSetupError(f"cannot read tls.ca_cert {ca_cert} ({purpose}): {err}") from None
    if "-----BEGIN CERTIFICATE-----" not in data:
        raise TlsSetupError(f"tls.ca_cert {ca_cert} ({purpose}) holds no PEM certificate")
    return data


def _load_pair(context: ssl.SSLContext, cert: Path, key: Path) -> None:
    for name, path in (("tls.cert", cert), ("tls.key", key)):
        try:
            with path.open("rb"):
                pass
        except OSError as err:
            raise TlsSetupError(f"cannot read {name} {path}: {err}") from None
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as err:
        raise TlsSetupError(f"cannot load the certificate {cert} with the key {key}: {err}") from None


def server_context(cert: Path, key: Path, client_ca: str | None = None) -> ssl.SSLContext:
    """A server context; with ``client_ca`` (PEM text) a client certificate signed by it is required."""
    context = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    _load_pair(context, cert, key)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        try:
            context.load_verify_locations(cadata=client_ca)
        except ssl.SSLError as err:
            raise TlsSetupError(f"cannot use tls.ca_cert: {err}") from None
    return context


def client_context(cert: Path, key: Path, ca_cert: Path) -> ssl.SSLContext:
    """The p2p client's context: the peer must present a certificate from ``ca_cert`` matching
    the host (IP) of its URI; this node presents its own certificate as client certificate."""
    context = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))  # CERT_REQUIRED + check_hostname
    try:
        context.load_verify_locations(cadata=read_ca(ca_cert, "p2p peers"))
    except ssl.SSLError as err:
        raise TlsSetupError(f"cannot use tls.ca_cert {ca_cert}: {err}") from None
    _load_pair(context, cert, key)
    return context


class ServerTls:
    """The server context of one port, rebuilt from ``cert`` and ``key`` when ``ttl`` seconds
    passed (checked when a connection arrives, like upstream's rotating resolver). A failed
    reload logs an error and keeps the old context; the next connection tries again."""

    def __init__(self, cert: Path, key: Path, client_ca: str | None = None, ttl: int | None = None,
                 what: str = "REST", clock: Callable[[], float] = time.monotonic) -> None:
        self.cert, self.key, self.client_ca = cert, key, client_ca
        self.ttl = ttl or None
        self.what = what
        self._clock = clock
        self._lock = threading.Lock()
        self._context = server_context(cert, key, client_ca)  # raises TlsSetupError at start-up
        self._loaded_at = clock()

    def context(self) -> ssl.SSLContext:
        if self.ttl is None or self._clock() - self._loaded_at < self.ttl:
            return self._context
        with self._lock:
            if self._clock() - self._loaded_at >= self.ttl:  # another thread may have reloaded
                try:
                    self._context = server_context(self.cert, self.key, self.client_ca)
                    self._loaded_at = self._clock()
                    LOG.info("Refreshed the %s TLS certificate from %s", self.what, self.cert)
                except TlsSetupError as err:
                    LOG.error("Failed to refresh the %s TLS certificate, keeping the current one: %s",
                              self.what, err)
            return self._context


def handshake(connection: ssl.SSLSocket, peer: Any, timeout: float = HANDSHAKE_TIMEOUT) -> bool:
    """Complete a server-side handshake within ``timeout`` seconds; on failure close the
    connection, log at DEBUG and return False."""
    try:
        connection.settimeout(timeout)
        connection.do_handshake()
        connection.settimeout(None)
        return True
    except (OSError, ValueError) as err:  # ssl.SSLError and timeouts are OSErrors
        LOG.debug("TLS handshake with %s failed: %s", peer, err)
        try:
            connection.close()
        except OSError:
            pass
        return False


class PerConnectionTls:
    """Mixin for a ``ThreadingMixIn`` server (put it first): when ``tls`` is set, accepted
    sockets are wrapped without handshaking in the accept loop, and the handshake runs in
    the connection's thread with a timeout. A failed handshake closes that connection only."""

    tls: ServerTls | None = None
    handshake_timeout: float = HANDSHAKE_TIMEOUT

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = super().get_request()  # type: ignore[misc]
        if self.tls is None:
            return connection, address
        try:
            return self.tls.context().wrap_socket(connection, server_side=True,
                                                  do_handshake_on_connect=False), address
        except (OSError, ValueError) as err:
            connection.close()
            raise OSError(f"cannot set up TLS for {address}: {err}") from None  # socketserver skips it

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        if self.tls is not None and not handshake(request, client_address, self.handshake_timeout):
            return
        super().process_request_thread(request, client_address)  # type: ignore[misc]


@dataclass(frozen=True)
class TlsSetup:
    """Every TLS context of one node, built at start-up from the settings (None = plaintext)."""

    rest: ServerTls | None = None
    grpc: ServerTls | None = None
    p2p_server: ServerTls | None = None
    p2p_client: ssl.SSLContext | None = None


def build_tls(settings: Settings) -> TlsSetup:
    """Load what the settings ask for, or raise TlsSetupError naming the file: upstream does not
    start without a readable certificate and key when TLS is on (and, where a CA is needed, CA)."""
    rest = grpc = p2p_server = None
    p2p_client = None
    if settings.enable_tls:
        client_ca = (read_ca(settings.tls_ca_cert, "REST client certificates")
                     if settings.verify_https_client_certificate else None)
        rest = ServerTls(settings.tls_cert, settings.tls_key, client_ca, settings.tls_cert_ttl, "REST")
        if settings.grpc_port is not None:
            # upstream's external gRPC: server identity only, no client certificates, no TTL
            grpc = ServerTls(settings.tls_cert, settings.tls_key, None, None, "gRPC")
    if settings.p2p_enable_tls:
        # upstream loads the p2p client's TLS config at start-up even in single-node mode
        p2p_client = client_context(settings.tls_cert, settings.tls_key, settings.tls_ca_cert)
        if settings.cluster_enabled:
            # upstream's internal gRPC: client certificates from tls.ca_cert required, no TTL
            peers_ca = read_ca(settings.tls_ca_cert, "p2p peers")
            p2p_server = ServerTls(settings.tls_cert, settings.tls_key, peers_ca, None, "p2p")
    return TlsSetup(rest, grpc, p2p_server, p2p_client)
