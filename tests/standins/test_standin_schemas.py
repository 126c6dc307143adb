"""Response shapes of the lab stand-ins checked against upstream's own schema models.

The Qdrant and Ollama stand-ins (lab/standins/, LAB TEST FIXTURES, not the real
services) claim to answer with upstream's JSON shapes. Upstream's OpenAPI spec is
not committed here, but the official clients carry models generated from it:

* ``qdrant_client.http.models``: pydantic models generated from Qdrant's OpenAPI
  spec, including the ``InlineResponse*`` envelopes each REST operation returns
  (the mapping below is the one ``qdrant_client/http/api/*_api.py`` uses).
* ``ollama._types``: pydantic models of Ollama's API responses (docs/api.md).

Every call here is RAW HTTP (``requests``), never a client method, so nothing is
silently tolerated. Each JSON body is

1. validated with ``Model.model_validate_json(text, strict=True)`` (JSON-mode
   strictness: no str->int coercion, enums and datetimes from JSON strings);
2. checked key by key, stronger than pydantic's default ``extra="ignore"``: at the
   top level the keys must be a subset of ``Model.model_fields`` (by alias) and
   contain every REQUIRED field; the same "no unknown keys" rule is applied
   recursively to every nested object that validated into a model.

Both stand-ins run from source as subprocesses on free 127.0.0.1 ports (one per
xdist worker, module-scoped), so the file is ``pytest -n 2`` safe.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from ollama import _types as ot
from pydantic import BaseModel, create_model
from qdrant_client.http import models as qm

ROOT = Path(__file__).resolve().parents[2]
QDRANT_SRC = ROOT / "lab" / "standins" / "qdrant"
OLLAMA_SRC = ROOT / "lab" / "standins" / "ollama"
NO_PROXY = {"http": None, "https": None}
KEY = "schema-test-key"
EMBED, GEN = "all-minilm:latest", "qwen2.5-coder:1.5b"
SCHEMA_PROMPT = "CREATE TABLE orders (id INT, total NUMERIC(10,2));\nHow many orders are there?"

# Keys upstream documents and returns although the client's model does not declare
# them (the client simply ignores them). Keyed by model class.
DOCUMENTED_EXTRA: dict[type[BaseModel], frozenset[str]] = {
    # Ollama docs/api.md, "List Local Models": each entry has "name" next to "model".
    ot.ListResponse.Model: frozenset({"name"}),
}


# qdrant-client 1.20 no longer generates the legacy POST points/search operation, so its
# envelope (upstream's InlineResponse for search: {"usage", "time", "status",
# "result": [ScoredPoint]}) is rebuilt here from the same generated pieces.
SearchEnvelope = create_model(
    "SearchEnvelope",
    usage=(qm.Usage | None, None),
    time=(float | None, None),
    status=(str | None, None),
    result=(list[qm.ScoredPoint] | None, None),
)
# ... and so is the legacy POST points/search/batch: {"result": [[ScoredPoint]]}.
SearchBatchEnvelope = create_model(
    "SearchBatchEnvelope",
    usage=(qm.Usage | None, None),
    time=(float | None, None),
    status=(str | None, None),
    result=(list[list[qm.ScoredPoint]] | None, None),
)


# ============================================================== shape checking
def wire_keys(model: type[BaseModel]) -> set[str]:
    """The JSON keys a model accepts (alias when one is set)."""
    return {field.alias or name for name, field in model.model_fields.items()}


def required_keys(model: type[BaseModel]) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items() if field.is_required()}


def _unknown_keys(raw: Any, value: Any, path: str) -> list[str]:
    """Keys in ``raw`` that the validated ``value`` did not consume, at any depth."""
    problems: list[str] = []
    if isinstance(value, BaseModel) and isinstance(raw, dict):
        model = type(value)
        by_wire = {field.alias or name: name for name, field in model.model_fields.items()}
        allowed_extra = DOCUMENTED_EXTRA.get(model, frozenset())
        for key, sub in raw.items():
            if key in by_wire:
                problems += _unknown_keys(sub, getattr(value, by_wire[key]), f"{path}.{key}")
            elif key not in allowed_extra:
                problems.append(f"{path}.{key} (not a field of {model.__qualname__})")
    elif isinstance(raw, list) and isinstance(value, Sequence) and not isinstance(value, str):
        assert len(raw) == len(value), path
        for index, (sub_raw, sub_value) in enumerate(zip(raw, value)):
            problems += _unknown_keys(sub_raw, sub_value, f"{path}[{index}]")
    elif isinstance(raw, dict) and isinstance(value, Mapping):
        for key, sub in raw.items():
            if key in value:
                problems += _unknown_keys(sub, value[key], f"{path}[{key!r}]")
    return problems


def check(model: type[BaseModel], body: Any, *, strict: bool = True) -> Any:
    """Validate one JSON document (text or parsed) against an upstream model; return it parsed."""
    text = body if isinstance(body, str) else json.dumps(body)
    raw = json.loads(text)
    assert isinstance(raw, dict), f"{model.__qualname__}: expected a JSON object, got {raw!r:.200}"
    unknown_top = set(raw) - wire_keys(model) - DOCUMENTED_EXTRA.get(model, frozenset())
    assert not unknown_top, f"{model.__qualname__}: keys not in upstream's model: {sorted(unknown_top)}"
    missing = required_keys(model) - set(raw)
    assert not missing, f"{model.__qualname__}: required keys missing: {sorted(missing)}"
    parsed = model.model_validate_json(text, strict=strict)
    deep = _unknown_keys(raw, parsed, model.__qualname__)
    assert not deep, f"keys not in upstream's models: {deep}"
    return raw


def check_each(model: type[BaseModel], items: Any) -> list[Any]:
    assert isinstance(items, list), f"expected a JSON array of {model.__qualname__}, got {items!r:.200}"
    return [check(model, item) for item in items]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            requests.get(url, timeout=1, proxies=NO_PROXY)
            return
        except requests.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    raise TimeoutError(log.read_text())


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ============================================================== Qdrant stand-in
@dataclass
class Qdrant:
    url: str

    def call(self, method: str, path: str, body: Any = None, **params: Any) -> requests.Response:
        return requests.request(
            method, self.url + path, json=body, params=params or None,
            headers={"api-key": KEY}, timeout=10, proxies=NO_PROXY,
        )

    def ok(self, inline: type[BaseModel], method: str, path: str, body: Any = None, **params: Any) -> Any:
        """A 2xx envelope {"result", "status": "ok", "time"} validated as ``inline``; returns result."""
        resp = self.call(method, path, body, **params)
        assert resp.status_code == 200, (method, path, resp.status_code, resp.text)
        assert resp.headers["Content-Type"].startswith("application/json")
        envelope = check(inline, resp.text)
        assert {"result", "status", "time"} <= set(envelope), envelope
        assert envelope["status"] == "ok"
        assert isinstance(envelope["time"], float) and envelope["time"] >= 0
        return envelope["result"]

    def error(self, status: int, method: str, path: str, body: Any = None, **params: Any) -> str:
        """An error envelope {"status": {"error": ...}, "time": ...} (upstream's ErrorResponse)."""
        resp = self.call(method, path, body, **params)
        assert resp.status_code == status, (method, path, resp.status_code, resp.text)
        assert resp.headers["Content-Type"].startswith("application/json")
        envelope = check(qm.ErrorResponse, resp.text)
        assert set(envelope) == {"status", "time"}, envelope
        assert isinstance(envelope["time"], float)
        check(qm.ErrorResponseStatus, envelope["status"])
        assert set(envelope["status"]) == {"error"} and isinstance(envelope["status"]["error"], str)
        return envelope["status"]["error"]


@pytest.fixture(scope="module")
def qdrant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Qdrant]:
    work = tmp_path_factory.mktemp("qdrant-schemas")
    port = _free_port()
    config = work / "config.yaml"
    config.write_text(
        "log_level: WARN\n"
        "storage:\n"
        f"  storage_path: {work / 'storage'}\n"
        f"  snapshots_path: {work / 'snapshots'}\n"
        "service:\n"
        "  host: 127.0.0.1\n"
        f"  http_port: {port}\n"
        "  grpc_port: null\n"
        f"  api_key: '{KEY}'\n"
        "telemetry_disabled: true\n"
    )
    log = work / "stderr.log"
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONPATH": str(QDRANT_SRC)}
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "qdrant_standin", "--config-path", str(config)],
                                cwd=work, env=env, stderr=err)
    url = f"http://127.0.0.1:{port}"
    _wait_ready(url + "/readyz", proc, log)
    yield Qdrant(url)
    _stop(proc)


