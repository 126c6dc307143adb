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
    Boolean,
    CheckConstraint,
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
    false,
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
    #: The user whose upload this version is (storage quota); NULL for documents recorded
    #: before users existed, by a reindex, or of a deleted user.
    uploaded_by: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="SET NULL"), index=True
    )


class QueryHistory(Base):
    """One answered question, with the excerpts it was answered from."""

    __tablename__ = "query_history"
    __table_args__ = (
        Index(None, "created_at"),
        # GET /history?collection=...: newest first within one collection.
        Index(None, "collection", "id"),
        # GET /history of a non-admin: its own questions, newest first.
        Index(None, "user_id", "id"),
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
    #: Who asked (GET /history shows a non-admin its own questions). No foreign key: the
    #: history outlives its users, like its collections; NULL for questions asked before
    #: users existed.
    user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)


# -- identity (auth.py, identity.py; docs/access-control.md) ---------------------------------

ROLES = ("admin", "editor", "viewer")
PERMISSIONS = ("read", "write")


class User(Base):
    """A person or automation with one role; passwords are argon2id hashes."""

    __tablename__ = "users"
    __table_args__ = (CheckConstraint("role IN ('admin', 'editor', 'viewer')", name="role"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(String(16))
    disabled: Mapped[bool] = mapped_column(Boolean, server_default=false())
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: NULL: QUERYGPT_USER_STORAGE_QUOTA_BYTES applies.
    storage_quota_bytes: Mapped[int | None] = mapped_column(BigInteger)


class Grant(Base):
    """(user, collection, permission): ``write`` includes ``read``."""

    __tablename__ = "grants"
    __table_args__ = (CheckConstraint("permission IN ('read', 'write')", name="permission"),)

    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    collection: Mapped[str] = mapped_column(
        String(64), ForeignKey("collections.name", ondelete="CASCADE"), primary_key=True, index=True
    )
    permission: Mapped[str] = mapped_column(String(8))


class ApiToken(Base):
    """A bearer token: only its SHA-256 is kept (a 256-bit random secret needs no slow hash)."""

    __tablename__ = "api_tokens"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(100))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    #: The token's first 12 characters, to recognise it in a listing.
    prefix: Mapped[str] = mapped_column(String(12))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class UserSession(Base):
    """A browser session: the SHA-256 of its random id (the cookie carries the id)."""

    __tablename__ = "sessions"

    id_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    last_seen_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class AuditEvent(Base):
    """One security-relevant event; never a password, a token or a cookie."""

    __tablename__ = "audit_events"
    __table_args__ = (
        # The login throttle: failures per username, and per client address, in a window.
        Index(None, "action", "actor_username", "at"),
        Index(None, "action", "client_ip", "at"),
    )

    #: GET /audit pages by id (newest first) through the primary key's index.
    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    #: As given (a failed login's unknown name too); "cli" for the command line.
    actor_username: Mapped[str | None] = mapped_column(String(64))
    actor_user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    #: "password", "session", "token", "cli" or "none".
    auth_method: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(32))
    target: Mapped[str | None] = mapped_column(Text)
    collection: Mapped[str | None] = mapped_column(String(64))
    client_ip: Mapped[str | None] = mapped_column(String(64))
    #: "success", "failure" or "denied".
    outcome: Mapped[str] = mapped_column(String(16))
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
