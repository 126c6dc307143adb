"""Collections in memory, persisted as one JSON file per collection.

LAB TEST FIXTURE (QueryGPT Qdrant stand-in, NOT Qdrant).

Why: lab and test data must survive service restarts (the role's handlers
restart qdrant), and a crash mid-write must not corrupt it, so every write
rewrites the collection file through a temp file + fsync + rename. Whole-file
rewrites are fine at lab scale (thousands of points), not for production.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from . import payload as pl
from . import points as pts
from .aliases import AliasMap
from .errors import ApiError, bad_input, collection_not_found, not_found, unsupported

COLLECTION_FILE = "standin-collection.json"
_INVALID_NAME = re.compile(r'[<>:"/\\|?*\x00-\x1f]')
_CONFIG_SECTIONS = {
    # request key -> key in the CollectionInfo.config returned by GET
    "hnsw_config": "hnsw_config",
    "optimizers_config": "optimizer_config",
    "wal_config": "wal_config",
    "quantization_config": "quantization_config",
    "strict_mode_config": "strict_mode_config",
    "metadata": "metadata",
}
_PARAM_KEYS = (
    "shard_number",
    "replication_factor",
    "write_consistency_factor",
    "read_fan_out_factor",
    "on_disk_payload",
)


def validate_collection_name(name: str) -> None:
    """Reject names that could escape the storage directory, as upstream rejects them."""
    if not name or name in (".", "..") or len(name) > 255 or _INVALID_NAME.search(name):
        raise bad_input(f"Validation error in path parameters: invalid collection name {name!r}")


def write_atomically(path: Path, data: bytes) -> None:
    """Write via temp file + fsync + rename so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _merge(target: dict[str, Any], diff: dict[str, Any]) -> None:
    for key, value in diff.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value


def default_config(size: int, distance: str) -> dict[str, Any]:
    """Upstream 1.x defaults, shaped like GET /collections/{name} ``config``."""
    return {
        "params": {
            "vectors": {"size": size, "distance": distance},
            "shard_number": 1,
            "replication_factor": 1,
            "write_consistency_factor": 1,
            "on_disk_payload": True,
        },
        "hnsw_config": {
            "m": 16,
            "ef_construct": 100,
            "full_scan_threshold": 10000,
            "max_indexing_threads": 0,
            "on_disk": False,
        },
        "optimizer_config": {
            "deleted_threshold": 0.2,
            "vacuum_min_vector_number": 1000,
            "default_segment_number": 0,
            "max_segment_size": None,
            "memmap_threshold": None,
            "indexing_threshold": 10000,
            "flush_interval_sec": 5,
            "max_optimization_threads": None,
        },
        "wal_config": {"wal_capacity_mb": 32, "wal_segments_ahead": 0},
        "quantization_config": None,
        "strict_mode_config": {"enabled": False},
    }


def apply_config_diff(config: dict[str, Any], body: dict[str, Any]) -> None:
    """Merge the optional sections of a create/update request into ``config``."""
    if body.get("sparse_vectors"):
        raise unsupported("Sparse vectors")
    for request_key, config_key in _CONFIG_SECTIONS.items():
        diff = body.get(request_key)
        if isinstance(diff, dict) and isinstance(config.get(config_key), dict):
            _merge(config[config_key], diff)
        elif diff is not None:
            config[config_key] = copy.deepcopy(diff)
    params: dict[str, Any] = body["params"] if isinstance(body.get("params"), dict) else body
    for key in _PARAM_KEYS:
        if params.get(key) is not None:
            config["params"][key] = params[key]


def parse_vectors_config(raw: Any) -> tuple[int, str]:
    """Only the single unnamed dense vector our app uses is supported."""
    if not isinstance(raw, dict) or "size" not in raw:
        raise unsupported("Collections without a single unnamed vector (named/sparse vectors)")
    size, distance = raw.get("size"), raw.get("distance")
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 65536:
        raise bad_input("Validation error in JSON body: [vectors.size: value must be between 1 and 65536]")
    if distance not in pts.DISTANCES:
        raise ApiError(
            400,
            f"Json deserialize error: unknown variant `{distance}`, expected one of "
            + ", ".join(f"`{d}`" for d in pts.DISTANCES),
        )
    return size, distance


