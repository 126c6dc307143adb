"""Application state in PostgreSQL: collections, documents, query history.

Every server of QUERYGPT_DATABASE_HOSTS (primary and standbys) is given to libpq with
``target_session_attrs=read-write``, so a new connection always lands on the primary; after a
failover, ``pool_pre_ping`` drops the pooled connections to the old primary and the next
connection finds the promoted standby by itself. TCP keepalives and ``tcp_user_timeout`` bound
how long a connection to a server that vanished (a zone outage: no RST ever comes) can hang.
Sync SQLAlchemy is enough: route handlers are plain ``def`` and run in FastAPI's threadpool.

Writes and the standby (the primary runs ``synchronous_commit`` with a synchronous standby,
roles/postgresql "Durability"): a commit waits until a standby has the WAL, and PostgreSQL
itself never stops waiting (``statement_timeout`` is off by then). So:

- a query's history row commits with ``synchronous_commit = local``: an answer never waits
  for a standby, and the rows of the last moments before a failover may be lost;
- a document write (upload, replace, erase) waits at most ``commit_wait`` seconds; then the
  backend cancels the wait, which PostgreSQL turns into a commit on the primary alone with a
  WARNING. The write succeeds, is logged and counted (querygpt_database_unreplicated_commits_total):
  while no standby streams, uploads and deletes stay available, without a second copy.

Only this module knows SQLAlchemy's errors. It turns them into UpstreamUnavailable (503) or
UpstreamError naming the database; the addresses and the driver's message go to the
operator log only (``where``), never into an API response.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, case, create_engine, delete, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from .config import Settings, database_hosts_text, require_database
from .documents import StoredDocument
from .errors import UpstreamError, UpstreamUnavailable
from .metrics import UNREPLICATED_COMMITS
from .models import Collection, Document, QueryHistory

log = logging.getLogger(__name__)

SERVICE = "postgresql"

#: A statement that runs longer than this is cancelled (the app's queries take milliseconds).
STATEMENT_TIMEOUT_MS = 15_000
#: Seconds a request waits for a pooled connection before it is a 503.
POOL_TIMEOUT_SECONDS = 10
#: Seconds a document write's commit waits for a standby's confirmation (see above).
COMMIT_WAIT_SECONDS = 10.0
#: Dead-server detection: unacknowledged data fails the connection after this long, and an
#: idle pooled connection is probed by keepalives (idle, interval, count) in seconds.
TCP_USER_TIMEOUT_MS = 10_000
KEEPALIVES = (10, 3, 3)


def connect_args(
    settings: Settings,
    *,
    application_name: str = "querygpt-backend",
    session_attrs: str = "read-write",
) -> dict[str, Any]:
    """libpq parameters: every host, and only a read-write session accepted (or, for the
    credential reads of a failover, ``prefer-standby``: a standby, else whatever answers)."""
    require_database(settings)
    hosts = settings.database_hosts
    args: dict[str, Any] = {
        "host": ",".join(host for host, _ in hosts),
        "port": ",".join(str(port) for _, port in hosts),
        "dbname": settings.database_name,
        "user": settings.database_user,
        "sslmode": settings.database_sslmode,
        "connect_timeout": settings.database_connect_timeout_seconds,
        "target_session_attrs": session_attrs,
        "application_name": application_name,
        "keepalives": 1,
        "keepalives_idle": KEEPALIVES[0],
        "keepalives_interval": KEEPALIVES[1],
        "keepalives_count": KEEPALIVES[2],
        "tcp_user_timeout": TCP_USER_TIMEOUT_MS,
    }
    if settings.database_password:
        args["password"] = settings.database_password
    if settings.database_sslrootcert:
        args["sslrootcert"] = settings.database_sslrootcert
    if settings.internal_crl_file:
        # libpq then refuses a revoked server certificate (and one of a CA without a CRL there)
        args["sslcrl"] = settings.internal_crl_file
    return args


def make_engine(
    settings: Settings, *, for_migrations: bool = False, standby_reads: bool = False
) -> Engine:
    """The app's pooled engine, or (``for_migrations``) one that keeps no connection, so a
    migration's session (and its advisory lock) ends when its connection is closed.

    The URL holds no credentials (they are in connect_args), so the engine's repr and
    SQLAlchemy's messages never show the password; ``hide_parameters`` keeps questions and
    answers out of error messages too.
    """
    args = connect_args(
        settings,
        application_name="querygpt-migrate" if for_migrations
        else "querygpt-backend-standby-reads" if standby_reads else "querygpt-backend",
        session_attrs="prefer-standby" if standby_reads else "read-write",
    )
    if for_migrations:
        return create_engine(
            "postgresql+psycopg://", connect_args=args, poolclass=NullPool, hide_parameters=True
        )
    args["options"] = f"-c statement_timeout={STATEMENT_TIMEOUT_MS}"
    return create_engine(
        "postgresql+psycopg://",
        connect_args=args,
        # Standby reads serve only the credential checks of a failover: a small pool.
        pool_size=min(2, settings.database_pool_size) if standby_reads else settings.database_pool_size,
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
    uploaded_by: uuid.UUID | None = None

    @classmethod
    def of(cls, row: Any) -> DocumentRecord:
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
            uploaded_by=row.uploaded_by,
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

    def __init__(
        self,
        engine: Engine,
        *,
        location: str = "PostgreSQL",
        commit_wait: float = COMMIT_WAIT_SECONDS,
        standby_engine: Engine | None = None,
    ) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        #: Reads that may come from a standby when no primary answers (``standby_session``).
        self.standby_engine = standby_engine
        self._standby_sessions = (
            sessionmaker(standby_engine, expire_on_commit=False) if standby_engine else None
        )
        self._location = location
        self.commit_wait = commit_wait

    @classmethod
    def connect(cls, settings: Settings) -> Database:
        """No network traffic happens here: the first query connects."""
        return cls(
            make_engine(settings),
            location=database_hosts_text(settings.database_hosts),
            standby_engine=make_engine(settings, standby_reads=True),
        )

    def close(self) -> None:
        self.engine.dispose()
        if self.standby_engine is not None:
            self.standby_engine.dispose()

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
        uploaded_by: uuid.UUID | None = None,
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
        if uploaded_by is not None:
            values["uploaded_by"] = uploaded_by
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
        ).returning(*Document.__table__.c)
        with self._write("record the document") as conn:
            conn.execute(insert(Collection).values(name=collection).on_conflict_do_nothing())
            conn.execute(
                delete(Document).where(
                    Document.collection == collection,
                    Document.s3_key == stored.key,
                    Document.filename != stored.filename,
                )
            )
            # A stale row already holding this id (under another name) would block the insert.
            conn.execute(
                delete(Document).where(
                    Document.id == document_id,
                    (Document.collection != collection) | (Document.filename != stored.filename),
                )
            )
            record = DocumentRecord.of(conn.execute(upsert).one())
        return record

    def forget_document(self, document_id: str, s3_key: str) -> int:
        """Scrub the document's excerpts from the history, then delete its row, in one
        transaction. Excerpts of earlier versions of the same original (same S3 key) go
        too. Returns the number of history entries changed."""
        with self._write("erase the document's records") as conn:
            scrubbed = conn.execute(
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
            conn.execute(delete(Document).where(Document.id == uuid.UUID(document_id)))
        return int(scrubbed or 0)

    # -- query history -------------------------------------------------------

    def record_query(
        self,
        collection: str,
        question: str,
        answer: str,
        sources: Sequence[dict[str, Any]],
        latency_ms: int,
        user_id: uuid.UUID | None = None,
    ) -> int:
        row = {
            "user_id": user_id,
            "collection": collection,
            "question": question,
            "answer": answer,
            "sources": list(sources),
            "latency_ms": latency_ms,
        }
        with self._write("record the query", replicated=False) as conn:
            history_id = conn.execute(
                insert(QueryHistory).values(**row).returning(QueryHistory.id)
            ).scalar_one()
        return int(history_id)

    def history(
        self,
        limit: int,
        *,
        before: int | None = None,
        collection: str | None = None,
        user_id: uuid.UUID | None = None,
    ) -> tuple[list[HistoryEntry], int | None]:
        """Newest first; the second value is the ``before`` of the next page (None: last).
        ``user_id`` keeps only that user's questions."""
        query = select(QueryHistory).order_by(QueryHistory.id.desc()).limit(limit + 1)
        if user_id is not None:
            query = query.where(QueryHistory.user_id == user_id)
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

    def storage_used(self, user_id: uuid.UUID) -> int:
        """Bytes of the current documents ``user_id`` uploaded (the storage quota's count)."""
        with self._session("count the storage used") as session:
            used = session.scalar(
                select(func.coalesce(func.sum(Document.size_bytes), 0)).where(
                    Document.uploaded_by == user_id
                )
            )
        return int(used or 0)

    def replaced_document(self, collection: str, filename: str) -> DocumentRecord | None:
        """The document an upload of ``filename`` into ``collection`` would replace."""
        with self._session("look up the document") as session:
            row = session.scalar(
                select(Document).where(
                    Document.collection == collection, Document.filename == filename
                )
            )
            return DocumentRecord.of(row) if row else None

    def collection_exists(self, name: str) -> bool:
        with self._session("look up the collection") as session:
            return session.get(Collection, name) is not None

    @contextmanager
    def _session(self, action: str) -> Iterator[Session]:
        with self._errors(action), self._sessions() as session:
            yield session

    @contextmanager
    def standby_session(self, action: str) -> Iterator[Session]:
        """A read-only session on a standby (or whatever server answers): for reads that may
        be a moment behind the primary, while the primary cannot be reached (a failover)."""
        if self._standby_sessions is None:
            raise UpstreamUnavailable(SERVICE, f"No standby reads are configured; could not {action}.")
        with self._errors(action), self._standby_sessions() as session:
            yield session

    @contextmanager
    def _write(self, action: str, *, replicated: bool = True) -> Iterator[Connection]:
        """One write transaction, committed when the block ends, on a connection held until
        its commit is settled. ``replicated=False`` commits with synchronous_commit=local;
        otherwise the wait for a standby is cut after ``commit_wait`` seconds (module doc)."""
        with self._errors(action), self.engine.connect() as conn:
            raw = conn.connection.driver_connection
            notices: list[str] = []

            def keep(diagnostic: Any) -> None:
                notices.append(diagnostic.message_primary or "")

            raw.add_notice_handler(keep)
            try:
                if not replicated:
                    conn.execute(text("SET LOCAL synchronous_commit = local"))
                yield conn
                timer = threading.Timer(self.commit_wait, _cancel, (raw,))
                timer.daemon = True
                timer.start()
                try:
                    conn.commit()
                finally:
                    timer.cancel()
                    timer.join()  # a late cancel reaches an idle session, which ignores it
            finally:
                raw.remove_notice_handler(keep)
        if any("synchronous replication" in notice for notice in notices):
            UNREPLICATED_COMMITS.inc()
            log.warning(
                "committed on the primary only: no standby confirmed the write in time",
                extra={"action": action, "commit_wait_seconds": self.commit_wait},
            )

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """The driver's errors as the API's: 503 when unreachable, the schema missing named."""
        try:
            yield
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


def _cancel(raw: Any) -> None:
    """Cancel what the connection runs: a commit waiting for a standby then completes on the
    primary (with a WARNING). Runs in the timer's thread, so it only logs its failure."""
    try:
        raw.cancel_safe(timeout=5.0)
    except Exception as exc:  # noqa: BLE001 - a timer thread has nobody to raise to
        log.warning("could not cancel the wait for a standby", extra={"error": repr(exc)})


def _cause(exc: BaseException) -> str:
    """The driver's exception class: says what failed without any address."""
    orig = getattr(exc, "orig", None)
    return type(orig).__name__ if orig is not None else type(exc).__name__


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return (str(orig).strip().splitlines() or [""])[0][:300]
