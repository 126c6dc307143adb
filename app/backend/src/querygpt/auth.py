"""Credentials and the principal of a request (docs/access-control.md is the contract).

- Passwords: argon2id with argon2-cffi's default parameters (``PasswordHasher()``).
- API tokens: ``qgpt_`` + 32 random bytes as base64url (43 characters). Only their SHA-256
  is stored: a 256-bit random secret cannot be guessed, so a slow hash would only slow down
  every request.
- Sessions: the cookie carries ``<id>.<mac>``, a random id and its HMAC-SHA256 under
  QUERYGPT_SECRET_KEY (hex); the database keeps the SHA-256 of the id. The MAC lets the
  backend refuse a forged cookie without a query, and rotating the key logs everyone out.
- CSRF: HMAC-SHA256(key, "csrf:" + session id), hex, in ``X-CSRF-Token`` on every
  cookie-authenticated request other than GET/HEAD.

``current_principal`` (a FastAPI dependency) reads the user on every request (one indexed
query, plus its grants), so a role, grant or disabled change applies to the next request.

While no primary answers (a failover: the primary is gone until the runbook promotes the
standby), credentials are read from the standby (``IdentityStore._read_credential``), so
questions keep being answered as they were before identity existed. If no server answers at
all, a credential this process validated in the last ``CREDENTIAL_GRACE_SECONDS`` is admitted
as it was then (``RecentCredentials``); a revocation made just before such an outage waits for
the database to come back. Counted in querygpt_credentials_from_memory_total.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from functools import lru_cache
from typing import TYPE_CHECKING, Annotated, Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from fastapi import Depends, Request

from .errors import Forbidden, InvalidRequest, QueryGPTError, Unauthorized, UpstreamError
from .identity import TOUCH_INTERVAL, Credential, IdentityStore, UserRecord
from .metrics import AUDIT_WRITE_FAILURES, CREDENTIALS_FROM_MEMORY
from .middleware import client_address
from .models import PERMISSIONS, ROLES

if TYPE_CHECKING:
    from .routes import Services

audit_log = logging.getLogger("querygpt.audit")
log = logging.getLogger(__name__)

SESSION_COOKIE = "querygpt_session"
#: The edge serves the backend under /api (nginx strips it).
COOKIE_PATH = "/api"
CSRF_HEADER = "X-CSRF-Token"
TOKEN_PREFIX = "qgpt_"
TOKEN_RE = re.compile(r"^qgpt_[A-Za-z0-9_-]{43}$")
#: Characters of a token kept for display.
DISPLAY_PREFIX_CHARS = 12
USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{2,63}$")
PASSWORD_MIN_CHARS = 12
PASSWORD_MAX_CHARS = 1024
TOKEN_DAYS_DEFAULT = 90
TOKEN_DAYS_MAX = 365
#: Login throttling (docs/access-control.md): more than this many failures in the window.
LOGIN_WINDOW_SECONDS = 15 * 60
LOGIN_MAX_FAILURES_PER_USERNAME = 5
LOGIN_MAX_FAILURES_PER_ADDRESS = 20
SAFE_METHODS = ("GET", "HEAD")
#: How long a validated credential stays usable while the database cannot be asked: longer
#: than a failover by the runbook takes, short enough that an outage is no way around a
#: revocation for long.
CREDENTIAL_GRACE_SECONDS = 300
#: Credentials remembered per process (least recently validated forgotten first).
RECENT_CREDENTIALS_MAX = 10_000

UNAUTHENTICATED = (
    "Authentication required: log in (POST /auth/login), or send an API token as "
    "'Authorization: Bearer qgpt_...'."
)
INVALID_CREDENTIAL = (
    "The session or API token is unknown, expired, revoked, or its user is disabled; "
    "log in again or use a valid token."
)
#: An API token that exists, of an enabled user, but expired or revoked (``_token_refusal``).
TOKEN_EXPIRED = (
    "This API token expired on {date}; create a new one (POST /tokens from a browser session)."
)
TOKEN_REVOKED = (
    "This API token was revoked; create a new one (POST /tokens from a browser session)."
)
LOGIN_FAILED = "Wrong username or password."
CSRF_FAILED = "CSRF token missing or invalid"

_hasher = PasswordHasher()


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    """Verified against when the username is unknown, so both failures take the same time
    (made at the first login, not at import: every worker imports this module)."""
    return _hasher.hash(secrets.token_urlsafe(16))


# -- passwords ---------------------------------------------------------------------


def check_password_rules(password: str) -> None:
    """422 unless 12-1024 characters."""
    if not PASSWORD_MIN_CHARS <= len(password) <= PASSWORD_MAX_CHARS:
        raise InvalidRequest(
            f"The password must be {PASSWORD_MIN_CHARS}-{PASSWORD_MAX_CHARS} characters long "
            f"(got {len(password)})."
        )


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Constant work whether or not the user exists (None: an unknown user)."""
    try:
        return _hasher.verify(password_hash or _dummy_hash(), password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    try:
        return _hasher.check_needs_rehash(password_hash)
    except InvalidHashError:
        return False


def check_username(username: str) -> None:
    if not USERNAME_RE.fullmatch(username):
        raise InvalidRequest(
            "The username must be 3-64 characters of a-z, 0-9, '.', '_' or '-', starting "
            f"with a letter or digit; got {username[:80]!r}."
        )


def check_role(role: str) -> None:
    if role not in ROLES:
        raise InvalidRequest(f"The role must be one of {', '.join(ROLES)}; got {role[:40]!r}.")


def check_permission(permission: str) -> None:
    if permission not in PERMISSIONS:
        raise InvalidRequest(
            f"The permission must be one of {', '.join(PERMISSIONS)}; got {permission[:40]!r}."
        )


# -- tokens, sessions, CSRF ----------------------------------------------------------


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True)
class NewToken:
    token: str = field(repr=False)
    sha256: str
    prefix: str


