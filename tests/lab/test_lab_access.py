"""Identity through the edge (docs/access-control.md), on the lab, as clients meet it: curl on
an edge to its nginx over TLS (conftest.py, `edge_api`), the lab-tests admin's API token made
with the backend's CLI (`lab_identity`).

- anonymous calls get a JSON 401 on every public API path but /api/health; the token gets 200;
  a viewer without a grant gets 403, and gets past authorization once granted read;
- a browser session: a Secure, HttpOnly, SameSite=Strict cookie; a cookie write needs
  X-CSRF-Token; logout ends it;
- a revoked token gets 401;
- wrong passwords for one user: the sixth (or seventh) is answered 429 with Retry-After;
- a failed login is in the backend's journal (logger querygpt.audit) without the password;
- the internal endpoints stay internal, even with a token;
- the WAF lets a strong password with quotes and semicolons log in, and a question full of SQL
  through.

Every request is bounded (curl --max-time); a question waits for the Ollama stand-in. Users made
here have unique names (lab-*-<hex>): a second run meets none of the first's. The failed logins
come from a loopback address of their own each run (curl --interface), so the per-address
throttle (20 failures in 15 minutes) never counts an earlier run's.
"""

from __future__ import annotations

import json
import random
import secrets
import shlex
import subprocess
import time
import uuid

import pytest
from reportlab.lib.pagesizes import A4
from reportlab.pdfgen import canvas

from labview import AUTH_HEADER_DIR, TOKEN_FORMAT, create_token

QUICK = 20  # seconds: every call but an upload or a question
SLOW = 120  # an upload (embedding) or a question (the stand-in model)
QUESTION = "Which customers placed the most orders?"


def fresh_source() -> str:
    """A loopback address no earlier run used as a client address (one of 16 million)."""
    return f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def strong_password() -> str:
    return "Lab-" + secrets.token_urlsafe(18)


def is_json_error(response, status: int) -> bool:
    return (response.status == status and response.headers.get("content-type", "").startswith("application/json")
            and isinstance(response.body, dict) and bool(response.body.get("detail")))


def set_cookie_attributes(header: str, name: str) -> set[str]:
    """The attributes (lower case, `path=...` with its value) of the Set-Cookie line of `name`."""
    for line in header.split("\n"):
        if line.strip().startswith(f"{name}="):
            return {part.strip().lower() for part in line.split(";")[1:]}
    names = [line.split("=", 1)[0] for line in header.split("\n")]
    raise AssertionError(f"no Set-Cookie for {name}; cookies set: {names}")


@pytest.fixture(scope="module")
def default_collection(lab, edge_api) -> str:
    """The backend's default collection, existing (an admin creates it if no upload did)."""
    read = lab.exec(lab.groups["backend"][0], "sed -n 's/^QUERYGPT_DEFAULT_COLLECTION=//p' /etc/querygpt/backend.env")
    name = read.stdout.strip()
    assert read.returncode == 0 and name, read.stderr
    status, body = edge_api("POST", "/collections", *edge_api.json_body({"name": name}), timeout=QUICK)
    assert status in (201, 409), (status, body)
    return name


@pytest.fixture(scope="module")
def documented(lab, edge_api, tmp_path_factory) -> dict:
    """A collection of this module with the schema document, uploaded with the token; the PDF
    stays on the edge for more uploads."""
    collection = unique("lab_access").replace("-", "_")
    path = tmp_path_factory.mktemp("pdf") / "access-schema.pdf"
    pdf = canvas.Canvas(str(path), pagesize=A4)
    for i, line in enumerate(["CREATE TABLE customers (customer_id INT PRIMARY KEY, name TEXT);",
                              "CREATE TABLE orders (order_id INT PRIMARY KEY, customer_id INT REFERENCES customers);"]):
        pdf.drawString(40, 800 - 18 * i, line)
    pdf.save()
    on_edge = "/var/tmp/lab-access-schema.pdf"
    subprocess.run(["docker", "cp", str(path), f"{lab.name(edge_api.edge)}:{on_edge}"], check=True)
    status, body = edge_api("POST", "/upload", f"-F 'pdf_file=@{on_edge};type=application/pdf'",
                            f"-F collection_name={collection}", timeout=SLOW)
    assert status == 200 and body["chunks"] > 0, (status, body)
    return {"collection": collection, "pdf": on_edge}


def login(edge_api, username: str, password: str, jar: str, source: str = ""):
    """POST /api/auth/login, the cookie kept in `jar` on the edge; the response."""
    return edge_api.response("POST", "/auth/login", f"-b {jar} -c {jar}",
                             *edge_api.json_body({"username": username, "password": password}),
                             auth=None, timeout=QUICK, source=source)


