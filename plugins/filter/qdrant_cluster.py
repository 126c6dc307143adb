"""What playbooks/runbooks/replace_qdrant_node.yml does to a Qdrant cluster, computed from the API.

A peer whose storage was lost comes back with a new peer id at the same p2p URI; the old id
stays in the cluster with its replicas Dead until it is removed. A replacement instance at a
NEW private address (EC2 gives one; Terraform pins none) has no peer at its URI: the peer to
remove is then the one at an address no host of the qdrant group has any more. These filters read what a
healthy peer answers (`GET /cluster`, `GET /collections/{c}` and `GET /collections/{c}/cluster`,
as the `uri` module registers them in a loop: each item has `item` (the collection), `status`
and `json`) and say what to remove, what would be lost, and which shards to replicate. They
are pure functions so the decisions, the refusals above all, are tested without a cluster
(tests/project/test_qdrant_cluster_filters.py); the runbook only sends the requests.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from ansible.errors import AnsibleFilterError


def _result(answer: Mapping[str, Any] | None) -> dict[str, Any]:
    """The `result` of a registered uri answer, {} when it did not answer 200."""
    if not answer or answer.get("status") != 200:
        return {}
    return dict((answer.get("json") or {}).get("result") or {})


def _by_collection(answers: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Registered loop results keyed by their item (the collection); a collection deleted
    meanwhile (404) is left out."""
    return {str(a["item"]): _result(a) for a in answers or [] if a.get("status") == 200}


def _replicas(layout: Mapping[str, Any]) -> dict[int, dict[int, str]]:
    """shard id -> {peer id: state} from GET /collections/{c}/cluster; every shard of
    `shard_count` is listed, one without any replica with none."""
    shards: dict[int, dict[int, str]] = {i: {} for i in range(int(layout.get("shard_count") or 0))}
    for local in layout.get("local_shards") or []:
        shards.setdefault(int(local["shard_id"]), {})[int(layout["peer_id"])] = str(local.get("state"))
    for remote in layout.get("remote_shards") or []:
        shards.setdefault(int(remote["shard_id"]), {})[int(remote["peer_id"])] = str(remote.get("state"))
    return shards


def _collections(infos: Iterable[Mapping[str, Any]], layouts: Iterable[Mapping[str, Any]]) -> list[tuple[str, int, dict]]:
    """(name, replication_factor, layout) of each collection both reads answered."""
    info, layout = _by_collection(infos), _by_collection(layouts)
    out = []
    for name in sorted(set(info) & set(layout)):
        params = (info[name].get("config") or {}).get("params") or {}
        out.append((name, int(params.get("replication_factor") or 1), layout[name]))
    return out


def _peer_uris(cluster: Mapping[str, Any]) -> dict[int, str]:
    return {int(p): str((v or {}).get("uri") or "").rstrip("/") for p, v in (cluster.get("peers") or {}).items()}


