#!/usr/bin/python3
"""Refuse to start a PostgreSQL primary that a failover has left behind (roles/postgresql).

Run by systemd before the server starts (ExecStartPre of the cluster's unit). A cluster whose
data has no standby.signal starts as a primary. After a failover the promoted standby runs on
a higher timeline; an old primary that comes back (its instance restarted after an outage)
would otherwise start on its old timeline and accept writes the new primary never sees: two
primaries, forked data. So before a primary starts, each other host of the cluster is asked
for its timeline over the replication protocol (IDENTIFY_SYSTEM, with the standbys' own
replication credentials). A host of the same cluster (same system identifier) on a higher
timeline means this data was superseded: the start is refused, with a message naming the
runbook that rebuilds it as a standby (playbooks/runbooks/failover_postgres.yml).

A host that does not answer is no evidence either way and the start goes on: the fence
protects against an old primary that comes back while the new one runs, not against a
partition; the failover runbook fences what it can reach and asks the operator to confirm
that what it cannot reach is stopped.

Exit status: 0 start, 1 refused, 2 bad usage.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Peer:
    """What a peer said: its address, and (system identifier, timeline), or None if it did not answer."""

    address: str
    identity: tuple[str, int] | None


def local_identity(bin_dir: Path, data_dir: Path) -> tuple[str, int]:
    """(system identifier, timeline of the latest checkpoint) of the local data, from pg_controldata."""
    out = subprocess.run([str(bin_dir / "pg_controldata"), "-D", str(data_dir)], capture_output=True, text=True,
                         check=True, env={"LC_ALL": "C"}).stdout
    return parse_controldata(out)


def parse_controldata(text: str) -> tuple[str, int]:
    system = re.search(r"^Database system identifier:\s+(\d+)$", text, re.M)
    timeline = re.search(r"^Latest checkpoint's TimeLineID:\s+(\d+)$", text, re.M)
    if not system or not timeline:
        raise ValueError("pg_controldata printed no system identifier or timeline")
    return system.group(1), int(timeline.group(1))


def ask_peer(bin_dir: Path, address: str, args: argparse.Namespace) -> Peer:
    """IDENTIFY_SYSTEM on a peer; Peer(address, None) when it does not answer in time."""
    conninfo = (f"host={address} port={args.port} user={args.user} passfile={args.passfile} dbname=replication "
                f"replication=true sslmode=verify-full sslrootcert={args.ca} connect_timeout={args.timeout} "
                "application_name=querygpt_fence")
    try:
        done = subprocess.run([str(bin_dir / "psql"), "-XAtq", "-F", "|", "-d", conninfo, "-c", "IDENTIFY_SYSTEM"],
                              capture_output=True, text=True, timeout=args.timeout + 5, check=False)
    except subprocess.TimeoutExpired:
        return Peer(address, None)
    fields = done.stdout.strip().split("|")
    if done.returncode != 0 or len(fields) < 2 or not fields[1].isdigit():
        return Peer(address, None)
    return Peer(address, (fields[0], int(fields[1])))


def verdict(local: tuple[str, int], peers: list[Peer]) -> str | None:
    """Why this primary must not start, or None when it may."""
    system, timeline = local
    ahead = [p for p in peers if p.identity and p.identity[0] == system and p.identity[1] > timeline]
    if not ahead:
        return None
    names = ", ".join(f"{p.address} (timeline {p.identity[1]})" for p in ahead if p.identity)
    return (f"refusing to start this primary (timeline {timeline}): {names} of the same cluster "
            f"(system {system}) passed it, so a failover promoted another host and this data is "
            "superseded. Rebuild this host as a standby with playbooks/runbooks/failover_postgres.yml; "
            "nothing was started.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin-dir", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, default=5432)
    parser.add_argument("--user", required=True, help="the replication role")
    parser.add_argument("--passfile", type=Path, required=True)
    parser.add_argument("--ca", type=Path, required=True)
    parser.add_argument("--timeout", type=int, default=3, help="seconds to connect to each peer")
    parser.add_argument("peers", nargs="*", help="the private addresses of the cluster's other hosts")
    args = parser.parse_args(argv)
    data = args.data_dir
    if not (data / "PG_VERSION").exists() or (data / "standby.signal").exists() or not args.peers:
        return 0  # no data yet, a standby (it follows whichever primary runs), or nobody to ask
    reason = verdict(local_identity(args.bin_dir, data), [ask_peer(args.bin_dir, a, args) for a in args.peers])
    if reason:
        print(reason, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
