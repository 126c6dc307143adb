"""Access control (docs/access-control.md): who may call what, sessions and CSRF, API tokens,
login throttling, users and grants, the audit log, per-user limits and quotas, and the
create-admin / create-token commands."""

from __future__ import annotations

import io
import json
import math
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timezone
from pathlib import Path
from typing import Any

import pytest
from querygpt import cli
from querygpt.auth import INVALID_CREDENTIAL
from querygpt.limits import UserLimiter, UserPolicy
from querygpt_testkit import (
    DOCUMENTS_BUCKET,
    PASSWORD,
    UNKNOWN_TOKEN,
    bearer,
    ensure_user,
    issue_token,
    login,
    make_pdf,
    metric_value,
    session_headers,
    upload,
    wait_until,
)

OTHER_PDF = make_pdf([["Table invoices: one row per invoice.", "invoices.id INTEGER PRIMARY KEY"]])


@pytest.fixture
def settings(settings: Any) -> Any:
    """The global admission limits out of the way: these tests send many uploads at once
    (test_backend_limits.py tests those limits)."""
    from dataclasses import replace

    return replace(settings, upload_burst=1000, query_burst=1000)


def ask(client: Any, collection: str = "shop", **kwargs: Any) -> Any:
    return client.post("/query", json={"query": "Which customers?", "collection_name": collection}, **kwargs)


# -- the authorization matrix --------------------------------------------------------------

ROLES = ("anonymous", "viewer_without_grant", "viewer", "editor_without_write", "editor", "admin")

#: (method, path, body, expected status per ROLES). "{doc}" and "{token}" are filled in.
#: editor_without_write: an editor holding read on ``shop`` (and write on another collection).
MATRIX: list[tuple[str, str, Any, tuple[int, ...]]] = [
    ("GET", "/health", None, (200, 200, 200, 200, 200, 200)),
    ("GET", "/ready", None, (200, 200, 200, 200, 200, 200)),
    ("GET", "/metrics", None, (200, 200, 200, 200, 200, 200)),
    ("GET", "/auth/me", None, (401, 200, 200, 200, 200, 200)),
    ("POST", "/auth/logout", None, (401, 403, 403, 403, 403, 403)),  # a session's, not a token's
    ("GET", "/collections", None, (401, 200, 200, 200, 200, 200)),
    ("GET", "/collections/shop/documents", None, (401, 403, 200, 200, 200, 200)),
    ("GET", "/history", None, (401, 200, 200, 200, 200, 200)),
    ("POST", "/query", {"query": "Which customers?", "collection_name": "shop"},
     (401, 403, 200, 200, 200, 200)),
    ("POST", "/upload", "pdf", (401, 403, 403, 403, 200, 200)),
    ("DELETE", "/documents/{doc}", None, (401, 403, 403, 403, 200, 200)),
    ("POST", "/collections", {"name": "new_one"}, (401, 403, 403, 403, 403, 201)),
    ("GET", "/users", None, (401, 403, 403, 403, 403, 200)),
    ("POST", "/users", {"username": "carol", "password": PASSWORD, "role": "viewer"},
     (401, 403, 403, 403, 403, 201)),
    ("PATCH", "/users/viewer", {"storage_quota_bytes": 1000}, (401, 403, 403, 403, 403, 200)),
    ("PUT", "/users/nobody/grants/shop", {"permission": "read"}, (401, 403, 403, 403, 403, 200)),
    ("DELETE", "/users/viewer/grants/shop", None, (401, 403, 403, 403, 403, 204)),
    ("GET", "/tokens", None, (401, 200, 200, 200, 200, 200)),
    ("GET", "/tokens?all=true", None, (401, 403, 403, 403, 403, 200)),
    ("POST", "/tokens", {"name": "ci"}, (401, 403, 403, 403, 403, 403)),  # from a session only
    ("DELETE", "/tokens/{token}", None, (401, 404, 404, 404, 404, 204)),  # the admin's spare one
    ("GET", "/audit", None, (401, 403, 403, 403, 403, 200)),
]


@pytest.fixture
def world(client, as_user, schema_pdf) -> dict[str, Any]:
    """``shop`` with one document (uploaded by the admin), a client per role, a spare
    token of the admin's."""
    response = upload(client, schema_pdf, collection_name="shop")
    assert response.status_code == 200, response.text
    clients = {
        "anonymous": as_user(None),
        "viewer_without_grant": as_user("viewer", username="nobody"),
        "viewer": as_user("viewer", {"shop": "read"}),
        "editor_without_write": as_user(
            "editor", {"shop": "read", "elsewhere": "write"}, username="reader"
        ),
        "editor": as_user("editor", {"shop": "write"}),
        "admin": client,
    }
    issue_token(client.app, "admin")
    tokens = client.get("/tokens").json()["tokens"]
    return {
        "clients": clients,
        "doc": response.json()["document_id"],
        "token": tokens[0]["id"],
    }


@pytest.mark.parametrize(
    ("method", "path", "body", "statuses"),
    [pytest.param(*row, id=f"{row[0]} {row[1]}") for row in MATRIX],
)
def test_authorization_matrix(world, schema_pdf, method, path, body, statuses) -> None:
    """Each endpoint as every role, least privileged first; the mismatches are listed
    together. (One app per endpoint rather than per cell: the suite runs on two cores.)"""
    admin = world["clients"]["admin"]
    mismatches = []
    for role, expected in zip(ROLES, statuses, strict=True):
        client = world["clients"][role]
        doc = world["doc"]
        if "{doc}" in path:  # an earlier role may have deleted it: upload it again
            doc = upload(admin, schema_pdf, collection_name="shop").json()["document_id"]
        url = path.format(doc=doc, token=world["token"])
        if body == "pdf":
            response = upload(client, schema_pdf, collection_name="shop")
        elif body is None:
            response = client.request(method, url)
        else:
            response = client.request(method, url, json=body)
        if response.status_code != expected:
            mismatches.append(f"{role}: {response.status_code} (expected {expected}) {response.text[:200]}")
            continue
        if expected == 401 and response.headers.get("WWW-Authenticate") != "Bearer":
            mismatches.append(f"{role}: 401 without WWW-Authenticate: Bearer")
        if expected >= 400 and "detail" not in response.json():
            mismatches.append(f"{role}: {expected} without a detail")
    assert not mismatches, "\n".join(mismatches)


