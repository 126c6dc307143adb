"""The lab is an environment like prod: same files, same variables, differences allow-listed.

inventories/differences.yml lists every variable one environment sets and another does not,
with the reason. Everything else that all environments share lives once in the wiring layer
(group_vars/ next to site.yml), which no environment may also set: playbook group_vars take
precedence over an inventory's group_vars/all, so a value set in both would be silently lost.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
INVENTORIES = REPO / "inventories"
ENVIRONMENTS = ("lab", "staging", "prod")
# Written per machine (git-ignored): the vault and Terraform's outputs.
GENERATED = {"group_vars/all/vault.yml", "group_vars/all/terraform_outputs.yml"}
ALLOWED = yaml.safe_load((INVENTORIES / "differences.yml").read_text())
# aws_ec2.yml keys whose values name the environment (the region may differ too).
NAMING_KEYS = {"regions", "filters"}


def env_files(env: str) -> set[str]:
    root = INVENTORIES / env
    return {p.relative_to(root).as_posix() for p in root.rglob("*.yml")} - GENERATED


def group_var_keys(env: str) -> dict[str, set[str]]:
    """{file under group_vars/: the variables it sets}."""
    keys = {}
    for rel in sorted(env_files(env)):
        if rel.startswith("group_vars/"):
            keys[rel] = set(yaml.safe_load((INVENTORIES / env / rel).read_text()) or {})
    return keys


def wiring_keys() -> set[str]:
    found: set[str] = set()
    for path in (REPO / "group_vars").rglob("*.yml"):
        found |= set(yaml.safe_load(path.read_text()) or {})
    return found


def aws_ec2(env: str) -> dict[str, Any]:
    return yaml.safe_load((INVENTORIES / env / "aws_ec2.yml").read_text())


def test_every_environment_has_the_same_files():
    files = {env: env_files(env) for env in ENVIRONMENTS}
    for env in ENVIRONMENTS:
        assert files[env] == files["prod"], f"inventories/{env} differs from prod: {files[env] ^ files['prod']}"


def test_every_variable_set_in_one_environment_but_not_another_is_allow_listed():
    keys = {env: group_var_keys(env) for env in ENVIRONMENTS}
    setters: dict[str, set[str]] = {}
    for env in ENVIRONMENTS:
        for names in keys[env].values():
            for name in names:
                setters.setdefault(name, set()).add(env)
    unexplained = {}
    for name, envs in setters.items():
        if envs == set(ENVIRONMENTS):
            continue
        allowed = set(ALLOWED["group_vars"].get(name, {}).get("envs", []))
        if envs != allowed:
            unexplained[name] = sorted(envs)
    assert not unexplained, (
        f"set in some environments only, not in inventories/differences.yml with those environments: {unexplained}")


def test_a_shared_variable_lives_in_the_same_file_everywhere():
    keys = {env: group_var_keys(env) for env in ENVIRONMENTS}
    where: dict[str, dict[str, str]] = {}
    for env in ENVIRONMENTS:
        for rel, names in keys[env].items():
            for name in names:
                where.setdefault(name, {})[env] = rel
    moved = {name: places for name, places in where.items() if len(set(places.values())) > 1}
    assert not moved, f"the same variable is set in different files per environment: {moved}"


def test_the_allow_list_has_no_stale_entry():
    keys = {env: set().union(*group_var_keys(env).values()) for env in ENVIRONMENTS}
    for name, entry in ALLOWED["group_vars"].items():
        assert entry.get("why"), f"{name}: an allowed difference needs its reason"
        actual = {env for env in ENVIRONMENTS if name in keys[env]}
        assert actual == set(entry["envs"]), f"{name}: allow-listed for {entry['envs']} but set in {sorted(actual)}"
    for key, entry in ALLOWED["aws_ec2"].items():
        assert entry.get("why"), f"aws_ec2 {key}: an allowed difference needs its reason"
        actual = {env for env in ENVIRONMENTS if key in aws_ec2(env)}
        assert actual == set(entry["envs"]), f"aws_ec2 {key}: allow-listed for {entry['envs']} but set in {sorted(actual)}"


def test_no_environment_sets_what_the_wiring_sets():
    wiring = wiring_keys()
    for env in ENVIRONMENTS:
        for rel, names in group_var_keys(env).items():
            both = names & wiring
            assert not both, (f"inventories/{env}/{rel} sets {sorted(both)}, which group_vars/ (the wiring) sets "
                              "too: the wiring's value would win over inventories/<env>/group_vars/all")


@pytest.mark.parametrize("env", ["lab", "staging"])
def test_the_dynamic_inventory_is_prods_but_for_names_and_allowed_keys(env):
    prod, other = aws_ec2("prod"), aws_ec2(env)
    allowed = {k for k, e in ALLOWED["aws_ec2"].items() if env in e["envs"]}
    assert set(other) - set(prod) == allowed
    for key in set(prod) - NAMING_KEYS:
        assert other[key] == prod[key], f"inventories/{env}/aws_ec2.yml {key} differs from prod's"
    assert other["filters"]["tag:Environment"] == env
    assert other["filters"]["tag:Project"] == prod["filters"]["tag:Project"]
    # the lab may add its helpers' roles, never drop one of prod's
    assert set(prod["filters"]["tag:Role"]) <= set(other["filters"]["tag:Role"])
    extra_roles = set(other["filters"]["tag:Role"]) - set(prod["filters"]["tag:Role"])
    assert not extra_roles or env == "lab", f"{env} filters roles prod does not have: {extra_roles}"


def test_the_lab_helpers_are_the_only_extra_roles():
    extra = set(aws_ec2("lab")["filters"]["tag:Role"]) - set(aws_ec2("prod")["filters"]["tag:Role"])
    assert extra == {"acme", "s3", "lb"}


def test_playbooks_and_runbooks_read_the_wiring():
    for directory in (REPO / "playbooks", REPO / "playbooks" / "runbooks"):
        link = directory / "group_vars"
        assert link.resolve() == (REPO / "group_vars").resolve(), f"{link} must link to group_vars/"
    cfg = (REPO / "ansible.cfg").read_text()
    assert "playbook_dir = ." in cfg, "ad-hoc ansible and ansible-inventory must read the wiring too"


def test_only_the_lab_helpers_are_external_services():
    """site.yml skips the hosts of external_services (no baseline, no firewall, no monitoring
    from it): a production role's group in it would silently leave those hosts unmanaged. Every
    environment declares the group, so `all:!external_services` resolves without a warning;
    only the lab fills it, and only with its helper roles."""
    lab_only = set(aws_ec2("lab")["filters"]["tag:Role"]) - set(aws_ec2("prod")["filters"]["tag:Role"])
    for env in ENVIRONMENTS:
        group = yaml.safe_load((INVENTORIES / env / "external_services.yml").read_text())["external_services"]
        members = set(group.get("hosts") or {}) | set(group.get("children") or {})
        if env == "lab":
            assert members and members <= lab_only, f"lab external_services {members}: only {lab_only} may be"
        else:
            assert not members, f"{env} has external services {members}: production runs none"
