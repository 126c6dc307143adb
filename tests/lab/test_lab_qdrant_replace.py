"""A Qdrant peer is lost and playbooks/runbooks/replace_qdrant_node.yml rebuilds it.

The lab runs three Qdrant peers (the stand-in, lab/standins/qdrant). Each test writes a
collection laid out like the backend's (3 shards, 2 replicas each) and loses a peer's storage,
as a lost volume would leave it, then runs the runbook as an operator does:
- the FIRST peer (the one that bootstrapped the cluster) at the same address: the old peer id
  goes, a new one sits at the host's p2p URI;
- the LAST peer's instance replaced by one at a NEW private address, as EC2 does (the EC2
  emulator's instance and the container move; lab/labctl/ec2.py, fleet.py): the operator runs
  common.yml on the new host, then the runbook names it; the peer at the old address goes.
  Then the same again back to the old address, which leaves the lab as it was.
Afterwards every shard has its two replicas Active again and no point is lost; a second run
has nothing to do. Requests go from a backend host, which the firewall lets reach Qdrant's
REST port.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from labview import Lab, changed_counts, load_lab, qdrant_call
from labctl import ec2, fleet

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


def launch_index(lab: Lab, host: str) -> int:
    """The host's place in launch order (its Name tag ends in it)."""
    return int(lab.name(host).rsplit("-", 1)[1])


def write_collection(qdrant: Qdrant, healthy: str) -> int:
    qdrant.call(healthy, "DELETE", f"/collections/{COLLECTION}")  # a leftover of an interrupted run
    created = qdrant.call(healthy, "PUT", f"/collections/{COLLECTION}", {
        "vectors": {"size": 4, "distance": "Cosine"}, "shard_number": SHARDS, "replication_factor": REPLICAS})
    assert created.get("result") is True, created
    points = [{"id": i, "vector": [1.0 + i, 2.0, 3.0 - i / 100, 0.5], "payload": {"n": i}} for i in range(POINTS)]
    upserted = qdrant.call(healthy, "PUT", f"/collections/{COLLECTION}/points?wait=true", {"points": points})
    assert upserted["result"]["status"] == "completed", upserted
    count = qdrant.count(healthy)
    assert count == POINTS
    return count


def lose_storage(lab: Lab, host: str) -> None:
    """The volume is lost: qdrant stopped, its storage empty."""
    lost = lab.exec(host, f"systemctl stop qdrant && find {STORAGE} -mindepth 1 -delete && ls -A {STORAGE} | wc -l",
                    timeout=180)
    assert lost.returncode == 0 and lost.stdout.strip() == "0", lost.stderr


def wait_all_active(qdrant: Qdrant, healthy: str) -> dict:
    def all_active() -> dict | None:
        shards = qdrant.replicas(healthy)
        ok = (len(shards) == SHARDS
              and all(len(r) == REPLICAS and set(r.values()) == {"Active"} for r in shards.values()))
        return shards if ok else None

    return wait_for(all_active, 120, f"{SHARDS} shards with {REPLICAS} Active replicas each")


def assert_rebuilt(qdrant: Qdrant, healthy: str, host: str, uri: str, gone: str, old_id: int, before: int) -> None:
    """The old peer is gone, one new peer sits at `uri`, its replicas are back, no point lost."""
    peers = qdrant.peers(healthy)
    assert old_id not in peers, peers
    assert gone == uri or gone not in peers.values(), peers  # a moved host's old address has no peer
    new_ids = [p for p, u in peers.items() if u == uri]
    assert len(new_ids) == 1 and new_ids[0] != old_id, peers
    assert len(peers) == len(qdrant.lab.groups["qdrant"]), peers
    shards = wait_all_active(qdrant, healthy)
    assert any(new_ids[0] in r for r in shards.values()), shards  # the new peer holds replicas again
    assert qdrant.count(healthy) == before
    assert qdrant.count(host) == before  # the rebuilt peer serves the collection too


def said(run) -> str:
    """A playbook run's output with its lines unfolded (the YAML callback wraps long messages)."""
    return " ".join(run.stdout.split())


def assert_nothing_to_do(host: str) -> None:
    again = playbook(RUNBOOK, "-e", f"qdrant_replace_host={host}", timeout=600)
    assert "Nothing to do" in again.stdout, again.stdout[-4000:]
    changed = changed_counts(again.stdout)
    assert changed and set(changed.values()) == {0}, changed
    assert "Rebuild the peer" in again.stdout and "skipping: no hosts matched" in again.stdout