@pytest.fixture()
def collection(qdrant: Qdrant) -> Iterator[str]:
    """A fresh 4-dim cosine collection with int, UUID and payload-less points."""
    name = f"schemas-{uuid.uuid4().hex[:12]}"
    assert qdrant.ok(qm.InlineResponse2001, "PUT", f"/collections/{name}",
                     {"vectors": {"size": 4, "distance": "Cosine"}}) is True
    qdrant.ok(qm.InlineResponse2008, "PUT", f"/collections/{name}/points", {"points": [
        {"id": 1, "vector": [1.0, 0.0, 0.0, 0.0], "payload": {"document_id": "a", "chunk": 0}},
        {"id": 2, "vector": [0.9, 0.1, 0.0, 0.0], "payload": {"document_id": "a", "chunk": 1}},
        {"id": 3, "vector": [0.0, 1.0, 0.0, 0.0], "payload": {"document_id": "b", "chunk": 0}},
        {"id": "5c56c793-69f3-4fbf-87e6-c4bf54c28c26", "vector": [0.0, 0.0, 1.0, 0.0]},
    ]}, wait="true")
    yield name
    qdrant.call("DELETE", f"/collections/{name}")


def test_qdrant_root_is_version_info(qdrant: Qdrant) -> None:
    resp = requests.get(qdrant.url + "/", timeout=5, proxies=NO_PROXY)  # open, no key
    assert resp.status_code == 200
    check(qm.VersionInfo, resp.text)


