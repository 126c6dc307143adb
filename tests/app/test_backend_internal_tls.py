"""The backend verifies its internal HTTPS services (Ollama, Qdrant readiness) against the
internal CA named by QUERYGPT_INTERNAL_CA_FILE, and nothing else (docs/architecture.md,
"Internal TLS"): a server with a certificate from another CA gets no request at all."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trustme

from querygpt.config import Settings
from querygpt.errors import ConfigError, UpstreamError
from querygpt.ollama import OllamaClient
from crltestkit import serial_of, write_crl
from querygpt_testkit import DATABASE_ENV

ENV = {"QUERYGPT_DOCUMENTS_BUCKET": "querygpt-documents", **DATABASE_ENV}


class _Version(BaseHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        type(self).requests.append(self.path)
        body = json.dumps({"version": "0.20.0"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def internal_ca() -> trustme.CA:
    return trustme.CA(organization_name="QueryGPT internal CA (test)")


@pytest.fixture
def ollama_over_tls(internal_ca: trustme.CA) -> Iterator[str]:
    """An Ollama-shaped HTTPS server on 127.0.0.1 whose certificate the internal CA signed for
    the address, as the Ollama proxy's host certificate names its private address."""
    _Version.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Version)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    internal_ca.issue_cert("127.0.0.1").configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _ca_file(ca: trustme.CA, tmp_path: Path, name: str = "ca.pem") -> str:
    path = tmp_path / name
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def _settings(**env: str) -> Settings:
    return Settings.from_env({**ENV, **env})


def test_the_internal_ca_file_verifies_the_ollama_proxy(internal_ca, ollama_over_tls, tmp_path) -> None:
    settings = _settings(
        QUERYGPT_OLLAMA_URLS=ollama_over_tls,
        QUERYGPT_INTERNAL_CA_FILE=_ca_file(internal_ca, tmp_path),
    )
    client = OllamaClient(settings.ollama_urls, timeout=5, verify=settings.tls_verify())
    try:
        assert client.version() == "0.20.0"
    finally:
        client.close()
    assert _Version.requests == ["/api/version"]


def test_a_server_certificate_from_another_ca_gets_no_request(ollama_over_tls, tmp_path) -> None:
    foreign = trustme.CA(organization_name="someone else's CA")
    settings = _settings(
        QUERYGPT_OLLAMA_URLS=ollama_over_tls,
        QUERYGPT_INTERNAL_CA_FILE=_ca_file(foreign, tmp_path),
    )
    client = OllamaClient(settings.ollama_urls, timeout=5, verify=settings.tls_verify())
    try:
        with pytest.raises(UpstreamError) as caught:
            client.version()
    finally:
        client.close()
    assert "did not verify against QUERYGPT_INTERNAL_CA_FILE" in str(caught.value), str(caught.value)
    assert _Version.requests == []


def test_without_the_internal_ca_the_system_cas_decide(ollama_over_tls) -> None:
    """No CA file means the system's CAs, never "verify nothing": an internal certificate fails."""
    settings = _settings(QUERYGPT_OLLAMA_URLS=ollama_over_tls)
    assert settings.tls_verify() is True
    client = OllamaClient(settings.ollama_urls, timeout=5, verify=settings.tls_verify())
    try:
        with pytest.raises(UpstreamError):
            client.version()
    finally:
        client.close()
    assert _Version.requests == []


