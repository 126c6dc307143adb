"""Backups on the lab: the drill and the failure cases, against the running lab.

The lab's Qdrant is a cluster of three peers; each backs up the shard replicas it holds to the
lab's S3 endpoint (moto on s3-1, lab/playbooks/prepare_s3.yml). The drill indexes documents
through the backend, backs up on every peer, then (1) deletes the collection and (2),
separately, loses every collection while one peer has also lost the backup program, its config,
state and schedule; each time playbooks/runbooks/restore_qdrant.yml alone brings them back: it
creates each collection from the layout recorded with its backups (nothing is created by hand
here) and restores every shard, and the layout (vectors, shards, replication and write
consistency factors), the point count and the top-k of fixed queries must be what they were
before. The failure cases (S3 unreachable: exit 1, failure metric, older backups untouched; a
corrupted object refused; retention with an injected clock) are the backup program's, tested
against the same stand-ins in tests/backup, not again here. Losing a peer's
Qdrant data is the drill of replace_qdrant_node.yml (test_lab_qdrant_replace.py). The module
leaves the lab converged (playbooks/backup.yml at the end).
"""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import REPO, Lab, ansible_env
from labview import auth_header_file, changed_counts, qdrant_call

PROGRAM = "/usr/local/bin/querygpt-backup"
CREATE_TASK = "Create the collection from the layout recorded with its backup, unless it exists"
METRICS = "/var/lib/prometheus/node-exporter/querygpt_backup.prom"
SCHEMA = [
    "Inventory database schema",
    "CREATE TABLE products (sku TEXT PRIMARY KEY, title TEXT, price NUMERIC);",
    "CREATE TABLE stock (sku TEXT REFERENCES products, warehouse TEXT, quantity INT);",
    "CREATE TABLE warehouses (warehouse TEXT PRIMARY KEY, city TEXT);",
]


def playbook(path: str, *extra: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(REPO / ".venv/bin/ansible-playbook"), "-i", "inventories/lab", path, *extra],
                          cwd=REPO, env=ansible_env(), capture_output=True, text=True, timeout=timeout,
                          check=False)


class Qdrant:
    """Qdrant's REST API, called from the qdrant host itself (it binds the private address)."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.host = lab.groups["qdrant"][0]

    def call(self, method: str, path: str, body: Any = None, timeout: int = 60, host: str = "") -> Any:
        host = host or self.host
        return qdrant_call(self.lab, host, method, path, body, timeout=timeout)

    def layout(self, collection: str) -> dict[str, Any]:
        """What creating the collection again takes: its vectors and shard layout."""
        params = self.call("GET", f"/collections/{collection}")["result"]["config"]["params"]
        return {k: params[k] for k in ("vectors", "shard_number", "replication_factor", "write_consistency_factor")}

    def local_shards(self, host: str, collection: str) -> list[int]:
        info = self.call("GET", f"/collections/{collection}/cluster", host=host)["result"]
        return sorted(int(s["shard_id"]) for s in info["local_shards"])

    def collections(self) -> list[str]:
        return sorted(c["name"] for c in self.call("GET", "/collections")["result"]["collections"])

    def count(self, collection: str) -> int:
        return int(self.call("POST", f"/collections/{collection}/points/count", {"exact": True})["result"]["count"])

    def fingerprint(self, collection: str) -> dict[str, Any]:
        """Point count and the top-5 (id, score) of fixed queries: the vectors of the first points."""
        points = self.call("POST", f"/collections/{collection}/points/scroll",
                           {"limit": 3, "with_vector": True, "with_payload": False})["result"]["points"]
        tops = []
        for point in sorted(points, key=lambda p: str(p["id"])):
            hits = self.call("POST", f"/collections/{collection}/points/query",
                             {"query": point["vector"], "limit": 5})["result"]["points"]
            tops.append([(str(h["id"]), round(h["score"], 5)) for h in hits])
        return {"count": self.count(collection), "top_k": tops}


@pytest.fixture(scope="module")
def qdrant(lab: Lab) -> Qdrant:
    return Qdrant(lab)


def upload_schema(lab: Lab, collection: str, tmp_path_factory: pytest.TempPathFactory, token: str) -> None:
    """The schema document uploaded to a backend (from an edge, the one host that may reach its
    port) into `collection`, as the admin whose API token is `token`."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    path = tmp_path_factory.mktemp("pdf") / "backup-schema.pdf"
    pdf = canvas.Canvas(str(path), pagesize=A4)
    for page in range(3):  # a few pages: a few chunks
        y = 800
        for line in SCHEMA:
            pdf.drawString(40, y, f"{line} (part {page + 1})")
            y -= 18
        pdf.showPage()
    pdf.save()
    edge, backend = lab.groups["edge"][0], lab.groups["backend"][0]
    subprocess.run(["docker", "cp", str(path), f"{lab.name(edge)}:/var/tmp/backup-schema.pdf"], check=True)
    upload = lab.exec(edge, (
        f"curl -s -H @{auth_header_file(lab, edge, token)}"
        f" -F 'pdf_file=@/var/tmp/backup-schema.pdf;type=application/pdf' -F collection_name={collection} "
        f"--cacert /etc/journal-tls/ca.pem https://{lab.address(backend)}:8000/upload"
    ), timeout=180)
    assert json.loads(upload.stdout).get("chunks", 0) > 0, upload.stdout


