"""REST API with upstream Qdrant's routes, auth rules and JSON envelopes.

LAB TEST FIXTURE (QueryGPT Qdrant stand-in, NOT Qdrant).

Why: the app and tests talk to Qdrant through the official qdrant-client over
REST, so routes, status codes and response shapes follow upstream's OpenAPI
spec. Auth mirrors upstream: ``/``, ``/healthz``, ``/livez``, ``/readyz`` are
open; everything else needs ``api-key:`` or ``Authorization: Bearer``; the
read-only key may read but gets 403 on writes. Bodies are compressed as upstream's
actix-web ``Compress`` middleware does (compression.py): inside the auth check, so
401s stay plain, and snapshot downloads are streamed from the file.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, BinaryIO, Callable

from . import compression
from . import payload as pl
from . import points as pts
from .aliases import parse_actions
from .config import Settings
from .errors import ApiError, bad_input, forbidden, not_emulated, not_found, unsupported
from .metrics import RequestMetrics
from .shard_ops import apply_write
from .snapshots import SnapshotManager, check_priority
from .storage import Store

LOG = logging.getLogger("qdrant.rest")
FILE_CHUNK = 64 * 1024  # actix-files' ChunkedReadFile reads at most 64 KiB at a time
PUBLIC, READ, WRITE = "public", "read", "write"
MISSING_KEY = "Must provide an API key or an Authorization bearer token"
INVALID_KEY = "Invalid API key or JWT"
STANDALONE = "Qdrant is running in standalone mode"  # upstream's StorageError::StandaloneMode (405)


@dataclass
class Request:
    method: str
    params: dict[str, str]
    query: dict[str, str]
    headers: Any
    body: bytes
    path: str = ""

    def json(self) -> Any:
        if not self.body.strip():
            return {}
        try:
            return json.loads(self.body)
        except ValueError as err:
            raise ApiError(400, f"Json deserialize error: {err}") from None

    def json_object(self) -> dict[str, Any]:
        body = self.json()
        if not isinstance(body, dict):
            raise ApiError(400, "Json deserialize error: expected a JSON object")
        return body

    def flag(self, name: str, default: bool) -> bool:
        value = self.query.get(name)
        return default if value is None else value.lower() == "true"


@dataclass
class Response:
    """A response; ``file`` (sent instead of ``body`` and closed afterwards) streams a
    snapshot from disk instead of holding it in memory."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    file: BinaryIO | None = None

    def size(self) -> int:
        return os.fstat(self.file.fileno()).st_size if self.file is not None else len(self.body)

    def chunks(self) -> Iterator[bytes]:
        if self.file is None:
            if self.body:
                yield self.body
            return
        while chunk := self.file.read(FILE_CHUNK):
            yield chunk


class Result:
    """Marker for a successful JSON result, wrapped into upstream's envelope later."""

    def __init__(self, value: Any) -> None:
        self.value = value


Handler = Callable[["App", Request], "Result | Response"]


@dataclass
class Route:
    method: str
    pattern: str
    access: str
    handler: Handler
    regex: re.Pattern[str] = field(init=False)

    def __post_init__(self) -> None:
        self.regex = re.compile(
            "^" + re.sub(r"\\{(\w+)\\}", r"(?P<\1>[^/]+)", re.escape(self.pattern)) + "$"
        )


def _text(body: str, status: int = 200) -> Response:
    return Response(status, body.encode(), "text/plain; charset=utf-8")


def _update_result(request: Request, operation_id: int) -> Result:
    status = "completed" if request.flag("wait", False) else "acknowledged"
    return Result({"operation_id": operation_id, "status": status})


def _no_shard_key(body: dict[str, Any]) -> None:
    """Stand-in collections are never custom-sharded: a shard key would be silently wrong."""
    if body.get("shard_key") is not None:
        raise unsupported("shard_key (custom sharding)")


def _retrieve_ids(body: dict[str, Any]) -> list[pts.PointId]:
    """The ids of a POST /points (retrieve) body, checked as upstream checks them."""
    _no_shard_key(body)
    if not isinstance(body.get("ids"), list):
        raise bad_input("Validation error in JSON body: [ids: field is required]")
    return [pts.parse_point_id(i) for i in body["ids"]]