def test_a_403_names_what_is_missing(world) -> None:
    viewer = world["clients"]["viewer"]
    detail = upload(viewer, make_pdf(), collection_name="shop").json()["detail"]
    assert "write access to collection 'shop'" in detail
    # An editor with read on the collection (and write elsewhere) is told what it lacks.
    reader = world["clients"]["editor_without_write"]
    refused = upload(reader, make_pdf(), collection_name="shop")
    assert refused.status_code == 403
    assert refused.json()["detail"] == (
        "You need write access to collection 'shop' to upload to it; ask an admin for a grant."
    )
    refused = reader.delete(f"/documents/{world['doc']}")
    assert refused.status_code == 403
    assert refused.json()["detail"] == (
        "You need write access to collection 'shop' to delete its documents; ask an admin "
        "for a grant."
    )
    assert reader.get("/collections/shop/documents").status_code == 200  # its read grant
    detail = world["clients"]["viewer_without_grant"].get("/collections/shop/documents").json()["detail"]
    assert "no read access to collection 'shop'" in detail
    detail = world["clients"]["editor"].get("/users").json()["detail"]
    assert "Only an admin" in detail and "editor" in detail


def test_lists_are_filtered_by_grants(world, client, schema_pdf) -> None:
    assert upload(client, OTHER_PDF, collection_name="secret").status_code == 200
    names = lambda c: [x["name"] for x in c.get("/collections").json()["collections"]]  # noqa: E731
    assert names(client) == ["elsewhere", "secret", "shop"]  # "elsewhere": the reader's grant
    assert names(world["clients"]["viewer"]) == ["shop"]
    assert names(world["clients"]["editor_without_write"]) == ["elsewhere", "shop"]
    assert names(world["clients"]["viewer_without_grant"]) == []
    # History: a non-admin sees its own questions only, an admin everyone's.
    viewer, editor = world["clients"]["viewer"], world["clients"]["editor"]
    assert ask(viewer).status_code == 200 and ask(editor).status_code == 200
    assert ask(client, "secret").status_code == 200
    own = viewer.get("/history").json()["entries"]
    assert len(own) == 1 and own[0]["collection"] == "shop"
    assert len(client.get("/history").json()["entries"]) == 3
    assert [e["collection"] for e in client.get("/history?collection=secret").json()["entries"]] == ["secret"]
    assert editor.get("/history?collection=secret").json()["entries"] == []


def test_only_an_admin_upload_creates_a_collection(client, editor, schema_pdf) -> None:
    response = upload(editor, schema_pdf, collection_name="brand_new")
    assert response.status_code == 404
    assert "does not exist" in response.json()["detail"] and "brand_new" in response.json()["detail"]
    assert upload(client, schema_pdf, collection_name="brand_new").status_code == 200
    assert client.post("/collections", json={"name": "brand_new"}).status_code == 409
    assert client.post("/collections", json={"name": "bad name!"}).status_code == 422


# -- sessions and CSRF -------------------------------------------------------------------------


def test_login_sets_a_strict_cookie_and_returns_the_csrf_token(client, anonymous) -> None:
    ensure_user(client.app, "erin", "editor", {"shop": "write"})
    response = anonymous.post("/auth/login", json={"username": "erin", "password": PASSWORD})
    assert response.status_code == 200
    body = response.json()
    assert body["user"] == {"username": "erin", "role": "editor"}
    assert len(body["csrf_token"]) == 64
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("querygpt_session=")
    for attribute in ("Secure", "HttpOnly", "SameSite=strict", "Path=/api"):
        assert attribute.lower() in cookie.lower(), cookie
    value = cookie.split(";")[0].split("=", 1)[1]
    session_id, mac = value.split(".")
    # The database keeps only the SHA-256 of the id.
    import hashlib

    stored = _query(client, "SELECT id_sha256 FROM sessions")
    assert stored == [(hashlib.sha256(session_id.encode()).hexdigest(),)]
    me = anonymous.get("/auth/me", headers=session_headers(value)).json()
    assert me == {
        "username": "erin",
        "role": "editor",
        "grants": [{"collection": "shop", "permission": "write"}],
        "csrf_token": body["csrf_token"],
    }


def _query(client: Any, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    from sqlalchemy import text

    with client.app.state.services.database.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql), {f"p{i}": p for i, p in enumerate(params)})]


#: The tables a refused request must leave as they were.
UNCHANGED_TABLES = ("users", "grants", "sessions", "api_tokens")


def _snapshot(client: Any) -> dict[str, list[str]]:
    """Every row of UNCHANGED_TABLES as JSON, sorted: compared before and after a refusal."""
    return {
        table: sorted(row[0] for row in _query(client, f"SELECT row_to_json(t)::text FROM {table} t"))
        for table in UNCHANGED_TABLES
    }


def _audit_rows(client: Any) -> list[tuple[Any, ...]]:
    return _query(
        client, "SELECT action, outcome, actor_username, details FROM audit_events ORDER BY id"
    )


def test_csrf_is_required_for_cookie_writes_only(client, anonymous, schema_pdf) -> None:
    assert upload(client, schema_pdf, collection_name="shop").status_code == 200
    ensure_user(client.app, "erin", "editor", {"shop": "write"})
    cookie, csrf = login(anonymous, "erin")
    missing = ask(anonymous, headers=session_headers(cookie))
    assert missing.status_code == 403
    assert missing.json() == {"detail": "CSRF token missing or invalid"}
    wrong = ask(anonymous, headers=session_headers(cookie, "0" * 64))
    assert wrong.status_code == 403 and wrong.json()["detail"] == "CSRF token missing or invalid"
    assert ask(anonymous, headers=session_headers(cookie, csrf)).status_code == 200
    # GET needs none; a bearer request never does.
    assert anonymous.get("/collections", headers=session_headers(cookie)).status_code == 200
    token = issue_token(client.app, "erin")
    assert ask(anonymous, headers=bearer(token)).status_code == 200
    # The bearer wins when both are sent: no CSRF asked for.
    assert ask(anonymous, headers={**session_headers(cookie), **bearer(token)}).status_code == 200


