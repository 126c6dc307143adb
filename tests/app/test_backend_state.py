"""Application state in PostgreSQL: what uploads and queries record, the listing endpoints,
the erasure of a document (DELETE /documents/{id}) and how each behaves when the database
or S3 fails. Runs against the session's real PostgreSQL (conftest.py)."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from typing import Any

import httpx
import pytest
from botocore.exceptions import EndpointConnectionError
from pgserver import free_port
from qdrant_client import QdrantClient
from querygpt import reindex
from querygpt.documents import DocumentStore
from querygpt_testkit import (
    DOCUMENTS_BUCKET,
    UNKNOWN_TOKEN,
    bearer,
    make_pdf,
    metric_value,
    points,
    upload,
)

OTHER_PDF = make_pdf([["Table invoices: one row per invoice.", "invoices.id INTEGER PRIMARY KEY"]])
NEW_VERSION = make_pdf([["Table customers v2: customers.vip BOOLEAN", "customers.id BIGINT"]])


def versions(s3: Any, key: str) -> list[dict[str, Any]]:
    """Every version and delete marker of exactly ``key``."""
    listing = s3.list_object_versions(Bucket=DOCUMENTS_BUCKET, Prefix=key)
    found = [*listing.get("Versions", []), *listing.get("DeleteMarkers", [])]
    return [v for v in found if v["Key"] == key]


def ask(client: Any, question: str = "Which customers placed orders?", **body: str) -> dict[str, Any]:
    response = client.post("/query", json={"query": question, **body})
    assert response.status_code == 200, response.text
    return response.json()


# -- recording and listing ----------------------------------------------------


def test_upload_is_recorded_and_listed(make_client, schema_pdf, database) -> None:
    client = make_client()
    assert client.get("/collections").json() == {"collections": []}
    body = upload(client, schema_pdf, filename="shop.pdf", collection_name="shop").json()
    upload(client, OTHER_PDF, filename="billing.pdf", collection_name="billing")
    upload(client, OTHER_PDF, filename="invoices.pdf", collection_name="shop")

    collections = client.get("/collections").json()["collections"]
    assert [(c["name"], c["documents"]) for c in collections] == [("billing", 1), ("shop", 2)]
    assert all(c["updated_at"] for c in collections)

    listing = client.get("/collections/shop/documents")
    assert listing.status_code == 200
    documents = listing.json()["documents"]
    assert [d["filename"] for d in documents] == ["invoices.pdf", "shop.pdf"]
    shop = documents[1]
    assert shop == {
        "id": body["document_id"],
        "filename": "shop.pdf",
        "sha256": body["sha256"],
        "size": len(schema_pdf),
        "chunks": body["chunks"],
        "s3_key": body["s3_key"],
        "s3_version_id": body["s3_version_id"],
        "uploaded_at": shop["uploaded_at"],
    }
    assert listing.json()["collection"] == "shop"


def test_unknown_collection_is_404_and_a_bad_name_422(client) -> None:
    response = client.get("/collections/nothing_here/documents")
    assert response.status_code == 404
    assert "nothing_here" in response.json()["detail"]
    response = client.get("/collections/bad name!/documents")
    assert response.status_code == 422
    assert "letters, digits" in response.json()["detail"]


def test_reupload_replaces_the_document(make_client, schema_pdf, database) -> None:
    qdrant = QdrantClient(":memory:")
    client = make_client(qdrant)
    first = upload(client, schema_pdf, filename="schema.pdf").json()
    second = upload(client, NEW_VERSION, filename="schema.pdf").json()
    assert first["document_id"] != second["document_id"]

    rows = database.query("SELECT id::text, sha256, s3_version_id FROM documents")
    assert rows == [(second["document_id"], second["sha256"], second["s3_version_id"])]
    # Only the new version's chunks are searchable.
    assert {p["document_id"] for p in points(qdrant, "querygpt").values()} == {second["document_id"]}
    sources = ask(client, "customers vip")["sources"]
    assert sources and {s["document_id"] for s in sources} == {second["document_id"]}


def test_query_history_is_recorded_newest_first_and_paged(make_client, schema_pdf, database) -> None:
    client = make_client()
    document_id = upload(client, schema_pdf).json()["document_id"]
    upload(client, OTHER_PDF, filename="invoices.pdf", collection_name="billing")
    answers = [ask(client, f"question {n} about orders") for n in range(3)]
    ask(client, "invoices?", collection_name="billing")

    page = client.get("/history", params={"limit": 2, "collection": "querygpt"}).json()
    assert [e["question"] for e in page["entries"]] == ["question 2 about orders", "question 1 about orders"]
    entry = page["entries"][0]
    assert entry["answer"] == answers[2]["result"] and entry["collection"] == "querygpt"
    assert entry["sources"] == answers[2]["sources"]  # the excerpts the user saw
    assert {s["document_id"] for s in entry["sources"]} == {document_id}
    assert entry["latency_ms"] >= 0 and entry["created_at"]
    rest = client.get(
        "/history", params={"limit": 2, "collection": "querygpt", "before": page["next_before"]}
    ).json()
    assert [e["question"] for e in rest["entries"]] == ["question 0 about orders"]
    assert rest["next_before"] is None
    everything = client.get("/history").json()
    assert [e["question"] for e in everything["entries"]][0] == "invoices?"
    assert len(everything["entries"]) == 4 and everything["next_before"] is None
    # The stored sources also name the original, so an erasure finds older versions' excerpts.
    (stored,) = database.query("SELECT sources FROM query_history ORDER BY id LIMIT 1")
    assert all(source["s3_key"] for source in stored[0])


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": 201}, {"limit": "many"}, {"before": 0}, {"collection": "bad name"}],
)
def test_history_rejects_bad_parameters_with_422(client, params) -> None:
    response = client.get("/history", params=params)
    assert response.status_code == 422
    assert response.json()["detail"].startswith(("Invalid request", "collection"))


def test_history_write_failure_does_not_fail_the_query(
    make_client, schema_pdf, database, capsys
) -> None:
    client = make_client()
    upload(client, schema_pdf)
    before = metric_value(client, "querygpt_history_write_failures_total")
    with database.server.admin(database.name) as admin:
        admin.execute("ALTER TABLE query_history RENAME TO query_history_away")
        try:
            body = ask(client)
        finally:
            admin.execute("ALTER TABLE query_history_away RENAME TO query_history")
    assert body["result"].startswith("SELECT")
    assert metric_value(client, "querygpt_history_write_failures_total") == before + 1
    logged = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    warnings = [e for e in logged if "history entry could not be written" in e["msg"]]
    assert warnings and warnings[0]["level"] == "WARNING"
    assert client.get("/history").json()["entries"] == []


def test_reindex_records_the_documents_it_indexes(
    make_client, settings, fake_ollama, schema_pdf, database
) -> None:
    qdrant = QdrantClient(":memory:")
    client = make_client(qdrant)
    body = upload(client, schema_pdf, filename="schema.pdf").json()
    (uploaded_at,) = database.query("SELECT uploaded_at FROM documents")[0]
    database.truncate()  # as if the database came after the upload

    summary = reindex.run(
        settings, ["querygpt"], qdrant_client=qdrant, http_transport=httpx.MockTransport(fake_ollama)
    )
    assert summary.ok, summary.as_dict()
    rows = database.query("SELECT id::text, collection, filename, chunks, uploaded_at FROM documents")
    assert [r[:4] for r in rows] == [(body["document_id"], "querygpt", "schema.pdf", body["chunks"])]
    # The object's LastModified (S3 has whole seconds), not the time of the reindex.
    assert abs((rows[0][4] - uploaded_at).total_seconds()) < 2


# -- erasure ------------------------------------------------------------------


def test_delete_erases_the_document_everywhere(make_client, s3, schema_pdf, database) -> None:
    qdrant = QdrantClient(":memory:")
    client = make_client(qdrant)
    old = upload(client, schema_pdf, filename="schema.pdf").json()
    ask(client, "orders total")  # quotes the old version
    doc = upload(client, NEW_VERSION, filename="schema.pdf").json()
    other = upload(client, OTHER_PDF, filename="invoices.pdf").json()
    ask(client, "customers vip invoices")  # quotes the new version and the other document
    key = doc["s3_key"]
    s3.delete_object(Bucket=DOCUMENTS_BUCKET, Key=key)  # a delete marker on top of it
    assert len(versions(s3, key)) == 3

    response = client.delete(f"/documents/{doc['document_id']}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == doc["document_id"] and body["filename"] == "schema.pdf"
    assert body["collection"] == "querygpt"
    assert body["chunks_removed"] == doc["chunks"]
    assert body["s3_versions_removed"] == 3
    assert body["history_entries_scrubbed"] == 2

    # Qdrant: no chunk of any version; the other document is untouched.
    payloads = points(qdrant, "querygpt").values()
    assert {p["document_id"] for p in payloads} == {other["document_id"]}
    assert not [p for p in payloads if p["s3_key"] == key]
    # S3: no version of the key; only the erasure's own delete marker, current, which S3
    # replication carries to the replica bucket (deleting it too would never be replicated).
    left = versions(s3, key)
    assert [(v.get("Size"), v["IsLatest"]) for v in left] == [(None, True)], left
    assert s3.list_object_versions(Bucket=DOCUMENTS_BUCKET, Prefix=key).get("Versions") is None
    # Database: the row is gone, the history rows stay without its (or its old version's) excerpts.
    assert database.query("SELECT 1 FROM documents WHERE id = %s", doc["document_id"]) == []
    history = client.get("/history").json()["entries"]
    assert len(history) == 2
    quoted = {s["document_id"] for e in history for s in e["sources"]}
    assert doc["document_id"] not in quoted and old["document_id"] not in quoted
    assert other["document_id"] in quoted
    assert not database.query(
        "SELECT id FROM query_history WHERE sources::text LIKE %s", f"%{key}%"
    )
    listing = client.get("/collections/querygpt/documents").json()["documents"]
    assert [d["filename"] for d in listing] == ["invoices.pdf"]
    # Done: a second DELETE finds nothing.
    assert client.delete(f"/documents/{doc['document_id']}").status_code == 404


def test_erasure_keeps_one_delete_marker_for_replication_and_is_safe_to_repeat(s3) -> None:
    """The store's own steps: every version and older marker goes, the newest marker stays
    (what replication carries to the replica); a retry removes what a failed run left."""
    store = DocumentStore(s3, DOCUMENTS_BUCKET, "documents")
    key = "documents/querygpt/schema.pdf"
    for body in (b"v1", b"v2"):
        s3.put_object(Bucket=DOCUMENTS_BUCKET, Key=key, Body=body)
    s3.put_object(Bucket=DOCUMENTS_BUCKET, Key=key + ".old", Body=b"another key")
    s3.delete_object(Bucket=DOCUMENTS_BUCKET, Key=key)  # an older marker, under a newer version
    s3.put_object(Bucket=DOCUMENTS_BUCKET, Key=key, Body=b"v3")

    assert store.delete_all_versions(key) == 4  # three versions, one older marker
    (marker,) = versions(s3, key)
    assert "Size" not in marker and marker["IsLatest"], marker
    assert store.delete_all_versions(key) == 0  # done: the marker stays
    assert versions(s3, key) == [marker]
    assert len(versions(s3, key + ".old")) == 1  # a key it only prefixes is untouched

    # A run that stopped after its plain delete left a version under its marker: the retry
    # removes the version and every marker before its own.
    s3.put_object(Bucket=DOCUMENTS_BUCKET, Key=key, Body=b"v4")
    s3.delete_object(Bucket=DOCUMENTS_BUCKET, Key=key)
    assert store.delete_all_versions(key) == 3  # v4, both markers before the retry's
    (last,) = versions(s3, key)
    assert "Size" not in last and last["IsLatest"] and last["VersionId"] != marker["VersionId"]


@pytest.mark.parametrize(
    "document_id", ["5d1f3c0e-8a39-4f7e-9a51-0c2b7e6d4a10", "not-a-uuid", "1234"]
)
def test_delete_of_an_unknown_document_is_404_and_removes_nothing(
    make_client, s3, schema_pdf, database, document_id
) -> None:
    qdrant = QdrantClient(":memory:")
    client = make_client(qdrant)
    doc = upload(client, schema_pdf).json()
    ask(client)
    response = client.delete(f"/documents/{document_id}")
    assert response.status_code == 404
    assert "No document with id" in response.json()["detail"]
    assert len(points(qdrant, "querygpt")) == doc["chunks"]
    assert len(versions(s3, doc["s3_key"])) == 1
    assert database.query("SELECT count(*) FROM documents") == [(1,)]
    assert client.get("/history").json()["entries"][0]["sources"]


class FlakyS3:
    """The moto client, except that listing versions fails while ``down`` is set."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.down = False

    def get_paginator(self, name: str) -> Any:
        if self.down and name == "list_object_versions":
            raise EndpointConnectionError(endpoint_url="https://s3.internal")
        return self._client.get_paginator(name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_delete_with_s3_down_is_503_keeps_the_row_and_a_retry_finishes(
    make_client, s3, schema_pdf, database
) -> None:
    qdrant = QdrantClient(":memory:")
    flaky = FlakyS3(s3)
    client = make_client(qdrant, s3_client=flaky)
    doc = upload(client, schema_pdf).json()
    ask(client)

    flaky.down = True
    response = client.delete(f"/documents/{doc['document_id']}")
    assert response.status_code == 503
    assert "retry the DELETE" in response.json()["detail"]
    assert "s3.internal" not in response.json()["detail"]
    assert database.query("SELECT count(*) FROM documents") == [(1,)]  # kept for the retry

    flaky.down = False
    response = client.delete(f"/documents/{doc['document_id']}")
    assert response.status_code == 200, response.text
    assert response.json()["s3_versions_removed"] == 1
    assert response.json()["chunks_removed"] == 0  # already gone in the first attempt
    assert response.json()["history_entries_scrubbed"] == 1
    # Only the erasure's own delete marker is left (what replication carries to the replica).
    assert [v["IsLatest"] for v in versions(s3, doc["s3_key"]) if "Size" not in v] == [True]
    assert [v for v in versions(s3, doc["s3_key"]) if "Size" in v] == []
    assert points(qdrant, "querygpt") == {}
    assert database.query("SELECT count(*) FROM documents") == [(0,)]


# -- the database down --------------------------------------------------------


@pytest.fixture
def dead_database(settings) -> Any:
    """Settings whose every database host refuses connections."""
    return {"database_hosts": (("127.0.0.1", free_port()), ("127.0.0.1", free_port()))}


def test_upload_with_the_database_down_is_503_and_stores_nothing(
    make_client, s3, schema_pdf, dead_database
) -> None:
    qdrant = QdrantClient(":memory:")
    # No user can be made without the database: a well-formed token, which the backend
    # cannot check either.
    client = make_client(qdrant, anonymous=True, **dead_database)
    client.headers.update(bearer(UNKNOWN_TOKEN))
    response = upload(client, schema_pdf)
    assert response.status_code == 503
    detail = response.json()["detail"]
    assert "database is unreachable" in detail and "could not check the API token" in detail
    assert "127.0.0.1" not in detail
    assert s3.list_object_versions(Bucket=DOCUMENTS_BUCKET).get("Versions") is None
    assert not qdrant.collection_exists("querygpt")


def test_ready_is_503_when_the_database_is_down(make_client, dead_database) -> None:
    client = make_client(anonymous=True, **dead_database)
    client.headers.update(bearer(UNKNOWN_TOKEN))
    response = client.get("/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["failed"] == ["database"]
    assert body["checks"]["database"].startswith("unreachable: ")
    ports = [str(port) for _, port in dead_database["database_hosts"]]
    assert not any(p in response.text for p in ports) and "127.0.0.1" not in response.text
    # The other endpoints answer 503 with a reason too.
    for path in ("/collections", "/history", "/collections/querygpt/documents"):
        failed = client.get(path)
        assert failed.status_code == 503, path
        assert "database is unreachable" in failed.json()["detail"]


def test_ready_reports_a_missing_or_behind_schema(make_client, database, monkeypatch) -> None:
    empty = database.server.create_database(f"empty_{uuid.uuid4().hex[:8]}")
    try:
        client = make_client(database_name=empty, anonymous=True)
        body = client.get("/ready").json()
        assert body["checks"]["database"] == (
            "not ready: schema not created; run `querygpt-backend migrate`"
        )
    finally:
        database.server.drop_database(empty)

    # A release whose head is a revision after the database's.
    import querygpt.app
    import querygpt.readiness

    monkeypatch.setattr(querygpt.app, "schema_head", lambda: "0003")
    monkeypatch.setattr(querygpt.readiness, "_older", lambda head: frozenset({"0001", "0002"}))
    response = make_client().get("/ready")
    assert response.status_code == 503
    assert response.json()["checks"]["database"].startswith(
        "not ready: schema behind (database at revision 0002, this release needs 0003)"
    )


def test_the_password_is_never_logged_nor_shown(make_client, settings, schema_pdf, capsys) -> None:
    password = settings.database_password
    assert password and password not in repr(settings)
    client = make_client()
    upload(client, schema_pdf)
    ask(client)
    from querygpt.database import Database

    database = Database.connect(settings)
    assert password not in repr(database.engine) and password not in str(database.engine.url)
    database.close()
    # A failing connection (wrong port) logs and answers without it too.
    dead = make_client(database_hosts=(("127.0.0.1", free_port()),), anonymous=True)
    dead.headers.update(bearer(UNKNOWN_TOKEN))
    dead.get("/ready")
    upload(dead, schema_pdf)
    out = capsys.readouterr()
    assert out.out, "the JSON log lines were captured"
    assert password not in out.out and password not in out.err
    # The log formatter scrubs it even when a message carries it.
    import logging

    logging.getLogger("querygpt.test").warning("connecting with %s", password)
    assert password not in capsys.readouterr().out


# -- writes while no standby confirms (synchronous replication) --------------------------


@pytest.fixture
def standby_missing(postgres: Any) -> Any:
    """A migrated database of its own, on a server that now waits for a synchronous standby
    that never comes (as the primary does while its standby's zone is down)."""
    from querygpt import migrate
    from querygpt.database import make_engine
    from querygpt_testkit import TestDatabase

    name = postgres.create_database("querygpt_standby_missing")
    engine = make_engine(TestDatabase(postgres, name).settings(), for_migrations=True)
    try:
        migrate.upgrade(engine)
    finally:
        engine.dispose()
    with postgres.admin() as conn:
        # The test server runs synchronous_commit=off; the database's setting overrides it.
        conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = on')
        conn.execute("ALTER SYSTEM SET synchronous_standby_names = 'absent_standby'")
        conn.execute("SELECT pg_reload_conf()")
    try:
        yield TestDatabase(postgres, name)
    finally:
        with postgres.admin() as conn:
            conn.execute("ALTER SYSTEM RESET synchronous_standby_names")
            conn.execute("SELECT pg_reload_conf()")
        postgres.drop_database(name)


def test_without_a_standby_history_never_waits_and_a_document_write_commits_after_the_wait(
    standby_missing,
) -> None:
    """PostgreSQL never stops waiting for a synchronous standby by itself (statement_timeout
    is off during a commit). The history commits locally; a document write waits
    ``commit_wait`` seconds, then is committed on the primary alone, logged and counted."""
    from prometheus_client import REGISTRY
    from querygpt.database import Database, make_engine
    from querygpt.documents import StoredDocument

    from concurrent.futures import ThreadPoolExecutor
    from concurrent.futures import TimeoutError as StillWaiting

    def unreplicated() -> float:
        return REGISTRY.get_sample_value("querygpt_database_unreplicated_commits_total") or 0.0

    pool = ThreadPoolExecutor(1)

    def bounded(call: Any, *args: Any, **kwargs: Any) -> Any:
        """The call's result; a failure, not a hung run, if its commit is still waiting after
        60 s (the fixture's finalizer then drops the database, which ends the wait)."""
        try:
            return pool.submit(call, *args, **kwargs).result(timeout=60)
        except StillWaiting:
            pytest.fail(f"{call.__name__} still waits for the standby after 60 s (commit_wait is 1 s)")

    database = Database(make_engine(standby_missing.settings()), commit_wait=1.0)
    try:
        before = unreplicated()
        history_id = bounded(database.record_query, "shop", "Which customers?", "SELECT 1;", [], 12)
        assert unreplicated() == before  # committed locally: no wait to cut
        stored = StoredDocument("documents/shop/a.pdf", "v1", "0" * 64, "a.pdf")
        record = bounded(database.record_document, "shop", stored, size=10, chunks=1)
        assert unreplicated() == before + 1  # this commit waited, and was cut
        assert standby_missing.query("SELECT id FROM query_history") == [(history_id,)]
        assert standby_missing.query("SELECT filename FROM documents WHERE id = %s", uuid.UUID(record.id)) == [
            ("a.pdf",)
        ]
        # The pooled connections are clean after a cut wait: the next write works the same.
        assert bounded(database.forget_document, record.id, stored.key) == 0
        assert unreplicated() == before + 2
        assert standby_missing.query("SELECT count(*) FROM documents") == [(0,)]
    finally:
        pool.shutdown(wait=False)
        database.close()
