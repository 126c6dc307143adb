"""prometheus_targets: scrape and probe targets with tier/az/env labels from inventory groups."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "plugins" / "filter"))

from inventory import host_az, prometheus_targets  # noqa: E402


def ec2_host(private_ip: str, zone: str, env: str = "prod", public_ip: str | None = None) -> dict:
    """Hostvars as inventories/<env>/aws_ec2.yml and group_vars/all/addresses.yml give them."""
    return {"ansible_host": public_ip or private_ip, "querygpt_private_address": private_ip,
            "ec2_placement": {"availability_zone": zone}, "querygpt_env": env}


GROUPS = {
    "edge": ["10.40.144.10", "10.40.128.10"],
    "backend": ["10.40.128.11"],
    "bastion": ["10.40.0.10"],
    "monitoring": ["mon"],
    "qdrant": [],
}
HOSTVARS = {
    "10.40.128.10": ec2_host("10.40.128.10", "eu-central-1a"),
    "10.40.144.10": ec2_host("10.40.144.10", "eu-central-1b"),
    "10.40.128.11": ec2_host("10.40.128.11", "eu-central-1a"),
    # the bastion: its ansible_host is its public Elastic IP, which Prometheus cannot reach
    "10.40.0.10": ec2_host("10.40.0.10", "eu-central-1a", public_ip="203.0.113.10"),
    # molecule: no EC2 variables, facts gathered over docker
    "mon": {"ansible_host": "instance", "ansible_facts": {"default_ipv4": {"address": "172.18.0.5"}}},
}


def test_scrape_targets_carry_instance_tier_az_env():
    assert prometheus_targets(GROUPS, HOSTVARS, ["edge", "backend"], port=9100) == [
        {"targets": ["10.40.128.10:9100"],
         "labels": {"instance": "10.40.128.10", "tier": "edge", "az": "eu-central-1a", "env": "prod"}},
        {"targets": ["10.40.144.10:9100"],
         "labels": {"instance": "10.40.144.10", "tier": "edge", "az": "eu-central-1b", "env": "prod"}},
        {"targets": ["10.40.128.11:9100"],
         "labels": {"instance": "10.40.128.11", "tier": "backend", "az": "eu-central-1a", "env": "prod"}},
    ]


def test_the_bastion_is_scraped_at_its_private_address():
    assert prometheus_targets(GROUPS, HOSTVARS, ["bastion"], port=9100)[0]["targets"] == ["10.40.0.10:9100"]


def test_probe_targets_are_urls_from_a_template():
    got = prometheus_targets(GROUPS, HOSTVARS, ["monitoring"], url="http://{address}:6333/readyz?h={host}")
    assert got == [{"targets": ["http://172.18.0.5:6333/readyz?h=mon"],
                    "labels": {"instance": "mon", "tier": "monitoring", "az": "unknown", "env": "unknown"}}]


def test_adding_a_host_to_a_group_adds_a_target():
    groups = dict(GROUPS, backend=["10.40.128.11", "10.40.144.99"])
    hostvars = dict(HOSTVARS, **{"10.40.144.99": ec2_host("10.40.144.99", "eu-central-1b")})
    got = prometheus_targets(groups, hostvars, ["backend"], port=8000)
    assert [c["targets"] for c in got] == [["10.40.128.11:8000"], ["10.40.144.99:8000"]]
    assert got[1]["labels"]["az"] == "eu-central-1b"


def test_a_host_in_two_groups_is_listed_once_under_the_first():
    groups = {"edge": ["h"], "backend": ["h"]}
    got = prometheus_targets(groups, {"h": ec2_host("10.0.0.1", "eu-central-1a")}, ["backend", "edge"], port=9100)
    assert len(got) == 1 and got[0]["labels"]["tier"] == "backend"


def test_missing_or_empty_groups_give_no_targets():
    assert prometheus_targets(GROUPS, HOSTVARS, ["qdrant", "no-such-group"], port=6333) == []


def test_zone_unknown_without_ec2_placement():
    assert host_az("h", {"h": {"querygpt_private_address": "192.0.2.1"}}) == "unknown"


@pytest.mark.parametrize("kwargs", [{}, {"port": 1, "url": "x"}, {"port": 0}, {"port": 70000}])
def test_bad_arguments_are_errors(kwargs):
    with pytest.raises(AnsibleFilterError):
        prometheus_targets(GROUPS, HOSTVARS, ["edge"], **kwargs)


def test_a_single_group_name_is_not_split_into_letters():
    with pytest.raises(AnsibleFilterError, match="list"):
        prometheus_targets(GROUPS, HOSTVARS, "edge", port=9100)  # type: ignore[arg-type]


class CountingHostvars(dict):
    """hostvars that count lookups: in Ansible each one computes all of a host's variables
    (milliseconds), and the filters run once per host over its peers (docs/scale.md)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.lookups: dict[str, int] = {}

    def __getitem__(self, host: str) -> object:
        self.lookups[host] = self.lookups.get(host, 0) + 1
        return super().__getitem__(host)


def test_each_target_host_is_looked_up_once() -> None:
    """Address, zone and env come from one lookup (three lookups made the monitoring host's
    configuration three times as slow to render as it need be)."""
    hostvars = CountingHostvars(HOSTVARS)
    got = prometheus_targets(GROUPS, hostvars, ["edge", "backend", "bastion", "monitoring", "edge"], port=9100)
    assert len(got) == 5
    assert hostvars.lookups == {h: 1 for h in ("10.40.144.10", "10.40.128.10", "10.40.128.11", "10.40.0.10", "mon")}


def test_a_host_listed_in_module_by_host_gets_its_own_probe_module():
    """Each edge's probe verifies the name that edge serves: its module travels in the target's
    __tmp_probe_module label (the job relabels it into __param_module); a host not listed keeps
    the job's module (no label). Prometheus's own resolution: tests/monitoring."""
    configs = prometheus_targets(GROUPS, HOSTVARS, ["edge"], url="https://{address}/",
                                 module_by_host={"10.40.128.10": "http_edge_edge-1.example.test"})
    by_host = {c["labels"]["instance"]: c["labels"] for c in configs}
    assert by_host["10.40.128.10"]["__tmp_probe_module"] == "http_edge_edge-1.example.test"
    assert "__tmp_probe_module" not in by_host["10.40.144.10"]