def test_a_forged_cookie_is_401(client, anonymous) -> None:
    ensure_user(client.app, "erin", "viewer")
    cookie, _ = login(anonymous, "erin")
    session_id, mac = cookie.split(".")
    for forged in (f"{session_id}.{'0' * 64}", f"{uuid.uuid4().hex}.{mac}", session_id, "junk"):
        response = anonymous.get("/auth/me", headers=session_headers(forged))
        assert response.status_code == 401, forged
        assert response.headers["WWW-Authenticate"] == "Bearer"


def test_logout_ends_the_session(client, anonymous) -> None:
    ensure_user(client.app, "erin", "viewer")
    cookie, csrf = login(anonymous, "erin")
    assert anonymous.post("/auth/logout", headers=session_headers(cookie)).status_code == 403  # CSRF
    response = anonymous.post("/auth/logout", headers=session_headers(cookie, csrf))
    assert response.status_code == 204
    cleared = response.headers["set-cookie"]
    assert cleared.startswith("querygpt_session=") and "Max-Age=0" in cleared and "Path=/api" in cleared
    assert anonymous.get("/auth/me", headers=session_headers(cookie)).status_code == 401
    assert _query(client, "SELECT count(*) FROM sessions") == [(0,)]


def test_sessions_expire_when_idle_and_at_their_maximum(client, anonymous) -> None:
    ensure_user(client.app, "erin", "viewer")
    idle, _ = login(anonymous, "erin")
    old, _ = login(anonymous, "erin")
    assert anonymous.get("/auth/me", headers=session_headers(idle)).status_code == 200
    import hashlib

    digest = lambda c: hashlib.sha256(c.split(".")[0].encode()).hexdigest()  # noqa: E731
    _execute(client, "UPDATE sessions SET last_seen_at = now() - interval '9 hours' "
             "WHERE id_sha256 = :p0", digest(idle))
    _execute(client, "UPDATE sessions SET expires_at = now() - interval '1 second' "
             "WHERE id_sha256 = :p0", digest(old))
    for cookie in (idle, old):
        assert anonymous.get("/auth/me", headers=session_headers(cookie)).status_code == 401
    # The next login of the user deletes its expired sessions.
    fresh, _ = login(anonymous, "erin")
    assert _query(client, "SELECT id_sha256 FROM sessions") == [(digest(fresh),)]


def _execute(client: Any, sql: str, *params: Any) -> None:
    from sqlalchemy import text

    with client.app.state.services.database.engine.begin() as conn:
        conn.execute(text(sql), {f"p{i}": p for i, p in enumerate(params)})


def test_a_session_creates_tokens_shown_once(client, anonymous) -> None:
    ensure_user(client.app, "erin", "viewer", {"shop": "read"})
    cookie, csrf = login(anonymous, "erin")
    response = anonymous.post(
        "/tokens", json={"name": "ci", "expires_in_days": 7}, headers=session_headers(cookie, csrf)
    )
    assert response.status_code == 201
    created = response.json()
    token = created["token"]
    assert token.startswith("qgpt_") and len(token) == 48
    assert created["prefix"] == token[:12]
    me = anonymous.get("/auth/me", headers=bearer(token)).json()
    assert me["username"] == "erin" and me["csrf_token"] is None
    listed = anonymous.get("/tokens", headers=bearer(token)).json()["tokens"]
    assert [t["id"] for t in listed] == [created["id"]] and "token" not in listed[0]
    assert token not in json.dumps(listed)
    everyone = client.get("/tokens?all=true").json()["tokens"]
    assert {t["username"] for t in everyone} == {"admin", "erin"}
    # Out of range, refused.
    for days in (0, 366):
        bad = anonymous.post("/tokens", json={"name": "x", "expires_in_days": days},
                             headers=session_headers(cookie, csrf))
        assert bad.status_code == 422
    # Only SHA-256 is stored.
    import hashlib

    assert _query(client, "SELECT token_sha256 FROM api_tokens WHERE id = :p0", uuid.UUID(created["id"])) == [
        (hashlib.sha256(token.encode()).hexdigest(),)
    ]


# -- tokens: expiry, revocation, disabled users ----------------------------------------------


def test_expired_and_revoked_tokens_are_401_saying_which(client, as_user) -> None:
    """An expired and a revoked token each get their own 401; an unknown or malformed one the
    generic message. None of them changes a user, grant, session or token, nor writes an
    audit row."""
    viewer = as_user("viewer", {"shop": "read"})
    assert viewer.get("/auth/me").status_code == 200
    _execute(client, "UPDATE api_tokens SET expires_at = now() - interval '1 second' "
             "WHERE user_id = (SELECT id FROM users WHERE username = 'viewer')")
    [(expires_at,)] = _query(
        client, "SELECT expires_at FROM api_tokens t JOIN users u ON u.id = t.user_id "
        "WHERE u.username = 'viewer'"
    )
    before, audit_before = _snapshot(client), _audit_rows(client)
    response = viewer.get("/auth/me")
    assert response.status_code == 401 and response.headers["WWW-Authenticate"] == "Bearer"
    expired_on = expires_at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    assert response.json() == {
        "detail": f"This API token expired on {expired_on} UTC; create a new one (POST /tokens "
        "from a browser session)."
    }
    assert ask(viewer).status_code == 401
    assert _snapshot(client) == before and _audit_rows(client) == audit_before

    token = issue_token(client.app, "viewer")
    assert client.get("/auth/me", headers=bearer(token)).json()["username"] == "viewer"
    token_id = next(
        t["id"] for t in client.get("/tokens?all=true").json()["tokens"] if t["prefix"] == token[:12]
    )
    # Its owner revokes it (idempotent); anyone else sees no such token.
    other = as_user("editor")
    assert other.delete(f"/tokens/{token_id}").status_code == 404
    owner = {"headers": bearer(token)}
    assert client.request("DELETE", f"/tokens/{token_id}", **owner).status_code == 204
    before, audit_before = _snapshot(client), _audit_rows(client)
    revoked = client.get("/auth/me", headers=bearer(token))
    assert revoked.status_code == 401 and revoked.headers["WWW-Authenticate"] == "Bearer"
    assert revoked.json() == {
        "detail": "This API token was revoked; create a new one (POST /tokens from a browser "
        "session)."
    }
    assert client.delete(f"/tokens/{token_id}", **owner).status_code == 401
    assert _snapshot(client) == before and _audit_rows(client) == audit_before
    assert token not in revoked.text
    assert client.delete(f"/tokens/{token_id}").status_code == 204  # the admin, again: no-op
    missing = client.delete(f"/tokens/{uuid.uuid4()}")
    assert missing.status_code == 404 and "No token with id" in missing.json()["detail"]
    # Unknown and malformed: the generic message, which tells nothing about what exists.
    for bad in ("Bearer " + UNKNOWN_TOKEN, "Bearer nonsense", "Basic YWRtaW46YWRtaW4="):
        response = client.get("/auth/me", headers={"Authorization": bad})
        assert response.status_code == 401, bad
        assert response.json() == {"detail": INVALID_CREDENTIAL}, bad


