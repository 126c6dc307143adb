"""Filters that turn inventory groups into firewall source addresses.

Firewall sources are computed from `groups[...]`, never typed twice. A host's private
address is its `ansible_host` when that is an IPv4 literal (the lab's static addresses, the
AWS inventory's private IPs); hosts reached another way (molecule's docker connection) fall
back to the address in their facts.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from ansible.errors import AnsibleFilterError


def _is_ipv4(value: object) -> bool:
    try:
        ipaddress.IPv4Address(str(value))
    except ValueError:
        return False
    return True


def host_private_address(host: str, hostvars: Mapping[str, Any]) -> str:
    """The private IPv4 address other hosts see this host's traffic come from."""
    hv = hostvars[host]
    candidate = hv.get("ansible_host", host)
    if _is_ipv4(candidate):
        return str(candidate)
    facts_address = (hv.get("ansible_default_ipv4") or {}).get("address")
    if _is_ipv4(facts_address):
        return str(facts_address)
    raise AnsibleFilterError(
        f"firewall: cannot tell the private address of host {host!r}: its ansible_host "
        f"({candidate!r}) is not an IPv4 address and no facts were gathered for it"
    )


def firewall_sources(
    source_groups: Iterable[str],
    groups: Mapping[str, list[str]],
    hostvars: Mapping[str, Any],
    source_cidrs: Iterable[str] = (),
) -> list[str]:
    """Sorted, de-duplicated source addresses: group members' addresses plus CIDRs."""
    sources: set[str] = set()
    for group in source_groups:
        for host in groups.get(group, []):
            sources.add(host_private_address(host, hostvars))
    for cidr in source_cidrs:
        try:
            sources.add(str(ipaddress.ip_network(str(cidr), strict=False)))
        except ValueError as err:
            raise AnsibleFilterError(f"firewall: invalid source CIDR {cidr!r}: {err}") from err
    return sorted(sources, key=lambda s: (ipaddress.ip_network(s, strict=False).version, s))


class FilterModule:
    """Ansible entry point."""

    def filters(self) -> dict[str, Any]:
        return {"firewall_sources": firewall_sources}
