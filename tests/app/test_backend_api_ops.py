"""Operational endpoints and cross-cutting behaviour: /health, /ready,
/metrics (names are a contract), request ids and JSON logs without secrets."""

from __future__ import annotations

import json
import logging

import pytest
from querygpt_testkit import metric_value, upload

CONTRACT_METRICS = [
    "querygpt_http_requests_total",
    "querygpt_http_request_duration_seconds",
    "querygpt_rag_stage_duration_seconds",
    "querygpt_documents_indexed",
    "querygpt_chunks_indexed",
    "querygpt_upload_rejected_total",
    "querygpt_ollama_requests_total",
    "querygpt_ollama_retries_total",
    "querygpt_qdrant_requests_total",
    "querygpt_qdrant_retries_total",
]


def test_health_checks_nothing(client, fake_ollama) -> None:
    fake_ollama.ollama_up = False
    fake_ollama.qdrant_ready = False
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_ready_when_both_reachable(client, fake_ollama) -> None:
    response = client.get("/ready")
    assert response.status_code == 200
    assert response.json()["checks"] == {"qdrant": "ok", "ollama": "ok", "database": "ok"}
    assert response.json()["ollama_hosts"] == {"ollama-1": "ok"}  # positions, not addresses
    assert response.json()["qdrant_peers"] == {"qdrant-1": "ok"}
    paths = [r.url.path for r in fake_ollama.requests]
    assert "/readyz" in paths and "/api/version" in paths


@pytest.mark.parametrize(
    ("qdrant_up", "ollama_up", "failed"),
    [(False, True, ["qdrant"]), (True, False, ["ollama"]), (False, False, ["qdrant", "ollama"])],
)
def test_not_ready_names_the_failed_dependency(
    client, fake_ollama, qdrant_up, ollama_up, failed
) -> None:
    fake_ollama.qdrant_ready = qdrant_up
    fake_ollama.ollama_up = ollama_up
    response = client.get("/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["failed"] == failed
    assert all(name in body["detail"] for name in failed)


def test_ready_sends_qdrant_api_key(make_client, fake_ollama) -> None:
    client = make_client(qdrant_api_key="k-123")
    client.get("/ready")
    readyz = [r for r in fake_ollama.requests if r.url.path == "/readyz"][-1]
    assert readyz.headers["api-key"] == "k-123"


def test_metrics_names_and_route_templates(client, schema_pdf) -> None:
    upload(client, schema_pdf)
    client.post("/query", json={"query": "customers"})
    client.get("/health")
    client.get("/no/such/path/12345")
    text = client.get("/metrics").text
    for name in CONTRACT_METRICS:
        assert f"# TYPE {name.removesuffix('_total')}" in text, name
    assert 'querygpt_http_requests_total{method="POST",route="/upload",status="200"}' in text
    assert 'route="<unmatched>"' in text
    assert "12345" not in text, "raw paths never become labels"
    for stage in ("extract", "embed", "search", "generate"):
        assert metric_value(client, "querygpt_rag_stage_duration_seconds_count", stage=stage) >= 1
    # Every reject reason is exported from the start, before it ever happens.
    for reason in ("empty", "not_pdf", "corrupt", "encrypted", "no_text", "too_large"):
        assert f'querygpt_upload_rejected_total{{reason="{reason}"}}' in text
    assert (
        metric_value(
            client, "querygpt_http_request_duration_seconds_count", method="POST", route="/query"
        )
        >= 1
    )


def test_index_gauges_are_derived_from_qdrant_at_startup(make_client, schema_pdf) -> None:
    from qdrant_client import QdrantClient

    qdrant = QdrantClient(":memory:")
    first = make_client(qdrant)
    upload(first, schema_pdf)
    upload(first, schema_pdf, collection_name="other")
    chunks = qdrant.count("querygpt").count + qdrant.count("other").count
    from querygpt.metrics import set_index_totals

    set_index_totals(0, 0)  # as in a fresh process
    restarted = make_client(qdrant)  # same Qdrant, new app
    assert metric_value(restarted, "querygpt_documents_indexed") == 2
    assert metric_value(restarted, "querygpt_chunks_indexed") == chunks


def test_request_id_is_echoed_or_generated(client) -> None:
    response = client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    generated = client.get("/health").headers["x-request-id"]
    assert len(generated) == 32
    # A hostile id is replaced, not logged verbatim.
    odd = client.get("/health", headers={"X-Request-ID": 'a b"c'}).headers["x-request-id"]
    assert odd != 'a b"c'
    # Errors carry it too.
    assert client.post("/query", json={}).headers["x-request-id"]


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_access_log_is_json_with_request_id(client, capsys) -> None:
    capsys.readouterr()
    client.post(
        "/query",
        json={"query": "x", "collection_name": "missing"},
        headers={"X-Request-ID": "rid-42"},
    )
    lines = _json_lines(capsys.readouterr().out)
    access = [line for line in lines if line["logger"] == "querygpt.access"]
    assert access[-1]["request_id"] == "rid-42"
    assert access[-1]["method"] == "POST"
    assert access[-1]["route"] == "/query"
    assert access[-1]["status"] == 404
    assert isinstance(access[-1]["duration_ms"], float)


def test_api_key_never_logged(make_client, capsys, schema_pdf) -> None:
    secret = "qdrant-super-secret-key"
    client = make_client(qdrant_api_key=secret)
    upload(client, schema_pdf)
    client.get("/ready")
    logging.getLogger("querygpt.test").warning("oops, leaked %s", secret)
    out = capsys.readouterr().out
    assert secret not in out
    assert "oops, leaked ***" in out


def test_unhandled_error_is_json_500_with_request_id(client, monkeypatch) -> None:
    from querygpt.answering import Answerer

    def boom(*_args, **_kwargs):
        raise RuntimeError("bug")

    monkeypatch.setattr(Answerer, "answer", boom)
    response = client.post("/query", json={"query": "x"}, headers={"X-Request-ID": "r-500"})
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "r-500"
    assert "r-500" in response.json()["detail"]