def test_a_disabled_user_stops_at_once(client, anonymous, as_user) -> None:
    viewer = as_user("viewer", {"shop": "read"})
    cookie, _ = login(anonymous, "viewer")
    response = client.patch("/users/viewer", json={"disabled": True})
    assert response.status_code == 200 and response.json()["disabled"] is True
    refused = viewer.get("/auth/me")
    assert refused.status_code == 401
    # The generic message: a token does not learn that its user was disabled.
    assert refused.json() == {"detail": INVALID_CREDENTIAL}
    assert anonymous.get("/auth/me", headers=session_headers(cookie)).status_code == 401
    refused = anonymous.post("/auth/login", json={"username": "viewer", "password": PASSWORD})
    assert refused.status_code == 401 and refused.json()["detail"] == "Wrong username or password."
    assert client.patch("/users/viewer", json={"disabled": False}).status_code == 200
    assert viewer.get("/auth/me").status_code == 200


def test_role_and_grant_changes_apply_to_the_next_request(client, as_user, schema_pdf) -> None:
    assert upload(client, schema_pdf, collection_name="shop").status_code == 200
    viewer = as_user("viewer", {"shop": "read"})
    assert viewer.get("/collections/shop/documents").status_code == 200
    assert client.delete("/users/viewer/grants/shop").status_code == 204
    assert viewer.get("/collections/shop/documents").status_code == 403
    assert client.delete("/users/viewer/grants/shop").status_code == 404
    assert client.patch("/users/viewer", json={"role": "editor"}).status_code == 200
    assert client.put("/users/viewer/grants/shop", json={"permission": "write"}).status_code == 200
    assert upload(viewer, schema_pdf, collection_name="shop").status_code == 200
    # Back to viewer: refused while it holds write.
    refused = client.patch("/users/viewer", json={"role": "viewer"})
    assert refused.status_code == 422 and "shop" in refused.json()["detail"]


# -- login -----------------------------------------------------------------------------------


def test_wrong_password_and_unknown_user_get_one_message(client, anonymous) -> None:
    ensure_user(client.app, "erin", "viewer")
    before, audit_before = _snapshot(client), _audit_rows(client)
    wrong = anonymous.post("/auth/login", json={"username": "erin", "password": "not the password"})
    # Nothing changes (no session, no last_login_at) but the failure's own audit row.
    assert _snapshot(client) == before
    assert _audit_rows(client) == [
        *audit_before, ("login", "failure", "erin", {"reason": "wrong password"})
    ]
    unknown = anonymous.post("/auth/login", json={"username": "nobody", "password": PASSWORD})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() == {"detail": "Wrong username or password."}
    assert "set-cookie" not in wrong.headers and "set-cookie" not in unknown.headers
    assert _snapshot(client) == before
    assert _audit_rows(client) == [
        *audit_before,
        ("login", "failure", "erin", {"reason": "wrong password"}),
        ("login", "failure", "nobody", {"reason": "unknown user"}),
    ]


def test_login_is_throttled_per_username(client, anonymous, capsys) -> None:
    ensure_user(client.app, "erin", "viewer")
    capsys.readouterr()
    for _ in range(6):
        response = anonymous.post("/auth/login", json={"username": "erin", "password": "wrong" * 3})
        assert response.status_code == 401
    before = metric_value(client, "querygpt_logins_total", outcome="throttled")
    # The 7th attempt, even with the right password, is refused without checking it.
    throttled = anonymous.post("/auth/login", json={"username": "erin", "password": PASSWORD})
    assert throttled.status_code == 429
    assert 800 <= int(throttled.headers["Retry-After"]) <= 901
    assert "Too many failed logins" in throttled.json()["detail"]
    assert metric_value(client, "querygpt_logins_total", outcome="throttled") == before + 1
    # The throttled attempt is audited: its row and its journal line, after the six failures.
    expected = [("login", "failure")] * 6 + [("login", "throttled")]
    rows = _audit_rows(client)
    assert [(a, o) for a, o, _, _ in rows] == expected
    assert rows[-1] == ("login", "throttled", "erin", {})
    journal = _journal(capsys)
    assert [(e["action"], e["outcome"]) for e in journal] == expected
    assert journal[-1]["actor_username"] == "erin" and journal[-1]["audit_row"] == "written"
    assert PASSWORD not in json.dumps(journal)
    # Another user is not affected; once the failures are old enough, the user may log in.
    ensure_user(client.app, "fred", "viewer")
    assert anonymous.post("/auth/login", json={"username": "fred", "password": PASSWORD}).status_code == 200
    _execute(client, "UPDATE audit_events SET at = at - interval '16 minutes'")
    assert anonymous.post("/auth/login", json={"username": "erin", "password": PASSWORD}).status_code == 200


