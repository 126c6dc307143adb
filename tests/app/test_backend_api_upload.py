"""POST /upload: indexing, bad input (all 4xx with a JSON reason) and the
all-or-nothing guarantee when Ollama or Qdrant fails midway."""

from __future__ import annotations

from typing import Any

import pytest
from qdrant_client import QdrantClient
from qdrant_client.http.exceptions import ResponseHandlingException
from querygpt_testkit import encrypt_pdf, make_pdf, metric_value, upload


def _points(qdrant: QdrantClient, collection: str) -> list[dict[str, Any]]:
    records, _ = qdrant.scroll(collection, limit=1000, with_payload=True)
    return [r.payload or {} for r in records]


def test_upload_indexes_chunks_with_payload(make_client, fake_ollama, schema_pdf) -> None:
    qdrant = QdrantClient(":memory:")
    client = make_client(qdrant)
    response = upload(client, schema_pdf, filename="C:\\docs\\shop schema.pdf")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["collection_name"] == "querygpt"
    assert body["filename"] == "shop schema.pdf"
    assert body["pages"] == 2 and body["chunks"] >= 2
    assert "Indexed" in body["message"]

    info = qdrant.get_collection("querygpt")
    assert info.config.params.vectors.size == 32  # learned from the first embedding
    assert info.config.params.vectors.distance.name == "COSINE"
    payloads = _points(qdrant, "querygpt")
    assert len(payloads) == body["chunks"]
    assert {p["document_id"] for p in payloads} == {body["document_id"]}
    assert {p["page"] for p in payloads} == {1, 2}
    assert sorted(p["chunk"] for p in payloads) == list(range(body["chunks"]))
    assert all(p["filename"] == "shop schema.pdf" and p["text"] for p in payloads)
    # Embedded in batches of QUERYGPT_EMBED_BATCH_SIZE (4 in the test settings).
    assert all(len(batch) <= 4 for batch in fake_ollama.embed_calls)
    assert metric_value(client, "querygpt_documents_indexed") == 1
    assert metric_value(client, "querygpt_chunks_indexed") == body["chunks"]


def test_upload_into_named_collection(make_client, schema_pdf) -> None:
    qdrant = QdrantClient(":memory:")
    client = make_client(qdrant)
    assert upload(client, schema_pdf, collection_name="sales-db_1").status_code == 200
    assert upload(client, schema_pdf, collection_name="  ").status_code == 200  # blank = default
    assert {c.name for c in qdrant.get_collections().collections} == {"sales-db_1", "querygpt"}
    assert metric_value(client, "querygpt_documents_indexed") == 2


@pytest.mark.parametrize("name", ["has space", "a/b", "x" * 65, "drop;table"])
def test_invalid_collection_name_is_422(client, schema_pdf, name) -> None:
    response = upload(client, schema_pdf, collection_name=name)
    assert response.status_code == 422
    assert "collection_name" in response.json()["detail"]


def _reject_count(client, reason: str) -> float:
    return metric_value(client, "querygpt_upload_rejected_total", reason=reason)


@pytest.mark.parametrize(
    ("data", "filename", "status", "reason"),
    [
        (b"", "empty.pdf", 400, "empty"),
        (b"SELECT * FROM users;", "query.pdf", 415, "not_pdf"),
        (b"%PDF-1.4\nthis is not really a pdf", "broken.pdf", 422, "corrupt"),
        (make_pdf([], blank_pages=1), "scan.pdf", 422, "no_text"),
        (encrypt_pdf(make_pdf(), "pw"), "locked.pdf", 422, "encrypted"),
    ],
)
def test_bad_files_are_rejected_with_reason(client, data, filename, status, reason) -> None:
    before = _reject_count(client, reason)
    response = upload(client, data, filename=filename)
    assert response.status_code == status
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail
    assert _reject_count(client, reason) == before + 1


def test_pdf_extension_and_content_type_are_not_trusted(client) -> None:
    response = client.post(
        "/upload", files={"pdf_file": ("schema.pdf", b"<html>no</html>", "application/pdf")}
    )
    assert response.status_code == 415


def test_missing_file_field_is_422(client) -> None:
    response = client.post("/upload", data={"collection_name": "x"})
    assert response.status_code == 422
    assert "pdf_file" in response.json()["detail"]


