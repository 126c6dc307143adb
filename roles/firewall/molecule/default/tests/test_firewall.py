"""The base ruleset and an opening, read back from the live table and tried from outside.

The controller is 10.43.79.1 on the scenario's network, and the inventory-only host
`controller` of group monitoring has that address: the opening of 8080 to monitoring must
admit it, while 8081 (listening, never opened) and SSH (bastion and a CIDR only) drop it.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[5] / "molecule" / "shared"))
from nft_rules import rules_for_ports  # noqa: E402

testinfra_hosts = ["backend"]
ADDRESS = "10.43.79.10"


def connects(port: int) -> bool:
    try:
        socket.create_connection((ADDRESS, port), timeout=3).close()
    except OSError:
        return False
    return True


def test_nftables_is_enabled_and_the_input_policy_is_drop(host):
    assert host.service("nftables").is_enabled
    chain = host.check_output("nft list chain inet host_firewall input")
    assert "policy drop;" in chain
    assert "jump openings" in chain
    assert 'log prefix "nft-drop: "' in chain


def test_ssh_is_open_to_the_declared_sources_only(host):
    assert rules_for_ports(host, {22}) == [({22}, {"192.0.2.10", "198.51.100.0/24"}, "input")]


def test_the_opening_admits_its_group_from_the_inventory(host):
    assert rules_for_ports(host, {8080}) == [({8080}, {"10.43.79.1"}, "openings")]
    assert host.file("/etc/nftables.d/molecule.nft").mode == 0o640


def test_traffic_from_the_opened_source_is_admitted_and_the_rest_dropped(host):
    # both listen; only 8080 is opened, and SSH is not opened to the controller
    listening = host.check_output("ss -Hltn")
    assert ":8080" in listening and ":8081" in listening
    assert connects(8080)
    assert not connects(8081)
    assert not connects(22)


def test_a_bad_opening_fails_before_its_file_is_written_and_removal_closes_the_port(host):
    record = json.loads(host.file("/var/tmp/molecule-firewall.json").content_string)
    assert record["bad_opening_failed"] is True
    assert record["bad_opening_file_exists"] is False
    assert "8080" not in record["openings_after_removal"]
    # converge opened it again (and the idempotence step kept it)
    assert "8080" in host.check_output("nft list chain inet host_firewall openings")


def test_other_programs_tables_survive_a_reload_and_a_restart(host):
    host.run_expect([0], "systemctl reload nftables")
    assert "table inet other_program" in host.check_output("nft list tables")
    host.run_expect([0], "systemctl restart nftables")
    tables = host.check_output("nft list tables")
    assert "table inet other_program" in tables
    assert "table inet host_firewall" in tables
    assert connects(8080)


@pytest.mark.parametrize("path,mode", [("/etc/nftables.conf", 0o750), ("/etc/nftables.d", 0o750)])
def test_files_are_root_owned(host, path, mode):
    f = host.file(path)
    assert (f.user, f.group, f.mode) == ("root", "root", mode)
