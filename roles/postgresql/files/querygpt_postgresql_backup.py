#!/usr/bin/python3
"""Take the cluster's pgBackRest backups and report them to Prometheus (roles/postgresql).

Every host of the cluster has the same timers, so the backups follow a failover without a
change; this program decides on each run:

  backup --type full|diff   on the primary's host: pgBackRest's backup (it copies from a
                            standby where one runs: backup-standby=prefer), then the expiry
                            its retention asks for; on a standby's host: nothing, exit 0.
                            Exit status: pgBackRest's, so a failed backup fails the unit.
  metrics                   on every host: the repository's newest backup of each type and,
                            on the primary, the WAL archiver's state, as node_exporter textfile
                            metrics (querygpt_postgresql_backup.prom).

Runs as root (it writes the textfile directory, which only root may) with no capability but
switching users: pgBackRest and psql run as postgres, and every figure about the cluster comes
from them, never from postgres's files.
Metrics are written to a temporary file and renamed, so the collector never reads half a file.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LOG = logging.getLogger("querygpt-postgresql-backup")
METRICS_FILE = "querygpt_postgresql_backup.prom"
RUN_METRICS_FILE = "querygpt_postgresql_backup_run.prom"
BACKUP_TYPES = ("full", "diff", "incr")


def as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv]


def psql(args: argparse.Namespace, query: str) -> str:
    """One query on the local server over its socket (peer authentication), unaligned output."""
    out = subprocess.run(as_postgres([f"{args.bin_dir}/psql", "-XAtq", "-h", args.socket_dir, "-p", str(args.port),
                                      "-d", "postgres", "-c", query]),
                         capture_output=True, text=True, check=True, timeout=30)
    return out.stdout.strip()


def is_primary(args: argparse.Namespace) -> bool:
    return psql(args, "SELECT pg_is_in_recovery()") == "f"


def newest_backups(info: list[dict]) -> dict[str, float]:
    """Type -> stop time (epoch) of the newest backup of that type, from `pgbackrest info --output=json`.

    Each type reports its own newest; the alerts combine them (the newest of any type)."""
    newest: dict[str, float] = {}
    for stanza in info:
        for backup in stanza.get("backup", []):
            kind = backup.get("type")
            stop = backup.get("timestamp", {}).get("stop")
            if kind in BACKUP_TYPES and isinstance(stop, (int, float)) and stop > newest.get(kind, 0):
                newest[kind] = float(stop)
    return newest


def stanza_status(info: list[dict]) -> int:
    """pgBackRest's status code of the stanza (0 = ok, 2 = no valid backups, ...); 99 when absent."""
    for stanza in info:
        return int(stanza.get("status", {}).get("code", 99))
    return 99


def family(lines: list[str], name: str, kind: str, text: str, samples: list[tuple[str, float]]) -> None:
    lines.append(f"# HELP {name} {text}")
    lines.append(f"# TYPE {name} {kind}")
    for labels, value in samples:
        lines.append(f"{name}{labels} {value:.17g}")


def render_backup_metrics(info: list[dict] | None, archiver: dict[str, float] | None, ready: int | None) -> str:
    lines: list[str] = []
    family(lines, "querygpt_postgresql_backup_info_success", "gauge",
           "1 when pgBackRest could read the stanza from the repository (S3), 0 when not.",
           [("", 1.0 if info is not None else 0.0)])
    if info is not None:
        family(lines, "querygpt_postgresql_backup_stanza_status", "gauge",
               "pgBackRest's status code of the stanza: 0 ok, 2 no valid backup, others see pgbackrest info.",
               [("", float(stanza_status(info)))])
        newest = newest_backups(info)
        family(lines, "querygpt_postgresql_backup_last_completion_timestamp_seconds", "gauge",
               "When the newest backup of each type in the repository completed.",
               [(f'{{type="{kind}"}}', stop) for kind, stop in sorted(newest.items())])
    if archiver is not None:
        family(lines, "querygpt_postgresql_wal_archive_archived_total", "counter",
               "WAL segments the primary archived (pg_stat_archiver.archived_count).",
               [("", archiver["archived"])])
        family(lines, "querygpt_postgresql_wal_archive_failed_total", "counter",
               "Failed attempts to archive a WAL segment (pg_stat_archiver.failed_count).",
               [("", archiver["failed"])])
        family(lines, "querygpt_postgresql_wal_archive_last_archived_timestamp_seconds", "gauge",
               "When the primary last archived a segment (0 = never).", [("", archiver["last_archived"])])
        family(lines, "querygpt_postgresql_wal_archive_last_failed_timestamp_seconds", "gauge",
               "When an archive attempt last failed (0 = never).", [("", archiver["last_failed"])])
    if ready is not None:
        family(lines, "querygpt_postgresql_wal_archive_ready_segments", "gauge",
               "WAL segments waiting to be archived (pg_wal/archive_status/*.ready).", [("", float(ready))])
    return "\n".join(lines) + "\n"


