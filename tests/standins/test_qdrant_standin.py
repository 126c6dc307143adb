"""Tests for the Qdrant stand-in (lab/standins/qdrant), itself a LAB TEST FIXTURE, not Qdrant.

The stand-in is packaged with package.py exactly like upstream's release archive,
extracted, and run with the system python3 (no venv on PATH, proving it needs no
pip packages). It is driven through the official qdrant-client over REST with
every call the project makes, plus raw HTTP where upstream's wire format matters.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import random
import signal
import socket
import subprocess
import sys
import tarfile
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse
from qdrant_cluster_testkit import standin_module

REPO = Path(__file__).resolve().parents[2]
STANDIN_DIR = REPO / "lab" / "standins" / "qdrant"
PACKAGE_SCRIPT = STANDIN_DIR / "package.py"
VERSION = "1.15.5"
KEY = "lab-test-rw-key"
RO_KEY = "lab-test-ro-key"
BARE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}

pytestmark = pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _package(out: Path, version: str = VERSION) -> tuple[str, Path]:
    done = subprocess.run(
        [sys.executable, str(PACKAGE_SCRIPT), "--version", version, "--out", str(out)],
        check=True, capture_output=True, text=True, timeout=30,
    )
    return done.stdout.strip(), out / "qdrant-x86_64-unknown-linux-gnu.tar.gz"


class StandIn:
    """One stand-in process on 127.0.0.1 with its own config, storage and snapshots dirs."""

    def __init__(self, executable: Path, workdir: Path, env: dict[str, str] | None = None) -> None:
        self.executable = executable
        self.workdir = workdir
        self.http_port, self.grpc_port = _free_port(), _free_port()
        self.storage = workdir / "storage"
        self.snapshots = workdir / "snapshots"
        self.config = workdir / "config.yaml"
        self.config.write_text(
            "# written by test_qdrant_standin.py\n"
            "log_level: WARN\n"
            "storage:\n"
            f"  storage_path: {self.storage}\n"
            f'  snapshots_path: "{self.snapshots}"\n'
            "service:\n"
            "  host: 127.0.0.1   # never 0.0.0.0 in tests\n"
            f"  http_port: {self.http_port}\n"
            f"  grpc_port: {self.grpc_port}\n"
            f"  api_key: '{KEY}'\n"
            f'  read_only_api_key: "{RO_KEY}"\n'
            "telemetry_disabled: true\n"
        )
        self.env = dict(BARE_ENV, **(env or {}))
        self.process: subprocess.Popen[bytes] | None = None
        self.scheme = "http"
        self.verify: str | bool = True
        self.cert: tuple[str, str] | None = None  # a client certificate and key for the readiness probe

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.http_port}"

    def start(self) -> "StandIn":
        self.process = subprocess.Popen(
            [str(self.executable), "--config-path", str(self.config)],
            cwd=self.workdir, env=self.env, stderr=open(self.workdir / "stderr.log", "ab"),
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.workdir / "stderr.log").read_text()
            try:
                if requests.get(self.url + "/readyz", timeout=1, verify=self.verify,
                                cert=self.cert).status_code == 200:
                    return self
            except requests.ConnectionError:
                time.sleep(0.05)
        raise TimeoutError("stand-in did not become ready")

    def stop(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(timeout=10) == 0

    def client(self, key: str | None = KEY) -> QdrantClient:
        # check_compatibility=False: the stand-in reports 1.15.5, the client is newer.
        return QdrantClient(url=self.url, api_key=key, prefer_grpc=False, timeout=10,
                            check_compatibility=False)


@pytest.fixture(scope="session")
def executable(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packaged ``qdrant`` zipapp, extracted like the Ansible role does."""
    out = tmp_path_factory.mktemp("package")
    _, archive = _package(out)
    with tarfile.open(archive) as tar:
        tar.extract("qdrant", out, filter="tar")
    return out / "qdrant"


@pytest.fixture(scope="session")
def server(executable: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandIn]:
    standin = StandIn(executable, tmp_path_factory.mktemp("standin")).start()
    yield standin
    standin.stop()


@pytest.fixture(scope="session")
def client(server: StandIn) -> QdrantClient:
    return server.client()


