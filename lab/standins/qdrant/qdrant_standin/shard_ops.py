"""Write and read operations on one set of points, shared by single-node and cluster mode.

LAB TEST FIXTURE (QueryGPT Qdrant stand-in, NOT Qdrant).

Why: in cluster mode a write is sent to every replica of a shard and a read to one
replica of each shard, so operations must be plain JSON documents that travel between
peers and are applied the same way a single-node collection applies them. A write
operation is ``{"type": "upsert"|"delete"|"payload", ...}``; a read operation is
``{"type": "search"|"scroll"|"count"|"retrieve"|"get"|"info", ...}``. Both are applied to
a ``storage.Collection`` (a whole collection on a single node, one shard replica in a
cluster).
"""

from __future__ import annotations

from typing import Any, Callable

from . import payload as pl
from . import points as pts
from .errors import not_found
from .storage import Collection


def payload_edit(op: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    """The in-place payload edit a ``{"type": "payload"}`` operation describes."""
    mode = op["mode"]
    if mode == "set":
        path = None if op.get("key") is None else pl.parse_path(op["key"])
        return lambda old: pl.set_at(old, path, op["payload"])
    if mode == "overwrite":
        def overwrite(old: dict[str, Any]) -> None:
            old.clear()
            old.update(op["payload"])
        return overwrite
    if mode == "delete":
        paths = [pl.parse_path(k) for k in op["keys"]]

        def delete(old: dict[str, Any]) -> None:
            for path in paths:
                pl.remove_at(old, path)
        return delete
    return dict.clear


def _ids(raw: Any) -> list[pts.PointId] | None:
    return None if raw is None else [pts.parse_point_id(i) for i in raw]


def apply_write(collection: Collection, op: dict[str, Any]) -> int:
    """Apply a write operation; returns the collection's new operation id."""
    kind = op["type"]
    if kind == "upsert":
        return collection.upsert(op["points"])
    if kind == "delete":
        ids = _ids(op.get("ids"))
        return collection.delete(None if ids is None else set(ids), op.get("filter"))
    if kind == "payload":
        return collection.edit_payloads(collection.select(_ids(op.get("ids")), op.get("filter")),
                                        payload_edit(op))
    raise ValueError(f"unknown write operation {kind!r}")


def apply_read(collection: Collection, op: dict[str, Any]) -> Any:
    """Apply a read operation to the points at hand (one shard, in a cluster)."""
    kind = op["type"]
    flt = op.get("filter")
    if kind == "search":
        query = pts.prepare_vector(pts.parse_vector(op["vector"], collection.size), collection.distance)
        candidates = [p for p in collection.points.values() if pts.matches(flt, p)]
        ranked = pts.rank(candidates, query, collection.distance, op.get("score_threshold"))
        return [pts.scored_point(p, s, op.get("with_payload"), op.get("with_vector"))
                for s, p in ranked[:op["limit"]]]
    if kind == "scroll":
        offset = None if op.get("offset") is None else pts.id_sort_key(pts.parse_point_id(op["offset"]))
        selected = sorted((p for p in collection.points.values()
                           if (offset is None or pts.id_sort_key(p.id) >= offset) and pts.matches(flt, p)),
                          key=lambda p: pts.id_sort_key(p.id))
        return [pts.record(p, op.get("with_payload", True), op.get("with_vector", False))
                for p in selected[:op["limit"]]]
    if kind == "count":
        return sum(1 for p in collection.points.values() if pts.matches(flt, p))
    if kind == "retrieve":
        found = [collection.points[i] for i in dict.fromkeys(_ids(op["ids"]) or []) if i in collection.points]
        return [pts.record(p, op.get("with_payload", True), op.get("with_vector", False)) for p in found]
    if kind == "get":
        point = collection.points.get(pts.parse_point_id(op["id"]))
        if point is None:
            raise not_found(f"No point with id {op['id']} found")
        return pts.record(point, True, True)
    if kind == "info":
        return {"points_count": len(collection.points),
                "indexed": {name: collection._indexed_points(name, schema)
                            for name, schema in op.get("payload_schema", {}).items()}}
    raise ValueError(f"unknown read operation {kind!r}")
