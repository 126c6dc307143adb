"""`bin/lab`: bring the local lab up, converge it with the production playbooks, take it down."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from . import aptcache, bootstrap, ec2, fleet, image, secrets, standins
from .paths import LAB_INVENTORY, REPO, STATE, VENV
from .run import LabError, run


def playbook_env() -> dict[str, str]:
    """The environment every lab ansible run needs: the toolchain (the vault password and the
    inventory's emulator endpoint are found by configuration, as for a run by hand)."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    env["ANSIBLE_CONFIG"] = str(REPO / "ansible.cfg")
    return env


def converge(extra: list[str], playbook: str = "site.yml") -> dict[str, dict[str, int]]:
    """Run a playbook (site.yml by default) on the lab and return the PLAY RECAP per host."""
    cmd = [str(VENV / "bin" / "ansible-playbook"), playbook, "-i", str(LAB_INVENTORY), *extra]
    print(f"+ {' '.join(cmd)}", file=sys.stderr, flush=True)
    proc = subprocess.Popen(cmd, cwd=REPO, env=playbook_env(), stdout=subprocess.PIPE, text=True)
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        lines.append(line)
    if proc.wait() != 0:
        raise LabError(f"{playbook} failed on the lab (exit {proc.returncode})")
    return parse_recap("".join(lines))


RECAP = re.compile(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$", re.M)


def parse_recap(text: str) -> dict[str, dict[str, int]]:
    recap = text.rsplit("PLAY RECAP", 1)[-1]
    return {
        host: {k: int(v) for k, v in (pair.split("=") for pair in counters.split())}
        for host, counters in RECAP.findall(recap)
    }


def endpoints() -> list[str]:
    """Where the converged stack answers: the groups' addresses, for the roles site.yml runs."""
    sys.path.insert(0, str(REPO / "plugins" / "filter"))
    from site_roles import site_roles  # the same reading of the playbooks the preflight uses

    fleet_hosts = ec2.plan()
    groups: dict[str, list[ec2.LabHost]] = {}
    for host in fleet_hosts:
        groups.setdefault(host.role, []).append(host)
    bastion = groups["bastion"][0]
    config = STATE / "ssh_config"
    tunnel = f"ssh -F {config} -L {{port}}:{{address}}:{{port}} {bastion.public_ip}"
    services = [  # (group, role that serves it, label, URL template, port)
        ("edge", "nginx", "QueryGPT", "https://{address}/", 443),
        ("monitoring", "prometheus_stack", "Prometheus", "https://{address}:9090/", 9090),
        ("qdrant", "qdrant", "Qdrant (private)", "https://{address}:6333/readyz", 6333),
        ("ollama", "ollama", "Ollama (private)", "https://{address}:11434/api/version", 11434),
        ("backend", "backend", "Backend (private)", "https://{address}:8000/ready", 8000),
    ]
    lines = []
    for group, role, label, url, port in services:
        if role not in site_roles([group], str(REPO / "site.yml")):
            continue
        for host in groups.get(group, []):
            lines.append(f"{label:18} {host.name:24} {url.format(address=host.address)}")
            if group == "monitoring":  # the matrix opens 9090 to the bastion for tunnels
                lines.append(f"{'':18} {'':24} tunnel: {tunnel.format(port=port, address=host.address)}")
                lines.append(f"{'':18} {'':24} then https://localhost:{port}/ as querygpt, password: "
                             "ansible-vault view inventories/lab/group_vars/all/vault.yml (vault_prometheus_web_password)")
            elif group != "edge":  # private: reachable from the tier the matrix names
                peer = "edge" if group == "backend" else "backend"
                lines.append(f"{'':18} {'':24} from {peer}: ssh -F {config} "
                             f"{groups[peer][0].address} curl -s {url.format(address=host.address)}")
    for lb in groups.get("lb", []):  # the NLB's stand-in: what users would reach
        lines.append(f"{'Load balancer':18} {lb.name:24} https://{lb.public_ip}/  (either edge's certificate)")
    lines.append(f"{'Bastion':18} {bastion.name:24} ssh -F {config} {bastion.public_ip}")
    lines.append(f"{'Inventory':18} {'':24} ansible-inventory -i inventories/lab --graph  (EC2 emulator {ec2.URL})")
    return lines


def cmd_up(args: argparse.Namespace) -> None:
    bootstrap.bootstrap()
    aptcache.ensure()
    ref = image.build()
    public_key = secrets.ensure_ssh_key()
    secrets.ensure_vault()
    # The lab's "Terraform apply": the EC2 emulator holds the fleet the inventory plugin reads.
    planned = ec2.ensure()
    fleet.ensure_networks()
    fleet.ensure_containers(ref, public_key)
    bastion = next(h for h in planned if h.role == "bastion")
    secrets.ssh_config(bastion.public_ip, [str(ec2.fleet_values()["vpc_cidr"])])
    standins.build()
    standins.build_release()
    if not args.no_converge:
        # Lab-only helpers first (stand-in model mirror, ACME server, S3 endpoint): what AWS
        # and the internet provide in production.
        prepared = converge([], playbook="lab/playbooks/prepare.yml")
        recap = converge(site_args(args))
        # The application's first admin, as an operator makes it after a first deploy (not in
        # check mode: nothing would be created to sign in with).
        admin = {} if args.check else create_admin()
        changed = sum(c.get("changed", 0) for c in [*recap.values(), *prepared.values(), *admin.values()])
        print(f"\nlab converged{' (site.yml in check mode)' if args.check else ''}: {len(recap)} hosts, changed={changed}")
        if args.assert_idempotent and changed:
            raise LabError(f"not idempotent: `lab up` on a converged lab changed {changed} things")
    print("\nThe lab stack answers at:")
    for line in endpoints():
        print("  " + line)
    if secrets.ADMIN_PASSWORD.exists():
        print(f"\nQueryGPT answers at https://{ec2.LB_PUBLIC_IP}/ (the load balancer; or an edge's address above):"
              f" sign in as {secrets.ADMIN_USERNAME!r}, the password is in {secrets.ADMIN_PASSWORD}")


def create_admin() -> dict[str, dict[str, int]]:
    """Run playbooks/runbooks/create_admin.yml for the lab's admin with the password kept in
    .lab/admin-password. The password reaches ansible-playbook through a vars file only this
    user can read, removed afterwards: never a command-line argument (ps shows those) or an
    inventory variable (the lab's inventory is production's shape)."""
    password = secrets.ensure_admin_password()
    STATE.mkdir(parents=True, exist_ok=True)
    # mkstemp: created 0600. !unsafe: the value is data, never a template.
    fd, name = tempfile.mkstemp(prefix="admin-password-", suffix=".yml", dir=STATE)
    path = Path(name)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(f"admin_password: !unsafe '{password}'\n")
        return converge(["-e", f"admin_username={secrets.ADMIN_USERNAME}", "-e", f"@{path}"],
                        playbook="playbooks/runbooks/create_admin.yml")
    finally:
        path.unlink(missing_ok=True)


def site_args(args: argparse.Namespace) -> list[str]:
    """ansible-playbook's arguments for site.yml: `--check --diff` with --check, then the rest."""
    extra = list(args.ansible_args)
    if extra[:1] == ["--"]:
        extra = extra[1:]
    return (["--check", "--diff"] if args.check else []) + extra


def cmd_converge(args: argparse.Namespace) -> None:
    recap = converge(site_args(args))
    changed = sum(c.get("changed", 0) for c in recap.values())
    print(f"\nsite.yml{' in check mode' if args.check else ''}: {len(recap)} hosts, changed={changed}")
    if args.assert_idempotent and not recap:
        raise LabError("no PLAY RECAP: site.yml ran against no host")
    if args.assert_idempotent and changed:
        raise LabError(f"not idempotent: changed={changed} on a converged lab: {recap}")


def cmd_down(args: argparse.Namespace) -> None:
    fleet.remove_all()
    ec2.stop()
    # Host keys, cached facts and the emulated instances belong to the containers just removed.
    run(["rm", "-rf", str(REPO / ".cache" / "facts"), str(secrets.KNOWN_HOSTS), str(ec2.OUTPUTS_FILE)])
    if args.purge:
        # The apt cache also serves molecule scenarios, so only a purge stops it.
        aptcache.stop()
        for suite in image.REPOSITORIES:
            run(["docker", "image", "rm", "-f", image.image_ref(suite), f"{image.repository(suite)}:latest"], check=False)
        run(["rm", "-rf", str(STATE), str(secrets.VAULT_FILE), str(aptcache.CACHE_DIR)])


def cmd_status(_: argparse.Namespace) -> None:
    print(f"EC2 emulator {ec2.URL}: {'answers' if ec2.answers() else 'DOWN (bin/lab up starts and seeds it)'}")
    for name, address, state in fleet.status():
        print(f"{name:24} {address:15} {state}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bin/lab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("bootstrap", help="install host packages, start dockerd, create the virtualenvs")
    p = sub.add_parser("image", help="build the systemd base image (reused while unchanged)")
    p.add_argument("--force", action="store_true")
    p.add_argument("--suite", default=image.SUITE, choices=sorted(image.REPOSITORIES),
                   help="Debian release (bookworm: only for the Debian upgrade runbook's scenario)")
    p = sub.add_parser("up", help="bootstrap, image, fleet, then converge site.yml (idempotent)")
    p.add_argument("--no-converge", action="store_true")
    p.add_argument("--assert-idempotent", action="store_true", help="fail when anything changed")
    p.add_argument("--check", action="store_true",
                   help="site.yml with --check --diff (the lab playbooks still run for real)")
    p.add_argument("ansible_args", nargs=argparse.REMAINDER, help="passed to ansible-playbook")
    p = sub.add_parser("converge", help="run site.yml against the lab")
    p.add_argument("--assert-idempotent", action="store_true", help="fail when anything changed")
    p.add_argument("--check", action="store_true", help="with --check --diff")
    p.add_argument("ansible_args", nargs=argparse.REMAINDER)
    p = sub.add_parser("down", help="remove the lab's containers, networks and routing rules")
    p.add_argument("--purge", action="store_true",
                   help="also the image, keys, secrets, state and the apt cache")
    sub.add_parser("status", help="list lab hosts and their container state")
    args = parser.parse_args(argv)
    try:
        if args.command == "bootstrap":
            bootstrap.bootstrap()
        elif args.command == "image":
            bootstrap.ensure_docker()
            image.build(force=args.force, suite=args.suite)
        else:
            {"up": cmd_up, "converge": cmd_converge, "down": cmd_down, "status": cmd_status}[args.command](args)
    except LabError as err:
        print(f"lab: {err}", file=sys.stderr)
        return 1
    return 0
