"""Bad input to the frontend role fails in preflight, before any change, naming the variable.

Each case runs the role's `preflight` entry point with ansible-playbook against localhost:
preflight only asserts (and stats the rollback release), so nothing on this machine changes.
Every refusal has a passing twin, so a failure means the input was refused, not that the
harness is broken. The build, unpack checks, switch, pruning and rollback run in the molecule
scenario (roles/frontend/molecule/default), where a full role run has a real host.
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

PLAYBOOK = """\
- name: Run the frontend role
  hosts: edge
  gather_facts: false
  tasks:
    - name: Include frontend {{ entry }}
      ansible.builtin.include_role:
        name: frontend
        tasks_from: "{{ entry }}"
"""


def run(tmp_path: Path, overrides: dict[str, object], entry: str = "preflight") -> tuple[int, str]:
    """(exit code, output) of the role's entry point against localhost."""
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({"all": {"children": {"edge": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}}}))
    playbook = tmp_path / "playbook.yml"
    playbook.write_text(PLAYBOOK)
    extra = tmp_path / "vars.json"
    extra.write_text(json.dumps({"entry": entry, "frontend_install_prefix": str(tmp_path / "prefix"),
                                 "frontend_build_cache_dir": str(tmp_path / "cache"), **overrides}))
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_STDOUT_CALLBACK": "default", "ANSIBLE_CALLBACK_RESULT_FORMAT": "json"}
    result = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(playbook), "-e", f"@{extra}"],
                            capture_output=True, text=True, env=env, timeout=120, check=False)
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"frontend_keep_releases": 0}, "frontend_keep_releases"),
        ({"frontend_version": "../etc"}, "frontend_version"),
        ({"frontend_rollback_to": "a/b"}, "frontend_rollback_to"),
        ({"frontend_install_prefix": "/"}, "frontend_install_prefix"),
        ({"frontend_dist_archive": "dist.zip"}, "frontend_dist_archive"),
        ({"frontend_source_dir": "/nonexistent"}, "frontend_source_dir"),
        ({"frontend_rollback_to": "0.0.9-abc"}, "frontend_rollback_to: release '0.0.9-abc' is not kept"),
        # a given archive needs no sources, but then no package.json gives the version
        ({"frontend_dist_archive": "/srv/dist.tar.gz", "frontend_source_dir": "/nonexistent"}, "frontend_version"),
    ],
    ids=["keep-0", "version-path", "rollback-path", "prefix-root", "archive-zip", "no-sources", "rollback-not-kept",
         "archive-without-version"],
)
def test_bad_input_fails_in_preflight_naming_the_variable(tmp_path, overrides, variable):
    rc, out = run(tmp_path, overrides)
    assert rc != 0 and (variable if " " in variable else f"{variable}:") in out, out
    assert not (tmp_path / "prefix").exists()


def test_good_input_passes_preflight(tmp_path):
    rc, out = run(tmp_path, {})
    assert rc == 0, out
    # an archive with an explicit version needs no sources
    rc, out = run(tmp_path, {"frontend_dist_archive": "https://ci.example/frontend.tar.gz", "frontend_version": "1.2.3",
                             "frontend_source_dir": "/nonexistent"})
    assert rc == 0, out
    kept = tmp_path / "prefix/releases/0.0.9-abc/index.html"
    kept.parent.mkdir(parents=True)
    kept.write_text("<html></html>")
    rc, out = run(tmp_path, {"frontend_rollback_to": "0.0.9-abc"})
    assert rc == 0, out