@dataclass
class Collection:
    """A collection's config and points; ``operation_id`` counts writes; ``payload_schema``
    maps an indexed field to the PayloadFieldSchema it was created with."""

    name: str
    config: dict[str, Any]
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    operation_id: int = 0
    points: dict[pts.PointId, pts.Point] = field(default_factory=dict)
    payload_schema: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return int(self.config["params"]["vectors"]["size"])

    @property
    def distance(self) -> str:
        return str(self.config["params"]["vectors"]["distance"])

    def info(self) -> dict[str, Any]:
        """Shape of upstream's ``CollectionInfo``."""
        return {
            "status": "green",
            "optimizer_status": "ok",
            "indexed_vectors_count": 0,
            "points_count": len(self.points),
            "segments_count": 1,
            "config": self.config,
            "payload_schema": {name: pl.index_info(schema, self._indexed_points(name, schema))
                               for name, schema in sorted(self.payload_schema.items())},
            "created_at": self.created_at,
        }

    def _indexed_points(self, field_name: str, schema: Any) -> int:
        """Points holding at least one value the index type takes, as upstream counts them."""
        kind = schema["type"] if isinstance(schema, dict) else schema
        return sum(1 for p in self.points.values()
                   if any(pl.indexable(v, kind) for v in pts.payload_values(p.payload, field_name)))

    def upsert(self, raw_points: list[dict[str, Any]]) -> int:
        """Validate everything first so a bad point leaves the collection untouched."""
        prepared = []
        for raw in raw_points:
            if not isinstance(raw, dict) or "id" not in raw:
                raise bad_input("each point needs an id")
            payload = raw.get("payload") or {}
            if not isinstance(payload, dict):
                raise bad_input("payload must be an object")
            vector = pts.parse_vector(raw.get("vector"), self.size)
            prepared.append((pts.parse_point_id(raw["id"]), vector, payload))
        self.operation_id += 1
        for point_id, vector, payload in prepared:
            self.points[point_id] = pts.Point(
                id=point_id,
                vector=pts.prepare_vector(vector, self.distance),
                payload=payload,
                version=self.operation_id,
            )
        return self.operation_id

    def delete(self, ids: set[pts.PointId] | None, flt: Any) -> int:
        doomed = ids if ids is not None else {p.id for p in self.points.values() if pts.matches(flt, p)}
        self.operation_id += 1
        for point_id in doomed:
            self.points.pop(point_id, None)
        return self.operation_id

    def select(self, ids: list[pts.PointId] | None, flt: Any) -> list[pts.PointId]:
        """The points a payload edit applies to: listed ids (all must exist) or a filter."""
        if ids is None:
            return [p.id for p in self.points.values() if pts.matches(flt, p)]
        missing = next((i for i in ids if i not in self.points), None)
        if missing is not None:
            raise not_found(f"No point with id {missing} found")
        return list(dict.fromkeys(ids))

    def edit_payloads(self, ids: list[pts.PointId], edit: Callable[[dict[str, Any]], None]) -> int:
        """Apply ``edit`` to a copy of each payload first, so a failure changes nothing."""
        edited = {}
        for point_id in ids:
            payload = copy.deepcopy(self.points[point_id].payload)
            edit(payload)
            edited[point_id] = payload
        self.operation_id += 1
        for point_id, payload in edited.items():
            self.points[point_id].payload = payload
            self.points[point_id].version = self.operation_id
        return self.operation_id

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "config": self.config,
            "created_at": self.created_at,
            "operation_id": self.operation_id,
            "payload_schema": self.payload_schema,
            "points": [
                {"id": p.id, "vector": p.vector, "payload": p.payload, "version": p.version}
                for p in sorted(self.points.values(), key=lambda p: pts.id_sort_key(p.id))
            ],
        }

    @classmethod
    def from_json(cls, name: str, data: dict[str, Any]) -> "Collection":
        collection = cls(
            name=name,
            config=data["config"],
            created_at=data.get("created_at") or datetime.now(timezone.utc).isoformat(),
            operation_id=int(data.get("operation_id", 0)),
            payload_schema=dict(data.get("payload_schema") or {}),
        )
        for raw in data["points"]:
            point_id = pts.parse_point_id(raw["id"])
            collection.points[point_id] = pts.Point(
                id=point_id,
                vector=[float(x) for x in raw["vector"]],
                payload=raw.get("payload") or {},
                version=int(raw.get("version", 0)),
            )
        return collection


