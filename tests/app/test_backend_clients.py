"""The Ollama client and the Qdrant wrapper translate failures into errors
that name the service and say what to do."""

from __future__ import annotations

import httpx
import pytest
from qdrant_client import QdrantClient
from querygpt.errors import DimensionMismatch, UpstreamError, UpstreamUnavailable
from querygpt.ollama import OllamaClient
from querygpt.vectorstore import StoredChunk, VectorStore


def _ollama(handler) -> OllamaClient:
    return OllamaClient("http://127.0.0.1:11434", timeout=5, transport=httpx.MockTransport(handler))


def test_embed_sends_batch_and_returns_vectors() -> None:
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["path"] = request.url.path
        seen["body"] = request.read()
        return httpx.Response(200, json={"embeddings": [[1, 0], [0, 1]]})

    assert _ollama(handler).embed("all-minilm", ["a", "b"]) == [[1.0, 0.0], [0.0, 1.0]]
    assert seen["path"] == "/api/embed"
    assert b'"input":["a","b"]' in seen["body"].replace(b" ", b"")


def test_model_not_found_is_reported_in_ollamas_words() -> None:
    client = _ollama(
        lambda r: httpx.Response(
            404, json={"error": 'model "nope" not found, try pulling it first'}
        )
    )
    with pytest.raises(UpstreamError) as info:
        client.chat("nope", "s", "u")
    assert info.value.status_code == 502
    assert "try pulling it first" in info.value.detail


def test_wrong_number_of_embeddings_is_an_error() -> None:
    client = _ollama(lambda r: httpx.Response(200, json={"embeddings": [[1.0]]}))
    with pytest.raises(UpstreamError, match="1 embeddings for 2 inputs"):
        client.embed("m", ["a", "b"])


def test_timeout_and_refused_are_503() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(UpstreamUnavailable, match="QUERYGPT_REQUEST_TIMEOUT"):
        _ollama(slow).chat("m", "s", "u")

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(UpstreamUnavailable, match="unreachable"):
        _ollama(refused).version()


def _chunk(doc: str, n: int, vector: list[float], key: str = "documents/c/f.pdf") -> StoredChunk:
    return StoredChunk(
        document_id=doc,
        filename="f.pdf",
        page=1,
        chunk=n,
        text=f"t{n}",
        vector=vector,
        s3_key=key,
        s3_version_id=f"v-{doc[:2]}",
        sha256="0" * 64,
    )


def test_store_roundtrip_totals_and_delete() -> None:
    store = VectorStore(QdrantClient(":memory:"))
    doc_a = "11111111-1111-1111-1111-111111111111"
    doc_b = "22222222-2222-2222-2222-222222222222"
    assert store.ensure_collection("c", 2) is True
    assert store.ensure_collection("c", 2) is False
    store.upsert(
        "c", [_chunk(doc_a, 0, [1, 0]), _chunk(doc_a, 1, [0.9, 0.1]), _chunk(doc_b, 0, [0, 1])]
    )
    store.upsert("c", [_chunk(doc_a, 0, [1, 0])])  # same id: overwritten, not duplicated
    assert store.totals() == (2, 3)
    hits = store.search("c", [1, 0], 2)
    assert [(h.document_id, h.chunk) for h in hits] == [(doc_a, 0), (doc_a, 1)]
    assert hits[0].score == pytest.approx(1.0)
    store.delete_document("c", doc_a)
    assert store.count_document("c", doc_a) == 0
    assert store.totals() == (1, 1)


def test_delete_replaced_keeps_only_this_version_of_the_key() -> None:
    store = VectorStore(QdrantClient(":memory:"))
    old, new, other = (f"{n}" * 8 + "-1111-1111-1111-111111111111" for n in (1, 2, 3))
    store.ensure_collection("c", 2)
    store.upsert("c", [_chunk(old, n, [1, 0]) for n in range(3)])  # the earlier version
    store.upsert("c", [_chunk(new, n, [1, 0]) for n in range(4)])  # chunks 2, 3: leftovers
    store.upsert("c", [_chunk(other, 0, [0, 1], key="documents/c/other.pdf")])
    store.delete_replaced("c", "documents/c/f.pdf", new, chunks=2)
    assert store.count_document("c", old) == 0
    assert store.count_document("c", new) == 2
    assert store.count_document("c", other) == 1  # another key is untouched


def test_store_rejects_other_dimension() -> None:
    store = VectorStore(QdrantClient(":memory:"))
    store.ensure_collection("c", 4)
    with pytest.raises(DimensionMismatch, match="4-dimensional"):
        store.ensure_collection("c", 3)


def test_unreachable_qdrant_is_503_without_leaking_key() -> None:
    # Port 9 on loopback: nothing listens there, so the connection is refused.
    store = VectorStore.connect("http://127.0.0.1:9", "secret-key", timeout=2)
    with pytest.raises(UpstreamUnavailable) as info:
        store.collection_exists("c")
    assert "Qdrant is unreachable" in info.value.detail
    assert "127.0.0.1" not in info.value.detail  # the API response; operators get it below
    assert info.value.operator_detail.endswith("(qdrant at http://127.0.0.1:9)")
    assert "secret-key" not in info.value.operator_detail
