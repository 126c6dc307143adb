"""Shared testinfra helper: read back the host firewall's rules for given ports.

Role scenarios import it (tests put molecule/shared on sys.path) to check that an opening
admits exactly the sources the inventory names.
"""

from __future__ import annotations

import json


def rules_for_ports(host, ports: set[int]) -> list[tuple[set[int], set[str], str]]:
    """(destination ports, source addresses, chain) of each rule of table inet host_firewall
    that matches one of `ports`."""
    ruleset = json.loads(host.check_output("nft -j list table inet host_firewall"))
    found = []
    for item in ruleset["nftables"]:
        rule = item.get("rule")
        if not rule:
            continue
        dports, sources = set(), set()
        for expr in rule["expr"]:
            match = expr.get("match")
            if not match:
                continue
            field = match["left"].get("payload", {}).get("field")
            right = match["right"]
            values = right["set"] if isinstance(right, dict) and "set" in right else [right]
            if field == "dport":
                dports.update(v for v in values if isinstance(v, int))
            elif field == "saddr":
                sources.update(_address(v) for v in values if _address(v))
        if dports & ports:
            found.append((dports, sources, rule["chain"]))
    return found


def _address(value) -> str | None:
    """An address as nft -j gives it: a string, or a prefix written back as a CIDR."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "prefix" in value:
        return f"{value['prefix']['addr']}/{value['prefix']['len']}"
    return None
