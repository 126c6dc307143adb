"""The project's own filter plugins: private addresses, firewall sources, the site's role list.

The hostvars are shaped as the EC2 inventory gives them in prod (ec2_private_ip_address, a
bastion whose ansible_host is its PUBLIC Elastic IP) and as molecule gives them (no EC2
variables, facts gathered over docker).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "plugins" / "filter"))

from inventory import firewall_sources, host_azs, launch_order, private_address, private_addresses  # noqa: E402
from site_roles import site_roles  # noqa: E402
from web_auth import bcrypt_hash  # noqa: E402

# What inventories/prod gives after group_vars/all/addresses.yml: ansible_host is how the
# controller reaches a host (the bastion: its Elastic IP); querygpt_private_address is the
# address its peers see.
GROUPS = {"backend": ["10.40.128.10", "10.40.144.10"], "bastion": ["10.40.0.10"], "monitoring": ["mon"],
          "empty": []}
HOSTVARS = {
    "10.40.0.10": {"ansible_host": "203.0.113.10", "querygpt_private_address": "10.40.0.10"},
    "10.40.128.10": {"ansible_host": "10.40.128.10", "querygpt_private_address": "10.40.128.10"},
    "10.40.144.10": {"ansible_host": "10.40.144.10", "querygpt_private_address": "10.40.144.10"},
    # molecule: reached through docker, no EC2 variables; the address comes from its facts
    "mon": {"ansible_host": "mon-container", "ansible_facts": {"default_ipv4": {"address": "172.18.0.5"}}},
}


def test_sources_are_the_group_members_private_addresses():
    assert firewall_sources(["backend", "monitoring"], GROUPS, HOSTVARS) == [
        "10.40.128.10", "10.40.144.10", "172.18.0.5"]


def test_the_bastion_is_admitted_at_its_private_address_never_its_public_one():
    # Inside the VPC the bastion's SSH arrives from its private address. Admitting its
    # ansible_host (the Elastic IP) locked every operator out of the private hosts.
    assert firewall_sources(["bastion"], GROUPS, HOSTVARS) == ["10.40.0.10"]
    assert private_address("10.40.0.10", HOSTVARS) == "10.40.0.10"


def test_private_addresses_keep_the_order_given():
    assert private_addresses(["10.40.144.10", "10.40.128.10"], HOSTVARS) == ["10.40.144.10", "10.40.128.10"]
    with pytest.raises(AnsibleFilterError, match="list"):
        private_addresses("10.40.0.10", HOSTVARS)  # type: ignore[arg-type]


def test_a_declared_address_that_is_not_an_ip_is_an_error():
    with pytest.raises(AnsibleFilterError, match="not an IP address"):
        private_address("h", {"h": {"querygpt_private_address": "edge-1.internal"}})


def test_cidrs_are_normalised_and_merged_with_groups():
    assert firewall_sources(["backend"], GROUPS, HOSTVARS, ["192.0.2.7/24", "2001:db8::/32"]) == [
        "10.40.128.10", "10.40.144.10", "192.0.2.0/24", "2001:db8::/32"]


def test_unknown_or_empty_groups_open_nothing():
    assert firewall_sources(["empty", "no-such-group"], GROUPS, HOSTVARS) == []


def test_a_host_without_an_address_is_an_error_not_a_silent_gap():
    # ansible_host is never a fallback: it may be a public address or a name
    hostvars = {"10.40.128.10": {"ansible_host": "10.40.128.10"},
                "10.40.144.10": {"querygpt_private_address": "10.40.144.10"}}
    with pytest.raises(AnsibleFilterError, match="10.40.128.10"):
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


def test_site_roles_leave_out_a_host_in_an_excluded_group(tmp_path):
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "site.yml").write_text("- ansible.builtin.import_playbook: playbooks/a.yml\n")
    (tmp_path / "playbooks" / "a.yml").write_text(
        "- hosts: all:!external_services\n  roles: [common]\n- hosts: [qdrant]\n  roles: [qdrant]\n")
    site = str(tmp_path / "site.yml")
    assert site_roles(["qdrant"], site) == ["common", "qdrant"]
    assert site_roles(["s3", "external_services"], site) == []


def test_site_yml_runs_nothing_on_the_stand_ins_for_external_services():
    """The lab's acme, s3 and lb hosts stand for Let's Encrypt, S3 and the NLB: no role of site.yml."""
    for groups in (["acme", "external_services"], ["s3", "external_services"], ["lb", "external_services"]):
        assert site_roles(groups, str(REPO / "site.yml")) == [], groups


def test_site_roles_of_the_real_site_yml_cover_every_host_group():
    for group in ("bastion", "edge", "backend", "qdrant", "ollama", "monitoring"):
        roles = site_roles([group], str(REPO / "site.yml"))
        assert roles[0] == "common", f"{group}: common must run first, got {roles}"


def test_a_source_host_is_looked_up_once_even_in_two_source_groups():
    """Every host renders its openings from its peers' hostvars, and each lookup computes all
    of a peer's variables in Ansible: one per peer, never one per (group, peer) (docs/scale.md)."""
    lookups: list[str] = []

    class Counting(dict):
        def __getitem__(self, host):
            lookups.append(host)
            return super().__getitem__(host)

    groups = dict(GROUPS, all=["10.40.0.10", "10.40.128.10", "10.40.144.10", "mon"])
    got = firewall_sources(["backend", "all", "monitoring", "bastion"], groups, Counting(HOSTVARS))
    assert got == ["10.40.0.10", "10.40.128.10", "10.40.144.10", "172.18.0.5"]
    assert sorted(lookups) == sorted(groups["all"])


