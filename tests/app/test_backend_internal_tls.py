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
