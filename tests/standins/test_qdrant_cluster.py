"""Distributed mode of the Qdrant stand-in (lab/standins/qdrant, a LAB TEST FIXTURE, not Qdrant).

Three packaged stand-in processes on loopback form a cluster the way the project's peers
will (first peer ``--uri``, the others ``--bootstrap``; one of them through upstream's
environment variables instead), and the official qdrant-client drives them over REST
through the scenario the project's tooling needs: a sharded, replicated collection used
through any peer, a peer killed (SIGKILL) and restarted (its Dead replicas recover), a
dead peer removed with force and its shards re-replicated to a new peer, shard snapshots
backed up and restored, write_consistency_factor and replication_factor above the peer
count behaving as upstream.

The tests share one cluster and run in file order (each step builds on the previous one).
"""

from __future__ import annotations

import io
import json
import sys
import tarfile
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from qdrant_client import models
from qdrant_client.http.exceptions import UnexpectedResponse

from qdrant_cluster_testkit import DIM, KEY, REPO, Peer, build_executable, stop_all, wait_for
from qdrant_cluster_testkit import all_active as _all_active

pytestmark = pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")


@pytest.fixture(scope="module")
def executable(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_executable(tmp_path_factory.mktemp("package"))


@pytest.fixture(scope="module")
def peers(executable: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Peer]]:
    """A, B, C: A bootstraps the cluster, B joins with flags, C with environment variables.
    Tests append D. All are stopped at the end."""
    root = tmp_path_factory.mktemp("cluster")
    first = Peer(executable, root / "a").start()
    started = [first, Peer(executable, root / "b").start(bootstrap=first),
               Peer(executable, root / "c", via_env=True).start(bootstrap=first)]
    # A peer that just joined learns the others are live from their heartbeats (every 250 ms):
    # until then it may name another leader, as upstream's Raft does during a join.
    lowest = min(peer.peer_id for peer in started)
    wait_for(lambda: all(peer.client().cluster_status().raft_info.leader == lowest for peer in started),
             timeout=10, what="every peer naming the lowest peer id the leader")
    yield started
    stop_all(started)


def _vector(i: int) -> list[float]:
    return [float((i * 7 + k * 3) % 11 + 1) for k in range(DIM)]


def _points(ids: range) -> list[models.PointStruct]:
    return [models.PointStruct(id=i, vector=_vector(i), payload={"n": i}) for i in ids]


def test_peers_form_one_cluster_with_persisted_ids(peers: list[Peer]) -> None:
    ids = [peer.peer_id for peer in peers]
    assert len(set(ids)) == 3 and all(1 <= i <= 2**53 for i in ids)
    for peer, peer_id in zip(peers, ids):
        status = peer.client().cluster_status()
        assert status.status == "enabled" and status.peer_id == peer_id
        assert {int(p): info.uri for p, info in status.peers.items()} == {i: p.uri for i, p in zip(ids, peers)}
        assert status.raft_info.leader == min(ids)
        assert status.raft_info.role == ("Leader" if peer_id == min(ids) else "Follower")
        assert status.raft_info.is_voter and status.raft_info.pending_operations == 0
        assert status.consensus_thread_status.consensus_thread_status == "working"
        raft_state = json.loads((peer.storage / "raft_state.json").read_text())
        assert raft_state["this_peer_id"] == peer_id  # where a runbook finds a peer's id
    body = peers[0].http("GET", "/cluster").json()
    assert set(body) == {"result", "status", "time"} and body["status"] == "ok"
    assert set(body["result"]) == {"status", "peer_id", "peers", "raft_info", "consensus_thread_status",
                                   "message_send_failures"}