def test_a_ca_bundle_of_two_cas_verifies_both(internal_ca, ollama_over_tls, tmp_path) -> None:
    """During a CA rotation the file holds the old and the new CA: either one verifies."""
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(trustme.CA().cert_pem.bytes() + internal_ca.cert_pem.bytes())
    settings = _settings(QUERYGPT_OLLAMA_URLS=ollama_over_tls, QUERYGPT_INTERNAL_CA_FILE=str(bundle))
    client = OllamaClient(settings.ollama_urls, timeout=5, verify=settings.tls_verify())
    try:
        assert client.version() == "0.20.0"
    finally:
        client.close()


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("ca.pem", "must be an absolute path"),
        ("/nonexistent/ca.pem", "does not exist"),
    ],
)
def test_a_bad_ca_file_path_is_refused_by_name(value: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _settings(QUERYGPT_INTERNAL_CA_FILE=value)
    assert caught.value.variable == "QUERYGPT_INTERNAL_CA_FILE" and problem in str(caught.value)


def test_a_file_without_a_certificate_is_refused_by_name(tmp_path) -> None:
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate\n")
    settings = _settings(QUERYGPT_INTERNAL_CA_FILE=str(garbage))
    with pytest.raises(ConfigError) as caught:
        settings.tls_verify()
    assert caught.value.variable == "QUERYGPT_INTERNAL_CA_FILE" and "no usable CA certificate" in str(caught.value)


# --- revocation (QUERYGPT_INTERNAL_CRL_FILE, roles/internal_pki's crl.pem) ----------------------


def _served_serial(url: str) -> int:
    host, port = url.removeprefix("https://").split(":")
    return serial_of(ssl.get_server_certificate((host, int(port))).encode())


def _version(settings: Settings) -> str:
    client = OllamaClient(settings.ollama_urls, timeout=5, verify=settings.tls_verify())
    try:
        return client.version()
    finally:
        client.close()


def test_a_current_crl_lets_the_server_through(internal_ca, ollama_over_tls, tmp_path) -> None:
    settings = _settings(QUERYGPT_OLLAMA_URLS=ollama_over_tls, QUERYGPT_INTERNAL_CA_FILE=_ca_file(internal_ca, tmp_path),
                         QUERYGPT_INTERNAL_CRL_FILE=write_crl(internal_ca, tmp_path / "crl.pem", revoked=(4660,)))
    assert _version(settings) == "0.20.0"


def test_a_revoked_server_certificate_gets_no_request(internal_ca, ollama_over_tls, tmp_path) -> None:
    settings = _settings(
        QUERYGPT_OLLAMA_URLS=ollama_over_tls, QUERYGPT_INTERNAL_CA_FILE=_ca_file(internal_ca, tmp_path),
        QUERYGPT_INTERNAL_CRL_FILE=write_crl(internal_ca, tmp_path / "crl.pem", revoked=(_served_serial(ollama_over_tls),)))
    with pytest.raises(UpstreamError):
        _version(settings)
    assert _Version.requests == []


def test_a_ca_without_a_crl_in_the_file_is_refused(internal_ca, ollama_over_tls, tmp_path) -> None:
    """OpenSSL refuses a certificate whose CA has no CRL there: why a rotation carries the old CA's."""
    settings = _settings(QUERYGPT_OLLAMA_URLS=ollama_over_tls, QUERYGPT_INTERNAL_CA_FILE=_ca_file(internal_ca, tmp_path),
                         QUERYGPT_INTERNAL_CRL_FILE=write_crl(trustme.CA(), tmp_path / "crl.pem"))
    with pytest.raises(UpstreamError):
        _version(settings)
    assert _Version.requests == []


def test_a_crl_file_without_a_crl_is_refused_by_name(internal_ca, tmp_path) -> None:
    settings = _settings(QUERYGPT_INTERNAL_CA_FILE=_ca_file(internal_ca, tmp_path),
                         QUERYGPT_INTERNAL_CRL_FILE=_ca_file(internal_ca, tmp_path, "not-a-crl.pem"))
    with pytest.raises(ConfigError) as caught:
        settings.tls_verify()
    assert caught.value.variable == "QUERYGPT_INTERNAL_CRL_FILE" and "no usable CRL" in str(caught.value)


def test_libpq_checks_the_same_crl(internal_ca, tmp_path) -> None:
    from querygpt.database import connect_args

    crl = write_crl(internal_ca, tmp_path / "crl.pem")
    assert connect_args(_settings(QUERYGPT_INTERNAL_CRL_FILE=crl))["sslcrl"] == crl
    assert "sslcrl" not in connect_args(_settings())


# --- the backend's own TLS server (QUERYGPT_TLS_CERT_FILE / QUERYGPT_TLS_KEY_FILE) -------------


def _server_pair(ca: trustme.CA, tmp_path: Path, *names: str) -> tuple[str, str]:
    issued = ca.issue_cert(*(names or ("127.0.0.1",)))
    cert, key = tmp_path / "host.pem", tmp_path / "host.key"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    return str(cert), str(key)


def test_a_certificate_without_its_key_is_refused_by_name(internal_ca, tmp_path) -> None:
    cert, key = _server_pair(internal_ca, tmp_path)
    with pytest.raises(ConfigError, match="QUERYGPT_TLS_KEY_FILE must be set together with QUERYGPT_TLS_CERT_FILE"):
        _settings(QUERYGPT_TLS_CERT_FILE=cert)
    with pytest.raises(ConfigError, match="QUERYGPT_TLS_CERT_FILE must be set together with QUERYGPT_TLS_KEY_FILE"):
        _settings(QUERYGPT_TLS_KEY_FILE=key)


def test_a_key_that_does_not_match_the_certificate_is_refused(internal_ca, tmp_path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cert, _ = _server_pair(internal_ca, tmp_path / "a")
    _, other_key = _server_pair(internal_ca, tmp_path / "b")
    with pytest.raises(ConfigError, match="QUERYGPT_TLS_CERT_FILE .* not a usable certificate and matching private key"):
        _settings(QUERYGPT_TLS_CERT_FILE=cert, QUERYGPT_TLS_KEY_FILE=other_key)


def test_without_a_certificate_the_server_speaks_plain_http(tmp_path) -> None:
    from querygpt.cli import _tls_options

    assert _tls_options(_settings()) == {}


def _serve(options: dict[str, object]) -> tuple[object, int]:
    """uvicorn on 127.0.0.1 with the options serve() passes, answering every request with 200."""
    import time

    import uvicorn

    async def app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, **options))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    return server, server.servers[0].sockets[0].getsockname()[1]  # the port the kernel chose