def test_qdrant_collections_lifecycle(qdrant: Qdrant) -> None:
    name = f"life-{uuid.uuid4().hex[:12]}"
    path = f"/collections/{name}"
    assert qdrant.ok(qm.InlineResponse2009, "GET", path + "/exists") == {"exists": False}
    assert qdrant.ok(qm.InlineResponse2001, "PUT", path, {"vectors": {"size": 8, "distance": "Dot"}}) is True
    assert check(qm.CollectionExistence, qdrant.ok(qm.InlineResponse2009, "GET", path + "/exists")) == {
        "exists": True}

    listed = check(qm.CollectionsResponse, qdrant.ok(qm.InlineResponse2006, "GET", "/collections"))
    check_each(qm.CollectionDescription, listed["collections"])
    assert {"name": name} in listed["collections"]

    info = check(qm.CollectionInfo, qdrant.ok(qm.InlineResponse2007, "GET", path))
    check(qm.CollectionConfig, info["config"])
    check(qm.CollectionParams, info["config"]["params"])
    check(qm.VectorParams, info["config"]["params"]["vectors"])
    check(qm.HnswConfig, info["config"]["hnsw_config"])
    check(qm.OptimizersConfig, info["config"]["optimizer_config"])
    assert info["config"]["params"]["vectors"] == {"size": 8, "distance": "Dot"}
    assert info["points_count"] == 0 and info["status"] in {s.value for s in qm.CollectionStatus}

    assert qdrant.ok(qm.InlineResponse2001, "DELETE", path) is True
    assert qdrant.ok(qm.InlineResponse2009, "GET", path + "/exists") == {"exists": False}


def test_qdrant_upsert_returns_update_result(qdrant: Qdrant, collection: str) -> None:
    path = f"/collections/{collection}/points"
    point = {"id": 9, "vector": [0.5, 0.5, 0.5, 0.5], "payload": {"document_id": "c"}}
    waited = check(qm.UpdateResult, qdrant.ok(qm.InlineResponse2008, "PUT", path, {"points": [point]},
                                              wait="true"))
    assert waited["status"] == qm.UpdateStatus.COMPLETED.value and isinstance(waited["operation_id"], int)
    batch = {"batch": {"ids": [10, 11], "vectors": [[1, 0, 0, 0], [0, 1, 0, 0]], "payloads": [{}, {}]}}
    queued = check(qm.UpdateResult, qdrant.ok(qm.InlineResponse2008, "PUT", path, batch))
    assert queued["status"] in {s.value for s in qm.UpdateStatus}
    # the default mode spelled out is no conditional upsert: accepted (the others are a 400)
    check(qm.UpdateResult, qdrant.ok(qm.InlineResponse2008, "PUT", path, dict(batch, update_mode="upsert")))


@pytest.mark.parametrize("with_payload", [True, False])
@pytest.mark.parametrize("with_vector", [True, False])
def test_qdrant_query_returns_query_response(
    qdrant: Qdrant, collection: str, with_payload: bool, with_vector: bool
) -> None:
    result = qdrant.ok(qm.InlineResponse20022, "POST", f"/collections/{collection}/points/query", {
        "query": [1.0, 0.0, 0.0, 0.0], "limit": 3, "with_payload": with_payload, "with_vector": with_vector,
        "filter": {"must_not": [{"key": "document_id", "match": {"value": "zzz"}}]},
    })
    points = check_each(qm.ScoredPoint, check(qm.QueryResponse, result)["points"])
    assert [p["id"] for p in points] == [1, 2, 3]
    assert all(isinstance(p["score"], float) and isinstance(p["version"], int) for p in points)
    assert all((p.get("payload") is not None) == with_payload for p in points)
    assert all((p.get("vector") is not None) == with_vector for p in points)
    nearest = qdrant.ok(qm.InlineResponse20022, "POST", f"/collections/{collection}/points/query",
                        {"query": {"nearest": [0.0, 0.0, 1.0, 0.0]}, "limit": 1})
    assert check(qm.QueryResponse, nearest)["points"][0]["id"] == "5c56c793-69f3-4fbf-87e6-c4bf54c28c26"


