"""A Qdrant peer loses its storage and playbooks/runbooks/replace_qdrant_node.yml rebuilds it.

The lab runs three Qdrant peers (the stand-in, lab/standins/qdrant). The test writes a
collection laid out like the backend's (3 shards, 2 replicas each), stops the FIRST peer (the
one that bootstrapped the cluster) and empties its storage, as a lost volume would leave it, then runs the runbook as an operator
does. Afterwards the old peer id is gone, a new one sits at the host's p2p URI, every shard
has its two replicas Active again and no point is lost; a second run has nothing to do.
Requests go from a backend host, which the firewall lets reach Qdrant's REST port.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from labview import changed_counts, qdrant_call

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from rollouts import playbook  # noqa: E402

COLLECTION = "lab-replace-probe"
POINTS = 50
SHARDS = 3
REPLICAS = 2
STORAGE = "/var/lib/qdrant/storage"  # roles/qdrant: qdrant_data_dir (defaults) + /storage (vars)
RUNBOOK = "playbooks/runbooks/replace_qdrant_node.yml"


class Qdrant:
    """Qdrant's REST API as a backend host reaches it (curl over the private network)."""

    def __init__(self, lab) -> None:
        self.lab, self.backend = lab, lab.groups["backend"][0]

    def call(self, host: str, method: str, path: str, body: object | None = None, timeout: int = 60) -> dict:
        return qdrant_call(self.lab, host, method, path, body, timeout=timeout, via=self.backend)

    def peers(self, host: str) -> dict[int, str]:
        """peer id -> p2p URI, as `host` sees the cluster."""
        result = self.call(host, "GET", "/cluster")["result"]
        return {int(p): v["uri"].rstrip("/") for p, v in result["peers"].items()}

    def replicas(self, host: str) -> dict[int, dict[int, str]]:
        """shard id -> {peer id: state} of the test collection, as `host` sees it."""
        result = self.call(host, "GET", f"/collections/{COLLECTION}/cluster")["result"]
        shards: dict[int, dict[int, str]] = {}
        for local in result["local_shards"]:
            shards.setdefault(local["shard_id"], {})[result["peer_id"]] = local["state"]
        for remote in result["remote_shards"]:
            shards.setdefault(remote["shard_id"], {})[remote["peer_id"]] = remote["state"]
        return shards

    def count(self, host: str) -> int:
        return self.call(host, "POST", f"/collections/{COLLECTION}/points/count", {"exact": True})["result"]["count"]


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(2)


def test_a_peer_that_lost_its_storage_is_rebuilt_from_the_other_replicas(lab):
    qdrant = Qdrant(lab)
    peers_group = lab.groups["qdrant"]
    assert len(peers_group) >= 3, "the lab runs a Qdrant cluster of three peers"
    # the FIRST peer in launch order: with empty storage it would bootstrap a cluster of its
    # own, so the runbook must make it join through a healthy peer (qdrant_cluster_bootstrap_peer)
    host = min(peers_group, key=lambda h: int(lab.name(h).rsplit("-", 1)[1]))
    healthy = next(h for h in peers_group if h != host)
    uri = f"https://{lab.address(host)}:6335"  # peers talk TLS (docs/architecture.md, "Internal TLS")
    qdrant.call(healthy, "DELETE", f"/collections/{COLLECTION}")  # a leftover of an interrupted run
    try:
        created = qdrant.call(healthy, "PUT", f"/collections/{COLLECTION}", {
            "vectors": {"size": 4, "distance": "Cosine"}, "shard_number": SHARDS, "replication_factor": REPLICAS})
        assert created.get("result") is True, created
        points = [{"id": i, "vector": [1.0 + i, 2.0, 3.0 - i / 100, 0.5], "payload": {"n": i}} for i in range(POINTS)]
        upserted = qdrant.call(healthy, "PUT", f"/collections/{COLLECTION}/points?wait=true", {"points": points})
        assert upserted["result"]["status"] == "completed", upserted
        before = qdrant.count(healthy)
        assert before == POINTS
        old_id = int(qdrant.call(host, "GET", "/cluster")["result"]["peer_id"])
        assert qdrant.peers(healthy)[old_id] == uri

        # the volume is lost: qdrant stopped, its storage empty
        lost = lab.exec(host, f"systemctl stop qdrant && find {STORAGE} -mindepth 1 -delete && ls -A {STORAGE} | wc -l",
                        timeout=180)
        assert lost.returncode == 0 and lost.stdout.strip() == "0", lost.stderr

        run = playbook(RUNBOOK, "-e", f"qdrant_replace_host={host}", "-e", "qdrant_replace_wipe=true", timeout=1500)
        assert f"Replacing {host}" in run.stdout, run.stdout[-4000:]

        peers = qdrant.peers(healthy)
        assert old_id not in peers, peers
        new_ids = [p for p, u in peers.items() if u == uri]
        assert len(new_ids) == 1 and new_ids[0] != old_id, peers
        assert len(peers) == len(peers_group), peers

        def all_active() -> dict | None:
            shards = qdrant.replicas(healthy)
            ok = (len(shards) == SHARDS
                  and all(len(r) == REPLICAS and set(r.values()) == {"Active"} for r in shards.values()))
            return shards if ok else None

        shards = wait_for(all_active, 120, f"{SHARDS} shards with {REPLICAS} Active replicas each")
        assert any(new_ids[0] in r for r in shards.values()), shards  # the new peer holds replicas again
        assert qdrant.count(healthy) == before
        assert qdrant.count(host) == before  # the rebuilt peer serves the collection too

        again = playbook(RUNBOOK, "-e", f"qdrant_replace_host={host}", timeout=600)
        assert "Nothing to do" in again.stdout, again.stdout[-4000:]
        changed = changed_counts(again.stdout)
        assert changed and set(changed.values()) == {0}, changed
        assert "Rebuild the peer" in again.stdout and "skipping: no hosts matched" in again.stdout
    finally:
        qdrant.call(healthy, "DELETE", f"/collections/{COLLECTION}")