def test_a_peer_that_lost_its_storage_is_rebuilt_from_the_other_replicas(lab):
    qdrant = Qdrant(lab)
    peers_group = lab.groups["qdrant"]
    assert len(peers_group) >= 3, "the lab runs a Qdrant cluster of three peers"
    # the FIRST peer in launch order: with empty storage it would bootstrap a cluster of its
    # own, so the runbook must make it join through a healthy peer (qdrant_cluster_bootstrap_peer)
    host = min(peers_group, key=lambda h: launch_index(lab, h))
    healthy = next(h for h in peers_group if h != host)
    uri = f"https://{lab.address(host)}:6335"  # peers talk TLS (docs/architecture.md, "Internal TLS")
    try:
        before = write_collection(qdrant, healthy)
        old_id = int(qdrant.call(host, "GET", "/cluster")["result"]["peer_id"])
        assert qdrant.peers(healthy)[old_id] == uri
        lose_storage(lab, host)

        run = playbook(RUNBOOK, "-e", f"qdrant_replace_host={host}", "-e", "qdrant_replace_wipe=true", timeout=1500)
        assert f"Replacing {host} ({uri}) through" in said(run), run.stdout[-4000:]
        assert_rebuilt(qdrant, healthy, host, uri, uri, old_id, before)
        assert_nothing_to_do(host)
    finally:
        qdrant.call(healthy, "DELETE", f"/collections/{COLLECTION}")


def replace_at(lab: Lab, host: str, address: str) -> tuple[Lab, str]:
    """Lose `host`'s instance and bring up its replacement at `address` (same Name), then give
    it its baseline as the runbook's header says: common.yml limited to the new host. Returns the lab
    as the inventory now shows it and the new inventory host."""
    lose_storage(lab, host)
    machine = next(h for h in fleet.hosts() if h.name == lab.name(host))
    ec2.replace_instance(machine, address)
    fleet.readdress(machine, address)
    moved = load_lab()
    new_host = next(h for h in moved.groups["qdrant"] if moved.name(h) == machine.name)
    assert new_host == address and host not in moved.groups["qdrant"], moved.groups["qdrant"]
    playbook("playbooks/common.yml", "--limit", new_host, timeout=900)
    return moved, new_host


# Two replacements (there and back), each a baseline run and the runbook: 311 s in CI on two
# cores (2026-12-07), too close to the lab tests' bound per test (lab/labctl/testrunner.py).
@pytest.mark.timeout(900)
def test_a_replacement_instance_at_a_new_address_takes_the_lost_peers_place(lab):
    peers_group = lab.groups["qdrant"]
    # the LAST peer in launch order, on a private subnet of its own zone
    host = max(peers_group, key=lambda h: launch_index(lab, h))
    healthy = min(peers_group, key=lambda h: launch_index(lab, h))
    old_address = lab.address(host)
    machine = next(h for h in fleet.hosts() if h.name == lab.name(host))
    taken = {h.address for h in fleet.hosts()}
    new_address = next(str(a) for a in reversed(list(machine.subnet.cidr.hosts()))
                       if str(a) not in taken and int(str(a).rsplit(".", 1)[1]) < 250)
    old_uri, new_uri = f"https://{old_address}:6335", f"https://{new_address}:6335"
    qdrant = Qdrant(lab)
    before = write_collection(qdrant, healthy)
    old_id = int(qdrant.call(host, "GET", "/cluster")["result"]["peer_id"])
    try:
        moved, new_host = replace_at(lab, host, new_address)
        run = playbook(RUNBOOK, "-e", f"qdrant_replace_host={new_host}", timeout=1500)
        assert f"Replacing {new_host} ({new_uri}, new address; was {old_uri}) through" in said(run), run.stdout[-4000:]
        assert f"Its address changed (was {old_uri})" in said(run), run.stdout[-4000:]
        assert_rebuilt(Qdrant(moved), healthy, new_host, new_uri, old_uri, old_id, before)
        assert_nothing_to_do(new_host)
    finally:
        # Back to the address the rest of the lab (and its later tests) expects, the same way,
        # from wherever the steps above stopped: moved (in the emulator at least) or not, the
        # runbook then rebuilds the peer at the old address.
        current = load_lab()
        if host not in current.groups["qdrant"]:
            current, _ = replace_at(current, new_address, old_address)
        back = playbook(RUNBOOK, "-e", f"qdrant_replace_host={host}", timeout=1500)
    # the way back is a replacement at a new address too (reached only when the steps above passed)
    assert f"Replacing {host} ({old_uri}, new address; was {new_uri})" in said(back), \
        back.stdout[-4000:]
    wait_all_active(Qdrant(current), healthy)
    assert qdrant.count(host) == before
    qdrant.call(healthy, "DELETE", f"/collections/{COLLECTION}")
