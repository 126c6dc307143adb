"""TLS of the Qdrant stand-in (lab/standins/qdrant, a LAB TEST FIXTURE, not Qdrant).

Upstream's keys (``service.enable_tls``, ``service.verify_https_client_certificate``,
``cluster.p2p.enable_tls``, ``tls.cert|key|ca_cert|cert_ttl``) on the packaged executable,
with certificates for 127.0.0.1 from a throw-away trustme CA: verified REST and gRPC
placeholder, no plaintext answers, handshakes that cannot block other clients, TLS >= 1.2
with forward-secret AEAD suites only, client certificates, certificate reload after
``cert_ttl``, and a two-peer cluster whose p2p port is HTTPS for peers only.

Single nodes are ``StandIn`` of test_qdrant_standin.py, peers ``Peer`` of
qdrant_cluster_testkit.py, each with TLS keys added.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
import trustme
from qdrant_client import models

from qdrant_cluster_testkit import DIM, Peer, build_executable, stop_all, wait_for
from test_qdrant_standin import BARE_ENV, KEY, StandIn

pytestmark = pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")
NO_PROXY = {"http": "", "https": ""}
HOST = "127.0.0.1"
RSA = trustme.KeyType.RSA  # RSA keys: the test of non-forward-secret RSA suites needs them


def _issue(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert(HOST, key_type=RSA)


@dataclass
class Pki:
    """One CA and a certificate for 127.0.0.1 from it, as files."""

    ca: trustme.CA
    leaf: trustme.LeafCert
    ca_file: Path
    cert_file: Path
    key_file: Path

    @classmethod
    def create(cls, directory: Path, ca: trustme.CA | None = None) -> Pki:
        directory.mkdir(parents=True, exist_ok=True)
        ca = ca or trustme.CA(key_type=RSA)
        pki = cls(ca, _issue(ca), directory / "cacert.pem", directory / "cert.pem", directory / "key.pem")
        ca.cert_pem.write_to_path(str(pki.ca_file))
        pki.write_leaf(pki.leaf)
        return pki

    def write_leaf(self, leaf: trustme.LeafCert) -> None:
        self.leaf = leaf
        leaf.cert_chain_pems[0].write_to_path(str(self.cert_file))
        leaf.private_key_pem.write_to_path(str(self.key_file))

    def client_pair(self, directory: Path) -> tuple[str, str]:
        """Another certificate of this CA (for 127.0.0.1), as (cert file, key file) for requests."""
        leaf = _issue(self.ca)
        cert, key = directory / f"client-{id(leaf)}.pem", directory / f"client-{id(leaf)}.key"
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        return str(cert), str(key)

    def tls_env(self, **extra: str) -> dict[str, str]:
        return {"QDRANT__SERVICE__ENABLE_TLS": "true", "QDRANT__TLS__CERT": str(self.cert_file),
                "QDRANT__TLS__KEY": str(self.key_file), "QDRANT__TLS__CA_CERT": str(self.ca_file), **extra}


@pytest.fixture(scope="module")
def executable(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_executable(tmp_path_factory.mktemp("package"))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA the servers do not trust, with its own certificate for 127.0.0.1."""
    return Pki.create(tmp_path_factory.mktemp("other-pki"))


def _tls_standin(executable: Path, workdir: Path, pki: Pki, **env: str) -> StandIn:
    standin = StandIn(executable, workdir, env=pki.tls_env(**env))
    standin.scheme, standin.verify = "https", str(pki.ca_file)
    return standin


@pytest.fixture(scope="module")
def tls_server(executable: Path, pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandIn]:
    standin = _tls_standin(executable, tmp_path_factory.mktemp("tls-standin"), pki).start()
    yield standin
    standin.stop()


def _client_context(pki: Pki | None = None, **versions: ssl.TLSVersion) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if pki is not None:
        pki.ca.configure_trust(context)
    else:
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    for name, version in versions.items():
        setattr(context, name, version)
    return context


def _handshake(port: int, context: ssl.SSLContext) -> ssl.SSLSocket:
    raw = socket.create_connection((HOST, port), timeout=5)
    try:
        return context.wrap_socket(raw, server_hostname=HOST)
    except BaseException:
        raw.close()
        raise


def _plaintext_answer(port: int, request: bytes) -> bytes:
    """What a plaintext HTTP client reads back (b"" when the server closed or reset)."""
    with socket.create_connection((HOST, port), timeout=5) as sock:
        try:
            sock.sendall(request)
            chunks = []
            while chunk := sock.recv(4096):
                chunks.append(chunk)
            return b"".join(chunks)
        except ConnectionResetError:
            return b""