def test_qdrant_search_returns_scored_points(qdrant: Qdrant, collection: str) -> None:
    # Legacy POST points/search: upstream's SearchApi answers {"result": [ScoredPoint, ...]}.
    result = qdrant.ok(SearchEnvelope, "POST", f"/collections/{collection}/points/search",
                       {"vector": [0.0, 1.0, 0.0, 0.0], "limit": 2, "with_payload": True,
                        "score_threshold": 0.0})
    points = check_each(qm.ScoredPoint, result)
    assert points[0]["id"] == 3 and points[0]["payload"] == {"document_id": "b", "chunk": 0}


def test_qdrant_scroll_returns_scroll_result(qdrant: Qdrant, collection: str) -> None:
    path = f"/collections/{collection}/points/scroll"
    first = check(qm.ScrollResult, qdrant.ok(qm.InlineResponse20019, "POST", path,
                                             {"limit": 2, "with_payload": True, "with_vector": True}))
    check_each(qm.Record, first["points"])
    assert [p["id"] for p in first["points"]] == [1, 2] and first["next_page_offset"] == 3
    last = check(qm.ScrollResult, qdrant.ok(qm.InlineResponse20019, "POST", path, {
        "limit": 10, "offset": first["next_page_offset"], "with_payload": False,
        "filter": {"should": [{"has_id": [3, "5c56c793-69f3-4fbf-87e6-c4bf54c28c26"]}]},
    }))
    check_each(qm.Record, last["points"])
    assert [p["id"] for p in last["points"]] == [3, "5c56c793-69f3-4fbf-87e6-c4bf54c28c26"]
    assert last.get("next_page_offset") is None


def test_qdrant_count_returns_count_result(qdrant: Qdrant, collection: str) -> None:
    path = f"/collections/{collection}/points/count"
    assert check(qm.CountResult, qdrant.ok(qm.InlineResponse20020, "POST", path, {"exact": True})) == {
        "count": 4}
    filtered = qdrant.ok(qm.InlineResponse20020, "POST", path, {
        "exact": True, "filter": {"must": [{"key": "document_id", "match": {"value": "a"}}]}})
    assert check(qm.CountResult, filtered) == {"count": 2}


def test_qdrant_retrieve_returns_records(qdrant: Qdrant, collection: str) -> None:
    path = f"/collections/{collection}/points"
    records = check_each(qm.Record, qdrant.ok(qm.InlineResponse20017, "POST", path, {
        "ids": [3, 1, 404, "5c56c793-69f3-4fbf-87e6-c4bf54c28c26"], "with_payload": True, "with_vector": True}))
    assert [r["id"] for r in records] == [3, 1, "5c56c793-69f3-4fbf-87e6-c4bf54c28c26"]
    one = check(qm.Record, qdrant.ok(qm.InlineResponse20016, "GET", path + "/1"))
    assert one["payload"] == {"document_id": "a", "chunk": 0}


def test_qdrant_delete_points_returns_update_result(qdrant: Qdrant, collection: str) -> None:
    path = f"/collections/{collection}/points"
    by_filter = {"filter": {"must": [{"key": "document_id", "match": {"value": "a"}}]}}
    for body in ({"points": [3]}, by_filter):
        result = check(qm.UpdateResult, qdrant.ok(qm.InlineResponse2008, "POST", path + "/delete", body,
                                                  wait="true"))
        assert result["status"] == "completed"
    remaining = qdrant.ok(qm.InlineResponse20020, "POST", path + "/count", {"exact": True})
    assert check(qm.CountResult, remaining) == {"count": 1}