def _point_ids(raw: Any) -> list[pts.PointId]:
    if not isinstance(raw, list):
        raise ApiError(400, "Json deserialize error: points must be a list of point ids")
    return [pts.parse_point_id(i) for i in raw]


def _selection(body: dict[str, Any]) -> tuple[list[pts.PointId] | None, Any]:
    """``points`` or ``filter`` of SetPayload/DeletePayload (ids win when both are given, as upstream)."""
    _no_shard_key(body)
    if body.get("points") is not None:
        return _point_ids(body["points"]), None
    if body.get("filter") is not None:
        return None, body["filter"]
    raise ApiError(400, "Json deserialize error: Either list of point ids or filter must be provided")


def _payload_object(body: dict[str, Any]) -> dict[str, Any]:
    if "payload" not in body:
        raise ApiError(400, "Json deserialize error: missing field `payload`")
    if not isinstance(body["payload"], dict):
        raise ApiError(400, "Json deserialize error: payload must be a JSON object")
    return body["payload"]


def _searches(body: dict[str, Any]) -> list[dict[str, Any]]:
    searches = body.get("searches")
    if not isinstance(searches, list):
        raise ApiError(400, "Json deserialize error: missing field `searches`")
    if not all(isinstance(s, dict) for s in searches):
        raise ApiError(400, "Json deserialize error: each of `searches` must be a JSON object")
    return searches


def _limit(body: dict[str, Any], name: str, default: int) -> int:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise bad_input(f"Validation error in JSON body: [{name}: must be a non-negative integer]")
    return value


