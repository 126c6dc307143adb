"""The converged lab as the inventory shows it: for lab tests (tests/lab/conftest.py) and
benchmarks that drive the lab (benchmarks/edge_overhead.py, rollouts.py).

Every QueryGPT API call but /health needs an identity (docs/access-control.md): `lab_admin`
makes an admin and an API token with the backend's CLI on the first backend host, as an
operator does; the tests' session fixture (`lab_identity`) and the benchmarks share it."""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import re
import os
import secrets
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
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

    def ssh(self, host: str, command: str, *, jump: bool = True, timeout: int = 20,
            user: str = "") -> subprocess.CompletedProcess:
        """Run a command on a lab host as an operator would: ssh through the bastion, as the
        ssh_config's `admin` or as `user` (with the lab's key; the jump stays admin's)."""
        args = ["ssh", "-F", str(STATE / "ssh_config"), "-o", "BatchMode=yes", "-o", "ConnectTimeout=5"]
        if not jump:
            args += ["-o", "ProxyJump=none"]
        if user:
            args += ["-l", user]
        # where the controller reaches it: the bastion at its public address, the rest through it
        return subprocess.run([*args, self.hostvars[host]["ansible_host"], command], capture_output=True, text=True,
                              timeout=timeout, check=False)

    def exec(self, host: str, command: str, timeout: int = 20,
             input: str | None = None) -> subprocess.CompletedProcess:
        """Run a command inside a lab container (for probes that must originate on that host);
        `input` is its stdin (how a secret reaches a command: never on its command line)."""
        return subprocess.run(["docker", "exec", *(["-i"] if input is not None else []), self.name(host),
                               "bash", "-c", command],
                              input=input, capture_output=True, text=True, timeout=timeout, check=False)


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


# The internal CA on every host (roles/internal_pki; group_vars/all/tls.yml): root's copy.
INTERNAL_CA = "/etc/journal-tls/ca.pem"


def qdrant_call(lab: Lab, host: str, method: str, path: str, body: Any = None, *, timeout: int = 20,
                via: str = "") -> Any:
    """The JSON answer of Qdrant's REST API on `host` (at the private address it binds, over TLS
    verified against the internal CA), called with curl on `via` (default: `host` itself; a
    backend host to go the way the backend does).
    RuntimeError unless it answers 200."""
    # The key reaches curl on its stdin (-H @-), never on a command line the host's ps shows.
    command = (f"curl -sS -m {timeout} -w '\\n%{{http_code}}' -X {method} -H 'Accept-Encoding: identity' -H @-"
               f" --cacert {INTERNAL_CA} {shlex.quote(f'https://{lab.address(host)}:6333{path}')}")
    if body is not None:
        command += f" -H 'Content-Type: application/json' --data-binary {shlex.quote(json.dumps(body))}"
    done = lab.exec(via or host, command, timeout=timeout + 10,
                    input=f"api-key: {lab_vault()['vault_qdrant_api_key']}\n")
    text, _, status = done.stdout.rpartition("\n")
    if done.returncode != 0 or status != "200":
        raise RuntimeError(f"{method} {path} on {host}: {status or done.returncode} {text[:300]} {done.stderr[:300]}")
    return json.loads(text)


def lb_edges(lab: Lab, listener: str = "https") -> dict[str, dict[str, str]]:
    """The edges behind one of the lab load balancer's listeners (lab/playbooks/prepare_lb.yml,
    the NLB's stand-in), from HAProxy's runtime API: edge -> its row of `show stat`, by the
    CSV header's field names (`status` UP/DOWN/MAINT, `chkdown` the times its health check
    took it out, `stot` its connections so far)."""
    done = lab.exec(lab.groups["lb"][0], "echo 'show stat' | socat stdio /run/haproxy/admin.sock")
    assert done.returncode == 0, done.stderr
    rows = csv.DictReader(io.StringIO(done.stdout.removeprefix("# ")))
    return {row["svname"]: row for row in rows
            if row["pxname"] == f"edge_{listener}" and row["svname"] not in ("FRONTEND", "BACKEND")}


def changed_counts(output: str) -> dict[str, int]:
    """host -> changed= of a playbook run's recap."""
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\S+)\s+:\s+ok=\d+\s+changed=(\d+)", output, re.M)}