@pytest.fixture()
def collection(client: QdrantClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh 4-dim cosine collection named after the test."""
    name = request.node.name.replace("[", "-").replace("]", "")
    client.create_collection(name, vectors_config=models.VectorParams(size=4, distance=models.Distance.COSINE))
    yield name
    client.delete_collection(name)


def _points(count: int, dim: int, seed: int) -> list[models.PointStruct]:
    rng = random.Random(seed)
    return [
        models.PointStruct(
            id=i,
            vector=[rng.uniform(-1, 1) for _ in range(dim)],
            payload={"doc": f"d{i % 5}", "n": i, "tags": ["even" if i % 2 == 0 else "odd", "all"]},
        )
        for i in range(count)
    ]


def _reference(points: list[models.PointStruct], query: list[float], distance: str) -> list[tuple[int, float]]:
    """Brute-force ranking with upstream's scoring rules, no numpy."""
    def norm(v: list[float]) -> list[float]:
        length = math.sqrt(sum(x * x for x in v))
        return [x / length for x in v]

    scored = []
    for p in points:
        v = list(p.vector)  # type: ignore[arg-type]
        if distance == "Cosine":
            s = sum(a * b for a, b in zip(norm(query), norm(v)))
        elif distance == "Dot":
            s = sum(a * b for a, b in zip(query, v))
        else:
            s = math.sqrt(sum((a - b) ** 2 for a, b in zip(query, v)))
        scored.append((int(p.id), s))
    return sorted(scored, key=lambda item: item[1] if distance == "Euclid" else -item[1])


# -- package -------------------------------------------------------------------


def test_package_is_a_reproducible_single_executable(tmp_path: Path) -> None:
    first_sha, first = _package(tmp_path / "a")
    second_sha, second = _package(tmp_path / "b")
    assert first_sha == second_sha == hashlib.sha256(first.read_bytes()).hexdigest()
    assert first.read_bytes() == second.read_bytes()
    with tarfile.open(first) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["qdrant"]
        assert members[0].isfile() and members[0].mode == 0o755
        assert (members[0].uid, members[0].gid) == (0, 0)
        tar.extract("qdrant", tmp_path, filter="tar")
    binary = tmp_path / "qdrant"
    assert binary.read_bytes().startswith(b"#!/usr/bin/env python3\n")
    done = subprocess.run([str(binary), "--version"], env=BARE_ENV, capture_output=True, text=True, timeout=10)
    assert done.stdout.strip() == f"qdrant {VERSION} (QueryGPT lab stand-in, not Qdrant)"
    other_sha, _ = _package(tmp_path / "c", "1.16.0")
    assert other_sha != first_sha


def test_runs_from_source_tree() -> None:
    done = subprocess.run(
        ["python3", "-m", "qdrant_standin", "--version"],
        env=dict(BARE_ENV, PYTHONPATH=str(STANDIN_DIR), PYTHONDONTWRITEBYTECODE="1"),
        capture_output=True, text=True, timeout=10,
    )
    assert "not Qdrant" in done.stdout


def test_yaml_subset_reads_like_pyyaml() -> None:
    yaml = pytest.importorskip("yaml")
    yaml_subset = standin_module("yaml_subset")
    text = """
# comment
log_level: INFO  # trailing comment
storage:
  storage_path: /var/lib/qdrant/storage
  temp_path: null
  quoted: "a # not a comment: \\"x\\""
  escaped: "q\\" # still inside"  # outside
  flow_quoted: ["a, b", 'c']
  single: 'it''s'
service:
  host: 0.0.0.0
  http_port: 6333
  ratio: 0.5
  enable_tls: false
  cors_origins:
    - https://a.example
    - 2
  flow: [a, "b", 3]
  empty_map: {}
telemetry_disabled: true
"""
    assert yaml_subset.load(text) == yaml.safe_load(text)


# -- service endpoints and auth -------------------------------------------------


def test_root_and_health_need_no_key(server: StandIn) -> None:
    root = requests.get(server.url + "/", timeout=5).json()
    assert root == {"title": "qdrant - vector search engine", "version": VERSION, "commit": "lab-standin"}
    for path, text in [("/healthz", "healthz check passed"), ("/livez", "healthz check passed"),
                       ("/readyz", "all shards are ready")]:
        response = requests.get(server.url + path, timeout=5)
        assert (response.status_code, response.text) == (200, text)


def test_api_key_enforcement(server: StandIn, client: QdrantClient) -> None:
    missing = requests.get(server.url + "/collections", timeout=5)
    assert (missing.status_code, missing.text) == (401, "Must provide an API key or an Authorization bearer token")
    wrong = requests.get(server.url + "/collections", headers={"api-key": "nope"}, timeout=5)
    assert (wrong.status_code, wrong.text) == (401, "Invalid API key or JWT")
    bearer = requests.get(server.url + "/collections", headers={"Authorization": f"Bearer {KEY}"}, timeout=5)
    assert bearer.status_code == 200 and bearer.json()["status"] == "ok"
    with pytest.raises(UnexpectedResponse) as no_key:
        server.client(key=None).get_collections()
    assert no_key.value.status_code == 401

    client.create_collection("auth_ro", vectors_config=models.VectorParams(size=2, distance=models.Distance.DOT))
    client.upsert("auth_ro", [models.PointStruct(id=1, vector=[1, 0])], wait=True)
    read_only = server.client(key=RO_KEY)
    assert read_only.collection_exists("auth_ro")
    assert read_only.query_points("auth_ro", query=[1.0, 0.0]).points[0].id == 1
    assert read_only.count("auth_ro").count == 1
    for write in (
        lambda: read_only.upsert("auth_ro", [models.PointStruct(id=2, vector=[0, 1])]),
        lambda: read_only.create_collection("ro_new", vectors_config=models.VectorParams(size=2, distance="Dot")),
        lambda: read_only.delete_collection("auth_ro"),
        lambda: read_only.create_snapshot("auth_ro"),
    ):
        with pytest.raises(UnexpectedResponse) as denied:
            write()
        assert denied.value.status_code == 403
        assert denied.value.structured()["status"]["error"] == "Forbidden: Global manage access is required"
    client.delete_collection("auth_ro")


def test_metrics_need_key_and_use_upstream_names(server: StandIn, client: QdrantClient) -> None:
    assert requests.get(server.url + "/metrics", timeout=5).status_code == 401
    client.get_collections()
    text = requests.get(server.url + "/metrics", headers={"api-key": RO_KEY}, timeout=5).text
    assert f'app_info{{name="qdrant",version="{VERSION}"}} 1' in text
    for name in ("collections_total ", "collections_vector_total ", "# TYPE rest_responses_total counter"):
        assert name in text
    assert 'rest_responses_total{method="GET",endpoint="/collections",status="200"}' in text
    assert "rest_responses_fail_total" not in text  # gone upstream since 1.17 (dashboards must not use it)


def test_grpc_port_is_bound(server: StandIn) -> None:
    with socket.create_connection(("127.0.0.1", server.grpc_port), timeout=2):
        pass


# -- collections ----------------------------------------------------------------


def test_collection_lifecycle(client: QdrantClient) -> None:
    assert not client.collection_exists("life")
    assert client.create_collection("life", vectors_config=models.VectorParams(size=3, distance=models.Distance.EUCLID))
    assert client.collection_exists("life")
    assert "life" in {c.name for c in client.get_collections().collections}
    info = client.get_collection("life")
    assert info.status == models.CollectionStatus.GREEN and info.points_count == 0
    assert info.config.params.vectors == models.VectorParams(size=3, distance=models.Distance.EUCLID)
    with pytest.raises(UnexpectedResponse) as exists:
        client.create_collection("life", vectors_config=models.VectorParams(size=3, distance="Euclid"))
    assert exists.value.status_code == 409
    assert client.update_collection("life", optimizers_config=models.OptimizersConfigDiff(indexing_threshold=500))
    assert client.get_collection("life").config.optimizer_config.indexing_threshold == 500
    assert client.delete_collection("life") is True
    assert not client.collection_exists("life")
    assert client.delete_collection("life") is False


def test_missing_collection_error_matches_upstream(server: StandIn, client: QdrantClient) -> None:
    with pytest.raises(UnexpectedResponse) as missing:
        client.get_collection("nope")
    assert missing.value.status_code == 404
    body = missing.value.structured()
    assert body["status"] == {"error": "Not found: Collection `nope` doesn't exist!"}
    assert isinstance(body["time"], float) and set(body) == {"status", "time"}
    with pytest.raises(UnexpectedResponse) as query_missing:
        client.query_points("nope", query=[0.0, 1.0])
    assert query_missing.value.status_code == 404


# -- points ---------------------------------------------------------------------


@pytest.mark.parametrize("distance", ["Cosine", "Dot", "Euclid"])
def test_query_ranking_matches_brute_force(server: StandIn, client: QdrantClient, distance: str) -> None:
    name = f"rank_{distance.lower()}"
    client.create_collection(name, vectors_config=models.VectorParams(size=8, distance=distance))
    points = _points(60, 8, seed=len(distance))
    result = client.upsert(name, points, wait=True)
    assert result.status == models.UpdateStatus.COMPLETED
    query = [random.Random(7).uniform(-1, 1) for _ in range(8)]
    expected = _reference(points, query, distance)
    found = client.query_points(name, query=query, limit=10, with_vectors=True).points
    assert [p.id for p in found] == [i for i, _ in expected[:10]]
    assert [p.score for p in found] == pytest.approx([s for _, s in expected[:10]], abs=1e-6)
    assert found[0].payload is not None and found[0].vector is not None
    if distance == "Cosine":  # upstream returns cosine vectors normalised
        assert math.sqrt(sum(x * x for x in found[0].vector)) == pytest.approx(1.0)  # type: ignore[union-attr]
    threshold = (expected[4][1] + expected[5][1]) / 2  # between 5th and 6th: no float ties
    limited = client.query_points(name, query=query, limit=50, score_threshold=threshold).points
    assert [p.id for p in limited] == [i for i, _ in expected[:5]]
    paged = client.query_points(name, query=query, limit=3, offset=2, with_payload=False).points
    assert [p.id for p in paged] == [i for i, _ in expected[2:5]] and paged[0].payload is None
    legacy = requests.post(f"{server.url}/collections/{name}/points/search", headers={"api-key": KEY},
                           json={"vector": query, "limit": 3}, timeout=5).json()["result"]
    assert [p["id"] for p in legacy] == [i for i, _ in expected[:3]] and legacy[0]["payload"] is None
    client.delete_collection(name)


def test_filters_scroll_count_retrieve_delete(client: QdrantClient, collection: str) -> None:
    client.upsert(collection, _points(20, 4, seed=1), wait=True)
    doc_is = lambda value: models.FieldCondition(key="doc", match=models.MatchValue(value=value))  # noqa: E731
    hits = client.query_points(collection, query=[1, 0, 0, 0], limit=100,
                               query_filter=models.Filter(must=[doc_is("d1")])).points
    assert sorted(p.id for p in hits) == [1, 6, 11, 16]
    any_filter = models.Filter(
        should=[models.FieldCondition(key="doc", match=models.MatchAny(any=["d1", "d2"]))],
        must_not=[models.FieldCondition(key="tags", match=models.MatchValue(value="odd"))],
        must=[models.FieldCondition(key="n", range=models.Range(lt=15))],
    )
    assert client.count(collection, count_filter=any_filter).count == 3  # ids 2, 6, 12
    page, offset = client.scroll(collection, scroll_filter=any_filter, limit=2)
    assert [p.id for p in page] == [2, 6] and offset == 12
    page, offset = client.scroll(collection, scroll_filter=any_filter, limit=2, offset=offset)
    assert [p.id for p in page] == [12] and offset is None
    records = client.retrieve(collection, ids=[3, 999, 5], with_vectors=True)
    assert [r.id for r in records] == [3, 5] and records[0].payload["n"] == 3 and records[0].vector
    client.delete(collection, points_selector=models.FilterSelector(filter=models.Filter(must=[doc_is("d0")])))
    assert client.count(collection).count == 16
    client.delete(collection, points_selector=models.PointIdsList(points=[1, 2]))
    assert client.count(collection, exact=True).count == 14
    assert client.get_collection(collection).points_count == 14


def test_uuid_ids_and_bad_vectors(server: StandIn, client: QdrantClient, collection: str) -> None:
    point_id = str(uuid.uuid4())
    client.upsert(collection, [models.PointStruct(id=point_id.upper(), vector=[0, 1, 0, 0], payload={"a": 1})])
    assert client.retrieve(collection, ids=[point_id])[0].id == point_id
    single = requests.get(f"{server.url}/collections/{collection}/points/{point_id}",
                          headers={"api-key": KEY}, timeout=5).json()["result"]
    assert single["id"] == point_id and single["payload"] == {"a": 1}
    chunked = requests.put(  # a generator body makes requests use chunked transfer encoding
        f"{server.url}/collections/{collection}/points?wait=true", headers={"api-key": KEY},
        data=iter([b'{"points": [{"id": 42, "vector": [1, 0, 0, 0]}]}']), timeout=5)
    assert chunked.json()["result"]["status"] == "completed"
    assert client.retrieve(collection, ids=[42])[0].payload == {}
    with pytest.raises(UnexpectedResponse) as wrong_dim:
        client.upsert(collection, [models.PointStruct(id=1, vector=[1, 2, 3])])
    assert wrong_dim.value.status_code == 400
    assert "Vector dimension error: expected dim: 4, got 3" in wrong_dim.value.structured()["status"]["error"]


# -- aliases ----------------------------------------------------------------------


def _error(call: Any) -> tuple[int, str]:
    """Status and upstream error message of a client call that must fail."""
    with pytest.raises(UnexpectedResponse) as failed:
        call()
    return failed.value.status_code, failed.value.structured()["status"]["error"]


def _create_alias(alias: str, collection: str) -> models.CreateAliasOperation:
    return models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name=collection, alias_name=alias))


