"""HTTP endpoints. nginx strips ``/api``, so paths here start at the root.

Handlers are plain ``def``: the work (pypdf, boto3, httpx, qdrant-client) is
blocking, and FastAPI runs sync handlers in its threadpool, off the event loop.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from time import perf_counter
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from . import __version__
from .answering import Answerer
from .auth import Principal, PrincipalDep, audit, audit_values
from .config import Settings, is_valid_collection_name
from .database import Database, parse_document_id
from .documents import DocumentStore
from .errors import (
    CollectionNotFound,
    DocumentNotFound,
    InvalidCollectionName,
    InvalidRequest,
    QueryGPTError,
    QuotaExceeded,
    UpstreamError,
)
from .identity import IdentityStore
from .index_stats import IndexStats
from .indexing import Indexer
from .limits import Deadline, UserLimiter
from .metrics import HISTORY_WRITE_FAILURES, render, stage_timer
from .pdf import read_limited
from .pdf_worker import extract_pages_isolated
from .readiness import ReadinessProbe
from .vectorstore import VectorStore

log = logging.getLogger(__name__)

EXCERPT_CHARS = 500
HISTORY_MAX_LIMIT = 200


@dataclass
class Services:
    """Everything a request needs, built once per process by ``create_app``."""

    settings: Settings
    documents: DocumentStore
    indexer: Indexer
    answerer: Answerer
    probe: ReadinessProbe
    stats: IndexStats
    database: Database
    store: VectorStore
    identity: IdentityStore
    #: Per-user limits by endpoint ("query", "upload"), keyed by user id.
    user_limits: dict[str, UserLimiter]


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


class CollectionInfo(BaseModel):
    name: str
    documents: int = Field(description="Documents recorded in the collection.")
    updated_at: datetime | None = Field(
        description="When its newest document was uploaded (null: no documents)."
    )


class CollectionsResponse(BaseModel):
    collections: list[CollectionInfo]


class DocumentInfo(BaseModel):
    id: str = Field(description="The document_id of its chunks and of /query sources.")
    filename: str
    sha256: str
    size: int = Field(description="Bytes of the original.")
    chunks: int
    s3_key: str
    s3_version_id: str | None
    uploaded_at: datetime


class DocumentsResponse(BaseModel):
    collection: str
    documents: list[DocumentInfo]


class HistoryEntryModel(BaseModel):
    id: int
    collection: str
    question: str
    answer: str
    sources: list[Source] = Field(description="The excerpts the answer came from.")
    latency_ms: int
    created_at: datetime


class HistoryResponse(BaseModel):
    entries: list[HistoryEntryModel]
    next_before: int | None = Field(
        description="Pass as `before` for the next (older) page; null on the last page."
    )


class DeleteResponse(BaseModel):
    id: str
    collection: str
    filename: str
    chunks_removed: int
    s3_versions_removed: int = Field(description="Object versions and delete markers removed.")
    history_entries_scrubbed: int = Field(
        description="History entries whose sources quoted the document (they are kept, "
        "without those excerpts)."
    )


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
    principal: PrincipalDep,
    pdf_file: Annotated[UploadFile, File(description="Schema documentation as PDF.")],
    collection_name: Annotated[str | None, Form()] = None,
) -> UploadResponse:
    """Validate, keep the original in the documents bucket, then index it.

    The order matters: a file that is refused (4xx) is not stored, and nothing is
    indexed unless its original is safely in the bucket (an S3 failure is a 502/503).
    Needs write on the collection; an admin's upload creates a missing collection.
    """
    settings = services.settings
    deadline = request_deadline(request)
    collection = resolve_collection(collection_name, settings.default_collection)
    if not principal.is_admin and not services.database.collection_exists(collection):
        raise CollectionNotFound(
            f"Collection '{collection}' does not exist; an admin creates collections "
            "(POST /collections)."
        )
    principal.require_write(collection, "upload to it")
    with services.user_limits["upload"].hold(str(principal.user_id)):
        response = _upload(services, principal, deadline, collection, pdf_file)
    audit(
        services.identity,
        audit_values(
            "upload",
            outcome="success",
            principal=principal,
            target=response.document_id,
            collection=collection,
            details={"filename": response.filename, "sha256": response.sha256,
                     "chunks": response.chunks},
        ),
    )
    return response


def _upload(
    services: Services,
    principal: Principal,
    deadline: Deadline,
    collection: str,
    pdf_file: UploadFile,
) -> UploadResponse:
    settings = services.settings
    data = read_limited(pdf_file.file, settings.max_upload_bytes)
    filename = clean_filename(pdf_file.filename)
    check_quota(services, principal, collection, filename, len(data))
    with stage_timer("extract"):
        pages = extract_pages_isolated(data, settings)
    deadline.check("extract")
    # Nothing is stored unless it can be recorded: a document missing from the database
    # could be neither listed nor erased.
    services.database.ping("record the upload; nothing was stored")
    stored = services.documents.put(collection, filename, data)
    result = services.indexer.index(collection, stored, pages, deadline)
    services.stats.refresh()
    if not result.superseded:  # else the newer upload records itself
        try:
            services.database.record_document(
                collection, stored, size=len(data), chunks=result.chunks,
                uploaded_by=principal.user_id,
            )
        except UpstreamError as exc:
            exc.detail = (
                f"'{filename}' was stored and indexed, but recording it in the database failed "
                f"({exc.detail.rstrip('. ')}); upload it again to finish."
            )
            raise
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


def check_quota(
    services: Services, principal: Principal, collection: str, filename: str, size: int
) -> None:
    """413 if the upload would take the user past its storage quota; a replacing upload
    counts the new size minus the replaced document's (when it was this user's)."""
    quota = principal.user.storage_quota_bytes
    variable = "your own quota"
    if quota is None:
        quota = services.settings.user_storage_quota_bytes
        variable = "QUERYGPT_USER_STORAGE_QUOTA_BYTES"
    used = services.database.storage_used(principal.user_id)
    replaced = services.database.replaced_document(collection, filename)
    if replaced is not None and replaced.uploaded_by == principal.user_id:
        used -= replaced.size
    if used + size > quota:
        raise QuotaExceeded(
            f"This upload ({size} bytes) would exceed your storage quota of {quota} bytes "
            f"({variable}; {max(used, 0)} bytes are used by your current documents); delete "
            "documents or ask an admin to raise the quota."
        )


@router.post("/query", response_model=QueryResponse)
def query(
    request: Request, body: QueryRequest, services: ServicesDep, principal: PrincipalDep
) -> QueryResponse:
    collection = resolve_collection(body.collection_name, services.settings.default_collection)
    question = body.query.strip()
    if not question:
        raise InvalidRequest("query must not be blank; ask a question about the uploaded schema.")
    principal.require_read(collection)
    with services.user_limits["query"].hold(str(principal.user_id)):
        return _query(request, services, principal, collection, question)


def _query(
    request: Request, services: Services, principal: Principal, collection: str, question: str
) -> QueryResponse:
    started = perf_counter()
    answer = services.answerer.answer(collection, question, request_deadline(request))
    sources = [
        Source(
            document_id=hit.document_id,
            filename=hit.filename,
            page=hit.page,
            chunk=hit.chunk,
            score=round(hit.score, 4),
            text=excerpt(hit.text),
        )
        for hit in answer.sources
    ]
    record_history(
        services.database,
        collection,
        question,
        answer.result,
        [
            {**source.model_dump(), "s3_key": hit.s3_key}
            for source, hit in zip(sources, answer.sources, strict=True)
        ],
        round((perf_counter() - started) * 1000),
        principal.user_id,
    )
    return QueryResponse(result=answer.result, sources=sources)


def record_history(
    database: Database,
    collection: str,
    question: str,
    answer: str,
    sources: list[dict[str, Any]],
    latency_ms: int,
    user_id: uuid.UUID | None = None,
) -> None:
    """Keep the answered query; a failure is logged and counted, never the user's problem."""
    try:
        database.record_query(collection, question, answer, sources, latency_ms, user_id)
    except Exception as exc:  # noqa: BLE001 - the answer matters more than its record
        HISTORY_WRITE_FAILURES.inc()
        detail = exc.operator_detail if isinstance(exc, QueryGPTError) else repr(exc)
        log.warning(
            "query answered, but its history entry could not be written",
            extra={"collection": collection, "error": detail},
        )


