"""Helpers for the QueryGPT backend tests: sample PDFs, a fake Ollama, the
documents bucket and small request/metrics/Qdrant helpers. Fixtures using them
live in conftest.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import threading
import time
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from fastapi.testclient import TestClient


#: The versioned bucket the ``s3`` fixture creates in moto.
DOCUMENTS_BUCKET = "querygpt-test-documents"
S3_REGION = "us-east-1"

#: Any existing file passes as QUERYGPT_DATABASE_SSLROOTCERT: configuration checks only that
#: it exists (libpq reads it when it connects, and these settings never connect).
CA_FILE = __file__
#: The database variables of a configuration that is never used to connect (config and CLI
#: tests), and the Settings fields they give.
#: The backend's secret key in tests (QUERYGPT_SECRET_KEY: required, at least 32 characters).
SECRET_KEY = "test-secret-key-0123456789abcdef0123456789"
#: The required variables besides the bucket (the database's and the secret key), and the
#: Settings fields they give.
DATABASE_ENV = {
    "QUERYGPT_DATABASE_HOSTS": "db-1.internal,db-2.internal:5433",
    "QUERYGPT_DATABASE_SSLROOTCERT": CA_FILE,
    "QUERYGPT_SECRET_KEY": SECRET_KEY,
}
DATABASE_FIELDS: dict[str, Any] = {
    "database_hosts": (("db-1.internal", 5432), ("db-2.internal", 5433)),
    "database_sslrootcert": CA_FILE,
    "secret_key": SECRET_KEY,
}

SCHEMA_PAGES = [
    [
        "Table customers: one row per customer.",
        "customers.id INTEGER PRIMARY KEY",
        "customers.name TEXT NOT NULL",
        "customers.email TEXT UNIQUE",
        "customers.created_at TIMESTAMP",
    ],
    [
        "Table orders: one row per order placed by a customer.",
        "orders.id INTEGER PRIMARY KEY",
        "orders.customer_id INTEGER REFERENCES customers(id)",
        "orders.total NUMERIC(10,2)",
        "orders.placed_at TIMESTAMP",
    ],
]


def make_pdf(pages: list[list[str]] | None = None, *, blank_pages: int = 0) -> bytes:
    """A PDF with one page per list of lines (plus optional blank pages)."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, pagesize=A4)
    for lines in pages if pages is not None else SCHEMA_PAGES:
        y = 800
        for line in lines:
            pdf.drawString(50, y, line)
            y -= 16
        pdf.showPage()
    for _ in range(blank_pages):
        pdf.rect(100, 100, 200, 200)  # a drawing, but no text
        pdf.showPage()
    pdf.save()
    return buffer.getvalue()


def encrypt_pdf(data: bytes, user_password: str, *, algorithm: str = "RC4-128") -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    writer.encrypt(user_password, owner_password="owner-secret", algorithm=algorithm)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


# --------------------------------------------------------------------------
# Fake Ollama (and Qdrant's /readyz) behind httpx.MockTransport

DIM = 32


def fake_embedding(text: str) -> list[float]:
    """Deterministic bag-of-words vector: similar texts get similar vectors."""
    vector = [0.0] * DIM
    for word in re.findall(r"[a-z_]+", text.lower()):
        bucket = int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "big") % DIM
        vector[bucket] += 1.0
    if not any(vector):  # no words at all: any fixed unit vector will do
        return [1.0 / math.sqrt(DIM)] * DIM
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector]