def test_oversize_upload_is_413_while_reading(make_client) -> None:
    limit = 4096
    client = make_client(max_upload_bytes=limit)
    # Slightly over the limit: passes the multipart allowance, stopped by the
    # file read.
    data = make_pdf() + b"\n%" + b"x" * limit  # a comment after %%EOF pads it
    assert limit < len(data) < limit + 60_000
    response = upload(client, data)
    assert response.status_code == 413
    assert "QUERYGPT_MAX_UPLOAD_BYTES" in response.json()["detail"]
    # Far over: stopped by the body limit before the form is parsed.
    huge = b"%PDF-1.4\n" + b"0" * (limit + 200_000)
    response = upload(client, huge)
    assert response.status_code == 413
    assert "QUERYGPT_MAX_UPLOAD_BYTES" in response.json()["detail"]
    assert response.headers["x-request-id"]
    assert _reject_count(client, "too_large") >= 2


def test_chunked_body_without_length_is_limited(make_client) -> None:
    client = make_client(max_upload_bytes=1024)

    def body():
        boundary = b"--xyz\r\n"
        yield boundary + b'Content-Disposition: form-data; name="pdf_file"; filename="a.pdf"\r\n'
        yield b"Content-Type: application/pdf\r\n\r\n%PDF-1.4\n"
        for _ in range(200):
            yield b"0" * 1024
        yield b"\r\n--xyz--\r\n"

    response = client.post(
        "/upload", content=body(), headers={"content-type": "multipart/form-data; boundary=xyz"}
    )
    assert response.status_code == 413


# -- all or nothing ---------------------------------------------------------


def test_embedding_failure_midway_rolls_back(make_client, fake_ollama) -> None:
    qdrant = QdrantClient(":memory:")
    client = make_client(qdrant, chunk_size=60, chunk_overlap=10, embed_batch_size=2)
    data = make_pdf([[f"table t{i}: column c{i} INTEGER" for i in range(6)] for _ in range(3)])
    fake_ollama.fail_embed_call = 3  # batches 1 and 2 are already stored by then
    response = upload(client, data)
    assert response.status_code == 502
    detail = response.json()["detail"]
    assert "model runner crashed" in detail and "Nothing from this upload was stored" in detail
    assert len(fake_ollama.embed_calls) == 3
    assert qdrant.count("querygpt").count == 0
    assert metric_value(client, "querygpt_chunks_indexed") == 0

    fake_ollama.fail_embed_call = None
    assert upload(client, data).status_code == 200  # a retry works and does not duplicate
    assert len({p["document_id"] for p in _points(qdrant, "querygpt")}) == 1


def test_ollama_down_during_upload_is_503(make_client, fake_ollama, schema_pdf) -> None:
    qdrant = QdrantClient(":memory:")
    client = make_client(qdrant, embed_batch_size=1)
    fake_ollama.fail_embed_call = 2
    fake_ollama.embed_failure = "down"
    response = upload(client, schema_pdf)
    assert response.status_code == 503
    assert "Ollama" in response.json()["detail"] and "unreachable" in response.json()["detail"]
    assert qdrant.count("querygpt").count == 0


class FlakyQdrant(QdrantClient):
    """Local Qdrant whose n-th upsert fails as if the server went away."""

    def __init__(self, fail_on_upsert: int) -> None:
        super().__init__(":memory:")
        self.fail_on_upsert = fail_on_upsert
        self.upserts = 0

    def upsert(self, *args: Any, **kwargs: Any) -> Any:
        self.upserts += 1
        if self.upserts == self.fail_on_upsert:
            raise ResponseHandlingException(ConnectionError("connection reset"))
        return super().upsert(*args, **kwargs)


def test_upsert_failure_midway_rolls_back(make_client) -> None:
    qdrant = FlakyQdrant(fail_on_upsert=2)
    client = make_client(qdrant, chunk_size=60, chunk_overlap=10, embed_batch_size=2)
    data = make_pdf([[f"table t{i}: column c{i} INTEGER" for i in range(6)]])
    response = upload(client, data)
    assert response.status_code == 503
    assert "Qdrant" in response.json()["detail"]
    assert qdrant.upserts == 2
    assert qdrant.count("querygpt").count == 0


def test_dimension_mismatch_is_409(make_client, schema_pdf) -> None:
    from qdrant_client import models

    qdrant = QdrantClient(":memory:")
    qdrant.create_collection(
        "old", vectors_config=models.VectorParams(size=7, distance=models.Distance.COSINE)
    )
    client = make_client(qdrant)
    response = upload(client, schema_pdf, collection_name="old")
    assert response.status_code == 409
    assert "7-dimensional" in response.json()["detail"]