def test_qdrant_snapshots_return_snapshot_descriptions(qdrant: Qdrant, collection: str) -> None:
    path = f"/collections/{collection}/snapshots"
    created = check(qm.SnapshotDescription, qdrant.ok(qm.InlineResponse20015, "POST", path, wait="true"))
    assert created["name"].startswith(collection) and created["name"].endswith(".snapshot")
    assert isinstance(created["size"], int) and created["size"] > 0
    listed = check_each(qm.SnapshotDescription, qdrant.ok(qm.InlineResponse20014, "GET", path))
    assert created in listed
    assert qdrant.ok(qm.InlineResponse20013, "DELETE", f"{path}/{created['name']}", wait="true") is True
    assert qdrant.ok(qm.InlineResponse20014, "GET", path) == []


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("GET", "", None),
        ("PUT", "/points", {"points": [{"id": 1, "vector": [1, 0, 0, 0]}]}),
        ("POST", "/points/query", {"query": [1, 0, 0, 0]}),
        ("POST", "/points/search", {"vector": [1, 0, 0, 0], "limit": 1}),
        ("POST", "/points/scroll", {}),
        ("POST", "/points/count", {}),
        ("POST", "/points", {"ids": [1]}),
        ("POST", "/points/delete", {"points": [1]}),
        ("POST", "/snapshots", None),
        ("GET", "/snapshots", None),
    ],
)
def test_qdrant_missing_collection_is_404_error_response(
    qdrant: Qdrant, method: str, suffix: str, body: Any
) -> None:
    name = f"missing-{uuid.uuid4().hex[:8]}"
    message = qdrant.error(404, method, f"/collections/{name}{suffix}", body)
    assert message == f"Not found: Collection `{name}` doesn't exist!"


def test_qdrant_other_errors_use_error_response(qdrant: Qdrant, collection: str) -> None:
    conflict = qdrant.error(409, "PUT", f"/collections/{collection}", {"vectors": {"size": 4, "distance": "Dot"}})
    assert conflict == f"Wrong input: Collection `{collection}` already exists!"
    wrong_dim = qdrant.error(400, "POST", f"/collections/{collection}/points/query", {"query": [1.0, 0.0]})
    assert wrong_dim.startswith("Wrong input: Vector dimension error")
    assert qdrant.error(404, "GET", f"/collections/{collection}/points/404").startswith("Not found: ")


def test_qdrant_payload_index_shows_in_payload_schema(qdrant: Qdrant, collection: str) -> None:
    path = f"/collections/{collection}"
    for body in ({"field_name": "document_id", "field_schema": "keyword"},
                 {"field_name": "chunk", "field_schema": {"type": "integer", "lookup": True, "range": True}}):
        check(qm.UpdateResult, qdrant.ok(qm.InlineResponse2008, "PUT", path + "/index", body, wait="true"))
    info = check(qm.CollectionInfo, qdrant.ok(qm.InlineResponse2007, "GET", path))
    assert info["payload_schema"] == {
        "chunk": {"data_type": "integer", "params": {"type": "integer", "lookup": True, "range": True}, "points": 3},
        "document_id": {"data_type": "keyword", "points": 3},
    }
    check(qm.UpdateResult, qdrant.ok(qm.InlineResponse2008, "DELETE", path + "/index/chunk", wait="true"))
    assert set(qdrant.ok(qm.InlineResponse2007, "GET", path)["payload_schema"]) == {"document_id"}
    assert qdrant.error(400, "PUT", path + "/index", {"field_name": "x", "field_schema": "vector"}).startswith(
        "Json deserialize error: unknown variant `vector`")


def test_qdrant_aliases_return_alias_descriptions(qdrant: Qdrant, collection: str) -> None:
    alias = f"{collection}-alias"
    assert qdrant.ok(qm.InlineResponse2001, "POST", "/collections/aliases", {"actions": [
        {"create_alias": {"collection_name": collection, "alias_name": alias}}]}) is True
    listed = check(qm.CollectionsAliasesResponse, qdrant.ok(qm.InlineResponse20012, "GET", "/aliases"))
    assert {"alias_name": alias, "collection_name": collection} in listed["aliases"]
    own = check(qm.CollectionsAliasesResponse,
                qdrant.ok(qm.InlineResponse20012, "GET", f"/collections/{collection}/aliases"))
    assert own == {"aliases": [{"alias_name": alias, "collection_name": collection}]}
    info = check(qm.CollectionInfo, qdrant.ok(qm.InlineResponse2007, "GET", f"/collections/{alias}"))
    assert info["points_count"] == 4
    assert qdrant.error(400, "POST", "/collections/aliases", {"actions": [{"make_alias": {}}]}).startswith(
        "Json deserialize error")
    assert qdrant.ok(qm.InlineResponse2001, "POST", "/collections/aliases", {"actions": [
        {"delete_alias": {"alias_name": alias}}]}) is True