def test_alias_resolves_wherever_a_collection_name_does(server: StandIn, client: QdrantClient) -> None:
    client.create_collection("alias_v1", vectors_config=models.VectorParams(size=4, distance=models.Distance.COSINE))
    client.upsert("alias_v1", _points(5, 4, seed=11), wait=True)
    assert client.update_collection_aliases(change_aliases_operations=[_create_alias("docs", "alias_v1")])
    try:
        assert client.collection_exists("docs")
        assert client.get_collection("docs").points_count == 5
        client.upsert("docs", [models.PointStruct(id=99, vector=[1, 0, 0, 0], payload={"via": "alias"})], wait=True)
        assert client.count("alias_v1").count == 6 and client.count("docs", exact=True).count == 6
        assert client.retrieve("docs", ids=[99])[0].payload == {"via": "alias"}
        assert client.query_points("docs", query=[1, 0, 0, 0], limit=1).points[0].id == 99
        assert client.query_batch_points("docs", requests=[models.QueryRequest(query=[1, 0, 0, 0], limit=1)])[0] \
            .points[0].id == 99
        assert 99 in [p.id for p in client.scroll("docs", limit=10)[0]]
        legacy = requests.post(f"{server.url}/collections/docs/points/search", headers={"api-key": KEY},
                               json={"vector": [1, 0, 0, 0], "limit": 1}, timeout=5)
        assert legacy.json()["result"][0]["id"] == 99
        client.set_payload("docs", {"seen": True}, points=[99])
        client.create_payload_index("docs", "via", models.PayloadSchemaType.KEYWORD)
        assert client.get_collection("alias_v1").payload_schema["via"].points == 1
        client.delete("docs", points_selector=models.PointIdsList(points=[99]))
        assert client.count("alias_v1").count == 5
        snapshot = client.create_snapshot("docs")  # upstream keeps it with the collection
        assert snapshot is not None and snapshot.name.startswith("alias_v1-")
        assert [s.name for s in client.list_snapshots("alias_v1")] == [snapshot.name]
        assert client.delete_snapshot("docs", snapshot.name)
        assert client.update_collection("docs", optimizers_config=models.OptimizersConfigDiff(indexing_threshold=700))
        assert client.get_collection("alias_v1").config.optimizer_config.indexing_threshold == 700

        assert client.get_aliases().aliases == [models.AliasDescription(alias_name="docs", collection_name="alias_v1")]
        assert [a.alias_name for a in client.get_collection_aliases("alias_v1").aliases] == ["docs"]
        assert client.get_collection_aliases("docs").aliases == []  # upstream takes the name literally
        read_only = server.client(key=RO_KEY)
        assert read_only.get_aliases().aliases and read_only.count("docs").count == 5
        assert _error(lambda: read_only.update_collection_aliases([_create_alias("ro", "alias_v1")]))[0] == 403
        # DELETE does not follow aliases upstream: false, and the collection stays
        assert client.delete_collection("docs") is False and client.collection_exists("alias_v1")
    finally:
        client.delete_collection("alias_v1")
    # deleting the collection drops its aliases, so the alias is a 404 again
    assert client.get_aliases().aliases == [] and not client.collection_exists("docs")
    assert _error(lambda: client.count("docs")) == (404, "Not found: Collection `docs` doesn't exist!")


