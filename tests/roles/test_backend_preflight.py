"""Bad input to the backend role fails in preflight, before any change, naming the variable.

Each case runs the role's `preflight` entry point with ansible-playbook against localhost
(no fact gathering: the bind address is given). Preflight only asserts and computes facts,
so nothing on this machine changes. Every bad case has a passing twin, so a failure here
means the input was refused, not that the harness is broken.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")

GOOD_VARS: dict[str, object] = {
    "backend_qdrant_api_key": "test-qdrant-key",
    "backend_bind_address": "10.0.0.5",
    "backend_workers": 3,
}

PLAYBOOK = """\
- name: Run backend preflight
  hosts: backend
  gather_facts: false
  tasks:
    - name: Include backend preflight
      ansible.builtin.include_role:
        name: backend
        tasks_from: preflight
        public: true
    - name: Show the computed values
      ansible.builtin.debug:
        msg: "RESULT {{ backend_qdrant_url }} {{ backend_ollama_url }} {{ _backend_active_dir }} {{ _backend_release_dir }}"
"""


def run_preflight(tmp_path: Path, overrides: dict[str, object], *, groups=("qdrant", "ollama")):
    """(exit code, combined output) of the preflight against localhost."""
    hosts = {"backend": {"hosts": {"localhost": {"ansible_connection": "local",
                                                 "ansible_python_interpreter": sys.executable}}}}
    if "qdrant" in groups:
        hosts["qdrant"] = {"hosts": {"qdrant-1": {"ansible_host": "10.0.2.10"}}}
    if "ollama" in groups:
        hosts["ollama"] = {"hosts": {"ollama-1": {"ansible_host": "10.0.3.10"}}}
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({"all": {"children": hosts}}))
    playbook = tmp_path / "playbook.yml"
    playbook.write_text(PLAYBOOK)
    extra = tmp_path / "vars.json"
    extra.write_text(json.dumps({**GOOD_VARS, "backend_install_prefix": str(tmp_path / "prefix"), **overrides}))
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_STDOUT_CALLBACK": "default",
           "ANSIBLE_CALLBACK_RESULT_FORMAT": "json"}
    result = subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(playbook), "-e", f"@{extra}"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )
    return result.returncode, result.stdout + result.stderr


def test_good_input_passes_and_urls_come_from_the_groups(tmp_path):
    rc, out = run_preflight(tmp_path, {})
    assert rc == 0, out
    version = (REPO / "app/backend/src/querygpt/__init__.py").read_text().split('__version__ = "')[1].split('"')[0]
    assert (f"RESULT http://10.0.2.10:6333 http://10.0.3.10:11434 {tmp_path}/prefix/releases/{version} {tmp_path}/prefix/releases/{version}"
            in out), out


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"backend_qdrant_api_key": ""}, "backend_qdrant_api_key"),
        ({"backend_bind_address": "0.0.0.0"}, "backend_bind_address"),
        ({"backend_top_k": 0}, "backend_top_k"),
        ({"backend_workers": 65}, "backend_workers"),
        ({"backend_ollama_url": "ftp://x"}, "backend_ollama_url"),
        ({"backend_wheelhouse_archive": "relative/wheels.zip"}, "backend_wheelhouse_archive"),
    ],
    ids=lambda v: v if isinstance(v, str) else next(iter(v)),
)
def test_bad_input_fails_naming_the_variable(tmp_path, overrides, variable):
    rc, out = run_preflight(tmp_path, overrides)
    assert rc != 0 and f"{variable}:" in out, out


@pytest.mark.parametrize("missing", ["qdrant", "ollama"])
def test_missing_group_fails_naming_url_and_group(tmp_path, missing):
    rc, out = run_preflight(tmp_path, {}, groups={"qdrant", "ollama"} - {missing})
    assert rc != 0, out
    assert f"backend_{missing}_url: cannot be computed, the inventory has no host in group '{missing}'" in out
    # an explicit URL needs no group
    rc, out = run_preflight(tmp_path, {f"backend_{missing}_url": "http://10.9.9.9:1"}, groups={"qdrant", "ollama"} - {missing})
    assert rc == 0, out


def test_rollback_only_to_a_kept_release(tmp_path):
    rc, out = run_preflight(tmp_path, {"backend_rollback_to": "0.0.9"})
    assert rc != 0 and "backend_rollback_to: release '0.0.9' is not installed" in out, out
    script = tmp_path / "prefix/releases/0.0.9/bin/querygpt-backend"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n")
    rc, out = run_preflight(tmp_path, {"backend_rollback_to": "0.0.9"})
    assert rc == 0 and f"{tmp_path}/prefix/releases/0.0.9 " in out, out


def test_the_api_key_never_reaches_the_output(tmp_path):
    rc, out = run_preflight(tmp_path, {"backend_qdrant_api_key": "s3cr3t-visible-if-leaked", "backend_top_k": 0})
    assert rc != 0
    assert "s3cr3t-visible-if-leaked" not in out
