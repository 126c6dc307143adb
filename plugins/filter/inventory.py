"""Addresses, firewall sources and scrape targets, computed from the inventory in one place.

A host's *private address* is the address its peers see its traffic come from and reach it
at. It is never `ansible_host`: that is how the controller reaches a host, and for the
bastion it is the public Elastic IP (docs/architecture.md, "Addresses"). The wiring layer
(group_vars/all/addresses.yml) sets `querygpt_private_address` from the EC2 inventory's
private IP; hosts without it (a molecule container reached over docker) fall back to the
address in their facts. Everything that needs a peer's address (firewall sources, nginx
upstreams, Prometheus targets, the journal receiver, the backend's upstream URLs) goes
through `private_address`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import Any

from ansible.errors import AnsibleFilterError

UNKNOWN = "unknown"
ADDRESS_VAR = "querygpt_private_address"
# A probe target's own blackbox module (prometheus_targets' module_by_host), relabeled into
# __param_module by the probe jobs (roles/prometheus_stack/templates/prometheus.yml.j2).
PROBE_MODULE_LABEL = "__tmp_probe_module"


def _get(mapping: Any, key: str) -> Any:
    """Mapping.get that also works on Ansible's lazy hostvars objects."""
    try:
        return mapping.get(key)
    except AttributeError:
        return None


def _is_ip(value: object) -> bool:
    try:
        ipaddress.ip_address(str(value))
    except ValueError:
        return False
    return True


def _host_vars(host: str, hostvars: Mapping[str, Any]) -> Any:
    """One host's variables. Each lookup in Ansible's hostvars computes all of that host's
    variables (about as costly as a task's variables), and every host renders its peers, so
    the filters look each peer up once per call (docs/scale.md)."""
    try:
        return hostvars[host]
    except KeyError as err:
        raise AnsibleFilterError(f"private_address: {host!r} is not an inventory host") from err


def private_address(host: str, hostvars: Mapping[str, Any]) -> str:
    """The private IP address of `host`: `querygpt_private_address`, else its facts' address."""
    return _address(host, _host_vars(host, hostvars))


def _address(host: str, hv: Any) -> str:
    """`private_address` of a host whose variables `hv` were already looked up."""
    declared = _get(hv, ADDRESS_VAR)
    if declared not in (None, ""):
        if not _is_ip(declared):
            raise AnsibleFilterError(
                f"private_address: host {host!r} has {ADDRESS_VAR}={declared!r}, which is not an IP address")
        return str(declared)
    facts = _get(hv, "ansible_facts") or {}
    for candidate in ((_get(facts, "default_ipv4") or {}).get("address"),
                      (_get(hv, "ansible_default_ipv4") or {}).get("address")):
        if _is_ip(candidate):
            return str(candidate)
    raise AnsibleFilterError(
        f"private_address: cannot tell the private address of host {host!r}: it has no {ADDRESS_VAR} "
        "(the EC2 inventory's private IP, group_vars/all/addresses.yml) and no facts were gathered for it")


def private_addresses(hosts: Iterable[str], hostvars: Mapping[str, Any]) -> list[str]:
    """`private_address` of each host, in the order given."""
    if isinstance(hosts, str):
        raise AnsibleFilterError(f"private_addresses: expected a list of hosts, got the string {hosts!r}")
    return [private_address(host, hostvars) for host in hosts]


def url_host(address: str) -> str:
    """An address as the host part of a URL (IPv6 literals in brackets)."""
    return f"[{address}]" if ":" in str(address) else str(address)


def firewall_sources(
    source_groups: Iterable[str],
    groups: Mapping[str, list[str]],
    hostvars: Mapping[str, Any],
    source_cidrs: Iterable[str] = (),
) -> list[str]:
    """Sorted, de-duplicated source addresses: the groups' private addresses plus CIDRs."""
    hosts = dict.fromkeys(host for group in source_groups for host in groups.get(group, []) or [])
    sources = {private_address(host, hostvars) for host in hosts}  # a host of two groups: one lookup
    for cidr in source_cidrs:
        try:
            sources.add(str(ipaddress.ip_network(str(cidr), strict=False)))
        except ValueError as err:
            raise AnsibleFilterError(f"firewall: invalid source CIDR {cidr!r}: {err}") from err
    return sorted(sources, key=lambda s: (ipaddress.ip_network(s, strict=False).version, s))