def test_login_is_throttled_per_client_address(client, anonymous) -> None:
    ensure_user(client.app, "erin", "viewer")
    edge = {"X-Real-IP": "203.0.113.9"}
    for n in range(21):
        response = anonymous.post(
            "/auth/login", json={"username": f"guess{n}", "password": "x" * 12}, headers=edge
        )
        assert response.status_code == 401
    throttled = anonymous.post(
        "/auth/login", json={"username": "erin", "password": PASSWORD}, headers=edge
    )
    assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) >= 1
    elsewhere = anonymous.post(
        "/auth/login", json={"username": "erin", "password": PASSWORD},
        headers={"X-Real-IP": "198.51.100.7"},
    )
    assert elsewhere.status_code == 200
    rows = _query(client, "SELECT DISTINCT client_ip FROM audit_events WHERE action = 'login'")
    assert set(rows) == {("203.0.113.9",), ("198.51.100.7",)}


# -- users and grants ------------------------------------------------------------------------


def test_user_and_grant_validation(client) -> None:
    client.post("/collections", json={"name": "shop"})
    created = client.post("/users", json={"username": "dana.k-1", "password": PASSWORD, "role": "viewer"})
    assert created.status_code == 201
    assert created.json()["username"] == "dana.k-1" and created.json()["grants"] == []
    taken = client.post("/users", json={"username": "dana.k-1", "password": PASSWORD, "role": "viewer"})
    assert taken.status_code == 409
    for body, word in (
        ({"username": "ok_name", "password": "short", "role": "viewer"}, "password"),
        ({"username": "ok_name", "password": "x" * 1025, "role": "viewer"}, "password"),
        ({"username": "Bad Name", "password": PASSWORD, "role": "viewer"}, "username"),
        ({"username": "ab", "password": PASSWORD, "role": "viewer"}, "username"),
        ({"username": "_x_y", "password": PASSWORD, "role": "viewer"}, "username"),
        ({"username": "ok_name", "password": PASSWORD, "role": "root"}, "role"),
    ):
        response = client.post("/users", json=body)
        assert response.status_code == 422, body
        assert word in response.json()["detail"]
    assert client.patch("/users/dana.k-1", json={"password": "too-short"}).status_code == 422
    assert client.patch("/users/ghost", json={"disabled": True}).status_code == 404

    # Refused grants change nothing, and write no audit row.
    before, audit_before = _snapshot(client), _audit_rows(client)
    unknown_user = client.put("/users/ghost/grants/shop", json={"permission": "read"})
    assert unknown_user.status_code == 404 and "ghost" in unknown_user.json()["detail"]
    unknown_collection = client.put("/users/dana.k-1/grants/nowhere", json={"permission": "read"})
    assert unknown_collection.status_code == 404 and "nowhere" in unknown_collection.json()["detail"]
    viewer_write = client.put("/users/dana.k-1/grants/shop", json={"permission": "write"})
    assert viewer_write.status_code == 422 and "viewer" in viewer_write.json()["detail"]
    bad_permission = client.put("/users/dana.k-1/grants/shop", json={"permission": "admin"})
    assert bad_permission.status_code == 422
    assert _snapshot(client) == before and _audit_rows(client) == audit_before
    granted = client.put("/users/dana.k-1/grants/shop", json={"permission": "read"})
    assert granted.json() == {"username": "dana.k-1", "collection": "shop", "permission": "read"}
    users = {u["username"]: u for u in client.get("/users").json()["users"]}
    assert users["dana.k-1"]["grants"] == [{"collection": "shop", "permission": "read"}]
    assert set(users["dana.k-1"]) == {
        "username", "role", "disabled", "created_at", "last_login_at", "storage_quota_bytes",
        "storage_used_bytes", "grants",
    }
    assert "password" not in json.dumps(client.get("/users").json())


def test_passwords_are_stored_as_argon2id(client) -> None:
    assert client.post(
        "/users", json={"username": "dana", "password": PASSWORD, "role": "viewer"}
    ).status_code == 201
    new_password = PASSWORD + " again"
    [(first,)] = _query(client, "SELECT password_hash FROM users WHERE username = 'dana'")
    assert client.patch("/users/dana", json={"password": new_password}).status_code == 200
    [(second,)] = _query(client, "SELECT password_hash FROM users WHERE username = 'dana'")
    for stored, password in ((first, PASSWORD), (second, new_password)):
        assert stored.startswith("$argon2id$"), stored[:20]
        assert stored != password and password not in stored
    assert first != second


# -- the audit log ---------------------------------------------------------------------------


def _journal(capsys: Any) -> list[dict[str, Any]]:
    lines = []
    for line in capsys.readouterr().out.splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("logger") == "querygpt.audit":
                lines.append(entry)
    return lines


def test_audit_rows_and_journal_lines_never_carry_secrets(client, anonymous, schema_pdf, capsys) -> None:
    capsys.readouterr()
    assert anonymous.post("/auth/login", json={"username": "admin", "password": "Wrong-password-1"}).status_code == 401
    ensure_user(client.app, "erin", "editor")
    # ensure_user's password is PASSWORD; give the admin one to log in with.
    admin_password = "admin password " + uuid.uuid4().hex
    assert client.patch("/users/admin", json={"password": admin_password}).status_code == 200
    cookie, csrf = login(anonymous, "admin", admin_password)
    token = anonymous.post("/tokens", json={"name": "nightly"},
                           headers=session_headers(cookie, csrf)).json()["token"]
    doc = upload(client, schema_pdf, collection_name="shop").json()
    assert client.put("/users/erin/grants/shop", json={"permission": "write"}).status_code == 200
    assert client.delete(f"/documents/{doc['document_id']}").status_code == 200

    rows = _query(
        client,
        "SELECT action, outcome, actor_username, auth_method, target, collection FROM audit_events ORDER BY id",
    )
    summary = [(a, o, u, m) for a, o, u, m, _, _ in rows]
    assert summary == [
        ("login", "failure", "admin", "password"),
        ("user_update", "success", "admin", "token"),
        ("login", "success", "admin", "password"),
        ("token_create", "success", "admin", "session"),
        ("upload", "success", "admin", "token"),
        ("grant_set", "success", "admin", "token"),
        ("document_delete", "success", "admin", "token"),
    ]
    assert rows[4][4] == doc["document_id"] and rows[4][5] == "shop"
    assert rows[5][4] == "erin" and rows[5][5] == "shop"
    everything = json.dumps(_query(client, "SELECT row_to_json(a) FROM audit_events a"), default=str)
    journal = _journal(capsys)
    assert [(e["action"], e["outcome"]) for e in journal] == [(a, o) for a, o, _, _ in summary]
    assert all(e["audit_row"] == "written" for e in journal)
    assert journal[0]["client_ip"] == "testclient" and journal[0]["actor_username"] == "admin"
    text = everything + json.dumps(journal)
    for secret in (admin_password, "Wrong-password-1", token, cookie, cookie.split(".")[0], csrf):
        assert secret not in text
    # GET /audit: newest first, paged.
    page = client.get("/audit?limit=4").json()
    assert [e["action"] for e in page["events"]] == [
        "document_delete", "grant_set", "upload", "token_create"
    ]
    rest = client.get(f"/audit?limit=4&before={page['next_before']}").json()
    assert [e["action"] for e in rest["events"]] == ["login", "user_update", "login"]
    assert rest["next_before"] is None


