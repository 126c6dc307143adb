"""The lab fleet: one systemd container per host of inventories/lab.

The inventory is the single source of truth: each host's `ansible_host` decides its address,
and the address decides which "availability zone" network it joins (`lab_networks`). Docker
isolates bridge networks from each other, while an AWS VPC routes between its subnets, so the
lab adds two host firewall rules that let the two networks reach each other without NAT:
security rules on the hosts then see real source addresses, as they would in a VPC.
"""

from __future__ import annotations

import ipaddress
import json
import time
from dataclasses import dataclass

from .paths import LABEL, LAB_INVENTORY, STATE, VENV
from .run import LabError, output, run
from .secrets import vault_env

PREFIX = "qgpt-lab-"


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    network: str

    @property
    def container(self) -> str:
        return PREFIX + self.name


def _inventory() -> dict:
    raw = output([str(VENV / "bin" / "ansible-inventory"), "-i", str(LAB_INVENTORY), "--list"],
                 env=vault_env())
    return json.loads(raw)


def networks(inventory: dict | None = None) -> dict[str, ipaddress.IPv4Network]:
    """The lab's AZ networks, read from `lab_networks` in the lab inventory."""
    inv = inventory or _inventory()
    some_host = next(iter(inv["_meta"]["hostvars"].values()))
    nets = some_host.get("lab_networks")
    if not nets:
        raise LabError("inventories/lab must define lab_networks (name: CIDR) for all hosts")
    return {name: ipaddress.ip_network(cidr) for name, cidr in nets.items()}


def hosts() -> list[Host]:
    """Every lab host with its address and network, validated against `lab_networks`."""
    inv = _inventory()
    nets = networks(inv)
    result = []
    for name, hv in sorted(inv["_meta"]["hostvars"].items()):
        address = hv.get("ansible_host")
        if not address:
            raise LabError(f"inventories/lab: host {name} has no ansible_host")
        ip = ipaddress.ip_address(address)
        net = next((n for n, cidr in nets.items() if ip in cidr), None)
        if net is None:
            raise LabError(f"inventories/lab: {name} ansible_host {address} is in none of lab_networks")
        result.append(Host(name, address, net))
    return result


def _docker_names(kind: str) -> set[str]:
    """The lab's own containers or networks: label value `host` or `network`. Matching on the
    label's key alone would also take molecule's containers, which inherit `{LABEL}=image`
    from the lab image, and `lab down` would remove scenarios running beside the lab."""
    fmt = "{{.Name}}" if kind == "network" else "{{.Names}}"
    value = "network" if kind == "network" else "host"
    cmd = ["docker", kind, "ls", "--filter", f"label={LABEL}={value}", "--format", fmt]
    if kind == "container":
        cmd.insert(3, "-a")
    return set(output(cmd).split())


def ensure_networks() -> None:
    existing = _docker_names("network")
    for name, cidr in networks().items():
        net = PREFIX + name
        if net in existing:
            continue
        gateway = str(next(cidr.hosts()))
        run(["docker", "network", "create", "--driver", "bridge", "--subnet", str(cidr),
             "--gateway", gateway, "--label", f"{LABEL}=network", net])
    _ensure_routing(networks())


def _routing_rules(nets: dict[str, ipaddress.IPv4Network]) -> list[list[str]]:
    rules = []
    for src in nets.values():
        for dst in nets.values():
            if src == dst:
                continue
            rules.append(["filter", "DOCKER-USER", "-s", str(src), "-d", str(dst), "-j", "ACCEPT"])
            rules.append(["nat", "POSTROUTING", "-s", str(src), "-d", str(dst), "-j", "RETURN"])
    return rules


def _ensure_routing(nets: dict[str, ipaddress.IPv4Network]) -> None:
    for table, chain, *spec in _routing_rules(nets):
        exists = run(["iptables", "-t", table, "-C", chain, *spec], check=False, capture=True, quiet=True)
        if exists.returncode != 0:
            run(["iptables", "-t", table, "-I", chain, "1", *spec])


