"""A role's apt task of its own packages runs only when dpkg-query finds one missing.

The apt module opens the whole package cache even when nothing is missing, the costliest task
of a no-op run (docs/deploy-speed.md). So each such apt task follows a read-only
`dpkg-query --show` of the same package list, and its `when` (evaluated here with Ansible's
own templating) must run apt whenever a package is not installed, unknown to dpkg, or the
query failed, and skip it only when every package reads "installed".
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

REPO = Path(__file__).resolve().parents[2]
# Every host runs these: where a no-op apt task cost the most (5-7 s each on the lab).
ALL_HOST_ROLES = {"common", "firewall", "node_exporter", "internal_pki", "journal_upload"}


def _tasks(items: list[dict]):
    for task in items or []:
        yield task
        for key in ("block", "rescue", "always"):
            yield from _tasks(task.get(key, []))


def guarded_installs() -> list[tuple[str, dict, dict]]:
    """(file, dpkg-query task, apt task) for every apt task whose name is a role's package list."""
    found = []
    for path in sorted(REPO.glob("roles/*/tasks/*.yml")):
        tasks = list(_tasks(yaml.safe_load(path.read_text())))
        for index, task in enumerate(tasks):
            apt = task.get("ansible.builtin.apt")
            if not apt or not str(apt.get("name", "")).strip().startswith("{{ _"):
                continue
            checks = [t for t in tasks[:index] if "dpkg-query" in str(t.get("ansible.builtin.command", ""))]
            found.append((str(path.relative_to(REPO)), checks[-1] if checks else {}, task))
    return found


INSTALLS = guarded_installs()


def test_the_all_host_roles_are_guarded():
    roles = {file.split("/")[1] for file, _, _ in INSTALLS}
    assert ALL_HOST_ROLES <= roles, ALL_HOST_ROLES - roles


@pytest.mark.parametrize(("file", "check", "apt"), INSTALLS, ids=[f for f, _, _ in INSTALLS])
def test_apt_runs_unless_dpkg_finds_every_package_installed(file, check, apt):
    assert check, f"{file}: {apt['name']!r} has no dpkg-query task before it"
    packages_var = apt["ansible.builtin.apt"]["name"].strip()[2:-2].strip()
    command = check["ansible.builtin.command"]
    assert check.get("check_mode") is False and check.get("changed_when") is False, file
    assert packages_var in command["argv"], f"{file}: the check does not query {packages_var}"
    registered = check["register"]

    def runs(stdout: str, rc: int = 0) -> bool:
        variables = {
            packages_var: ["pkg-a", "pkg-b"],
            registered: {"stdout": stdout, "rc": rc, "changed": False},
            # common also refreshes the lists when its sources changed (unchanged here)
            "__common_sources": {"changed": False},
            "__common_sources_list": {"changed": False},
        }
        templar = Templar(loader=DataLoader(), variables=variables)
        return templar.evaluate_conditional(trust_as_template(apt["when"]))

    assert "when" in apt, f"{file}: the apt task runs unconditionally"
    assert not runs("installed installed "), "skipped when both are installed"
    assert runs("installed config-files "), "a removed package (config files left) is installed again"
    assert runs("installed not-installed "), "a package dpkg knows but never installed"
    assert runs("installed ", rc=1), "a package unknown to dpkg (no line, exit 1)"
    assert runs("", rc=2), "the query failed"
    assert runs("installed half-installed "), "a broken install is repaired by apt"
