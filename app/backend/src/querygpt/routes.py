"""HTTP endpoints. nginx strips ``/api``, so paths here start at the root.

Handlers are plain ``def``: the work (pypdf, boto3, httpx, qdrant-client) is
blocking, and FastAPI runs sync handlers in its threadpool, off the event loop.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from . import __version__
from .answering import Answerer
from .config import Settings, is_valid_collection_name
from .documents import DocumentStore
from .errors import InvalidCollectionName, InvalidRequest
from .index_stats import IndexStats
from .indexing import Indexer
from .limits import Deadline
from .metrics import render, stage_timer
from .pdf import read_limited
from .pdf_worker import extract_pages_isolated
from .readiness import ReadinessProbe

EXCERPT_CHARS = 500


@dataclass
class Services:
    """Everything a request needs, built once per process by ``create_app``."""

    settings: Settings
    documents: DocumentStore
    indexer: Indexer
    answerer: Answerer
    probe: ReadinessProbe
    stats: IndexStats


def get_services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


ServicesDep = Annotated[Services, Depends(get_services)]
router = APIRouter()


class UploadResponse(BaseModel):
    message: str
    document_id: str
    collection_name: str
    filename: str
    pages: int
    chunks: int
    s3_key: str = Field(description="Key of the original in the documents bucket.")
    s3_version_id: str | None = Field(
        description="S3 version id of the original (null if the bucket is not versioned)."
    )
    sha256: str = Field(description="SHA-256 of the uploaded bytes (hex).")


class QueryRequest(BaseModel):
    query: str = Field(min_length=1, max_length=4000, description="Question in plain English.")
    collection_name: str | None = Field(
        default=None, description="Collection to search; QUERYGPT_DEFAULT_COLLECTION if omitted."
    )


class Source(BaseModel):
    document_id: str
    filename: str
    page: int
    chunk: int
    score: float
    text: str = Field(description=f"Excerpt of the chunk (at most {EXCERPT_CHARS} characters).")


class QueryResponse(BaseModel):
    result: str = Field(description="SQL written by the model.")
    sources: list[Source]


@router.get("/health")
def health() -> dict[str, str]:
    """Liveness only: answers while the process can serve HTTP."""
    return {"status": "ok", "version": __version__}


@router.get("/ready")
def ready(services: ServicesDep) -> JSONResponse:
    result = services.probe.check()
    body: dict[str, object] = {
        "status": "ready" if result.ready else "not ready",
        "checks": result.checks,
        # Each Ollama host of the pool by its position (ollama-1, ...): no addresses here.
        "ollama_hosts": result.ollama_hosts,
        # Each Qdrant peer by its position (qdrant-1, ...): no addresses here either.
        "qdrant_peers": result.qdrant_peers,
    }
    if not result.ready:
        body["failed"] = result.failed
        body["detail"] = "; ".join(f"{name}: {result.checks[name]}" for name in result.failed)
    return JSONResponse(body, status_code=200 if result.ready else 503)


@router.get("/metrics")
def metrics(services: ServicesDep) -> Response:
    services.stats.refresh_if_stale()
    data, content_type = render()
    return Response(content=data, media_type=content_type)


@router.post("/upload", response_model=UploadResponse)
def upload(
    request: Request,
    services: ServicesDep,
    pdf_file: Annotated[UploadFile, File(description="Schema documentation as PDF.")],
    collection_name: Annotated[str | None, Form()] = None,
) -> UploadResponse:
    """Validate, keep the original in the documents bucket, then index it.

    The order matters: a file that is refused (4xx) is not stored, and nothing is
    indexed unless its original is safely in the bucket (an S3 failure is a 502/503).
    """
    settings = services.settings
    deadline = request_deadline(request)
    collection = resolve_collection(collection_name, settings.default_collection)
    data = read_limited(pdf_file.file, settings.max_upload_bytes)
    with stage_timer("extract"):
        pages = extract_pages_isolated(data, settings)
    deadline.check("extract")
    filename = clean_filename(pdf_file.filename)
    stored = services.documents.put(collection, filename, data)
    result = services.indexer.index(collection, stored, pages, deadline)
    services.stats.refresh()
    message = (
        f"Indexed {result.chunks} chunks from {result.pages} pages of '{filename}' "
        f"into collection '{collection}'."
    )
    if result.superseded:
        message += " A newer upload of the same filename replaced it while it was indexed."
    return UploadResponse(
        message=message,
        document_id=result.document_id,
        collection_name=collection,
        filename=filename,
        pages=result.pages,
        chunks=result.chunks,
        s3_key=stored.key,
        s3_version_id=stored.version_id,
        sha256=stored.sha256,
    )


@router.post("/query", response_model=QueryResponse)
def query(request: Request, body: QueryRequest, services: ServicesDep) -> QueryResponse:
    collection = resolve_collection(body.collection_name, services.settings.default_collection)
    question = body.query.strip()
    if not question:
        raise InvalidRequest("query must not be blank; ask a question about the uploaded schema.")
    answer = services.answerer.answer(collection, question, request_deadline(request))
    return QueryResponse(
        result=answer.result,
        sources=[
            Source(
                document_id=hit.document_id,
                filename=hit.filename,
                page=hit.page,
                chunk=hit.chunk,
                score=round(hit.score, 4),
                text=excerpt(hit.text),
            )
            for hit in answer.sources
        ],
    )


def request_deadline(request: Request) -> Deadline:
    """The deadline LimitsMiddleware started when the request arrived (limits.py)."""
    deadline = getattr(request.state, "deadline", None)
    if not isinstance(deadline, Deadline):  # only if the middleware is not installed
        raise RuntimeError("LimitsMiddleware did not run for this request")
    return deadline


def resolve_collection(requested: str | None, default: str) -> str:
    """Blank means the default collection; anything else must be a valid name."""
    if requested is None or not requested.strip():
        return default
    name = requested.strip()
    if not is_valid_collection_name(name):
        raise InvalidCollectionName(
            "collection_name must be 1-64 characters of letters, digits, '_' or '-'; "
            f"got {requested[:80]!r}."
        )
    return name


_UNSAFE_FILENAME_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def clean_filename(raw: str | None) -> str:
    """Keep only the base name, without control characters, for display."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE_FILENAME_CHARS.sub("", name).strip()
    return name[:255] or "document.pdf"


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
