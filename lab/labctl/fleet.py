"""The lab fleet: one systemd container per instance Terraform would create (lab/labctl/ec2.py).

Each machine sits on the docker network of its subnet (public-a, private-a, private-b, ...:
the subnets of terraform/networking.tf for lab/fleet.tfvars) at its private address. The
bastion also has a leg on the lab's "internet" network at its Elastic IP, where the
controller (that network's gateway) reaches it, as an operator reaches a public address.
Docker isolates bridge networks from each other, while an AWS VPC routes between its
subnets, so the lab adds host firewall rules that let the subnets reach each other without
NAT: security rules on the hosts then see real source addresses, as they would in a VPC.
"""

from __future__ import annotations

import ipaddress
import sys
import time

from . import ec2
from .ec2 import LabHost
from .paths import LABEL
from .run import LabError, output, run

PREFIX = "qgpt-lab-"
INTERNET = "internet"


def networks(hosts: list[LabHost] | None = None) -> dict[str, ipaddress.IPv4Network]:
    """The lab's docker networks: each subnet that holds a machine, and the "internet"."""
    nets = {h.network: h.subnet.cidr for h in (hosts or ec2.plan())}
    nets[INTERNET] = ec2.INTERNET
    return dict(sorted(nets.items()))


def vpc_networks(hosts: list[LabHost] | None = None) -> dict[str, ipaddress.IPv4Network]:
    """The subnets (routed to each other, like a VPC's); not the internet."""
    return {k: v for k, v in networks(hosts).items() if k != INTERNET}


def hosts() -> list[LabHost]:
    return ec2.plan()


def container(host: LabHost) -> str:
    return host.name

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
    _ensure_routing(vpc_networks())


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
    """The rules first in their chains. Where they are matters, not only that they exist: docker
    puts each new network's MASQUERADE rule at the top of POSTROUTING, so RETURN rules left
    behind by a fleet that was not taken down (a killed run) end up below it, and traffic
    between subnets then arrives from the gateway's address, which the hosts' firewalls drop.
    So they are taken out and inserted at the top again every time."""
    _remove_routing(nets)
    for table, chain, *spec in _routing_rules(nets):
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


def ensure_containers(image: str, public_key: str) -> list[LabHost]:
    existing = _docker_names("container")
    fleet = hosts()
    for host in fleet:
        name = container(host)
        if name in existing:
            state = output(["docker", "inspect", "-f", "{{.State.Running}}", name])
            if state != "true":
                run(["docker", "start", name])
            continue
        # A reboot inside a container ends its systemd; docker starts it again, as a VM boots.
        run(["docker", "run", "-d", "--name", name, "--hostname", host.name, "--restart", "unless-stopped",
             "--label", f"{LABEL}=host", "--network", PREFIX + host.network, "--ip", host.address,
             *container_args(image)])
        if host.public_ip:
            run(["docker", "network", "connect", "--ip", host.public_ip, PREFIX + INTERNET, name])
    for host in fleet:
        _wait_for_systemd(host)
        _authorize(host, public_key)
        if host.public_ip:
            _route_through_the_vpc(host)
    return fleet


def readdress(host: LabHost, address: str) -> None:
    """Move a private host's container to `address` on its subnet's network: with
    ec2.replace_instance, the lab's stand-in for an instance replaced at a new private address
    (same disk, so its baseline stays; the test empties what the loss would have emptied)."""
    if host.public_ip:
        raise LabError(f"{host.name}: only private hosts are readdressed")
    net = PREFIX + host.network
    run(["docker", "network", "disconnect", net, container(host)], quiet=True)
    run(["docker", "network", "connect", "--ip", address, net, container(host)], quiet=True)
    _route_through_the_vpc(host, address)


