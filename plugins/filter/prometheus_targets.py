"""Scrape and probe targets for Prometheus, computed from the inventory groups.

Inventory groups are the single source of truth: a host added to a group is scraped, with
its labels, on the next run of the monitoring play, with no other edit. Every target gets
the same four labels, so alerts, routes and dashboards can group by them:

- ``instance``: the inventory hostname (readable; the address is in ``__address__``),
- ``tier``: the inventory group the target was found through (edge, backend, ...),
- ``az``: the host's availability zone (see ``host_az``),
- ``env``: the host's ``querygpt_env`` (prod, staging, lab).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from ansible.errors import AnsibleFilterError

UNKNOWN = "unknown"


def _is_ipv4(value: object) -> bool:
    try:
        ipaddress.IPv4Address(str(value))
    except ValueError:
        return False
    return True


def _get(mapping: Any, key: str) -> Any:
    """Mapping.get that also works on Ansible's lazy hostvars objects."""
    try:
        return mapping.get(key)
    except AttributeError:
        return None


def host_address(host: str, hostvars: Mapping[str, Any]) -> str:
    """The address Prometheus reaches the host at: as the firewall role computes sources."""
    hv = hostvars[host]
    candidate = _get(hv, "ansible_host") or host
    if _is_ipv4(candidate):
        return str(candidate)
    facts_address = (_get(hv, "ansible_default_ipv4") or {}).get("address")
    if _is_ipv4(facts_address):
        return str(facts_address)
    # A resolvable name (an operator's static inventory) is still a valid target.
    return str(candidate)


def host_az(host: str, hostvars: Mapping[str, Any]) -> str:
    """The availability zone: ``az`` if set, else the EC2 placement, else the lab subnet.

    The prod/staging inventories (amazon.aws.aws_ec2 with ``hostvars_prefix: ec2_``) give
    ``ec2_placement.availability_zone``; the lab has no placement, so the zone is the name
    of the ``lab_networks`` subnet that holds the host's address.
    """
    hv = hostvars[host]
    explicit = _get(hv, "az")
    if explicit:
        return str(explicit)
    for key in ("ec2_placement", "placement"):
        zone = (_get(hv, key) or {}).get("availability_zone")
        if zone:
            return str(zone)
    networks = _get(hv, "lab_networks") or {}
    address = host_address(host, hostvars)
    if _is_ipv4(address):
        ip = ipaddress.IPv4Address(address)
        for name, cidr in sorted(networks.items()):
            try:
                if ip in ipaddress.ip_network(str(cidr), strict=False):
                    return str(name)
            except ValueError as err:
                raise AnsibleFilterError(f"prometheus_targets: lab_networks[{name!r}] = {cidr!r}: {err}") from err
    return UNKNOWN


def prometheus_targets(
    groups: Mapping[str, Iterable[str]],
    hostvars: Mapping[str, Any],
    tier_groups: Iterable[str],
    port: int | None = None,
    url: str | None = None,
) -> list[dict[str, Any]]:
    """One static_config (``{targets, labels}``) per host of the given groups.

    Give ``port`` for a scrape target (``address:port``) or ``url`` for a blackbox probe,
    a template with ``{address}`` and ``{host}`` (``http://{address}:6333/readyz``). A host
    in two of the groups is listed once, under the first group.
    """
    if (port is None) == (url is None):
        raise AnsibleFilterError("prometheus_targets: give exactly one of port= or url=")
    if port is not None and not 0 < int(port) < 65536:
        raise AnsibleFilterError(f"prometheus_targets: port {port!r} is not a TCP port")
    if isinstance(tier_groups, str):
        raise AnsibleFilterError(f"prometheus_targets: tier_groups must be a list of groups, not {tier_groups!r}")
    seen: set[str] = set()
    configs: list[dict[str, Any]] = []
    for tier in tier_groups:
        for host in sorted(groups.get(tier, []) or []):
            if host in seen:
                continue
            seen.add(host)
            address = host_address(host, hostvars)
            target = f"{address}:{int(port)}" if port is not None else str(url).format(address=address, host=host)
            env = _get(hostvars[host], "querygpt_env") or UNKNOWN
            configs.append({
                "targets": [target],
                "labels": {"instance": host, "tier": tier, "az": host_az(host, hostvars), "env": str(env)},
            })
    return configs


class FilterModule:
    """Ansible entry point."""

    def filters(self) -> dict[str, Any]:
        return {"prometheus_targets": prometheus_targets}