def new_token() -> NewToken:
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return NewToken(token, sha256_hex(token), token[:DISPLAY_PREFIX_CHARS])


def _mac(key: str, message: str) -> str:
    return hmac.new(key.encode(), message.encode(), hashlib.sha256).hexdigest()


def new_session_id() -> str:
    return secrets.token_urlsafe(32)


def session_cookie_value(key: str, session_id: str) -> str:
    return f"{session_id}.{_mac(key, session_id)}"


def session_id_from_cookie(key: str, value: str) -> str | None:
    """The session id if the cookie's MAC is right, else None."""
    session_id, sep, mac = value.partition(".")
    if not sep or not session_id or len(session_id) > 128:
        return None
    return session_id if hmac.compare_digest(mac, _mac(key, session_id)) else None


def csrf_token(key: str, session_id: str) -> str:
    return _mac(key, "csrf:" + session_id)


def set_session_cookie(response: Any, value: str, max_age: int) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        secure=True,  # always: the edge is always TLS
        httponly=True,
        samesite="strict",
    )


def clear_session_cookie(response: Any) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path=COOKIE_PATH, secure=True, httponly=True, samesite="strict"
    )


# -- the principal -------------------------------------------------------------------


@dataclass(frozen=True)
class Principal:
    """Who is calling, as the database says now."""

    user: UserRecord
    auth_method: str  # "token" or "session"
    session_id: str | None = field(default=None, repr=False)
    token_id: uuid.UUID | None = None
    client_ip: str | None = None

    @property
    def user_id(self) -> uuid.UUID:
        return self.user.id

    @property
    def username(self) -> str:
        return self.user.username

    @property
    def role(self) -> str:
        return self.user.role

    @property
    def is_admin(self) -> bool:
        return self.user.role == "admin"

    def can_read(self, collection: str) -> bool:
        return self.is_admin or collection in self.user.grants

    def can_write(self, collection: str) -> bool:
        return self.is_admin or (
            self.user.role == "editor" and self.user.grants.get(collection) == "write"
        )

    def require_read(self, collection: str) -> None:
        if not self.can_read(collection):
            raise Forbidden(
                f"You have no read access to collection '{collection}'; ask an admin for a "
                "grant."
            )

    def require_write(self, collection: str, doing: str) -> None:
        if not self.can_write(collection):
            raise Forbidden(
                f"You need write access to collection '{collection}' to {doing}"
                + (" (a viewer never has it)." if self.user.role == "viewer" else "; ask an admin for a grant.")
            )

    def require_admin(self, doing: str) -> None:
        if not self.is_admin:
            raise Forbidden(f"Only an admin may {doing} (your role is {self.user.role}).")


