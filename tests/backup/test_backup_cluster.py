"""The backup program in Qdrant's distributed mode, against a real cluster of three packaged
stand-in peers (lab/standins/qdrant, a LAB TEST FIXTURE, not Qdrant) and moto's S3 server.

Each test makes its own sharded, replicated collection (3 shards, 2 replicas each, so
every peer holds two shards and every shard lives on two peers) and its own S3 prefix,
and runs the program once per peer, as cron does on every qdrant host. Plus the pure
rules (key parsing, per-shard retention) without a cluster.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator

import pytest
from qdrant_client import models

from backup_testkit import BUCKET, CREDENTIALS, load_file

NOW = datetime(2026, 11, 26, 2, 17, 0, tzinfo=timezone.utc)
STAMP = f"{NOW:%Y%m%dT%H%M%SZ}"
SHARDS, REPLICAS, POINTS = 3, 2, 40
TRANSFER_DELAY_MS = 3000  # long enough to catch a replica Partial during a copy

pytestmark = pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")


# tests/standins/qdrant_cluster_testkit.py, by path (not on this directory's sys.path).
kit = sys.modules.get("qdrant_cluster_testkit") or load_file(
    "qdrant_cluster_testkit", Path(__file__).resolve().parents[1] / "standins" / "qdrant_cluster_testkit.py")


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Any]]:
    executable = kit.build_executable(tmp_path_factory.mktemp("package"))
    root = tmp_path_factory.mktemp("cluster")
    first = kit.Peer(executable, root / "a", transfer_delay_ms=TRANSFER_DELAY_MS).start()
    started = [first]
    try:
        for name in ("b", "c"):
            started.append(kit.Peer(executable, root / name, transfer_delay_ms=TRANSFER_DELAY_MS)
                           .start(bootstrap=first))
        kit.wait_for(lambda: len(first.client().cluster_status().peers) == 3, 10, "three peers")
        yield started
    finally:
        kit.stop_all(started)


def vector(i: int) -> list[float]:
    return [float((i * 7 + k * 3) % 11 + 1) for k in range(kit.DIM)]


@pytest.fixture()
def collection(peers: list[Any]) -> str:
    """A fresh 3-shard, 2-replica collection of POINTS points, every replica Active."""
    name = f"docs_{uuid.uuid4().hex[:8]}"
    client = peers[0].client()
    assert client.create_collection(name, vectors_config=models.VectorParams(size=kit.DIM, distance=models.Distance.COSINE),
                                    shard_number=SHARDS, replication_factor=REPLICAS, write_consistency_factor=1)
    kit.wait_for(lambda: kit.all_active(peers[1], name, REPLICAS), 15, "every replica Active")
    client.upsert(name, [models.PointStruct(id=i, vector=vector(i), payload={"n": i}) for i in range(POINTS)],
                  wait=True)
    return name


@pytest.fixture()
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}/qdrant"


@pytest.fixture()
def configs(qb: ModuleType, peers: list[Any], s3_endpoint: str, tmp_path: Path, collection: str,
            prefix: str) -> list[Any]:
    """One config per peer, as the role writes on each qdrant host: its own Qdrant, state,
    metrics and lock; one bucket and prefix for all."""
    return [qb.Config.from_dict({
        "qdrant_url": peer.url, "qdrant_api_key": kit.KEY, "qdrant_snapshots_dir": str(peer.snapshots),
        "collections": [collection], "s3_bucket": BUCKET, "s3_prefix": prefix,
        "s3_endpoint_url": s3_endpoint, "s3_region": "us-east-1", **CREDENTIALS,
        "s3_max_attempts": 1, "s3_connect_timeout": 2,
        "textfile_dir": str(tmp_path / f"p{i}" / "textfile"), "state_dir": str(tmp_path / f"p{i}" / "state"),
        "lock_file": str(tmp_path / f"p{i}" / "backup.lock"), "restore_ready_timeout": 30,
    }) for i, peer in enumerate(peers)]


def keys(s3: Any, prefix: str) -> list[str]:
    listing = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix + "/")
    return sorted(o["Key"] for o in listing.get("Contents", []))


def metrics(config: Any) -> dict[str, float]:
    text = (Path(config.textfile_dir) / "querygpt_backup.prom").read_text()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line and not line.startswith("#")}


def write_config(config: Any, path: Path) -> str:
    path.write_text(json.dumps(dataclasses.asdict(config)))
    return str(path)


def holders(peers: list[Any], collection: str) -> dict[int, set[int]]:
    """shard id -> ids of the peers holding a replica."""
    return {s: set(r) for s, r in peers[0].replicas(collection).items()}


def shard_key(prefix: str, collection: str, shard: int, peer: int, stamp: str = STAMP) -> str:
    return f"{prefix}/{collection}/shards/{shard}/{stamp}-peer{peer}.snapshot"


# --------------------------------------------------------------------------- backups


def test_every_holder_backs_up_each_of_its_shards_with_shard_metadata(
        qb: ModuleType, peers: list[Any], s3: Any, configs: list[Any], collection: str, prefix: str,
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    by_id = {peer.peer_id: peer for peer in peers}
    layout = holders(peers, collection)
    assert sorted(layout) == list(range(SHARDS)) and all(len(p) == REPLICAS for p in layout.values())

    for config in configs:  # as if each host had backed up the collection whole before the switch
        state = Path(config.state_dir)
        state.mkdir(parents=True)
        (state / "state.json").write_text(json.dumps({"collections": {collection: {"last_success": 1.0, "bytes": 5}}}))
    for config in configs:
        assert qb.run_backup(config, now=NOW) == 0

    expected = {shard_key(prefix, collection, s, p) for s, ps in layout.items() for p in ps}
    assert set(keys(s3, prefix)) == expected and len(expected) == SHARDS * REPLICAS
    per_shard: dict[int, int] = {}
    for key in expected:
        obj = s3.get_object(Bucket=BUCKET, Key=key)
        body, meta = obj["Body"].read(), obj["Metadata"]
        shard, peer = int(key.split("/")[-2]), int(key.rsplit("peer", 1)[1].split(".")[0])
        assert meta["sha256"] == hashlib.sha256(body).hexdigest() and meta["size"] == str(len(body))
        assert (meta["collection"], meta["shard-id"], meta["peer-id"], meta["shard-count"]) == \
            (collection, str(shard), str(peer), str(SHARDS))
        assert meta["points-count"] == str(by_id[peer].local_counts(collection)[shard])
        assert per_shard.setdefault(shard, int(meta["points-count"])) == int(meta["points-count"])  # replicas agree
    assert sum(per_shard.values()) == POINTS
    for peer, config in zip(peers, configs):  # no shard snapshot left on any peer's disk
        local = peer.local_counts(collection)
        assert all(peer.client().list_shard_snapshots(collection, s) == [] for s in local)
        m = metrics(config)
        assert m["querygpt_backup_last_run_success"] == 1
        for s in local:
            assert m[f'querygpt_backup_last_success_timestamp_seconds{{collection="{collection}",shard="{s}"}}'] > 0
            assert m[f'querygpt_backup_failures_total{{collection="{collection}",shard="{s}"}}'] == 0
        # the whole-collection series of single-node days is gone: no stale BackupStale for it
        assert f'querygpt_backup_bytes{{collection="{collection}"}}' not in m

    path = write_config(configs[0], tmp_path / "c.json")
    capsys.readouterr()
    assert qb.main(["--config", path, "list", "--collection", collection, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {(b["shard"], b["peer"]) for b in listed} == {(s, p) for s, ps in layout.items() for p in ps}
    assert all(b["good"] and b["shard_count"] == SHARDS for b in listed)
    assert qb.main(["--config", path, "list", "--collection", collection, "--shard", "1", "--json"]) == 0
    assert {b["shard"] for b in json.loads(capsys.readouterr().out)} == {1}
    assert qb.main(["--config", path, "describe", "--collection", collection, "--shard", "2"]) == 0
    described = json.loads(capsys.readouterr().out)
    assert described["key"] == max(shard_key(prefix, collection, 2, p) for p in layout[2])  # newest, then key
    assert qb.main(["--config", path, "list"]) == 0
    table = capsys.readouterr().out
    assert "SHARD" in table.splitlines()[0] and "PEER" in table.splitlines()[0]
    # a file name alone names one backup per shard of that peer: ambiguous without --shard
    shared_peer = next(iter(layout[0] & layout[1]), None)
    if shared_peer is not None:
        name = f"{STAMP}-peer{shared_peer}.snapshot"
        assert qb.main(["--config", path, "describe", "--collection", collection, "--key", name]) == 1
        assert qb.main(["--config", path, "describe", "--collection", collection, "--key", name,
                        "--shard", "1"]) == 0
        assert json.loads(capsys.readouterr().out)["shard"] == 1


class Corrupting:
    """A raw stream that flips one byte of what Qdrant sends (a bad download)."""

    def __init__(self, raw: Any) -> None:
        self.raw, self.first = raw, True

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        if self.first and data:
            self.first = False
            return bytes([data[0] ^ 0xFF]) + data[1:]
        return data

    def close(self) -> None:
        self.raw.close()


def test_a_failed_shard_fails_the_run_keeps_its_last_good_copy_and_others_are_pruned(
        qb: ModuleType, peers: list[Any], s3: Any, configs: list[Any], collection: str, prefix: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    layout = holders(peers, collection)
    old = NOW - timedelta(days=20)
    for config in configs:
        assert qb.run_backup(config, now=old) == 0
    old_stamp = f"{old:%Y%m%dT%H%M%SZ}"
    assert len(keys(s3, prefix)) == SHARDS * REPLICAS

    victim = 0
    original = qb.Qdrant.open_snapshot

    def corrupt_victim(self: Any, name: str, snapshot: str, shard_id: int | None = None) -> Any:
        response = original(self, name, snapshot, shard_id)
        if shard_id == victim:
            response.raw = Corrupting(response.raw)
        return response

    monkeypatch.setattr(qb.Qdrant, "open_snapshot", corrupt_victim)
    codes = {peer.peer_id: qb.run_backup(config, now=NOW) for peer, config in zip(peers, configs)}

    assert codes == {p: (1 if p in layout[victim] else 0) for p in codes}
    expected = {shard_key(prefix, collection, victim, p, old_stamp) for p in layout[victim]}  # untouched
    expected |= {shard_key(prefix, collection, s, p) for s, ps in layout.items() if s != victim for p in ps}
    assert set(keys(s3, prefix)) == expected  # other shards pruned to today's; no bad upload left
    for peer, config in zip(peers, configs):
        m = metrics(config)
        failures = m.get(f'querygpt_backup_failures_total{{collection="{collection}",shard="{victim}"}}')
        assert failures == (1 if peer.peer_id in layout[victim] else None)
        assert m["querygpt_backup_last_run_success"] == (0 if peer.peer_id in layout[victim] else 1)
        for s in peer.local_counts(collection):
            assert peer.client().list_shard_snapshots(collection, s) == []
    # weeks later, every run failing: retention still leaves each shard its newest good copy
    later = NOW + timedelta(days=40)
    for s in range(SHARDS):
        qb.apply_retention(configs[0], s3, collection, later, s)
    left = [qb.parse_key(configs[0], k) for k in keys(s3, prefix)]
    assert sorted(p.shard_id for p in left) == list(range(SHARDS))
    assert next(p for p in left if p.shard_id == victim).taken_at == old


def test_a_replica_that_is_not_active_fails_that_shard_only(
        qb: ModuleType, peers: list[Any], s3: Any, configs: list[Any], collection: str, prefix: str) -> None:
    layout = holders(peers, collection)
    index = 2
    target = peers[index]
    target_id = target.peer_id
    shard = next(s for s, ps in layout.items() if target_id not in ps)
    source = min(layout[shard])
    assert peers[0].client().cluster_collection_update(collection, models.ReplicateShardOperation(
        replicate_shard=models.ReplicateShard(shard_id=shard, from_peer_id=source, to_peer_id=target_id)))
    assert target.replicas(collection)[shard][target_id] == "Partial"

    assert qb.run_backup(configs[index], now=NOW) == 1

    still = target.replicas(collection)[shard][target_id]
    assert still == "Partial", f"the copy finished during the run ({still}): the test proved nothing"
    assert set(keys(s3, prefix)) == {shard_key(prefix, collection, s, target_id)
                                     for s, ps in layout.items() if target_id in ps}
    m = metrics(configs[index])
    assert m[f'querygpt_backup_failures_total{{collection="{collection}",shard="{shard}"}}'] == 1
    assert m["querygpt_backup_last_run_success"] == 0
    kit.wait_for(lambda: target.replicas(collection)[shard][target_id] == "Active", 20, "the copy done")


# --------------------------------------------------------------------------- restore


def test_restore_of_one_shard_brings_its_points_back_and_refuses_a_foreign_shard(
        qb: ModuleType, peers: list[Any], s3: Any, configs: list[Any], collection: str, prefix: str,
        tmp_path: Path) -> None:
    layout = holders(peers, collection)
    for config in configs:
        assert qb.run_backup(config, now=NOW) == 0
    peer, config = peers[0], configs[0]
    path = write_config(config, tmp_path / "c.json")
    before = {s: next(p for p in peers if p.peer_id in ps).local_counts(collection)[s] for s, ps in layout.items()}
    query = [1.0, 2.0, 3.0, 4.0]
    top = [(p.id, round(p.score, 6)) for p in peer.client().query_points(collection, query=query, limit=7).points]
    peer.client().delete(collection, points_selector=models.PointIdsList(points=list(range(POINTS))), wait=True)
    assert peer.client().count(collection).count == 0

    local = sorted(peer.local_counts(collection))
    foreign = next(s for s in range(SHARDS) if s not in local)
    assert qb.main(["--config", path, "restore", "--collection", collection, "--shard", str(foreign)]) == 4
    assert qb.main(["--config", path, "restore", "--collection", collection]) == 4  # not every shard local
    with pytest.raises(qb.ShardNotLocal, match=f"shard {foreign} on peer"):
        qb.run_restore(config, collection, shard_id=foreign)
    # a corrupted copy is refused as on a single node, and nothing is restored
    shard = local[0]
    corrupt = shard_key(prefix, collection, shard, peer.peer_id)
    original = s3.get_object(Bucket=BUCKET, Key=corrupt)
    body = bytearray(original["Body"].read())
    body[len(body) // 2] ^= 0xFF
    s3.put_object(Bucket=BUCKET, Key=corrupt, Body=bytes(body), Metadata=original["Metadata"])
    assert qb.main(["--config", path, "restore", "--collection", collection, "--shard", str(shard),
                    "--key", corrupt]) == 3
    assert peer.client().count(collection).count == 0
    assert not list((peer.snapshots / "querygpt-restore").glob("*"))

    good = shard_key(prefix, collection, shard, next(p for p in layout[shard] if p != peer.peer_id))
    result = qb.run_restore(config, collection, key=good)  # the shard comes from the key
    assert [(r["shard"], r["key"], r["restored_points"]) for r in result["shards"]] == [(shard, good, before[shard])]
    assert result["mode"] == "cluster" and result["peer"] == peer.peer_id
    assert set(result["seconds"]) == {"select", "download", "qdrant_recover", "qdrant_ready", "total"}
    assert peer.client().count(collection).count == before[shard]
    for other in peers:  # every replica of the shard holds the points again (re-synced from this one)
        if other.peer_id in layout[shard]:
            assert other.local_counts(collection)[shard] == before[shard]
    # the rest, each shard on a peer holding it (what the runbook does)
    for s, ps in layout.items():
        if s != shard:
            holder = next(i for i, p in enumerate(peers) if p.peer_id in ps)
            restored = qb.run_restore(configs[holder], collection, shard_id=s)
            assert restored["shards"][0]["restored_points"] == before[s]
    assert peers[1].client().count(collection).count == POINTS
    assert [(p.id, round(p.score, 6)) for p in peers[2].client().query_points(
        collection, query=query, limit=7).points] == top


def test_restore_refuses_another_shard_count_and_a_single_node_backup(
        qb: ModuleType, peers: list[Any], s3: Any, configs: list[Any], collection: str, prefix: str) -> None:
    assert qb.run_backup(configs[0], now=NOW) == 0
    shard = min(peers[0].local_counts(collection))
    key = shard_key(prefix, collection, shard, peers[0].peer_id)
    meta = s3.head_object(Bucket=BUCKET, Key=key)["Metadata"]
    s3.copy_object(Bucket=BUCKET, Key=key, CopySource={"Bucket": BUCKET, "Key": key},
                   Metadata=dict(meta, **{"shard-count": "4"}), MetadataDirective="REPLACE")
    with pytest.raises(qb.RestoreRefused, match="with 4 shards"):
        qb.run_restore(configs[0], collection, shard_id=shard)
    whole = f"{prefix}/{collection}/{STAMP}.snapshot"
    s3.put_object(Bucket=BUCKET, Key=whole, Body=b"x", Metadata={"sha256": "a" * 64, "size": "1"})
    with pytest.raises(qb.BackupError, match="whole-collection"):
        qb.run_restore(configs[0], collection, key=whole)


# --------------------------------------------------------------------------- the collection's layout

# none of them what a bare PUT gets (shard_number: one per peer, replication and acks 1, any distance)
LAID_OUT = {"vectors": {"size": kit.DIM, "distance": "Dot"}, "shard_number": 4, "replication_factor": 2,
            "write_consistency_factor": 2}


def params(peer: Any, collection: str) -> dict[str, Any]:
    """The collection's layout as this peer reports it (GET /collections/{c} config.params)."""
    got = peer.http("GET", f"/collections/{collection}").json()["result"]["config"]["params"]
    return {k: got[k] for k in LAID_OUT}


