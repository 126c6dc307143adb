"""Fixtures for the Terraform layer's tests: the parsed HCL, the tfvars, the
inventories, and a moto server on a free loopback port."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
import yaml

# The helpers module sits next to this file; make it importable whatever pytest's
# import mode is.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from terraform_helpers import (  # noqa: E402
    ENVIRONMENTS,
    INVENTORIES,
    TERRAFORM,
    VENV_BIN,
    TerraformConfig,
    load_hcl,
    tf_files,
)


def _values(path: Path) -> dict:
    """A .tfvars file's assignments (without the parser's __comments__ entry)."""
    return {k: v for k, v in load_hcl(path).items() if not k.startswith("__")}


@pytest.fixture(scope="session")
def tf() -> TerraformConfig:
    return TerraformConfig({p.relative_to(TERRAFORM).as_posix(): load_hcl(p) for p in tf_files()})


@pytest.fixture(scope="session")
def tfvars() -> dict[str, dict]:
    return {env: _values(TERRAFORM / "environments" / env / "terraform.tfvars") for env in ENVIRONMENTS}


@pytest.fixture(scope="session")
def backend_tfvars() -> dict[str, dict]:
    return {env: _values(TERRAFORM / "environments" / env / "backend.tfvars") for env in ENVIRONMENTS}


@pytest.fixture(scope="session")
def inventories() -> dict[str, dict]:
    return {env: yaml.safe_load((INVENTORIES / env / "aws_ec2.yml").read_text()) for env in ENVIRONMENTS}


# --- moto ---------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto server on a free loopback port, for the whole session."""
    server = VENV_BIN / "moto_server"
    if not server.exists():
        pytest.fail(f"{server} is missing: create .venv with `make setup` (requirements/controller.txt)")
    port = _free_port()
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