def test_alias_switch_rename_and_errors_follow_upstream(client: QdrantClient) -> None:
    for name, count in (("switch_v1", 2), ("switch_v2", 3)):
        client.create_collection(name, vectors_config=models.VectorParams(size=4, distance=models.Distance.DOT))
        client.upsert(name, _points(count, 4, seed=count), wait=True)
    try:
        assert client.update_collection_aliases([_create_alias("live", "switch_v1")])
        assert client.count("live").count == 2
        # the usual re-index swap: both actions in one request
        assert client.update_collection_aliases([
            models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name="live")),
            _create_alias("live", "switch_v2"),
        ])
        assert client.count("live").count == 3
        assert client.update_collection_aliases([_create_alias("live", "switch_v1")])  # creating again moves it
        assert client.count("live").count == 2
        rename = models.RenameAliasOperation(
            rename_alias=models.RenameAlias(old_alias_name="live", new_alias_name="prod"))
        assert client.update_collection_aliases([rename])
        assert client.count("prod").count == 2 and not client.collection_exists("live")

        assert _error(lambda: client.update_collection_aliases([_create_alias("x", "nope")])) == (
            404, "Not found: Collection `nope` doesn't exist!")
        assert _error(lambda: client.update_collection_aliases([_create_alias("switch_v2", "switch_v1")])) == (
            409, "Wrong input: Collection `switch_v2` already exists!")
        assert _error(lambda: client.update_collection_aliases([rename])) == (
            404, "Not found: Alias live does not exists!")
        assert _error(lambda: client.create_collection("prod", vectors_config=models.VectorParams(
            size=4, distance=models.Distance.DOT))) == (
            400, "Wrong input: Can't create collection with name prod. Alias with the same name already exists")
        # a batch with a failing action changes nothing (the stand-in is stricter than upstream here)
        assert _error(lambda: client.update_collection_aliases([
            models.RenameAliasOperation(rename_alias=models.RenameAlias(old_alias_name="prod", new_alias_name="p2")),
            _create_alias("x", "nope"),
        ]))[0] == 404
        assert [(a.alias_name, a.collection_name) for a in client.get_aliases().aliases] == [("prod", "switch_v1")]
        # deleting an alias that does not exist is not an error upstream
        assert client.update_collection_aliases([models.DeleteAliasOperation(
            delete_alias=models.DeleteAlias(alias_name="ghost"))])
    finally:
        for name in ("switch_v1", "switch_v2"):
            client.delete_collection(name)