def create_user(edge_api, role: str = "viewer", password: str = "") -> tuple[str, str]:
    """A new user made by the admin through the API: (username, password)."""
    username, password = unique(f"lab-{role}"), password or strong_password()
    status, body = edge_api("POST", "/users", *edge_api.json_body(
        {"username": username, "password": password, "role": role}), timeout=QUICK)
    assert status == 201 and body["username"] == username, (status, body)
    return username, password


def disable(edge_api, username: str) -> None:
    status, body = edge_api("PATCH", f"/users/{username}", *edge_api.json_body({"disabled": True}), timeout=QUICK)
    assert status == 200, (status, body)


# --- (a) the authorization matrix ------------------------------------------------------------

ANONYMOUS = [  # (method, path, body: JSON, "upload" or None) of every public API path but /health
    ("GET", "/collections", None),
    ("GET", "/collections/querygpt/documents", None),
    ("GET", "/history", None),
    ("POST", "/query", {"query": QUESTION}),
    ("POST", "/upload", "upload"),
    ("DELETE", f"/documents/{uuid.UUID(int=1)}", None),
    ("POST", "/collections", {"name": "lab_anonymous"}),
    ("GET", "/auth/me", None),
    ("POST", "/auth/logout", None),
    ("GET", "/users", None),
    ("POST", "/users", {"username": "lab-anonymous", "password": "Anonymous-password-1", "role": "viewer"}),
    ("PATCH", "/users/lab-anonymous", {"disabled": True}),
    ("PUT", "/users/lab-anonymous/grants/querygpt", {"permission": "read"}),
    ("DELETE", "/users/lab-anonymous/grants/querygpt", None),
    ("GET", "/tokens", None),
    ("POST", "/tokens", {"name": "anonymous", "expires_in_days": 1}),
    ("DELETE", f"/tokens/{uuid.UUID(int=1)}", None),
    ("GET", "/audit", None),
]


def test_anonymous_calls_get_a_json_401_on_every_api_path_but_health(lab, edge_api):
    health = edge_api.response("GET", "/health", auth=None, timeout=QUICK)
    assert health.status == 200 and health.body["status"] == "ok", health
    tiny = f"{AUTH_HEADER_DIR}/anonymous.pdf"
    made = lab.exec(edge_api.edge, f"mkdir -p {AUTH_HEADER_DIR} && printf '%%PDF-1.4\\n%%%%EOF\\n' > {tiny}")
    assert made.returncode == 0, made.stderr
    refused = {}
    for method, path, body in ANONYMOUS:
        if body == "upload":
            args: tuple[str, ...] = (f"-F 'pdf_file=@{tiny};type=application/pdf'", "-F collection_name=lab_anonymous")
        else:
            args = edge_api.json_body(body) if body is not None else ()
        response = edge_api.response(method, path, *args, auth=None, timeout=QUICK)
        challenge = response.headers.get("www-authenticate", "")
        if not (is_json_error(response, 401) and challenge.lower().startswith("bearer")):
            refused[f"{method} {path}"] = (response.status, response.headers.get("www-authenticate"), response.body)
    assert not refused, f"not a JSON 401 with WWW-Authenticate: Bearer: {refused}"


def test_the_token_gets_200_on_every_api_path(edge_api, documented):
    collection = documented["collection"]
    status, me = edge_api("GET", "/auth/me", timeout=QUICK)
    assert status == 200 and me["username"] == "lab-tests" and me["role"] == "admin" and me["csrf_token"] is None, me
    status, uploaded = edge_api("POST", "/upload", f"-F 'pdf_file=@{documented['pdf']};filename=extra.pdf;"
                                "type=application/pdf'", f"-F collection_name={collection}", timeout=SLOW)
    assert status == 200, uploaded
    answers = {
        "GET /collections": edge_api("GET", "/collections", timeout=QUICK),
        "GET /collections/c/documents": edge_api("GET", f"/collections/{collection}/documents", timeout=QUICK),
        "GET /history": edge_api("GET", f"/history?collection={collection}", timeout=QUICK),
        "POST /query": edge_api("POST", "/query", *edge_api.json_body(
            {"query": QUESTION, "collection_name": collection}), timeout=SLOW),
        "GET /tokens": edge_api("GET", "/tokens", timeout=QUICK),
        "GET /users": edge_api("GET", "/users", timeout=QUICK),
        "GET /audit": edge_api("GET", "/audit?limit=5", timeout=QUICK),
        "DELETE /documents/id": edge_api("DELETE", f"/documents/{uploaded['document_id']}", timeout=SLOW),
    }
    assert {what: status for what, (status, _) in answers.items()} == {what: 200 for what in answers}, answers
    assert collection in [c["name"] for c in answers["GET /collections"][1]["collections"]]
    assert answers["POST /query"][1]["sources"], answers["POST /query"]


