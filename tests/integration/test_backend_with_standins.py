"""End to end: the real QueryGPT backend (``python -m querygpt``, uvicorn,
two workers) over HTTP against the Qdrant and Ollama lab stand-ins, with
moto's S3 server (the lab's S3-compatible endpoint) as the documents bucket, and a
throw-away PostgreSQL (tests/pgserver.py) migrated with ``python -m querygpt migrate``.
Two Ollama stand-ins make the backends' Ollama pool (QUERYGPT_OLLAMA_URLS).

Stand-ins and backends run as subprocesses bound to 127.0.0.1 on free
ports, with state in tmp_path_factory directories (per xdist worker, so
``pytest -n 2`` runs two independent stacks). Extra backend instances (dead
Qdrant, tiny upload limit, failing embeddings, dead S3) are started by the
tests that need them so the shared one is never disturbed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import trustme
from botocore.config import Config as BotoConfig
from prometheus_client.parser import text_string_to_metric_families
from qdrant_client import QdrantClient, models

# An API key over plain http to 127.0.0.1 is deliberate here.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Api key is used with an insecure connection:UserWarning"
)

ROOT = Path(__file__).resolve().parents[2]
BACKEND_SRC = ROOT / "app" / "backend" / "src"
QDRANT_STANDIN = ROOT / "lab" / "standins" / "qdrant"
OLLAMA_STANDIN = ROOT / "lab" / "standins" / "ollama"

QDRANT_KEY = "integration-test-key"
# moto takes any credentials; static keys also keep boto3 off the instance metadata service.
S3_KEY_ID = "integration-test-key-id"
S3_SECRET = "integration-test-secret"
S3_REGION = "us-east-1"
DOCUMENTS_BUCKET = "querygpt-integration-documents"
# QUERYGPT_SECRET_KEY (at least 32 characters); the admin the tests act as, made with the CLI.
SECRET_KEY = "integration-secret-key-0123456789abcdef"
ADMIN = "ops"
ADMIN_PASSWORD = "integration admin password"
EMBED_MODEL = "all-minilm:latest"
LLM_MODEL = "qwen2.5-coder:1.5b"
# Two backend workers each import the app (about 3 s of CPU, most of it qdrant_client):
# on a busy two-core machine that alone has taken 28 s, and 65 s beside a lab converge (every
# test of this module then failed in its fixture). A bound, not a performance figure.
START_TIMEOUT = 180.0

# One page per table, each a CREATE TABLE statement with its columns.
SCHEMA_PAGES: list[list[str]] = [
    [
        "Shop database schema, part 1: customers.",
        "CREATE TABLE customers (",
        "    id INTEGER PRIMARY KEY,",
        "    name TEXT NOT NULL,",
        "    email TEXT UNIQUE,",
        "    created_at TIMESTAMP",
        ");",
        "One row per registered customer of the shop.",
    ],
    [
        "Shop database schema, part 2: orders.",
        "CREATE TABLE orders (",
        "    order_id INTEGER PRIMARY KEY,",
        "    customer_id INTEGER REFERENCES customers(id),",
        "    placed_at TIMESTAMP,",
        "    total NUMERIC(10,2)",
        ");",
        "One row per order placed by a customer.",
    ],
    [
        "Shop database schema, part 3: order items.",
        "CREATE TABLE order_items (",
        "    item_id INTEGER PRIMARY KEY,",
        "    order_id INTEGER REFERENCES orders(order_id),",
        "    product_sku TEXT,",
        "    quantity INTEGER,",
        "    unit_price NUMERIC(10,2)",
        ");",
        "One row per product line of an order.",
    ],
]


def make_pdf(pages: list[list[str]] | None = None) -> bytes:
    """A text PDF with one page per list of lines (reportlab, like tests/app)."""
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
    pdf.save()
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env() -> dict[str, str]:
    """The current environment without proxies and without our services' variables."""
    return {
        k: v
        for k, v in os.environ.items()
        if "proxy" not in k.lower()
        and not k.startswith(("QUERYGPT_", "OLLAMA_", "QDRANT__", "PROMETHEUS_MULTIPROC"))
        and k != "prometheus_multiproc_dir"
        and k != "PYTHONPATH"
    }