def test_sharded_replicated_collection_answers_the_same_through_every_peer(peers: list[Peer]) -> None:
    client = peers[0].client()
    assert client.create_collection("docs", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE),
                                    shard_number=3, replication_factor=2, write_consistency_factor=1)
    assert client.create_collection("strict", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.DOT),
                                    shard_number=3, replication_factor=2, write_consistency_factor=2)
    params = peers[1].client().get_collection("docs").config.params
    assert (params.shard_number, params.replication_factor, params.write_consistency_factor) == (3, 2, 1)
    for peer in peers:
        shards = peer.replicas("docs")
        assert sorted(shards) == [0, 1, 2]
        assert all(len(replicas) == 2 for replicas in shards.values()), shards  # two distinct peers each
    peers[1].client().upsert("docs", _points(range(30)), wait=True)
    query = [1.0, 2.0, 3.0, 4.0]
    results = [[(p.id, round(p.score, 6)) for p in peer.client().query_points("docs", query=query, limit=7).points]
               for peer in peers]
    assert results[0] == results[1] == results[2] and len(results[0]) == 7
    assert all(peer.client().count("docs").count == 30 for peer in peers)
    assert peers[2].client().get_collection("docs").points_count == 30
    page = peers[0].client().scroll("docs", limit=12)
    assert [p.id for p in page[0]] == list(range(12)) and page[1] == 12
    assert [p.id for p in peers[2].client().retrieve("docs", [29, 3, 99])] == [29, 3]
    # every point is stored on exactly two peers
    assert sum(sum(peer.local_counts("docs").values()) for peer in peers) == 60


def _backend() -> Any:
    """The backend's vectorstore module, imported from the source tree."""
    sys.path.insert(0, str(REPO / "app" / "backend" / "src"))
    try:
        from querygpt import vectorstore
    finally:
        sys.path.remove(str(REPO / "app" / "backend" / "src"))
    return vectorstore


def test_the_backends_store_creates_collections_with_its_layout(peers: list[Peer]) -> None:
    # The backend's own code path (QUERYGPT_QDRANT_* -> CollectionLayout -> create_collection),
    # through a peer that is not the first. The package comes from the source tree.
    backend = _backend()
    CollectionLayout, VectorStore = backend.CollectionLayout, backend.VectorStore

    store = VectorStore.connect(peers[1].url, KEY, 20, layout=CollectionLayout(3, 2, 1))
    try:
        assert store.ensure_collection("backend_docs", DIM) is True
        assert store.ensure_collection("backend_docs", DIM) is False
    finally:
        store.close()
    params = peers[2].client().get_collection("backend_docs").config.params
    assert (params.shard_number, params.replication_factor, params.write_consistency_factor) == (3, 2, 1)
    wait_for(lambda: _all_active(peers[0], "backend_docs", 2), what="every replica of backend_docs Active")
    assert peers[0].client().delete_collection("backend_docs")


def _retries() -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("querygpt_qdrant_retries_total") or 0.0


def test_the_backends_store_survives_the_kill_of_the_peer_it_talks_to(peers: list[Peer]) -> None:
    # The backend over every peer (QUERYGPT_QDRANT_URLS), as deployed: kill -9 of the first
    # peer costs no operation, and the answers stay the same. The peer is restarted at the end
    # (its replicas recover) so the following tests still see the three peers.
    backend = _backend()
    doc = "00000000-0000-0000-0000-0000000000b1"

    def chunks(ids: range) -> list[Any]:
        return [backend.StoredChunk(document_id=doc, filename="schema.pdf", page=1, chunk=i, text=f"chunk {i}",
                                    vector=_vector(i), s3_key="documents/schema.pdf", s3_version_id=None,
                                    sha256="0" * 64) for i in ids]

    def search() -> list[tuple[int, float]]:
        return [(h.chunk, round(h.score, 6)) for h in store.search("pool_docs", [1.0, 2.0, 3.0, 4.0], 7)]

    store = backend.VectorStore.connect([p.url for p in peers], KEY, 20,
                                        layout=backend.CollectionLayout(3, 2, 1), cooldown=30)
    victim = peers[0]
    try:
        assert store.ensure_collection("pool_docs", DIM) is True
        wait_for(lambda: _all_active(peers[1], "pool_docs", 2), what="every replica of pool_docs Active")
        store.upsert("pool_docs", chunks(range(30)))
        before = search()
        assert len(before) == 7 and store.count_document("pool_docs", doc) == 30

        retries_before = _retries()
        victim.kill()
        # Every operation, whichever peer round-robin gives it, succeeds with the same answer;
        # the dead peer is tried once and then passed over while it cools down.
        for _ in range(6):
            assert search() == before
            assert store.count_document("pool_docs", doc) == 30
        store.upsert("pool_docs", chunks(range(30, 40)))
        assert store.count_document("pool_docs", doc) == 40
        store.delete_replaced("pool_docs", "documents/schema.pdf", doc, 30)
        assert store.count_document("pool_docs", doc) == 30
        assert search() == before
        assert store.collection_exists("pool_docs") and store.ensure_collection("pool_docs", DIM) is False
        first = store.peers[0]
        assert first.cooldown_until > 0  # found dead and cooling down
        assert _retries() == retries_before + 1  # tried once, then passed over
    finally:
        store.close()
        if victim.process is not None and victim.process.poll() is not None:
            victim.start()  # no --bootstrap: rejoins from its persisted peer list
    for collection in ("docs", "strict", "pool_docs"):
        assert wait_for(lambda c=collection: _all_active(victim, c, 2), 20, f"replicas of {collection} Active again")
    wait_for(lambda: victim.http("GET", "/readyz").status_code == 200, 5, "/readyz")
    assert victim.client().count("pool_docs").count == 30
    assert peers[1].client().delete_collection("pool_docs")
    assert wait_for(lambda: not victim.client().collection_exists("pool_docs"), 5, "pool_docs gone")