def test_removing_a_grant_and_revoking_a_token_are_audited(client, as_user, capsys) -> None:
    as_user("viewer", {"shop": "read"})
    [token] = [t for t in client.get("/tokens?all=true").json()["tokens"] if t["username"] == "viewer"]
    capsys.readouterr()
    assert client.delete("/users/viewer/grants/shop").status_code == 204
    assert client.delete(f"/tokens/{token['id']}").status_code == 204
    rows = _query(
        client,
        "SELECT action, outcome, actor_username, auth_method, target, collection, details "
        "FROM audit_events ORDER BY id",
    )
    assert rows == [
        ("grant_remove", "success", "admin", "token", "viewer", "shop", {}),
        ("token_revoke", "success", "admin", "token", token["id"], None,
         {"owner": "viewer", "prefix": token["prefix"]}),
    ]
    journal = _journal(capsys)
    assert [(e["action"], e["outcome"], e["target"], e["collection"], e["audit_row"])
            for e in journal] == [
        ("grant_remove", "success", "viewer", "shop", "written"),
        ("token_revoke", "success", token["id"], None, "written"),
    ]
    assert journal[1]["details"] == {"owner": "viewer", "prefix": token["prefix"]}
    # A removal refused (no such grant) writes nothing.
    assert client.delete("/users/viewer/grants/shop").status_code == 404
    assert len(_query(client, "SELECT id FROM audit_events")) == 2 and _journal(capsys) == []


def test_a_login_whose_audit_row_fails_is_not_granted(client, anonymous, monkeypatch) -> None:
    from querygpt.errors import UpstreamUnavailable

    ensure_user(client.app, "erin", "viewer")
    identity = client.app.state.services.identity

    def broken(*args: Any, **kwargs: Any) -> None:
        raise UpstreamUnavailable("postgresql", "The database is unreachable; could not write.")

    monkeypatch.setattr(identity, "create_session", broken)
    monkeypatch.setattr(identity, "write_audit", broken)
    ok = anonymous.post("/auth/login", json={"username": "erin", "password": PASSWORD})
    assert ok.status_code == 503 and "set-cookie" not in ok.headers
    assert _query(client, "SELECT count(*) FROM sessions") == [(0,)]


def test_an_upload_whose_audit_row_fails_still_succeeds_and_is_counted(
    client, schema_pdf, monkeypatch, capsys
) -> None:
    from querygpt.errors import UpstreamUnavailable

    identity = client.app.state.services.identity

    def broken(*args: Any, **kwargs: Any) -> None:
        raise UpstreamUnavailable("postgresql", "The database is unreachable; could not write.")

    before = metric_value(client, "querygpt_audit_write_failures_total", action="upload")
    monkeypatch.setattr(identity, "write_audit", broken)
    assert upload(client, schema_pdf, collection_name="shop").status_code == 200
    assert metric_value(client, "querygpt_audit_write_failures_total", action="upload") == before + 1
    journal = _journal(capsys)
    assert [(e["action"], e["audit_row"]) for e in journal] == [("upload", "failed")]


# -- per-user limits and the storage quota -----------------------------------------------------


def test_the_storage_quota_is_per_user_and_counts_replacements(make_client, as_user, schema_pdf) -> None:
    quota = len(schema_pdf) + 100
    client = make_client(user_storage_quota_bytes=quota)
    assert upload(client, schema_pdf, collection_name="shop").status_code == 200
    # A replacing upload of the same file counts the difference (0 here).
    assert upload(client, schema_pdf, collection_name="shop").status_code == 200
    over = upload(client, OTHER_PDF, "other.pdf", collection_name="shop")
    assert over.status_code == 413
    assert f"storage quota of {quota} bytes" in over.json()["detail"]
    assert "QUERYGPT_USER_STORAGE_QUOTA_BYTES" in over.json()["detail"]
    # Per user: another user has its own; an admin may raise one user's.
    ensure_user(client.app, "erin", "editor", {"shop": "write"})
    erin = make_client(anonymous=True, user_storage_quota_bytes=quota)
    erin.headers.update(bearer(issue_token(client.app, "erin")))
    assert upload(erin, OTHER_PDF, "other.pdf", collection_name="shop").status_code == 200
    assert client.patch("/users/admin", json={"storage_quota_bytes": 10 * quota}).status_code == 200
    assert upload(client, OTHER_PDF, "third.pdf", collection_name="shop").status_code == 200
    used = {u["username"]: u["storage_used_bytes"] for u in client.get("/users").json()["users"]}
    assert used == {"admin": len(schema_pdf) + len(OTHER_PDF), "erin": len(OTHER_PDF)}


def test_the_per_user_query_rate_is_429_with_retry_after(make_client, schema_pdf) -> None:
    client = make_client(user_query_rate_per_minute=2)
    assert upload(client, schema_pdf, collection_name="shop").status_code == 200
    ensure_user(client.app, "erin", "viewer", {"shop": "read"})
    before = metric_value(client, "querygpt_requests_rejected_total", endpoint="query", reason="user_rate")
    assert [ask(client).status_code for _ in range(3)] == [200, 200, 429]
    refused = ask(client)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert "QUERYGPT_USER_QUERY_RATE_PER_MINUTE" in refused.json()["detail"]
    assert metric_value(client, "querygpt_requests_rejected_total", endpoint="query", reason="user_rate") == before + 2
    # Another user has its own bucket.
    assert ask(client, headers=bearer(issue_token(client.app, "erin"))).status_code == 200


