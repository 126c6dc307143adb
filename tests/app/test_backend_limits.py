"""Limits: one deadline per request, the GPU queue, and rate/concurrency admission.

The fake Ollama (querygpt_testkit.FakeOllama.delays) is slow the way a busy server is and
honours the read timeout the client sends, as httpx does against a real server. Waits are
on events and on the GPU queue's own counters, not on sleeps; time bounds have seconds of
slack, so a slow CI machine does not make them flaky.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from querygpt.config import Settings
from querygpt.errors import ConfigError, DeadlineExceeded, TooManyRequests
from querygpt.limits import Deadline, GpuQueue, TokenBucket
from querygpt_testkit import (
    DATABASE_ENV,
    DATABASE_FIELDS,
    bearer,
    ensure_user,
    issue_token,
    make_pdf,
    metric_value,
    points,
    upload,
    wait_until,
)

SLACK = 2.0  # seconds a 504 may come after the deadline (scheduling, rollback, a slow CI)


def deadline_count(client, endpoint: str, stage: str) -> float:
    return metric_value(client, "querygpt_deadline_exceeded_total", endpoint=endpoint, stage=stage)


def rejected_count(client, endpoint: str, reason: str) -> float:
    return metric_value(client, "querygpt_requests_rejected_total", endpoint=endpoint, reason=reason)


# --- the deadline ------------------------------------------------------------------------


def test_three_calls_past_the_deadline_stop_with_504_in_time(make_client, fake_ollama, schema_pdf):
    # Each call alone is far below the per-call timeout (120 s); together they pass the deadline.
    client = make_client(query_deadline_seconds=1.0)
    assert upload(client, schema_pdf).status_code == 200
    before = deadline_count(client, "query", "generate")
    fake_ollama.delays = {"/api/embed": 0.4, "/api/chat": 0.8}

    started = time.monotonic()
    response = client.post("/query", json={"query": "Total of orders per customer"})
    elapsed = time.monotonic() - started

    assert response.status_code == 504, response.text
    assert response.headers["content-type"] == "application/json"
    detail = response.json()["detail"]
    assert "1 s deadline" in detail and "writing the SQL" in detail
    assert "QUERYGPT_QUERY_DEADLINE_SECONDS" in detail
    assert 0.9 <= elapsed < 1.0 + SLACK, elapsed
    # The chat got the time that was left, not the per-call 120 s.
    (chat_timeout,) = fake_ollama.timeouts["/api/chat"]
    embed_timeout = fake_ollama.timeouts["/api/embed"][-1]
    assert embed_timeout is not None and 0.5 < embed_timeout <= 1.0
    assert chat_timeout is not None and chat_timeout <= 0.6 + 0.05
    assert deadline_count(client, "query", "generate") == before + 1


def test_a_deadline_spent_embedding_never_reaches_the_llm(make_client, fake_ollama, schema_pdf):
    client = make_client(query_deadline_seconds=0.5)
    assert upload(client, schema_pdf).status_code == 200
    before = deadline_count(client, "query", "embed")
    fake_ollama.delays = {"/api/embed": math.inf}
    response = client.post("/query", json={"query": "customers"})
    assert response.status_code == 504
    assert "embedding" in response.json()["detail"]
    assert fake_ollama.chat_calls == [], "the work stopped: no generation after the deadline"
    assert deadline_count(client, "query", "embed") == before + 1


def test_a_timeout_within_the_deadline_is_still_an_ollama_outage(make_client, fake_ollama, schema_pdf):
    # The per-call timeout (not the deadline) ran out: 503 naming Ollama, as before.
    client = make_client(request_timeout=0.3, query_deadline_seconds=30)
    assert upload(client, schema_pdf).status_code == 200
    fake_ollama.delays = {"/api/chat": math.inf}
    response = client.post("/query", json={"query": "customers"})
    assert response.status_code == 503
    assert "Ollama timed out" in response.json()["detail"]


def test_an_upload_past_its_deadline_is_rolled_back(make_client, fake_ollama):
    from qdrant_client import QdrantClient

    qdrant = QdrantClient(":memory:")
    # The deadline runs out in embed whatever the machine's load: two batches answer at
    # once, the third hangs until its read timeout, which is what is left of the deadline.
    # The deadline leaves the extraction child room on a loaded machine (it took over 3 s
    # beside a converging lab), so the test does not depend on the CPU's speed.
    deadline = 10.0
    client = make_client(qdrant, upload_deadline_seconds=deadline)
    before = deadline_count(client, "upload", "embed")
    fake_ollama.delays = {"/api/embed": math.inf}
    fake_ollama.delay_from = {"/api/embed": 3}

    started = time.monotonic()
    response = upload(client, _long_pdf())
    elapsed = time.monotonic() - started

    assert response.status_code == 504, response.text
    detail = response.json()["detail"]
    assert "upload was not indexed within its 10 s deadline" in detail
    assert "Nothing from this upload was stored in the search index" in detail
    assert elapsed < deadline + SLACK
    assert len(fake_ollama.embed_calls) == 2, "two batches were embedded before the deadline ran out"
    [stalled] = fake_ollama.timeouts["/api/embed"]
    assert stalled is not None and stalled <= deadline, "the stalled call's timeout is what was left of the deadline"
    for collection in qdrant.get_collections().collections:
        assert points(qdrant, collection.name) == {}, "the partial upload was removed"
    assert deadline_count(client, "upload", "embed") == before + 1


def _long_pdf() -> bytes:
    lines = [f"Table t{i}: column c{i} INTEGER, column d{i} TEXT, column e{i} DATE." for i in range(120)]
    return make_pdf([lines[:40], lines[40:80], lines[80:]])


def test_deadline_unit() -> None:
    deadline = Deadline("query", 10.0, "QUERYGPT_QUERY_DEADLINE_SECONDS")
    assert deadline.timeout("embed", 3.0) == (3.0, False)  # the per-call cap is shorter
    timeout, by_deadline = deadline.timeout("embed", 60.0)
    assert by_deadline and 9.0 < timeout <= 10.0
    spent = Deadline("query", 0.0, "QUERYGPT_QUERY_DEADLINE_SECONDS")
    with pytest.raises(DeadlineExceeded) as caught:
        spent.check("search")
    assert caught.value.status_code == 504 and caught.value.stage == "search"


# --- the GPU queue -----------------------------------------------------------------------


def test_the_queue_refuses_one_more_than_running_plus_waiting(make_client, fake_ollama, schema_pdf):
    running, waiting = 1, 2
    client = make_client(gpu_concurrency=running, gpu_queue=waiting, query_deadline_seconds=60)
    assert upload(client, schema_pdf).status_code == 200
    gpu = client.app.state.gpu
    before = rejected_count(client, "query", "gpu_queue_full")
    fake_ollama.delays = {"/api/chat": math.inf}  # every answer waits for fake_ollama.release

    with ThreadPoolExecutor(running + waiting) as pool:
        queued = [pool.submit(client.post, "/query", json={"query": f"customers {i}"})
                  for i in range(running + waiting)]
        wait_until(lambda: gpu.running == running and gpu.waiting == waiting)

        started = time.monotonic()
        refused = client.post("/query", json={"query": "one too many"})
        assert time.monotonic() - started < 1.0, "refused at once, not queued"
        assert refused.status_code == 429
        assert int(refused.headers["Retry-After"]) >= 1
        assert refused.json()["reason"] == "gpu_queue_full"
        assert "busy" in refused.json()["detail"]

        fake_ollama.release.set()
        assert [f.result(timeout=30).status_code for f in queued] == [200] * (running + waiting)
    assert len(fake_ollama.chat_calls) == running + waiting
    assert rejected_count(client, "query", "gpu_queue_full") == before + 1
    assert gpu.running == 0 and gpu.waiting == 0


def test_queue_unit_full_queue_and_deadline_while_waiting() -> None:
    gpu = GpuQueue(1, 1, retry_ceiling=60)
    long = Deadline("query", 60, "QUERYGPT_QUERY_DEADLINE_SECONDS")
    with gpu.slot(long):
        # a waiter whose deadline runs out while queued gets a 504, and leaves the queue
        with pytest.raises(DeadlineExceeded) as caught:
            with gpu.slot(Deadline("query", 0.2, "QUERYGPT_QUERY_DEADLINE_SECONDS")):
                pass
        assert caught.value.stage == "queue" and gpu.waiting == 0
        # no waiting room at all: refused at once
        full = GpuQueue(1, 0, retry_ceiling=60)
        with full.slot(long), pytest.raises(TooManyRequests) as refused:
            with full.slot(long):
                pass
        assert refused.value.reason == "gpu_queue_full" and 1 <= refused.value.retry_after <= 60
    assert gpu.running == 0


# --- admission: rate and concurrency -----------------------------------------------------


def test_the_query_rate_limit_is_429_with_retry_after(make_client):
    client = make_client(query_rate=0.01, query_burst=2)
    before = rejected_count(client, "query", "rate")
    statuses = [client.post("/query", json={"query": "x", "collection_name": "none"}).status_code
                for _ in range(3)]
    assert statuses == [404, 404, 429]
    refused = client.post("/query", json={"query": "x"})
    assert refused.status_code == 429
    assert refused.json()["reason"] == "rate" and "per second" in refused.json()["detail"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 240
    assert refused.headers["X-Request-ID"], "refusals carry the request id like every answer"
    assert rejected_count(client, "query", "rate") == before + 2
    # other endpoints are not limited by the query bucket
    assert client.get("/health").status_code == 200
    assert metric_value(client, "querygpt_http_requests_total", method="POST", route="/query",
                        status="429") >= 2


def test_the_upload_rate_limit_is_429_with_retry_after(make_client, schema_pdf):
    """The global upload bucket: shared by every user (per process), refused before the body
    is read."""
    client = make_client(upload_rate=0.01, upload_burst=2)
    before = rejected_count(client, "upload", "rate")
    # Refused uploads (an invalid collection name, 422) still take their token: admission
    # comes first.
    statuses = [upload(client, schema_pdf, collection_name="bad name!").status_code
                for _ in range(3)]
    assert statuses == [422, 422, 429]
    refused = upload(client, schema_pdf)
    assert refused.status_code == 429
    body = refused.json()
    assert body["reason"] == "rate"
    assert "Too many upload requests" in body["detail"] and "0.01 per second" in body["detail"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 240
    # Global: another user, with a bucket of its own per user, is refused all the same.
    ensure_user(client.app, "erin", "editor", {"shop": "write"})
    other = upload(client, schema_pdf, collection_name="shop",
                   headers=bearer(issue_token(client.app, "erin")))
    assert other.status_code == 429 and other.json()["reason"] == "rate"
    assert rejected_count(client, "upload", "rate") == before + 3
    # the query bucket is a separate one
    assert client.post("/query", json={"query": "x", "collection_name": "none"}).status_code == 404
    assert client.get("/collections/shop/documents").json()["documents"] == [], "nothing was stored"


def test_upload_concurrency_cap(make_client, fake_ollama, schema_pdf):
    client = make_client(upload_concurrency=1, upload_deadline_seconds=60)
    before = rejected_count(client, "upload", "concurrency")
    fake_ollama.delays = {"/api/embed": math.inf}
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(upload, client, schema_pdf)
        wait_until(lambda: "/api/embed" in fake_ollama.timeouts)
        refused = upload(client, schema_pdf, filename="other.pdf")
        assert refused.status_code == 429
        assert refused.json()["reason"] == "concurrency"
        assert int(refused.headers["Retry-After"]) >= 1
        fake_ollama.release.set()
        assert first.result(timeout=30).status_code == 200
    assert rejected_count(client, "upload", "concurrency") == before + 1
    # the place was given back
    assert upload(client, schema_pdf, filename="third.pdf").status_code == 200


def test_token_bucket_refills_at_the_rate(monkeypatch) -> None:
    import querygpt.limits as limits

    now = [100.0]
    monkeypatch.setattr(limits, "monotonic", lambda: now[0])
    bucket = TokenBucket(rate=2.0, burst=2)
    assert bucket.take() == 0 and bucket.take() == 0
    assert bucket.take() == pytest.approx(0.5)
    now[0] += 0.5
    assert bucket.take() == 0


# --- configuration -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "needle"),
    [
        ("QUERYGPT_QUERY_DEADLINE_SECONDS", "0", "greater than 0"),
        ("QUERYGPT_UPLOAD_DEADLINE_SECONDS", "soon", "number of seconds"),
        ("QUERYGPT_GPU_CONCURRENCY", "0", "between 1 and 64"),
        ("QUERYGPT_GPU_QUEUE", "-1", "between 0 and 1024"),
        ("QUERYGPT_QUERY_RATE", "0", "greater than 0"),
        ("QUERYGPT_UPLOAD_BURST", "0", "between 1"),
        ("QUERYGPT_UPLOAD_CONCURRENCY", "30", "threadpool"),
    ],
)
def test_limit_settings_are_validated(variable, value, needle) -> None:
    env = {"QUERYGPT_DOCUMENTS_BUCKET": "querygpt-test-documents", **DATABASE_ENV, variable: value}
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert caught.value.variable == variable and needle in str(caught.value)


def test_limit_settings_defaults() -> None:
    settings = Settings.from_env({"QUERYGPT_DOCUMENTS_BUCKET": "querygpt-test-documents", **DATABASE_ENV})
    assert (settings.query_deadline_seconds, settings.upload_deadline_seconds) == (240, 240)
    assert (settings.gpu_concurrency, settings.gpu_queue) == (1, 4)
    assert settings == Settings(
        documents_bucket="querygpt-test-documents", **DATABASE_FIELDS
    ), "DEFAULTS match the fields"