def test_the_server_speaks_only_modern_tls_that_the_internal_ca_verifies(internal_ca, tmp_path) -> None:
    """What serve() gives uvicorn: a client trusting the internal CA gets its answer over TLS
    1.2 or 1.3; plaintext, TLS 1.1 and a CBC-only TLS 1.2 client get nothing."""
    import http.client
    import socket

    from querygpt.cli import _tls_options

    cert, key = _server_pair(internal_ca, tmp_path)
    options = _tls_options(_settings(QUERYGPT_TLS_CERT_FILE=cert, QUERYGPT_TLS_KEY_FILE=key))
    assert set(options) == {"ssl_certfile", "ssl_keyfile", "ssl_ciphers"}
    server, port = _serve(options)
    try:
        trusting = ssl.create_default_context(cafile=_ca_file(internal_ca, tmp_path))
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            trusting.minimum_version = trusting.maximum_version = version
            conn = http.client.HTTPSConnection("127.0.0.1", port, context=trusting, timeout=5)
            conn.request("GET", "/health")
            assert conn.getresponse().status == 200, version
            conn.close()

        with pytest.raises(ssl.SSLCertVerificationError):  # another CA's client refuses it
            other = ssl.create_default_context(cafile=_ca_file(trustme.CA(), tmp_path, "other.pem"))
            http.client.HTTPSConnection("127.0.0.1", port, context=other, timeout=5).request("GET", "/")

        # TLS 1.1 offered (security level 0, so the client's OpenSSL allows it): the server's
        # protocol_version alert, so the refusal is the server's.
        tls11 = ssl.create_default_context(cafile=_ca_file(internal_ca, tmp_path))
        tls11.set_ciphers("DEFAULT:@SECLEVEL=0")
        tls11.minimum_version = tls11.maximum_version = ssl.TLSVersion.TLSv1_1
        # uvicorn's asyncio TLS closes without the alert: an EOF after the ClientHello. A client
        # that never sent one (its own OpenSSL refusing 1.1) would fail with another reason.
        with pytest.raises(ssl.SSLError, match="ALERT_PROTOCOL_VERSION|UNEXPECTED_EOF"):
            http.client.HTTPSConnection("127.0.0.1", port, context=tls11, timeout=5).request("GET", "/")

        cbc_only = ssl.create_default_context(cafile=_ca_file(internal_ca, tmp_path))
        cbc_only.maximum_version = ssl.TLSVersion.TLSv1_2
        cbc_only.set_ciphers("ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES128-SHA:AES128-SHA")
        with pytest.raises(ssl.SSLError):
            http.client.HTTPSConnection("127.0.0.1", port, context=cbc_only, timeout=5).request("GET", "/")

        with socket.create_connection(("127.0.0.1", port), timeout=5) as plain:
            plain.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert b"200" not in plain.recv(1024)  # nothing, or a TLS alert: never an answer
    finally:
        server.should_exit = True