class RecentCredentials:
    """Credentials this process validated lately, by their hash, for the database's outages."""

    def __init__(self, grace_seconds: float = CREDENTIAL_GRACE_SECONDS,
                 max_entries: int = RECENT_CREDENTIALS_MAX) -> None:
        self.grace_seconds = grace_seconds
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, Credential]] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, key: str, credential: Credential) -> None:
        with self._lock:
            self._entries[key] = (time.monotonic(), credential)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def forget(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def recall(self, key: str) -> Credential | None:
        """The credential as validated, with ``now`` set to the present (so expiry still
        applies), if that was less than the grace period ago."""
        with self._lock:
            entry = self._entries.get(key)
        if entry is None or time.monotonic() - entry[0] > self.grace_seconds:
            return None
        return replace(entry[1], now=datetime.now(timezone.utc))


RECENT = RecentCredentials()


def _lookup(lookup: Any, key: str) -> tuple[Credential | None, bool]:
    """(credential, from_memory): the database's answer, remembered; or, when the database
    cannot answer, the remembered one (the database's error if there is none)."""
    try:
        credential = lookup(key)
    except UpstreamError:
        remembered = RECENT.recall(key)
        if remembered is None:
            raise
        return remembered, True
    if credential is None:
        RECENT.forget(key)
    else:
        RECENT.remember(key, credential)
    return credential, False


def _services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


def current_principal(request: Request) -> Principal:
    """The FastAPI dependency: bearer token (wins) or session cookie, else 401."""
    services = _services(request)
    settings = services.settings
    store = services.identity
    ip = client_address(request.scope)
    authorization = request.headers.get("authorization")
    if authorization is not None:
        scheme, _, value = authorization.partition(" ")
        token = value.strip()
        if scheme.lower() != "bearer" or not TOKEN_RE.fullmatch(token):
            raise Unauthorized(INVALID_CREDENTIAL)
        credential, remembered = _lookup(store.token_credential, sha256_hex(token))
        refused = _token_refusal(credential)
        if refused is not None:
            raise Unauthorized(refused)
        if remembered:
            CREDENTIALS_FROM_MEMORY.labels(kind="token").inc()
        elif (not credential.from_standby and credential.token_id is not None
              and _stale(credential.last_seen_at, credential.now)):
            _touch(store.touch_token, credential.token_id)
        return _remember(request, Principal(credential.user, "token", token_id=credential.token_id,
                                            client_ip=ip))

    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie is None:
        raise Unauthorized(UNAUTHENTICATED)
    session_id = session_id_from_cookie(settings.secret_key, cookie)
    if session_id is None:
        raise Unauthorized(INVALID_CREDENTIAL)
    credential, remembered = _lookup(store.session_credential, sha256_hex(session_id))
    if credential is None or not _usable(credential):
        raise Unauthorized(INVALID_CREDENTIAL)
    now = credential.now or datetime.now(timezone.utc)
    seen = credential.last_seen_at or credential.created_at
    if (now - seen).total_seconds() > settings.session_idle_seconds:
        raise Unauthorized(INVALID_CREDENTIAL)
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), csrf_token(settings.secret_key, session_id).encode()):
            raise Forbidden(CSRF_FAILED)
    if remembered:
        CREDENTIALS_FROM_MEMORY.labels(kind="session").inc()
    elif not credential.from_standby and _stale(credential.last_seen_at, credential.now):
        _touch(store.touch_session, sha256_hex(session_id))
    return _remember(request, Principal(credential.user, "session", session_id=session_id, client_ip=ip))


def _remember(request: Request, principal: Principal) -> Principal:
    """Keep the request's principal where the 403 handler finds it (audit_denied)."""
    request.state.principal = principal
    return principal


# The audited actions (method, route) whose refusal (403) is audited too, as outcome "denied".
AUDITED_ROUTES: dict[tuple[str, str], str] = {
    ("POST", "/upload"): "upload",
    ("DELETE", "/documents/{document_id}"): "document_delete",
    ("PUT", "/users/{username}/grants/{collection}"): "grant_set",
    ("DELETE", "/users/{username}/grants/{collection}"): "grant_remove",
    ("POST", "/tokens"): "token_create",
    ("DELETE", "/tokens/{token_id}"): "token_revoke",
    ("POST", "/users"): "user_create",
    ("PATCH", "/users/{username}"): "user_update",
    ("POST", "/collections"): "collection_create",
}


def audit_denied(request: Request, reason: str) -> None:
    """An authenticated user's refused attempt at an audited action: its row and journal line,
    outcome "denied", with the 403's reason. Refusals before a user is known (no credentials,
    a wrong CSRF token) are not attributed to anyone and write nothing here."""
    principal = getattr(request.state, "principal", None)
    route = request.scope.get("route")
    action = AUDITED_ROUTES.get((request.method, getattr(route, "path", "")))
    if principal is None or action is None:
        return
    params = request.path_params
    target = params.get("username") or params.get("document_id") or params.get("token_id")
    audit(
        _services(request).identity,
        audit_values(action, outcome="denied", principal=principal, target=target,
                     collection=params.get("collection"), details={"reason": reason}),
    )