class App:
    """Shared state behind the HTTP handler threads."""

    def __init__(self, settings: Settings, store: Store, snapshots: SnapshotManager) -> None:
        self.settings = settings
        self.store = store
        self.snapshots = snapshots
        self.metrics = RequestMetrics()

    # -- service ---------------------------------------------------------------

    def root(self, request: Request) -> Response:
        body = {"title": "qdrant - vector search engine", "version": self.store.version,
                "commit": "lab-standin"}
        return Response(200, json.dumps(body).encode())

    def healthz(self, request: Request) -> Response:
        return _text("healthz check passed")

    def readyz(self, request: Request) -> Response:
        return _text("all shards are ready")

    def prometheus(self, request: Request) -> Response:
        return Response(200, self.metrics.render(self.store, self.store.version).encode(),
                        "text/plain; version=0.0.4")

    # -- collections -----------------------------------------------------------

    def list_collections(self, request: Request) -> Result:
        with self.store.lock:
            names = sorted(self.store.collections)
        return Result({"collections": [{"name": n} for n in names]})

    def create_collection(self, request: Request) -> Result:
        with self.store.lock:
            self.store.create(request.params["collection_name"], request.json_object())
        return Result(True)

    def get_collection(self, request: Request) -> Result:
        with self.store.lock:
            return Result(self.store.get(request.params["collection_name"]).info())

    def update_collection(self, request: Request) -> Result:
        with self.store.lock:
            self.store.update(request.params["collection_name"], request.json_object())
        return Result(True)

    def delete_collection(self, request: Request) -> Result:
        with self.store.lock:
            return Result(self.store.delete(request.params["collection_name"]))

    def collection_exists(self, request: Request) -> Result:
        with self.store.lock:
            return Result({"exists": self.store.exists(request.params["collection_name"])})

    # -- aliases ---------------------------------------------------------------

    def update_aliases(self, request: Request) -> Result:
        actions = parse_actions(request.json())
        with self.store.lock:
            self.store.aliases.apply(actions, self.store.collections.__contains__)
        return Result(True)

    def list_aliases(self, request: Request) -> Result:
        with self.store.lock:
            return Result({"aliases": self.store.aliases.listing(list(self.store.collections))})

    def collection_aliases(self, request: Request) -> Result:
        """Upstream takes the name as given (no alias resolution, no existence check)."""
        name = request.params["collection_name"]
        with self.store.lock:
            return Result({"aliases": [{"alias_name": a, "collection_name": name}
                                       for a in self.store.aliases.of_collection(name)]})

    # -- payload indexes -------------------------------------------------------

    def create_payload_index(self, request: Request) -> Result:
        """Recorded and reported in ``payload_schema`` like upstream; filters here scan every
        point anyway, so an index changes nothing but what the collection info shows."""
        body = request.json_object()
        if not isinstance(body.get("field_name"), str) or not body["field_name"]:
            raise ApiError(400, "Json deserialize error: missing field `field_name`")
        pl.parse_path(body["field_name"])
        schema = pl.parse_field_schema(body.get("field_schema"))
        with self.store.lock:
            collection = self.store.get(request.params["collection_name"])
            collection.payload_schema[body["field_name"]] = schema
            collection.operation_id += 1
            self.store.save(collection)
            return _update_result(request, collection.operation_id)

    def delete_payload_index(self, request: Request) -> Result:
        """Deleting an index that does not exist succeeds, as upstream."""
        with self.store.lock:
            collection = self.store.get(request.params["collection_name"])
            collection.payload_schema.pop(request.params["field_name"], None)
            collection.operation_id += 1
            self.store.save(collection)
            return _update_result(request, collection.operation_id)

    # -- payloads --------------------------------------------------------------

    def _write(self, request: Request, op: dict[str, Any]) -> Result:
        """Apply a write operation (shard_ops); cluster mode sends it to the shard replicas."""
        with self.store.lock:
            collection = self.store.get(request.params["collection_name"])
            operation_id = apply_write(collection, op)
            self.store.save(collection)
        return _update_result(request, operation_id)

    def _edit_payloads(self, request: Request, ids: list[pts.PointId] | None, flt: Any,
                       op: dict[str, Any]) -> Result:
        return self._write(request, dict(op, type="payload", ids=ids, filter=flt))

    def set_payload(self, request: Request) -> Result:
        body = request.json_object()
        payload = _payload_object(body)
        ids, flt = _selection(body)
        if body.get("key") is not None:
            pl.parse_path(body["key"])
        return self._edit_payloads(request, ids, flt, {"mode": "set", "payload": payload, "key": body.get("key")})

    def overwrite_payload(self, request: Request) -> Result:
        """The whole payload replaced; upstream ignores ``key`` here."""
        body = request.json_object()
        payload = _payload_object(body)
        ids, flt = _selection(body)
        return self._edit_payloads(request, ids, flt, {"mode": "overwrite", "payload": payload})

    def delete_payload(self, request: Request) -> Result:
        body = request.json_object()
        if not isinstance(body.get("keys"), list):
            raise ApiError(400, "Json deserialize error: missing field `keys`")
        for key in body["keys"]:
            pl.parse_path(key)
        ids, flt = _selection(body)
        return self._edit_payloads(request, ids, flt, {"mode": "delete", "keys": body["keys"]})

    def clear_payload(self, request: Request) -> Result:
        body = request.json_object()
        _no_shard_key(body)
        if body.get("points") is not None:
            ids, flt = _point_ids(body["points"]), None
        elif body.get("filter") is not None:
            ids, flt = None, body["filter"]
        else:
            raise ApiError(400, "Json deserialize error: data did not match any variant of untagged enum "
                           "PointsSelector")
        return self._edit_payloads(request, ids, flt, {"mode": "clear"})

    # -- points ----------------------------------------------------------------

    def upsert(self, request: Request) -> Result:
        body = request.json_object()
        _no_shard_key(body)
        # newer upstreams' conditional upserts: ignoring them would overwrite what they protect
        if body.get("update_filter") is not None:
            raise unsupported("Upsert update_filter")
        if body.get("update_mode") not in (None, "upsert"):
            raise unsupported(f"Upsert update_mode `{body['update_mode']}`")
        if "batch" in body:
            batch = body["batch"]
            if not isinstance(batch, dict) or not isinstance(batch.get("ids"), list):
                raise bad_input("batch needs ids, vectors and optional payloads")
            payloads = batch.get("payloads") or [None] * len(batch["ids"])
            vectors = batch.get("vectors")
            if not isinstance(vectors, list) or not len(batch["ids"]) == len(vectors) == len(payloads):
                raise bad_input("batch ids, vectors and payloads must have the same length")
            raw_points = [{"id": i, "vector": v, "payload": p}
                          for i, v, p in zip(batch["ids"], vectors, payloads)]
        elif isinstance(body.get("points"), list):
            raw_points = body["points"]
        else:
            raise bad_input("Validation error in JSON body: [points: field is required]")
        return self._write(request, {"type": "upsert", "points": raw_points})

    def delete_points(self, request: Request) -> Result:
        body = request.json_object()
        _no_shard_key(body)
        ids = None
        if isinstance(body.get("points"), list):
            ids = list(dict.fromkeys(pts.parse_point_id(i) for i in body["points"]))
        elif body.get("filter") is None:
            raise bad_input("Validation error in JSON body: [points or filter is required]")
        return self._write(request, {"type": "delete", "ids": ids, "filter": body.get("filter")})

    def retrieve(self, request: Request) -> Result:
        body = request.json_object()
        ids = _retrieve_ids(body)
        with_payload = body.get("with_payload", True)
        with self.store.lock:
            collection = self.store.get(request.params["collection_name"])
            found = [collection.points[i] for i in dict.fromkeys(ids) if i in collection.points]
            return Result([pts.record(p, with_payload, body.get("with_vector", False)) for p in found])

    def get_point(self, request: Request) -> Result:
        point_id = pts.parse_point_id(urllib.parse.unquote(request.params["id"]))
        with self.store.lock:
            collection = self.store.get(request.params["collection_name"])
            point = collection.points.get(point_id)
            if point is None:
                raise not_found(f"No point with id {point_id} found")
            return Result(pts.record(point, True, True))

    def scroll(self, request: Request) -> Result:
        body = request.json_object()
        _no_shard_key(body)
        if body.get("order_by") is not None:
            raise unsupported("Scroll order_by")
        limit = _limit(body, "limit", 10)
        offset = None if body.get("offset") is None else pts.id_sort_key(pts.parse_point_id(body["offset"]))
        with self.store.lock:
            collection = self.store.get(request.params["collection_name"])
            selected = sorted(
                (p for p in collection.points.values()
                 if (offset is None or pts.id_sort_key(p.id) >= offset) and pts.matches(body.get("filter"), p)),
                key=lambda p: pts.id_sort_key(p.id),
            )
            page = [pts.record(p, body.get("with_payload", True), body.get("with_vector", False))
                    for p in selected[:limit]]
            next_offset = selected[limit].id if len(selected) > limit else None
        return Result({"points": page, "next_page_offset": next_offset})

    def count(self, request: Request) -> Result:
        body = request.json_object()
        _no_shard_key(body)
        with self.store.lock:
            collection = self.store.get(request.params["collection_name"])
            total = sum(1 for p in collection.points.values() if pts.matches(body.get("filter"), p))
        return Result({"count": total})

    def _search(self, request: Request, body: dict[str, Any], vector: Any) -> list[dict[str, Any]]:
        if body.get("using") not in (None, ""):
            raise bad_input(f"Not existing vector name error: {body['using']}")
        limit, offset = _limit(body, "limit", 10), _limit(body, "offset", 0)
        with self.store.lock:
            collection = self.store.get(request.params["collection_name"])
            query = pts.prepare_vector(pts.parse_vector(vector, collection.size), collection.distance)
            candidates = [p for p in collection.points.values() if pts.matches(body.get("filter"), p)]
            ranked = pts.rank(candidates, query, collection.distance, body.get("score_threshold"))
            return [pts.scored_point(p, s, body.get("with_payload"), body.get("with_vector"))
                    for s, p in ranked[offset:offset + limit]]

    def _search_request(self, request: Request, body: dict[str, Any]) -> list[dict[str, Any]]:
        """One SearchRequest (legacy search, alone or in a batch)."""
        _no_shard_key(body)
        vector = body.get("vector")
        if isinstance(vector, dict) and "vector" in vector:  # NamedVector form
            body = dict(body, using=vector.get("name"))
            vector = vector["vector"]
        return self._search(request, body, vector)

    def _query_request(self, request: Request, body: dict[str, Any]) -> dict[str, Any]:
        """One QueryRequest (universal query, alone or in a batch) as a QueryResponse."""
        _no_shard_key(body)
        if body.get("prefetch"):
            raise unsupported("Query prefetch")
        query = body.get("query")
        if isinstance(query, dict) and set(query) == {"nearest"}:
            query = query["nearest"]
        if not isinstance(query, list):
            raise unsupported("Query without a dense vector (ids, recommend, fusion, order_by)")
        return {"points": self._search(request, body, query)}

    def search(self, request: Request) -> Result:
        return Result(self._search_request(request, request.json_object()))

    def search_batch(self, request: Request) -> Result:
        """All searches under one lock: one consistent view, and one failure fails the batch."""
        searches = _searches(request.json_object())
        with self.store.lock:
            return Result([self._search_request(request, s) for s in searches])

    def query(self, request: Request) -> Result:
        return Result(self._query_request(request, request.json_object()))

    def query_batch(self, request: Request) -> Result:
        searches = _searches(request.json_object())
        with self.store.lock:
            return Result([self._query_request(request, s) for s in searches])

    # -- snapshots -------------------------------------------------------------

    def _snapshot_collection(self, request: Request) -> str:
        """Upstream finds snapshots through the collection, so an alias reaches its
        collection's snapshots (and a recovery through an alias restores that collection)."""
        with self.store.lock:
            return self.store.resolve(request.params["collection_name"])

    def create_snapshot(self, request: Request) -> Result:
        return Result(self.snapshots.create(self._snapshot_collection(request)))

    def list_snapshots(self, request: Request) -> Result:
        return Result(self.snapshots.list(self._snapshot_collection(request)))

    def download_snapshot(self, request: Request) -> Response:
        """The file itself, streamed like upstream's NamedFile (and compressed like it too,
        when the request accepts gzip or deflate)."""
        name = urllib.parse.unquote(request.params["snapshot_name"])
        handle = self.snapshots.open(self._snapshot_collection(request), name)
        return Response(200, b"", "application/octet-stream",
                        {"Content-Disposition": f'attachment; filename="{name}"'}, file=handle)

    def delete_snapshot(self, request: Request) -> Result:
        name = urllib.parse.unquote(request.params["snapshot_name"])
        self.snapshots.delete(self._snapshot_collection(request), name)
        return Result(True)

    def recover_snapshot(self, request: Request) -> Result:
        self.snapshots.recover_from_location(self._snapshot_collection(request), request.json())
        return Result(True)

    def upload_snapshot(self, request: Request) -> Result:
        check_priority(request.query.get("priority"))
        data = _multipart_field(request, "snapshot")
        self.snapshots.recover(self._snapshot_collection(request), data, request.query.get("checksum"))
        return Result(True)


    # -- distributed mode (cluster_api.ClusterApp serves these when cluster.enabled) ------

    def cluster_status(self, request: Request) -> Result:
        """Upstream's answer on a peer that is not in distributed mode."""
        return Result({"status": "disabled"})

    def remove_peer(self, request: Request) -> Result:
        raise ApiError(405, STANDALONE)

    def update_collection_cluster(self, request: Request) -> Result:
        raise ApiError(405, STANDALONE)

    def collection_cluster(self, request: Request) -> Result:
        raise not_emulated(request.method, request.path)

    # Shard snapshots are served in cluster mode only (each its own method: routes are
    # dispatched by method name).
    def list_shard_snapshots(self, request: Request) -> Result:
        raise not_emulated(request.method, request.path)

    def create_shard_snapshot(self, request: Request) -> Result:
        raise not_emulated(request.method, request.path)

    def recover_shard_snapshot(self, request: Request) -> Result:
        raise not_emulated(request.method, request.path)

    def upload_shard_snapshot(self, request: Request) -> Result:
        raise not_emulated(request.method, request.path)

    def download_shard_snapshot(self, request: Request) -> Response:
        raise not_emulated(request.method, request.path)

    def delete_shard_snapshot(self, request: Request) -> Result:
        raise not_emulated(request.method, request.path)


