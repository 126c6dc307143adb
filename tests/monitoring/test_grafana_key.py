"""Grafana's repository key: installed as the keyring only when it carries the pinned fingerprint.

The role's own tasks (roles/prometheus_stack/tasks/grafana_key.yml) run on localhost against
keys made here with gpg, served as file:// URLs; the staging and keyring paths point into a
temporary directory (extra vars win over the role's vars).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

PLAY = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: prometheus_stack
        tasks_from: grafana_key.yml
"""


def gpg(home: Path, *args: str) -> str:
    return subprocess.run(["gpg", "--homedir", str(home), "--batch", "--passphrase", "", *args],
                          check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, str]:
    """Two signing keys, `pinned` and `other`, each exported armored to its own file."""
    home = tmp_path_factory.mktemp("gnupg")
    home.chmod(0o700)
    out = {}
    for name in ("pinned", "other"):
        gpg(home, "--quick-gen-key", f"{name} <{name}@example.test>", "ed25519", "sign", "1d")
        listing = gpg(home, "--with-colons", "--list-keys", f"{name}@example.test")
        out[name + "_fpr"] = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
        path = home / f"{name}.asc"
        path.write_text(gpg(home, "--armor", "--export", f"{name}@example.test"))
        out[name] = str(path)
    return out


def run_key_tasks(tmp_path: Path, key_file: str, fingerprint: str) -> subprocess.CompletedProcess:
    playbook = tmp_path / "play.yml"
    playbook.write_text(PLAY)
    extra = {
        "ansible_python_interpreter": sys.executable,
        "prometheus_stack_grafana_gpg_key_url": f"file://{key_file}",
        "prometheus_stack_grafana_gpg_key_fingerprint": fingerprint,
        "_prometheus_stack_grafana_key_staging": str(tmp_path / "staging.asc"),
        "_prometheus_stack_grafana_keyring": str(tmp_path / "keyrings" / "grafana.asc"),
    }
    (tmp_path / "keyrings").mkdir(exist_ok=True)
    env = dict(os.environ, ANSIBLE_ROLES_PATH=str(REPO / "roles"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_INVENTORY_UNPARSED_WARNING="0")
    return subprocess.run(["ansible-playbook", "-i", "localhost,", str(playbook), "-e", json.dumps(extra)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, check=False)


def test_the_pinned_key_becomes_the_keyring(tmp_path, keys):
    # a bundle with another key besides the pinned one, as Grafana's gpg.key is
    bundle = tmp_path / "bundle.asc"
    bundle.write_text(Path(keys["other"]).read_text() + Path(keys["pinned"]).read_text())
    result = run_key_tasks(tmp_path, str(bundle), keys["pinned_fpr"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "keyrings" / "grafana.asc").read_text() == bundle.read_text()
    # again: nothing changes
    again = run_key_tasks(tmp_path, str(bundle), keys["pinned_fpr"])
    assert again.returncode == 0 and "changed=0" in again.stdout, again.stdout


def test_a_key_without_the_pinned_fingerprint_is_refused_before_the_keyring(tmp_path, keys):
    result = run_key_tasks(tmp_path, keys["other"], keys["pinned_fpr"])
    assert result.returncode != 0
    assert f"does not carry the pinned key {keys['pinned_fpr']}" in result.stdout, result.stdout
    assert keys["other_fpr"] in result.stdout
    assert not (tmp_path / "keyrings" / "grafana.asc").exists()
