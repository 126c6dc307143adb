"""Run a role's preflight on localhost the way playbooks/preflight.yml runs it, and read the result.

`run_role(tmp_path, "nginx", {...})` writes a one-play playbook that gathers no facts,
includes `roles/<role>/tasks/preflight.yml` with errors ignored (as playbooks/preflight.yml
does), then collects the registered `__<role>_preflight` with the project's
`preflight_problems` filter: `Result.problems` is the list playbooks/preflight.yml would
report for the host, each "<role>: <variable>: <message>". Further entry points
(`host_checks`, `download`, ...) run after it as ordinary includes; their failures land in
`Result.failures`.

By default the host is unreachable (ssh to a closed port on 127.0.0.1): preflight must need
no connection and no facts, so a task that touched the host would show up in
`Result.unreachable`. `connect=True` runs over the local connection instead (host checks);
`facts=True` also gathers facts first. Runs use `--check` and the JSON callback, so nothing
here changes this machine and the output is parsed, not grepped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")
HOST = "target"

# Production-shaped inputs every role's preflight accepts, as the wiring layer and an
# environment's inventory would give them (no facts: bind addresses are left to their
# fact-based defaults, which preflight must then not trip over).
SHA = "0123456789abcdef" * 4
PEM_CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
# Shape only, no key material ("MHc" is three characters). Assembled so that secret scanners
# do not mistake a fixture for a committed private key.
_KEY_LABEL = "EC " + "PRIVATE KEY"
PEM_KEY = f"-----BEGIN {_KEY_LABEL}-----\nMHc\n-----END {_KEY_LABEL}-----\n"
GOOD_VARS: dict[str, dict[str, Any]] = {
    "backend": {
        "backend_qdrant_api_key": "preflight-test-qdrant-key",
        "backend_qdrant_urls": ["https://10.0.2.10:6333", "https://10.0.18.10:6333"],
        "backend_database_hosts": ["10.0.3.10:5432", "10.0.19.10:5432"],
        "backend_database_password": "preflight-test-database-password",
        "backend_ollama_urls": ["https://10.0.3.10:11434", "https://10.0.4.10:11434"],
        "backend_documents_bucket": "querygpt-prod-documents-123456789012",
        "backend_secret_key": "preflight-test-backend-secret-key-of-48-characters"[:48],
    },
    "backup": {
        "backup_qdrant_api_key": "preflight-test-qdrant-key",
        "backup_qdrant_url": "https://10.0.2.10:6333",
        "backup_s3_bucket": "querygpt-prod-backups-123456789012",
        "backup_s3_prefix": "prod/qdrant",
        "backup_s3_region": "eu-west-1",
    },
    "common": {
        "common_admin_users": [{"name": "alice", "ssh_keys": ["ssh-ed25519 AAAAC3Nza alice@example"]}],
    },
    "firewall": {
        "firewall_ssh_source_groups": ["bastion"],
        "firewall_ssh_source_cidrs": ["198.51.100.0/24"],
        "firewall_openings": [
            {"name": "node_exporter", "ports": [9100], "source_groups": ["monitoring"]},
            {"name": "nginx", "ports": [80, 443], "source_cidrs": ["0.0.0.0/0", "::/0"], "comment": "edge"},
        ],
    },
    "frontend": {},
    "journal_remote": {},
    "internal_pki": {"internal_pki_ca_cert": PEM_CERT, "internal_pki_ca_key": PEM_KEY},
    "journal_upload": {"journal_upload_url": "https://10.0.4.10:19532"},
    "nginx": {"nginx_server_name": "querygpt.example.com", "nginx_backend_servers": ["10.0.1.10:8000", "10.0.1.11:8000"]},
    "node_exporter": {},
    "ollama": {
        "ollama_checksum": SHA,
        "ollama_models": [
            {"name": "all-minilm:l6-v2", "digest": "sha256:" + SHA},
            {"name": "qwen2.5-coder:1.5b", "digest": SHA},
        ],
        # Production: the host's files from the internal PKI (group_vars/all/tls.yml).
        "ollama_proxy_tls_certificate": "/etc/journal-tls/host.pem",
        "ollama_proxy_tls_key": "/etc/journal-tls/host.key",
        "ollama_proxy_tls_ca": "/etc/journal-tls/ca.pem",
        "ollama_proxy_tls_group": "journal-tls",
    },
    "postgresql": {
        "postgresql_app_password": "preflight-test-app-password",
        "postgresql_replication_password": "preflight-test-replication-password",
        "postgresql_app_client_addresses": ["10.0.1.10", "10.0.17.10"],
        # Production: the backups bucket in the region, the instance profile's credentials.
        "postgresql_backup_s3_bucket": "querygpt-prod-backups-123456789012",
        "postgresql_backup_s3_region": "eu-west-1",
        "postgresql_backup_s3_kms_key_id": "arn:aws:kms:eu-west-1:123456789012:key/0a1b2c3d-0000-4000-8000-000000000000",
    },
    "prometheus_stack": {"prometheus_stack_qdrant_api_key": "preflight-test-read-only-key",
                         "prometheus_stack_internal_ca_pem": PEM_CERT,
                         "prometheus_stack_web_password": "preflight-test-web-password"},
    "qdrant": {
        "qdrant_checksum": SHA,
        "qdrant_api_key": "preflight-test-full-access-key",
        "qdrant_read_only_api_key": "preflight-test-read-only-key",
    },
}
ROLES = sorted(GOOD_VARS)


@dataclass
class Result:
    rc: int
    output: str
    problems: list[str] = field(default_factory=list)  # what playbooks/preflight.yml would report
    failures: list[str] = field(default_factory=list)  # messages of other failed tasks
    shown: dict[str, Any] = field(default_factory=dict)  # run_role(show=...)
    unreachable: bool = False

    @property
    def ok(self) -> bool:
        return self.rc == 0 and not self.problems and not self.failures and not self.unreachable

    @property
    def messages(self) -> str:
        return "\n".join(self.problems + self.failures)

    def assert_refused(self, *needles: str) -> None:
        """The run refused the input and every needle appears in one of the messages."""
        assert not self.ok, self.output[-4000:]
        for needle in needles:
            assert needle in self.messages, f"{needle!r} not in the problems:\n{self.messages}\n{self.output[-4000:]}"

    def assert_ok(self) -> None:
        assert self.ok, f"{self.messages}\n{self.output[-4000:]}"


def _tasks(role: str, entries: Iterable[str], facts: bool, show: Mapping[str, str] | None) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = []
    if facts:
        tasks.append({"name": "Gather facts", "ansible.builtin.setup": {"gather_subset": ["min", "network"]}})
    tasks += [
        {"name": "Run the preflight of " + role, "ansible.builtin.include_role": {
            "name": role, "tasks_from": "preflight", "apply": {"ignore_errors": True}}},
        {"name": "HARNESS collect problems", "ansible.builtin.debug": {
            "msg": "{{ __%s_preflight | default({'failed': true, 'msg': 'registered no __%s_preflight'})"
                   " | preflight_problems('%s') }}" % (role, role, role)}},
    ]
    for entry in entries:
        tasks.append({"name": f"Run {role} {entry}", "ansible.builtin.include_role": {
            "name": role, "tasks_from": entry, "public": True}})
    if show:
        tasks.append({"name": "HARNESS show", "ansible.builtin.debug": {"msg": dict(show)}})
    return tasks


def run_role(tmp_path: Path, role: str, variables: Mapping[str, Any] | None = None, **kwargs: Any) -> Result:
    """Run `role`'s preflight (then `entries`) against the host `target`; see the module docstring
    and `run_batch` for the keyword arguments."""
    return run_batch(tmp_path, {HOST: (role, variables)}, **kwargs)[HOST]


def run_batch(
    tmp_path: Path,
    cases: Mapping[str, tuple[str, Mapping[str, Any] | None]],
    *,
    entries: Iterable[str] = (),
    groups: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
    host_groups: Iterable[str] = (),
    connect: bool = False,
    facts: bool = False,
    good: bool = True,
    check: bool = True,
    show: Mapping[str, str] | None = None,
    extra_vars: Mapping[str, Any] | None = None,
) -> dict[str, Result]:
    """Several cases ({name: (role, variables)}) in ONE ansible-playbook run: each case is a
    host of its own (named after the case) with its variables as host variables, and each
    role a play over its cases' hosts. One run instead of one per case: most of a run's cost
    is starting ansible-playbook. Every case gets its own Result (`output` is the whole run's).

    `variables` go over GOOD_VARS[role] (good=False starts from the role's defaults); `groups`
    adds inventory-only hosts ({group: {host: hostvars}}) and `host_groups` puts every case
    host into groups. `show` ({name: Jinja expression}) is templated after the entries into
    `Result.shown`. `extra_vars` are given with -e, one set for the run: they outrank a role's
    vars/main.yml (a fixed path pointed at a file of the test), and may template per-host values.
    """
    entries = list(entries)
    work = tmp_path / ("harness-" + "-".join(sorted({role for role, _ in cases.values()}))[:80])
    work.mkdir(parents=True, exist_ok=True)
    connection = (
        {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
        if connect or facts
        else {"ansible_connection": "ssh", "ansible_host": "127.0.0.1", "ansible_port": 1,
              "ansible_ssh_common_args": "-o ConnectTimeout=2 -o BatchMode=yes"}
    )
    children: dict[str, Any] = {name: {"hosts": dict(hosts)} for name, hosts in (groups or {}).items()}
    for name in host_groups:
        children.setdefault(name, {"hosts": {}})["hosts"].update({case: {} for case in cases})
    hosts: dict[str, Any] = {}
    plays: dict[str, list[str]] = {}
    for case, (role, variables) in cases.items():
        # Host variables, not extra vars: extra vars are one set for the whole run. The roles'
        # vars/main.yml hold only internal (_-prefixed) names, which no case overrides.
        hosts[case] = {**connection, **(GOOD_VARS[role] if good else {}), **(variables or {})}
        plays.setdefault(role, []).append(case)
    for role, members in plays.items():
        children[f"harness_{role}"] = {"hosts": {case: {} for case in members}}
    inventory = {"all": {"hosts": hosts, "children": children}}
    playbook = [{"name": f"Harness {role}", "hosts": f"harness_{role}", "gather_facts": False,
                 "tasks": _tasks(role, entries, facts, show)} for role in plays]
    (work / "inventory.json").write_text(json.dumps(inventory))
    (work / "playbook.yml").write_text(yaml.safe_dump(playbook, sort_keys=False))
    roles_path = str(REPO / "roles")
    env = {
        **{k: v for k, v in os.environ.items() if "proxy" not in k.lower()},
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": roles_path,
        "ANSIBLE_LIBRARY": str(REPO / "plugins" / "modules"),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
        "ANSIBLE_CALLBACKS_ENABLED": "ansible.builtin.json",  # none beyond the stdout one
        "ANSIBLE_CACHE_PLUGIN": "ansible.builtin.memory",
        "ANSIBLE_LOCALHOST_WARNING": "0",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCAL_TEMP": str(work / "ansible-local"),
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(work / "cp"),
    }
    cmd = [str(ANSIBLE_PLAYBOOK), "-i", str(work / "inventory.json"), str(work / "playbook.yml")]
    cmd += ["--check"] if check else []
    cmd += ["-e", json.dumps(dict(extra_vars))] if extra_vars else []
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=300, check=False)
    results = {case: Result(proc.returncode, proc.stdout + proc.stderr) for case in cases}
    try:
        document, _ = json.JSONDecoder().raw_decode(proc.stdout[proc.stdout.index("{"):])
    except ValueError:
        for result in results.values():
            result.failures.append(f"unreadable ansible-playbook output (rc {proc.returncode})")
        return results
    for play in document.get("plays", []):
        for task in play.get("tasks", []):
            for case, outcome in task.get("hosts", {}).items():
                result = results.get(case)
                if result is None:
                    continue
                if outcome.get("unreachable"):
                    result.unreachable = True
                if task["task"]["name"] == "HARNESS collect problems":
                    result.problems = list(outcome.get("msg") or [])
                elif task["task"]["name"] == "HARNESS show":
                    result.shown = dict(outcome.get("msg") or {})
                elif outcome.get("failed") and not _is_the_preflight_assert(outcome):
                    result.failures += _failure_messages(outcome)
    for case, result in results.items():
        stats = document.get("stats", {}).get(case)
        if stats is None:  # the run never got to this case: it counts as failed
            result.rc = proc.returncode or 1
            result.failures.append(f"no outcome for {case} (ansible-playbook exited {proc.returncode})")
            continue
        result.unreachable = result.unreachable or bool(stats.get("unreachable"))
        # A case that stopped (a failed task that was not ignored) fails for that case alone,
        # as ansible-playbook's exit status would in a run of its own.
        result.rc = 2 if stats.get("failures") or stats.get("unreachable") else 0
    return results


def _is_the_preflight_assert(outcome: Mapping[str, Any]) -> bool:
    """The role's `{var, ok, msg}` assert: its failed items are already in Result.problems."""
    results = outcome.get("results")
    return isinstance(results, list) and bool(results) and all(
        isinstance(r, Mapping) and isinstance(r.get("item"), Mapping) and "var" in r["item"] for r in results)


def _failure_messages(outcome: Mapping[str, Any]) -> list[str]:
    items = [r for r in outcome.get("results", []) if isinstance(r, Mapping) and r.get("failed")]
    return [" ".join(str(r.get("msg", "failed")).split()) for r in items] or [" ".join(str(outcome.get("msg", "failed")).split())]


def render_template(tmp_path: Path, role: str, template: str, variables: Mapping[str, Any]) -> str:
    """roles/<role>/templates/<template> rendered by Ansible over the role's defaults and vars,
    with `variables` as extra vars (which win, as an inventory's would not: tests say so)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    role_dir = REPO / "roles" / role
    out = tmp_path / "rendered"
    playbook = [{
        "name": "Render", "hosts": "localhost", "connection": "local", "gather_facts": False,
        "vars_files": [str(role_dir / "defaults" / "main.yml"), str(role_dir / "vars" / "main.yml")],
        "tasks": [{"name": "Render", "ansible.builtin.template": {
            "src": str(role_dir / "templates" / template), "dest": str(out), "mode": "0644"}}],
    }]
    (tmp_path / "render.yml").write_text(json.dumps(playbook))
    (tmp_path / "variables.json").write_text(json.dumps({"ansible_python_interpreter": sys.executable, **variables}))
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_LOCALHOST_WARNING": "0",
           "ANSIBLE_CACHE_PLUGIN": "ansible.builtin.memory", "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp")}
    proc = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", "localhost,", "-e", f"@{tmp_path / 'variables.json'}",
                           str(tmp_path / "render.yml")], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out.read_text()
