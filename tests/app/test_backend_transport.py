"""The backend's accepted connections have Nagle's algorithm off, in multi-worker mode too.

With QUERYGPT_WORKERS > 1 uvicorn binds the listener itself with proto 0, asyncio then skips
TCP_NODELAY, and every request on a kept-alive connection waited ~40 ms for a delayed ACK
(see querygpt/transport.py). The lab checks the same through the edge (test_lab_keepalive).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from querygpt import cli
from querygpt.transport import NoDelayHTTPProtocol, set_nodelay
from querygpt_testkit import DATABASE_ENV

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import httpprobe  # noqa: E402


class _Transport:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def get_extra_info(self, name: str):
        return self.sock if name == "socket" else None


def test_nodelay_is_set_on_a_connection_accepted_from_a_proto_0_listener() -> None:
    listener = socket.socket(family=socket.AF_INET)  # how uvicorn binds for several workers
    assert listener.proto == 0
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    client = socket.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    try:
        assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0  # the defect
        set_nodelay(_Transport(accepted))
        assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        for s in (client, accepted, listener):
            s.close()


def test_unix_sockets_are_left_alone() -> None:
    a, b = socket.socketpair(socket.AF_UNIX)
    try:
        set_nodelay(_Transport(a))  # must not raise: TCP_NODELAY does not apply
    finally:
        a.close()
        b.close()


def test_the_cli_serves_with_the_nodelay_protocol(monkeypatch) -> None:
    import uvicorn

    calls: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.update(kw))
    monkeypatch.setenv("QUERYGPT_DOCUMENTS_BUCKET", "querygpt-documents")
    for name, value in DATABASE_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    assert cli.main([]) == 0
    assert calls["http"] is NoDelayHTTPProtocol


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    """The real console script with two workers, as the role runs it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    prom = tmp_path_factory.mktemp("prom")
    env = dict(os.environ, QUERYGPT_HOST="127.0.0.1", QUERYGPT_PORT=str(port), QUERYGPT_WORKERS="2",
               QUERYGPT_DOCUMENTS_BUCKET="querygpt-documents", PROMETHEUS_MULTIPROC_DIR=str(prom),
               **DATABASE_ENV,  # /health needs no database: nothing connects to it
               PYTHONPATH=str(ROOT / "app" / "backend" / "src"))
    proc = subprocess.Popen([sys.executable, "-m", "querygpt"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/health"
    try:
        deadline = time.monotonic() + 60  # two workers importing on a loaded 2-core machine
        while True:
            try:
                urllib.request.urlopen(url, timeout=1).read()
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"backend exited: {proc.stderr.read().decode()[-2000:]}")
                if time.monotonic() > deadline:
                    pytest.fail("backend did not answer /health within 60 s")
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_kept_alive_request_is_as_fast_as_a_new_connection(two_workers) -> None:
    """The stall was ~40 ms per request; a few ms of slack stays far from it and from noise."""
    result = httpprobe.keepalive(httpprobe.Target(two_workers), requests=20)
    assert result["kept_alive_p50"] <= result["new_connection_p50"] + 5, result