def backup_now(lab: Lab) -> list[str]:
    """A backup run on every peer, as each one's schedule does: the errors ([] = all good)."""
    errors = []
    for host in lab.groups["qdrant"]:
        run = lab.ssh(host, f"sudo {PROGRAM} backup", timeout=300)
        if run.returncode != 0:
            errors.append(f"{host}: exit {run.returncode}: {run.stderr[-2000:]}")
    return errors


def list_backups(lab: Lab, collection: str | None = None) -> list[dict[str, Any]]:
    extra = f" --collection {collection}" if collection else ""
    out = lab.ssh(lab.groups["qdrant"][0], f"sudo {PROGRAM} list --json{extra}", timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def metrics(lab: Lab, host: str = "") -> dict[str, float]:
    text = lab.ssh(host or lab.groups["qdrant"][0], f"cat {METRICS}").stdout
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line and not line.startswith("#")}


def task_status(run: subprocess.CompletedProcess, task: str) -> str:
    """How the task named `task` ended in a playbook's output: changed, ok, skipping or fatal."""
    assert f"TASK [{task}]" in run.stdout, f"no task {task!r} in the run: {run.stdout[-3000:]}"
    section = run.stdout.split(f"TASK [{task}]", 1)[1].split("TASK [", 1)[0]
    status = re.search(r"^(changed|ok|skipping|fatal):", section, re.MULTILINE)
    assert status, section
    return status[1]


def restore(lab: Lab, collection: str, snapshot: str = "", shard: int | None = None) -> subprocess.CompletedProcess:
    """The runbook as an operator runs it on the cluster: every peer in the play, each shard
    restored on a peer that holds it (a given snapshot is one shard's)."""
    extra = ["-e", f"restore_snapshot={snapshot}", "-e", f"restore_shard={shard}"] if snapshot else []
    return playbook("playbooks/runbooks/restore_qdrant.yml", "-e", f"restore_collection={collection}", *extra)


@pytest.fixture(scope="module")
def indexed(lab: Lab, qdrant: Qdrant, tmp_path_factory: pytest.TempPathFactory,
            lab_token: str) -> Iterator[dict[str, Any]]:
    """A collection indexed through the backend, backed up; its fingerprint before anything.
    Beside it, an empty collection of the same layout (a collection created and not yet
    uploaded to, or whose documents were all erased), so the drills restore one whatever
    other test files left in the cluster."""
    collection = f"lab_backup_{uuid.uuid4().hex[:8]}"
    empty = f"lab_backup_empty_{uuid.uuid4().hex[:8]}"
    upload_schema(lab, collection, tmp_path_factory, lab_token)
    before = qdrant.fingerprint(collection)
    assert before["count"] > 0
    layout = qdrant.layout(collection)
    assert layout["shard_number"] == len(lab.groups["qdrant"]) and layout["replication_factor"] == 2, layout
    qdrant.call("PUT", f"/collections/{empty}", layout)
    assert not backup_now(lab)
    try:
        yield {"collection": collection, "before": before, "layout": layout, "empty": empty}
    finally:
        for name in (collection, empty):
            if name in qdrant.collections():
                qdrant.call("DELETE", f"/collections/{name}")
        # leave the lab as converged: the schedule, program and config of the backup role
        again = playbook("playbooks/backup.yml")  # every peer: the lose-everything drill strips one
        assert again.returncode == 0, again.stdout[-3000:]


def test_backup_objects_and_metrics(lab: Lab, qdrant: Qdrant, indexed: dict[str, Any]) -> None:
    """Every shard is backed up by each of its two holders; the newest copies of the shards
    add up to the collection; each peer's metrics name the shards it holds."""
    collection, layout = indexed["collection"], indexed["layout"]
    by_shard: dict[int, list[dict[str, Any]]] = {}
    for backup in list_backups(lab, collection):
        assert backup["good"], backup
        assert backup["key"].startswith(f"lab/qdrant/{collection}/shards/{backup['shard']}/"), backup
        assert backup["shard_count"] == layout["shard_number"], backup
        assert backup["layout"] and {k: backup["layout"].get(k) for k in layout} == layout, backup
        by_shard.setdefault(backup["shard"], []).append(backup)
    assert sorted(by_shard) == list(range(layout["shard_number"]))
    for shard, backups in by_shard.items():
        assert len({b["peer"] for b in backups}) == layout["replication_factor"], (shard, backups)
        assert len({b["points_count"] for b in backups}) == 1, f"the replicas of shard {shard} differ: {backups}"
    assert sum(backups[0]["points_count"] for backups in by_shard.values()) == indexed["before"]["count"]
    for host in lab.groups["qdrant"]:
        m = metrics(lab, host)
        assert m["querygpt_backup_last_run_success"] == 1, host
        for shard in qdrant.local_shards(host, collection):
            key = f'querygpt_backup_last_success_timestamp_seconds{{collection="{collection}",shard="{shard}"}}'
            assert m[key] > 0, (host, key)
        cron = lab.ssh(host, "cat /etc/cron.d/querygpt-backup").stdout
        assert "querygpt-backup --log-format journal backup" in cron