class FakeOllama:
    """Answers /api/embed, /api/chat, /api/version; records what it saw.

    It answers for every Ollama host of a pool (QUERYGPT_OLLAMA_URLS); ``down_hosts`` holds the
    host names that refuse connections, ``ollama_up = False`` makes every host refuse.

    ``fail_embed_call=n`` makes the n-th embed call (1-based) fail with
    ``embed_failure`` ("http" -> 500 with an Ollama-style error, "down" ->
    connection refused).

    ``delays`` ({"/api/chat": seconds}, ``math.inf`` for "until released") makes
    a call slow the way a busy server is: it answers after that long, unless
    ``release`` is set first, and it honours the read timeout the client sent
    as httpx would (ReadTimeout once it passes). MockTransport applies no
    timeouts itself, so this is what makes the client's timeouts observable;
    ``timeouts`` records the read timeout of every delayed call. ``delay_from``
    ({"/api/embed": 3}) delays only from that call (1-based) on: the earlier
    ones answer at once.
    """

    def __init__(self) -> None:
        self.embed_calls: list[list[str]] = []
        self.chat_calls: list[dict[str, Any]] = []
        self.fail_embed_call: int | None = None
        self.embed_failure = "http"
        self.chat_reply = "```sql\nSELECT c.name FROM customers c;\n```"
        self.ollama_up = True
        self.down_hosts: set[str] = set()
        self.qdrant_ready = True
        #: Host names of Qdrant peers (QUERYGPT_QDRANT_URLS) whose /readyz refuses connections.
        self.qdrant_down_hosts: set[str] = set()
        self.requests: list[httpx.Request] = []
        self.delays: dict[str, float] = {}
        self.delay_from: dict[str, int] = {}
        self.release = threading.Event()
        self.timeouts: dict[str, list[float | None]] = {}

    def _stall(self, request: httpx.Request) -> None:
        path = request.url.path
        delay = self.delays.get(path)
        # `requests` already holds this call: its count is this call's number.
        if delay is None or sum(r.url.path == path for r in self.requests) < self.delay_from.get(path, 1):
            return
        timeout = (request.extensions.get("timeout") or {}).get("read")
        self.timeouts.setdefault(path, []).append(timeout)
        wait = delay if timeout is None else min(delay, timeout)
        released = self.release.wait(None if math.isinf(wait) else wait)
        if not released and timeout is not None and delay > timeout:
            raise httpx.ReadTimeout("timed out (fake Ollama)", request=request)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self._stall(request)
        path = request.url.path
        if request.url.port == 6333 or path == "/readyz":
            if not self.qdrant_ready or request.url.host in self.qdrant_down_hosts:
                raise httpx.ConnectError("connection refused", request=request)
            return httpx.Response(200, text="all shards are ready")
        if not self.ollama_up or request.url.host in self.down_hosts:
            raise httpx.ConnectError("connection refused", request=request)
        if path == "/api/version":
            return httpx.Response(200, json={"version": "0.0.0-fake"})
        if path == "/api/embed":
            body = json.loads(request.content)
            self.embed_calls.append(list(body["input"]))
            if self.fail_embed_call == len(self.embed_calls):
                if self.embed_failure == "down":
                    raise httpx.ConnectError("connection refused", request=request)
                return httpx.Response(500, json={"error": "model runner crashed"})
            return httpx.Response(
                200,
                json={
                    "model": body["model"],
                    "embeddings": [fake_embedding(t) for t in body["input"]],
                },
            )
        if path == "/api/chat":
            body = json.loads(request.content)
            self.chat_calls.append(body)
            return httpx.Response(
                200,
                json={
                    "model": body["model"],
                    "message": {"role": "assistant", "content": self.chat_reply},
                    "done": True,
                },
            )
        return httpx.Response(404, json={"error": f"no route {path}"})


def upload(
    client: TestClient,
    data: bytes,
    filename: str = "schema.pdf",
    *,
    headers: dict[str, str] | None = None,
    **form: str,
) -> httpx.Response:
    """POST /upload; ``headers`` (e.g. another user's ``bearer``) are sent on top of the
    client's own."""
    return client.post(
        "/upload",
        files={"pdf_file": (filename, data, "application/pdf")},
        data=form or None,
        headers=headers,
    )


