"""The decisions of playbooks/runbooks/replace_qdrant_node.yml (plugins/filter/qdrant_cluster.py).

The answers are shaped as the `uri` module registers Qdrant's (and the lab stand-in's) REST
answers: three peers in prod's address plan, collections laid out by the backend (one shard
per peer, replication_factor 2), the last peer's disk lost.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "plugins" / "filter"))

from qdrant_cluster import qdrant_replacement_plan, qdrant_replicas_to_add  # noqa: E402

URIS = {11: "http://10.40.128.20:6335/", 22: "http://10.40.144.20:6335/", 33: "http://10.40.160.20:6335/"}
LOST_URI = "http://10.40.160.20:6335"


def cluster(peers: dict[int, str], me: int = 11) -> dict:
    return {"status": "enabled", "peer_id": me, "peers": {str(p): {"uri": u} for p, u in peers.items()}}


def answers(layouts: dict[str, dict[int, dict[int, str]]], factor: int = 2, me: int = 11) -> tuple[list, list]:
    """Registered results of GET /collections/{c} and /collections/{c}/cluster on peer `me`,
    from {collection: {shard: {peer: state}}}."""
    infos, clusters = [], []
    for name, shards in layouts.items():
        infos.append({"item": name, "status": 200,
                      "json": {"result": {"config": {"params": {"shard_number": len(shards), "replication_factor": factor}}}}})
        local = [{"shard_id": s, "points_count": 5, "state": r[me]} for s, r in shards.items() if me in r]
        remote = [{"shard_id": s, "peer_id": p, "state": st} for s, r in shards.items() for p, st in r.items() if p != me]
        clusters.append({"item": name, "status": 200, "json": {"result": {
            "peer_id": me, "shard_count": len(shards), "local_shards": local, "remote_shards": remote,
            "shard_transfers": []}}})
    return infos, clusters


# peer 33 lost its disk: its replicas are Dead
DEGRADED = {"schema": {0: {11: "Active", 33: "Dead"}, 1: {22: "Active", 11: "Active"}, 2: {33: "Dead", 22: "Active"}}}


def test_a_lost_peer_is_removed_and_its_shards_replicated():
    plan = qdrant_replacement_plan(cluster(URIS), *answers(DEGRADED), LOST_URI, {})
    assert plan["stale_ids"] == [33] and plan["live_id"] is None and plan["todo"]
    assert plan["lost"] == [] and plan["degraded"] == []
    assert [(u["collection"], u["shard_id"], u["replicas"]) for u in plan["under"]] == [("schema", 0, 1), ("schema", 2, 1)]


def test_a_host_that_bootstrapped_a_cluster_of_its_own_is_not_a_member():
    # the first peer rebuilt by data.yml: it answers, as peer 44 of a new cluster
    own = cluster({44: LOST_URI}, me=44)
    plan = qdrant_replacement_plan(cluster(URIS), *answers(DEGRADED), LOST_URI, own)
    assert plan["live_id"] is None and plan["stale_ids"] == [33]


def test_removing_the_only_active_replica_is_refused_by_the_plan():
    layouts = {"schema": {0: {11: "Dead", 33: "Active"}, 1: {22: "Active", 11: "Active"}}}
    plan = qdrant_replacement_plan(cluster(URIS), *answers(layouts), LOST_URI, {})
    assert plan["lost"] == ["schema shard 0"]


def test_a_shard_without_any_replica_is_lost():
    infos, layouts = answers({"schema": {0: {11: "Active", 22: "Active"}}})
    layouts[0]["json"]["result"]["shard_count"] = 2
    assert qdrant_replacement_plan(cluster(URIS), infos, layouts, LOST_URI, {})["lost"] == ["schema shard 1"]


def test_a_healthy_cluster_has_nothing_to_do():
    healthy = {"schema": {0: {11: "Active", 33: "Active"}, 1: {22: "Active", 11: "Active"}, 2: {33: "Active", 22: "Active"}}}
    plan = qdrant_replacement_plan(cluster(URIS), *answers(healthy), LOST_URI, cluster(URIS, me=33))
    assert plan == {"uri": LOST_URI, "live_id": 33, "stale_ids": [], "moved_from": "", "orphans": [],
                    "ambiguous": False, "lost": [], "under": [], "degraded": [], "todo": False}


def test_a_live_member_named_while_another_peer_is_down_reports_that_peer():
    plan = qdrant_replacement_plan(cluster(URIS), *answers(DEGRADED), "http://10.40.144.20:6335",
                                   cluster(URIS, me=22))
    assert plan["live_id"] == 22 and not plan["todo"]
    assert {(d["peer_id"], d["state"]) for d in plan["degraded"]} == {(33, "Dead")}


def test_a_rebuilt_peer_that_joined_before_the_old_id_was_removed_is_finished():
    # data.yml ran on the new host: it joined as peer 44 at the same URI, the old 33 stays Dead
    peers = {**URIS, 44: LOST_URI}
    plan = qdrant_replacement_plan(cluster(peers), *answers(DEGRADED), LOST_URI, cluster(peers, me=44))
    assert plan["live_id"] == 44 and plan["stale_ids"] == [33] and plan["todo"]
    assert len(plan["under"]) == 2


def test_replicas_go_to_the_new_peer_from_an_active_holder():
    peers = {11: URIS[11], 22: URIS[22], 44: LOST_URI}
    after_removal = {"schema": {0: {11: "Active"}, 1: {22: "Active", 11: "Active"}, 2: {22: "Active"}},
                     "docs": {0: {22: "Active", 11: "Active"}}}
    ops = qdrant_replicas_to_add(cluster(peers), *answers(after_removal), 44)
    assert [o["body"] for o in ops] == [
        {"replicate_shard": {"shard_id": 0, "from_peer_id": 11, "to_peer_id": 44}},
        {"replicate_shard": {"shard_id": 2, "from_peer_id": 22, "to_peer_id": 44}},
    ]
    assert {o["collection"] for o in ops} == {"schema"}


def test_a_shard_already_on_the_new_peer_is_left_alone():
    peers = {11: URIS[11], 22: URIS[22], 44: LOST_URI}
    running = {"schema": {0: {11: "Active", 44: "Partial"}}}
    assert qdrant_replicas_to_add(cluster(peers), *answers(running), 44) == []


def test_the_replication_factor_is_capped_at_the_peer_count():
    peers = {11: URIS[11], 22: URIS[22], 44: LOST_URI}
    full = {"schema": {0: {11: "Active", 22: "Active", 44: "Active"}}}
    assert qdrant_replicas_to_add(cluster(peers), *answers(full, factor=5), 44) == []


def test_a_new_peer_that_is_not_in_the_cluster_is_an_error():
    with pytest.raises(AnsibleFilterError, match="peer 99 is not in the cluster"):
        qdrant_replicas_to_add(cluster(URIS), *answers(DEGRADED), 99)


def test_a_collection_deleted_meanwhile_is_skipped():
    infos, layouts = answers(DEGRADED)
    layouts[0] = {"item": "schema", "status": 404, "json": {}}
    assert qdrant_replacement_plan(cluster(URIS), infos, layouts, LOST_URI, {})["under"] == []


# The lost instance's replacement got a NEW private address (EC2 picks one): the inventory
# lists the new host, and the cluster still has peer 33 at the old address.
NEW_URI = "http://10.40.160.57:6335"
KNOWN_AFTER_MOVE = [URIS[11], URIS[22], NEW_URI]


def test_a_replacement_at_a_new_address_removes_the_peer_no_host_has_any_more():
    plan = qdrant_replacement_plan(cluster(URIS), *answers(DEGRADED), NEW_URI, {}, KNOWN_AFTER_MOVE)
    assert plan["stale_ids"] == [33] and plan["moved_from"] == LOST_URI
    assert plan["live_id"] is None and plan["todo"] and not plan["ambiguous"]
    assert plan["lost"] == [] and plan["degraded"] == []
    assert [(u["collection"], u["shard_id"]) for u in plan["under"]] == [("schema", 0), ("schema", 2)]


def test_a_host_at_its_old_address_never_removes_a_peer_of_another_address():
    # same-address replacement while an orphan exists: the orphan is another peer's problem
    peers = {**URIS, 44: "http://10.40.128.99:6335"}
    plan = qdrant_replacement_plan(cluster(peers), *answers(DEGRADED), LOST_URI, {}, list(URIS.values()))
    assert plan["stale_ids"] == [33] and plan["moved_from"] == ""
    assert plan["orphans"] == ["http://10.40.128.99:6335"]


def test_several_peers_no_host_has_are_ambiguous_until_the_old_address_is_named():
    peers = {**URIS, 44: "http://10.40.128.99:6335"}
    plan = qdrant_replacement_plan(cluster(peers), *answers(DEGRADED), NEW_URI, {}, KNOWN_AFTER_MOVE)
    assert plan["ambiguous"] and plan["stale_ids"] == []
    assert plan["orphans"] == ["http://10.40.128.99:6335", LOST_URI]
    chosen = qdrant_replacement_plan(cluster(peers), *answers(DEGRADED), NEW_URI, {}, KNOWN_AFTER_MOVE, "10.40.160.20")
    assert chosen["stale_ids"] == [33] and not chosen["ambiguous"] and chosen["moved_from"] == LOST_URI


def test_an_old_address_that_a_host_still_has_is_an_error():
    with pytest.raises(AnsibleFilterError, match="qdrant_replace_old_address: no peer at 10.40.144.20 that no qdrant host has"):
        qdrant_replacement_plan(cluster(URIS), *answers(DEGRADED), NEW_URI, {}, KNOWN_AFTER_MOVE, "10.40.144.20")


def test_an_old_address_for_a_host_that_kept_its_own_is_an_error():
    peers = {**URIS, 44: "http://10.40.128.99:6335"}
    with pytest.raises(AnsibleFilterError, match="qdrant_replace_old_address: .* the host kept its address"):
        qdrant_replacement_plan(cluster(peers), *answers(DEGRADED), LOST_URI, {}, list(URIS.values()), "10.40.128.99")


def test_a_moved_host_whose_old_peer_held_the_last_active_replica_is_refused():
    layouts = {"schema": {0: {11: "Dead", 33: "Active"}, 1: {22: "Active", 11: "Active"}}}
    plan = qdrant_replacement_plan(cluster(URIS), *answers(layouts), NEW_URI, {}, KNOWN_AFTER_MOVE)
    assert plan["stale_ids"] == [33] and plan["lost"] == ["schema shard 0"]


# --- the runbook's check that nothing answers at the old address -------------------------------

def _refusal_condition() -> str:
    import yaml

    plays = yaml.safe_load((REPO / "playbooks/runbooks/replace_qdrant_node.yml").read_text())
    tasks = [t for play in plays for t in play.get("tasks", [])]
    task = next(t for t in tasks if t.get("name") == "Refuse to remove a peer that still answers at its old address")
    return task["ansible.builtin.assert"]["that"]


@pytest.mark.parametrize(("result", "removes"), [
    # wait_for's registered results (failed_when: false), as ansible-core 2.19 registers them
    ({"state": "started", "port": 6335, "elapsed": 0, "failed": False, "changed": False}, False),
    ({"elapsed": 5, "failed": False, "changed": False, "msg": "Timeout when waiting for 10.40.160.20:6335"}, True),
    # the check could not run (no interpreter, delegation failed): fail closed
    ({"failed": False, "changed": False, "rc": 127, "msg": "Module result deserialization failed"}, False),
    ({"skipped": True, "changed": False, "false_condition": "_replace_plan.moved_from | length > 0"}, True),
], ids=["answers", "timeout", "check-failed", "same-address"])
def test_a_peer_is_removed_for_its_address_only_after_a_timeout_there(result, removes):
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar, trust_as_template

    templar = Templar(loader=DataLoader(), variables={"__replace_old_answers": result})
    assert templar.evaluate_conditional(trust_as_template(_refusal_condition())) is removes
