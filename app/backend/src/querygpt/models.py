"""The application's tables (SQLAlchemy 2 declarative, typed).

The schema itself is made by the Alembic revisions in ``migrations/versions`` (run with
``querygpt-backend migrate``), never by ``create_all``: these classes describe it for
queries, and a test checks that they and the migrations agree.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: Constraint names a later migration can refer to (and drop) without looking them up.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Collection(Base):
    """A collection: one Qdrant collection and one folder of the documents bucket."""

    __tablename__ = "collections"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class Document(Base):
    """The current version of one uploaded original (a re-upload replaces the row)."""

    __tablename__ = "documents"
    __table_args__ = (
        # The filename is a document's identity within its collection (documents.py).
        UniqueConstraint("collection", "filename"),
        Index(None, "s3_key"),
    )

    #: documents.StoredDocument.document_id: the document_id payload of its Qdrant points.
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    collection: Mapped[str] = mapped_column(
        String(64), ForeignKey("collections.name", ondelete="RESTRICT")
    )
    filename: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    s3_key: Mapped[str] = mapped_column(Text)
    s3_version_id: Mapped[str | None] = mapped_column(Text)
    chunks: Mapped[int] = mapped_column(Integer)
    uploaded_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class QueryHistory(Base):
    """One answered question, with the excerpts it was answered from."""

    __tablename__ = "query_history"
    __table_args__ = (
        Index(None, "created_at"),
        # GET /history?collection=...: newest first within one collection.
        Index(None, "collection", "id"),
        # Erasure finds the rows quoting a document with `sources @> '[{"document_id": ...}]'`.
        Index(
            "ix_query_history_sources",
            "sources",
            postgresql_using="gin",
            postgresql_ops={"sources": "jsonb_path_ops"},
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    # No foreign key: history outlives a collection, and collections made before the database
    # existed (until a reindex records them) are still answered from.
    collection: Mapped[str] = mapped_column(String(64))
    question: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text)
    #: The excerpts returned to the user: [{"document_id", "s3_key", "filename", "page",
    #: "chunk", "score", "text"}, ...].
    sources: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    latency_ms: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