PrincipalDep = Annotated[Principal, Depends(current_principal)]


def _token_refusal(credential: Credential | None) -> str | None:
    """Why a looked-up token is refused (the 401's detail), or None if it may be used.

    Only the holder of the token itself can read these answers (a 256-bit secret, looked up
    by its hash), so an expired or revoked token says which, with what to do; an unknown
    token and a disabled user's token get the one generic message, which tells a caller
    nothing about which users or tokens exist or whether an account was disabled.
    """
    if credential is None or credential.user.disabled:
        return INVALID_CREDENTIAL
    if credential.revoked_at is not None:
        return TOKEN_REVOKED
    if not _usable(credential):
        expired = credential.expires_at.astimezone(timezone.utc)
        return TOKEN_EXPIRED.format(date=f"{expired:%Y-%m-%d %H:%M:%S} UTC")
    return None


def _usable(credential: Credential) -> bool:
    now = credential.now or datetime.now(timezone.utc)
    return not credential.user.disabled and credential.expires_at > now


def _stale(last: datetime | None, now: datetime | None) -> bool:
    return last is None or now is None or now - last >= TOUCH_INTERVAL


def _touch(action: Any, key: Any) -> None:
    """Note a credential's use; a failure costs only the timestamp."""
    try:
        action(key)
    except QueryGPTError as exc:
        log.warning("could not note a credential's use", extra={"error": exc.operator_detail})


# -- the login throttle ------------------------------------------------------------------


def login_retry_after(store: IdentityStore, username: str, client_ip: str | None) -> int | None:
    """Seconds until another login may be tried, or None if it may be tried now: more than
    5 failures for the username, or 20 from the address, in the last 15 minutes."""
    waits: list[float] = []
    for kwargs, limit in (
        ({"username": username}, LOGIN_MAX_FAILURES_PER_USERNAME),
        ({"client_ip": client_ip}, LOGIN_MAX_FAILURES_PER_ADDRESS),
    ):
        if kwargs.get("client_ip", "") is None:
            continue
        # The (limit+1)-th newest failure in the window: once it ages out, at most `limit`
        # remain and a login may be tried again.
        found = store.failures_since(seconds=LOGIN_WINDOW_SECONDS, skip=limit, **kwargs)
        if found is not None:
            at, now = found
            waits.append(LOGIN_WINDOW_SECONDS - (now - at).total_seconds())
    if not waits:
        return None
    return max(1, int(max(waits)) + 1)


# -- audit ---------------------------------------------------------------------------------


def audit_values(
    action: str,
    *,
    outcome: str,
    principal: Principal | None = None,
    actor_username: str | None = None,
    actor_user_id: uuid.UUID | None = None,
    auth_method: str | None = None,
    target: str | None = None,
    collection: str | None = None,
    client_ip: str | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An audit_events row; the principal gives the actor unless named explicitly."""
    if principal is not None:
        actor_username = actor_username or principal.username
        actor_user_id = actor_user_id or principal.user_id
        auth_method = auth_method or principal.auth_method
        client_ip = client_ip or principal.client_ip
    return {
        "actor_username": actor_username[:64] if actor_username else None,
        "actor_user_id": actor_user_id,
        "auth_method": auth_method or "none",
        "action": action,
        "target": target,
        "collection": collection,
        "client_ip": client_ip,
        "outcome": outcome,
        "details": details or {},
    }


def journal(values: dict[str, Any], *, row_written: bool = True) -> None:
    """The structured journal line of an audit event (logger ``querygpt.audit``)."""
    fields = {
        key: str(value) if isinstance(value, uuid.UUID) else value for key, value in values.items()
    }
    fields["audit_row"] = "written" if row_written else "failed"
    audit_log.info("audit %s %s", values["action"], values["outcome"], extra=fields)


def audit(store: IdentityStore, values: dict[str, Any], *, strict: bool = False) -> None:
    """Write the row, then the journal line. ``strict``: a failure to write the row raises
    (the login); otherwise it is logged and counted (querygpt_audit_write_failures_total),
    because the action it records has completed already."""
    try:
        store.write_audit(values)
    except QueryGPTError as exc:
        journal(values, row_written=False)
        if strict:
            raise
        AUDIT_WRITE_FAILURES.labels(action=values["action"]).inc()
        log.warning(
            "audit row could not be written",
            extra={"audit_action": values["action"], "error": exc.operator_detail},
        )
        return
    journal(values)
