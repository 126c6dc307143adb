"""What the Terraform would create: the instances, their subnets, tags and data volumes.

The lab never runs Terraform (there is no binary or provider here), but its fleet must be the
one Terraform builds: the same roles, counts, zones, Name and Role tags and data volumes. This
reads them from the HCL in terraform/ with an environment's values, so a tier added there is
in the lab (and in the tests' emulated prod) with no other edit. Only the few expression
shapes the instance resources use are understood; anything else is an error that says so.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2
from hcl2 import SerializationOptions

from .paths import REPO

TERRAFORM = REPO / "terraform"
_OPTIONS = SerializationOptions(strip_string_quotes=True, explicit_blocks=False)
_EXPR = re.compile(r"^\$\{(.*)\}$", re.S)


class TerraformReadError(Exception):
    """The HCL uses a shape this reader does not understand: teach it, don't guess."""


def expr(value: Any) -> str | None:
    """The expression inside "${...}", or None for a literal."""
    if isinstance(value, str):
        match = _EXPR.match(value)
        if match:
            return match.group(1).strip()
    return None


def load(path: Path) -> dict:
    with path.open() as handle:
        return hcl2.load(handle, serialization_options=_OPTIONS)


def values(tfvars: Path | None = None, **overrides: Any) -> dict[str, Any]:
    """Variable defaults of terraform/ overlaid with a tfvars file and keyword overrides."""
    merged: dict[str, Any] = {}
    for doc in _documents():
        for block in doc.get("variable", []):
            for name, body in block.items():
                if "default" in body:
                    merged[name] = body["default"]
    if tfvars is not None:
        merged.update({k: v for k, v in load(tfvars).items() if not k.startswith("__")})
    merged.update(overrides)
    return merged


@functools.lru_cache(maxsize=1)
def _documents() -> tuple[dict, ...]:
    """Every *.tf of terraform/, parsed once per process (python-hcl2 is slow)."""
    return tuple(load(p) for p in sorted(TERRAFORM.glob("*.tf")))


def _resources(kind: str) -> dict[str, dict]:
    found: dict[str, dict] = {}
    for doc in _documents():
        for block in doc.get("resource", []):
            for rtype, named in block.items():
                if rtype == kind:
                    found.update(named)
    return found


def cidrsubnet(prefix: str, newbits: int, netnum: int) -> ipaddress.IPv4Network:
    """Terraform's cidrsubnet()."""
    network = ipaddress.ip_network(prefix)
    size = network.prefixlen + newbits
    return ipaddress.ip_network((int(network.network_address) + (netnum << (32 - size)), size))


@dataclass(frozen=True)
class Subnet:
    kind: str  # "public" or "private"
    index: int  # the zone's position
    cidr: ipaddress.IPv4Network
    zone: str


@dataclass
class Instance:
    """One aws_instance as Terraform would create it."""

    resource: str
    index: int
    role: str
    name: str
    subnet: Subnet
    instance_type: str
    data_devices: list[str] = field(default_factory=list)


def zones(vals: dict[str, Any]) -> list[str]:
    """local.azs: the explicit zones, or a, b, c... of the region."""
    explicit = vals.get("availability_zones") or []
    return list(explicit) if explicit else [f"{vals['region']}{'abcdef'[i]}" for i in range(int(vals["az_count"]))]


def subnets(vals: dict[str, Any]) -> dict[str, list[Subnet]]:
    """The public and private subnets of terraform/networking.tf (one of each per zone)."""
    azs = zones(vals)
    return {
        kind: [Subnet(kind, i, cidrsubnet(vals["vpc_cidr"], 4, i + offset), azs[i]) for i in range(len(azs))]
        for kind, offset in (("public", 0), ("private", 8))
    }


def _count(body: dict, vals: dict[str, Any]) -> int:
    if "count" not in body:
        return 1
    code = expr(body["count"])
    if code is None:
        return int(body["count"])
    match = re.fullmatch(r"var\.(\w+)", code)
    if not match:
        raise TerraformReadError(f"count {code!r}: only var.<name> is understood")
    return int(vals[match.group(1)])


def _subnet(body: dict, index: int, nets: dict[str, list[Subnet]], az_count: int) -> Subnet:
    code = expr(body.get("subnet_id")) or ""
    match = re.fullmatch(r"aws_subnet\.(public|private)\[(.+)\]\.id", code)
    if not match:
        raise TerraformReadError(f"subnet_id {code!r}: only aws_subnet.<kind>[...].id is understood")
    kind, position = match.groups()
    if position.replace(" ", "") == "count.index%var.az_count":
        return nets[kind][index % az_count]
    if position.isdigit():
        return nets[kind][int(position)]
    raise TerraformReadError(f"subnet index {position!r}: only a number or count.index % var.az_count")


def _name(template: str, vals: dict[str, Any], index: int) -> str:
    name = template.replace("${local.name}", f"{vals['project']}-{vals['env']}")
    name = re.sub(r"\$\{count\.index\s*\+\s*1\}", str(index + 1), name)
    if "${" in name:
        raise TerraformReadError(f"Name tag {template!r}: only ${{local.name}} and ${{count.index + 1}} are understood")
    return name


def tiers() -> list[str]:
    """local.tiers: the inventory groups of docs/architecture.md, in their order."""
    for doc in _documents():
        for block in doc.get("locals", []):
            if "tiers" in block:
                return [str(t) for t in block["tiers"]]
    raise TerraformReadError("terraform/ defines no local.tiers")


def _attachments() -> dict[str, list[str]]:
    """{aws_instance name: [device names of its volume attachments]}."""
    found: dict[str, list[str]] = {}
    for body in _resources("aws_volume_attachment").values():
        match = re.fullmatch(r"aws_instance\.(\w+)\[count\.index\]\.id", expr(body.get("instance_id")) or "")
        if not match:
            raise TerraformReadError(f"volume attachment instance_id {body.get('instance_id')!r} is not understood")
        found.setdefault(match.group(1), []).append(str(body["device_name"]))
    return found


def instances(vals: dict[str, Any]) -> list[Instance]:
    """Every instance, in the order of local.tiers, then by index."""
    nets = subnets(vals)
    az_count = int(vals["az_count"])
    attached = _attachments()
    planned: list[Instance] = []
    for resource, body in _resources("aws_instance").items():
        role = body["tags"]["Role"]
        for index in range(_count(body, vals)):
            instance_type = vals["instance_types"][role]
            planned.append(Instance(resource, index, role, _name(body["tags"]["Name"], vals, index),
                                    _subnet(body, index, nets, az_count), instance_type,
                                    list(attached.get(resource, []))))
    order = tiers()
    planned.sort(key=lambda i: (order.index(i.role) if i.role in order else len(order), i.role, i.index))
    return planned
