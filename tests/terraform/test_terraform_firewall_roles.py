"""The security groups equal the firewall matrix the Ansible roles apply.

Each role that opens ports declares, in its defaults, the groups it admits
(`<prefix>_firewall_source_groups`, and `common_ssh_source_groups` for SSH) and the ports
(its `<prefix>_*port` defaults). Where the role runs comes from the tier playbooks (site.yml). Those cells
must be exactly what security_groups.tf opens for the same (tier, port). Roles that are not
written yet are covered by expected_firewall_matrix() in test_terraform_consistency.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from test_terraform_consistency import ADMIN_CIDRS, GROUPS, firewall_rules_from_hcl

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "plugins" / "filter"))

from site_roles import site_roles  # noqa: E402


def role_openings() -> dict[str, set[tuple[str, int, str]]]:
    """(to group, port, from group) cells per role, from the roles' defaults and site.yml."""
    openings: dict[str, set[tuple[str, int, str]]] = {}
    for role_dir in sorted((REPO / "roles").iterdir()):
        defaults = yaml.safe_load((role_dir / "defaults" / "main.yml").read_text()) or {}
        role = role_dir.name
        # Each `<prefix>_firewall_source_groups` admits those groups to the `<prefix>_*port`
        # defaults (a role may have several: nginx_exporter_* beside nginx's public ports).
        if role == "common":
            groups_ports = [(defaults["common_ssh_source_groups"], [defaults["common_ssh_port"]])]
        else:
            groups_ports = []
            for key, sources in defaults.items():
                if not key.endswith("_firewall_source_groups"):
                    continue
                prefix = key.removesuffix("_firewall_source_groups")
                ports = [v for k, v in defaults.items()
                         if k == f"{prefix}_port" or (k.startswith(f"{prefix}_") and k.endswith("_port"))]
                assert ports, f"roles/{role}: {key} has no {prefix}_*port default"
                groups_ports.append((sources, ports))
        if not groups_ports:
            continue
        targets = [g for g in sorted(GROUPS) if role in site_roles([g], str(REPO / "site.yml"))]
        assert targets, f"roles/{role} opens ports but no tier playbook in site.yml runs it"
        cells = set()
        for sources, ports in groups_ports:
            # `all` (every inventory host) is every tier to the security groups.
            sources = [g for s in sources for g in (sorted(GROUPS) if s == "all" else [s])]
            cells |= {(to, int(port), src) for to in targets for port in ports for src in sources}
        openings[role] = cells
    return openings


def test_the_roles_that_open_ports_are_found():
    found = set(role_openings())
    assert "common" in found
    for role in ("qdrant", "ollama", "backend", "nginx", "node_exporter", "prometheus_stack", "journal_remote"):
        if (REPO / "roles" / role).is_dir():
            assert role in found, f"roles/{role} declares no *_firewall_source_groups"


@pytest.mark.parametrize("role", sorted(role_openings()))
def test_security_groups_open_exactly_what_the_role_opens(tf, role):
    cells = role_openings()[role]
    touched = {(to, port) for to, port, _ in cells}
    from_hcl = {cell for _, _, cell in firewall_rules_from_hcl(tf) if cell[:2] in touched}
    # The bastion's own SSH comes from the admin CIDRs (inventory group_vars/bastion), which
    # the security groups express as a separate rule.
    extra = from_hcl - cells - {("bastion", 22, ADMIN_CIDRS)}
    assert not cells - from_hcl, f"roles/{role} opens what security_groups.tf does not: {sorted(cells - from_hcl)}"
    assert not extra, f"security_groups.tf opens more than roles/{role}: {sorted(extra)}"