def _multipart_field(request: Request, name: str) -> bytes:
    """Extract one file field from a multipart/form-data body (stdlib has no parser left)."""
    content_type = request.headers.get("Content-Type", "")
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not content_type.startswith("multipart/form-data") or not match:
        raise ApiError(400, "Multipart error: expected multipart/form-data with a boundary")
    delimiter = b"--" + match.group(1).encode()
    for part in request.body.split(delimiter)[1:]:
        if part.startswith(b"--"):
            break
        head, sep, content = part.partition(b"\r\n\r\n")
        if sep and re.search(rb'name="' + re.escape(name.encode()) + rb'"', head):
            return content[:-2] if content.endswith(b"\r\n") else content
    raise ApiError(400, f"Multipart error: field `{name}` is missing")


C = "/collections/{collection_name}"
ROUTES = [
    Route("GET", "/", PUBLIC, App.root),
    Route("GET", "/healthz", PUBLIC, App.healthz),
    Route("GET", "/livez", PUBLIC, App.healthz),
    Route("GET", "/readyz", PUBLIC, App.readyz),
    Route("GET", "/metrics", READ, App.prometheus),
    Route("GET", "/collections", READ, App.list_collections),
    Route("POST", "/collections/aliases", WRITE, App.update_aliases),
    Route("GET", "/aliases", READ, App.list_aliases),
    Route("PUT", C, WRITE, App.create_collection),
    Route("GET", C, READ, App.get_collection),
    Route("PATCH", C, WRITE, App.update_collection),
    Route("DELETE", C, WRITE, App.delete_collection),
    Route("GET", C + "/exists", READ, App.collection_exists),
    Route("GET", C + "/aliases", READ, App.collection_aliases),
    Route("PUT", C + "/index", WRITE, App.create_payload_index),
    Route("DELETE", C + "/index/{field_name}", WRITE, App.delete_payload_index),
    Route("PUT", C + "/points", WRITE, App.upsert),
    Route("POST", C + "/points", READ, App.retrieve),
    Route("POST", C + "/points/delete", WRITE, App.delete_points),
    Route("POST", C + "/points/scroll", READ, App.scroll),
    Route("POST", C + "/points/count", READ, App.count),
    Route("POST", C + "/points/payload", WRITE, App.set_payload),
    Route("PUT", C + "/points/payload", WRITE, App.overwrite_payload),
    Route("POST", C + "/points/payload/delete", WRITE, App.delete_payload),
    Route("POST", C + "/points/payload/clear", WRITE, App.clear_payload),
    Route("POST", C + "/points/search", READ, App.search),
    Route("POST", C + "/points/search/batch", READ, App.search_batch),
    Route("POST", C + "/points/query", READ, App.query),
    Route("POST", C + "/points/query/batch", READ, App.query_batch),
    Route("GET", C + "/points/{id}", READ, App.get_point),
    Route("POST", C + "/snapshots", WRITE, App.create_snapshot),
    Route("GET", C + "/snapshots", READ, App.list_snapshots),
    Route("PUT", C + "/snapshots/recover", WRITE, App.recover_snapshot),
    Route("POST", C + "/snapshots/upload", WRITE, App.upload_snapshot),
    Route("GET", C + "/snapshots/{snapshot_name}", READ, App.download_snapshot),
    Route("DELETE", C + "/snapshots/{snapshot_name}", WRITE, App.delete_snapshot),
    Route("GET", "/cluster", READ, App.cluster_status),
    Route("DELETE", "/cluster/peer/{peer_id}", WRITE, App.remove_peer),
    Route("GET", C + "/cluster", READ, App.collection_cluster),
    Route("POST", C + "/cluster", WRITE, App.update_collection_cluster),
    Route("GET", C + "/shards/{shard_id}/snapshots", READ, App.list_shard_snapshots),
    Route("POST", C + "/shards/{shard_id}/snapshots", WRITE, App.create_shard_snapshot),
    Route("PUT", C + "/shards/{shard_id}/snapshots/recover", WRITE, App.recover_shard_snapshot),
    Route("POST", C + "/shards/{shard_id}/snapshots/upload", WRITE, App.upload_shard_snapshot),
    Route("GET", C + "/shards/{shard_id}/snapshots/{snapshot_name}", READ, App.download_shard_snapshot),
    Route("DELETE", C + "/shards/{shard_id}/snapshots/{snapshot_name}", WRITE, App.delete_shard_snapshot),
]


