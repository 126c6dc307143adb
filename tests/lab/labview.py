"""The converged lab as the inventory shows it: for lab tests (tests/lab/conftest.py) and
benchmarks that drive the lab (benchmarks/edge_overhead.py)."""

from __future__ import annotations

import functools
import json
import re
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "lab"))
import yaml  # noqa: E402
from labctl.inventory import unwrap_unsafe  # noqa: E402
STATE = REPO / ".lab"
VENV_BIN = Path(sys.executable).parent


@dataclass
class Lab:
    """The lab as the inventory (inventories/lab/aws_ec2.yml, answered by the EC2 emulator)
    shows it: hosts named by private IP, as in prod."""

    hostvars: dict[str, dict]
    groups: dict[str, list[str]]

    def address(self, host: str) -> str:
        """The host's private address (what its peers use)."""
        return self.hostvars[host]["ec2_private_ip_address"]

    def name(self, host: str) -> str:
        """The instance's Name tag: also its container's name and its hostname."""
        return self.hostvars[host]["ec2_tags"]["Name"]

    def zone(self, host: str) -> str:
        return self.hostvars[host]["ec2_placement"]["availability_zone"]

    def render(self, expression: str, host: str) -> object:
        """A variable as the playbooks see it on `host` (the wiring and the lab's group_vars)."""
        env = dict(ansible_env(), ANSIBLE_LOAD_CALLBACK_PLUGINS="True", ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json")
        done = subprocess.run([str(VENV_BIN / "ansible"), "-i", str(REPO / "inventories/lab"), host, "-m",
                               "ansible.builtin.debug", "-a", json.dumps({"msg": "{{ " + expression + " | to_json }}"})],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=True)
        start = 0 if done.stdout.startswith("{") else done.stdout.index("\n{") + 1
        document, _ = json.JSONDecoder().raw_decode(done.stdout, start)
        return json.loads(document["plays"][0]["tasks"][0]["hosts"][host]["msg"])

    def ssh(self, host: str, command: str, *, jump: bool = True, timeout: int = 20) -> subprocess.CompletedProcess:
        """Run a command on a lab host as an operator would: ssh through the bastion."""
        args = ["ssh", "-F", str(STATE / "ssh_config"), "-o", "BatchMode=yes", "-o", "ConnectTimeout=5"]
        if not jump:
            args += ["-o", "ProxyJump=none"]
        # where the controller reaches it: the bastion at its public address, the rest through it
        return subprocess.run([*args, self.hostvars[host]["ansible_host"], command], capture_output=True, text=True,
                              timeout=timeout, check=False)

    def exec(self, host: str, command: str, timeout: int = 20) -> subprocess.CompletedProcess:
        """Run a command inside a lab container (for probes that must originate on that host)."""
        return subprocess.run(["docker", "exec", self.name(host), "bash", "-c", command],
                              capture_output=True, text=True, timeout=timeout, check=False)


def ansible_env() -> dict[str, str]:
    """As an operator runs ansible against the lab: no extra settings (the vault password and
    the inventory's EC2 emulator are found by configuration)."""
    return dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", ANSIBLE_FORCE_COLOR="0")


def load_lab() -> Lab:
    """The lab's hosts and groups, from the lab inventory; RuntimeError when no lab runs."""
    if not (STATE / "ssh_config").exists():
        raise RuntimeError("no lab is running: run `bin/lab up` first (bin/test does)")
    raw = subprocess.run([str(VENV_BIN / "ansible-inventory"), "-i", str(REPO / "inventories/lab"), "--list"],
                         cwd=REPO, capture_output=True, text=True, check=True, env=ansible_env()).stdout
    inv = unwrap_unsafe(json.loads(raw))
    groups = {g: members(inv, g) for g in inv if g != "_meta"}
    return Lab(inv["_meta"]["hostvars"], groups)


def members(inv: dict, group: str) -> list[str]:
    """A group's hosts, its child groups' included (as Ansible's `groups` has them)."""
    entry = inv.get(group, {})
    hosts = list(entry.get("hosts", []))
    for child in entry.get("children", []):
        hosts += [h for h in members(inv, child) if h not in hosts]
    return hosts


def acme_root_pem(lab: Lab) -> str:
    """Pebble's current root CA (the lab ACME server's), from its management interface: what
    lab clients trust for the edges' certificates."""
    acme = lab.groups["acme"][0]
    out = lab.exec(acme, f"curl -sfk https://{lab.address(acme)}:15000/roots/0")
    if out.returncode != 0 or "BEGIN CERTIFICATE" not in out.stdout:
        raise RuntimeError(f"no root from the lab ACME server: {out.stderr}")
    return out.stdout


@functools.cache
def lab_vault() -> dict[str, Any]:
    """The lab's vault (inventories/lab/group_vars/all/vault.yml), decrypted as the playbooks
    read it; read once per process."""
    out = subprocess.run([str(VENV_BIN / "ansible-vault"), "view", "inventories/lab/group_vars/all/vault.yml"],
                         cwd=REPO, env=ansible_env(), capture_output=True, text=True, check=True).stdout
    return dict(yaml.safe_load(out))


def qdrant_call(lab: Lab, host: str, method: str, path: str, body: Any = None, *, timeout: int = 20,
                via: str = "") -> Any:
    """The JSON answer of Qdrant's REST API on `host` (at the private address it binds), called
    with curl on `via` (default: `host` itself; a backend host to go the way the backend does).
    RuntimeError unless it answers 200."""
    command = (f"curl -sS -m {timeout} -w '\\n%{{http_code}}' -X {method} -H 'Accept-Encoding: identity'"
               f" -H {shlex.quote('api-key: ' + str(lab_vault()['vault_qdrant_api_key']))}"
               f" {shlex.quote(f'http://{lab.address(host)}:6333{path}')}")
    if body is not None:
        command = (f"printf %s {shlex.quote(json.dumps(body))} | {command}"
                   " -H 'Content-Type: application/json' --data-binary @-")
    done = lab.exec(via or host, command, timeout=timeout + 10)
    text, _, status = done.stdout.rpartition("\n")
    if done.returncode != 0 or status != "200":
        raise RuntimeError(f"{method} {path} on {host}: {status or done.returncode} {text[:300]} {done.stderr[:300]}")
    return json.loads(text)


def changed_counts(output: str) -> dict[str, int]:
    """host -> changed= of a playbook run's recap."""
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\S+)\s+:\s+ok=\d+\s+changed=(\d+)", output, re.M)}