def test_a_viewer_needs_a_grant_to_query(edge_api, default_collection):
    """Created by the admin with no grant: 403 on a question to the default collection; after
    `PUT /users/<v>/grants/<default> {"permission": "read"}` the same question gets past
    authorization (what it answers then depends on the collection's documents)."""
    username, password = create_user(edge_api, "viewer")
    try:
        jar = edge_api.cookie_jar()
        logged_in = login(edge_api, username, password, jar)
        assert logged_in.status == 200, logged_in.status
        assert (logged_in.body["user"]["username"], logged_in.body["user"]["role"]) == (username, "viewer")
        csrf = logged_in.body["csrf_token"]

        def ask() -> tuple[int, object]:
            return edge_api("POST", "/query", f"-b {jar} -c {jar}", f"-H 'X-CSRF-Token: {csrf}'",
                            *edge_api.json_body({"query": QUESTION, "collection_name": default_collection}),
                            auth=None, timeout=SLOW)

        status, body = ask()
        assert status == 403 and body["detail"], (status, body)
        status, granted = edge_api("PUT", f"/users/{username}/grants/{default_collection}",
                                   *edge_api.json_body({"permission": "read"}), timeout=QUICK)
        assert status == 200 and granted == {"username": username, "collection": default_collection,
                                              "permission": "read"}, (status, granted)
        status, body = ask()
        assert status not in (401, 403), (status, body)
    finally:
        disable(edge_api, username)


# --- (b) a browser session -----------------------------------------------------------------

def test_a_browser_session_is_a_strict_cookie_and_its_writes_need_the_csrf_token(edge_api, lab_identity):
    jar = edge_api.cookie_jar()
    logged_in = login(edge_api, lab_identity.username, lab_identity.password, jar)
    assert logged_in.status == 200, logged_in.status
    assert (logged_in.body["user"]["username"], logged_in.body["user"]["role"]) == ("lab-tests", "admin")
    attributes = set_cookie_attributes(logged_in.headers.get("set-cookie", ""), "querygpt_session")
    assert {"secure", "httponly", "samesite=strict", "path=/api"} <= attributes, attributes
    assert "no-store" in logged_in.headers.get("cache-control", ""), logged_in.headers.get("cache-control")
    csrf = logged_in.body["csrf_token"]
    assert csrf
    cookie = f"-b {jar} -c {jar}"

    status, me = edge_api("GET", "/auth/me", cookie, auth=None, timeout=QUICK)
    assert status == 200 and me["username"] == "lab-tests" and me["csrf_token"] == csrf, status
    new_token = edge_api.json_body({"name": unique("lab-session"), "expires_in_days": 1})
    for header in ((), ("-H 'X-CSRF-Token: 0123456789abcdef'",)):  # missing, then wrong
        refused = edge_api.response("POST", "/tokens", cookie, *header, *new_token, auth=None, timeout=QUICK)
        assert is_json_error(refused, 403) and refused.body["detail"] == "CSRF token missing or invalid", \
            (header, refused.status, refused.body)
    status, made = edge_api("POST", "/tokens", cookie, f"-H 'X-CSRF-Token: {csrf}'", *new_token,
                            auth=None, timeout=QUICK)
    well_formed = bool(TOKEN_FORMAT.fullmatch(str(made.get("token", ""))))  # (never the token in a message)
    assert status == 201 and well_formed, (status, made.get("prefix"))
    status, _ = edge_api("DELETE", f"/tokens/{made['id']}", cookie, f"-H 'X-CSRF-Token: {csrf}'",
                         auth=None, timeout=QUICK)
    assert status == 204

    status, _ = edge_api("POST", "/auth/logout", cookie, f"-H 'X-CSRF-Token: {csrf}'", auth=None, timeout=QUICK)
    assert status == 204
    gone = edge_api.response("GET", "/auth/me", cookie, auth=None, timeout=QUICK)
    assert is_json_error(gone, 401), (gone.status, gone.body)


# --- (c) a revoked token ---------------------------------------------------------------------

def test_a_revoked_token_gets_401(lab, edge_api):
    token = create_token(lab, "lab-tests", unique("lab-revoke"))
    header = edge_api.header(token)
    status, me = edge_api("GET", "/auth/me", auth=header, timeout=QUICK)
    assert status == 200 and me["username"] == "lab-tests", status
    status, listed = edge_api("GET", "/tokens", timeout=QUICK)
    assert status == 200
    ids = [t["id"] for t in listed["tokens"] if t["prefix"] == token[:12] and not t["revoked_at"]]
    assert len(ids) == 1, f"{len(ids)} unrevoked tokens listed with the new token's prefix"
    status, _ = edge_api("DELETE", f"/tokens/{ids[0]}", timeout=QUICK)
    assert status == 204
    revoked = edge_api.response("GET", "/auth/me", auth=header, timeout=QUICK)
    assert is_json_error(revoked, 401) and revoked.headers.get("www-authenticate", "").lower().startswith("bearer"), \
        (revoked.status, revoked.body)
    # a token of the right form that was never issued: the same answer
    never = edge_api.response("GET", "/auth/me", auth=edge_api.header("qgpt_" + secrets.token_urlsafe(32)),
                              timeout=QUICK)
    assert is_json_error(never, 401), (never.status, never.body)


