"""Helpers to run a cluster of packaged Qdrant stand-in peers (lab/standins/qdrant, a LAB
TEST FIXTURE, not Qdrant) on loopback: shared by tests/standins/test_qdrant_cluster.py and
the backup program's cluster tests (tests/backup/test_backup_cluster.py).

A plain module with a unique name (tests/ has several conftest.py): the stand-in tests
import it from their own directory, the backup tests load it by path.
"""

from __future__ import annotations

import importlib
import signal
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import requests
from qdrant_client import QdrantClient
from qdrant_client.http.exceptions import UnexpectedResponse

REPO = Path(__file__).resolve().parents[2]
PACKAGE_SCRIPT = REPO / "lab" / "standins" / "qdrant" / "package.py"
VERSION = "1.15.5"
KEY = "lab-cluster-key"
BARE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
NO_PROXY = {"http": "", "https": ""}
DIM = 4


def standin_module(name: str) -> ModuleType:
    """A module of the stand-in's package (qdrant_standin.<name>), imported from its source
    tree for unit tests, without leaving that tree on sys.path."""
    source = str(PACKAGE_SCRIPT.parent)
    sys.path.insert(0, source)
    try:
        return importlib.import_module(f"qdrant_standin.{name}")
    finally:
        sys.path.remove(source)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], Any], timeout: float = 15, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except (requests.RequestException, UnexpectedResponse, AssertionError, KeyError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout} s")
        time.sleep(0.1)


class Peer:
    """One stand-in peer: its own ports, storage, snapshots and config."""

    def __init__(self, executable: Path, workdir: Path, via_env: bool = False,
                 transfer_delay_ms: int = 2000) -> None:
        self.executable = executable
        self.transfer_delay_ms = transfer_delay_ms
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.http_port, self.p2p_port = _free_port(), _free_port()
        self.storage, self.snapshots = workdir / "storage", workdir / "snapshots"
        self.config = workdir / "config.yaml"
        self.via_env = via_env
        cluster = "" if via_env else "cluster:\n  enabled: true\n"
        self.config.write_text(
            "log_level: INFO\n"
            f"storage:\n  storage_path: {self.storage}\n  snapshots_path: {self.snapshots}\n"
            f"service:\n  host: 127.0.0.1\n  http_port: {self.http_port}\n  grpc_port: null\n  api_key: {KEY}\n"
            + cluster +
            "telemetry_disabled: true\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.p2p_port}"

    def start(self, bootstrap: Peer | None = None) -> Peer:
        env = dict(BARE_ENV, QDRANT__CLUSTER__P2P__PORT=str(self.p2p_port),
                   QDRANT__CLUSTER__CONSENSUS__TICK_PERIOD_MS="100",
                   QDRANT__CLUSTER__STANDIN_TRANSFER_DELAY_MS=str(self.transfer_delay_ms))
        args = [str(self.executable), "--config-path", str(self.config)]
        if self.via_env:  # upstream's environment equivalents of the config key and the flags
            env.update(QDRANT__CLUSTER__ENABLED="true", QDRANT_URI=self.uri)
            if bootstrap is not None:
                env["QDRANT_BOOTSTRAP"] = bootstrap.uri
        else:
            args += ["--uri", self.uri] + (["--bootstrap", bootstrap.uri] if bootstrap else [])
        self.process = subprocess.Popen(args, cwd=self.workdir, env=env,
                                        stderr=open(self.workdir / "stderr.log", "ab"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.workdir / "stderr.log").read_text()
            try:
                if requests.get(self.url + "/", timeout=1, proxies=NO_PROXY).status_code == 200:
                    return self
            except requests.ConnectionError:
                time.sleep(0.05)
        raise TimeoutError("peer did not start")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            assert self.process.wait(timeout=10) == 0

    def client(self) -> QdrantClient:
        return QdrantClient(url=self.url, api_key=KEY, prefer_grpc=False, timeout=20, check_compatibility=False)

    def http(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"api-key": KEY, "Accept-Encoding": "identity", **kwargs.pop("headers", {})}
        return requests.request(method, self.url + path, headers=headers, timeout=20, proxies=NO_PROXY, **kwargs)

    @property
    def peer_id(self) -> int:
        return int(self.http("GET", "/cluster").json()["result"]["peer_id"])

    def replicas(self, collection: str) -> dict[int, dict[int, str]]:
        """shard id -> {peer id: state}, from this peer's GET /collections/{name}/cluster."""
        info = self.client().collection_cluster_info(collection)
        shards: dict[int, dict[int, str]] = {}
        for local in info.local_shards:
            shards.setdefault(local.shard_id, {})[info.peer_id] = str(local.state)
        for remote in info.remote_shards:
            shards.setdefault(remote.shard_id, {})[remote.peer_id] = str(remote.state)
        return shards

    def local_counts(self, collection: str) -> dict[int, int]:
        return {s.shard_id: s.points_count for s in self.client().collection_cluster_info(collection).local_shards}



def all_active(peer: Peer, collection: str, expect_replicas: int) -> bool:
    """No transfer running and every shard with expect_replicas replicas, all Active."""
    shards = peer.replicas(collection)
    info = peer.client().collection_cluster_info(collection)
    return (not info.shard_transfers and all(len(r) == expect_replicas for r in shards.values())
            and all(s == "Active" for r in shards.values() for s in r.values()))


def build_executable(out: Path) -> Path:
    """Package the stand-in as the qdrant role downloads it, and unpack its executable."""
    subprocess.run([sys.executable, str(PACKAGE_SCRIPT), "--version", VERSION, "--out", str(out)],
                   check=True, capture_output=True, timeout=30)
    with tarfile.open(out / "qdrant-x86_64-unknown-linux-gnu.tar.gz") as tar:
        tar.extract("qdrant", out, filter="tar")
    return out / "qdrant"


def stop_all(peers: list[Peer]) -> None:
    for peer in peers:
        try:
            peer.stop()
        except AssertionError:
            pass