@pytest.mark.parametrize(("method", "suffix", "body"), [
    ("POST", "/points/payload", {"payload": {"lang": "en"}, "points": [1, "5c56c793-69f3-4fbf-87e6-c4bf54c28c26"]}),
    ("PUT", "/points/payload", {"payload": {"lang": "de"}, "filter": {"must": [
        {"key": "document_id", "match": {"value": "a"}}]}}),
    ("POST", "/points/payload/delete", {"keys": ["chunk"], "points": [3]}),
    ("POST", "/points/payload/clear", {"filter": {"must": [{"has_id": [2]}]}}),
])
def test_qdrant_payload_operations_return_update_result(
    qdrant: Qdrant, collection: str, method: str, suffix: str, body: Any
) -> None:
    path = f"/collections/{collection}"
    done = check(qm.UpdateResult, qdrant.ok(qm.InlineResponse2008, method, path + suffix, body, wait="true"))
    assert done["status"] == "completed" and isinstance(done["operation_id"], int)
    queued = check(qm.UpdateResult, qdrant.ok(qm.InlineResponse2008, method, path + suffix, body))
    assert queued["status"] == "acknowledged"
    without_selector = {k: v for k, v in body.items() if k not in ("points", "filter")}
    assert qdrant.error(400, method, path + suffix, without_selector).startswith("Json deserialize error")


def test_qdrant_batch_queries_return_lists(qdrant: Qdrant, collection: str) -> None:
    path = f"/collections/{collection}/points"
    queries = qdrant.ok(qm.InlineResponse20023, "POST", path + "/query/batch", {"searches": [
        {"query": [1, 0, 0, 0], "limit": 2}, {"query": {"nearest": [0, 1, 0, 0]}, "limit": 1, "with_payload": True}]})
    responses = check_each(qm.QueryResponse, queries)
    assert [[p["id"] for p in r["points"]] for r in responses] == [[1, 2], [3]]
    searches = qdrant.ok(SearchBatchEnvelope, "POST", path + "/search/batch", {"searches": [
        {"vector": [1, 0, 0, 0], "limit": 1}, {"vector": [0, 0, 1, 0], "limit": 1}]})
    assert [[check(qm.ScoredPoint, p)["id"] for p in r] for r in searches] == [
        [1], ["5c56c793-69f3-4fbf-87e6-c4bf54c28c26"]]


@pytest.mark.parametrize(("suffix", "body", "unsupported"), [
    ("", {"points": [{"id": 9, "vector": [1, 0, 0, 0]}], "update_filter": {"must": []}}, "update_filter"),
    ("", {"points": [{"id": 9, "vector": [1, 0, 0, 0]}], "update_mode": "insert_only"}, "update_mode"),
    ("/scroll", {"shard_key": "eu"}, "shard_key"),
    ("/query", {"query": [1, 0, 0, 0], "shard_key": "eu"}, "shard_key"),
    ("/payload", {"payload": {}, "points": [1], "key": "tags[]"}, "tags[]"),
])
def test_qdrant_parameters_the_standin_cannot_honour_are_400(
    qdrant: Qdrant, collection: str, suffix: str, body: Any, unsupported: str
) -> None:
    method = "PUT" if suffix == "" else "POST"
    message = qdrant.error(400, method, f"/collections/{collection}/points{suffix}", body)
    assert unsupported in message and "not supported by the QueryGPT lab stand-in" in message
    assert qdrant.ok(qm.InlineResponse20020, "POST", f"/collections/{collection}/points/count", {}) == {"count": 4}


def test_qdrant_cluster_routes_on_a_single_node_answer_like_upstream_standalone(qdrant: Qdrant, collection: str) -> None:
    """cluster.enabled is false: GET /cluster says disabled, cluster changes are upstream's 405."""
    assert qdrant.ok(qm.InlineResponse2003, "GET", "/cluster") == {"status": "disabled"}
    assert qdrant.error(405, "DELETE", "/cluster/peer/42") == "Qdrant is running in standalone mode"
    assert qdrant.error(405, "POST", f"/collections/{collection}/cluster",
                        {"drop_replica": {"shard_id": 0, "peer_id": 42}}) == "Qdrant is running in standalone mode"


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/telemetry"), ("GET", "/cluster/telemetry"), ("POST", "/collections/{c}/points/batch"),
    ("POST", "/collections/{c}/facet"), ("PUT", "/collections/{c}/points/vectors"), ("GET", "/nonsense"),
])
def test_qdrant_unemulated_routes_are_400_error_responses(
    qdrant: Qdrant, collection: str, method: str, path: str
) -> None:
    path = path.format(c=collection)
    message = qdrant.error(400, method, path, {})
    assert message == (f"Wrong input: Endpoint {method} {path} is not supported by the QueryGPT lab stand-in "
                       "(not Qdrant)")


