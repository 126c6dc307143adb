"""REST API of a peer in distributed mode: the same routes, served from the cluster.

LAB TEST FIXTURE (QueryGPT Qdrant stand-in, NOT Qdrant).

Why: as upstream, every peer answers every call for every collection: metadata changes
go through the leader (cluster.Cluster.propose), writes go to every replica of the
shards they touch, reads to one Active replica per shard, and the answers are merged
into the single-node shapes. Request parsing and validation are inherited from the
single-node App, so both modes accept and refuse the same bodies.
"""

from __future__ import annotations

import copy
import logging
import urllib.parse
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

from . import payload as pl
from . import points as pts
from .aliases import listing, parse_actions
from .cluster import UPDATABLE, Cluster, PeerUnavailable, shard_for
from .config import Settings
from .errors import ApiError, bad_input, bad_request, collection_not_found, not_found, unsupported
from .http_api import (App, Request, Response, Result, _limit, _multipart_field, _no_shard_key, _retrieve_ids,
                       _searches, _text, _update_result)
from .snapshots import SnapshotManager, check_priority, decode_document, encode_snapshot
from .storage import (Collection, Store, apply_config_diff, default_config, parse_vectors_config,
                      validate_collection_name)

LOG = logging.getLogger("qdrant.cluster")
_ASCENDING = ("Euclid", "Manhattan")


def _positive_param(body: dict[str, Any], name: str) -> None:
    params = body["params"] if isinstance(body.get("params"), dict) else body
    value = params.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise bad_input(f"Validation error in JSON body: [{name}: value {value} invalid, must be 1 or larger]")


def _transient(err: ApiError) -> bool:
    return isinstance(err, PeerUnavailable) or err.status >= 500


