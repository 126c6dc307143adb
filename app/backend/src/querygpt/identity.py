"""Users, grants, API tokens, sessions and the audit log in PostgreSQL (docs/access-control.md).

Every method is one short transaction through ``Database``'s error handling, so a database
failure is the same 503/UpstreamError as everywhere else. Credentials never reach this
module in clear (a new password arrives hashed by the caller); tokens and session ids
arrive as their SHA-256.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, literal_column, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .database import Database
from .errors import Conflict, UpstreamError, UpstreamUnavailable
from .models import ApiToken, AuditEvent, Collection, Document, Grant, User, UserSession

#: last_seen_at / last_used_at are written at most this often per session or token.
TOUCH_INTERVAL = timedelta(seconds=60)


@dataclass(frozen=True)
class UserRecord:
    id: uuid.UUID
    username: str
    role: str
    disabled: bool
    created_at: datetime
    last_login_at: datetime | None
    storage_quota_bytes: int | None
    password_hash: str = field(repr=False, default="")
    grants: dict[str, str] = field(default_factory=dict)
    storage_used_bytes: int = 0

    @classmethod
    def of(cls, row: Any, grants: dict[str, str] | None = None, used: int = 0) -> UserRecord:
        return cls(
            id=row.id,
            username=row.username,
            role=row.role,
            disabled=row.disabled,
            created_at=row.created_at,
            last_login_at=row.last_login_at,
            storage_quota_bytes=row.storage_quota_bytes,
            password_hash=row.password_hash,
            grants=grants or {},
            storage_used_bytes=used,
        )


@dataclass(frozen=True)
class TokenRecord:
    id: uuid.UUID
    user_id: uuid.UUID
    username: str
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


@dataclass(frozen=True)
class Credential:
    """The user behind a session or token, as it is now (role, grants, disabled)."""

    user: UserRecord
    #: The session's or token's own times, for expiry checks and the touch.
    created_at: datetime
    expires_at: datetime
    last_seen_at: datetime | None
    revoked_at: datetime | None = None
    token_id: uuid.UUID | None = None
    now: datetime | None = None
    #: Read from a standby while no primary answered: the use is not noted (no write).
    from_standby: bool = False


@dataclass(frozen=True)
class AuditRecord:
    id: int
    at: datetime
    actor_username: str | None
    actor_user_id: uuid.UUID | None
    auth_method: str
    action: str
    target: str | None
    collection: str | None
    client_ip: str | None
    outcome: str
    details: dict[str, Any]


class IdentityStore:
    """The identity queries, on the app's Database (its pool and its error handling)."""

    def __init__(self, database: Database) -> None:
        self.db = database

    # -- users -----------------------------------------------------------------

    def user(self, username: str) -> UserRecord | None:
        with self.db._session("look up the user") as session:
            row = session.scalar(select(User).where(User.username == username))
            if row is None:
                return None
            return UserRecord.of(row, self._grants(session, row.id))

    def users(self) -> list[UserRecord]:
        with self.db._session("list the users") as session:
            rows = list(session.scalars(select(User).order_by(User.username)))
            grants: dict[uuid.UUID, dict[str, str]] = {}
            for g in session.scalars(select(Grant).order_by(Grant.collection)):
                grants.setdefault(g.user_id, {})[g.collection] = g.permission
            used = {
                user_id: total
                for user_id, total in session.execute(
                    select(Document.uploaded_by, func.sum(Document.size_bytes))
                    .where(Document.uploaded_by.is_not(None))
                    .group_by(Document.uploaded_by)
                ).all()
            }
            return [UserRecord.of(r, grants.get(r.id), int(used.get(r.id) or 0)) for r in rows]

    def create_user(self, username: str, password_hash: str, role: str) -> UserRecord:
        """Raises Conflict if the name is taken."""
        try:
            with self.db._write("create the user") as conn:
                row = conn.execute(
                    insert(User)
                    .values(id=uuid.uuid4(), username=username, password_hash=password_hash, role=role)
                    .returning(*User.__table__.c)
                ).one()
        except Exception as exc:
            if _is_unique_violation(exc):
                raise Conflict(f"A user named '{username}' exists already.") from exc
            raise
        return UserRecord.of(row)

    def upsert_admin(self, username: str, password_hash: str) -> tuple[UserRecord, bool]:
        """Create ``username`` as an admin, or make the existing user an enabled admin with
        this password. Returns (the user, whether it was created)."""
        with self.db._write("create the admin") as conn:
            statement = insert(User).values(
                id=uuid.uuid4(), username=username, password_hash=password_hash, role="admin"
            )
            row = conn.execute(
                statement.on_conflict_do_update(
                    index_elements=[User.username],
                    set_={"password_hash": password_hash, "role": "admin", "disabled": False},
                ).returning(*User.__table__.c, literal_column("(xmax = 0)").label("inserted"))
            ).one()
            created = bool(row.inserted)
        return UserRecord.of(row), created

    def update_user(
        self, username: str, values: dict[str, Any], *, end_sessions: bool | None = None
    ) -> UserRecord | None:
        """Set the given columns; None if there is no such user. A new password ends the
        user's sessions (whoever knew the old one is logged out; ``end_sessions=False`` for
        the same password rehashed); its tokens stay."""
        with self.db._write("update the user") as conn:
            if values:
                row = conn.execute(
                    update(User).where(User.username == username).values(**values)
                    .returning(*User.__table__.c)
                ).one_or_none()
            else:
                row = conn.execute(select(User).where(User.username == username)).one_or_none()
            if row is None:
                return None
            if "password_hash" in values if end_sessions is None else end_sessions:
                conn.execute(delete(UserSession).where(UserSession.user_id == row.id))
            grants = {
                g.collection: g.permission
                for g in conn.execute(select(Grant).where(Grant.user_id == row.id)).all()
            }
        return UserRecord.of(row, grants)

    def write_grants(self, user_id: uuid.UUID) -> list[str]:
        with self.db._session("read the grants") as session:
            return list(
                session.scalars(
                    select(Grant.collection).where(
                        Grant.user_id == user_id, Grant.permission == "write"
                    )
                )
            )

    def record_login(self, user_id: uuid.UUID) -> None:
        with self.db._write("record the login", replicated=False) as conn:
            conn.execute(update(User).where(User.id == user_id).values(last_login_at=func.now()))

    # -- grants ------------------------------------------------------------------

    def set_grant(self, user_id: uuid.UUID, collection: str, permission: str) -> None:
        with self.db._write("set the grant") as conn:
            statement = insert(Grant).values(
                user_id=user_id, collection=collection, permission=permission
            )
            conn.execute(
                statement.on_conflict_do_update(
                    index_elements=[Grant.user_id, Grant.collection],
                    set_={"permission": statement.excluded.permission},
                )
            )

    def remove_grant(self, user_id: uuid.UUID, collection: str) -> bool:
        with self.db._write("remove the grant") as conn:
            removed = conn.execute(
                delete(Grant).where(Grant.user_id == user_id, Grant.collection == collection)
            ).rowcount
        return bool(removed)

    # -- collections -------------------------------------------------------------

    def create_collection(self, name: str) -> bool:
        """False if it exists already."""
        with self.db._write("create the collection") as conn:
            created = conn.execute(
                insert(Collection).values(name=name).on_conflict_do_nothing().returning(Collection.name)
            ).first()
        return created is not None

    # -- sessions ----------------------------------------------------------------

    def create_session(
        self,
        id_sha256: str,
        user_id: uuid.UUID,
        max_seconds: int,
        audit: dict[str, Any],
        *,
        idle_seconds: int,
    ) -> None:
        """The session row, the user's last_login_at and the login's audit row, in one
        transaction: without its audit row there is no session. The user's own sessions
        that have expired (idle or at their maximum) are deleted on the way."""
        with self.db._write("start the session") as conn:
            conn.execute(
                delete(UserSession).where(
                    UserSession.user_id == user_id,
                    or_(
                        UserSession.expires_at < func.now(),
                        UserSession.last_seen_at < func.now() - timedelta(seconds=idle_seconds),
                    ),
                )
            )
            conn.execute(
                insert(UserSession).values(
                    id_sha256=id_sha256,
                    user_id=user_id,
                    expires_at=func.now() + timedelta(seconds=max_seconds),
                )
            )
            conn.execute(update(User).where(User.id == user_id).values(last_login_at=func.now()))
            conn.execute(insert(AuditEvent).values(**audit))

    def _read_credential(self, action: str, read: Any) -> Credential | None:
        """``read(session)`` on the primary; while no primary answers (a failover), on a
        standby, marked ``from_standby`` (a moment behind, and not to be written back)."""
        try:
            with self.db._session(action) as session:
                return read(session)  # type: ignore[no-any-return]
        except UpstreamUnavailable as primary_failed:
            try:
                with self.db.standby_session(action) as session:
                    found = read(session)
            except UpstreamError:
                raise primary_failed from None
            return replace(found, from_standby=True) if found is not None else None

    def session_credential(self, id_sha256: str) -> Credential | None:
        return self._read_credential("check the session", lambda s: self._session_row(s, id_sha256))

    def _session_row(self, session: Session, id_sha256: str) -> Credential | None:
        row = session.execute(
            select(User, UserSession, func.now())
            .join(UserSession, UserSession.user_id == User.id)
            .where(UserSession.id_sha256 == id_sha256)
        ).one_or_none()
        if row is None:
            return None
        user, us, now = row
        return Credential(
            user=UserRecord.of(user, self._grants(session, user.id)),
            created_at=us.created_at,
            expires_at=us.expires_at,
            last_seen_at=us.last_seen_at,
            now=now,
        )

    def touch_session(self, id_sha256: str) -> None:
        with self.db._write("note the session's use", replicated=False) as conn:
            conn.execute(
                update(UserSession)
                .where(UserSession.id_sha256 == id_sha256)
                .values(last_seen_at=func.now())
            )

    def delete_session(self, id_sha256: str) -> None:
        with self.db._write("end the session", replicated=False) as conn:
            conn.execute(delete(UserSession).where(UserSession.id_sha256 == id_sha256))

    def delete_expired_sessions(self, idle_seconds: int) -> int:
        with self.db._write("delete expired sessions", replicated=False) as conn:
            return int(
                conn.execute(
                    delete(UserSession).where(
                        or_(
                            UserSession.expires_at < func.now(),
                            UserSession.last_seen_at
                            < func.now() - timedelta(seconds=idle_seconds),
                        )
                    )
                ).rowcount
                or 0
            )

    # -- tokens ------------------------------------------------------------------

    def create_token(
        self, user_id: uuid.UUID, name: str, token_sha256: str, prefix: str, days: int
    ) -> TokenRecord:
        with self.db._write("create the token") as conn:
            row = conn.execute(
                insert(ApiToken)
                .values(
                    id=uuid.uuid4(),
                    user_id=user_id,
                    name=name,
                    token_sha256=token_sha256,
                    prefix=prefix,
                    expires_at=func.now() + timedelta(days=days),
                )
                .returning(*ApiToken.__table__.c)
            ).one()
            username = conn.execute(select(User.username).where(User.id == user_id)).scalar_one()
        return _token_record(row, username)

    def token_credential(self, token_sha256: str) -> Credential | None:
        return self._read_credential("check the API token", lambda s: self._token_row(s, token_sha256))

    def _token_row(self, session: Session, token_sha256: str) -> Credential | None:
        row = session.execute(
            select(User, ApiToken, func.now())
            .join(ApiToken, ApiToken.user_id == User.id)
            .where(ApiToken.token_sha256 == token_sha256)
        ).one_or_none()
        if row is None:
            return None
        user, token, now = row
        return Credential(
            user=UserRecord.of(user, self._grants(session, user.id)),
            created_at=token.created_at,
            expires_at=token.expires_at,
            last_seen_at=token.last_used_at,
            revoked_at=token.revoked_at,
            token_id=token.id,
            now=now,
        )

    def touch_token(self, token_id: uuid.UUID) -> None:
        with self.db._write("note the token's use", replicated=False) as conn:
            conn.execute(
                update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=func.now())
            )

    def tokens(self, user_id: uuid.UUID | None) -> list[TokenRecord]:
        """``user_id``'s tokens, or everyone's (None), newest first."""
        query = (
            select(ApiToken, User.username)
            .join(User, User.id == ApiToken.user_id)
            .order_by(ApiToken.created_at.desc(), ApiToken.id)
        )
        if user_id is not None:
            query = query.where(ApiToken.user_id == user_id)
        with self.db._session("list the tokens") as session:
            return [_token_record(t, name) for t, name in session.execute(query).all()]

    def token(self, token_id: uuid.UUID) -> TokenRecord | None:
        with self.db._session("look up the token") as session:
            row = session.execute(
                select(ApiToken, User.username)
                .join(User, User.id == ApiToken.user_id)
                .where(ApiToken.id == token_id)
            ).one_or_none()
            return _token_record(row[0], row[1]) if row else None

    def revoke_token(self, token_id: uuid.UUID) -> None:
        """Idempotent: a revoked token keeps its first revocation time."""
        with self.db._write("revoke the token") as conn:
            conn.execute(
                update(ApiToken)
                .where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None))
                .values(revoked_at=func.now())
            )

    # -- audit -------------------------------------------------------------------

    def write_audit(self, values: dict[str, Any]) -> None:
        with self.db._write("write the audit log") as conn:
            conn.execute(insert(AuditEvent).values(**values))

    def failures_since(
        self, *, username: str | None = None, client_ip: str | None = None, seconds: int, skip: int
    ) -> tuple[datetime, datetime] | None:
        """The (skip+1)-th newest failed login of ``username`` (or from ``client_ip``) in the
        last ``seconds``, and the database's now; None if there are not that many."""
        query = (
            select(AuditEvent.at, func.now())
            .where(
                AuditEvent.action == "login",
                AuditEvent.outcome == "failure",
                AuditEvent.at > func.now() - timedelta(seconds=seconds),
            )
            .order_by(AuditEvent.at.desc())
            .offset(skip)
            .limit(1)
        )
        if username is not None:
            query = query.where(AuditEvent.actor_username == username)
        else:
            query = query.where(AuditEvent.client_ip == client_ip)
        with self.db._session("count failed logins") as session:
            row = session.execute(query).one_or_none()
        return (row[0], row[1]) if row else None

    def audit_events(
        self, limit: int, before: int | None
    ) -> tuple[list[AuditRecord], int | None]:
        query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit + 1)
        if before is not None:
            query = query.where(AuditEvent.id < before)
        with self.db._session("read the audit log") as session:
            rows = list(session.scalars(query))
        events = [
            AuditRecord(
                r.id, r.at, r.actor_username, r.actor_user_id, r.auth_method, r.action,
                r.target, r.collection, r.client_ip, r.outcome, r.details,
            )
            for r in rows[:limit]
        ]
        return events, (events[-1].id if len(rows) > limit else None)

    # -- helpers -------------------------------------------------------------------

    @staticmethod
    def _grants(session: Any, user_id: uuid.UUID) -> dict[str, str]:
        return {
            g.collection: g.permission
            for g in session.scalars(
                select(Grant).where(Grant.user_id == user_id).order_by(Grant.collection)
            )
        }


def _token_record(row: Any, username: str) -> TokenRecord:
    return TokenRecord(
        id=row.id,
        user_id=row.user_id,
        username=username,
        name=row.name,
        prefix=row.prefix,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )


def _is_unique_violation(exc: BaseException) -> bool:
    """A unique_violation (23505) anywhere in the exception's chain."""
    seen: Sequence[BaseException | None] = (exc, exc.__cause__, getattr(exc, "orig", None))
    for item in seen:
        if item is None:
            continue
        if isinstance(item, IntegrityError):
            return True
        if getattr(item, "sqlstate", None) == "23505":
            return True
        orig = getattr(item, "orig", None)
        if getattr(orig, "sqlstate", None) == "23505":
            return True
    return False


__all__ = [
    "AuditRecord",
    "Credential",
    "IdentityStore",
    "TokenRecord",
    "UserRecord",
]
