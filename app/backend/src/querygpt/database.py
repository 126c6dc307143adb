"""Application state in PostgreSQL: collections, documents, query history.

Every server of QUERYGPT_DATABASE_HOSTS (primary and standbys) is given to libpq with
``target_session_attrs=read-write``, so a new connection always lands on the primary; after a
failover, ``pool_pre_ping`` drops the pooled connections to the old primary and the next
connection finds the promoted standby by itself. Sync SQLAlchemy is enough: route handlers
are plain ``def`` and run in FastAPI's threadpool.

Only this module knows SQLAlchemy's errors. It turns them into UpstreamUnavailable (503) or
UpstreamError naming the database; the addresses and the driver's message go to the
operator log only (``where``), never into an API response.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, case, create_engine, delete, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from .config import Settings, database_hosts_text, require_database
from .documents import StoredDocument
from .errors import UpstreamError, UpstreamUnavailable
from .models import Collection, Document, QueryHistory

log = logging.getLogger(__name__)

SERVICE = "postgresql"

#: A statement that runs longer than this is cancelled (the app's queries take milliseconds).
STATEMENT_TIMEOUT_MS = 15_000
#: Seconds a request waits for a pooled connection before it is a 503.
POOL_TIMEOUT_SECONDS = 10


def connect_args(settings: Settings, *, application_name: str = "querygpt-backend") -> dict[str, Any]:
    """libpq parameters: every host, and only a read-write session accepted."""
    require_database(settings)
    hosts = settings.database_hosts
    args: dict[str, Any] = {
        "host": ",".join(host for host, _ in hosts),
        "port": ",".join(str(port) for _, port in hosts),
        "dbname": settings.database_name,
        "user": settings.database_user,
        "sslmode": settings.database_sslmode,
        "connect_timeout": settings.database_connect_timeout_seconds,
        "target_session_attrs": "read-write",
        "application_name": application_name,
    }
    if settings.database_password:
        args["password"] = settings.database_password
    if settings.database_sslrootcert:
        args["sslrootcert"] = settings.database_sslrootcert
    return args


def make_engine(settings: Settings, *, for_migrations: bool = False) -> Engine:
    """The app's pooled engine, or (``for_migrations``) one that keeps no connection, so a
    migration's session (and its advisory lock) ends when its connection is closed.

    The URL holds no credentials (they are in connect_args), so the engine's repr and
    SQLAlchemy's messages never show the password; ``hide_parameters`` keeps questions and
    answers out of error messages too.
    """
    args = connect_args(
        settings, application_name="querygpt-migrate" if for_migrations else "querygpt-backend"
    )
    if for_migrations:
        return create_engine(
            "postgresql+psycopg://", connect_args=args, poolclass=NullPool, hide_parameters=True
        )
    args["options"] = f"-c statement_timeout={STATEMENT_TIMEOUT_MS}"
    return create_engine(
        "postgresql+psycopg://",
        connect_args=args,
        pool_size=settings.database_pool_size,
        max_overflow=0,
        pool_timeout=POOL_TIMEOUT_SECONDS,
        pool_pre_ping=True,  # a connection to a demoted or restarted server is replaced
        pool_recycle=1800,
        hide_parameters=True,
    )


@dataclass(frozen=True)
class CollectionSummary:
    name: str
    documents: int
    updated_at: datetime | None


@dataclass(frozen=True)
class DocumentRecord:
    id: str
    collection: str
    filename: str
    sha256: str
    size: int
    chunks: int
    s3_key: str
    s3_version_id: str | None
    uploaded_at: datetime

    @classmethod
    def of(cls, row: Document) -> DocumentRecord:
        return cls(
            id=str(row.id),
            collection=row.collection,
            filename=row.filename,
            sha256=row.sha256,
            size=row.size_bytes,
            chunks=row.chunks,
            s3_key=row.s3_key,
            s3_version_id=row.s3_version_id,
            uploaded_at=row.uploaded_at,
        )


@dataclass(frozen=True)
class HistoryEntry:
    id: int
    collection: str
    question: str
    answer: str
    sources: list[dict[str, Any]]
    latency_ms: int
    created_at: datetime


def parse_document_id(value: str) -> uuid.UUID | None:
    """The UUID, or None if ``value`` is not one (an unknown id, for the API)."""
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        return None


class Database:
    """The queries QueryGPT needs, each in its own short transaction."""

    def __init__(self, engine: Engine, *, location: str = "PostgreSQL") -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._location = location

    @classmethod
    def connect(cls, settings: Settings) -> Database:
        """No network traffic happens here: the first query connects."""
        return cls(make_engine(settings), location=database_hosts_text(settings.database_hosts))

    def close(self) -> None:
        self.engine.dispose()

    # -- health --------------------------------------------------------------

    def ping(self, action: str = "reach the database") -> None:
        """Raise UpstreamUnavailable unless a read-write server answers."""
        with self._session(action) as session:
            session.execute(text("SELECT 1"))

    def schema_revision(self) -> str | None:
        """The Alembic revision the database is at (None: no schema yet)."""
        with self._session("read the schema revision") as session:
            exists = session.execute(text("SELECT to_regclass('alembic_version')")).scalar()
            if exists is None:
                return None
            return session.execute(text("SELECT version_num FROM alembic_version")).scalar()

    # -- collections and documents -------------------------------------------

    def collections(self) -> list[CollectionSummary]:
        query = (
            select(Collection.name, func.count(Document.id), func.max(Document.uploaded_at))
            .outerjoin(Document, Document.collection == Collection.name)
            .group_by(Collection.name)
            .order_by(Collection.name)
        )
        with self._session("list collections") as session:
            return [CollectionSummary(n, c, u) for n, c, u in session.execute(query)]

    def documents(self, collection: str) -> list[DocumentRecord] | None:
        """The collection's documents by filename, or None if the collection is unknown."""
        with self._session("list documents") as session:
            if session.get(Collection, collection) is None:
                return None
            rows = session.scalars(
                select(Document).where(Document.collection == collection).order_by(Document.filename)
            )
            return [DocumentRecord.of(row) for row in rows]

    def document(self, document_id: uuid.UUID) -> DocumentRecord | None:
        with self._session("look up the document") as session:
            row = session.get(Document, document_id)
            return DocumentRecord.of(row) if row else None

    def record_document(
        self,
        collection: str,
        stored: StoredDocument,
        *,
        size: int,
        chunks: int,
        uploaded_at: datetime | None = None,
    ) -> DocumentRecord:
        """Insert the document, or replace the collection's row of the same filename.

        A reindex of an unchanged original (same id) keeps the row's uploaded_at. A row of
        another filename with the same S3 key (names that differ only in characters the key
        replaces) described the version this one just replaced in the bucket and in Qdrant,
        so it goes too.
        """
        document_id = uuid.UUID(stored.document_id)
        values = {
            "id": document_id,
            "collection": collection,
            "filename": stored.filename,
            "sha256": stored.sha256,
            "size_bytes": size,
            "s3_key": stored.key,
            "s3_version_id": stored.version_id,
            "chunks": chunks,
            "uploaded_at": uploaded_at or func.now(),
        }
        upsert = insert(Document).values(**values)
        upsert = upsert.on_conflict_do_update(
            index_elements=[Document.collection, Document.filename],
            set_={
                **{name: upsert.excluded[name] for name in values if name != "uploaded_at"},
                "uploaded_at": case(
                    (Document.id == upsert.excluded.id, Document.uploaded_at),
                    else_=upsert.excluded.uploaded_at,
                ),
            },
        ).returning(Document)
        with self._session("record the document") as session, session.begin():
            session.execute(
                insert(Collection).values(name=collection).on_conflict_do_nothing()
            )
            session.execute(
                delete(Document).where(
                    Document.collection == collection,
                    Document.s3_key == stored.key,
                    Document.filename != stored.filename,
                )
            )
            # A stale row already holding this id (under another name) would block the insert.
            session.execute(
                delete(Document).where(
                    Document.id == document_id,
                    (Document.collection != collection) | (Document.filename != stored.filename),
                )
            )
            row = session.execute(upsert).scalar_one()
            return DocumentRecord.of(row)

    def forget_document(self, document_id: str, s3_key: str) -> int:
        """Scrub the document's excerpts from the history, then delete its row, in one
        transaction. Excerpts of earlier versions of the same original (same S3 key) go
        too. Returns the number of history entries changed."""
        with self._session("erase the document's records") as session, session.begin():
            scrubbed = session.execute(
                text(
                    """
                    UPDATE query_history SET sources = COALESCE(
                        (SELECT jsonb_agg(source ORDER BY position)
                           FROM jsonb_array_elements(sources) WITH ORDINALITY AS s(source, position)
                          WHERE source->>'document_id' IS DISTINCT FROM :id
                            AND source->>'s3_key' IS DISTINCT FROM :key),
                        '[]'::jsonb)
                     WHERE sources @> jsonb_build_array(jsonb_build_object('document_id', CAST(:id AS text)))
                        OR sources @> jsonb_build_array(jsonb_build_object('s3_key', CAST(:key AS text)))
                    """
                ),
                {"id": str(document_id), "key": s3_key},
            ).rowcount
            session.execute(delete(Document).where(Document.id == uuid.UUID(document_id)))
            return int(scrubbed or 0)

    # -- query history -------------------------------------------------------

    def record_query(
        self,
        collection: str,
        question: str,
        answer: str,
        sources: Sequence[dict[str, Any]],
        latency_ms: int,
    ) -> int:
        with self._session("record the query") as session, session.begin():
            row = QueryHistory(
                collection=collection,
                question=question,
                answer=answer,
                sources=list(sources),
                latency_ms=latency_ms,
            )
            session.add(row)
            session.flush()
            return row.id

    def history(
        self, limit: int, *, before: int | None = None, collection: str | None = None
    ) -> tuple[list[HistoryEntry], int | None]:
        """Newest first; the second value is the ``before`` of the next page (None: last)."""
        query = select(QueryHistory).order_by(QueryHistory.id.desc()).limit(limit + 1)
        if before is not None:
            query = query.where(QueryHistory.id < before)
        if collection is not None:
            query = query.where(QueryHistory.collection == collection)
        with self._session("read the query history") as session:
            rows = list(session.scalars(query))
        entries = [
            HistoryEntry(
                r.id, r.collection, r.question, r.answer, r.sources, r.latency_ms, r.created_at
            )
            for r in rows[:limit]
        ]
        return entries, (entries[-1].id if len(rows) > limit else None)

    # -- helpers -------------------------------------------------------------

    @contextmanager
    def _session(self, action: str) -> Iterator[Session]:
        try:
            with self._sessions() as session:
                yield session
        except (OperationalError, InterfaceError, PoolTimeout) as exc:
            raise UpstreamUnavailable(
                SERVICE,
                f"The database is unreachable or timed out ({_cause(exc)}); could not {action}. "
                "Try again.",
                where=f"{self._location}: {_first_line(exc)}",
            ) from exc
        except ProgrammingError as exc:
            if getattr(exc.orig, "sqlstate", None) == "42P01":  # undefined_table
                raise UpstreamError(
                    SERVICE,
                    f"The database schema is missing; could not {action}. "
                    "Run `querygpt-backend migrate`.",
                    status_code=503,
                    where=self._location,
                ) from exc
            raise UpstreamError(
                SERVICE,
                f"The database could not {action} ({_cause(exc)}).",
                where=f"{self._location}: {_first_line(exc)}",
            ) from exc
        except DBAPIError as exc:
            raise UpstreamError(
                SERVICE,
                f"The database could not {action} ({_cause(exc)}).",
                where=f"{self._location}: {_first_line(exc)}",
            ) from exc


def _cause(exc: BaseException) -> str:
    """The driver's exception class: says what failed without any address."""
    orig = getattr(exc, "orig", None)
    return type(orig).__name__ if orig is not None else type(exc).__name__


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return (str(orig).strip().splitlines() or [""])[0][:300]