def exists(peer: Any, collection: str) -> bool:
    return bool(peer.http("GET", f"/collections/{collection}/exists").json()["result"]["exists"])


@pytest.fixture()
def laid_out(qb: ModuleType, peers: list[Any], configs: list[Any]) -> Iterator[str]:
    """A collection of POINTS points laid out unlike any default, backed up by every peer."""
    name = f"laid_{uuid.uuid4().hex[:8]}"
    assert peers[0].http("PUT", f"/collections/{name}", json=LAID_OUT).json()["result"] is True
    kit.wait_for(lambda: kit.all_active(peers[1], name, LAID_OUT["replication_factor"]), 15, "every replica Active")
    peers[0].client().upsert(name, [models.PointStruct(id=i, vector=vector(i), payload={"n": i})
                                    for i in range(POINTS)], wait=True)
    for config in configs:
        assert qb.run_backup(config, only=[name], now=NOW) == 0
    yield name
    peers[0].http("DELETE", f"/collections/{name}")


def rewrite_layouts(s3: Any, prefix: str, collection: str, change: dict[str, Any] | None,
                    only: str = "") -> None:
    """Change the layout recorded with the collection's backups (or only one), or drop it (None)."""
    for key in keys(s3, f"{prefix}/{collection}"):
        if only and key != only:
            continue
        meta = s3.head_object(Bucket=BUCKET, Key=key)["Metadata"]
        layout = json.loads(meta.pop("collection-layout"))
        if change is not None:
            meta["collection-layout"] = json.dumps(dict(layout, **change), separators=(",", ":"))
        s3.copy_object(Bucket=BUCKET, Key=key, CopySource={"Bucket": BUCKET, "Key": key}, Metadata=meta,
                       MetadataDirective="REPLACE")