def test_drill_lose_every_collection_and_a_peers_backup_program_and_restore_everything(
        lab: Lab, qdrant: Qdrant, indexed: dict[str, Any]) -> None:
    """Every collection deleted and one peer's backup program gone: the runbook, first in
    --check as an operator would run it (it says what a real run does and changes nothing),
    creates each collection from the layout recorded with its backups and restores it; a
    second --check is then clean."""
    host = lab.groups["qdrant"][-1]
    assert not backup_now(lab)
    collections = qdrant.collections()
    fingerprints = {c: qdrant.fingerprint(c) for c in collections}
    layouts = {c: qdrant.layout(c) for c in collections}
    assert fingerprints[indexed["collection"]] == indexed["before"]
    assert fingerprints[indexed["empty"]]["count"] == 0 and layouts[indexed["empty"]] == indexed["layout"]
    # One peer loses what the backup role put there; the cluster loses every collection.
    wipe = lab.ssh(host, f"sudo rm -rf {PROGRAM} /etc/querygpt /var/lib/querygpt-backup /etc/cron.d/querygpt-backup "
                   f"{METRICS}", timeout=120)
    assert wipe.returncode == 0, wipe.stderr
    for collection in collections:
        qdrant.call("DELETE", f"/collections/{collection}")
    assert qdrant.collections() == []
    drilled = indexed["collection"]
    dry = playbook("playbooks/runbooks/restore_qdrant.yml", "-e", f"restore_collection={drilled}", "--check")
    assert dry.returncode == 0, dry.stdout[-3000:]
    assert "a real run creates it from the layout recorded" in " ".join(dry.stdout.split()), dry.stdout[-3000:]
    assert qdrant.collections() == []
    for collection in collections:  # nothing created by hand: the runbook creates each from its backups
        run = restore(lab, collection)
        assert run.returncode == 0, f"{collection}: {run.stdout[-3000:]}"
        assert task_status(run, CREATE_TASK) == "changed", collection
        assert f"Created {collection} from the layout recorded with" in run.stdout, run.stdout[-3000:]
    assert lab.ssh(host, f"test -x {PROGRAM} && sudo test -f /etc/querygpt/backup.json").returncode == 0, \
        "the runbook installs the backup program where it is missing"
    assert qdrant.collections() == collections
    assert {c: qdrant.layout(c) for c in collections} == layouts
    assert {c: qdrant.fingerprint(c) for c in collections} == fingerprints
    # --check on a restored collection: clean, nothing changed
    dry = playbook("playbooks/runbooks/restore_qdrant.yml", "-e", f"restore_collection={drilled}", "--check")
    assert dry.returncode == 0, dry.stdout[-3000:]
    changed = changed_counts(dry.stdout)
    assert set(changed) >= set(lab.groups["qdrant"]) and set(changed.values()) == {0}, changed
    assert qdrant.fingerprint(drilled) == indexed["before"]


def test_reindex_from_documents_rebuilds_a_collection_lost_with_its_snapshots(
        lab: Lab, qdrant: Qdrant, tmp_path_factory: pytest.TempPathFactory, lab_token: str) -> None:
    """The drill of playbooks/runbooks/reindex_from_documents.yml: Qdrant loses a collection
    that has no backup at all; the runbook rebuilds it from the originals in the documents
    bucket, with the same points and the same answers to fixed queries."""
    collection = f"reindex_{uuid.uuid4().hex[:8]}"
    upload_schema(lab, collection, tmp_path_factory, lab_token)
    before = qdrant.fingerprint(collection)
    points = qdrant.call("POST", f"/collections/{collection}/points/scroll",
                         {"limit": 100, "with_payload": True, "with_vector": False})["result"]["points"]
    originals = {(p["payload"]["s3_key"], p["payload"]["s3_version_id"], p["payload"]["sha256"]) for p in points}
    assert len(originals) == 1, "every point records the one original it came from"
    key, _, _ = originals.pop()
    assert key.endswith(f"/{collection}/backup-schema.pdf")
    assert collection not in {b["collection"] for b in list_backups(lab)}, "this drill has no snapshot to fall back on"

    qdrant.call("DELETE", f"/collections/{collection}")
    assert collection not in qdrant.collections()
    run = playbook("playbooks/runbooks/reindex_from_documents.yml", "-e", f"reindex_collection={collection}")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert qdrant.fingerprint(collection) == before
    # a second run finds the same objects and rewrites the same points
    again = playbook("playbooks/runbooks/reindex_from_documents.yml", "-e", f"reindex_collection={collection}")
    assert again.returncode == 0 and qdrant.fingerprint(collection) == before
    qdrant.call("DELETE", f"/collections/{collection}")
