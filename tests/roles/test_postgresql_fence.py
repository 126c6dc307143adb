"""The fence that keeps a superseded PostgreSQL primary from starting
(roles/postgresql/files/querygpt_postgresql_fence.py), run as systemd runs it, with stand-ins
for pg_controldata and psql that print what the real ones print. The lab's failover drill
(tests/lab/test_lab_app_state.py) runs it against real servers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FENCE = REPO / "roles" / "postgresql" / "files" / "querygpt_postgresql_fence.py"

# The lines of PostgreSQL 17's pg_controldata the fence reads, among their neighbours.
CONTROLDATA = """pg_control version number:            1700
Catalog version number:               202406281
Database system identifier:           7443177459541236775
Database cluster state:               in production
Latest checkpoint location:           0/3000148
Latest checkpoint's REDO location:    0/3000110
Latest checkpoint's REDO WAL file:    000000010000000000000003
Latest checkpoint's TimeLineID:       {timeline}
Latest checkpoint's PrevTimeLineID:   1
"""


def run(tmp_path: Path, *, timeline: int, peers: dict[str, str | None], standby: bool = False,
        data: bool = True) -> subprocess.CompletedProcess:
    """The fence against data on `timeline`; peers: address -> IDENTIFY_SYSTEM row, None = no answer."""
    bin_dir, data_dir = tmp_path / "bin", tmp_path / "data"
    bin_dir.mkdir()
    data_dir.mkdir()
    if data:
        (data_dir / "PG_VERSION").write_text("17\n")
    if standby:
        (data_dir / "standby.signal").write_text("")
    (bin_dir / "pg_controldata").write_text(f"#!/bin/sh\ncat <<'EOF'\n{CONTROLDATA.format(timeline=timeline)}EOF\n")
    answers = "\n".join(f"  *'host={a} '*) echo '{row}' ;;" if row else f"  *'host={a} '*) echo 'timeout' >&2; exit 2 ;;"
                        for a, row in peers.items())
    (bin_dir / "psql").write_text(f'#!/bin/sh\ncase "$*" in\n{answers}\n  *) exit 2 ;;\nesac\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    return subprocess.run([sys.executable, str(FENCE), "--bin-dir", str(bin_dir), "--data-dir", str(data_dir),
                           "--user", "replicator", "--passfile", "/nonexistent", "--ca", "/nonexistent",
                           "--timeout", "1", *peers], capture_output=True, text=True, check=False, timeout=30)


SYSTEM = "7443177459541236775"


def test_a_primary_a_failover_passed_is_refused_with_the_runbook_named(tmp_path):
    done = run(tmp_path, timeline=1, peers={"10.42.128.10": f"{SYSTEM}|2|0/5000060|"})
    assert done.returncode == 1
    assert "10.42.128.10 (timeline 2)" in done.stderr and "failover_postgres.yml" in done.stderr


@pytest.mark.parametrize("row", [f"{SYSTEM}|2|0/5000060|", f"{SYSTEM}|1|0/3000148|"])
def test_a_primary_on_the_newest_timeline_starts(tmp_path, row):
    # the peer on the same timeline is its standby; on an older one, a standby not rebuilt yet
    assert run(tmp_path, timeline=2, peers={"10.42.128.10": row}).returncode == 0


def test_a_peer_of_another_cluster_is_no_evidence(tmp_path):
    assert run(tmp_path, timeline=1, peers={"10.42.128.10": "1111111111111111111|9|0/1|"}).returncode == 0


def test_a_peer_that_does_not_answer_is_no_evidence_but_one_that_does_still_counts(tmp_path):
    assert run(tmp_path, timeline=1, peers={"10.42.128.10": None}).returncode == 0
    again = tmp_path / "again"
    again.mkdir()
    done = run(again, timeline=1, peers={"10.42.128.10": None, "10.42.144.10": f"{SYSTEM}|3|0/7000000|"})
    assert done.returncode == 1 and "10.42.144.10 (timeline 3)" in done.stderr


@pytest.mark.parametrize("kind", ["standby", "no data"])
def test_a_standby_or_a_host_without_data_always_starts(tmp_path, kind):
    done = run(tmp_path, timeline=1, peers={"10.42.128.10": f"{SYSTEM}|5|0/9000000|"},
               standby=kind == "standby", data=kind != "no data")
    assert done.returncode == 0, done.stderr