@router.get("/collections", response_model=CollectionsResponse)
def list_collections(services: ServicesDep, principal: PrincipalDep) -> CollectionsResponse:
    """The collections the caller may read."""
    return CollectionsResponse(
        collections=[
            CollectionInfo(name=c.name, documents=c.documents, updated_at=c.updated_at)
            for c in services.database.collections()
            if principal.can_read(c.name)
        ]
    )


@router.get("/collections/{name}/documents", response_model=DocumentsResponse)
def list_documents(name: str, services: ServicesDep, principal: PrincipalDep) -> DocumentsResponse:
    if not is_valid_collection_name(name):
        raise InvalidCollectionName(
            "The collection name must be 1-64 characters of letters, digits, '_' or '-'; "
            f"got {name[:80]!r}."
        )
    principal.require_read(name)
    documents = services.database.documents(name)
    if documents is None:
        raise CollectionNotFound(f"Collection '{name}' has no recorded documents: it is unknown.")
    return DocumentsResponse(
        collection=name,
        documents=[
            DocumentInfo(
                id=d.id,
                filename=d.filename,
                sha256=d.sha256,
                size=d.size,
                chunks=d.chunks,
                s3_key=d.s3_key,
                s3_version_id=d.s3_version_id,
                uploaded_at=d.uploaded_at,
            )
            for d in documents
        ],
    )