def test_the_per_user_upload_rate_is_429_with_retry_after(make_client, schema_pdf) -> None:
    client = make_client(user_upload_rate_per_minute=2)
    ensure_user(client.app, "erin", "editor", {"shop": "write"})
    before = metric_value(client, "querygpt_requests_rejected_total", endpoint="upload", reason="user_rate")
    assert [upload(client, schema_pdf, collection_name="shop").status_code for _ in range(2)] == [200, 200]
    refused = upload(client, OTHER_PDF, "other.pdf", collection_name="shop")
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["reason"] == "user_rate"
    assert "QUERYGPT_USER_UPLOAD_RATE_PER_MINUTE" in refused.json()["detail"]
    assert metric_value(client, "querygpt_requests_rejected_total", endpoint="upload", reason="user_rate") == before + 1
    # Nothing of the refused upload was kept.
    assert _query(client, "SELECT filename FROM documents") == [("schema.pdf",)]
    # Another user has its own bucket.
    erin = bearer(issue_token(client.app, "erin"))
    assert upload(client, OTHER_PDF, "other.pdf", collection_name="shop", headers=erin).status_code == 200


def test_the_per_user_query_concurrency_cap_leaves_other_users_served(
    make_client, fake_ollama, schema_pdf
) -> None:
    # Two generation slots: the other user's answer need not wait for the held one.
    client = make_client(user_max_concurrent_queries=1, gpu_concurrency=2)
    assert upload(client, schema_pdf, collection_name="shop").status_code == 200
    ensure_user(client.app, "erin", "viewer", {"shop": "read"})
    erin = bearer(issue_token(client.app, "erin"))
    before = metric_value(
        client, "querygpt_requests_rejected_total", endpoint="query", reason="user_concurrency"
    )
    fake_ollama.delays = {"/api/chat": math.inf}  # the admin's answer waits for release
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(ask, client)
        wait_until(lambda: "/api/chat" in fake_ollama.timeouts)
        refused = ask(client)
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
        assert refused.json()["reason"] == "user_concurrency"
        assert "QUERYGPT_USER_MAX_CONCURRENT_QUERIES" in refused.json()["detail"]
        fake_ollama.delays = {}  # only the held call keeps waiting
        assert ask(client, headers=erin).status_code == 200
        assert not held.done(), "erin was served while the admin's query was in progress"
        fake_ollama.release.set()
        assert held.result(timeout=30).status_code == 200
    assert metric_value(
        client, "querygpt_requests_rejected_total", endpoint="query", reason="user_concurrency"
    ) == before + 1
    assert ask(client).status_code == 200  # its place was given back


def test_the_per_user_concurrency_cap() -> None:
    limiter = UserLimiter(UserPolicy("upload", 600, 1, "RATE", "QUERYGPT_USER_MAX_CONCURRENT_UPLOADS"))
    assert limiter.admit("alice") is None
    refused = limiter.admit("alice")
    assert refused is not None and refused.reason == "user_concurrency"
    assert "QUERYGPT_USER_MAX_CONCURRENT_UPLOADS" in refused.detail
    assert limiter.admit("bob") is None  # per user
    limiter.release("alice", 0.1)
    assert limiter.admit("alice") is None


# -- the command line ----------------------------------------------------------------------