# ============================================================== Ollama stand-in
@dataclass
class Ollama:
    url: str

    def post(self, path: str, body: Any, **kwargs: Any) -> requests.Response:
        return requests.post(self.url + path, json=body, timeout=10, proxies=NO_PROXY, **kwargs)

    def get(self, path: str) -> requests.Response:
        return requests.get(self.url + path, timeout=10, proxies=NO_PROXY)

    def json(self, model: type[BaseModel], resp: requests.Response) -> Any:
        assert resp.status_code == 200, (resp.request.url, resp.status_code, resp.text)
        assert resp.headers["Content-Type"].startswith("application/json"), resp.headers
        return check(model, resp.text)

    def ndjson(self, resp: requests.Response) -> list[str]:
        assert resp.status_code == 200, (resp.request.url, resp.status_code, resp.text)
        assert resp.headers["Content-Type"] == "application/x-ndjson", resp.headers
        lines = resp.text.splitlines()
        assert lines and all(line.strip() for line in lines), resp.text
        return lines


def _error(resp: requests.Response, status: int) -> str:
    """Upstream's error body: exactly {"error": "..."} (what ollama.ResponseError parses)."""
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers["Content-Type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"], body
    return body["error"]


@pytest.fixture(scope="module")
def ollama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ollama]:
    work = tmp_path_factory.mktemp("ollama-schemas")
    mirror = work / "mirror"
    subprocess.run([sys.executable, str(OLLAMA_SRC / "make_mirror.py"), "--out", str(mirror)],
                   check=True, capture_output=True, timeout=60)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OLLAMA_") and "proxy" not in k.lower()}
    env.update(PYTHONPATH=str(OLLAMA_SRC), OLLAMA_HOST=f"127.0.0.1:{port}", OLLAMA_MODELS=str(work / "models"),
               OLLAMA_STANDIN_MIRROR=str(mirror), OLLAMA_KEEP_ALIVE="5m",
               # shapes, not timing: the stand-in's pacing off
               OLLAMA_STANDIN_TOKEN_SECONDS="0", OLLAMA_STANDIN_PROMPT_TOKEN_SECONDS="0",
               OLLAMA_STANDIN_EMBED_SECONDS="0")
    log = work / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "ollama_standin", "serve"], env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    _wait_ready(url + "/", proc, log)
    server = Ollama(url)
    for name in (EMBED, GEN):
        assert server.post("/api/pull", {"model": name, "stream": False}).json() == {"status": "success"}
    yield server
    _stop(proc)


def test_ollama_version(ollama_server: Ollama) -> None:
    # The client has no model for /api/version; docs/api.md documents exactly {"version": "..."}.
    resp = ollama_server.get("/api/version")
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"version"} and isinstance(body["version"], str)


def test_ollama_tags_is_list_response(ollama_server: Ollama) -> None:
    body = ollama_server.json(ot.ListResponse, ollama_server.get("/api/tags"))
    entries = check_each(ot.ListResponse.Model, body["models"])
    assert {e["model"] for e in entries} >= {EMBED, GEN}
    for entry in entries:
        assert entry["name"] == entry["model"]
        check(ot.ModelDetails, entry["details"])


def test_ollama_ps_is_process_response(ollama_server: Ollama) -> None:
    ollama_server.json(ot.GenerateResponse, ollama_server.post(
        "/api/generate", {"model": GEN, "prompt": SCHEMA_PROMPT, "stream": False}))
    body = ollama_server.json(ot.ProcessResponse, ollama_server.get("/api/ps"))
    entries = check_each(ot.ProcessResponse.Model, body["models"])
    assert GEN in {e["model"] for e in entries}
    for entry in entries:
        check(ot.ModelDetails, entry["details"])


@pytest.mark.parametrize("name", [EMBED, GEN])
def test_ollama_show_is_show_response(ollama_server: Ollama, name: str) -> None:
    body = ollama_server.json(ot.ShowResponse, ollama_server.post("/api/show", {"model": name}))
    assert "model_info" in body and isinstance(body["model_info"], dict)
    check(ot.ModelDetails, body["details"])
    assert body["capabilities"] == (["embedding"] if name == EMBED else ["completion"])


def test_ollama_pull_stream_lines_are_progress_or_status(ollama_server: Ollama) -> None:
    lines = ollama_server.ndjson(ollama_server.post("/api/pull", {"model": "nomic-embed-text"}))
    for line in lines:
        data = json.loads(line)
        if set(data) == {"status"}:
            check(ot.StatusResponse, line)
        check(ot.ProgressResponse, line)
    assert json.loads(lines[-1]) == {"status": "success"}
    assert any("digest" in json.loads(line) for line in lines)
    single = ollama_server.json(ot.StatusResponse, ollama_server.post(
        "/api/pull", {"model": "nomic-embed-text", "stream": False}))
    assert single == {"status": "success"}


