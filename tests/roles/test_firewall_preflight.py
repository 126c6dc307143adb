"""The firewall role refuses openings nft would refuse, or that would lock operators out, before
any file of the ruleset is written (tests/roles/preflight_harness.py runs the preflight as
playbooks/preflight.yml does: no facts, no connection, every problem collected)."""

from __future__ import annotations

import pytest

from preflight_harness import run_batch, run_role

BASTION = {"bastion": {"bastion-1": {"querygpt_private_address": "10.0.0.10"}}}
OPENING = {"name": "qdrant", "ports": [6333, 6334], "source_groups": ["backend", "monitoring"]}


def test_the_wired_matrix_passes(tmp_path):
    # group_vars/all/firewall.yml's shape: ports as the wiring templates them, groups and CIDRs
    run_role(tmp_path, "firewall", {
        "firewall_ssh_source_groups": ["bastion"], "firewall_ssh_source_cidrs": [],
        "firewall_openings": [OPENING, {"name": "nginx", "ports": ["80", "443"], "source_cidrs": ["0.0.0.0/0", "::/0"]},
                              {"name": "old", "state": "absent"}],
    }, groups=BASTION).assert_ok()


def test_ssh_from_groups_without_hosts_would_lock_everyone_out(tmp_path):
    result = run_role(tmp_path, "firewall", {"firewall_ssh_source_groups": ["bastion"], "firewall_ssh_source_cidrs": []})
    result.assert_refused('firewall_ssh_source_groups: the groups ["bastion"] have no host in the inventory')


def test_no_ssh_source_at_all_would_lock_everyone_out(tmp_path):
    """The role's defaults (no group, no CIDR) close SSH: refused, naming the variables."""
    result = run_role(tmp_path, "firewall", {"firewall_ssh_source_groups": [], "firewall_ssh_source_cidrs": []},
                      groups=BASTION)
    result.assert_refused("firewall_ssh_source_groups: the groups [] have no host in the inventory and no CIDR")


BAD_OPENINGS = {
    "name": ({"name": "a b", "ports": [80], "source_cidrs": ["10.0.0.0/8"]}, 'opening(s) "a b" need a name'),
    "no-ports": ({"name": "x", "ports": [], "source_groups": ["backend"]}, 'opening(s) "x" need a non-empty list of ports'),
    "port-0": ({"name": "x", "ports": [0], "source_groups": ["backend"]}, 'opening(s) "x" need a non-empty list of ports'),
    "proto": ({"name": "x", "ports": [53], "proto": "icmp", "source_groups": ["backend"]}, 'opening(s) "x" have a proto'),
    "no-sources": ({"name": "x", "ports": [53]}, 'opening(s) "x" name no source_groups and no source_cidrs'),
    "cidr": ({"name": "x", "ports": [53], "source_cidrs": ["10.0.0.0/8/8"]}, 'opening(s) "x" have a source group that is not'),
    "state": ({"name": "x", "ports": [53], "source_groups": ["backend"], "state": "gone"}, 'opening(s) "x" have a state'),
}


@pytest.fixture(scope="module")
def bad_openings(tmp_path_factory):
    """Every case below in one ansible-playbook run (a host per case)."""
    return run_batch(tmp_path_factory.mktemp("firewall-bad"),
                     {case: ("firewall", {"firewall_openings": [opening]}) for case, (opening, _) in BAD_OPENINGS.items()},
                     groups=BASTION)


@pytest.mark.parametrize(("case", "needle"), [(case, needle) for case, (_, needle) in BAD_OPENINGS.items()],
                         ids=list(BAD_OPENINGS))
def test_bad_openings_are_named(bad_openings, case, needle):
    bad_openings[case].assert_refused(f"firewall_openings: {needle}")


def test_two_openings_with_one_name_are_refused(tmp_path):
    run_role(tmp_path, "firewall", {"firewall_openings": [OPENING, OPENING]}, groups=BASTION).assert_refused(
        "firewall_openings: names must be unique")
