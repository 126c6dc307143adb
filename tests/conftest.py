"""Fixtures shared by every test directory: a local AWS API (moto) on a free loopback port,
and a throw-away PostgreSQL server (pgserver.py)."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import pytest

if TYPE_CHECKING:
    from pgserver import PostgresServer

VENV_BIN = Path(__file__).resolve().parents[1] / ".venv" / "bin"


#: pytest-xdist (``-n``) runs each test file whole on one worker: files share module fixtures
#: (a Qdrant cluster, a stand-in backend, a batch of preflight runs, a moto server), and some
#: build on earlier tests in file order. xdist's default, ``--dist load``, hands single tests to
#: whichever worker is free, so both workers paid for most module fixtures (the backend preflight
#: batch, 45 s, twice), and a file like tests/standins/test_qdrant_cluster.py lost its earlier
#: steps. (xdist's own ``--dist loadgroup`` with ``xdist_group`` marks is silently ignored on
#: pytest 9.2 with xdist 3.8: xdist sets ``item._nodeid``, which pytest 9 no longer reads.)
#:
#: Files go out heaviest first, so the run does not end on one long file while the other worker
#: idles: these, measured 2026-12-05 (seconds of a two-core run, fixtures included), then the
#: rest in collection order. A stale entry costs balance only, never a result.
HEAVIEST_FIRST = (
    "tests/roles/test_backend_preflight.py",  # 280 s
    "tests/project/test_first_deploy.py",  # 149
    "tests/integration/test_backend_with_standins.py",  # 127
    "tests/roles/test_preflight_contract.py",  # 89
    "tests/backup/test_backup_cluster.py",  # 84
    "tests/app/test_backend_access.py",  # 80
    "tests/roles/test_qdrant_preflight.py",  # 69
    "tests/roles/test_ollama_preflight.py",  # 64
    "tests/app/test_backend_reindex.py",  # 39
    "tests/app/test_backend_state.py",  # 38
    "tests/app/test_backend_pdf_limits.py",  # 36
    "tests/roles/test_nginx_waf.py",  # 31
    "tests/terraform/test_terraform_inventory_moto.py",  # 26
    "tests/roles/test_frontend_preflight.py",  # 25
    "tests/project/test_drain_nlb.py",  # 23
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """HEAVIEST_FIRST's files first (a stable sort: each file keeps its own order)."""
    rank = {path: i for i, path in enumerate(HEAVIEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """``--dist load`` with each test file one unit of work, in collection order."""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class WholeFiles(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return nodeid.split("::", 1)[0]

    config.option.loadscopereorder = False  # collection order: HEAVIEST_FIRST's, not test counts
    return WholeFiles(config, log)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto server on a free loopback port, one per test module: modules seed the same
    environments (prod as Terraform would build it) and must not see each other's."""
    server = VENV_BIN / "moto_server"
    if not server.exists():
        pytest.fail(f"{server} is missing: create .venv with `bin/lab bootstrap` (requirements/controller.txt)")
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("w") as log_handle:
        proc = subprocess.Popen(
            [str(server), "-H", "127.0.0.1", "-p", str(port)],
            stdout=log_handle,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto_server did not start on {url}: {log.read_text()[-2000:]}")
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def postgres() -> Iterator["PostgresServer"]:
    """A PostgreSQL server of this pytest process (each xdist worker its own), with the
    application role; tests create their databases in it (pgserver.py)."""
    from pgserver import PostgresMissing, remove_server, start_server

    try:
        server = start_server()
    except PostgresMissing as exc:
        pytest.fail(str(exc))
    try:
        yield server
    finally:
        remove_server(server)