class Store:
    """All collections; one lock serialises access (lab-scale, simplicity first)."""

    def __init__(self, storage_path: Path, version: str) -> None:
        self.root = storage_path / "collections"
        self.version = version
        self.lock = threading.RLock()
        self.collections: dict[str, Collection] = {}
        self.aliases = AliasMap(storage_path, write_atomically)
        self.root.mkdir(parents=True, exist_ok=True)
        for child in sorted(self.root.iterdir()):
            data_file = child / COLLECTION_FILE
            if data_file.is_file():
                data = json.loads(data_file.read_text(encoding="utf-8"))
                self.collections[child.name] = Collection.from_json(child.name, data)

    def resolve(self, name: str) -> str:
        """The collection behind a name or alias (upstream's resolve_name: aliases first)."""
        return self.aliases.resolve(name)

    def get(self, name: str) -> Collection:
        """A collection by name or alias; the 404 names the resolved collection, as upstream."""
        validate_collection_name(name)
        real_name = self.resolve(name)
        try:
            return self.collections[real_name]
        except KeyError:
            raise collection_not_found(real_name) from None

    def exists(self, name: str) -> bool:
        return self.resolve(name) in self.collections

    def save(self, collection: Collection) -> None:
        data = dict(collection.to_json(), standin_version=self.version)
        encoded = json.dumps(data, separators=(",", ":")).encode("utf-8")
        write_atomically(self.root / collection.name / COLLECTION_FILE, encoded)

    def create(self, name: str, body: dict[str, Any]) -> None:
        validate_collection_name(name)
        if name in self.collections:
            raise ApiError(409, f"Wrong input: Collection `{name}` already exists!")
        if name in self.aliases.mapping:
            raise bad_input(f"Can't create collection with name {name}. Alias with the same name already exists")
        size, distance = parse_vectors_config(body.get("vectors"))
        config = default_config(size, distance)
        apply_config_diff(config, body)
        collection = Collection(name=name, config=config)
        self.save(collection)
        self.collections[name] = collection

    def update(self, name: str, body: dict[str, Any]) -> None:
        collection = self.get(name)
        config = copy.deepcopy(collection.config)
        vectors_diff = body.get("vectors")
        if isinstance(vectors_diff, dict):
            diff = vectors_diff.get("", vectors_diff)
            _merge(config["params"]["vectors"], {
                k: v for k, v in diff.items() if k not in ("size", "distance")
            })
        apply_config_diff(config, body)
        collection.config = config
        self.save(collection)

    def delete(self, name: str) -> bool:
        """By its own name only: upstream does not resolve aliases here (an alias gives false)."""
        validate_collection_name(name)
        self.aliases.drop_collection(name)
        if self.collections.pop(name, None) is None:
            return False
        shutil.rmtree(self.root / name, ignore_errors=True)
        return True

    def replace(self, collection: Collection) -> None:
        """Install a recovered collection, keeping upstream's config compatibility check."""
        existing = self.collections.get(collection.name)
        if existing is not None and existing.config["params"]["vectors"] != collection.config["params"]["vectors"]:
            raise bad_input(
                "Snapshot is not compatible with existing collection: Collection vectors: "
                f"{existing.config['params']['vectors']} Snapshot Vectors: "
                f"{collection.config['params']['vectors']}"
            )
        self.save(collection)
        self.collections[collection.name] = collection
