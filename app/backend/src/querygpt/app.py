"""Application factory: wires settings, clients, middleware and routes.

``create_app()`` with no arguments reads the environment; uvicorn calls it
once per worker (``factory=True``). Tests pass settings plus an in-process
Qdrant client and an httpx transport, which are the only seams needed to run
the whole app without network services.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from qdrant_client import QdrantClient

from . import __version__
from .answering import Answerer
from .config import Settings, database_hosts_text, require_database, require_secret_key
from .database import Database
from .documents import DocumentStore
from .errors import Forbidden, QueryGPTError, TooManyRequests, Unauthorized, UploadRejected, UpstreamError
from .index_stats import IndexStats
from .indexing import Indexer
from .limits import (
    EndpointLimiter,
    EndpointPolicy,
    GpuQueue,
    LimitsMiddleware,
    UserLimiter,
    UserPolicy,
    too_many_requests_response,
)
from .access import router as access_router
from .auth import audit_denied
from .identity import IdentityStore
from .logs import setup_logging
from .metrics import UPLOAD_REJECTED
from .middleware import BodyTooLarge, RequestContextMiddleware
from .ollama import OllamaClient
from .readiness import ReadinessProbe
from .routes import Services, router
from .vectorstore import VectorStore

log = logging.getLogger(__name__)

#: Room for multipart boundaries, headers and the collection_name field on
#: top of the file itself; the file's own limit is checked exactly later.
MULTIPART_OVERHEAD_BYTES = 64 * 1024


@lru_cache(maxsize=1)
def schema_head() -> str | None:
    """The schema revision this code needs. Read at the first /ready, not at start-up: Alembic
    is imported then, so a restarted worker answers sooner (every worker imports the app)."""
    from .migrate import code_head

    return code_head()


def create_app(
    settings: Settings | None = None,
    *,
    qdrant_client: QdrantClient | Sequence[QdrantClient] | None = None,
    http_transport: httpx.BaseTransport | None = None,
    s3_client: Any | None = None,
) -> FastAPI:
    """Build the QueryGPT API.

    ``qdrant_client`` replaces the REST clients built from QUERYGPT_QDRANT_URLS
    (e.g. ``QdrantClient(":memory:")``, standing for the first peer, or one client per peer); ``http_transport`` is
    used for every plain HTTP call (every Ollama host of QUERYGPT_OLLAMA_URLS, and each Qdrant
    peer's /readyz probe); ``s3_client`` replaces
    the boto3 S3 client built from the QUERYGPT_S3_* settings.

    The database is the one of the QUERYGPT_DATABASE_* settings (tests point them at a
    throw-away PostgreSQL); nothing connects to it until the first request.

    Raises ConfigError if ``settings`` names no documents bucket (uploads must never be
    indexed without their original being kept) or no database hosts.
    """
    settings = settings or Settings.from_env()
    setup_logging(settings.log_level, secrets=settings.secrets())
    documents = DocumentStore.connect(settings, s3_client)
    require_database(settings)
    require_secret_key(settings)
    database = Database.connect(settings)

    store = VectorStore.from_settings(settings, qdrant_client)
    tls_verify = settings.tls_verify()
    ollama = OllamaClient(
        settings.ollama_urls,
        timeout=settings.request_timeout,
        cooldown=settings.ollama_cooldown_seconds,
        transport=http_transport,
        verify=tls_verify,
    )
    probe = ReadinessProbe(
        settings.qdrant_urls,
        settings.qdrant_api_keys,
        ollama,
        timeout=settings.request_timeout,
        transport=http_transport,
        verify=tls_verify,
        database=database,
        schema_head=schema_head,
    )
    gpu = GpuQueue(
        settings.gpu_concurrency, settings.gpu_queue, retry_ceiling=settings.query_deadline_seconds
    )
    services = Services(
        settings=settings,
        documents=documents,
        indexer=Indexer(settings, store, ollama, documents),
        answerer=Answerer(settings, store, ollama, gpu),
        probe=probe,
        stats=IndexStats(store),
        database=database,
        store=store,
        identity=IdentityStore(database),
        user_limits=user_limiters(settings),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        log.info(
            "starting",
            extra={
                "version": __version__,
                "qdrant_urls": list(settings.qdrant_urls),
                # The layout of collections this process creates (existing ones keep theirs).
                "qdrant_layout": {
                    "shard_number": settings.qdrant_shard_number,
                    "replication_factor": settings.qdrant_replication_factor,
                    "write_consistency_factor": settings.qdrant_write_consistency_factor,
                },
                "ollama_urls": list(settings.ollama_urls),
                "embed_model": settings.embed_model,
                "llm_model": settings.llm_model,
                "documents": documents.uri(documents.prefix + "/"),
                "s3_endpoint_url": settings.s3_endpoint_url or "(AWS)",
                "database_hosts": database_hosts_text(settings.database_hosts),
                "database_name": settings.database_name,
            },
        )
        # The index gauges are counted at the first scrape (IndexStats.refresh_if_stale), not
        # here: a restart answers without waiting for Qdrant, which may be slow or half down.
        try:
            yield
        finally:
            probe.close()
            ollama.close()
            store.close()
            database.close()

    app = FastAPI(
        title="QueryGPT API",
        version=__version__,
        description="Upload SQL schema documentation as PDF, then ask questions answered in SQL.",
        lifespan=lifespan,
    )
    app.state.services = services
    app.state.gpu = gpu  # its running/waiting counts, for tests and debugging
    # Added first, so it runs inside RequestContextMiddleware (request id, logs, metrics).
    app.add_middleware(LimitsMiddleware, limiters=endpoint_limiters(settings), gpu=gpu)
    app.add_middleware(
        RequestContextMiddleware,
        max_body_bytes=settings.max_upload_bytes + MULTIPART_OVERHEAD_BYTES,
    )
    _add_error_handlers(app)
    app.include_router(router)
    app.include_router(access_router)
    return app


def user_limiters(settings: Settings) -> dict[str, UserLimiter]:
    """The per-user limits of the two expensive endpoints (limits.py, UserLimiter)."""
    return {
        endpoint: UserLimiter(
            UserPolicy(
                endpoint=endpoint,
                per_minute=getattr(settings, f"user_{endpoint}_rate_per_minute"),
                concurrency=getattr(settings, f"user_max_concurrent_{plural}"),
                rate_variable=f"QUERYGPT_USER_{endpoint.upper()}_RATE_PER_MINUTE",
                concurrency_variable=f"QUERYGPT_USER_MAX_CONCURRENT_{plural.upper()}",
            )
        )
        for endpoint, plural in (("query", "queries"), ("upload", "uploads"))
    }


def endpoint_limiters(settings: Settings) -> dict[str, EndpointLimiter]:
    """The admission limits of the two expensive endpoints, by path (limits.py)."""
    return {
        f"/{endpoint}": EndpointLimiter(_endpoint_policy(settings, endpoint, uses_gpu=endpoint == "query"))
        for endpoint in ("query", "upload")
    }


def _endpoint_policy(settings: Settings, endpoint: str, *, uses_gpu: bool) -> EndpointPolicy:
    """One endpoint's figures, read from its ``<endpoint>_*`` settings."""
    return EndpointPolicy(
        endpoint=endpoint,
        rate=getattr(settings, f"{endpoint}_rate"),
        burst=getattr(settings, f"{endpoint}_burst"),
        concurrency=getattr(settings, f"{endpoint}_concurrency"),
        deadline_seconds=getattr(settings, f"{endpoint}_deadline_seconds"),
        deadline_variable=f"QUERYGPT_{endpoint.upper()}_DEADLINE_SECONDS",
        uses_gpu=uses_gpu,
    )


def _add_error_handlers(app: FastAPI) -> None:
    """Every error body is ``{"detail": "<sentence>"}``."""

    @app.exception_handler(QueryGPTError)
    async def domain_error(request: Request, exc: QueryGPTError) -> JSONResponse:
        if isinstance(exc, TooManyRequests):  # counted where it was refused (limits.py)
            return too_many_requests_response(exc)
        if isinstance(exc, Forbidden):  # an audited action refused: its "denied" row
            await run_in_threadpool(audit_denied, request, exc.detail)
        if isinstance(exc, UploadRejected):
            UPLOAD_REJECTED.labels(reason=exc.reason).inc()
            log.info("upload rejected", extra={"reason": exc.reason})
        elif isinstance(exc, UpstreamError):
            log.warning("upstream failure", extra={"service": exc.service, "error": exc.operator_detail})
        elif isinstance(exc, Unauthorized) and exc.challenge:
            return JSONResponse(
                {"detail": exc.detail},
                status_code=exc.status_code,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    @app.exception_handler(BodyTooLarge)
    async def body_too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
        if request.url.path.rstrip("/").endswith("/upload"):
            UPLOAD_REJECTED.labels(reason="too_large").inc()
        settings: Settings = request.app.state.services.settings
        return JSONResponse(
            {
                "detail": (
                    f"Upload is larger than the {settings.max_upload_bytes} byte limit; "
                    "split the document or raise QUERYGPT_MAX_UPLOAD_BYTES."
                )
            },
            status_code=413,
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        # Flatten pydantic's list into one sentence, and never echo "input":
        # it may hold the uploaded bytes or the whole question.
        errors: list[dict[str, object]] = []
        messages: list[str] = []
        for error in exc.errors():
            loc = [str(part) for part in error.get("loc", ())]
            msg = str(error.get("msg", "invalid"))
            errors.append({"loc": loc, "msg": msg, "type": str(error.get("type", ""))})
            if loc and loc[0] in ("body", "query", "path", "header", "cookie"):
                loc = loc[1:]  # where it came from; the field name is what helps
            messages.append(f"{'.'.join(loc)}: {msg}" if loc else msg)
        return JSONResponse(
            {"detail": "Invalid request: " + "; ".join(messages), "errors": errors},
            status_code=422,
        )

