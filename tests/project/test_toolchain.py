"""The controller's toolchain matches what the project declares it relies on."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def installed_collections() -> dict[str, str]:
    out = subprocess.run(
        [str(VENV_BIN / "ansible-galaxy"), "collection", "list", "--format", "json"],
        check=True, capture_output=True, text=True, cwd=REPO,
    ).stdout
    found: dict[str, str] = {}
    # Earlier paths win, as they do when Ansible loads a collection.
    for _path, collections in json.loads(out).items():
        for name, info in collections.items():
            found.setdefault(name, info["version"])
    return found


REQUIRED = yaml.safe_load((REPO / "requirements.yml").read_text())["collections"]


@pytest.mark.parametrize("req", REQUIRED, ids=[r["name"] for r in REQUIRED])
def test_installed_collection_satisfies_requirements_yml(req):
    installed = installed_collections()
    assert req["name"] in installed, f"{req['name']} is not installed (requirements.yml needs it)"
    spec = SpecifierSet(req["version"])
    assert Version(installed[req["name"]]) in spec, (
        f"{req['name']} {installed[req['name']]} does not satisfy requirements.yml's {req['version']}"
    )


# A module, plugin or group named by its collection (namespace.collection.name) in what the project runs.
FQCN = re.compile(r"\b([a-z][a-z0-9_]*\.[a-z][a-z0-9_]*)\.[a-z][a-z0-9_]*\b")
SOURCES = ("site.yml", "playbooks", "roles", "lab", "molecule", "inventories", "group_vars")


def test_requirements_yml_declares_every_collection_the_project_uses():
    declared = {req["name"] for req in REQUIRED} | {"ansible.builtin", "ansible.legacy"}
    known = set(installed_collections())  # tells an FQCN from other dotted names (hostvars.x.y)
    used: dict[str, str] = {}
    for source in SOURCES:
        paths = [REPO / source] if (REPO / source).is_file() else sorted((REPO / source).rglob("*.y*ml"))
        for path in paths:
            for line in path.read_text().splitlines():
                if line.lstrip().startswith("#"):
                    continue
                for name in FQCN.findall(line):
                    if name in known:
                        used.setdefault(name, str(path.relative_to(REPO)))
    missing = {name: where for name, where in used.items() if name not in declared}
    assert not missing, f"requirements.yml does not declare {missing} (collection: first file using it)"
    assert {"community.postgresql", "community.crypto", "ansible.posix"} <= set(used)  # the scan finds them


def test_requirements_yml_pins_ranges():
    for req in REQUIRED:
        spec = SpecifierSet(req["version"])
        assert any(s.operator in ("<", "<=", "==") for s in spec), f"{req['name']} has no upper bound"


def test_controller_requirements_are_pinned():
    for name in ("controller.txt", "app.txt", "checkov.txt", "ollama-standin.txt", "ollama-standin-models.txt"):
        for line in (REPO / "requirements" / name).read_text().splitlines():
            line = line.split("#")[0].strip()
            if line:
                assert "==" in line, f"requirements/{name}: {line!r} is not pinned with =="


def test_ansible_cfg_settings():
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(REPO / "ansible.cfg")
    assert cfg["defaults"]["roles_path"] == "roles"
    assert cfg["ssh_connection"].getboolean("pipelining")
    assert "ControlPersist" in cfg["ssh_connection"]["ssh_args"]
    assert cfg["defaults"]["callback_result_format"] == "yaml"
    assert cfg["defaults"]["fact_caching"] == "jsonfile"
    assert int(cfg["defaults"]["forks"]) >= 10
    assert "inventory" not in cfg["defaults"], "no default inventory: every run names its environment"
