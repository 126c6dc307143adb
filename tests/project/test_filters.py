"""The project's own filter plugins: firewall sources and the site's role list."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "roles" / "firewall" / "filter_plugins"))
sys.path.insert(0, str(REPO / "plugins" / "filter"))

from firewall import firewall_sources  # noqa: E402
from site_roles import site_roles  # noqa: E402

GROUPS = {"backend": ["backend-a", "backend-b"], "monitoring": ["mon"], "empty": []}
HOSTVARS = {
    "backend-a": {"ansible_host": "10.0.1.21"},
    "backend-b": {"ansible_host": "10.0.2.21"},
    # reached through docker: the address comes from its facts
    "mon": {"ansible_host": "mon-container", "ansible_default_ipv4": {"address": "172.18.0.5"}},
}


def test_sources_are_the_group_members_addresses():
    assert firewall_sources(["backend", "monitoring"], GROUPS, HOSTVARS) == [
        "10.0.1.21", "10.0.2.21", "172.18.0.5"]


def test_cidrs_are_normalised_and_merged_with_groups():
    assert firewall_sources(["backend"], GROUPS, HOSTVARS, ["192.0.2.7/24", "2001:db8::/32"]) == [
        "10.0.1.21", "10.0.2.21", "192.0.2.0/24", "2001:db8::/32"]


def test_unknown_or_empty_groups_open_nothing():
    assert firewall_sources(["empty", "no-such-group"], GROUPS, HOSTVARS) == []


def test_a_host_without_an_address_is_an_error_not_a_silent_gap():
    hostvars = {"backend-a": {"ansible_host": "backend-a.example"}, "backend-b": {"ansible_host": "10.0.2.21"}}
    with pytest.raises(AnsibleFilterError, match="backend-a"):
        firewall_sources(["backend"], GROUPS, hostvars)


def test_an_invalid_cidr_is_rejected():
    with pytest.raises(AnsibleFilterError, match="not-a-cidr"):
        firewall_sources([], GROUPS, HOSTVARS, ["not-a-cidr"])


def test_site_roles_follow_the_tier_playbooks(tmp_path):
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "site.yml").write_text(
        "- ansible.builtin.import_playbook: playbooks/a.yml\n- ansible.builtin.import_playbook: playbooks/b.yml\n")
    (tmp_path / "playbooks" / "a.yml").write_text("- hosts: all\n  roles: [common]\n")
    (tmp_path / "playbooks" / "b.yml").write_text(
        "- hosts: qdrant\n  roles: [{role: qdrant}, backup]\n- hosts: edge:backend\n  roles: [nginx]\n")
    site = str(tmp_path / "site.yml")
    assert site_roles(["qdrant"], site) == ["common", "qdrant", "backup"]
    assert site_roles(["backend"], site) == ["common", "nginx"]
    assert site_roles(["bastion"], site) == ["common"]


def test_site_roles_of_the_real_site_yml_cover_every_host_group():
    for group in ("bastion", "edge", "backend", "qdrant", "ollama", "monitoring"):
        roles = site_roles([group], str(REPO / "site.yml"))
        assert roles[0] == "common", f"{group}: common must run first, got {roles}"