def test_every_shard_backup_records_the_collection_layout(
        qb: ModuleType, s3: Any, configs: list[Any], laid_out: str, prefix: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    objects = keys(s3, f"{prefix}/{laid_out}")
    assert len(objects) == LAID_OUT["shard_number"] * LAID_OUT["replication_factor"]
    for key in objects:
        meta = s3.head_object(Bucket=BUCKET, Key=key)["Metadata"]
        assert json.loads(meta["collection-layout"]) == LAID_OUT, key
        assert meta["shard-count"] == str(LAID_OUT["shard_number"])
        assert qb.metadata_bytes(meta) < 1024
    path = write_config(configs[0], tmp_path / "c.json")
    capsys.readouterr()
    assert qb.main(["--config", path, "list", "--collection", laid_out, "--json"]) == 0
    assert [b["layout"] for b in json.loads(capsys.readouterr().out)] == [LAID_OUT] * len(objects)
    assert qb.main(["--config", path, "describe", "--collection", laid_out, "--shard", "3"]) == 0
    assert json.loads(capsys.readouterr().out)["layout"] == LAID_OUT


def test_create_collection_recreates_a_lost_collection_as_recorded_and_its_shards_restore_into_it(
        qb: ModuleType, peers: list[Any], s3: Any, configs: list[Any], laid_out: str, prefix: str,
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert params(peers[0], laid_out) == LAID_OUT
    recorded = {b.shard_id: b.points_count for b in qb.list_backups(configs[0], qb.s3_client(configs[0]), laid_out)}
    assert sum(recorded.values()) == POINTS
    assert peers[0].http("DELETE", f"/collections/{laid_out}").json()["result"] is True
    kit.wait_for(lambda: not any(exists(p, laid_out) for p in peers), 10, "the collection gone everywhere")

    path = write_config(configs[2], tmp_path / "c.json")  # any peer will do: the runbook uses its first host
    capsys.readouterr()
    assert qb.main(["--config", path, "create-collection", "--collection", laid_out]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert result["created"] is True and result["layout"] == LAID_OUT and result["peers"] == 3
    assert result["key"] == max(keys(s3, f"{prefix}/{laid_out}"))  # the newest good one (by time, then key)
    assert f"creating it from the layout recorded with {result['key']}" in err
    for peer in peers:  # every peer has it, laid out as before, every replica Active
        assert params(peer, laid_out) == LAID_OUT
        assert kit.all_active(peer, laid_out, LAID_OUT["replication_factor"])
    assert sorted(peers[0].replicas(laid_out)) == list(range(LAID_OUT["shard_number"]))

    # what the runbook does next: each shard restored on a peer holding it
    for shard, holding in holders(peers, laid_out).items():
        holder = next(i for i, p in enumerate(peers) if p.peer_id in holding)
        restored = qb.run_restore(configs[holder], laid_out, shard_id=shard)
        assert restored["shards"][0]["restored_points"] == recorded[shard]
    assert peers[1].client().count(laid_out).count == POINTS

    # a second run finds it and changes nothing
    assert qb.main(["--config", path, "create-collection", "--collection", laid_out]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == {"collection": laid_out, "created": False}
    assert "exists: nothing created" in err
    assert peers[1].client().count(laid_out).count == POINTS and params(peers[1], laid_out) == LAID_OUT


def test_create_collection_leaves_an_existing_collection_alone_without_reading_s3(
        qb: ModuleType, peers: list[Any], configs: list[Any], collection: str) -> None:
    # no backup of it anywhere, and S3 unreachable: an existing collection needs neither
    dead = dataclasses.replace(configs[0], s3_endpoint_url="http://127.0.0.1:9")
    assert qb.run_create_collection(dead, collection) == {"collection": collection, "created": False}
    assert params(peers[1], collection)["shard_number"] == SHARDS
    assert peers[1].client().count(collection).count == POINTS


def test_create_collection_without_any_backup_of_the_collection_says_so(
        qb: ModuleType, peers: list[Any], configs: list[Any]) -> None:
    missing = f"gone_{uuid.uuid4().hex[:8]}"
    with pytest.raises(qb.BackupError, match=f"there is no good shard backup of collection {missing} under s3://"):
        qb.run_create_collection(configs[0], missing)
    assert not exists(peers[0], missing)


@pytest.mark.parametrize(("change", "code", "says"), [
    ({"replication_factor": 4}, 3, ["replication_factor 4, and the cluster has 3 peer(s)", "Nothing was created"]),
    ({"sharding_method": "custom"}, 3, ["sharding_method 'custom'", "shard keys by hand"]),
    ({"shard_number": 0}, 3, ["incomplete or invalid"]),
    (None, 1, ["none of the 8 good shard backups", "records its layout", "nothing was created",
               "curl -X PUT", '"shard_number": 4']),
], ids=["replication-factor-above-the-peers", "custom-sharding", "invalid", "no-layout-recorded"])
def test_create_collection_refuses_a_layout_it_cannot_create_as_recorded(
        qb: ModuleType, peers: list[Any], s3: Any, configs: list[Any], laid_out: str, prefix: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], change: dict[str, Any] | None, code: int, says: list[str]) -> None:
    rewrite_layouts(s3, prefix, laid_out, change)
    assert peers[0].http("DELETE", f"/collections/{laid_out}").json()["result"] is True
    path = write_config(configs[0], tmp_path / "c.json")
    capsys.readouterr()
    assert qb.main(["--config", path, "create-collection", "--collection", laid_out]) == code
    err = capsys.readouterr().err
    for text in says:
        assert text in err
    assert not any(exists(p, laid_out) for p in peers)  # never created, not even with fewer replicas


def test_create_collection_takes_the_layout_of_the_given_backup(
        qb: ModuleType, peers: list[Any], s3: Any, configs: list[Any], laid_out: str, prefix: str) -> None:
    chosen = min(keys(s3, f"{prefix}/{laid_out}"))
    rewrite_layouts(s3, prefix, laid_out, {"replication_factor": 4})
    rewrite_layouts(s3, prefix, laid_out, {"replication_factor": 1}, only=chosen)
    assert peers[0].http("DELETE", f"/collections/{laid_out}").json()["result"] is True
    with pytest.raises(qb.RestoreRefused, match="replication_factor 4"):  # the newest one's
        qb.run_create_collection(configs[0], laid_out)
    assert not exists(peers[0], laid_out)

    name = chosen.rsplit("/", 1)[1]  # a file name names one backup per shard of its peer: --shard says which
    result = qb.run_create_collection(configs[0], laid_out, key=name, shard_id=int(chosen.split("/")[-2]))
    assert result["created"] is True and result["key"] == chosen
    assert params(peers[2], laid_out) == dict(LAID_OUT, replication_factor=1)
    assert kit.all_active(peers[2], laid_out, 1)


def test_create_collection_refuses_a_layout_the_newest_backups_would_not_restore_into(
        qb: ModuleType, peers: list[Any], s3: Any, configs: list[Any], laid_out: str, prefix: str) -> None:
    # the newest backup recording a layout says 4 shards, the newest copy of shard 1 was taken with 5
    newest_of_1 = max(k for k in keys(s3, f"{prefix}/{laid_out}") if "/shards/1/" in k)
    meta = s3.head_object(Bucket=BUCKET, Key=newest_of_1)["Metadata"]
    meta.pop("collection-layout")
    meta["shard-count"] = "5"
    s3.copy_object(Bucket=BUCKET, Key=newest_of_1, CopySource={"Bucket": BUCKET, "Key": newest_of_1},
                   Metadata=meta, MetadataDirective="REPLACE")
    assert peers[0].http("DELETE", f"/collections/{laid_out}").json()["result"] is True
    with pytest.raises(qb.RestoreRefused, match=r"shard_number 4, but the newest backups of shard\(s\) \[1\]"):
        qb.run_create_collection(configs[0], laid_out)
    assert not exists(peers[0], laid_out)


# --------------------------------------------------------------------------- pure rules


def test_keys_are_parsed_strictly(qb: ModuleType) -> None:
    config = qb.Config.from_dict({"qdrant_url": "http://q", "qdrant_api_key": "k", "s3_bucket": "b",
                                  "s3_prefix": "prod/qdrant"})
    whole = qb.parse_key(config, f"prod/qdrant/docs/{STAMP}.snapshot")
    assert (whole.collection, whole.shard_id, whole.peer_id, whole.taken_at) == ("docs", None, None, NOW)
    shard = qb.parse_key(config, f"prod/qdrant/docs/shards/12/{STAMP}-peer4242.snapshot")
    assert (shard.collection, shard.shard_id, shard.peer_id, shard.taken_at) == ("docs", 12, 4242, NOW)
    assert qb.shard_backup_key(config, "docs", 12, 4242, NOW) == f"prod/qdrant/docs/shards/12/{STAMP}-peer4242.snapshot"
    for foreign in (f"prod/qdrant/docs/shards/12/{STAMP}.snapshot",  # no peer
                    f"prod/qdrant/docs/shards/012/{STAMP}-peer1.snapshot",  # not canonical
                    f"prod/qdrant/docs/shards/x/{STAMP}-peer1.snapshot",
                    f"prod/qdrant/docs/shards/1/{STAMP}-peer0.snapshot",
                    f"prod/qdrant/docs/shards/1/{STAMP}-peer1.snapshot.bak",
                    f"prod/qdrant/docs/other/1/{STAMP}-peer1.snapshot",
                    f"prod/qdrant/docs/shards/1/extra/{STAMP}-peer1.snapshot",
                    f"prod/qdrant/docs/{STAMP}-peer1.snapshot",
                    f"prod/qdrant//{STAMP}.snapshot",
                    f"other/qdrant/docs/{STAMP}.snapshot",
                    "prod/qdrant/docs/notes.txt"):
        assert qb.parse_key(config, foreign) is None, foreign


def test_retention_keeps_the_newest_good_copy_of_every_shard(qb: ModuleType) -> None:
    def item(shard: int | None, peer: int | None, days: float, good: bool = True) -> Any:
        taken = NOW - timedelta(days=days)
        return qb.Backup(key=f"p/c/{shard}/{peer}/{days}", collection="c", taken_at=taken, size=10,
                         sha256="a" * 64 if good else "", meta_size=10 if good else -1,
                         shard_id=shard, peer_id=peer)

    stale_shard = [item(0, 1, 30), item(0, 2, 30), item(0, 2, 9, good=False)]  # shard 0: failing since
    busy_shard = [item(1, 1, 20), item(1, 3, 10), item(1, 3, 1), item(1, 1, 0)]  # shard 1: fresh uploads
    whole = [item(None, None, 40)]  # a single-node backup of the same collection
    doomed = {b.key for b in qb.retention_deletions(stale_shard + busy_shard + whole, NOW, 7)}
    # shard 0 keeps one good copy (the newest, by time then key: peer 2's), whatever shard 1 did;
    # the whole-collection backup is another unit and keeps its own
    assert doomed == {stale_shard[0].key, stale_shard[2].key, busy_shard[0].key, busy_shard[1].key}