@router.get("/history", response_model=HistoryResponse)
def history(
    services: ServicesDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=HISTORY_MAX_LIMIT)] = 50,
    before: Annotated[int | None, Query(ge=1, description="Only entries older than this id.")] = None,
    collection: Annotated[str | None, Query()] = None,
) -> HistoryResponse:
    """Answered queries, newest first: a non-admin's own, an admin's everyone's."""
    if collection is not None and not is_valid_collection_name(collection):
        raise InvalidCollectionName(
            "collection must be 1-64 characters of letters, digits, '_' or '-'; "
            f"got {collection[:80]!r}."
        )
    entries, next_before = services.database.history(
        limit,
        before=before,
        collection=collection,
        user_id=None if principal.is_admin else principal.user_id,
    )
    return HistoryResponse(
        entries=[
            HistoryEntryModel(
                id=e.id,
                collection=e.collection,
                question=e.question,
                answer=e.answer,
                sources=[Source.model_validate(source) for source in e.sources],
                latency_ms=e.latency_ms,
                created_at=e.created_at,
            )
            for e in entries
        ],
        next_before=next_before,
    )


@router.delete("/documents/{document_id}", response_model=DeleteResponse)
def delete_document(
    document_id: str, services: ServicesDep, principal: PrincipalDep
) -> DeleteResponse:
    """Erase a document everywhere: its chunks, every version of its original, its excerpts
    in the history, then its row. The row goes last, so a failure midway (503) leaves it for
    a retry, which finishes the job (each step is safe to repeat)."""
    parsed = parse_document_id(document_id)
    record = services.database.document(parsed) if parsed else None
    if record is None:
        raise DocumentNotFound(
            f"No document with id {document_id[:80]!r}; list them with "
            "GET /collections/{name}/documents."
        )
    principal.require_write(record.collection, "delete its documents")
    note = " The document is still recorded; retry the DELETE to finish erasing it."
    try:
        chunks = services.store.erase_document(record.collection, record.id, record.s3_key)
        versions = services.documents.delete_all_versions(record.s3_key)
    except QueryGPTError as exc:
        exc.detail = exc.detail.rstrip(". ") + "." + note
        if isinstance(exc, UpstreamError) and exc.status_code >= 500:
            exc.status_code = 503  # retryable: the row is kept for the retry
        raise
    scrubbed = services.database.forget_document(record.id, record.s3_key)
    services.stats.refresh()
    log.info(
        "document erased",
        extra={
            "document_id": record.id,
            "collection": record.collection,
            "s3_key": record.s3_key,
            "chunks_removed": chunks,
            "s3_versions_removed": versions,
            "history_entries_scrubbed": scrubbed,
        },
    )
    audit(
        services.identity,
        audit_values(
            "document_delete",
            outcome="success",
            principal=principal,
            target=record.id,
            collection=record.collection,
            details={"filename": record.filename, "chunks_removed": chunks},
        ),
    )
    return DeleteResponse(
        id=record.id,
        collection=record.collection,
        filename=record.filename,
        chunks_removed=chunks,
        s3_versions_removed=versions,
        history_entries_scrubbed=scrubbed,
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