def test_replication_factor_above_the_peer_count_is_capped_like_upstream(peers: list[Peer]) -> None:
    client = peers[2].client()
    assert client.create_collection("wide", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE),
                                    replication_factor=5)
    params = client.get_collection("wide").config.params
    assert params.replication_factor == 5 and params.shard_number == 3  # default: one shard per peer
    assert all(len(r) == 3 for r in peers[0].replicas("wide").values())
    assert client.delete_collection("wide")
    assert not peers[0].client().collection_exists("wide")


def test_a_killed_peer_is_marked_dead_and_the_others_keep_serving(peers: list[Peer]) -> None:
    victim = peers[2]
    victim_id = victim.peer_id
    victim.kill()
    for peer in peers[:2]:
        assert len(peer.client().query_points("docs", query=[1.0, 0, 0, 0], limit=30).points) == 30
    peers[0].client().upsert("docs", _points(range(30, 60)), wait=True)
    assert peers[1].client().count("docs").count == 60
    shards = peers[1].replicas("docs")
    assert all(r[victim_id] == "Dead" for r in shards.values() if victim_id in r), shards
    assert all(s == "Active" for r in shards.values() for p, s in r.items() if p != victim_id)
    # The failures come from the peers' heartbeats (every 0.25 s here; upstream's consensus
    # messages), not from the write above: the status shows them within a few heartbeats.
    deadline = time.monotonic() + 10
    while victim.uri not in (failures := peers[0].client().cluster_status().message_send_failures):
        assert time.monotonic() < deadline, f"{victim.uri} not among the send failures after 10 s: {failures}"
        time.sleep(0.1)
    # write_consistency_factor=2 with one of two replicas unreachable: upstream's 500
    with pytest.raises(UnexpectedResponse) as failed:
        peers[0].client().upsert("strict", _points(range(10)), wait=True)
    assert failed.value.status_code == 500
    error = json.loads(failed.value.content)
    assert set(error) == {"status", "time"}
    assert error["status"]["error"].startswith(f"Service internal error: Failed to connect to {victim.uri}")


def test_a_restarted_peer_recovers_its_dead_replicas(peers: list[Peer]) -> None:
    victim = peers[2]
    victim.start()  # no --bootstrap: rejoins from its persisted peer list
    assert wait_for(lambda: _all_active(victim, "docs", 2), 20, "replicas Active again")
    wait_for(lambda: victim.http("GET", "/readyz").status_code == 200, 5, "/readyz")
    assert victim.client().count("docs").count == 60
    victim_id = victim.peer_id
    counts = victim.local_counts("docs")
    for shard_id, count in counts.items():
        holder = next(p for p in peers[:2] if shard_id in p.local_counts("docs"))
        assert holder.local_counts("docs")[shard_id] == count
    assert victim.client().cluster_status().peer_id == victim_id