# --- identity: an admin and its API token, made with the backend's CLI -------------------------

BACKEND_CLI = "/opt/querygpt/backend/current/bin/querygpt-backend"
BACKEND_ENV_FILE = "/etc/querygpt/backend.env"  # root-only: the CLI runs as root, as the runbooks run it
LAB_TESTS_USER = "lab-tests"
TOKEN_FORMAT = re.compile(r"qgpt_[A-Za-z0-9_-]{43}")
# Where `auth_header_file` leaves a token's header on a lab host, for curl's `-H @file`.
AUTH_HEADER_DIR = "/var/tmp/lab-auth"


@dataclass(frozen=True)
class Identity:
    """A user of the lab's backend: its name, password and an API token. Neither secret is in
    its repr, so an assertion message or a log that shows the object shows neither."""

    username: str
    password: str = field(repr=False)
    token: str = field(repr=False)

    @property
    def authorization(self) -> dict[str, str]:
        """The request header that authenticates as this user (for httpx, urllib3)."""
        return {"Authorization": f"Bearer {self.token}"}


def lab_admin(lab: Lab, username: str = LAB_TESTS_USER, *, token_name: str = "", expires_in_days: int = 1,
              host: str = "") -> Identity:
    """An admin `username` of the lab's backend with a new random password and a new API token,
    made with the CLI on `host` (default: the first backend host), the password on stdin:
    `create-admin` makes the user, or resets the password of an existing one (so every run
    works). The token expires after `expires_in_days`. RuntimeError when the CLI fails; its
    messages never carry the password or the token."""
    host = host or lab.groups["backend"][0]
    password = secrets.token_urlsafe(24)  # 32 characters: above the 12 a password needs
    made = lab.exec(host, f"{BACKEND_CLI} create-admin --username {shlex.quote(username)}"
                          f" --env-file {BACKEND_ENV_FILE}", timeout=120, input=password)
    if made.returncode != 0:
        raise RuntimeError(f"querygpt-backend create-admin --username {username} on {host} exited "
                           f"{made.returncode}: {made.stderr[-2000:]}")
    token = create_token(lab, username, token_name or f"{username}-{secrets.token_hex(4)}",
                         expires_in_days=expires_in_days, host=host)
    return Identity(username, password, token)


def create_token(lab: Lab, username: str, name: str, *, expires_in_days: int = 1, host: str = "") -> str:
    """A new API token of the existing user `username`, labelled `name`, made with the CLI on
    `host` (default: the first backend host). RuntimeError when the CLI fails (its message
    never carries the token)."""
    host = host or lab.groups["backend"][0]
    made = lab.exec(host, f"{BACKEND_CLI} create-token --username {shlex.quote(username)} --name {shlex.quote(name)}"
                          f" --expires-in-days {int(expires_in_days)} --env-file {BACKEND_ENV_FILE}", timeout=120)
    # the CLI prints the token alone on its line (a log line, should one come, is JSON)
    tokens = [line.strip() for line in made.stdout.splitlines() if TOKEN_FORMAT.fullmatch(line.strip())]
    token = tokens[-1] if tokens else ""
    if made.returncode != 0 or not token:
        raise RuntimeError(f"querygpt-backend create-token --username {username} on {host} exited "
                           f"{made.returncode} without a token of the documented form: {made.stderr[-2000:]}")
    return token


def lab_token(lab: Lab, username: str = LAB_TESTS_USER, **kw: Any) -> str:
    """An API token of the admin `username` (lab_admin): for a script's `Authorization: Bearer`."""
    return lab_admin(lab, username, **kw).token


def auth_header_file(lab: Lab, host: str, token: str) -> str:
    """Write `Authorization: Bearer <token>` to a root-only file on `host` (through stdin) and
    return its path, for curl's `-H @<path>`: the token stays off every command line, so off
    every error message that shows one."""
    path = f"{AUTH_HEADER_DIR}/{hashlib.sha256(token.encode()).hexdigest()[:16]}.header"
    done = lab.exec(host, f"umask 077 && mkdir -p {AUTH_HEADER_DIR} && cat > {path}",
                    input=f"Authorization: Bearer {token}\n")
    if done.returncode != 0:
        raise RuntimeError(f"could not write an authorization header file on {host}: {done.stderr[-500:]}")
    return path