# -- payload edits and payload indexes ---------------------------------------------


def _payloads(client: QdrantClient, collection: str) -> dict[Any, Any]:
    return {r.id: r.payload for r in client.scroll(collection, limit=100)[0]}


def test_payload_set_overwrite_delete_clear(client: QdrantClient, collection: str) -> None:
    client.upsert(collection, [
        models.PointStruct(id=i, vector=[1, i, 0, 0], payload={"doc": f"d{i % 2}", "n": i, "meta": {"a": 1, "b": 2}})
        for i in range(6)
    ], wait=True)
    doc_is = lambda value: models.Filter(must=[  # noqa: E731
        models.FieldCondition(key="doc", match=models.MatchValue(value=value))])

    done = client.set_payload(collection, {"lang": "en", "n": None}, points=[0, 1], wait=True)
    assert done.status == models.UpdateStatus.COMPLETED and done.operation_id is not None
    assert _payloads(client, collection)[0] == {"doc": "d0", "meta": {"a": 1, "b": 2}, "lang": "en"}  # null removes
    client.set_payload(collection, {"odd": True}, points=doc_is("d1"))
    assert sorted(i for i, p in _payloads(client, collection).items() if p.get("odd")) == [1, 3, 5]
    client.set_payload(collection, {"c": 3}, points=[2], key="meta")
    client.set_payload(collection, {"x": 1}, points=[2], key="meta.deep")
    assert _payloads(client, collection)[2]["meta"] == {"a": 1, "b": 2, "c": 3, "deep": {"x": 1}}
    version = client.query_points(collection, query=[1, 2, 0, 0], limit=1).points[0]
    assert version.id == 2 and version.version == client.set_payload(collection, {}, points=[2]).operation_id - 1

    client.overwrite_payload(collection, {"only": True}, points=[3])
    client.delete_payload(collection, keys=["doc", "meta.a"], points=[4])
    client.delete_payload(collection, keys=["odd"], points=doc_is("d1"))
    client.clear_payload(collection, points_selector=models.PointIdsList(points=[5]))
    client.clear_payload(collection, points_selector=models.FilterSelector(filter=doc_is("d0")))
    assert _payloads(client, collection) == {
        0: {}, 1: {"doc": "d1", "meta": {"a": 1, "b": 2}, "lang": "en"}, 2: {},
        3: {"only": True}, 4: {"n": 4, "meta": {"b": 2}}, 5: {},
    }
    queued = client.set_payload(collection, {"late": 1}, points=[1], wait=False)
    assert queued.status == models.UpdateStatus.ACKNOWLEDGED and _payloads(client, collection)[1]["late"] == 1

    # a missing id fails the whole request, as upstream reports it, and changes nothing
    assert _error(lambda: client.set_payload(collection, {"z": 1}, points=[0, 404])) == (
        404, "Not found: No point with id 404 found")
    assert "z" not in _payloads(client, collection)[0]
    status, message = _error(lambda: client.set_payload(collection, {"z": 1}, points=[0], key="tags[0]"))
    assert status == 400 and "QueryGPT lab stand-in" in message and "tags[0]" in message
    assert "z" not in _payloads(client, collection)[0]