# --- (d) login throttling ------------------------------------------------------------------

def test_wrong_passwords_for_a_user_are_throttled_with_429_and_retry_after(edge_api):
    """More than 5 failures for one username within 15 minutes: 429 with Retry-After, without
    checking the password. The first five wrong passwords are 401; the 429 comes with the
    sixth (at the latest the seventh: the one after more than five failures were counted)."""
    username, password = create_user(edge_api, "viewer")
    source = fresh_source()
    try:
        jar = edge_api.cookie_jar()
        statuses: list[int] = []
        answer = None
        while len(statuses) < 7 and 429 not in statuses:
            answer = login(edge_api, username, f"wrong-password-{len(statuses)}-{secrets.token_hex(4)}", jar, source)
            statuses.append(answer.status)
            time.sleep(0.3)
        assert statuses in ([401] * 5 + [429], [401] * 6 + [429]), statuses
        assert answer is not None and is_json_error(answer, 429), answer
        assert int(answer.headers.get("retry-after", "0")) > 0, answer.headers
        # throttled without checking the password: the right one is refused too
        right = login(edge_api, username, password, jar, source)
        assert right.status == 429 and "retry-after" in right.headers, right.status
    finally:
        disable(edge_api, username)


# --- (e) the audit trail -------------------------------------------------------------------

def test_a_failed_login_is_audited_in_the_backends_journal_without_the_password(lab, edge_api):
    username = unique("lab-audit")
    password = f"audit-marker-{uuid.uuid4().hex}"
    since = lab.exec(lab.groups["backend"][0], "date '+%Y-%m-%d %H:%M:%S'").stdout.strip()  # as journalctl reads it
    answer = login(edge_api, username, password, edge_api.cookie_jar(), fresh_source())
    assert is_json_error(answer, 401), (answer.status, answer.body)

    deadline = time.monotonic() + 15  # the line is written before the answer; allow the journal a moment
    lines: list[dict] = []
    while not lines:
        journals = {b: lab.exec(b, f"journalctl -u querygpt-backend --no-pager -o cat --since {shlex.quote(since)}"
                                   f" | grep -F -e {shlex.quote(username)} -e {shlex.quote(password)} || true").stdout
                    for b in lab.groups["backend"]}
        assert not [b for b, text in journals.items() if password in text], "the password is in a backend's journal"
        for text in journals.values():
            for line in text.splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if entry.get("logger") == "querygpt.audit":
                    lines.append(entry)
        if not lines:
            assert time.monotonic() < deadline, f"no querygpt.audit line naming {username} in any backend's journal"
            time.sleep(1)
    assert len(lines) == 1, lines
    event = lines[0]
    assert (event.get("action"), event.get("outcome")) == ("login", "failure"), event
    assert username in (event.get("actor_username"), event.get("target")), event


# --- (f) internal endpoints ----------------------------------------------------------------

def test_internal_endpoints_stay_internal_even_with_a_token(edge_api):
    for path in ("/metrics", "/ready", "/openapi.json", "/docs"):
        response = edge_api.response("GET", path, timeout=QUICK)
        assert (response.status, response.body) == (404, {"detail": "Not Found"}), (path, response.status)
        assert response.headers.get("content-type", "").startswith("application/json"), path


# --- (g) the WAF and identity --------------------------------------------------------------

def test_the_waf_lets_a_strong_password_with_quotes_and_semicolons_log_in(edge_api):
    """As a password manager makes them: quotes and semicolons, which the CRS SQL injection
    rules score; both the admin's POST /api/users and the user's login must pass the WAF."""
    password = f"Q'x;7\"v;R'{secrets.token_hex(6)};=\""
    username, _ = create_user(edge_api, "viewer", password)
    try:
        logged_in = login(edge_api, username, password, edge_api.cookie_jar())
        assert logged_in.status == 200, (logged_in.status, logged_in.body)
    finally:
        disable(edge_api, username)


def test_a_question_full_of_sql_passes_authorization_and_the_waf(edge_api, documented):
    question = ("Which customers placed orders? SELECT name FROM customers JOIN orders "
                "ON orders.customer_id = customers.customer_id; DROP TABLE orders")
    status, body = edge_api("POST", "/query", *edge_api.json_body(
        {"query": question, "collection_name": documented["collection"]}), timeout=SLOW)
    assert status not in (401, 403), (status, body)
    assert status == 200, (status, body)
