"""prometheus_targets: scrape and probe targets with tier/az/env labels from inventory groups."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "plugins" / "filter"))

from prometheus_targets import host_az, prometheus_targets  # noqa: E402

LAB_NETWORKS = {"az-a": "10.42.1.0/24", "az-b": "10.42.2.0/24"}
GROUPS = {
    "edge": ["edge-b", "edge-a"],
    "backend": ["backend-a"],
    "monitoring": ["mon"],
    "qdrant": [],
}
HOSTVARS = {
    # the lab: the zone is the lab_networks subnet of the address
    "edge-a": {"ansible_host": "10.42.1.20", "querygpt_env": "lab", "lab_networks": LAB_NETWORKS},
    "edge-b": {"ansible_host": "10.42.2.20", "querygpt_env": "lab", "lab_networks": LAB_NETWORKS},
    # the aws_ec2 inventory (hostvars_prefix ec2_)
    "backend-a": {"ansible_host": "10.0.1.21", "querygpt_env": "prod",
                  "ec2_placement": {"availability_zone": "eu-central-1a"}},
    # an explicit az wins; a docker-reached host takes its address from its facts
    "mon": {"ansible_host": "instance", "ansible_default_ipv4": {"address": "172.18.0.5"}, "az": "az-x",
            "ec2_placement": {"availability_zone": "ignored"}},
}


def test_scrape_targets_carry_instance_tier_az_env():
    assert prometheus_targets(GROUPS, HOSTVARS, ["edge", "backend"], port=9100) == [
        {"targets": ["10.42.1.20:9100"], "labels": {"instance": "edge-a", "tier": "edge", "az": "az-a", "env": "lab"}},
        {"targets": ["10.42.2.20:9100"], "labels": {"instance": "edge-b", "tier": "edge", "az": "az-b", "env": "lab"}},
        {"targets": ["10.0.1.21:9100"],
         "labels": {"instance": "backend-a", "tier": "backend", "az": "eu-central-1a", "env": "prod"}},
    ]


def test_probe_targets_are_urls_from_a_template():
    got = prometheus_targets(GROUPS, HOSTVARS, ["monitoring"], url="http://{address}:6333/readyz?h={host}")
    assert got == [{"targets": ["http://172.18.0.5:6333/readyz?h=mon"],
                    "labels": {"instance": "mon", "tier": "monitoring", "az": "az-x", "env": "unknown"}}]


def test_adding_a_host_to_a_group_adds_a_target():
    groups = dict(GROUPS, backend=["backend-a", "backend-c"])
    hostvars = dict(HOSTVARS, **{"backend-c": {"ansible_host": "10.42.2.99", "lab_networks": LAB_NETWORKS}})
    got = prometheus_targets(groups, hostvars, ["backend"], port=8000)
    assert [c["targets"] for c in got] == [["10.0.1.21:8000"], ["10.42.2.99:8000"]]
    assert got[1]["labels"]["az"] == "az-b"


def test_a_host_in_two_groups_is_listed_once_under_the_first():
    groups = {"edge": ["h"], "backend": ["h"]}
    got = prometheus_targets(groups, {"h": {"ansible_host": "10.0.0.1"}}, ["backend", "edge"], port=9100)
    assert len(got) == 1 and got[0]["labels"]["tier"] == "backend"


def test_missing_or_empty_groups_give_no_targets():
    assert prometheus_targets(GROUPS, HOSTVARS, ["qdrant", "no-such-group"], port=6333) == []


def test_unknown_zone_outside_lab_networks():
    assert host_az("h", {"h": {"ansible_host": "192.0.2.1", "lab_networks": LAB_NETWORKS}}) == "unknown"


@pytest.mark.parametrize("kwargs", [{}, {"port": 1, "url": "x"}, {"port": 0}, {"port": 70000}])
def test_bad_arguments_are_errors(kwargs):
    with pytest.raises(AnsibleFilterError):
        prometheus_targets(GROUPS, HOSTVARS, ["edge"], **kwargs)


def test_a_single_group_name_is_not_split_into_letters():
    with pytest.raises(AnsibleFilterError, match="list"):
        prometheus_targets(GROUPS, HOSTVARS, "edge", port=9100)  # type: ignore[arg-type]