def test_ollama_pull_errors(ollama_server: Ollama) -> None:
    lines = ollama_server.ndjson(ollama_server.post("/api/pull", {"model": "no-such-model"}))
    *progress, last = (json.loads(line) for line in lines)
    for item in progress:
        check(ot.ProgressResponse, item)
    assert set(last) == {"error"} and isinstance(last["error"], str)
    _error(ollama_server.post("/api/pull", {"model": "no-such-model", "stream": False}), 500)


@pytest.mark.parametrize("texts", ["one question", ["first text", "second text"]])
def test_ollama_embed_is_embed_response(ollama_server: Ollama, texts: str | list[str]) -> None:
    body = ollama_server.json(ot.EmbedResponse, ollama_server.post("/api/embed", {"model": EMBED, "input": texts}))
    assert len(body["embeddings"]) == (1 if isinstance(texts, str) else len(texts))
    assert all(len(vector) == 384 for vector in body["embeddings"])


def test_ollama_embeddings_is_embeddings_response(ollama_server: Ollama) -> None:
    body = ollama_server.json(ot.EmbeddingsResponse, ollama_server.post(
        "/api/embeddings", {"model": EMBED, "prompt": "one question"}))
    assert len(body["embedding"]) == 384


def _final_fields_ok(final: dict[str, Any]) -> None:
    assert final["done"] is True and final["done_reason"] == "stop"
    for key in ("total_duration", "prompt_eval_count", "eval_count"):
        assert isinstance(final[key], int), key


@pytest.mark.parametrize("fmt", [None, "json"])
def test_ollama_chat_is_chat_response(ollama_server: Ollama, fmt: str | None) -> None:
    request: dict[str, Any] = {"model": GEN, "messages": [
        {"role": "system", "content": "Answer with SQL."}, {"role": "user", "content": SCHEMA_PROMPT}]}
    if fmt:
        request["format"] = fmt
    whole = ollama_server.json(ot.ChatResponse, ollama_server.post("/api/chat", dict(request, stream=False)))
    check(ot.Message, whole["message"])
    assert whole["message"]["role"] == "assistant"
    _final_fields_ok(whole)

    chunks = [check(ot.ChatResponse, line)
              for line in ollama_server.ndjson(ollama_server.post("/api/chat", request))]
    for chunk in chunks:
        check(ot.Message, chunk["message"])
    assert [c["done"] for c in chunks] == [False] * (len(chunks) - 1) + [True]
    _final_fields_ok(chunks[-1])
    assert "".join(c["message"]["content"] for c in chunks) == whole["message"]["content"]


@pytest.mark.parametrize("fmt", [None, "json"])
def test_ollama_generate_is_generate_response(ollama_server: Ollama, fmt: str | None) -> None:
    request: dict[str, Any] = {"model": GEN, "prompt": SCHEMA_PROMPT}
    if fmt:
        request["format"] = fmt
    whole = ollama_server.json(ot.GenerateResponse, ollama_server.post("/api/generate",
                                                                       dict(request, stream=False)))
    _final_fields_ok(whole)
    assert isinstance(whole["response"], str) and whole["response"]

    chunks = [check(ot.GenerateResponse, line)
              for line in ollama_server.ndjson(ollama_server.post("/api/generate", request))]
    assert [c["done"] for c in chunks] == [False] * (len(chunks) - 1) + [True]
    _final_fields_ok(chunks[-1])
    assert "".join(c["response"] for c in chunks) == whole["response"]


def test_ollama_errors_are_error_objects(ollama_server: Ollama) -> None:
    assert _error(ollama_server.post("/api/show", {"model": "llama3"}), 404) == "model 'llama3' not found"
    _error(ollama_server.post("/api/embed", {"model": "llama3", "input": "x"}), 404)
    _error(ollama_server.post("/api/chat", {"model": EMBED, "messages": [{"role": "user", "content": "x"}],
                                            "stream": False}), 400)
    _error(ollama_server.post("/api/embed", None), 400)
    missing = requests.delete(ollama_server.url + "/api/delete", json={"model": "llama3"}, timeout=10,
                              proxies=NO_PROXY)
    assert _error(missing, 404) == "model 'llama3' not found"


def test_ollama_delete_answers_empty_200(ollama_server: Ollama) -> None:
    # docs/api.md: "Returns a 200 OK if successful"; the client ignores the body (StatusResponse by code).
    pulled = ollama_server.post("/api/pull", {"model": "mxbai-embed-large", "stream": False})
    assert ollama_server.json(ot.StatusResponse, pulled) == {"status": "success"}
    resp = requests.delete(ollama_server.url + "/api/delete", json={"model": "mxbai-embed-large"}, timeout=10,
                           proxies=NO_PROXY)
    assert resp.status_code == 200 and resp.content == b""