def wait_until(condition: Any, timeout: float = 10.0) -> None:
    """Poll ``condition`` until it is true; fail after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.01)


def metric_value(client: TestClient, name: str, **labels: str) -> float:
    """Read one sample from /metrics (0.0 if the series is absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = client.get("/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def points(qdrant: Any, collection: str) -> dict[str, dict[str, Any]]:
    """Every point of ``collection`` as {point id: payload}."""
    records, _ = qdrant.scroll(collection, limit=10_000, with_payload=True)
    return {str(r.id): dict(r.payload or {}) for r in records}


# --------------------------------------------------------------------------
# The test database (a real PostgreSQL: tests/pgserver.py)


class TestDatabase:
    """One database of the session's PostgreSQL server, and SQL helpers to inspect it."""

    __test__ = False  # not a test class, despite its name

    def __init__(self, server: Any, name: str) -> None:
        self.server = server
        self.name = name

    def settings(self, **overrides: Any) -> Any:
        """Settings pointing at this database (the app role, password auth, no TLS)."""
        from querygpt.config import Settings

        values: dict[str, Any] = {
            "database_hosts": ((self.server.host, self.server.port),),
            "database_name": self.name,
            "database_user": "querygpt",
            "database_password": self.server.app_password,
            "database_sslmode": "disable",
            "documents_bucket": DOCUMENTS_BUCKET,
            "s3_region": S3_REGION,
            "secret_key": SECRET_KEY,
        }
        values.update(overrides)
        return Settings(**values)

    def environ(self) -> dict[str, str]:
        return {**self.server.environ(self.name), "QUERYGPT_SECRET_KEY": SECRET_KEY}

    def connect(self) -> Any:
        import psycopg

        return psycopg.connect(
            host=self.server.host, port=self.server.port, dbname=self.name, user="querygpt",
            password=self.server.app_password, autocommit=True,
        )

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with self.connect() as conn:
            return conn.execute(sql, params or None).fetchall()

    def truncate(self) -> None:
        with self.connect() as conn:
            conn.execute(
                "TRUNCATE query_history, documents, collections, audit_events, sessions, "
                "api_tokens, grants, users RESTART IDENTITY CASCADE"
            )


# --------------------------------------------------------------------------
# Users and credentials (auth.py): made through the app's own IdentityStore

#: A well-formed API token that no user holds.
UNKNOWN_TOKEN = "qgpt_" + "A" * 43
#: The password of every user ensure_user makes.
PASSWORD = "correct horse battery staple"


def ensure_user(
    app: Any,
    username: str,
    role: str,
    grants: dict[str, str] | None = None,
    *,
    password: str = PASSWORD,
) -> Any:
    """The user ``username`` (made with ``role`` if missing), with ``grants`` set; the
    collections named are created if missing. Returns its UserRecord."""
    from querygpt.auth import hash_password

    identity = app.state.services.identity
    user = identity.user(username)
    if user is None:
        user = identity.create_user(username, hash_password(password), role)
    for collection, permission in (grants or {}).items():
        identity.create_collection(collection)
        identity.set_grant(user.id, collection, permission)
    return identity.user(username)


def issue_token(app: Any, username: str, *, days: int = 90) -> str:
    """A new API token of ``username`` (which must exist)."""
    from querygpt.auth import new_token

    identity = app.state.services.identity
    user = identity.user(username)
    token = new_token()
    identity.create_token(user.id, "test", token.sha256, token.prefix, days)
    return token.token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def login(client: TestClient, username: str, password: str = PASSWORD) -> tuple[str, str]:
    """Log in; returns (the session cookie's value, the CSRF token)."""
    response = client.post("/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    cookie = response.cookies.get("querygpt_session") or _set_cookie_value(response)
    return cookie, response.json()["csrf_token"]


def _set_cookie_value(response: httpx.Response) -> str:
    header = response.headers["set-cookie"]
    return header.split(";", 1)[0].split("=", 1)[1]


def session_headers(cookie: str, csrf: str | None = None) -> dict[str, str]:
    """The cookie as a header: the TestClient's http://testserver would not send a Secure
    cookie scoped to /api."""
    headers = {"Cookie": f"querygpt_session={cookie}"}
    if csrf is not None:
        headers["X-CSRF-Token"] = csrf
    return headers