def _find_route(method: str, path: str) -> tuple[Route | None, dict[str, str]]:
    for route in ROUTES:
        found = route.regex.match(path)
        if found and route.method == method:
            return route, {k: urllib.parse.unquote(v) for k, v in found.groupdict().items()}
    return None, {}


def _check_auth(settings: Settings, headers: Any, access: str) -> None:
    """Upstream's rules: 401 without/with an unknown key, 403 for writes with the read-only key."""
    if access == PUBLIC or (settings.api_key is None and settings.read_only_api_key is None):
        return
    key = headers.get("api-key")
    if key is None:
        authorization = headers.get("Authorization", "")
        key = authorization[len("Bearer "):] if authorization.startswith("Bearer ") else None
    if key is None:
        raise ApiError(401, MISSING_KEY)
    if settings.api_key and hmac.compare_digest(key.encode(), settings.api_key.encode()):
        return
    if settings.read_only_api_key and hmac.compare_digest(key.encode(), settings.read_only_api_key.encode()):
        if access == WRITE:
            raise forbidden("Global manage access is required")
        return
    raise ApiError(401, INVALID_KEY)


class RequestHandler(BaseHTTPRequestHandler):
    """One HTTP/1.1 connection; ``app`` is set on a subclass by the server."""

    protocol_version = "HTTP/1.1"
    server_version = "qdrant-lab-standin"
    app: App

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _accept_encoding(self) -> str | None:
        """Every Accept-Encoding field joined, as actix reads a list header; None if absent."""
        values = self.headers.get_all("Accept-Encoding")
        return None if values is None else ", ".join(values)

    def _handle(self) -> None:
        started = time.monotonic()
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        body = self._read_body()
        route, params = _find_route(self.command, url.path)
        # Upstream's auth middleware wraps Compress: a 401 is answered before any
        # negotiation and is never encoded, so the coding is only chosen after auth.
        coding = compression.IDENTITY
        try:
            # upstream's auth covers every path but the open ones, routed or not
            _check_auth(self.app.settings, self.headers, route.access if route else READ)
            negotiated = compression.negotiate(self._accept_encoding())
            if negotiated is None:
                response = Response(406, compression.NOT_ACCEPTABLE_BODY.encode(), "text/plain; charset=utf-8",
                                    {"Vary": "Accept-Encoding"})
            elif route is None:
                # Not emulated (upstream endpoints the stand-in lacks, or no endpoint at all):
                # a bare 404 would read like "collection not found" to a client; say what it is.
                coding = negotiated
                raise not_emulated(self.command, url.path)
            else:
                coding = negotiated
                # by name, so that cluster mode's App subclass serves the same routes
                handler = getattr(self.app, route.handler.__name__)
                outcome = handler(Request(self.command, params, query, self.headers, body, url.path))
                response = outcome if isinstance(outcome, Response) else Response(
                    200, self._envelope({"result": outcome.value, "status": "ok"}, started))
        except ApiError as err:
            if err.status == 401:  # upstream's auth middleware answers in plain text
                response = _text(err.message, 401)
            else:
                response = Response(err.status, self._envelope({"status": {"error": err.message}}, started))
        except Exception as err:  # noqa: BLE001 - report like upstream's 500, keep serving
            LOG.exception("internal error on %s %s", self.command, url.path)
            response = Response(500, self._envelope(
                {"status": {"error": f"Service internal error: {err}"}}, started))
        self._send(response, coding)
        endpoint = route.pattern if route else "unknown"
        self.app.metrics.observe(self.command, endpoint, response.status, time.monotonic() - started)

    @staticmethod
    def _envelope(content: dict[str, Any], started: float) -> bytes:
        content["time"] = round(time.monotonic() - started, 6)
        return json.dumps(content).encode()

    def _send(self, response: Response, coding: str = compression.IDENTITY) -> None:
        """Plain bodies with Content-Length; encoded ones chunked (their length is unknown
        until the compressor is done, as with actix), or until close for HTTP/1.0 clients."""
        try:
            size = response.size()
            encode = coding != compression.IDENTITY and compression.should_encode(
                response.status, response.content_type, size > 0, response.headers)
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            for name, value in response.headers.items():
                self.send_header(name, value)
            if not encode:
                self.send_header("Content-Length", str(size))
                self.end_headers()
                for chunk in response.chunks():
                    self.wfile.write(chunk)
                return
            self.send_header("Content-Encoding", coding)
            self.send_header("Vary", "accept-encoding")
            chunked = self.request_version == "HTTP/1.1"
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            for piece in compression.encode(coding, response.chunks()):
                self.wfile.write(b"%x\r\n%b\r\n" % (len(piece), piece) if chunked else piece)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True  # the body is cut short: the connection cannot be reused
            raise
        finally:
            if response.file is not None:
                response.file.close()

    do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = _handle

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        LOG.info("%s %s", self.address_string(), format % args)