def _der(leaf: trustme.LeafCert) -> bytes:
    return ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())


def _https_get(url: str, pki: Pki, **kwargs: Any) -> requests.Response:
    return requests.get(url, verify=str(pki.ca_file), timeout=5, proxies=NO_PROXY, **kwargs)


# -- REST and gRPC placeholder ----------------------------------------------------------


def test_rest_over_tls_serves_verified_clients_and_never_plaintext(tls_server: StandIn, pki: Pki) -> None:
    assert _https_get(tls_server.url + "/readyz", pki).status_code == 200
    headers = {"api-key": KEY}
    created = requests.put(tls_server.url + "/collections/tls_rest", verify=str(pki.ca_file), timeout=5,
                           headers=headers, json={"vectors": {"size": DIM, "distance": "Cosine"}})
    assert created.json()["result"] is True
    info = _https_get(tls_server.url + "/collections/tls_rest", pki, headers=headers).json()["result"]
    assert info["config"]["params"]["vectors"] == {"size": DIM, "distance": "Cosine"}
    with pytest.raises(requests.exceptions.SSLError):  # a client without the CA does not trust it
        requests.get(tls_server.url + "/readyz", timeout=5, proxies=NO_PROXY)
    answer = _plaintext_answer(tls_server.http_port, b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert not answer.startswith(b"HTTP/") and b"ready" not in answer
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://{HOST}:{tls_server.http_port}/readyz", timeout=5, proxies=NO_PROXY)


def test_grpc_placeholder_handshakes_tls_then_closes(tls_server: StandIn, pki: Pki) -> None:
    with _handshake(tls_server.grpc_port, _client_context(pki)) as tls_sock:
        assert tls_sock.getpeercert(binary_form=True) == _der(pki.leaf)
        try:
            assert tls_sock.recv(100) == b""  # closed after the handshake: no gRPC here
        except (ConnectionResetError, ssl.SSLError):
            pass
    answer = _plaintext_answer(tls_server.grpc_port, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    assert not answer.startswith(b"HTTP/")


def test_silent_and_plaintext_clients_do_not_block_others(tls_server: StandIn, pki: Pki) -> None:
    silent = socket.create_connection((HOST, tls_server.http_port), timeout=5)
    half = socket.create_connection((HOST, tls_server.http_port), timeout=5)
    try:
        half.sendall(b"\x16\x03\x01\x02\x00\x01")  # the start of a ClientHello, never finished
        started = time.monotonic()
        for _ in range(3):
            assert _https_get(tls_server.url + "/readyz", pki).status_code == 200
        assert time.monotonic() - started < 3
        silent.setblocking(False)
        with pytest.raises(BlockingIOError):  # still open: its handshake is just waiting
            silent.recv(1)
    finally:
        silent.close()
        half.close()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_tls_below_1_2_and_non_forward_secret_or_cbc_suites_are_refused(tls_server: StandIn, pki: Pki) -> None:
    port = tls_server.http_port
    old = _client_context(pki, minimum_version=ssl.TLSVersion.TLSv1, maximum_version=ssl.TLSVersion.TLSv1_1)
    old.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer TLS 1.1 at all
    with pytest.raises(ssl.SSLError) as refused:
        _handshake(port, old)
    assert "PROTOCOL_VERSION" in str(refused.value)  # the server's alert: this client did offer TLS 1.1
    tls12 = dict(minimum_version=ssl.TLSVersion.TLSv1_2, maximum_version=ssl.TLSVersion.TLSv1_2)
    for suites in ("ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA:ECDHE-RSA-AES128-SHA256:ECDHE-RSA-AES256-SHA384",
                   "AES128-GCM-SHA256:AES256-GCM-SHA384"):  # CBC only; AEAD without forward secrecy
        context = _client_context(pki, **tls12)
        context.set_ciphers(suites)
        with pytest.raises(ssl.SSLError, match="HANDSHAKE_FAILURE"):  # the server's alert
            _handshake(port, context)
    for suites in ("ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-CHACHA20-POLY1305"):
        context = _client_context(pki, **tls12)
        context.set_ciphers(suites)
        with _handshake(port, context) as tls_sock:
            assert tls_sock.version() == "TLSv1.2" and tls_sock.cipher()[0] == suites
    with _handshake(port, _client_context(pki)) as tls_sock:
        assert tls_sock.version() == "TLSv1.3"


def test_verify_https_client_certificate(executable: Path, pki: Pki, other_pki: Pki, tmp_path: Path) -> None:
    standin = _tls_standin(executable, tmp_path, pki, QDRANT__SERVICE__VERIFY_HTTPS_CLIENT_CERTIFICATE="true")
    standin.cert = pki.client_pair(tmp_path)
    standin.start()
    try:
        url = standin.url + "/readyz"
        for cert in (None, other_pki.client_pair(tmp_path)):
            with pytest.raises(requests.ConnectionError):  # SSLError, or reset after the handshake
                _https_get(url, pki, cert=cert)
        assert _https_get(url, pki, cert=pki.client_pair(tmp_path)).status_code == 200
        # the gRPC placeholder asks for no client certificate (upstream's external gRPC neither)
        _handshake(standin.grpc_port, _client_context(pki)).close()
    finally:
        standin.stop()


def _served_cert(port: int, pki: Pki) -> bytes:
    with _handshake(port, _client_context(pki)) as tls_sock:
        der = tls_sock.getpeercert(binary_form=True)
    assert der is not None
    return der


def test_certificate_is_read_again_after_cert_ttl_only(executable: Path, tmp_path: Path) -> None:
    ca = trustme.CA(key_type=RSA)
    nodes = {}
    for name, env in (("ttl", {"QDRANT__TLS__CERT_TTL": "1"}), ("no-ttl", {})):
        node_pki = Pki.create(tmp_path / name / "pki", ca)
        nodes[name] = (node_pki, _tls_standin(executable, tmp_path / name, node_pki, **env))
    try:
        for node_pki, standin in nodes.values():
            standin.start()
            assert _served_cert(standin.http_port, node_pki) == _der(node_pki.leaf)
        old = {name: node_pki.leaf for name, (node_pki, _) in nodes.items()}
        for name, (node_pki, _) in nodes.items():
            node_pki.write_leaf(_issue(ca))
            assert _der(node_pki.leaf) != _der(old[name])
        time.sleep(1.3)
        ttl_pki, ttl_server = nodes["ttl"]
        assert _served_cert(ttl_server.http_port, ttl_pki) == _der(ttl_pki.leaf)  # the new one
        same_pki, same_server = nodes["no-ttl"]
        assert _served_cert(same_server.http_port, same_pki) == _der(old["no-ttl"])
        # a broken pair at reload time: an error is logged, the current certificate stays
        ttl_pki.key_file.write_text("not a key\n")
        time.sleep(1.1)
        assert _served_cert(ttl_server.http_port, ttl_pki) == _der(ttl_pki.leaf)
        assert _https_get(ttl_server.url + "/readyz", ttl_pki).status_code == 200
    finally:
        for _, standin in nodes.values():
            if standin.process is not None:
                standin.stop()
    log = (tmp_path / "ttl" / "stderr.log").read_text()
    assert "Failed to refresh the REST TLS certificate" in log


# -- p2p --------------------------------------------------------------------------------


class TlsPeer(Peer):
    """A cluster peer with ``cluster.p2p.enable_tls`` and an https:// URI (REST stays plain)."""

    def __init__(self, executable: Path, workdir: Path, pki: Pki) -> None:
        super().__init__(executable, workdir, transfer_delay_ms=0)
        text = self.config.read_text()
        assert "cluster:\n  enabled: true\n" in text
        self.config.write_text(
            text.replace("cluster:\n  enabled: true\n", "cluster:\n  enabled: true\n  p2p:\n    enable_tls: true\n")
            + f"tls:\n  cert: {pki.cert_file}\n  key: {pki.key_file}\n  ca_cert: {pki.ca_file}\n"
        )

    @property
    def uri(self) -> str:
        return f"https://{HOST}:{self.p2p_port}"


@pytest.fixture(scope="module")
def tls_peers(executable: Path, pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[TlsPeer]]:
    root = tmp_path_factory.mktemp("tls-cluster")
    first = TlsPeer(executable, root / "a", Pki.create(root / "a-pki", pki.ca)).start()
    peers = [first]
    try:
        peers.append(TlsPeer(executable, root / "b", Pki.create(root / "b-pki", pki.ca)).start(bootstrap=first))
        yield peers
    finally:
        stop_all(peers)


def test_p2p_tls_cluster_forms_and_replicates_metadata(tls_peers: list[TlsPeer]) -> None:
    first, second = tls_peers
    status = second.http("GET", "/cluster").json()["result"]
    assert sorted(p["uri"] for p in status["peers"].values()) == sorted(p.uri for p in tls_peers)
    assert all(p["uri"].startswith("https://") for p in status["peers"].values())
    first.client().create_collection("over_tls", vectors_config=models.VectorParams(
        size=DIM, distance=models.Distance.COSINE))
    assert wait_for(lambda: second.client().collection_exists("over_tls"), timeout=5, what="collection on B")
    second.client().upsert("over_tls", [models.PointStruct(id=i, vector=[1.0, 2.0, 3.0, float(i)])
                                         for i in range(1, 9)])
    assert first.client().count("over_tls").count == 8  # shards on both peers, read over p2p TLS


def test_p2p_port_refuses_plaintext_and_strangers(tls_peers: list[TlsPeer], pki: Pki, other_pki: Pki,
                                                  tmp_path: Path) -> None:
    port = tls_peers[0].p2p_port
    answer = _plaintext_answer(port, b"POST /p2p/status HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
    assert not answer.startswith(b"HTTP/")
    url = f"https://{HOST}:{port}/p2p/status"
    for cert in (None, other_pki.client_pair(tmp_path)):  # no client certificate, or another CA's
        with pytest.raises(requests.ConnectionError):
            requests.post(url, json={}, verify=str(pki.ca_file), cert=cert, timeout=5, proxies=NO_PROXY)
    answer_ok = requests.post(url, json={}, verify=str(pki.ca_file), cert=pki.client_pair(tmp_path),
                              timeout=5, proxies=NO_PROXY)
    assert answer_ok.json()["peer_id"] == tls_peers[0].peer_id  # a certificate from the CA: a peer


# -- configuration ----------------------------------------------------------------------


def _run(executable: Path, workdir: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    standin = StandIn(executable, workdir)  # only for its config file
    return subprocess.run([str(executable), "--config-path", str(standin.config)], cwd=workdir,
                          env=dict(BARE_ENV, **env), capture_output=True, text=True, timeout=10)


@pytest.mark.parametrize(("variable", "value", "key"), [
    ("QDRANT__SERVICE__VERIFY_HTTPS_CLIENT_CERTIFICATE", "yes", "service.verify_https_client_certificate"),
    ("QDRANT__CLUSTER__P2P__ENABLE_TLS", "1", "cluster.p2p.enable_tls"),
    ("QDRANT__SERVICE__ENABLE_TLS", "on", "service.enable_tls"),
    ("QDRANT__TLS__CERT_TTL", "-5", "tls.cert_ttl"),
    ("QDRANT__TLS__CERT_TTL", "1h", "tls.cert_ttl"),
    ("QDRANT__TLS__CA_CERT", "[a, b]", "tls.ca_cert"),
])
def test_bad_tls_key_types_name_the_key(executable: Path, tmp_path: Path, variable: str, value: str,
                                        key: str) -> None:
    done = _run(executable, tmp_path, {variable: value})
    assert done.returncode == 1 and key in done.stderr, done.stderr


@pytest.mark.parametrize(("env", "expected"), [
    ({"QDRANT__SERVICE__ENABLE_TLS": "true", "QDRANT__TLS__CERT": "/nonexistent/cert.pem"}, "tls.cert"),
    ({"QDRANT__SERVICE__ENABLE_TLS": "true", "QDRANT__TLS__KEY": "/nonexistent/key.pem"}, "tls.key"),
    ({"QDRANT__SERVICE__ENABLE_TLS": "true", "QDRANT__SERVICE__VERIFY_HTTPS_CLIENT_CERTIFICATE": "true",
      "QDRANT__TLS__CA_CERT": "/nonexistent/ca.pem"}, "tls.ca_cert"),
    ({"QDRANT__CLUSTER__P2P__ENABLE_TLS": "true", "QDRANT__TLS__KEY": "/nonexistent/key.pem"}, "tls.key"),
    ({"QDRANT__CLUSTER__P2P__ENABLE_TLS": "true", "QDRANT__TLS__CA_CERT": "/nonexistent/ca.pem"}, "tls.ca_cert"),
])
def test_tls_without_readable_files_refuses_to_start(executable: Path, pki: Pki, tmp_path: Path,
                                                     env: dict[str, str], expected: str) -> None:
    full_env = {"QDRANT__TLS__CERT": str(pki.cert_file), "QDRANT__TLS__KEY": str(pki.key_file),
                "QDRANT__TLS__CA_CERT": str(pki.ca_file), **env}
    done = _run(executable, tmp_path, full_env)
    assert done.returncode == 1, done.stderr
    assert "cannot start" in done.stderr and expected in done.stderr and "/nonexistent/" in done.stderr