@pytest.fixture
def service_env(database, monkeypatch) -> dict[str, str]:
    """The service's variables in the process environment, as on a host (the test database)."""
    for name in list(os.environ):
        if name.startswith("QUERYGPT_"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(cli, "DEFAULT_ENV_FILE", Path("/nonexistent/backend.env"))
    env = {"QUERYGPT_DOCUMENTS_BUCKET": DOCUMENTS_BUCKET, **database.environ()}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def run_cli(monkeypatch: Any, capsys: Any, args: list[str], stdin: str = "") -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = cli.main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_create_admin_and_token_then_use_it(service_env, database, make_client, monkeypatch, capsys) -> None:
    password = "a long enough admin password"
    code, out, err = run_cli(monkeypatch, capsys, ["create-admin", "--username", "ops"], password + "\n")
    assert code == 0, err
    assert "created admin ops" in err and password not in out + err
    code, token, err = run_cli(
        monkeypatch, capsys,
        ["create-token", "--username", "ops", "--name", "automation", "--expires-in-days", "30"],
    )
    assert code == 0, err
    token = token.strip()
    assert token.startswith("qgpt_") and len(token) == 48 and token not in err

    client = make_client(anonymous=True)
    me = client.get("/auth/me", headers=bearer(token)).json()
    assert me["username"] == "ops" and me["role"] == "admin"
    login = client.post("/auth/login", json={"username": "ops", "password": password})
    assert login.status_code == 200
    rows = database.query("SELECT actor_username, auth_method, action, target FROM audit_events ORDER BY id")
    assert rows[:2] == [("cli", "cli", "user_create", "ops"), ("cli", "cli", "token_create", rows[1][3])]
    text = json.dumps(database.query("SELECT row_to_json(a) FROM audit_events a"), default=str)
    assert password not in text and token not in text

    # An existing user: made an admin with the new password, enabled again.
    ensure_user(client.app, "erin", "viewer")
    assert client.patch("/users/erin", json={"disabled": True}, headers=bearer(token)).status_code == 200
    code, _, err = run_cli(monkeypatch, capsys, ["create-admin", "--username", "erin"], "erins new password\n")
    assert code == 0 and "updated admin erin" in err
    assert client.post("/auth/login", json={"username": "erin", "password": "erins new password"}).json()["user"] == {
        "username": "erin", "role": "admin"
    }


def test_create_admin_refuses_a_weak_password_and_bad_input(service_env, monkeypatch, capsys) -> None:
    code, _, err = run_cli(monkeypatch, capsys, ["create-admin", "--username", "ops"], "short\n")
    assert code == 2 and "refused" in err and "12-1024 characters" in err
    code, _, err = run_cli(monkeypatch, capsys, ["create-admin", "--username", "Bad Name"], "x" * 20 + "\n")
    assert code == 2 and "username" in err
    code, out, err = run_cli(monkeypatch, capsys, ["create-token", "--username", "ghost", "--name", "x"])
    assert code == 3 and "does not exist" in err and out == ""
    code, _, err = run_cli(
        monkeypatch, capsys, ["create-token", "--username", "ops", "--name", "x", "--expires-in-days", "400"]
    )
    assert code == 2 and "--expires-in-days" in err
    assert "create-admin" in cli.USAGE and "create-token" in cli.USAGE


def test_a_database_outage_admits_only_credentials_validated_lately(client, as_user, monkeypatch) -> None:
    """A failover leaves no primary for a minute or two: a token this process validated in the
    grace period still works (as it was then), one it never saw is a 503, and after the grace
    period the remembered one is a 503 too; a revocation seen before the outage still holds."""
    from querygpt import auth
    from querygpt.errors import UpstreamUnavailable

    viewer = as_user("viewer", {"shop": "read"})
    stranger = as_user("editor", {"shop": "write"}, username="stranger")
    revoked = as_user("viewer", {"shop": "read"}, username="revoked")
    assert client.get("/auth/me").status_code == 200
    assert viewer.get("/auth/me").status_code == 200
    assert revoked.get("/auth/me").status_code == 200
    revoked_id = next(t["id"] for t in client.get("/tokens?all=true").json()["tokens"] if t["username"] == "revoked")
    assert client.delete(f"/tokens/{revoked_id}").status_code == 204
    assert revoked.get("/auth/me").status_code == 401  # seen revoked, remembered so
    before = metric_value(client, "querygpt_credentials_from_memory_total", kind="token")

    def unreachable(*args: Any, **kwargs: Any) -> None:
        raise UpstreamUnavailable("postgresql", "The database is unreachable.")

    identity = client.app.state.services.identity
    monkeypatch.setattr(identity, "token_credential", unreachable)
    monkeypatch.setattr(identity, "touch_token", unreachable)
    me = viewer.get("/auth/me")
    assert me.status_code == 200 and me.json()["grants"] == [{"collection": "shop", "permission": "read"}], me.text
    assert viewer.post("/collections", json={"name": "nope"}).status_code == 403  # still a viewer
    assert stranger.get("/auth/me").status_code == 503
    assert revoked.get("/auth/me").status_code == 401
    assert metric_value(client, "querygpt_credentials_from_memory_total", kind="token") == before + 2
    monkeypatch.setattr(auth.RECENT, "grace_seconds", 0.0)
    assert viewer.get("/auth/me").status_code == 503


def test_a_new_password_ends_the_users_sessions_but_not_its_tokens(client, anonymous, as_user) -> None:
    token_client = as_user("viewer", {"shop": "read"}, username="gina")
    assert client.patch("/users/gina", json={"password": PASSWORD}).status_code == 200
    cookie, csrf = login(anonymous, "gina")
    assert anonymous.get("/auth/me", headers=session_headers(cookie, csrf)).status_code == 200
    assert client.patch("/users/gina", json={"password": PASSWORD + "-new"}).status_code == 200
    assert anonymous.get("/auth/me", headers=session_headers(cookie, csrf)).status_code == 401
    assert token_client.get("/auth/me").status_code == 200


def test_without_a_primary_credentials_are_read_from_a_standby(client, as_user, monkeypatch) -> None:
    """A failover: the primary's reads fail, a standby answers (here the test server itself, which
    prefer-standby accepts when no standby exists). A token no process has seen yet is admitted,
    with its current grants, and its use is not written (there is no primary to write to)."""
    from contextlib import contextmanager

    from querygpt.errors import UpstreamUnavailable

    fresh = as_user("viewer", {"shop": "read"}, username="hana")  # never used: not remembered
    other = as_user("viewer", {"shop": "read"}, username="ines")
    database = client.app.state.services.identity.db
    assert database.standby_engine is not None

    @contextmanager
    def no_primary(action: str) -> Any:
        raise UpstreamUnavailable("postgresql", f"The database is unreachable; could not {action}.")
        yield  # pragma: no cover

    def no_writes(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a credential read from a standby must not be written back")

    monkeypatch.setattr(database, "_session", no_primary)
    identity = client.app.state.services.identity
    monkeypatch.setattr(identity, "touch_token", no_writes)
    me = fresh.get("/auth/me")
    assert me.status_code == 200, me.text
    assert me.json()["grants"] == [{"collection": "shop", "permission": "read"}]
    # and with no server at all, an unseen credential is a 503
    monkeypatch.setattr(database, "standby_session", no_primary)
    assert other.get("/auth/me").status_code == 503


def test_a_refused_write_is_audited_as_denied(client, as_user, schema_pdf, capsys) -> None:
    """An authenticated user's refused attempt at an audited action is itself an audit event:
    a row and a journal line, outcome "denied", with the 403's reason; a refusal before anyone
    is known (no credentials) and a read refused are not."""
    assert upload(client, schema_pdf, collection_name="shop").status_code == 200
    viewer = as_user("viewer", {"shop": "read"})
    before = len(_audit_rows(client))
    capsys.readouterr()
    refused_upload = upload(viewer, schema_pdf, collection_name="shop")
    refused_grant = viewer.put("/users/viewer/grants/shop", json={"permission": "write"})
    assert (refused_upload.status_code, refused_grant.status_code) == (403, 403)
    assert as_user(None).put("/users/viewer/grants/shop", json={"permission": "write"}).status_code == 401
    assert viewer.get("/audit").status_code == 403  # a read: not an audited action
    rows = _audit_rows(client)[before:]
    assert rows == [
        ("upload", "denied", "viewer", {"reason": refused_upload.json()["detail"]}),
        ("grant_set", "denied", "viewer", {"reason": refused_grant.json()["detail"]}),
    ]
    journal = _journal(capsys)
    assert [(e["action"], e["outcome"], e["actor_username"], e["collection"], e["audit_row"]) for e in journal] == [
        ("upload", "denied", "viewer", None, "written"),
        ("grant_set", "denied", "viewer", "shop", "written"),
    ]