def qdrant_replacement_plan(cluster: Mapping[str, Any], infos: Iterable[Mapping[str, Any]],
                            layouts: Iterable[Mapping[str, Any]], uri: str,
                            own: Mapping[str, Any] | None = None,
                            known_uris: Iterable[str] | None = None, old_address: str = "") -> dict[str, Any]:
    """The plan for rebuilding the peer at p2p `uri`, from a healthy peer's answers.

    `cluster` is that peer's GET /cluster result; `own` the replaced host's own GET /cluster
    result ({} when its qdrant does not answer); `known_uris` the p2p URIs of every host of the
    qdrant group (the inventory's). When no peer is at `uri` (the host is new at its address),
    the peer to replace is the one at a URI none of `known_uris` is (an *orphan*): the only
    one, or the one at `old_address` when given. Returns:

    - `live_id`: the replaced host's peer id when it answers as a member the healthy peer
      lists at `uri` (its raft state is intact: it is not to be stopped or wiped), else None;
    - `stale_ids`: the other peer ids at `uri`, the dead peer(s) to remove; for a host at a
      new address, the orphan it replaces;
    - `moved_from`: that orphan's URI ('' when the host keeps its address);
    - `orphans`: every orphan's URI (the choice, when there are several and no `old_address`);
    - `ambiguous`: whether the peer to replace cannot be told (several orphans, none chosen);
    - `lost`: shards with no Active replica outside `stale_ids` (removing them would lose
      points: restore from backup instead);
    - `under`: shards with fewer replicas outside `stale_ids` than the collection's
      replication_factor (at most the number of peers once the host has joined);
    - `degraded`: replicas not Active on peers other than the replaced host's (another peer
      is down: replace that one, or wait for it);
    - `todo`: whether the runbook has anything to change.
    """
    if not cluster or not cluster.get("peers"):
        raise AnsibleFilterError("qdrant_replacement_plan: the healthy peer's GET /cluster result has no peers")
    uri = str(uri).rstrip("/")
    peers = _peer_uris(cluster)
    at_uri = sorted(p for p, u in peers.items() if u == uri)
    own = own or {}
    own_id = own.get("peer_id") if own.get("status") == "enabled" else None
    live_id = int(own_id) if own_id is not None and int(own_id) in at_uri else None
    stale = [p for p in at_uri if p != live_id]
    # Without the inventory's URIs nothing can be an orphan (no peer is removed for its address).
    known = {str(u).rstrip("/") for u in known_uris or []} | {uri}
    orphans = {p: u for p, u in sorted(peers.items()) if u not in known} if known_uris is not None else {}
    moved_from, ambiguous = "", False
    if old_address:
        chosen = {p: u for p, u in orphans.items() if urlsplit(u).hostname == str(old_address)}
        if not chosen:
            raise AnsibleFilterError(
                f"qdrant_replace_old_address: no peer at {old_address} that no qdrant host has: the peers whose"
                f" address no host has are {sorted(orphans.values()) or 'none'}. Nothing was changed.")
        if at_uri:
            raise AnsibleFilterError(
                f"qdrant_replace_old_address: {uri} is already a peer of the cluster ({at_uri}): the host kept its"
                f" address; leave out qdrant_replace_old_address. Nothing was changed.")
    else:
        chosen = orphans
    if not at_uri and chosen:
        if len(chosen) == 1:
            stale = list(chosen)
            moved_from = next(iter(chosen.values()))
        else:
            ambiguous = True
    peers_after = len(peers) - len(stale) + (0 if live_id is not None else 1)
    lost: list[str] = []
    under: list[dict[str, Any]] = []
    degraded: list[dict[str, Any]] = []
    for name, factor, layout in _collections(infos, layouts):
        for shard, replicas in sorted(_replicas(layout).items()):
            kept = {p: s for p, s in replicas.items() if p not in stale}
            if not any(s == "Active" for s in kept.values()):
                lost.append(f"{name} shard {shard}")
            if len(kept) < min(factor, peers_after):
                under.append({"collection": name, "shard_id": shard, "replicas": len(kept),
                              "replication_factor": factor})
            degraded += [{"collection": name, "shard_id": shard, "peer_id": p, "uri": peers.get(p, "?"), "state": s}
                         for p, s in sorted(kept.items()) if s != "Active" and p != live_id]
    return {"uri": uri, "live_id": live_id, "stale_ids": stale, "moved_from": moved_from,
            "orphans": sorted(orphans.values()), "ambiguous": ambiguous, "lost": lost, "under": under,
            "degraded": degraded, "todo": bool(stale or live_id is None or under)}


def qdrant_replicas_to_add(cluster: Mapping[str, Any], infos: Iterable[Mapping[str, Any]],
                           layouts: Iterable[Mapping[str, Any]], peer_id: Any) -> list[dict[str, Any]]:
    """The `replicate_shard` operations that bring every shard back to its replication_factor
    (at most one replica per peer, so at most the number of peers), each onto `peer_id` (the
    rebuilt peer) from the Active replica with the lowest peer id. Shards the peer already
    holds, in any state (a transfer of an earlier run still running), are left alone."""
    target = int(peer_id)
    peers = _peer_uris(cluster)
    if target not in peers:
        raise AnsibleFilterError(f"qdrant_replicas_to_add: peer {target} is not in the cluster's peers {sorted(peers)}")
    operations = []
    for name, factor, layout in _collections(infos, layouts):
        for shard, replicas in sorted(_replicas(layout).items()):
            if target in replicas or len(replicas) >= min(factor, len(peers)):
                continue
            sources = sorted(p for p, s in replicas.items() if s == "Active")
            if not sources:
                raise AnsibleFilterError(f"qdrant_replicas_to_add: {name} shard {shard} has no Active replica to copy")
            operations.append({"collection": name, "shard_id": shard, "from_peer_id": sources[0],
                               "body": {"replicate_shard": {"shard_id": shard, "from_peer_id": sources[0],
                                                            "to_peer_id": target}}})
    return operations


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"qdrant_replacement_plan": qdrant_replacement_plan, "qdrant_replicas_to_add": qdrant_replicas_to_add}