def test_payload_index_is_reported_in_payload_schema(server: StandIn, client: QdrantClient, collection: str) -> None:
    client.upsert(collection, [
        models.PointStruct(id=1, vector=[1, 0, 0, 0],
                           payload={"doc": "a", "n": 1, "score": 0.5, "meta": {"lang": "en"}}),
        models.PointStruct(id=2, vector=[0, 1, 0, 0], payload={"doc": ["a", "b"], "n": "two", "score": 2}),
        models.PointStruct(id=3, vector=[0, 0, 1, 0], payload={"n": 3, "meta": {"lang": "de"}}),
    ], wait=True)
    assert client.get_collection(collection).payload_schema == {}
    assert client.create_payload_index(collection, "doc", models.PayloadSchemaType.KEYWORD).status == \
        models.UpdateStatus.COMPLETED
    client.create_payload_index(collection, "n", models.PayloadSchemaType.INTEGER)
    client.create_payload_index(collection, "score", "float")
    client.create_payload_index(collection, "doc_as_int", models.PayloadSchemaType.INTEGER)
    tenant = models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=True)
    client.create_payload_index(collection, "meta.lang", tenant)
    schema = client.get_collection(collection).payload_schema
    assert schema["doc"] == models.PayloadIndexInfo(data_type=models.PayloadSchemaType.KEYWORD, points=2)
    assert schema["n"].points == 2  # "two" is not an integer: not indexed
    assert schema["score"].points == 2  # a float index takes integers too
    assert schema["doc_as_int"].points == 0
    assert schema["meta.lang"] == models.PayloadIndexInfo(data_type="keyword", params=tenant, points=2)
    snapshot = client.create_snapshot(collection)  # indexes travel with a snapshot, as upstream's do
    assert snapshot is not None
    on_disk = server.snapshots / collection / snapshot.name
    assert client.recover_snapshot(f"{collection}_copy", location=on_disk.as_uri(), checksum=snapshot.checksum)
    assert client.get_collection(f"{collection}_copy").payload_schema == schema
    client.delete_collection(f"{collection}_copy")
    client.delete_snapshot(collection, snapshot.name)

    client.clear_payload(collection, points_selector=models.PointIdsList(points=[1]))
    assert client.get_collection(collection).payload_schema["doc"].points == 1  # counts follow the data
    assert client.delete_payload_index(collection, "doc").status == models.UpdateStatus.COMPLETED
    assert "doc" not in client.get_collection(collection).payload_schema
    assert client.delete_payload_index(collection, "doc")  # a missing index is not an error upstream

    raw = requests.put(f"{server.url}/collections/{collection}/index", headers={"api-key": KEY},
                       json={"field_name": "doc"}, timeout=5)
    assert (raw.status_code, raw.json()["status"]["error"]) == (
        400, "Bad request: Can't auto-detect field type, please specify `field_schema` in the request")
    assert _error(lambda: client.create_payload_index("nope", "doc", "keyword"))[0] == 404