def http_client(base_url: str, timeout: float = 30.0) -> httpx.Client:
    return httpx.Client(base_url=base_url, timeout=timeout, trust_env=False)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """terminate, then kill (the whole process group: uvicorn has workers)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    try:  # leftovers (e.g. uvicorn workers) in the group we created
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if proc.poll() is None:
        proc.wait(timeout=10)


def wait_until_ok(url: str, proc: subprocess.Popen[bytes], log: Path, what: str,
                  verify: ssl.SSLContext | bool = True) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    with httpx.Client(timeout=2, trust_env=False, verify=verify) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log.read_text()}")
            try:
                if client.get(url).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    stop_process(proc)
    raise TimeoutError(f"{what} did not answer {url} in time:\n{log.read_text()}")


def spawn(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:  # the child keeps its own handle
        return subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


# --------------------------------------------------------------------- Qdrant


@dataclass
class QdrantStandin:
    """Qdrant over TLS, as in every environment: a certificate for 127.0.0.1 from a throw-away
    CA (``ca_file``), which the backend is given as QUERYGPT_INTERNAL_CA_FILE."""

    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    ca_file: str

    def client(self) -> QdrantClient:
        # check_compatibility=False: the stand-in reports an older version than the client.
        return QdrantClient(
            url=self.url, api_key=QDRANT_KEY, prefer_grpc=False, timeout=10,
            check_compatibility=False, verify=ssl.create_default_context(cafile=self.ca_file),
        )


@pytest.fixture(scope="session")
def qdrant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QdrantStandin]:
    work = tmp_path_factory.mktemp("qdrant")
    port, grpc_port = free_port(), free_port()
    authority = trustme.CA()
    authority.cert_pem.write_to_path(str(work / "ca.pem"))
    pair = authority.issue_cert("127.0.0.1")
    pair.private_key_pem.write_to_path(str(work / "key.pem"))
    pair.cert_chain_pems[0].write_to_path(str(work / "cert.pem"))
    config = work / "config.yaml"
    config.write_text(
        "log_level: WARN\n"
        "storage:\n"
        f"  storage_path: {work / 'storage'}\n"
        f"  snapshots_path: {work / 'snapshots'}\n"
        "service:\n"
        "  host: 127.0.0.1\n"
        f"  http_port: {port}\n"
        f"  grpc_port: {grpc_port}\n"
        f"  api_key: '{QDRANT_KEY}'\n"
        "  enable_tls: true\n"
        "telemetry_disabled: true\n"
        f"tls:\n  cert: {work / 'cert.pem'}\n  key: {work / 'key.pem'}\n  ca_cert: {work / 'ca.pem'}\n"
    )
    env = dict(clean_env(), PYTHONPATH=str(QDRANT_STANDIN))
    log = work / "qdrant.log"
    proc = spawn([sys.executable, "-m", "qdrant_standin", "--config-path", str(config)], env, log)
    url = f"https://127.0.0.1:{port}"
    try:
        wait_until_ok(url + "/readyz", proc, log, "Qdrant stand-in",
                      verify=ssl.create_default_context(cafile=str(work / "ca.pem")))
        yield QdrantStandin(url, proc, log, str(work / "ca.pem"))
    finally:
        stop_process(proc)


@pytest.fixture(scope="session")
def qdrant_client(qdrant: QdrantStandin) -> Iterator[QdrantClient]:
    client = qdrant.client()
    yield client
    client.close()


# ------------------------------------------------------------------------- S3


@dataclass
class S3Standin:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def client(self) -> Any:
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.url,
            region_name=S3_REGION,
            aws_access_key_id=S3_KEY_ID,
            aws_secret_access_key=S3_SECRET,
            config=BotoConfig(s3={"addressing_style": "path"}),
        )


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Standin]:
    """moto's S3 server with a versioned documents bucket, like the Terraform one."""
    work = tmp_path_factory.mktemp("s3")
    port = free_port()
    log = work / "moto.log"
    env = {k: v for k, v in clean_env().items() if not k.startswith("AWS_")}
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    proc = spawn(command, env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ok(url + "/moto-api/", proc, log, "moto S3 server")
        standin = S3Standin(url, proc, log)
        client = standin.client()
        client.create_bucket(Bucket=DOCUMENTS_BUCKET)
        client.put_bucket_versioning(
            Bucket=DOCUMENTS_BUCKET, VersioningConfiguration={"Status": "Enabled"}
        )
        yield standin
    finally:
        stop_process(proc)


@pytest.fixture(scope="session")
def s3_client(s3: S3Standin) -> Any:
    return s3.client()


# --------------------------------------------------------------------- Ollama


@dataclass
class OllamaStandin:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def host(self) -> str:
        """``host:port``, the backend's label for this host in its metrics and logs."""
        return self.url.removeprefix("http://")

    def api_calls(self) -> int:
        """The embed and chat calls it answered, counted in its access log (stderr)."""
        return len(re.findall(r'"POST /api/(?:embed|chat) HTTP/1\.1" 200', self.log.read_text()))


def start_ollama_standin(work: Path, mirror: Path) -> OllamaStandin:
    """An Ollama stand-in on a free port with both models pulled from ``mirror``."""
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = dict(
        clean_env(),
        PYTHONPATH=str(OLLAMA_STANDIN),
        OLLAMA_HOST=f"127.0.0.1:{port}",
        OLLAMA_MODELS=str(work / "models"),
        OLLAMA_STANDIN_MIRROR=str(mirror),
        # The stand-in's GPU-like pacing off: these tests check the backend's behaviour, not latency.
        OLLAMA_STANDIN_TOKEN_SECONDS="0",
        OLLAMA_STANDIN_PROMPT_TOKEN_SECONDS="0",
        OLLAMA_STANDIN_EMBED_SECONDS="0",
    )
    log = work / "ollama.log"
    proc = spawn([sys.executable, "-m", "ollama_standin", "serve"], env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ok(url + "/api/version", proc, log, "Ollama stand-in")
        with http_client(url, timeout=60) as client:
            for model in (EMBED_MODEL, LLM_MODEL):
                pulled = client.post("/api/pull", json={"model": model, "stream": False})
                assert pulled.status_code == 200, pulled.text
                assert pulled.json()["status"] == "success", pulled.text
            names = {m["name"] for m in client.get("/api/tags").json()["models"]}
            assert {EMBED_MODEL, LLM_MODEL} <= names
    except BaseException:
        stop_process(proc)
        raise
    return OllamaStandin(url, proc, log)


@pytest.fixture(scope="session")
def ollama_mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model mirror every stand-in pulls from (read-only for them)."""
    mirror = tmp_path_factory.mktemp("ollama-mirror") / "mirror"
    subprocess.run(
        [sys.executable, str(OLLAMA_STANDIN / "make_mirror.py"), "--out", str(mirror)],
        check=True, capture_output=True, timeout=60,
    )
    return mirror


def _ollama_host(tmp_path_factory: pytest.TempPathFactory, mirror: Path, name: str) -> Iterator[OllamaStandin]:
    standin = start_ollama_standin(tmp_path_factory.mktemp(name), mirror)
    try:
        yield standin
    finally:
        stop_process(standin.proc)


@pytest.fixture(scope="session")
def ollama(tmp_path_factory: pytest.TempPathFactory, ollama_mirror: Path) -> Iterator[OllamaStandin]:
    """The first Ollama host of the backends' pool."""
    yield from _ollama_host(tmp_path_factory, ollama_mirror, "ollama")


@pytest.fixture(scope="session")
def ollama_b(tmp_path_factory: pytest.TempPathFactory, ollama_mirror: Path) -> Iterator[OllamaStandin]:
    """The second Ollama host of the backends' pool (QUERYGPT_OLLAMA_URLS lists both)."""
    yield from _ollama_host(tmp_path_factory, ollama_mirror, "ollama-b")


@pytest.fixture(scope="session")
def ollamas(ollama: OllamaStandin, ollama_b: OllamaStandin) -> tuple[OllamaStandin, ...]:
    return (ollama, ollama_b)


# -------------------------------------------------------------------- backend


@dataclass
class Backend:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str] = field(repr=False)
    #: The admin's API token (made by `querygpt-backend create-token`), sent by client().
    token: str = field(default="", repr=False)

    def client(self, timeout: float = 30.0) -> httpx.Client:
        client = http_client(self.url, timeout)
        if self.token:
            client.headers["Authorization"] = f"Bearer {self.token}"
        return client

    def anonymous(self, timeout: float = 30.0) -> httpx.Client:
        return http_client(self.url, timeout)


BackendFactory = Callable[..., Backend]


@pytest.fixture(scope="session")
def database(postgres: Any) -> dict[str, str]:
    """The backends' database, migrated by the console script as a deploy does; its
    QUERYGPT_DATABASE_* variables."""
    postgres.create_database("querygpt")
    env = {**postgres.environ("querygpt"), "QUERYGPT_SECRET_KEY": SECRET_KEY}
    result = subprocess.run(
        [sys.executable, "-m", "querygpt", "migrate"],
        env=dict(clean_env(), PYTHONPATH=str(BACKEND_SRC), QUERYGPT_DOCUMENTS_BUCKET=DOCUMENTS_BUCKET, **env),
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "revision after: 0002" in result.stdout
    return env


@pytest.fixture(scope="session")
def api_token(database: dict[str, str]) -> str:
    """The first admin and its API token, made with the console script as an operator does
    (docs/access-control.md, "The first admin"): the password on stdin, the token on stdout."""
    env = dict(clean_env(), PYTHONPATH=str(BACKEND_SRC), QUERYGPT_DOCUMENTS_BUCKET=DOCUMENTS_BUCKET, **database)
    created = subprocess.run(
        [sys.executable, "-m", "querygpt", "create-admin", "--username", ADMIN],
        env=env, input=ADMIN_PASSWORD + "\n", capture_output=True, text=True, timeout=120,
    )
    assert created.returncode == 0, created.stderr
    assert ADMIN_PASSWORD not in created.stdout + created.stderr
    issued = subprocess.run(
        [sys.executable, "-m", "querygpt", "create-token", "--username", ADMIN, "--name",
         "integration", "--expires-in-days", "1"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()
    assert re.fullmatch(r"qgpt_[A-Za-z0-9_-]{43}", token), issued.stdout
    assert token not in issued.stderr
    return token


def backend_settings(
    qdrant: QdrantStandin,
    ollamas: Sequence[OllamaStandin],
    s3: S3Standin,
    port: int,
    database: dict[str, str],
) -> dict[str, str]:
    """The QUERYGPT_* variables of a backend on the stand-ins (what backend.env holds)."""
    return {
        **database,
        "QUERYGPT_QDRANT_URLS": qdrant.url,
        "QUERYGPT_QDRANT_API_KEY": QDRANT_KEY,
        "QUERYGPT_INTERNAL_CA_FILE": qdrant.ca_file,
        "QUERYGPT_OLLAMA_URLS": ",".join(o.url for o in ollamas),
        "QUERYGPT_EMBED_MODEL": "all-minilm",
        "QUERYGPT_LLM_MODEL": LLM_MODEL,
        "QUERYGPT_HOST": "127.0.0.1",
        "QUERYGPT_PORT": str(port),
        "QUERYGPT_WORKERS": "1",
        "QUERYGPT_LOG_LEVEL": "INFO",
        "QUERYGPT_REQUEST_TIMEOUT": "10",
        "QUERYGPT_DOCUMENTS_BUCKET": DOCUMENTS_BUCKET,
        "QUERYGPT_S3_ENDPOINT_URL": s3.url,
        "QUERYGPT_S3_REGION": S3_REGION,
        "QUERYGPT_S3_ACCESS_KEY_ID": S3_KEY_ID,
        "QUERYGPT_S3_SECRET_ACCESS_KEY": S3_SECRET,
        "QUERYGPT_SECRET_KEY": SECRET_KEY,
    }


def launch_backend(
    work: Path,
    qdrant: QdrantStandin,
    ollamas: Sequence[OllamaStandin],
    s3: S3Standin,
    database: dict[str, str],
    *,
    precreate_metrics_dir: bool = True,
    token: str = "",
    **overrides: str | int,
) -> Backend:
    """Start ``python -m querygpt``; keyword args become/override QUERYGPT_* variables.

    Defaults point at the stand-ins (every Ollama stand-in of ``ollamas`` in the pool); ``workers=2`` also sets PROMETHEUS_MULTIPROC_DIR
    (an empty directory in ``work``, created first unless ``precreate_metrics_dir=False``).
    """
    port = free_port()
    settings = backend_settings(qdrant, ollamas, s3, port, database)
    settings.update({f"QUERYGPT_{k.upper()}": str(v) for k, v in overrides.items()})
    env = dict(clean_env(), PYTHONPATH=str(BACKEND_SRC), **settings)
    if int(settings["QUERYGPT_WORKERS"]) > 1:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(work / "prometheus")
        if precreate_metrics_dir:
            (work / "prometheus").mkdir()
    log = work / "backend.log"
    proc = spawn([sys.executable, "-m", "querygpt"], env, log)
    backend = Backend(f"http://127.0.0.1:{port}", proc, log, env, token)
    try:
        wait_until_ok(backend.url + "/health", proc, log, "QueryGPT backend")
    except BaseException:
        stop_process(proc)
        raise
    return backend


@pytest.fixture(scope="session")
def backend(
    tmp_path_factory: pytest.TempPathFactory,
    qdrant: QdrantStandin,
    ollamas: tuple[OllamaStandin, ...],
    s3: S3Standin,
    database: dict[str, str],
    api_token: str,
) -> Iterator[Backend]:
    """The shared backend: two workers, multiprocess metrics, two Ollama hosts."""
    shared = launch_backend(
        tmp_path_factory.mktemp("backend"), qdrant, ollamas, s3, database, workers=2,
        token=api_token,
    )
    try:
        yield shared
    finally:
        stop_process(shared.proc)


@pytest.fixture
def start_backend(
    tmp_path: Path,
    qdrant: QdrantStandin,
    ollamas: tuple[OllamaStandin, ...],
    s3: S3Standin,
    database: dict[str, str],
    api_token: str,
) -> Iterator[BackendFactory]:
    """Extra backends for one test (same stand-ins), stopped when it ends."""
    started: list[Backend] = []

    def factory(**kwargs: Any) -> Backend:
        work = tmp_path / f"backend{len(started)}"
        work.mkdir()
        kwargs.setdefault("token", api_token)
        started.append(launch_backend(work, qdrant, ollamas, s3, database, **kwargs))
        return started[-1]

    try:
        yield factory
    finally:
        for extra in started:
            stop_process(extra.proc)


UPLOAD_COLLECTION = "shop_schema"
UPLOAD_FILENAME = "shop-schema.pdf"


@pytest.fixture(scope="session")
def upload_pdf() -> bytes:
    """The bytes ``uploaded`` sends (reportlab stamps the time, so keep them)."""
    return make_pdf()


@pytest.fixture(scope="session")
def uploaded(backend: Backend, upload_pdf: bytes) -> dict[str, object]:
    """Upload the schema PDF once per session (per xdist worker)."""
    with backend.client() as client:
        response = client.post(
            "/upload",
            files={"pdf_file": (UPLOAD_FILENAME, upload_pdf, "application/pdf")},
            data={"collection_name": UPLOAD_COLLECTION},
        )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


# --------------------------------------------------------- failing Ollama proxy


class FlakyEmbedProxy:
    """A tiny Ollama front: forwards everything to the stand-in, except that
    every ``POST /api/embed`` after the first ``ok_embeds`` answers 500."""

    def __init__(self, upstream: str, ok_embeds: int = 1) -> None:
        self.upstream = upstream
        self.ok_embeds = ok_embeds
        self.embed_calls = 0
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if self.command == "POST" and self.path == "/api/embed":
                    with proxy.lock:
                        proxy.embed_calls += 1
                        fail = proxy.embed_calls > proxy.ok_embeds
                    if fail:
                        self._answer(500, json.dumps({"error": "injected embed failure"}).encode())
                        return
                with http_client(proxy.upstream, timeout=30) as client:
                    upstream = client.request(
                        self.command, self.path, content=body,
                        headers={
                            "Content-Type": self.headers.get("Content-Type", "application/json")
                        },
                    )
                self._answer(upstream.status_code, upstream.content,
                             upstream.headers.get("Content-Type", "application/json"))

            def _answer(self, status: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_HEAD = _relay

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FlakyEmbedProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def flaky_ollama(ollama: OllamaStandin) -> Iterator[FlakyEmbedProxy]:
    with FlakyEmbedProxy(ollama.url, ok_embeds=1) as proxy:
        yield proxy




SCHEMA_TABLES = ("customers", "orders", "order_items")


def total_points(client: QdrantClient) -> int:
    return sum(
        client.count(c.name, exact=True).count for c in client.get_collections().collections
    )


def document_points(client: QdrantClient, collection: str, key: str, value: str) -> list[Any]:
    points, _ = client.scroll(
        collection,
        scroll_filter=models.Filter(
            must=[models.FieldCondition(key=key, match=models.MatchValue(value=value))]
        ),
        limit=1000,
        with_payload=True,
    )
    return points


def scrape(backend: Backend) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """``/metrics`` as {(sample name, labels): value}."""
    with backend.client() as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


# ------------------------------------------------------------------ liveness


def test_health_and_ready_with_both_standins_up(backend: Backend) -> None:
    with backend.client() as client:
        health = client.get("/health")
        ready = client.get("/ready")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert ready.status_code == 200, ready.text
    assert ready.json() == {
        "status": "ready",
        "checks": {"qdrant": "ok", "ollama": "ok", "database": "ok"},
        "ollama_hosts": {"ollama-1": "ok", "ollama-2": "ok"},
        "qdrant_peers": {"qdrant-1": "ok"},
    }


def test_ready_503_names_qdrant_when_it_is_down(start_backend: BackendFactory) -> None:
    dead = start_backend(qdrant_urls=f"http://127.0.0.1:{free_port()}")
    with dead.client() as client:
        health = client.get("/health")
        ready = client.get("/ready")
    assert health.status_code == 200  # liveness does not depend on Qdrant
    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "not ready"
    assert body["failed"] == ["qdrant"]
    assert body["checks"]["ollama"] == "ok"
    assert body["checks"]["qdrant"].startswith("unreachable")
    assert body["detail"].startswith("qdrant:")


def test_a_qdrant_certificate_from_another_ca_is_refused(
    start_backend: BackendFactory, uploaded: dict[str, Any], tmp_path: Path
) -> None:
    """The backend verifies Qdrant's TLS against QUERYGPT_INTERNAL_CA_FILE: trusting another CA,
    readiness names Qdrant and a query (the vector store's own client) answers 503, never
    results read over an unverified connection."""
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    strict = start_backend(internal_ca_file=str(other))
    with strict.client() as client:
        ready = client.get("/ready")
        query = ask(client, "How many orders did each customer place?")
    assert ready.status_code == 503, ready.text
    assert ready.json()["failed"] == ["qdrant"], ready.text
    assert query.status_code == 503, query.text
    assert "qdrant" in query.json()["detail"].lower(), query.text


# --------------------------------------------------------------- Ollama pool

POOL_QUESTIONS = (
    "How many orders did each customer place?",
    "Which products were sold in order 7?",
    "List the email of every customer.",
)


def ask(client: httpx.Client, question: str) -> httpx.Response:
    return client.post("/query", json={"query": question, "collection_name": UPLOAD_COLLECTION})


def test_queries_are_spread_over_both_ollama_hosts(
    backend: Backend, uploaded: dict[str, Any], ollamas: tuple[OllamaStandin, ...]
) -> None:
    before = scrape(backend)
    calls_before = [o.api_calls() for o in ollamas]
    with backend.client() as client:
        for question in POOL_QUESTIONS * 2:
            response = ask(client, question)
            assert response.status_code == 200, response.text
            assert "SELECT" in response.json()["result"].upper()
    after = scrape(backend)
    # Each query is an embed and a chat call: 12 calls over two hosts, each got some (the
    # backend's two workers each alternate on their own, so not necessarily 6 and 6).
    for standin, calls in zip(ollamas, calls_before, strict=True):
        assert standin.api_calls() > calls, f"{standin.host} received no call"
        ok = value(after, "querygpt_ollama_requests_total", host=standin.host, outcome="ok")
        assert ok > value(before, "querygpt_ollama_requests_total", host=standin.host, outcome="ok")
    assert sum(o.api_calls() - c for o, c in zip(ollamas, calls_before, strict=True)) == 12


def test_queries_still_succeed_after_an_ollama_host_is_killed(
    tmp_path: Path,
    start_backend: BackendFactory,
    ollama: OllamaStandin,
    ollama_mirror: Path,
    uploaded: dict[str, Any],
) -> None:
    # A stand-in of its own, so killing it disturbs no other test.
    doomed = start_ollama_standin(tmp_path / "doomed-ollama", ollama_mirror)
    try:
        pooled = start_backend(ollama_urls=f"{doomed.url},{ollama.url}")
        with pooled.client() as client:
            for question in POOL_QUESTIONS[:2]:
                assert ask(client, question).status_code == 200
            assert doomed.api_calls() > 0, "both hosts were in use before the kill"

            os.killpg(doomed.proc.pid, signal.SIGKILL)
            doomed.proc.wait(timeout=10)
            for question in POOL_QUESTIONS * 2:
                response = ask(client, question)
                assert response.status_code == 200, response.text
                assert "SELECT" in response.json()["result"].upper()

            ready = client.get("/ready")
        assert ready.status_code == 200, ready.text
        hosts = ready.json()["ollama_hosts"]
        assert hosts["ollama-1"].startswith("not ready: Ollama is unreachable"), hosts
        assert hosts["ollama-2"] == "ok"
        assert "127.0.0.1" not in ready.text
    finally:
        stop_process(doomed.proc)
    samples = scrape(pooled)
    assert value(samples, "querygpt_ollama_requests_total", host=doomed.host, outcome="connect_error") >= 1
    assert value(samples, "querygpt_ollama_retries_total") >= 1
    # The move to the other host is logged with the host that failed.
    failures = [
        json.loads(line)
        for line in pooled.log.read_text().splitlines()
        if '"ollama call failed"' in line
    ]
    assert failures and failures[0]["ollama_host"] == doomed.host, failures
    assert failures[0]["outcome"] == "connect_error" and failures[0]["retrying"] is True


# -------------------------------------------------------------------- upload


def test_upload_indexes_every_page_into_qdrant(
    uploaded: dict[str, Any], qdrant_client: QdrantClient
) -> None:
    assert uploaded["collection_name"] == UPLOAD_COLLECTION
    assert uploaded["filename"] == UPLOAD_FILENAME
    assert uploaded["pages"] == 3
    assert uploaded["chunks"] > 0

    info = qdrant_client.get_collection(UPLOAD_COLLECTION)
    assert info.config.params.vectors.size == 384  # all-minilm
    assert info.config.params.vectors.distance == models.Distance.COSINE

    points = document_points(
        qdrant_client, UPLOAD_COLLECTION, "document_id", str(uploaded["document_id"])
    )
    assert len(points) == uploaded["chunks"]
    payloads = [p.payload for p in points]
    for payload in payloads:
        assert {"document_id", "filename", "page", "chunk", "text"} <= set(payload)
        assert payload["document_id"] == uploaded["document_id"]
        assert payload["filename"] == UPLOAD_FILENAME
        assert payload["s3_key"] == uploaded["s3_key"]
        assert payload["s3_version_id"] == uploaded["s3_version_id"]
        assert payload["sha256"] == uploaded["sha256"]
    assert sorted(p["chunk"] for p in payloads) == list(range(uploaded["chunks"]))
    assert {p["page"] for p in payloads} == {1, 2, 3}
    text = "\n".join(p["text"] for p in payloads)
    for table in SCHEMA_TABLES:
        assert f"CREATE TABLE {table} (" in text


def test_query_answers_with_sql_from_the_document(
    backend: Backend, uploaded: dict[str, Any]
) -> None:
    with backend.client() as client:
        response = client.post(
            "/query",
            json={"query": "How many orders did each customer place?",
                  "collection_name": UPLOAD_COLLECTION},
        )
    assert response.status_code == 200, response.text
    body = response.json()
    result = body["result"]
    assert "SELECT" in result.upper()
    assert any(table in result for table in ("orders", "customers")), result
    assert body["sources"], body
    for source in body["sources"]:
        assert source["filename"] == UPLOAD_FILENAME
        assert source["page"] in (1, 2, 3)
        assert source["document_id"] == uploaded["document_id"]
        assert len(source["text"]) <= 500
    # The best-matching chunk is the orders page.
    assert "orders" in body["sources"][0]["text"]


def test_query_on_missing_collection_is_404(backend: Backend) -> None:
    with backend.client() as client:
        response = client.post(
            "/query", json={"query": "list all customers", "collection_name": "no_such_collection"}
        )
    assert response.status_code == 404
    assert "no_such_collection" in response.json()["detail"]


def test_bad_uploads_are_refused_and_store_nothing(
    backend: Backend, uploaded: dict[str, Any], qdrant_client: QdrantClient
) -> None:
    before = total_points(qdrant_client)
    with backend.client() as client:
        not_pdf = client.post(
            "/upload",
            files={"pdf_file": ("schema.pdf", b"CREATE TABLE t (id INT);\n", "application/pdf")},
            data={"collection_name": UPLOAD_COLLECTION},
        )
        empty = client.post(
            "/upload",
            files={"pdf_file": ("empty.pdf", b"", "application/pdf")},
            data={"collection_name": UPLOAD_COLLECTION},
        )
    assert not_pdf.status_code == 415, not_pdf.text
    assert empty.status_code == 400, empty.text
    assert total_points(qdrant_client) == before


def test_oversize_uploads_are_413_and_store_nothing(
    start_backend: BackendFactory, uploaded: dict[str, Any], qdrant_client: QdrantClient
) -> None:
    limit = 4096
    small = start_backend(max_upload_bytes=limit)
    before = total_points(qdrant_client)
    pdf = make_pdf()
    # Just over the limit: caught while the file is read.
    just_over = pdf + b"\n%" + b"x" * (limit + 1 - len(pdf))
    assert len(just_over) > limit
    # Far over (beyond the multipart allowance): caught while the body is received.
    far_over = pdf + b"\n%" + b"x" * (256 * 1024)
    with small.client() as client:
        for data in (just_over, far_over):
            response = client.post(
                "/upload",
                files={"pdf_file": ("big.pdf", data, "application/pdf")},
                data={"collection_name": UPLOAD_COLLECTION},
            )
            assert response.status_code == 413, response.text
            assert "QUERYGPT_MAX_UPLOAD_BYTES" in response.json()["detail"]
    assert total_points(qdrant_client) == before
    rejected = scrape(small)
    assert value(rejected, "querygpt_upload_rejected_total", reason="too_large") == 2


def test_failed_upload_leaves_no_partial_points(
    start_backend: BackendFactory, flaky_ollama: FlakyEmbedProxy, qdrant_client: QdrantClient
) -> None:
    collection = "rollback_check"
    filename = "half-indexed.pdf"
    flaky = start_backend(ollama_urls=flaky_ollama.url, embed_batch_size=1)
    with flaky.client() as client:
        response = client.post(
            "/upload",
            files={"pdf_file": (filename, make_pdf(), "application/pdf")},
            data={"collection_name": collection},
        )
    assert response.status_code == 502, response.text
    detail = response.json()["detail"]
    assert "injected embed failure" in detail
    assert "Nothing from this upload was stored" in detail
    # The first batch was embedded (and stored) before the failure...
    assert flaky_ollama.embed_calls >= 2
    assert qdrant_client.collection_exists(collection)
    # ...and rolled back: no point of that document remains.
    assert document_points(qdrant_client, collection, "filename", filename) == []
    assert qdrant_client.count(collection, exact=True).count == 0


# ------------------------------------------------------------------- metrics


def test_metrics_after_upload_and_query(
    backend: Backend, uploaded: dict[str, Any], qdrant_client: QdrantClient
) -> None:
    before = scrape(backend)
    with backend.client() as client:
        response = client.post(
            "/query",
            json={"query": "total price of order items per order",
                  "collection_name": UPLOAD_COLLECTION},
        )
    assert response.status_code == 200, response.text
    after = scrape(backend)

    def stage_count(samples: dict[Any, float], stage: str) -> float:
        return value(samples, "querygpt_rag_stage_duration_seconds_count", stage=stage)

    for stage in ("embed", "search", "generate"):
        assert stage_count(after, stage) >= stage_count(before, stage) + 1, stage
    assert stage_count(after, "extract") >= 1  # the upload
    assert value(after, "querygpt_http_requests_total",
                 method="POST", route="/upload", status="200") >= 1
    assert value(after, "querygpt_http_requests_total",
                 method="POST", route="/query", status="200") >= 1
    documents = value(after, "querygpt_documents_indexed")
    chunks = value(after, "querygpt_chunks_indexed")
    assert documents >= 1
    assert chunks >= uploaded["chunks"] > 0
    # The gauges are counted in Qdrant, so they agree with it.
    assert chunks == total_points(qdrant_client)


def test_backend_creates_a_missing_metrics_directory(start_backend: BackendFactory) -> None:
    fresh = start_backend(workers=2, precreate_metrics_dir=False)
    with fresh.client() as client:
        assert client.get("/health").status_code == 200
    assert Path(fresh.env["PROMETHEUS_MULTIPROC_DIR"]).is_dir()


# --------------------------------------------------------------- documents bucket


def collection_points(client: QdrantClient, collection: str) -> dict[str, dict[str, Any]]:
    records, _ = client.scroll(collection, limit=10_000, with_payload=True)
    return {str(r.id): dict(r.payload or {}) for r in records}


def write_env_file(path: Path, settings: dict[str, str]) -> Path:
    """The QUERYGPT_* variables as roles/backend/templates/backend.env.j2 writes them."""
    lines = []
    for name, raw in settings.items():
        if name.startswith("QUERYGPT_"):
            if name.endswith(("_API_KEY", "_SECRET_ACCESS_KEY", "_ACCESS_KEY_ID")):
                raw = '"' + raw.replace("\\", "\\\\").replace('"', '\\"') + '"'
            lines.append(f"{name}={raw}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_upload_keeps_the_original_in_the_documents_bucket(
    uploaded: dict[str, Any], upload_pdf: bytes, s3_client: Any
) -> None:
    key = uploaded["s3_key"]
    assert key == f"documents/{UPLOAD_COLLECTION}/{UPLOAD_FILENAME}"
    stored = s3_client.get_object(Bucket=DOCUMENTS_BUCKET, Key=key)
    data = stored["Body"].read()
    assert data == upload_pdf
    assert stored["VersionId"] == uploaded["s3_version_id"]
    assert stored["Metadata"]["sha256"] == uploaded["sha256"] == hashlib.sha256(data).hexdigest()


def test_backend_refuses_to_start_without_a_documents_bucket(
    tmp_path: Path, qdrant: QdrantStandin, ollamas: tuple[OllamaStandin, ...], s3: S3Standin
) -> None:
    # Never connected to: the process stops before.
    database = {"QUERYGPT_DATABASE_HOSTS": "127.0.0.1:9", "QUERYGPT_DATABASE_SSLMODE": "disable"}
    settings = backend_settings(qdrant, ollamas, s3, free_port(), database)
    del settings["QUERYGPT_DOCUMENTS_BUCKET"]
    env = dict(clean_env(), PYTHONPATH=str(BACKEND_SRC), **settings)
    result = subprocess.run(
        [sys.executable, "-m", "querygpt"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "invalid configuration: QUERYGPT_DOCUMENTS_BUCKET is empty" in result.stderr


def test_upload_with_s3_down_is_503_and_indexes_nothing(
    start_backend: BackendFactory, qdrant_client: QdrantClient
) -> None:
    collection = "s3_down_check"
    dead_s3 = start_backend(s3_endpoint_url=f"http://127.0.0.1:{free_port()}")
    with dead_s3.client() as client:
        response = client.post(
            "/upload",
            files={"pdf_file": ("schema.pdf", make_pdf(), "application/pdf")},
            data={"collection_name": collection},
        )
    assert response.status_code == 503, response.text
    detail = response.json()["detail"]
    assert "S3 is unreachable" in detail and "127.0.0.1" not in detail
    assert "Nothing was indexed" in detail
    assert not qdrant_client.collection_exists(collection)


def test_reindex_rebuilds_a_lost_collection_from_the_bucket(
    backend: Backend, qdrant_client: QdrantClient, tmp_path: Path
) -> None:
    collection = "reindex_check"
    with backend.client() as client:
        for filename, pages in (
            ("shop.pdf", SCHEMA_PAGES),
            ("orders.pdf", SCHEMA_PAGES[1:2]),
            ("orders.pdf", SCHEMA_PAGES[1:]),  # a second version replaces the first
        ):
            response = client.post(
                "/upload",
                files={"pdf_file": (filename, make_pdf(pages), "application/pdf")},
                data={"collection_name": collection},
            )
            assert response.status_code == 200, response.text
    before = collection_points(qdrant_client, collection)
    qdrant_client.delete_collection(collection)  # Qdrant and its snapshots are lost

    env_file = write_env_file(tmp_path / "backend.env", backend.env)
    command = [sys.executable, "-m", "querygpt", "reindex", "--collection", collection,
               "--env-file", str(env_file)]
    env = dict(clean_env(), PYTHONPATH=str(BACKEND_SRC))
    for _ in range(2):  # the second run must change nothing
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout)
        assert summary["ok"] is True and summary["failures"] == []
        assert (summary["documents"], summary["points"]) == (2, len(before))
        assert collection_points(qdrant_client, collection) == before
    assert QDRANT_KEY not in result.stderr and S3_SECRET not in result.stderr


def test_backend_refuses_to_start_without_database_hosts(
    qdrant: QdrantStandin, ollamas: tuple[OllamaStandin, ...], s3: S3Standin
) -> None:
    settings = backend_settings(qdrant, ollamas, s3, free_port(), {})
    env = dict(clean_env(), PYTHONPATH=str(BACKEND_SRC), **settings)
    result = subprocess.run(
        [sys.executable, "-m", "querygpt"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "invalid configuration: QUERYGPT_DATABASE_HOSTS is empty" in result.stderr


def test_a_document_is_listed_then_erased_everywhere(
    backend: Backend, qdrant_client: QdrantClient, s3_client: Any
) -> None:
    """Over HTTP against the stand-ins: the upload is recorded, DELETE removes its points
    from the Qdrant stand-in, every version of its original from S3, and its row."""
    collection = "erasure_check"
    with backend.client() as client:
        for _ in range(2):  # two versions of the original
            response = client.post(
                "/upload",
                files={"pdf_file": ("erase-me.pdf", make_pdf(), "application/pdf")},
                data={"collection_name": collection},
            )
            assert response.status_code == 200, response.text
        doc = response.json()
        listing = client.get(f"/collections/{collection}/documents").json()["documents"]
        assert [(d["id"], d["filename"]) for d in listing] == [(doc["document_id"], "erase-me.pdf")]
        assert collection in [c["name"] for c in client.get("/collections").json()["collections"]]

        response = client.delete(f"/documents/{doc['document_id']}")
        assert response.status_code == 200, response.text
        assert response.json()["s3_versions_removed"] == 2
        assert response.json()["chunks_removed"] == doc["chunks"]
        assert client.get(f"/collections/{collection}/documents").json()["documents"] == []
        assert client.delete(f"/documents/{doc['document_id']}").status_code == 404
    assert document_points(qdrant_client, collection, "s3_key", doc["s3_key"]) == []
    listing = s3_client.list_object_versions(Bucket=DOCUMENTS_BUCKET, Prefix=doc["s3_key"])
    # Only the erasure's delete marker is left: what S3 replication carries to the replica.
    assert not listing.get("Versions") and [m["IsLatest"] for m in listing["DeleteMarkers"]] == [True]


def test_every_api_call_but_health_needs_an_identity(backend: Backend) -> None:
    """Over HTTP against the real server: anonymous calls are 401 with a Bearer challenge,
    the CLI's token acts as its admin, and a password login sets the strict cookie."""
    with backend.anonymous() as client:
        assert client.get("/health").status_code == 200
        for method, path in (("GET", "/collections"), ("GET", "/history"), ("POST", "/query")):
            response = client.request(method, path)
            assert response.status_code == 401, path
            assert response.headers["WWW-Authenticate"] == "Bearer"
        login = client.post("/auth/login", json={"username": ADMIN, "password": ADMIN_PASSWORD})
        assert login.status_code == 200, login.text
        cookie = login.headers["set-cookie"].lower()
        for attribute in ("secure", "httponly", "samesite=strict", "path=/api"):
            assert attribute in cookie
        wrong = client.post("/auth/login", json={"username": ADMIN, "password": "not it at all"})
        assert wrong.status_code == 401
    with backend.client() as client:
        me = client.get("/auth/me").json()
        assert (me["username"], me["role"], me["csrf_token"]) == (ADMIN, "admin", None)
        actions = [e["action"] for e in client.get("/audit?limit=200").json()["events"]]
        assert {"user_create", "token_create", "login"} <= set(actions)


def test_backend_refuses_to_start_without_a_secret_key(
    qdrant: QdrantStandin, ollamas: tuple[OllamaStandin, ...], s3: S3Standin
) -> None:
    database = {"QUERYGPT_DATABASE_HOSTS": "127.0.0.1:9", "QUERYGPT_DATABASE_SSLMODE": "disable"}
    settings = backend_settings(qdrant, ollamas, s3, free_port(), database)
    settings["QUERYGPT_SECRET_KEY"] = "too-short"
    env = dict(clean_env(), PYTHONPATH=str(BACKEND_SRC), **settings)
    result = subprocess.run(
        [sys.executable, "-m", "querygpt"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "invalid configuration: QUERYGPT_SECRET_KEY is too short" in result.stderr
    assert "too-short" not in result.stderr