def test_a_dead_peer_is_removed_and_its_shards_replicated_to_a_new_peer(peers: list[Peer], executable: Path) -> None:
    dead = peers[2]
    dead_id = dead.peer_id
    dead.kill()
    with pytest.raises(UnexpectedResponse) as refused:
        peers[0].client().remove_peer(dead_id)
    assert refused.value.status_code == 400
    assert json.loads(refused.value.content)["status"]["error"] == \
        f"Bad request: Cannot remove peer {dead_id} as there are shards on it"
    assert peers[1].client().remove_peer(dead_id, force=True)
    assert dead_id not in {int(p) for p in peers[0].client().cluster_status().peers}
    shards = peers[0].replicas("docs")
    assert all(dead_id not in r for r in shards.values())
    newcomer = Peer(executable, dead.workdir.parent / "d").start(bootstrap=peers[1])
    peers.append(newcomer)
    new_id = newcomer.peer_id
    assert len(peers[0].client().cluster_status().peers) == 3
    client = peers[0].client()
    single = {shard_id: next(iter(r)) for shard_id, r in shards.items() if len(r) == 1}
    assert single
    for shard_id, source in single.items():
        assert client.cluster_collection_update("docs", models.ReplicateShardOperation(
            replicate_shard=models.ReplicateShard(shard_id=shard_id, from_peer_id=source, to_peer_id=new_id)))
    transfers = client.collection_cluster_info("docs").shard_transfers  # the copy waits 2 s here
    assert {(t.shard_id, t.from_, t.to, t.sync) for t in transfers} == {(s, f, new_id, True) for s, f in single.items()}
    assert newcomer.replicas("docs")[next(iter(single))][new_id] == "Partial"
    assert wait_for(lambda: _all_active(newcomer, "docs", 2), 15, "new replicas Active")
    assert sorted(newcomer.local_counts("docs")) == sorted(single)
    assert sum(sum(p.local_counts("docs").values()) for p in (peers[0], peers[1], newcomer)) == 120
    assert newcomer.client().count("docs").count == 60


def _tar_document(data: bytes) -> dict[str, Any]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.extractfile("standin-snapshot.json")
        assert member is not None
        return dict(json.loads(member.read()))


def test_shard_snapshots_back_up_and_restore_one_shard(peers: list[Peer]) -> None:
    peer = peers[0]
    client = peer.client()
    shard_id = min(peer.local_counts("docs"))
    created = client.create_shard_snapshot("docs", shard_id)
    assert created is not None and created.name.startswith(f"docs-shard-{shard_id}-")
    assert [s.name for s in client.list_shard_snapshots("docs", shard_id)] == [created.name]
    download = peer.http("GET", f"/collections/docs/shards/{shard_id}/snapshots/{created.name}")
    assert download.status_code == 200
    ids = sorted(p["id"] for p in _tar_document(download.content)["collection"]["points"])
    assert len(ids) == peer.local_counts("docs")[shard_id]
    client.set_payload("docs", {"changed": True}, points=ids, wait=True)
    upload = peer.http("POST", f"/collections/docs/shards/{shard_id}/snapshots/upload",
                       params={"priority": "snapshot", "checksum": created.checksum},
                       files={"snapshot": (created.name, download.content)})
    assert upload.status_code == 200, upload.text
    # priority snapshot: the other replica turns Dead and recovers from the restored one
    assert wait_for(lambda: _all_active(peers[1], "docs", 2), 15, "replicas Active after the restore")
    for reader in (peers[1], peers[3]):
        assert all("changed" not in (p.payload or {}) for p in reader.client().retrieve("docs", ids))
    client.set_payload("docs", {"changed": True}, points=ids[:1], wait=True)
    # As upstream: a shard's recover reads a local snapshot by its bare name, from the shard's
    # own directory; a file:// URL (which the whole-collection recover accepts) is refused.
    as_url = (peer.snapshots / "docs" / "shards" / str(shard_id) / created.name).as_uri()
    refused = peer.http("PUT", f"/collections/docs/shards/{shard_id}/snapshots/recover",
                        json={"location": as_url, "priority": "snapshot"})
    assert refused.status_code == 400 and "URLs with file scheme are not supported" in refused.text, refused.text
    for elsewhere in (f"../{shard_id}/{created.name}", "missing.snapshot"):
        missing = peer.http("PUT", f"/collections/docs/shards/{shard_id}/snapshots/recover",
                            json={"location": elsewhere, "priority": "snapshot"})
        assert missing.status_code == 404, (elsewhere, missing.text)
    assert client.recover_shard_snapshot("docs", shard_id, location=created.name, checksum=created.checksum)
    assert wait_for(lambda: _all_active(peers[1], "docs", 2), 15, "replicas Active after the second restore")
    assert "changed" not in (peers[1].client().retrieve("docs", ids[:1])[0].payload or {})
    assert client.delete_shard_snapshot("docs", shard_id, created.name)
    assert client.list_shard_snapshots("docs", shard_id) == []
    foreign = next(s for s in range(3) if s not in peer.local_counts("docs"))
    not_local = peer.http("POST", f"/collections/docs/shards/{foreign}/snapshots")
    assert not_local.status_code == 400 and "is not a local" in not_local.json()["status"]["error"]