def host_az(host: str, hostvars: Mapping[str, Any]) -> str:
    """The host's availability zone, as the EC2 inventory places it (`unknown` without one)."""
    return _zone(hostvars[host])


def _zone(hv: Any) -> str:
    zone = (_get(hv, "ec2_placement") or {}).get("availability_zone")
    return str(zone) if zone else UNKNOWN


def host_azs(hosts: Iterable[str], hostvars: Mapping[str, Any]) -> list[str]:
    """The availability zone of each host, in order; [] when any is not known (no EC2
    inventory, as in molecule), so a check of zone spread cannot mistake "unknown" for a zone."""
    zones = [_zone(_host_vars(host, hostvars)) for host in _host_list(hosts, "host_azs")]
    return [] if UNKNOWN in zones else zones


def launch_order(hosts: Iterable[str], hostvars: Mapping[str, Any]) -> list[str]:
    """The hosts ordered by their EC2 Name tag, numbers compared as numbers (qdrant-2 before
    qdrant-10), then by inventory name. The inventory's own order follows the private IPs,
    which a replaced instance changes; the Name (`<env>-qdrant-<n>`) stays, so an order that
    matters (the peer that bootstraps a cluster) survives a replacement."""
    def key(host: str) -> tuple:
        name = (_get(_host_vars(host, hostvars), "ec2_tags") or {}).get("Name") or ""
        parts = re.split(r"(\d+)", str(name))
        return (tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts if p), host)

    return sorted(_host_list(hosts, "launch_order"), key=key)


def _host_list(hosts: Iterable[str], name: str) -> list[str]:
    if isinstance(hosts, str):
        raise AnsibleFilterError(f"{name}: expected a list of hosts, not the string {hosts!r}")
    return list(hosts)


def prometheus_targets(
    groups: Mapping[str, Iterable[str]],
    hostvars: Mapping[str, Any],
    tier_groups: Iterable[str],
    port: int | None = None,
    url: str | None = None,
    module_by_host: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """One static_config (``{targets, labels}``) per host of the given groups.

    Every target carries ``instance`` (the inventory hostname), ``tier`` (the group it was
    found through), ``az`` (``host_az``) and ``env`` (the host's ``querygpt_env``). Give
    ``port`` for a scrape target (``address:port``) or ``url`` for a blackbox probe, a
    template with ``{address}`` and ``{host}``. A host in two of the groups is listed once,
    under the first group. ``module_by_host`` (inventory hostname -> blackbox module) gives
    the probe of a host listed there its own module: the ``__tmp_probe_module`` label, which
    the job's relabeling turns into ``__param_module`` (a target label named
    ``__param_module`` itself would be overwritten by the job's ``params``).
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
            hv = _host_vars(host, hostvars)  # once: the address, the zone and the env all come from it
            address = url_host(_address(host, hv))
            target = f"{address}:{int(port)}" if port is not None else str(url).format(address=address, host=host)
            env = _get(hv, "querygpt_env") or UNKNOWN
            labels = {"instance": host, "tier": tier, "az": _zone(hv), "env": str(env)}
            if module_by_host and host in module_by_host:
                labels[PROBE_MODULE_LABEL] = str(module_by_host[host])
            configs.append({"targets": [target], "labels": labels})
    return configs


class FilterModule:
    """Ansible entry point."""

    def filters(self) -> dict[str, Any]:
        return {
            "private_address": private_address,
            "private_addresses": private_addresses,
            "url_host": url_host,
            "firewall_sources": firewall_sources,
            "prometheus_targets": prometheus_targets,
            "host_azs": host_azs,
            "launch_order": launch_order,
        }