def test_query_batch_and_search_batch_match_single_requests(server: StandIn, client: QdrantClient,
                                                            collection: str) -> None:
    client.upsert(collection, _points(30, 4, seed=5), wait=True)
    odd = models.Filter(must=[models.FieldCondition(key="tags", match=models.MatchValue(value="odd"))])
    requests_ = [
        models.QueryRequest(query=[1, 0, 0, 0], limit=3),
        models.QueryRequest(query=[0, 1, 0.5, 0], limit=4, offset=1, filter=odd, with_payload=True),
    ]
    batch = client.query_batch_points(collection, requests=requests_)
    singles = [
        client.query_points(collection, query=[1, 0, 0, 0], limit=3),
        client.query_points(collection, query=[0, 1, 0.5, 0], limit=4, offset=1, query_filter=odd, with_payload=True),
    ]
    ranked = lambda responses: [[(p.id, p.score) for p in r.points] for r in responses]  # noqa: E731
    assert ranked(batch) == ranked(singles)
    assert all(p.payload and "odd" in p.payload["tags"] for p in batch[1].points)

    url = f"{server.url}/collections/{collection}/points/search"
    searches = [{"vector": [1, 0, 0, 0], "limit": 2}, {"vector": [0, 0, 1, 0], "limit": 3, "filter": odd.model_dump(
        exclude_none=True)}]
    batched = requests.post(url + "/batch", headers={"api-key": KEY}, json={"searches": searches}, timeout=5).json()
    assert batched["result"] == [requests.post(url, headers={"api-key": KEY}, json=s, timeout=5).json()["result"]
                                 for s in searches]
    # one bad request fails the batch
    status, message = _error(lambda: client.query_batch_points(collection, requests=[
        models.QueryRequest(query=[1, 0, 0, 0]), models.QueryRequest(query=[1, 0])]))
    assert status == 400 and "Vector dimension error" in message


def test_unemulated_routes_answer_400_naming_the_standin(server: StandIn, collection: str) -> None:
    for method, path in [("GET", "/telemetry"), ("POST", f"/collections/{collection}/points/batch"),
                         ("DELETE", f"/collections/{collection}/points/1"), ("GET", "/no/such/route")]:
        response = requests.request(method, server.url + path, headers={"api-key": KEY}, json={}, timeout=5)
        body = response.json()
        assert response.status_code == 400 and set(body) == {"status", "time"}, (method, path, response.text)
        assert f"{method} {path}" in body["status"]["error"]
        assert "is not supported by the QueryGPT lab stand-in (not Qdrant)" in body["status"]["error"]
    assert requests.get(server.url + "/telemetry", timeout=5).status_code == 401  # the key check still comes first
    missing = requests.get(server.url + "/collections/nope", headers={"api-key": KEY}, timeout=5)
    assert missing.status_code == 404  # a real not-found stays upstream's 404


# -- snapshots ------------------------------------------------------------------