def _remove_routing(nets: dict[str, ipaddress.IPv4Network]) -> None:
    for table, chain, *spec in _routing_rules(nets):
        while run(["iptables", "-t", table, "-C", chain, *spec], check=False, capture=True, quiet=True).returncode == 0:
            run(["iptables", "-t", table, "-D", chain, *spec])


def container_args(image: str) -> list[str]:
    """What makes systemd run as PID 1 in a container here (see ENVIRONMENT.md)."""
    return [
        "--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN", "--cgroupns", "host",
        "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--tmpfs", "/run", "--tmpfs", "/run/lock",
        "--stop-signal", "SIGRTMIN+3", "--add-host", "apt-cache:host-gateway", image,
    ]


def ensure_containers(image: str, public_key: str) -> list[Host]:
    existing = _docker_names("container")
    fleet = hosts()
    for host in fleet:
        if host.container in existing:
            state = output(["docker", "inspect", "-f", "{{.State.Running}}", host.container])
            if state != "true":
                run(["docker", "start", host.container])
            continue
        _forget_host_key(host)
        run(["docker", "run", "-d", "--name", host.container, "--hostname", host.name,
             "--label", f"{LABEL}=host", "--network", PREFIX + host.network, "--ip", host.address,
             *container_args(image)])
    for host in fleet:
        _wait_for_systemd(host)
        _authorize(host, public_key)
    return fleet


def _forget_host_key(host: Host) -> None:
    """A new container has new host keys: drop the old container's from known_hosts."""
    known_hosts = STATE / "known_hosts"
    if known_hosts.exists():
        run(["ssh-keygen", "-R", host.address, "-f", str(known_hosts)], check=False, capture=True, quiet=True)


def _wait_for_systemd(host: Host, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = run(["docker", "exec", host.container, "systemctl", "is-system-running"],
                    check=False, capture=True, quiet=True).stdout.strip()
        if state in {"running", "degraded"}:
            return
        time.sleep(0.5)
    raise LabError(f"{host.name}: systemd did not finish booting within {timeout:.0f}s")


def _authorize(host: Host, public_key: str) -> None:
    """Install the lab key for `admin`, as cloud-init does with an EC2 key pair."""
    script = (
        "install -d -m 700 -o admin -g admin /home/admin/.ssh && "
        "touch /home/admin/.ssh/authorized_keys && "
        f"grep -qxF '{public_key}' /home/admin/.ssh/authorized_keys || "
        f"echo '{public_key}' >> /home/admin/.ssh/authorized_keys; "
        "chown admin:admin /home/admin/.ssh/authorized_keys && chmod 600 /home/admin/.ssh/authorized_keys"
    )
    run(["docker", "exec", host.container, "sh", "-c", script], quiet=True)


def remove_all() -> None:
    """Remove every container and network the lab labelled, and its routing rules."""
    containers = _docker_names("container")
    if containers:
        run(["docker", "rm", "-f", *sorted(containers)])
    nets = {}
    for net in sorted(_docker_names("network")):
        subnet = output(["docker", "network", "inspect", net, "--format",
                         "{{(index .IPAM.Config 0).Subnet}}"])
        nets[net] = ipaddress.ip_network(subnet)
        run(["docker", "network", "rm", net])
    _remove_routing(nets)
    left = leftovers()
    if left:
        raise LabError(f"lab down left these behind: {', '.join(left)}")


def leftovers() -> list[str]:
    """Anything labelled by the lab that still exists (should be nothing after `down`)."""
    found = [f"container {c}" for c in sorted(_docker_names("container"))]
    found += [f"network {n}" for n in sorted(_docker_names("network"))]
    return found


def status() -> list[tuple[str, str, str]]:
    rows = []
    existing = _docker_names("container")
    for host in hosts():
        state = "absent"
        if host.container in existing:
            state = output(["docker", "inspect", "-f", "{{.State.Status}}", host.container])
        rows.append((host.name, host.address, state))
    return rows


