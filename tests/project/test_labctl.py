"""Pure parts of the lab tooling: recap parsing, routing rules, the image tag."""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "lab"))

from labctl import fleet, image  # noqa: E402
from labctl.cli import parse_recap  # noqa: E402

RECAP = """\
PLAY RECAP *********************************************************************
backend-a                  : ok=32   changed=0    unreachable=0    failed=0    skipped=0    rescued=0    ignored=0
qdrant-1                   : ok=35   changed=2    unreachable=0    failed=0    skipped=1    rescued=0    ignored=0

PLAYBOOK RECAP *****************************************************************
"""


def test_parse_recap_reads_every_host():
    recap = parse_recap("noise\nPLAY RECAP earlier\nfoo : ok=1\n" + RECAP)
    assert recap == {
        "backend-a": {"ok": 32, "changed": 0, "unreachable": 0, "failed": 0, "skipped": 0, "rescued": 0, "ignored": 0},
        "qdrant-1": {"ok": 35, "changed": 2, "unreachable": 0, "failed": 0, "skipped": 1, "rescued": 0, "ignored": 0},
    }


def test_routing_rules_join_every_pair_of_az_networks_without_nat():
    nets = {"az-a": ipaddress.ip_network("10.42.1.0/24"), "az-b": ipaddress.ip_network("10.42.2.0/24")}
    rules = fleet._routing_rules(nets)  # noqa: SLF001
    assert ["filter", "DOCKER-USER", "-s", "10.42.1.0/24", "-d", "10.42.2.0/24", "-j", "ACCEPT"] in rules
    assert ["nat", "POSTROUTING", "-s", "10.42.2.0/24", "-d", "10.42.1.0/24", "-j", "RETURN"] in rules
    assert len(rules) == 4


def test_image_tag_follows_the_recipe():
    assert image.image_ref() == f"{image.REPOSITORY}:{image.recipe_hash()}"
    assert len(image.recipe_hash()) == 12


def test_lab_inventory_hosts_fit_the_networks():
    hosts = fleet.hosts()
    assert {h.network for h in hosts} == {"az-a", "az-b"}
    assert len({h.address for h in hosts}) == len(hosts), "two lab hosts share an address"
