"""Prometheus metrics. The names are a contract: dashboards and alerts built
by other components depend on them, so change them only together.

With several uvicorn workers each process has its own counters; setting
PROMETHEUS_MULTIPROC_DIR (before start) switches prometheus_client to its
multiprocess mode, and ``render()`` then aggregates every worker's files.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from time import perf_counter

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

# LLM generation on a CPU host can take minutes; default buckets stop at 10 s.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

HTTP_REQUESTS = Counter(
    "querygpt_http_requests_total",
    "HTTP requests served, by route template and status code.",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "querygpt_http_request_duration_seconds",
    "Time to serve an HTTP request, by route template.",
    ["method", "route"],
    buckets=_LATENCY_BUCKETS,
)
RAG_STAGE_DURATION = Histogram(
    "querygpt_rag_stage_duration_seconds",
    "Time spent in each RAG stage: extract (PDF parsing), embed, search, generate.",
    ["stage"],
    buckets=_LATENCY_BUCKETS,
)
# "mostrecent": every worker sets the absolute totals it read from Qdrant, and
# the latest write wins, so the gauges agree across workers and restarts.
DOCUMENTS_INDEXED = Gauge(
    "querygpt_documents_indexed",
    "Documents stored in Qdrant across all collections.",
    multiprocess_mode="mostrecent",
)
CHUNKS_INDEXED = Gauge(
    "querygpt_chunks_indexed",
    "Chunks (points) stored in Qdrant across all collections.",
    multiprocess_mode="mostrecent",
)
UPLOAD_REJECTED = Counter(
    "querygpt_upload_rejected_total",
    "Uploads refused because of the file itself, by reason.",
    ["reason"],
)

# Limits (limits.py): every refusal and every request that ran out of time, with its reason.
REQUESTS_REJECTED = Counter(
    "querygpt_requests_rejected_total",
    "Requests refused with 429 by a limit, by endpoint and reason "
    "(rate, concurrency, gpu_queue_full).",
    ["endpoint", "reason"],
)
DEADLINE_EXCEEDED = Counter(
    "querygpt_deadline_exceeded_total",
    "Requests stopped with 504 because their deadline ran out, by endpoint and the stage "
    "they were in.",
    ["endpoint", "stage"],
)
# "livesum": the host's total over its live worker processes.
GPU_RUNNING = Gauge(
    "querygpt_gpu_running",
    "Generation (chat) calls holding a GPU queue slot.",
    multiprocess_mode="livesum",
)
GPU_WAITING = Gauge(
    "querygpt_gpu_waiting",
    "Requests waiting in the GPU queue for a generation slot.",
    multiprocess_mode="livesum",
)

# The Ollama pool (ollama.py): every embed/chat attempt by host ("host:port") and outcome, and
# every time a call moved on to another host. Readiness probes are not counted.
OLLAMA_REQUESTS = Counter(
    "querygpt_ollama_requests_total",
    "Ollama embed and chat attempts, by host (host:port) and outcome "
    "(ok, connect_error, http_5xx, http_4xx, timeout).",
    ["host", "outcome"],
)
OLLAMA_RETRIES = Counter(
    "querygpt_ollama_retries_total",
    "Ollama calls tried again on another host after a connection failure or a 5xx.",
)
# The Qdrant peers (vectorstore.py): every operation attempt by peer ("host:port") and outcome,
# and every time an operation moved on to another peer. Readiness probes are not counted.
QDRANT_REQUESTS = Counter(
    "querygpt_qdrant_requests_total",
    "Qdrant operation attempts, by peer (host:port) and outcome "
    "(ok, connect_error, http_5xx, http_4xx, timeout).",
    ["peer", "outcome"],
)
QDRANT_RETRIES = Counter(
    "querygpt_qdrant_retries_total",
    "Qdrant operations tried again on another peer after a connection failure or a 5xx.",
)

# Application state (database.py): an answered query whose history row could not be written.
HISTORY_WRITE_FAILURES = Counter(
    "querygpt_history_write_failures_total",
    "Answered queries whose query_history row could not be written (the answer was still "
    "returned).",
)

# A document write whose commit no standby confirmed within the backend's wait: PostgreSQL
# kept it on the primary only (synchronous replication was waiting; database.py).
UNREPLICATED_COMMITS = Counter(
    "querygpt_database_unreplicated_commits_total",
    "Writes committed on the PostgreSQL primary without a standby's confirmation, because "
    "no standby confirmed them within the backend's commit wait.",
)

# Identity (auth.py, identity.py; docs/access-control.md).
LOGINS = Counter(
    "querygpt_logins_total",
    "POST /auth/login attempts, by outcome (success, failure, throttled).",
    ["outcome"],
)
CREDENTIALS_FROM_MEMORY = Counter(
    "querygpt_credentials_from_memory_total",
    "Requests admitted on a credential this process validated in the last 300 s, because the "
    "database could not be asked (auth.py, CREDENTIAL_GRACE_SECONDS), by kind.",
    ["kind"],
)

AUDIT_WRITE_FAILURES = Counter(
    "querygpt_audit_write_failures_total",
    "Audit events whose audit_events row could not be written after the action completed "
    "(the journal line was still written), by action.",
    ["action"],
)

STAGES = ("extract", "embed", "search", "generate")
REJECT_REASONS = (
    "empty",
    "not_pdf",
    "corrupt",
    "encrypted",
    "no_text",
    "too_large",
    # PDF extraction bounds (pdf.py, pdf_worker.py)
    "too_many_pages",
    "too_much_text",
    "too_many_chunks",
    "parser_limit",
    "extract_memory",
    "extract_time",
)
LIMIT_REASONS = {
    "query": ("rate", "concurrency", "gpu_queue_full", "user_rate", "user_concurrency"),
    "upload": ("rate", "concurrency", "user_rate", "user_concurrency"),
}
LOGIN_OUTCOMES = ("success", "failure", "throttled")
OLLAMA_OUTCOMES = ("ok", "connect_error", "http_5xx", "http_4xx", "timeout")
QDRANT_OUTCOMES = OLLAMA_OUTCOMES
DEADLINE_STAGES = {
    "query": ("embed", "search", "queue", "generate"),
    "upload": ("extract", "embed", "store"),
}

# Export every known series from the start (as 0) so that rate() and alert
# expressions work before the first event of each kind.
for _stage in STAGES:
    RAG_STAGE_DURATION.labels(stage=_stage)
for _reason in REJECT_REASONS:
    UPLOAD_REJECTED.labels(reason=_reason)
for _endpoint, _reasons in LIMIT_REASONS.items():
    for _reason in _reasons:
        REQUESTS_REJECTED.labels(endpoint=_endpoint, reason=_reason)
for _outcome in LOGIN_OUTCOMES:
    LOGINS.labels(outcome=_outcome)
for _endpoint, _stages in DEADLINE_STAGES.items():
    for _stage in _stages:
        DEADLINE_EXCEEDED.labels(endpoint=_endpoint, stage=_stage)


def export_ollama_host(host: str) -> None:
    """Export a pool host's series (as 0) from the start, like the fixed series above."""
    for outcome in OLLAMA_OUTCOMES:
        OLLAMA_REQUESTS.labels(host=host, outcome=outcome)


def export_qdrant_peer(peer: str) -> None:
    """Export a Qdrant peer's series (as 0) from the start, like the Ollama hosts'."""
    for outcome in QDRANT_OUTCOMES:
        QDRANT_REQUESTS.labels(peer=peer, outcome=outcome)


def multiprocess_dir() -> str | None:
    """The multiprocess directory if multiprocess mode is on, else None."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")


def render() -> tuple[bytes, str]:
    """Exposition text for ``GET /metrics`` and its content type."""
    if multiprocess_dir():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


@contextmanager
def stage_timer(stage: str) -> Iterator[None]:
    """Observe the duration of one RAG stage, whether it succeeds or fails."""
    start = perf_counter()
    try:
        yield
    finally:
        RAG_STAGE_DURATION.labels(stage=stage).observe(perf_counter() - start)


def set_index_totals(documents: int, chunks: int) -> None:
    DOCUMENTS_INDEXED.set(documents)
    CHUNKS_INDEXED.set(chunks)