def _route_through_the_vpc(host: LabHost, address: str = "") -> None:
    """The bastion's default route is its subnet's gateway, as in a VPC (the internet leg only
    answers the controller). Docker picks the default gateway among a container's networks by
    its own order, and may pick the internet's; this sets it on every `up` (a restart resets it),
    and for a readdressed host on the interface that now holds `address`."""
    gateway = str(next(host.subnet.cidr.hosts()))
    run(["docker", "exec", container(host), "ip", "route", "replace", "default", "via", gateway, "dev",
         _interface(host, address or host.address)], quiet=True)


def _interface(host: LabHost, address: str) -> str:
    """The container's interface that holds `address`."""
    for line in output(["docker", "exec", container(host), "ip", "-o", "-4", "addr", "show"]).splitlines():
        fields = line.split()
        if fields[3].split("/")[0] == address:
            return fields[1]
    raise LabError(f"{host.name}: no interface holds {address}")


def _wait_for_systemd(host: LabHost, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = run(["docker", "exec", container(host), "systemctl", "is-system-running"],
                    check=False, capture=True, quiet=True).stdout.strip()
        if state in {"running", "degraded"}:
            return
        time.sleep(0.5)
    raise LabError(f"{host.name}: systemd did not finish booting within {timeout:.0f}s")


def _authorize(host: LabHost, public_key: str) -> None:
    """Install the lab key for `admin`, as cloud-init does with an EC2 key pair."""
    script = (
        "install -d -m 700 -o admin -g admin /home/admin/.ssh && "
        "touch /home/admin/.ssh/authorized_keys && "
        f"grep -qxF '{public_key}' /home/admin/.ssh/authorized_keys || "
        f"echo '{public_key}' >> /home/admin/.ssh/authorized_keys; "
        "chown admin:admin /home/admin/.ssh/authorized_keys && chmod 600 /home/admin/.ssh/authorized_keys"
    )
    run(["docker", "exec", container(host), "sh", "-c", script], quiet=True)


def remove_all() -> None:
    """Remove every container and network the lab labelled, and its routing rules."""
    containers = _docker_names("container")
    if containers:
        run(["docker", "rm", "-f", *sorted(containers)])
    nets = {}
    stale = set()
    for net in sorted(_docker_names("network")):
        subnet = output(["docker", "network", "inspect", net, "--format",
                         "{{(index .IPAM.Config 0).Subnet}}"])
        nets[net] = ipaddress.ip_network(subnet)
        if not _remove_network(net):
            stale.add(f"network {net}")
    _remove_routing(nets)
    left = [thing for thing in leftovers() if thing not in stale]
    if left:
        raise LabError(f"lab down left these behind: {', '.join(left)}")


# dockerd may still count an endpoint on a network right after `docker rm -f` of its last
# container; it is tried again for this long. Rarely it keeps one for good, with no container
# attached (CI, 2026-12-06: after the zone outage drill's `docker kill`/`docker start`, "has
# active endpoints" on an empty network until dockerd restarts). Such a network is left,
# reported, and `lab up` uses it again (its subnet and label are the lab's; no address is held).
NETWORK_RM_SECONDS = 15


def _remove_network(net: str) -> bool:
    """Remove `net`: True when done, False when dockerd holds a stale endpoint on it (see above)."""
    deadline = time.monotonic() + NETWORK_RM_SECONDS
    while True:
        done = run(["docker", "network", "rm", net], check=False, capture=True)
        if done.returncode == 0:
            return True
        error = f"command failed ({done.returncode}): docker network rm {net}\n{done.stderr.strip()}"
        if "active endpoints" not in done.stderr:
            raise LabError(error)
        if time.monotonic() >= deadline:
            if output(["docker", "network", "inspect", net, "--format", "{{len .Containers}}"]) != "0":
                raise LabError(error)
            print(f"lab: {net} kept: dockerd holds a stale endpoint on it with no container attached; "
                  "`lab up` uses it again (restarting dockerd clears it)", file=sys.stderr, flush=True)
            return False
        time.sleep(1)


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
        if container(host) in existing:
            state = output(["docker", "inspect", "-f", "{{.State.Status}}", container(host)])
        rows.append((host.name, host.address, state))
    return rows


