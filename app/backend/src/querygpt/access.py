"""Identity endpoints: login and logout, users, grants, API tokens, collections, the audit log
(docs/access-control.md, "Endpoints"). Handlers are plain ``def``, as in routes.py."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from .auth import (
    LOGIN_FAILED,
    TOKEN_DAYS_DEFAULT,
    TOKEN_DAYS_MAX,
    Principal,
    PrincipalDep,
    audit,
    audit_values,
    check_password_rules,
    check_permission,
    check_role,
    check_username,
    clear_session_cookie,
    csrf_token,
    hash_password,
    journal,
    login_retry_after,
    needs_rehash,
    new_session_id,
    new_token,
    session_cookie_value,
    set_session_cookie,
    sha256_hex,
    verify_password,
)
from .config import is_valid_collection_name
from .errors import (
    Conflict,
    Forbidden,
    InvalidCollectionName,
    InvalidRequest,
    NotFound,
    TooManyRequests,
    Unauthorized,
)
from .identity import TokenRecord, UserRecord
from .metrics import LOGINS, REQUESTS_REJECTED
from .middleware import client_address
from .routes import Services, ServicesDep

router = APIRouter()

AUDIT_MAX_LIMIT = 200


class LoginRequest(BaseModel):
    username: str = Field(max_length=200)
    password: str = Field(max_length=4096)


class UserCreate(BaseModel):
    username: str = Field(max_length=200)
    password: str = Field(max_length=4096)
    role: str


class UserUpdate(BaseModel):
    role: str | None = None
    password: str | None = Field(default=None, max_length=4096)
    disabled: bool | None = None
    storage_quota_bytes: int | None = Field(default=None, ge=0, le=1024**5)


class GrantBody(BaseModel):
    permission: str


class TokenCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    expires_in_days: int = Field(default=TOKEN_DAYS_DEFAULT, ge=1, le=TOKEN_DAYS_MAX)


class CollectionCreate(BaseModel):
    name: str


def _user_json(user: UserRecord) -> dict[str, Any]:
    return {
        "username": user.username,
        "role": user.role,
        "disabled": user.disabled,
        "created_at": _iso(user.created_at),
        "last_login_at": _iso(user.last_login_at),
        "storage_quota_bytes": user.storage_quota_bytes,
        "storage_used_bytes": user.storage_used_bytes,
        "grants": _grants_json(user.grants),
    }


def _grants_json(grants: dict[str, str]) -> list[dict[str, str]]:
    return [{"collection": c, "permission": p} for c, p in sorted(grants.items())]


def _token_json(token: TokenRecord, *, with_username: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": str(token.id),
        "name": token.name,
        "prefix": token.prefix,
        "created_at": _iso(token.created_at),
        "expires_at": _iso(token.expires_at),
        "revoked_at": _iso(token.revoked_at),
        "last_used_at": _iso(token.last_used_at),
    }
    if with_username:
        body["username"] = token.username
    return body


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _get_user(services: Services, username: str) -> UserRecord:
    user = services.identity.user(username)
    if user is None:
        raise NotFound(f"No user named '{username[:80]}'.")
    return user


# -- login, logout, me -----------------------------------------------------------------


@router.post("/auth/login")
def login(request: Request, body: LoginRequest, services: ServicesDep) -> JSONResponse:
    """Password login: a session cookie and its CSRF token. Throttled by failed logins in
    the audit log (every process and host sees them); a throttled attempt is refused
    without checking the password."""
    store = services.identity
    settings = services.settings
    ip = client_address(request.scope)
    username = body.username
    retry_after = login_retry_after(store, username, ip)
    if retry_after is not None:
        LOGINS.labels(outcome="throttled").inc()
        REQUESTS_REJECTED.labels(endpoint="login", reason="login_throttle").inc()
        audit(
            store,
            audit_values("login", outcome="throttled", actor_username=username,
                         auth_method="password", client_ip=ip),
        )
        raise TooManyRequests(
            "Too many failed logins for this user or from this address; try again in "
            f"{retry_after} seconds.",
            reason="login_throttle",
            retry_after=retry_after,
        )
    user = store.user(username) if len(username) <= 64 else None
    ok = verify_password(user.password_hash if user else None, body.password)
    if user is None or not ok or user.disabled:
        LOGINS.labels(outcome="failure").inc()
        reason = "unknown user" if user is None else ("disabled" if ok else "wrong password")
        # Strict: without its row the failure would not count towards the throttle.
        audit(
            store,
            audit_values("login", outcome="failure", actor_username=username,
                         actor_user_id=user.id if user else None, auth_method="password",
                         client_ip=ip, details={"reason": reason}),
            strict=True,
        )
        raise Unauthorized(LOGIN_FAILED, challenge=False)
    if needs_rehash(user.password_hash):
        store.update_user(
            user.username, {"password_hash": hash_password(body.password)}, end_sessions=False
        )
    session_id = new_session_id()
    values = audit_values("login", outcome="success", actor_username=user.username,
                          actor_user_id=user.id, auth_method="password", client_ip=ip)
    # The session, last_login_at and the audit row commit together: no row, no session.
    store.create_session(
        sha256_hex(session_id),
        user.id,
        settings.session_max_seconds,
        values,
        idle_seconds=settings.session_idle_seconds,
    )
    journal(values)
    LOGINS.labels(outcome="success").inc()
    response = JSONResponse(
        {
            "user": {"username": user.username, "role": user.role},
            "csrf_token": csrf_token(settings.secret_key, session_id),
        }
    )
    set_session_cookie(
        response, session_cookie_value(settings.secret_key, session_id), settings.session_max_seconds
    )
    return response


@router.post("/auth/logout", status_code=204)
def logout(services: ServicesDep, principal: PrincipalDep) -> Response:
    if principal.session_id is None:
        raise Forbidden(
            "Logout ends a browser session; this request used an API token (revoke it with "
            "DELETE /tokens/{id})."
        )
    services.identity.delete_session(sha256_hex(principal.session_id))
    audit(services.identity, audit_values("logout", outcome="success", principal=principal))
    response = Response(status_code=204)
    clear_session_cookie(response)
    return response


@router.get("/auth/me")
def me(services: ServicesDep, principal: PrincipalDep) -> dict[str, Any]:
    return {
        "username": principal.username,
        "role": principal.role,
        "grants": _grants_json(principal.user.grants),
        "csrf_token": (
            csrf_token(services.settings.secret_key, principal.session_id)
            if principal.session_id
            else None
        ),
    }


# -- users and grants --------------------------------------------------------------------


@router.get("/users")
def list_users(services: ServicesDep, principal: PrincipalDep) -> dict[str, Any]:
    principal.require_admin("list users")
    return {"users": [_user_json(u) for u in services.identity.users()]}


@router.post("/users", status_code=201)
def create_user(body: UserCreate, services: ServicesDep, principal: PrincipalDep) -> dict[str, Any]:
    principal.require_admin("create users")
    check_username(body.username)
    check_role(body.role)
    check_password_rules(body.password)
    user = services.identity.create_user(body.username, hash_password(body.password), body.role)
    audit(
        services.identity,
        audit_values("user_create", outcome="success", principal=principal,
                     target=user.username, details={"role": user.role}),
    )
    return _user_json(user)


@router.patch("/users/{username}")
def update_user(
    username: str, body: UserUpdate, services: ServicesDep, principal: PrincipalDep
) -> dict[str, Any]:
    principal.require_admin("change users")
    user = _get_user(services, username)
    given = body.model_fields_set
    values: dict[str, Any] = {}
    if "role" in given:
        if body.role is None:
            raise InvalidRequest("role must not be null.")
        check_role(body.role)
        if body.role == "viewer":
            writes = sorted(c for c, p in user.grants.items() if p == "write")
            if writes:
                raise InvalidRequest(
                    "A viewer cannot hold write; first change the write grants on "
                    f"{', '.join(writes)} to read."
                )
        values["role"] = body.role
    if "password" in given:
        if body.password is None:
            raise InvalidRequest("password must not be null.")
        check_password_rules(body.password)
        values["password_hash"] = hash_password(body.password)
    if "disabled" in given:
        if body.disabled is None:
            raise InvalidRequest("disabled must be true or false.")
        values["disabled"] = body.disabled
    if "storage_quota_bytes" in given:
        values["storage_quota_bytes"] = body.storage_quota_bytes  # null: the default applies
    updated = services.identity.update_user(username, values)
    if updated is None:
        raise NotFound(f"No user named '{username[:80]}'.")
    updated = replace(updated, storage_used_bytes=services.database.storage_used(updated.id))
    changed = sorted("password" if k == "password_hash" else k for k in values)
    details: dict[str, Any] = {"changed": changed}
    for key in ("role", "disabled", "storage_quota_bytes"):
        if key in values:
            details[key] = values[key]
    audit(
        services.identity,
        audit_values("user_update", outcome="success", principal=principal,
                     target=username, details=details),
    )
    return _user_json(updated)


def _check_collection(name: str) -> None:
    if not is_valid_collection_name(name):
        raise InvalidCollectionName(
            "The collection name must be 1-64 characters of letters, digits, '_' or '-'; "
            f"got {name[:80]!r}."
        )


@router.put("/users/{username}/grants/{collection}")
def set_grant(
    username: str,
    collection: str,
    body: GrantBody,
    services: ServicesDep,
    principal: PrincipalDep,
) -> dict[str, str]:
    principal.require_admin("grant access")
    check_permission(body.permission)
    user = _get_user(services, username)
    _check_collection(collection)
    if not services.database.collection_exists(collection):
        raise NotFound(f"No collection named '{collection}'.")
    if user.role == "viewer" and body.permission == "write":
        raise InvalidRequest(
            f"'{username}' is a viewer, and a viewer cannot hold write; grant read, or make "
            "the user an editor first."
        )
    services.identity.set_grant(user.id, collection, body.permission)
    audit(
        services.identity,
        audit_values("grant_set", outcome="success", principal=principal, target=username,
                     collection=collection, details={"permission": body.permission}),
    )
    return {"username": username, "collection": collection, "permission": body.permission}


@router.delete("/users/{username}/grants/{collection}", status_code=204)
def remove_grant(
    username: str, collection: str, services: ServicesDep, principal: PrincipalDep
) -> Response:
    principal.require_admin("remove grants")
    user = _get_user(services, username)
    if not services.identity.remove_grant(user.id, collection):
        raise NotFound(f"'{username}' holds no grant on collection '{collection[:80]}'.")
    audit(
        services.identity,
        audit_values("grant_remove", outcome="success", principal=principal, target=username,
                     collection=collection),
    )
    return Response(status_code=204)


# -- tokens --------------------------------------------------------------------------------


@router.get("/tokens")
def list_tokens(
    services: ServicesDep,
    principal: PrincipalDep,
    all: Annotated[bool, Query(description="Everyone's tokens (admin only).")] = False,  # noqa: A002
) -> dict[str, Any]:
    if all:
        principal.require_admin("list everyone's tokens")
    tokens = services.identity.tokens(None if all else principal.user_id)
    return {"tokens": [_token_json(t, with_username=all) for t in tokens]}


@router.post("/tokens", status_code=201)
def create_token(body: TokenCreate, services: ServicesDep, principal: PrincipalDep) -> dict[str, Any]:
    if principal.auth_method != "session":
        raise Forbidden(
            "API tokens are created from a browser session (log in), or by an operator with "
            "`querygpt-backend create-token`; not with another token."
        )
    name = body.name.strip()
    if not name or not name.isprintable():
        raise InvalidRequest("name must be 1-100 printable characters.")
    return issue_token(services, principal, name, body.expires_in_days)


def issue_token(services: Services, principal: Principal, name: str, days: int) -> dict[str, Any]:
    token = new_token()
    record = services.identity.create_token(principal.user_id, name, token.sha256, token.prefix, days)
    audit(
        services.identity,
        audit_values("token_create", outcome="success", principal=principal,
                     target=str(record.id),
                     details={"name": name, "prefix": record.prefix, "expires_in_days": days}),
    )
    return {
        "id": str(record.id),
        "name": record.name,
        "prefix": record.prefix,
        "expires_at": _iso(record.expires_at),
        "token": token.token,
    }


@router.delete("/tokens/{token_id}", status_code=204)
def revoke_token(token_id: str, services: ServicesDep, principal: PrincipalDep) -> Response:
    try:
        parsed = uuid.UUID(token_id)
    except ValueError:
        parsed = None
    record = services.identity.token(parsed) if parsed else None
    # Someone else's token is as unknown to a non-admin as a made-up id.
    if record is None or (record.user_id != principal.user_id and not principal.is_admin):
        raise NotFound(f"No token with id {token_id[:80]!r}; list yours with GET /tokens.")
    services.identity.revoke_token(record.id)
    audit(
        services.identity,
        audit_values("token_revoke", outcome="success", principal=principal,
                     target=str(record.id),
                     details={"owner": record.username, "prefix": record.prefix}),
    )
    return Response(status_code=204)


# -- collections, audit ----------------------------------------------------------------------


@router.post("/collections", status_code=201)
def create_collection(
    body: CollectionCreate, services: ServicesDep, principal: PrincipalDep
) -> dict[str, str]:
    principal.require_admin("create collections")
    _check_collection(body.name)
    if not services.identity.create_collection(body.name):
        raise Conflict(f"Collection '{body.name}' exists already.")
    audit(
        services.identity,
        audit_values("collection_create", outcome="success", principal=principal,
                     target=body.name, collection=body.name),
    )
    return {"name": body.name}


@router.get("/audit")
def audit_log(
    services: ServicesDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=AUDIT_MAX_LIMIT)] = 50,
    before: Annotated[int | None, Query(ge=1, description="Only events older than this id.")] = None,
) -> dict[str, Any]:
    principal.require_admin("read the audit log")
    events, next_before = services.identity.audit_events(limit, before)
    return {
        "events": [
            {
                "id": e.id,
                "at": _iso(e.at),
                "actor_username": e.actor_username,
                "actor_user_id": str(e.actor_user_id) if e.actor_user_id else None,
                "auth_method": e.auth_method,
                "action": e.action,
                "target": e.target,
                "collection": e.collection,
                "client_ip": e.client_ip,
                "outcome": e.outcome,
                "details": e.details,
            }
            for e in events
        ],
        "next_before": next_before,
    }


__all__ = ["router"]