def render_run_metrics(kind: str, ok: bool, when: float, seconds: float) -> str:
    lines: list[str] = []
    family(lines, "querygpt_postgresql_backup_last_run_timestamp_seconds", "gauge",
           "When this host last ran a backup (as the primary's host).", [(f'{{type="{kind}"}}', when)])
    family(lines, "querygpt_postgresql_backup_last_run_success", "gauge",
           "1 when this host's last backup run succeeded, 0 when it failed.", [(f'{{type="{kind}"}}', 1.0 if ok else 0.0)])
    family(lines, "querygpt_postgresql_backup_last_run_duration_seconds", "gauge",
           "How long this host's last backup run took.", [(f'{{type="{kind}"}}', seconds)])
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_info(args: argparse.Namespace) -> list[dict] | None:
    try:
        out = subprocess.run(as_postgres(["pgbackrest", f"--stanza={args.stanza}", "--log-level-console=warn",
                                          "info", "--output=json"]),
                             capture_output=True, text=True, check=True, timeout=120)
        return json.loads(out.stdout)
    except (subprocess.SubprocessError, OSError, ValueError) as err:
        LOG.error("pgbackrest info failed: %s", getattr(err, "stderr", "") or err)
        return None


def read_archiver(args: argparse.Namespace) -> dict[str, float] | None:
    row = psql(args, "SELECT archived_count, failed_count, "
                     "coalesce(extract(epoch FROM last_archived_time), 0), "
                     "coalesce(extract(epoch FROM last_failed_time), 0) FROM pg_stat_archiver")
    archived, failed, last_archived, last_failed = (float(x) for x in row.split("|"))
    return {"archived": archived, "failed": failed, "last_archived": last_archived, "last_failed": last_failed}


def count_ready(args: argparse.Namespace) -> int:
    """The segments pg_wal/archive_status marks .ready, as the server lists them: the data
    directory is postgres's own, which the unit's root (without CAP_DAC_READ_SEARCH) cannot read."""
    return int(psql(args, "SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'"))


def metrics(args: argparse.Namespace) -> int:
    info = read_info(args)
    archiver = ready = None
    try:
        if is_primary(args):
            archiver = read_archiver(args)
            ready = count_ready(args)
    except (subprocess.SubprocessError, OSError, ValueError) as err:
        # The server is down: PostgresDown says so; the repository's figures still count.
        LOG.warning("could not read the local server: %s", getattr(err, "stderr", "") or err)
    write_atomically(Path(args.textfile_dir) / METRICS_FILE, render_backup_metrics(info, archiver, ready))
    return 0 if info is not None else 1


def backup(args: argparse.Namespace) -> int:
    try:
        primary = is_primary(args)
    except (subprocess.SubprocessError, OSError) as err:
        LOG.error("cannot tell whether this host is the primary (is the server running?): %s",
                  getattr(err, "stderr", "") or err)
        return 1
    if not primary:
        LOG.info("this host is a standby: the primary's host takes the %s backup (from a standby)", args.type)
        return 0
    LOG.info("this host is the primary: taking a %s backup of stanza %s", args.type, args.stanza)
    started = time.time()
    rc = subprocess.run(as_postgres(["pgbackrest", f"--stanza={args.stanza}", f"--type={args.type}", "backup"]),
                        check=False).returncode
    finished = time.time()
    if rc == 0:
        LOG.info("%s backup done in %.0f s", args.type, finished - started)
    else:
        LOG.error("%s backup FAILED (pgbackrest exit %d): see the journal above and /var/log/pgbackrest; "
                  "the repository keeps the previous backups", args.type, rc)
    write_atomically(Path(args.textfile_dir) / RUN_METRICS_FILE,
                     render_run_metrics(args.type, rc == 0, finished, finished - started))
    metrics(args)
    return rc


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stanza", required=True)
    parser.add_argument("--bin-dir", required=True, help="PostgreSQL's binaries (psql)")
    parser.add_argument("--socket-dir", default="/run/postgresql")
    parser.add_argument("--port", type=int, default=5432)
    parser.add_argument("--textfile-dir", default="/var/lib/prometheus/node-exporter")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("backup", help="back up the cluster if this host is the primary")
    run.add_argument("--type", choices=["full", "diff", "incr"], required=True)
    commands.add_parser("metrics", help="write the textfile metrics")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    args = parse_args(sys.argv[1:] if argv is None else argv)
    return backup(args) if args.command == "backup" else metrics(args)


if __name__ == "__main__":
    sys.exit(main())