def _snapshot_with_version(data: bytes, version: str) -> bytes:
    """Rewrite a stand-in snapshot as if another version had written it."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.getmembers()[0]
        document = json.loads(tar.extractfile(member).read())  # type: ignore[union-attr]
    document["standin_version"] = version
    payload = json.dumps(document).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        member.size = len(payload)
        tar.addfile(member, io.BytesIO(payload))
    return out.getvalue()


def test_snapshot_create_list_download_recover_delete(server: StandIn, client: QdrantClient,
                                                       collection: str, tmp_path: Path) -> None:
    points = _points(10, 4, seed=3)
    client.upsert(collection, points, wait=True)
    snapshot = client.create_snapshot(collection)
    assert snapshot is not None and snapshot.name.startswith(f"{collection}-") and snapshot.name.endswith(".snapshot")
    assert [s.name for s in client.list_snapshots(collection)] == [snapshot.name]
    on_disk = server.snapshots / collection / snapshot.name
    assert (server.snapshots / collection / f"{snapshot.name}.checksum").read_text() == snapshot.checksum
    download = requests.get(f"{server.url}/collections/{collection}/snapshots/{snapshot.name}",
                            headers={"api-key": KEY}, timeout=5)
    # requests accepts gzip: the packaged build compresses like upstream's Compress middleware,
    # and requests decodes it (test_qdrant_compression.py checks the wire bytes)
    assert download.headers["Content-Encoding"] == "gzip"
    assert download.content == on_disk.read_bytes()
    assert hashlib.sha256(download.content).hexdigest() == snapshot.checksum and snapshot.size == len(download.content)

    # file:// from the snapshots directory into a new collection, checksum verified
    assert client.recover_snapshot("restored_file", location=on_disk.as_uri(), checksum=snapshot.checksum,
                                   priority=models.SnapshotPriority.SNAPSHOT)
    assert client.count("restored_file").count == 10
    # http(s) URL (the stand-in's own download URL, authenticated with api_key) over changed data
    client.delete(collection, points_selector=models.PointIdsList(points=[0, 1, 2]))
    url = f"{server.url}/collections/{collection}/snapshots/{snapshot.name}"
    assert client.recover_snapshot(collection, location=url, api_key=KEY)
    assert client.count(collection).count == 10
    assert client.retrieve(collection, ids=[0])[0].payload == points[0].payload
    # multipart upload
    assert client.http.snapshots_api.recover_from_uploaded_snapshot(
        "restored_upload", wait=True, priority=models.SnapshotPriority.SNAPSHOT,
        checksum=snapshot.checksum, snapshot=io.BytesIO(download.content)).result is True
    assert client.count("restored_upload").count == 10

    with pytest.raises(UnexpectedResponse) as mismatch:
        client.recover_snapshot("restored_bad", location=on_disk.as_uri(), checksum="0" * 64)
    assert mismatch.value.status_code == 400
    assert "Snapshot checksum mismatch" in mismatch.value.structured()["status"]["error"]
    outside = tmp_path / "outside.snapshot"
    outside.write_bytes(download.content)
    with pytest.raises(UnexpectedResponse) as escaped:
        client.recover_snapshot("restored_bad", location=outside.as_uri())
    assert escaped.value.status_code == 403
    with pytest.raises(UnexpectedResponse) as old:
        client.http.snapshots_api.recover_from_uploaded_snapshot(
            "restored_bad", snapshot=io.BytesIO(_snapshot_with_version(download.content, "1.14.2")))
    assert old.value.status_code == 400
    assert "same minor version" in old.value.structured()["status"]["error"]
    assert not client.collection_exists("restored_bad")

    assert client.delete_snapshot(collection, snapshot.name)
    assert client.list_snapshots(collection) == [] and not on_disk.exists()
    for name in ("restored_file", "restored_upload"):
        client.delete_collection(name)


# -- persistence and env overrides -----------------------------------------------


def test_restart_keeps_data_and_env_overrides_apply(executable: Path, tmp_path: Path) -> None:
    port = _free_port()
    standin = StandIn(executable, tmp_path, env={
        "QDRANT__SERVICE__API_KEY": "from-env",
        "QDRANT__SERVICE__HTTP_PORT": str(port),
        "QDRANT__STORAGE__STORAGE_PATH": str(tmp_path / "env-storage"),
    })
    standin.http_port = port
    standin.start()
    client = standin.client(key="from-env")
    client.create_collection("persist", vectors_config=models.VectorParams(size=2, distance="Dot"))
    client.upsert("persist", [models.PointStruct(id=7, vector=[0.5, 0.5], payload={"k": "v"})], wait=True)
    client.update_collection_aliases([_create_alias("kept", "persist")])
    client.create_payload_index("persist", "k", models.PayloadSchemaType.KEYWORD)
    standin.stop()
    assert (tmp_path / "env-storage" / "collections" / "persist").is_dir()
    assert json.loads((tmp_path / "env-storage" / "aliases" / "data.json").read_text()) == {"kept": "persist"}
    standin.start()
    try:
        assert client.retrieve("persist", ids=[7], with_vectors=True)[0].vector == [0.5, 0.5]
        assert client.count("kept").count == 1
        assert client.get_collection("kept").payload_schema["k"].points == 1
        assert client.get_collection("persist").config.params.vectors.distance == models.Distance.DOT
        with pytest.raises(UnexpectedResponse):
            standin.client(key=KEY).get_collections()  # the file's key was overridden
    finally:
        standin.stop()


def test_tls_from_config_keys(executable: Path, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=30,
    )
    standin = StandIn(executable, tmp_path, env={
        "QDRANT__SERVICE__ENABLE_TLS": "true", "QDRANT__TLS__CERT": str(cert), "QDRANT__TLS__KEY": str(key),
    })
    standin.scheme, standin.verify = "https", str(cert)
    standin.start()
    try:
        response = requests.get(standin.url + "/collections", headers={"api-key": KEY}, verify=str(cert), timeout=5)
        assert response.json()["result"] == {"collections": []}
    finally:
        standin.stop()