# qdrant peers as the EC2 inventory names them in prod: hostnames are private IPs, whose order
# a replaced instance changes; the Name tag (and the zone) stay.
PEERS = {
    "10.40.160.7": {"ec2_tags": {"Name": "querygpt-prod-qdrant-3"}, "ec2_placement": {"availability_zone": "eu-central-1c"}},
    "10.40.128.99": {"ec2_tags": {"Name": "querygpt-prod-qdrant-10"}, "ec2_placement": {"availability_zone": "eu-central-1a"}},
    "10.40.144.3": {"ec2_tags": {"Name": "querygpt-prod-qdrant-2"}, "ec2_placement": {"availability_zone": "eu-central-1b"}},
    # a replacement of qdrant-1 that came up at a higher address than the others
    "10.40.128.200": {"ec2_tags": {"Name": "querygpt-prod-qdrant-1"}, "ec2_placement": {"availability_zone": "eu-central-1a"}},
}


def test_launch_order_follows_the_name_tag_numbers_not_the_addresses():
    assert launch_order(sorted(PEERS), PEERS) == ["10.40.128.200", "10.40.144.3", "10.40.160.7", "10.40.128.99"]


def test_launch_order_without_ec2_tags_keeps_a_stable_order_by_host_name():
    assert launch_order(["q2", "q1"], {"q1": {}, "q2": {}}) == ["q1", "q2"]
    with pytest.raises(AnsibleFilterError, match="expected a list of hosts"):
        launch_order("q1", {"q1": {}})  # type: ignore[arg-type]


def test_zones_are_given_per_host_in_order_and_none_when_any_is_unknown():
    assert host_azs(["10.40.144.3", "10.40.160.7"], PEERS) == ["eu-central-1b", "eu-central-1c"]
    # molecule: no EC2 placement; "unknown" must not count as a zone of its own
    assert host_azs(["10.40.144.3", "mon"], {**PEERS, **HOSTVARS}) == []


def test_bcrypt_hash_is_stable_per_seed_and_verifies():
    """The UIs' web configuration holds this hash: the same password and seed give the same
    file on every run; another seed (host) or password gives another hash."""
    import bcrypt

    first = bcrypt_hash("a-long-web-password", "prod/monitoring-1")
    assert first == bcrypt_hash("a-long-web-password", "prod/monitoring-1")
    assert first.startswith("$2b$10$")
    assert bcrypt.checkpw(b"a-long-web-password", first.encode())
    assert not bcrypt.checkpw(b"another-password", first.encode())
    assert bcrypt_hash("a-long-web-password", "prod/monitoring-2") != first
    assert bcrypt_hash("another-long-password", "prod/monitoring-1") != first


@pytest.mark.parametrize("password", ["", None, "x" * 73])
def test_bcrypt_hash_refuses_what_bcrypt_would_truncate_or_cannot_hash(password):
    with pytest.raises(AnsibleFilterError):
        bcrypt_hash(password, "seed")