def test_a_collection_snapshot_holds_the_peers_local_shards_only(peers: list[Peer]) -> None:
    peer = peers[1]
    snapshot = peer.client().create_snapshot("docs")
    assert snapshot is not None and snapshot.name.startswith(f"docs-{peer.peer_id}-")
    document = _tar_document(peer.http("GET", f"/collections/docs/snapshots/{snapshot.name}").content)
    assert sorted(int(s) for s in document["shards"]) == sorted(peer.local_counts("docs"))
    assert len(document["collection"]["points"]) == sum(peer.local_counts("docs").values())


def test_cluster_metrics_use_upstreams_names(peers: list[Peer]) -> None:
    peer = peers[0]
    text = peer.http("GET", "/metrics").text
    status = peer.client().cluster_status()
    for line in ("cluster_enabled 1", "cluster_peers_total 3", f"cluster_term {status.raft_info.term}",
                 f'cluster_commit{{peer_id="{status.peer_id}"}} {status.raft_info.commit}',
                 "cluster_pending_operations_total 0", "cluster_voter 1", 'cluster_working_state{state="working"} 1'):
        assert line in text.splitlines(), line


def test_drop_replica_and_cluster_operation_errors_follow_upstream(peers: list[Peer]) -> None:
    client = peers[0].client()
    shards = peers[0].replicas("docs")
    shard_id, replicas = next(iter(sorted(shards.items())))
    victim, keeper = sorted(replicas)
    assert client.cluster_collection_update("docs", models.DropReplicaOperation(
        drop_replica=models.Replica(shard_id=shard_id, peer_id=victim)))
    assert list(peers[0].replicas("docs")[shard_id]) == [keeper]
    errors = {
        "last replica": ({"drop_replica": {"shard_id": shard_id, "peer_id": keeper}},
                         f"Bad request: Shard {shard_id} must have at least one active replica after removing {keeper}"),
        "unknown shard": ({"replicate_shard": {"shard_id": 9, "from_peer_id": keeper, "to_peer_id": victim}},
                          "Bad request: Shard 9 of docs does not exist"),
        "unknown peer": ({"replicate_shard": {"shard_id": shard_id, "from_peer_id": keeper, "to_peer_id": 7}},
                         "Bad request: Peer 7 does not exist"),
        "no transfer": ({"abort_transfer": {"shard_id": shard_id, "from_peer_id": keeper, "to_peer_id": victim}},
                        f"Not found: Shard transfer {keeper} -> {victim} for collection docs:{shard_id} does not exist"),
    }
    for what, (body, message) in errors.items():
        answer = peers[1].http("POST", "/collections/docs/cluster", json=body)
        status = 400 if message.startswith("Bad") else 404
        assert (answer.status_code, answer.json()["status"]["error"]) == (status, message), what
    # a replicate that is aborted while it runs leaves a Dead replica (upstream), which then recovers
    client.cluster_collection_update("docs", models.ReplicateShardOperation(
        replicate_shard=models.ReplicateShard(shard_id=shard_id, from_peer_id=keeper, to_peer_id=victim)))
    assert client.cluster_collection_update("docs", models.AbortTransferOperation(
        abort_transfer=models.AbortShardTransfer(shard_id=shard_id, from_peer_id=keeper, to_peer_id=victim)))
    assert peers[0].replicas("docs")[shard_id][victim] in ("Dead", "Partial")
    assert wait_for(lambda: _all_active(peers[0], "docs", 2), 15, "the aborted replica recovered")
