"""Fixtures for the backup program's tests: the Qdrant lab stand-in (a test fixture, NOT
Qdrant) as a subprocess and moto's S3 server in-process, both on 127.0.0.1 free ports.
Qdrant serves TLS only, as in every environment, with a certificate from a throw-away CA
(trustme) that the program is given as ``qdrant_ca_file``.

Each test gets its own S3 prefix and collection, so tests share the two servers (one pair
per xdist worker) without seeing each other's objects.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
import requests
import trustme
from crltestkit import serial_of, write_crl
from moto.server import ThreadedMotoServer

ROOT = Path(__file__).resolve().parents[2]
PROGRAM = ROOT / "roles" / "backup" / "files" / "querygpt_backup.py"
QDRANT_STANDIN = ROOT / "lab" / "standins" / "qdrant"
QDRANT_KEY = "backup-test-key"
BUCKET = "querygpt-test-backups"
CREDENTIALS = {"s3_access_key_id": "testing", "s3_secret_access_key": "testing"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def load_file(name: str, path: Path | str) -> ModuleType:
    """The module at path, imported as name (registered in sys.modules, so dataclasses and
    pickling resolve it): for files that are not on sys.path, such as what a role installs."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_program() -> ModuleType:
    """The backup program, imported from the file the role installs (benchmarks use it too)."""
    return load_file("querygpt_backup", PROGRAM)


@pytest.fixture(scope="session")
def qb() -> ModuleType:
    """The program under test."""
    return load_program()


class QdrantStandin:
    def __init__(self, url: str, snapshots: Path, ca_file: str, crl_file: str = "", revoked_crl_file: str = "") -> None:
        self.url = url
        self.snapshots = snapshots
        self.ca_file = ca_file
        # the CA's CRL, empty (what every test runs with, as the role configures), and one
        # that lists the stand-in's own certificate
        self.crl_file = crl_file
        self.revoked_crl_file = revoked_crl_file
        self.http = requests.Session()
        self.http.trust_env = False
        self.http.verify = ca_file
        self.http.headers["api-key"] = QDRANT_KEY

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, self.url + path, timeout=30, **kwargs)
        response.raise_for_status()
        return response.json()["result"]

    def make_collection(self, name: str, points: int, dim: int = 8) -> None:
        self.call("PUT", f"/collections/{name}", json={"vectors": {"size": dim, "distance": "Cosine"}})
        batch = [{"id": i, "vector": [((i * 7 + j * 3) % 11) / 10 + 0.01 for j in range(dim)],
                  "payload": {"n": i}} for i in range(points)]
        self.call("PUT", f"/collections/{name}/points", params={"wait": "true"}, json={"points": batch})

    def count(self, name: str) -> int:
        return int(self.call("POST", f"/collections/{name}/points/count", json={"exact": True})["count"])

    def top_k(self, name: str, k: int = 5) -> list[tuple[Any, float]]:
        hits = self.call("POST", f"/collections/{name}/points/search",
                         json={"vector": [0.3] * 8, "limit": k})
        return [(h["id"], round(h["score"], 6)) for h in hits]


@pytest.fixture(scope="session")
def qdrant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QdrantStandin]:
    work = tmp_path_factory.mktemp("qdrant")
    port = free_port()
    authority = trustme.CA()
    authority.cert_pem.write_to_path(str(work / "ca.pem"))
    pair = authority.issue_cert("127.0.0.1")
    pair.private_key_pem.write_to_path(str(work / "key.pem"))
    pair.cert_chain_pems[0].write_to_path(str(work / "cert.pem"))
    config = work / "config.yaml"
    config.write_text(
        "log_level: WARN\n"
        f"storage:\n  storage_path: {work / 'storage'}\n  snapshots_path: {work / 'snapshots'}\n"
        f"service:\n  host: 127.0.0.1\n  http_port: {port}\n  grpc_port: null\n  enable_tls: true\n"
        f"  api_key: '{QDRANT_KEY}'\ntelemetry_disabled: true\n"
        f"tls:\n  cert: {work / 'cert.pem'}\n  key: {work / 'key.pem'}\n  ca_cert: {work / 'ca.pem'}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("QDRANT__") and "proxy" not in k.lower()}
    env["PYTHONPATH"] = str(QDRANT_STANDIN)
    log = open(work / "qdrant.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "qdrant_standin", "--config-path", str(config)],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if requests.get(url + "/readyz", timeout=1, verify=str(work / "ca.pem")).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"stand-in did not start: {(work / 'qdrant.log').read_text()}")
            time.sleep(0.05)
        yield QdrantStandin(url, work / "snapshots", str(work / "ca.pem"), write_crl(authority, work / "crl.pem"),
                            write_crl(authority, work / "crl-revoked.pem", [serial_of(pair.cert_chain_pems[0].bytes())]))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


@pytest.fixture(scope="session")
def moto_s3_server() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture()
def s3_endpoint(moto_s3_server: str) -> str:
    """The moto S3 server, its bucket there for this test. moto keeps every backend in one
    process-wide store, which another module's `mock_aws` (tests/app) wipes when its test ends:
    a bucket made once per session is gone whenever the two run in one pytest-xdist worker."""
    client = s3_of(moto_s3_server)
    try:
        client.head_bucket(Bucket=BUCKET)
    except client.exceptions.ClientError:
        client.create_bucket(Bucket=BUCKET)
    return moto_s3_server


def s3_of(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture()
def s3(s3_endpoint: str) -> Any:
    return s3_of(s3_endpoint)


@pytest.fixture()
def collection(qdrant: QdrantStandin) -> str:
    return f"docs_{uuid.uuid4().hex[:8]}"


@pytest.fixture()
def config(qb: ModuleType, qdrant: QdrantStandin, s3_endpoint: str, tmp_path: Path, collection: str) -> Any:
    """A config confined to this test: own prefix, state, metrics and lock paths."""
    return qb.Config.from_dict({
        "qdrant_url": qdrant.url, "qdrant_api_key": QDRANT_KEY, "qdrant_ca_file": qdrant.ca_file,
        "qdrant_crl_file": qdrant.crl_file,
        "qdrant_snapshots_dir": str(qdrant.snapshots),
        "collections": [collection],
        "s3_bucket": BUCKET, "s3_prefix": f"t{uuid.uuid4().hex[:8]}/qdrant",
        "s3_endpoint_url": s3_endpoint, "s3_region": "us-east-1", **CREDENTIALS,
        "s3_max_attempts": 1, "s3_connect_timeout": 2,
        "textfile_dir": str(tmp_path / "textfile"), "state_dir": str(tmp_path / "state"),
        "lock_file": str(tmp_path / "backup.lock"), "restore_ready_timeout": 10,
    })
