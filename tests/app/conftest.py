"""Fixtures for the QueryGPT backend tests.

The app runs in-process against an in-memory Qdrant (qdrant-client's local
mode), a fake Ollama served through httpx.MockTransport, moto's in-process
S3 (a versioned documents bucket) and a real PostgreSQL started for the test
session (tests/pgserver.py; one server per xdist worker, one migrated database
emptied before each test), so the suite needs no network services. Sample PDFs
are generated with reportlab.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from moto import mock_aws

# Import the package from the source tree, whether it is installed or not.
BACKEND_SRC = Path(__file__).resolve().parents[2] / "app" / "backend" / "src"
if str(BACKEND_SRC) not in sys.path:
    sys.path.insert(0, str(BACKEND_SRC))

with warnings.catch_warnings():
    # Starlette suggests httpx2 for its TestClient; httpx is what we pin.
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient  # noqa: E402
from qdrant_client import QdrantClient  # noqa: E402
from querygpt.app import create_app  # noqa: E402
from querygpt.config import Settings  # noqa: E402
from querygpt_testkit import (  # noqa: E402
    DOCUMENTS_BUCKET,
    S3_REGION,
    FakeOllama,
    TestDatabase,
    bearer,
    ensure_user,
    issue_token,
    make_pdf,
)


def pytest_configure(config: pytest.Config) -> None:
    for message in (
        # qdrant-client's local mode ignores payload indexes and says so.
        "ignore:Payload indexes have no effect:UserWarning",
        # Deliberate in one test: an API key over plain http to 127.0.0.1:9.
        "ignore:Api key is used with an insecure connection:UserWarning",
    ):
        config.addinivalue_line("filterwarnings", message)


@pytest.fixture(scope="session")
def schema_pdf() -> bytes:
    return make_pdf()


@pytest.fixture
def fake_ollama() -> FakeOllama:
    return FakeOllama()


@pytest.fixture
def s3() -> Iterator[Any]:
    """moto's in-process S3 with the versioned documents bucket; yields a client to
    inspect it. Every boto3 client created while it is active (the app's too) is mocked."""
    with mock_aws():
        client = boto3.client("s3", region_name=S3_REGION)
        client.create_bucket(Bucket=DOCUMENTS_BUCKET)
        client.put_bucket_versioning(
            Bucket=DOCUMENTS_BUCKET, VersioningConfiguration={"Status": "Enabled"}
        )
        yield client


@pytest.fixture(scope="session")
def app_database(postgres: Any) -> TestDatabase:
    """The session's database, migrated to head once (``database`` empties it per test)."""
    from querygpt import migrate
    from querygpt.database import make_engine

    name = postgres.create_database("querygpt_app")
    db = TestDatabase(postgres, name)
    engine = make_engine(db.settings(), for_migrations=True)
    try:
        migrate.upgrade(engine)
    finally:
        engine.dispose()
    return db


@pytest.fixture
def database(app_database: TestDatabase) -> TestDatabase:
    """The migrated database, empty."""
    app_database.truncate()
    return app_database


@pytest.fixture
def settings(database: TestDatabase) -> Settings:
    return database.settings(
        chunk_size=120,
        chunk_overlap=20,
        embed_batch_size=4,
        top_k=3,
        documents_bucket=DOCUMENTS_BUCKET,
        s3_region=S3_REGION,
        # Per-user limits out of the way: the tests of the global limits send everything as
        # one admin (test_backend_access.py sets them where it tests them).
        user_query_rate_per_minute=60_000,
        user_upload_rate_per_minute=60_000,
        user_max_concurrent_queries=32,
        user_max_concurrent_uploads=32,
    )


#: The admin every client of ``make_client`` acts as unless told otherwise.
ADMIN = "admin"

AppFactory = Callable[..., TestClient]


@pytest.fixture
def make_client(fake_ollama: FakeOllama, settings: Settings, s3: Any) -> Iterator[AppFactory]:
    """Build a started TestClient; keyword args override ``settings`` fields.

    The app builds its own S3 client from the settings (mocked by the ``s3``
    fixture) unless ``s3_client`` is given. The client sends an admin's API token
    (``anonymous=True``: no credentials).
    """
    clients: list[TestClient] = []

    def factory(
        qdrant: QdrantClient | None = None,
        s3_client: Any | None = None,
        *,
        anonymous: bool = False,
        **overrides: Any,
    ) -> TestClient:
        app = create_app(
            replace(settings, **overrides),
            qdrant_client=qdrant or QdrantClient(":memory:"),
            http_transport=httpx.MockTransport(fake_ollama),
            s3_client=s3_client,
        )
        client = TestClient(app)
        client.__enter__()
        clients.append(client)
        if not anonymous:
            ensure_user(app, ADMIN, "admin")
            client.headers.update(bearer(issue_token(app, ADMIN)))
        return client

    yield factory
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: AppFactory) -> TestClient:
    return make_client()


UserFactory = Callable[..., TestClient]


@pytest.fixture
def as_user(client: TestClient) -> UserFactory:
    """Clients of ``client``'s app acting as other users:
    ``as_user("viewer", {"shop": "read"})`` (a user named after its role unless
    ``username=`` is given), ``as_user(None)`` for no credentials at all."""

    def factory(
        role: str | None, grants: dict[str, str] | None = None, *, username: str | None = None
    ) -> TestClient:
        other = TestClient(client.app)  # not entered: the app's lifespan is client's
        if role is not None:
            name = username or role
            ensure_user(client.app, name, role, grants)
            other.headers.update(bearer(issue_token(client.app, name)))
        return other

    return factory


@pytest.fixture
def anonymous(as_user: UserFactory) -> TestClient:
    return as_user(None)


@pytest.fixture
def editor(as_user: UserFactory) -> TestClient:
    """An editor with write on ``shop``."""
    return as_user("editor", {"shop": "write"})


@pytest.fixture
def viewer(as_user: UserFactory) -> TestClient:
    """A viewer with read on ``shop``."""
    return as_user("viewer", {"shop": "read"})
