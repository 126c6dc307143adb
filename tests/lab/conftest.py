"""Fixtures for tests that run against a converged lab (`bin/lab up`).

These tests exercise the lab the way an operator does: over SSH through the bastion, with the
lab inventory. They fail, rather than skip, when no lab is running: `bin/test` brings one up
before it runs them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STATE = REPO / ".lab"
VENV_BIN = Path(sys.executable).parent


@dataclass
class Lab:
    hostvars: dict[str, dict]
    groups: dict[str, list[str]]

    def address(self, host: str) -> str:
        return self.hostvars[host]["ansible_host"]

    def ssh(self, host: str, command: str, *, jump: bool = True, timeout: int = 20) -> subprocess.CompletedProcess:
        """Run a command on a lab host as an operator would: ssh through the bastion."""
        args = ["ssh", "-F", str(STATE / "ssh_config"), "-o", "BatchMode=yes", "-o", "ConnectTimeout=5"]
        if not jump:
            args += ["-o", "ProxyJump=none"]
        return subprocess.run([*args, self.address(host), command], capture_output=True, text=True,
                              timeout=timeout, check=False)

    def exec(self, host: str, command: str, timeout: int = 20) -> subprocess.CompletedProcess:
        """Run a command inside a lab container (for probes that must originate on that host)."""
        return subprocess.run(["docker", "exec", f"qgpt-lab-{host}", "bash", "-c", command],
                              capture_output=True, text=True, timeout=timeout, check=False)


def ansible_env() -> dict[str, str]:
    return dict(os.environ, ANSIBLE_VAULT_PASSWORD_FILE=str(STATE / "vault-pass"),
                PATH=f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", ANSIBLE_FORCE_COLOR="0")


@pytest.fixture(scope="session")
def lab() -> Lab:
    if not (STATE / "ssh_config").exists():
        pytest.fail("no lab is running: run `bin/lab up` first (bin/test does)")
    raw = subprocess.run([str(VENV_BIN / "ansible-inventory"), "-i", str(REPO / "inventories/lab"), "--list"],
                         capture_output=True, text=True, check=True, env=ansible_env()).stdout
    inv = json.loads(raw)
    groups = {g: v.get("hosts", []) for g, v in inv.items() if g != "_meta"}
    return Lab(inv["_meta"]["hostvars"], groups)
