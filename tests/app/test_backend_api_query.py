"""POST /query: retrieval + generation, sources, and errors with reasons."""

from __future__ import annotations

from querygpt.prompts import SYSTEM_PROMPT, extract_sql
from querygpt_testkit import upload


def test_query_returns_sql_and_sources(client, fake_ollama, schema_pdf) -> None:
    assert upload(client, schema_pdf).status_code == 200
    response = client.post(
        "/query", json={"query": "Total of orders per customer", "collection_name": "querygpt"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["result"] == "SELECT c.name FROM customers c;"  # code fence stripped
    assert 1 <= len(body["sources"]) <= 3  # top_k=3 in the test settings
    for source in body["sources"]:
        assert set(source) >= {"filename", "page", "chunk", "score", "text"}
        assert source["filename"] == "schema.pdf"
        assert source["page"] in (1, 2)
    scores = [s["score"] for s in body["sources"]]
    assert scores == sorted(scores, reverse=True)
    assert body["sources"][0]["page"] == 2, "the orders page is the best match"

    # The LLM got the SQL system prompt, the retrieved context and the question.
    chat = fake_ollama.chat_calls[-1]
    assert chat["stream"] is False and chat["model"] == "qwen2.5-coder:1.5b"
    system, user = chat["messages"]
    assert system == {"role": "system", "content": SYSTEM_PROMPT}
    assert "SQL" in system["content"]
    assert "orders.total" in user["content"]
    assert "Question: Total of orders per customer" in user["content"]
    # The question was embedded with the configured model.
    assert fake_ollama.embed_calls[-1] == ["Total of orders per customer"]


def test_collection_defaults_when_omitted(client, schema_pdf) -> None:
    upload(client, schema_pdf)
    assert client.post("/query", json={"query": "list customers"}).status_code == 200


def test_missing_collection_is_404_with_reason(client, fake_ollama) -> None:
    response = client.post("/query", json={"query": "x", "collection_name": "nothing_here"})
    assert response.status_code == 404
    assert "nothing_here" in response.json()["detail"]
    assert "upload" in response.json()["detail"]
    assert fake_ollama.embed_calls == [], "no embedding for a missing collection"


def test_empty_collection_is_404(make_client, fake_ollama, schema_pdf) -> None:
    from qdrant_client import QdrantClient, models

    qdrant = QdrantClient(":memory:")
    qdrant.create_collection(
        "empty", vectors_config=models.VectorParams(size=32, distance=models.Distance.COSINE)
    )
    client = make_client(qdrant)
    response = client.post("/query", json={"query": "x", "collection_name": "empty"})
    assert response.status_code == 404
    assert "no indexed documents" in response.json()["detail"]


def test_invalid_requests_are_422(client) -> None:
    cases = [
        {"query": "x", "collection_name": "bad name!"},
        {"query": ""},
        {"query": "   "},
        {"collection_name": "querygpt"},
        {"query": "x" * 5000},
    ]
    for body in cases:
        response = client.post("/query", json=body)
        assert response.status_code == 422, body
        assert isinstance(response.json()["detail"], str)
    assert (
        client.post(
            "/query", content=b"{not json", headers={"content-type": "application/json"}
        ).status_code
        == 422
    )


def test_llm_failure_is_502_and_outage_503(client, fake_ollama, schema_pdf) -> None:
    upload(client, schema_pdf)
    fake_ollama.ollama_up = False
    response = client.post("/query", json={"query": "customers"})
    assert response.status_code == 503
    assert "Ollama" in response.json()["detail"]


def test_extract_sql() -> None:
    assert extract_sql("```sql\nSELECT 1;\n```") == "SELECT 1;"
    assert extract_sql("Here you go:\n```\nSELECT 2;\n```\nEnjoy") == "SELECT 2;"
    assert extract_sql("  SELECT 3;  ") == "SELECT 3;"
    assert (
        extract_sql("-- Cannot answer: no table for invoices")
        == "-- Cannot answer: no table for invoices"
    )