class ClusterApp(App):
    """App whose collections live in the cluster (``cluster``) instead of the local Store."""

    def __init__(self, settings: Settings, store: Store, cluster: Cluster) -> None:
        super().__init__(settings, store, SnapshotManager(settings.snapshots_path, store, self._check_exists))
        self.cluster = cluster

    # -- helpers ---------------------------------------------------------------------

    def _check_exists(self, name: str) -> None:
        self._resolve(name)

    def _resolve(self, name: str) -> tuple[str, dict[str, Any]]:
        """(collection name, a copy of its metadata) for a name or alias; 404 as upstream."""
        validate_collection_name(name)
        with self.cluster.lock:
            meta = self.cluster.meta
            real = meta["aliases"].get(name, name)
            coll = meta["collections"].get(real)
            if coll is None:
                raise collection_not_found(real)
            return real, copy.deepcopy(coll)

    def _call(self, peer: int, path: str, body: dict[str, Any]) -> Any:
        body = dict(body, commit=self.cluster.meta["commit"], sender=self.cluster.uri)
        return self.cluster.call(self.cluster.peer_uri(peer), path, body)

    def _update_shard(self, name: str, shard_id: int, op: dict[str, Any], wcf: int) -> int:
        """Upstream's replica-set update: every updatable replica, ``min(wcf, replicas)``
        acknowledgements needed, transiently failed replicas marked Dead."""
        me = self.cluster.peer_id
        with self.cluster.lock:
            replicas = dict(self.cluster.meta["collections"][name]["shards"][str(shard_id)])
        targets = sorted(int(p) for p, state in replicas.items() if state in UPDATABLE)
        if not targets:
            raise ApiError(500, f"Service internal error: The replica set for shard {shard_id} on peer {me} "
                           "has no active replica")
        op_id = uuid.uuid4().hex

        def send(peer: int) -> int:
            if peer == me:
                return self.cluster.local_update(name, shard_id, op, op_id)
            return int(self._call(peer, "/p2p/shard/update", {"collection": name, "shard_id": shard_id,
                                                               "op": op, "op_id": op_id})["operation_id"])
        successes: list[tuple[int, int]] = []
        failures: list[tuple[int, ApiError]] = []
        with ThreadPoolExecutor(max_workers=len(targets)) as pool:
            futures = {peer: pool.submit(send, peer) for peer in targets}
            for peer, future in futures.items():
                try:
                    successes.append((peer, future.result()))
                except ApiError as err:
                    failures.append((peer, err))
        failure_error = f"Failed peer: {failures[0][0]}, error: {failures[0][1].message}" if failures else ""
        if failures:
            if len(successes) < min(wcf, len(replicas)):
                raise failures[0][1]
            for peer, err in failures:
                if _transient(err) and replicas[str(peer)] not in ("Dead", "Listener"):
                    LOG.warning("Failed to update shard %s:%d on peer %d, error: %s", name, shard_id, peer, err.message)
                    try:
                        self.cluster.propose({"type": "set_replica_state", "collection": name, "shard_id": shard_id,
                                              "peer_id": peer, "state": "Dead", "from_state": replicas[str(peer)]})
                    except ApiError as mark_err:
                        LOG.warning("cannot mark replica %d of %s:%d Dead: %s", peer, name, shard_id, mark_err.message)
        if not any(replicas[str(peer)] == "Active" for peer, _ in successes):
            if failures and not _transient(failures[0][1]):
                raise failures[0][1]
            raise ApiError(500, "Service internal error: Failed to apply operation to at least one `Active` replica. "
                           f"Consistency of this update is not guaranteed. Please retry. {failure_error}")
        return max(operation_id for _, operation_id in successes)

    def _read_shard(self, name: str, shard_id: int, op: dict[str, Any]) -> Any:
        """One Active replica: this peer's first, then the others (the next one on a failure)."""
        me = self.cluster.peer_id
        with self.cluster.lock:
            replicas = self.cluster.meta["collections"][name]["shards"][str(shard_id)]
            active = [int(p) for p, state in replicas.items() if state == "Active"]
        order = sorted(active, key=lambda p: (p != me, not self.cluster.alive.get(p, p == me), p))
        last: ApiError | None = None
        for peer in order:
            try:
                if peer == me:
                    return self.cluster.local_read(name, shard_id, op)
                return self._call(peer, "/p2p/shard/read", {"collection": name, "shard_id": shard_id, "op": op})["result"]
            except PeerUnavailable as err:
                self.cluster.alive[peer] = False
                last = err
        raise last or ApiError(500, f"Service internal error: The replica set for shard {shard_id} on peer {me} "
                               "has no active replica")

    def _read_all(self, name: str, coll: dict[str, Any], op: dict[str, Any]) -> list[Any]:
        shard_ids = sorted(int(s) for s in coll["shards"])
        with ThreadPoolExecutor(max_workers=len(shard_ids) or 1) as pool:
            futures = [pool.submit(self._read_shard, name, sid, op) for sid in shard_ids]
            return [future.result() for future in futures]

    # -- service -----------------------------------------------------------------------

    def readyz(self, request: Request) -> Response:
        if self.cluster.is_ready():
            return _text("all shards are ready")
        return _text("some shards are not ready", 503)

    def prometheus(self, request: Request) -> Response:
        with self.cluster.lock:
            meta = self.cluster.meta
            local: dict[str, int] = {name: 0 for name in meta["collections"]}
            for (name, _), shard in self.cluster.shards.items():
                local[name] = local.get(name, 0) + len(shard.points)
            summary = {"collections": local, "peer_id": self.cluster.peer_id, "peers": len(meta["peers"]),
                       "term": meta["term"], "commit": meta["commit"],
                       "last_update": int(datetime.fromisoformat(
                           self.cluster.last_update.replace("Z", "+00:00")).timestamp())}
        return Response(200, self.metrics.render(self.store, self.store.version, summary).encode(),
                        "text/plain; version=0.0.4")

    # -- cluster -------------------------------------------------------------------------

    def cluster_status(self, request: Request) -> Result:
        return Result(self.cluster.status())

    def remove_peer(self, request: Request) -> Result:
        """Upstream: refused while the peer holds replicas, unless ``force``."""
        try:
            peer_id = int(request.params["peer_id"])
        except ValueError:
            raise bad_input(f"Invalid peer id {request.params['peer_id']!r}") from None
        with self.cluster.lock:
            has_shards = any(str(peer_id) in replicas for coll in self.cluster.meta["collections"].values()
                             for replicas in coll["shards"].values())
        if has_shards and not request.flag("force", False):
            raise bad_request(f"Cannot remove peer {peer_id} as there are shards on it")
        return Result(self.cluster.propose({"type": "remove_peer", "peer_id": peer_id}))

    def collection_cluster(self, request: Request) -> Result:
        name, coll = self._resolve(request.params["collection_name"])
        me = str(self.cluster.peer_id)
        local, remote = [], []
        for shard_id, replicas in sorted(coll["shards"].items(), key=lambda i: int(i[0])):
            for peer, state in sorted(replicas.items(), key=lambda i: int(i[0])):
                if peer == me:
                    with self.cluster.lock:
                        shard = self.cluster.shards.get((name, int(shard_id)))
                        count = len(shard.points) if shard else 0
                    local.append({"shard_id": int(shard_id), "points_count": count, "state": state})
                else:
                    remote.append({"shard_id": int(shard_id), "peer_id": int(peer), "state": state})
        with self.cluster.lock:
            transfers = [{"shard_id": t["shard_id"], "from": t["from"], "to": t["to"], "sync": t["sync"],
                          "method": t["method"]} for t in self.cluster.meta["transfers"].get(name, [])]
        return Result({"peer_id": self.cluster.peer_id, "shard_count": len(coll["shards"]),
                       "local_shards": local, "remote_shards": remote, "shard_transfers": transfers})

    def update_collection_cluster(self, request: Request) -> Result:
        """replicate_shard, move_shard, drop_replica, abort_transfer (upstream's checks first)."""
        name, coll = self._resolve(request.params["collection_name"])
        body = request.json_object()
        kind = next(iter(body), None) if len(body) == 1 else None
        fields = body.get(kind) if kind else None
        known = {"replicate_shard": ("shard_id", "from_peer_id", "to_peer_id"),
                 "move_shard": ("shard_id", "from_peer_id", "to_peer_id"),
                 "abort_transfer": ("shard_id", "from_peer_id", "to_peer_id"),
                 "drop_replica": ("shard_id", "peer_id")}
        if kind in ("create_sharding_key", "drop_sharding_key", "restart_transfer", "start_resharding",
                    "abort_resharding", "replicate_points"):
            raise unsupported(f"Cluster operation `{kind}`")
        if kind not in known or not isinstance(fields, dict) or not all(
                isinstance(fields.get(f), int) and not isinstance(fields.get(f), bool) for f in known[kind]):
            raise ApiError(400, "Json deserialize error: data did not match any variant of untagged enum "
                           "ClusterOperations")
        if fields.get("method") not in (None, "stream_records", "snapshot", "wal_delta"):
            raise unsupported(f"Shard transfer method `{fields['method']}`")
        shard_id = fields["shard_id"]
        ref = {"collection": name, "shard_id": shard_id}
        if kind == "abort_transfer":
            op = dict(ref, type="abort_transfer", **{"from": fields["from_peer_id"], "to": fields["to_peer_id"]})
            return Result(self.cluster.propose(op))
        if str(shard_id) not in coll["shards"]:
            raise bad_request(f"Shard {shard_id} of {name} does not exist")
        peers = {str(p) for p in self.cluster.peer_ids()}
        for field in known[kind][1:]:
            if str(fields[field]) not in peers:
                raise bad_request(f"Peer {fields[field]} does not exist")
        if kind == "drop_replica":
            return Result(self.cluster.propose(dict(ref, type="drop_replica", peer_id=fields["peer_id"])))
        # every method is a whole-shard stream copy here (see README); the requested one is reported
        op = dict(ref, type="start_transfer", sync=kind == "replicate_shard",
                  method=fields.get("method") or "stream_records",
                  **{"from": fields["from_peer_id"], "to": fields["to_peer_id"]})
        return Result(self.cluster.propose(op))

    # -- collections ---------------------------------------------------------------------

    def list_collections(self, request: Request) -> Result:
        with self.cluster.lock:
            names = sorted(self.cluster.meta["collections"])
        return Result({"collections": [{"name": n} for n in names]})

    def create_collection(self, request: Request) -> Result:
        name = request.params["collection_name"]
        validate_collection_name(name)
        body = request.json_object()
        if body.get("sharding_method") not in (None, "auto"):
            raise unsupported("sharding_method `custom` (custom sharding)")
        for param in ("shard_number", "replication_factor", "write_consistency_factor"):
            _positive_param(body, param)
        size, distance = parse_vectors_config(body.get("vectors"))
        config = default_config(size, distance)
        apply_config_diff(config, body)
        params = body["params"] if isinstance(body.get("params"), dict) else body
        if params.get("shard_number") is None:  # upstream: one shard per peer
            config["params"]["shard_number"] = len(self.cluster.peer_ids())
        return Result(self.cluster.propose({"type": "create_collection", "collection": name, "config": config,
                                            "created_at": datetime.now(timezone.utc).isoformat()}))

    def get_collection(self, request: Request) -> Result:
        name, coll = self._resolve(request.params["collection_name"])
        infos = self._read_all(name, coll, {"type": "info", "payload_schema": coll["payload_schema"]})
        return Result({
            "status": "green",
            "optimizer_status": "ok",
            "indexed_vectors_count": 0,
            "points_count": sum(i["points_count"] for i in infos),
            "segments_count": len(infos),
            "config": coll["config"],
            "payload_schema": {field: pl.index_info(schema, sum(i["indexed"].get(field, 0) for i in infos))
                               for field, schema in sorted(coll["payload_schema"].items())},
            "created_at": coll["created_at"],
        })

    def update_collection(self, request: Request) -> Result:
        name, _ = self._resolve(request.params["collection_name"])
        body = request.json_object()
        for param in ("replication_factor", "write_consistency_factor"):
            _positive_param(body, param)
        return Result(self.cluster.propose({"type": "update_collection", "collection": name, "body": body}))

    def delete_collection(self, request: Request) -> Result:
        name = request.params["collection_name"]
        validate_collection_name(name)
        return Result(self.cluster.propose({"type": "delete_collection", "collection": name}))

    def collection_exists(self, request: Request) -> Result:
        name = request.params["collection_name"]
        validate_collection_name(name)
        with self.cluster.lock:
            meta = self.cluster.meta
            return Result({"exists": meta["aliases"].get(name, name) in meta["collections"]})

    # -- aliases -------------------------------------------------------------------------

    def update_aliases(self, request: Request) -> Result:
        actions = parse_actions(request.json())
        return Result(self.cluster.propose({"type": "aliases", "actions": actions}))

    def list_aliases(self, request: Request) -> Result:
        with self.cluster.lock:
            meta = self.cluster.meta
            return Result({"aliases": listing(meta["aliases"], list(meta["collections"]))})

    def collection_aliases(self, request: Request) -> Result:
        name = request.params["collection_name"]
        with self.cluster.lock:
            aliases = sorted(a for a, c in self.cluster.meta["aliases"].items() if c == name)
        return Result({"aliases": [{"alias_name": a, "collection_name": name} for a in aliases]})

    # -- payload indexes -------------------------------------------------------------------

    def create_payload_index(self, request: Request) -> Result:
        body = request.json_object()
        if not isinstance(body.get("field_name"), str) or not body["field_name"]:
            raise ApiError(400, "Json deserialize error: missing field `field_name`")
        pl.parse_path(body["field_name"])
        schema = pl.parse_field_schema(body.get("field_schema"))
        name, _ = self._resolve(request.params["collection_name"])
        self.cluster.propose({"type": "create_index", "collection": name, "field": body["field_name"],
                              "schema": schema})
        return _update_result(request, self.cluster.meta["commit"])

    def delete_payload_index(self, request: Request) -> Result:
        name, _ = self._resolve(request.params["collection_name"])
        self.cluster.propose({"type": "delete_index", "collection": name, "field": request.params["field_name"]})
        return _update_result(request, self.cluster.meta["commit"])

    # -- points: writes ----------------------------------------------------------------------

    def _write(self, request: Request, op: dict[str, Any]) -> Result:
        name, coll = self._resolve(request.params["collection_name"])
        params = coll["config"]["params"]
        shard_number, wcf = int(params["shard_number"]), int(params["write_consistency_factor"])
        per_shard: dict[int, dict[str, Any]] = {}
        if op["type"] == "upsert":
            Collection(name=name, config=coll["config"]).upsert(op["points"])  # validate before sending anywhere
            for raw in op["points"]:
                shard = per_shard.setdefault(shard_for(pts.parse_point_id(raw["id"]), shard_number),
                                             {"type": "upsert", "points": []})
                shard["points"].append(raw)
        elif op.get("ids") is not None:
            for point_id in op["ids"]:
                shard = per_shard.setdefault(shard_for(point_id, shard_number), dict(op, ids=[]))
                shard["ids"].append(point_id)
        else:
            per_shard = {int(sid): op for sid in coll["shards"]}
        operation_id = 0
        for shard_id, shard_op in sorted(per_shard.items()):
            operation_id = max(operation_id, self._update_shard(name, shard_id, shard_op, wcf))
        return _update_result(request, operation_id)

    # -- points: reads ------------------------------------------------------------------------

    def retrieve(self, request: Request) -> Result:
        body = request.json_object()
        ids = _retrieve_ids(body)
        name, coll = self._resolve(request.params["collection_name"])
        op = {"type": "retrieve", "ids": ids, "with_payload": body.get("with_payload", True),
              "with_vector": body.get("with_vector", False)}
        found = {pts.parse_point_id(r["id"]): r for shard in self._read_all(name, coll, op) for r in shard}
        return Result([found[i] for i in dict.fromkeys(ids) if i in found])

    def get_point(self, request: Request) -> Result:
        point_id = pts.parse_point_id(urllib.parse.unquote(request.params["id"]))
        name, coll = self._resolve(request.params["collection_name"])
        shard_id = shard_for(point_id, int(coll["config"]["params"]["shard_number"]))
        return Result(self._read_shard(name, shard_id, {"type": "get", "id": point_id}))

    def scroll(self, request: Request) -> Result:
        body = request.json_object()
        _no_shard_key(body)
        if body.get("order_by") is not None:
            raise unsupported("Scroll order_by")
        limit = _limit(body, "limit", 10)
        if body.get("offset") is not None:
            pts.parse_point_id(body["offset"])
        name, coll = self._resolve(request.params["collection_name"])
        op = {"type": "scroll", "offset": body.get("offset"), "limit": limit + 1, "filter": body.get("filter"),
              "with_payload": body.get("with_payload", True), "with_vector": body.get("with_vector", False)}
        merged = sorted((r for shard in self._read_all(name, coll, op) for r in shard),
                        key=lambda r: pts.id_sort_key(pts.parse_point_id(r["id"])))
        next_offset = merged[limit]["id"] if len(merged) > limit else None
        return Result({"points": merged[:limit], "next_page_offset": next_offset})

    def count(self, request: Request) -> Result:
        body = request.json_object()
        _no_shard_key(body)
        name, coll = self._resolve(request.params["collection_name"])
        return Result({"count": sum(self._read_all(name, coll, {"type": "count", "filter": body.get("filter")}))})

    def _search(self, request: Request, body: dict[str, Any], vector: Any) -> list[dict[str, Any]]:
        if body.get("using") not in (None, ""):
            raise bad_input(f"Not existing vector name error: {body['using']}")
        limit, offset = _limit(body, "limit", 10), _limit(body, "offset", 0)
        name, coll = self._resolve(request.params["collection_name"])
        vectors = coll["config"]["params"]["vectors"]
        pts.parse_vector(vector, int(vectors["size"]))
        op = {"type": "search", "vector": vector, "filter": body.get("filter"), "limit": offset + limit,
              "score_threshold": body.get("score_threshold"), "with_payload": body.get("with_payload"),
              "with_vector": body.get("with_vector")}
        sign = 1 if vectors["distance"] in _ASCENDING else -1
        merged = sorted((r for shard in self._read_all(name, coll, op) for r in shard),
                        key=lambda r: (sign * r["score"], pts.id_sort_key(pts.parse_point_id(r["id"]))))
        return merged[offset:offset + limit]

    def search_batch(self, request: Request) -> Result:
        return Result([self._search_request(request, s) for s in _searches(request.json_object())])

    def query_batch(self, request: Request) -> Result:
        return Result([self._query_request(request, s) for s in _searches(request.json_object())])

    # -- snapshots ------------------------------------------------------------------------------

    def _snapshot_collection(self, request: Request) -> str:
        return self._resolve(request.params["collection_name"])[0]

    def _local_shard_ids(self, name: str) -> list[int]:
        with self.cluster.lock:
            return sorted(sid for (coll, sid) in self.cluster.shards if coll == name)

    def create_snapshot(self, request: Request) -> Result:
        """Upstream: a collection snapshot on a peer holds that peer's local shards only."""
        name, coll = self._resolve(request.params["collection_name"])
        shards = {sid: self.cluster.local_points(name, sid) for sid in self._local_shard_ids(name)}
        merged = Collection(name=name, config=coll["config"], created_at=coll["created_at"],
                            payload_schema=dict(coll["payload_schema"]))
        for shard in shards.values():
            merged.points.update(shard.points)
        data = encode_snapshot(merged, self.store.version,
                               {"peer_id": self.cluster.peer_id,
                                "shards": {str(sid): shard.to_json() for sid, shard in shards.items()}})
        directory = self.snapshots._collection_dir(name)
        return Result(self.snapshots.write(directory, f"{name}-{self.cluster.peer_id}", data))

    def _recover_shard(self, name: str, shard_id: int, data: dict[str, Any], priority: str | None) -> None:
        """Install a shard's points on this peer's replica, then upstream's priority rule:
        ``snapshot`` (default) makes it the source of truth (other Active replicas turn Dead
        and recover from it), ``replica`` marks it Dead to be recovered from the others when
        there are any, ``no_sync`` just activates it."""
        _, coll = self._resolve(name)
        shard = Collection.from_json(name, data)
        if shard.config["params"]["vectors"] != coll["config"]["params"]["vectors"]:
            raise bad_input("Snapshot is not compatible with existing collection: Collection vectors: "
                            f"{coll['config']['params']['vectors']} Snapshot Vectors: "
                            f"{shard.config['params']['vectors']}")
        if str(shard_id) not in coll["shards"]:
            raise not_found(f"shard {shard_id} not found")
        me = self.cluster.peer_id
        if str(me) not in coll["shards"][str(shard_id)]:
            raise bad_input(f"Shard {shard_id} is not a local shard")
        self.cluster.install(name, shard_id, shard.to_json(), [], None)
        others = [int(p) for p, s in coll["shards"][str(shard_id)].items() if int(p) != me and s == "Active"]
        mine = coll["shards"][str(shard_id)][str(me)]
        ref = {"type": "set_replica_state", "collection": name, "shard_id": shard_id}
        if others and priority == "replica":
            if mine == "Active":
                self.cluster.propose(dict(ref, peer_id=me, state="Dead"))
            return
        if mine != "Active":
            self.cluster.propose(dict(ref, peer_id=me, state="Active"))
        if priority in (None, "snapshot"):
            for peer in others:
                self.cluster.propose(dict(ref, peer_id=peer, state="Dead"))

    def _recover_collection(self, name: str, data: bytes, priority: str | None) -> None:
        document = decode_document(data, self.store.version)
        if "shards" not in document:
            raise unsupported("Recovering a single-node snapshot in cluster mode (use shard snapshots)")
        for shard_id in self._local_shard_ids(name):
            if str(shard_id) in document["shards"]:
                self._recover_shard(name, shard_id, document["shards"][str(shard_id)], priority)

    def recover_snapshot(self, request: Request) -> Result:
        body = request.json()
        name = self._snapshot_collection(request)
        data = self.snapshots.fetch(body)
        self._recover_collection(name, data, body.get("priority"))
        return Result(True)

    def upload_snapshot(self, request: Request) -> Result:
        check_priority(request.query.get("priority"))
        name = self._snapshot_collection(request)
        data = _multipart_field(request, "snapshot")
        self.snapshots.verify_checksum(data, request.query.get("checksum"))
        self._recover_collection(name, data, request.query.get("priority"))
        return Result(True)

    # -- shard snapshots -----------------------------------------------------------------------

    def _shard(self, request: Request) -> tuple[str, int]:
        name, coll = self._resolve(request.params["collection_name"])
        try:
            shard_id = int(request.params["shard_id"])
        except ValueError:
            raise bad_input(f"Invalid shard id {request.params['shard_id']!r}") from None
        if str(shard_id) not in coll["shards"]:
            raise not_found(f"shard {shard_id} not found")
        return name, shard_id

    def _local_shard(self, request: Request) -> tuple[str, int]:
        name, shard_id = self._shard(request)
        if str(self.cluster.peer_id) not in self.cluster.meta["collections"][name]["shards"].get(str(shard_id), {}):
            raise bad_input(f"Shard {shard_id} is not a local or queue proxy shard")
        return name, shard_id

    def list_shard_snapshots(self, request: Request) -> Result:
        name, shard_id = self._local_shard(request)
        return Result(self.snapshots.list(name, shard_id))

    def create_shard_snapshot(self, request: Request) -> Result:
        """Upstream's name: ``<collection>-shard-<id>-<UTC timestamp>.snapshot``."""
        name, shard_id = self._local_shard(request)
        data = encode_snapshot(self.cluster.local_points(name, shard_id), self.store.version,
                               {"peer_id": self.cluster.peer_id, "shard_id": shard_id})
        return Result(self.snapshots.write(self.snapshots._collection_dir(name, shard_id),
                                           f"{name}-shard-{shard_id}", data))

    def download_shard_snapshot(self, request: Request) -> Response:
        name, shard_id = self._local_shard(request)
        snapshot = urllib.parse.unquote(request.params["snapshot_name"])
        handle = self.snapshots.open(name, snapshot, shard_id)
        return Response(200, b"", "application/octet-stream",
                        {"Content-Disposition": f'attachment; filename="{snapshot}"'}, file=handle)

    def delete_shard_snapshot(self, request: Request) -> Result:
        name, shard_id = self._local_shard(request)
        self.snapshots.delete(name, urllib.parse.unquote(request.params["snapshot_name"]), shard_id)
        return Result(True)

    def recover_shard_snapshot(self, request: Request) -> Result:
        """``ShardSnapshotRecover``: location (an http(s) URL, or the name of a file in the
        shard's snapshot directory; never file://), priority, checksum, api_key."""
        body = request.json()
        name, shard_id = self._shard(request)
        if isinstance(body, dict) and not urllib.parse.urlparse(str(body.get("location", ""))).scheme:
            self._local_shard(request)  # a file of the shard's directory: upstream asks the shard be here
        data = self.snapshots.fetch_shard(name, shard_id, body)
        document = decode_document(data, self.store.version)
        self._recover_shard(name, shard_id, document["collection"], body.get("priority"))
        return Result(True)

    def upload_shard_snapshot(self, request: Request) -> Result:
        check_priority(request.query.get("priority"))
        name, shard_id = self._shard(request)
        data = _multipart_field(request, "snapshot")
        self.snapshots.verify_checksum(data, request.query.get("checksum"))
        document = decode_document(data, self.store.version)
        self._recover_shard(name, shard_id, document["collection"], request.query.get("priority"))
        return Result(True)

