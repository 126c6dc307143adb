"""Settings, read only from the environment.

Every variable is validated up front so that a typo in an Ansible template
stops the service at start-up with a message naming the variable, instead of
surfacing later as a confusing error on the first request.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urlsplit

from .errors import ConfigError

T = TypeVar("T")

#: Collection names are used in URLs and metrics; restrict them to a safe set.
COLLECTION_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

#: AWS's bucket naming rules (lower case, 3-63 characters), which S3-compatible stores share.
BUCKET_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
#: One segment of the documents key prefix: no empty, "." or ".." segments in S3 keys.
_PREFIX_SEGMENT_RE = re.compile(r"^[A-Za-z0-9._-]+$")

LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")
CHUNK_UNITS = ("chars", "words")
#: libpq's sslmode values (https://www.postgresql.org/docs/current/libpq-ssl.html).
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
#: sslmodes that check the server certificate, and so need the CA that signed it.
SSL_VERIFYING_MODES = ("verify-ca", "verify-full")
#: A host name or IPv4 address (IPv6 goes in brackets: [fd00::5]:5432).
_DB_HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
#: PostgreSQL identifiers we accept for the database and role: no quoting needed anywhere.
_DB_IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
DEFAULT_DB_PORT = 5432

# Defaults, kept as strings so they go through exactly the same parsing as
# values from the environment (and so the README can quote them verbatim).
DEFAULTS: dict[str, str] = {
    # One URL per Qdrant peer, comma-separated; every operation goes to one of them and moves
    # to the next after a connection failure or a 5xx (vectorstore.py).
    "QUERYGPT_QDRANT_URLS": "http://127.0.0.1:6333",
    # Seconds a peer that failed (connection failure, 5xx) is passed over.
    "QUERYGPT_QDRANT_COOLDOWN_SECONDS": "10",
    # Seconds an attempt waits to *connect* to a peer before it moves on to the next: a
    # stopped host drops the SYN, and must not cost each try the whole QUERYGPT_REQUEST_TIMEOUT.
    "QUERYGPT_QDRANT_CONNECT_TIMEOUT_SECONDS": "2",
    "QUERYGPT_QDRANT_API_KEY": "",
    # During a key rotation only (playbooks/runbooks/rotate_secrets.yml): the other key, tried
    # when a peer answers 401 to the first (vectorstore.ApiKeys).
    "QUERYGPT_QDRANT_API_KEY_PREVIOUS": "",
    # How a NEW collection is laid out over Qdrant's cluster (vectorstore.CollectionLayout):
    # shards, copies of each shard, and copies that must acknowledge a write. An existing
    # collection keeps the layout it was created with.
    "QUERYGPT_QDRANT_SHARD_NUMBER": "1",
    "QUERYGPT_QDRANT_REPLICATION_FACTOR": "1",
    "QUERYGPT_QDRANT_WRITE_CONSISTENCY_FACTOR": "1",
    # One or more Ollama hosts, comma-separated; calls are spread over them (ollama.py).
    "QUERYGPT_OLLAMA_URLS": "http://127.0.0.1:11434",
    # Seconds a host that failed (connection failure, 5xx) is passed over.
    "QUERYGPT_OLLAMA_COOLDOWN_SECONDS": "10",
    "QUERYGPT_EMBED_MODEL": "all-minilm",
    "QUERYGPT_LLM_MODEL": "qwen2.5-coder:1.5b",
    "QUERYGPT_TOP_K": "10",
    "QUERYGPT_CHUNK_SIZE": "600",
    "QUERYGPT_CHUNK_OVERLAP": "90",
    "QUERYGPT_CHUNK_UNIT": "chars",
    "QUERYGPT_EMBED_BATCH_SIZE": "32",
    "QUERYGPT_MAX_UPLOAD_BYTES": str(20 * 1024 * 1024),
    "QUERYGPT_DEFAULT_COLLECTION": "querygpt",
    "QUERYGPT_HOST": "127.0.0.1",
    "QUERYGPT_PORT": "8000",
    "QUERYGPT_WORKERS": "1",
    "QUERYGPT_LOG_LEVEL": "INFO",
    "QUERYGPT_REQUEST_TIMEOUT": "120",
    # The original of every upload is kept in S3 (see documents.py); the bucket is required.
    "QUERYGPT_DOCUMENTS_BUCKET": "",
    "QUERYGPT_DOCUMENTS_PREFIX": "documents",
    "QUERYGPT_S3_ENDPOINT_URL": "",
    "QUERYGPT_S3_REGION": "",
    "QUERYGPT_S3_ACCESS_KEY_ID": "",
    "QUERYGPT_S3_SECRET_ACCESS_KEY": "",
    "QUERYGPT_S3_KMS_KEY_ID": "",
    # Bounds on one PDF's text extraction (pdf.py), run in a child process with memory
    # and CPU limits (pdf_worker.py). Passing a count bound is a 413, a resource limit 422.
    "QUERYGPT_PDF_MAX_PAGES": "1000",
    "QUERYGPT_PDF_MAX_CHARS": "2000000",
    "QUERYGPT_PDF_MAX_CHUNKS": "5000",
    "QUERYGPT_PDF_MAX_STREAM_BYTES": str(4 * 1024 * 1024),
    "QUERYGPT_PDF_MEMORY_BYTES": str(512 * 1024 * 1024),
    "QUERYGPT_PDF_CPU_SECONDS": "30",
    # --- limits (limits.py): per backend process; the role's README has the host and fleet sums.
    # One deadline per request, shared by all its upstream calls; it must end before the edge's
    # proxy_read_timeout (300 s), which the Ansible role checks.
    "QUERYGPT_QUERY_DEADLINE_SECONDS": "240",
    "QUERYGPT_UPLOAD_DEADLINE_SECONDS": "240",
    # Generation (chat) calls running at once, and waiting for a slot; one more is a 429.
    "QUERYGPT_GPU_CONCURRENCY": "1",
    "QUERYGPT_GPU_QUEUE": "4",
    # Admission per endpoint: requests per second (token bucket), burst, requests in flight.
    "QUERYGPT_QUERY_RATE": "5",
    "QUERYGPT_QUERY_BURST": "10",
    "QUERYGPT_QUERY_CONCURRENCY": "8",
    "QUERYGPT_UPLOAD_RATE": "1",
    "QUERYGPT_UPLOAD_BURST": "5",
    "QUERYGPT_UPLOAD_CONCURRENCY": "2",
    # --- application state in PostgreSQL (database.py). Every server, primary and standbys:
    # libpq tries them in turn and keeps the one that accepts writes (target_session_attrs).
    "QUERYGPT_DATABASE_HOSTS": "",
    "QUERYGPT_DATABASE_NAME": "querygpt",
    "QUERYGPT_DATABASE_USER": "querygpt",
    "QUERYGPT_DATABASE_PASSWORD": "",
    "QUERYGPT_DATABASE_SSLMODE": "verify-full",
    "QUERYGPT_DATABASE_SSLROOTCERT": "",
    "QUERYGPT_INTERNAL_CA_FILE": "",
    # The internal PKI's certificate revocation lists (PEM): with it, a revoked Ollama, Qdrant or
    # PostgreSQL certificate is refused, and so is one of a CA it holds no CRL of ("" = none).
    "QUERYGPT_INTERNAL_CRL_FILE": "",
    # The server's own TLS pair: both or neither ("" = plain HTTP).
    "QUERYGPT_TLS_CERT_FILE": "",
    "QUERYGPT_TLS_KEY_FILE": "",
    "QUERYGPT_DATABASE_CONNECT_TIMEOUT_SECONDS": "3",
    # Connections each worker process keeps; the servers' max_connections must cover
    # backend hosts x QUERYGPT_WORKERS x this (plus migrations and backups).
    "QUERYGPT_DATABASE_POOL_SIZE": "4",
    # --- identity (auth.py; docs/access-control.md). The secret key signs session cookies and
    # CSRF tokens; it has no default: the backend refuses to start without it.
    "QUERYGPT_SECRET_KEY": "",
    # A session ends after this long without a request (idle), and this long after the login.
    "QUERYGPT_SESSION_IDLE_SECONDS": str(8 * 3600),
    "QUERYGPT_SESSION_MAX_SECONDS": str(24 * 3600),
    # Per user, per process (limits.py), beside the global limits above.
    "QUERYGPT_USER_QUERY_RATE_PER_MINUTE": "30",
    "QUERYGPT_USER_UPLOAD_RATE_PER_MINUTE": "10",
    "QUERYGPT_USER_MAX_CONCURRENT_QUERIES": "2",
    "QUERYGPT_USER_MAX_CONCURRENT_UPLOADS": "1",
    # Bytes of current documents a user may have uploaded (users.storage_quota_bytes overrides).
    "QUERYGPT_USER_STORAGE_QUOTA_BYTES": str(1024**3),
}

#: The secret key's minimum length (characters).
MIN_SECRET_KEY_CHARS = 32

#: Bounds on a collection's layout: far above any cluster this project runs, low enough that a
#: typo (an extra digit) is refused instead of creating thousands of shards.
MAX_QDRANT_SHARDS = 256
MAX_QDRANT_COPIES = 16

#: Requests in flight (query + upload) a process may admit: each holds one of the threadpool's
#: 40 threads (anyio's default), and /health, /ready and /metrics need a few left.
MAX_ADMITTED = 32


@dataclass(frozen=True)
class Settings:
    """Validated runtime configuration (see README.md for each variable)."""

    # The Qdrant peers: every operation goes to one of them (vectorstore.py).
    qdrant_urls: tuple[str, ...] = (DEFAULTS["QUERYGPT_QDRANT_URLS"],)
    qdrant_cooldown_seconds: float = 10.0
    qdrant_connect_timeout_seconds: float = 2.0
    # repr=False: the key must never end up in a log line or a traceback.
    qdrant_api_key: str | None = field(default=None, repr=False)
    qdrant_api_key_previous: str | None = field(default=None, repr=False)
    qdrant_shard_number: int = 1
    qdrant_replication_factor: int = 1
    qdrant_write_consistency_factor: int = 1
    # The Ollama pool: every call goes to one of these hosts (ollama.py).
    ollama_urls: tuple[str, ...] = (DEFAULTS["QUERYGPT_OLLAMA_URLS"],)
    ollama_cooldown_seconds: float = 10.0
    # The internal CA (PEM) that https:// Ollama and Qdrant URLs are verified against; None = the
    # system's CAs. Never "verify nothing" (docs/architecture.md, "Internal TLS").
    internal_ca_file: str | None = None
    # Its certificate revocation lists (PEM, every CA's); None = no revocation check.
    internal_crl_file: str | None = None
    embed_model: str = DEFAULTS["QUERYGPT_EMBED_MODEL"]
    llm_model: str = DEFAULTS["QUERYGPT_LLM_MODEL"]
    # Tuned by benchmarks/retrieval_quality.py: docs/retrieval.md has the figures.
    top_k: int = 10
    chunk_size: int = 600
    chunk_overlap: int = 90
    chunk_unit: str = "chars"
    embed_batch_size: int = 32
    max_upload_bytes: int = 20 * 1024 * 1024
    default_collection: str = DEFAULTS["QUERYGPT_DEFAULT_COLLECTION"]
    host: str = DEFAULTS["QUERYGPT_HOST"]
    port: int = 8000
    # The server's own certificate chain and key (PEM): set both and uvicorn serves TLS only
    # (docs/architecture.md, "Internal TLS"); set neither and it serves plain HTTP (tests, dev).
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    workers: int = 1
    log_level: str = "INFO"
    request_timeout: float = 120.0
    # S3 bucket for the uploaded originals. Empty only in a Settings built by hand: from_env
    # refuses to start without it, and create_app refuses a Settings without it.
    documents_bucket: str = ""
    documents_prefix: str = DEFAULTS["QUERYGPT_DOCUMENTS_PREFIX"]
    # None means AWS S3 / boto3's default chain (region from AWS_REGION or ~/.aws/config,
    # credentials from the instance profile).
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    # repr=False: static keys must never end up in a log line or a traceback.
    s3_access_key_id: str | None = field(default=None, repr=False)
    s3_secret_access_key: str | None = field(default=None, repr=False)
    # None means the bucket's default encryption.
    s3_kms_key_id: str | None = None
    # PDF extraction bounds (QUERYGPT_PDF_*; see DEFAULTS and pdf.py / pdf_worker.py).
    pdf_max_pages: int = 1000
    pdf_max_chars: int = 2_000_000
    pdf_max_chunks: int = 5000
    pdf_max_stream_bytes: int = 4 * 1024 * 1024
    pdf_memory_bytes: int = 512 * 1024 * 1024
    pdf_cpu_seconds: int = 30
    # --- limits (limits.py), per process; QUERYGPT_* names in DEFAULTS.
    query_deadline_seconds: float = 240.0
    upload_deadline_seconds: float = 240.0
    gpu_concurrency: int = 1
    gpu_queue: int = 4
    query_rate: float = 5.0
    query_burst: int = 10
    query_concurrency: int = 8
    upload_rate: float = 1.0
    upload_burst: int = 5
    upload_concurrency: int = 2
    # --- PostgreSQL (database.py). Empty hosts only in a Settings built by hand: from_env
    # refuses to start without them, and create_app refuses a Settings without them.
    database_hosts: tuple[tuple[str, int], ...] = ()
    database_name: str = DEFAULTS["QUERYGPT_DATABASE_NAME"]
    database_user: str = DEFAULTS["QUERYGPT_DATABASE_USER"]
    # repr=False: the password must never end up in a log line or a traceback.
    database_password: str | None = field(default=None, repr=False)
    database_sslmode: str = DEFAULTS["QUERYGPT_DATABASE_SSLMODE"]
    database_sslrootcert: str | None = None
    database_connect_timeout_seconds: int = 3
    database_pool_size: int = 4
    # --- identity (auth.py). Empty only in a Settings built by hand: from_env refuses to start
    # without it, and create_app refuses a Settings without it. repr=False: never logged.
    secret_key: str = field(default="", repr=False)
    session_idle_seconds: int = 8 * 3600
    session_max_seconds: int = 24 * 3600
    user_query_rate_per_minute: int = 30
    user_upload_rate_per_minute: int = 10
    user_max_concurrent_queries: int = 2
    user_max_concurrent_uploads: int = 1
    user_storage_quota_bytes: int = 1024**3

    @property
    def qdrant_api_keys(self) -> tuple[str, ...]:
        """The keys sent to Qdrant, in order: the current one, then the previous one while a
        rotation is under way."""
        return tuple(key for key in (self.qdrant_api_key, self.qdrant_api_key_previous) if key)

    def secrets(self) -> tuple[str, ...]:
        """Values the log formatter scrubs from every line."""
        return tuple(
            value
            for value in (
                self.qdrant_api_key,
                self.qdrant_api_key_previous,
                self.s3_access_key_id,
                self.s3_secret_access_key,
                self.database_password,
                self.secret_key,
            )
            if value
        )

    def tls_verify(self) -> ssl.SSLContext | bool:
        """What the internal HTTP clients (Ollama, Qdrant readiness) verify servers with: a
        context trusting the internal CA file, or True (the system's CAs) when none is set."""
        if not self.internal_ca_file:
            return True
        try:
            context = ssl.create_default_context(cafile=self.internal_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                "QUERYGPT_INTERNAL_CA_FILE",
                f"names {self.internal_ca_file!r}, which holds no usable CA certificate (PEM): {exc}",
            ) from None
        if self.internal_crl_file:
            try:
                # load_verify_locations also takes the CRLs of a PEM file
                loaded = context.cert_store_stats()["crl"]
                context.load_verify_locations(cafile=self.internal_crl_file)
                if context.cert_store_stats()["crl"] == loaded:
                    raise ssl.SSLError("no CRL in it")
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(
                    "QUERYGPT_INTERNAL_CRL_FILE",
                    f"names {self.internal_crl_file!r}, which holds no usable CRL (PEM): {exc}",
                ) from None
            # the server's certificate must not be revoked, and its CA's CRL must be there
            context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
        return context

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``environ`` (default: ``os.environ``).

        Raises ConfigError naming the first offending variable.
        """
        if environ is None:
            import os

            environ = os.environ

        def raw(name: str) -> str:
            value = environ.get(name)
            if value is None or value.strip() == "":
                return DEFAULTS[name]
            return value.strip()

        size = _parse("QUERYGPT_CHUNK_SIZE", raw, _int_between(1, 100_000))
        overlap = _parse("QUERYGPT_CHUNK_OVERLAP", raw, _int_between(0, 100_000))
        if overlap >= size:
            raise ConfigError(
                "QUERYGPT_CHUNK_OVERLAP",
                f"must be smaller than QUERYGPT_CHUNK_SIZE ({size}), got {overlap}",
            )
        api_key = environ.get("QUERYGPT_QDRANT_API_KEY", "").strip() or None
        api_key_previous = environ.get("QUERYGPT_QDRANT_API_KEY_PREVIOUS", "").strip() or None
        if api_key_previous and not api_key:
            raise ConfigError(
                "QUERYGPT_QDRANT_API_KEY_PREVIOUS",
                "is the second key of a rotation: set QUERYGPT_QDRANT_API_KEY too",
            )
        access_key_id = _parse("QUERYGPT_S3_ACCESS_KEY_ID", raw, _optional(_token))
        secret_access_key = _parse("QUERYGPT_S3_SECRET_ACCESS_KEY", raw, _optional(_token))
        if bool(access_key_id) != bool(secret_access_key):
            raise ConfigError(
                "QUERYGPT_S3_SECRET_ACCESS_KEY" if access_key_id else "QUERYGPT_S3_ACCESS_KEY_ID",
                "must be set together with its pair (QUERYGPT_S3_ACCESS_KEY_ID and "
                "QUERYGPT_S3_SECRET_ACCESS_KEY), or leave both empty to use the instance profile",
            )
        replication_factor = _parse(
            "QUERYGPT_QDRANT_REPLICATION_FACTOR", raw, _int_between(1, MAX_QDRANT_COPIES)
        )
        write_consistency_factor = _parse(
            "QUERYGPT_QDRANT_WRITE_CONSISTENCY_FACTOR", raw, _int_between(1, MAX_QDRANT_COPIES)
        )
        if write_consistency_factor > replication_factor:
            # Qdrant would accept it and then fail every write that cannot reach that many
            # copies, which is every write.
            raise ConfigError(
                "QUERYGPT_QDRANT_WRITE_CONSISTENCY_FACTOR",
                "must not exceed QUERYGPT_QDRANT_REPLICATION_FACTOR "
                f"({replication_factor}), got {write_consistency_factor}",
            )
        for old, new, what in (
            ("QUERYGPT_QDRANT_URL", "QUERYGPT_QDRANT_URLS", "Qdrant URLs, one per peer"),
            ("QUERYGPT_OLLAMA_URL", "QUERYGPT_OLLAMA_URLS", "Ollama URLs"),
        ):
            if environ.get(old, "").strip():
                # The single-URL variable was replaced: ignoring it would silently send every
                # call to the default on 127.0.0.1.
                raise ConfigError(
                    old,
                    f"is no longer read; rename it to {new} (a comma-separated list "
                    f"of one or more {what})",
                )
        settings = cls(
            qdrant_urls=_parse("QUERYGPT_QDRANT_URLS", raw, _http_urls),
            qdrant_cooldown_seconds=_parse(
                "QUERYGPT_QDRANT_COOLDOWN_SECONDS", raw, _positive_float
            ),
            qdrant_connect_timeout_seconds=_parse(
                "QUERYGPT_QDRANT_CONNECT_TIMEOUT_SECONDS", raw, _above_zero(60, "seconds")
            ),
            qdrant_api_key=api_key,
            qdrant_api_key_previous=api_key_previous,
            qdrant_shard_number=_parse(
                "QUERYGPT_QDRANT_SHARD_NUMBER", raw, _int_between(1, MAX_QDRANT_SHARDS)
            ),
            qdrant_replication_factor=replication_factor,
            qdrant_write_consistency_factor=write_consistency_factor,
            ollama_urls=_parse("QUERYGPT_OLLAMA_URLS", raw, _http_urls),
            internal_ca_file=_parse("QUERYGPT_INTERNAL_CA_FILE", raw, _optional(_ca_file)) or None,
            internal_crl_file=_parse("QUERYGPT_INTERNAL_CRL_FILE", raw, _optional(_ca_file)) or None,
            ollama_cooldown_seconds=_parse(
                "QUERYGPT_OLLAMA_COOLDOWN_SECONDS", raw, _positive_float
            ),
            embed_model=_parse("QUERYGPT_EMBED_MODEL", raw, _model_name),
            llm_model=_parse("QUERYGPT_LLM_MODEL", raw, _model_name),
            top_k=_parse("QUERYGPT_TOP_K", raw, _int_between(1, 100)),
            chunk_size=size,
            chunk_overlap=overlap,
            chunk_unit=_parse("QUERYGPT_CHUNK_UNIT", raw, _choice(CHUNK_UNITS, lower=True)),
            embed_batch_size=_parse("QUERYGPT_EMBED_BATCH_SIZE", raw, _int_between(1, 1024)),
            max_upload_bytes=_parse(
                "QUERYGPT_MAX_UPLOAD_BYTES", raw, _int_between(1, 1024 * 1024 * 1024)
            ),
            default_collection=_parse("QUERYGPT_DEFAULT_COLLECTION", raw, _collection_name),
            host=_parse("QUERYGPT_HOST", raw, _host),
            port=_parse("QUERYGPT_PORT", raw, _int_between(1, 65535)),
            **_server_tls(raw),
            workers=_parse("QUERYGPT_WORKERS", raw, _int_between(1, 64)),
            log_level=_parse("QUERYGPT_LOG_LEVEL", raw, _choice(LOG_LEVELS, lower=False)),
            request_timeout=_parse("QUERYGPT_REQUEST_TIMEOUT", raw, _positive_float),
            documents_bucket=_parse("QUERYGPT_DOCUMENTS_BUCKET", raw, _optional(_bucket_name)),
            documents_prefix=_parse("QUERYGPT_DOCUMENTS_PREFIX", raw, _key_prefix),
            s3_endpoint_url=_parse("QUERYGPT_S3_ENDPOINT_URL", raw, _optional(_http_url)) or None,
            s3_region=_parse("QUERYGPT_S3_REGION", raw, _optional(_region)) or None,
            s3_access_key_id=access_key_id or None,
            s3_secret_access_key=secret_access_key or None,
            s3_kms_key_id=_parse("QUERYGPT_S3_KMS_KEY_ID", raw, _optional(_token)) or None,
            pdf_max_pages=_parse("QUERYGPT_PDF_MAX_PAGES", raw, _int_between(1, 100_000)),
            pdf_max_chars=_parse(
                "QUERYGPT_PDF_MAX_CHARS", raw, _int_between(1000, 100_000_000)
            ),
            pdf_max_chunks=_parse("QUERYGPT_PDF_MAX_CHUNKS", raw, _int_between(1, 1_000_000)),
            pdf_max_stream_bytes=_parse(
                "QUERYGPT_PDF_MAX_STREAM_BYTES", raw, _int_between(64 * 1024, 1024**3)
            ),
            pdf_memory_bytes=_parse(
                "QUERYGPT_PDF_MEMORY_BYTES", raw, _int_between(128 * 1024 * 1024, 64 * 1024**3)
            ),
            pdf_cpu_seconds=_parse("QUERYGPT_PDF_CPU_SECONDS", raw, _int_between(1, 600)),
            **_limits(raw),
            **_database(raw, environ),
            **_identity(raw, environ),
        )
        # Checked last so that a malformed variable is reported before a missing one.
        require_documents_bucket(settings)
        require_database(settings)
        require_secret_key(settings)
        return settings


def _server_tls(raw: Callable[[str], str]) -> dict[str, str | None]:
    """QUERYGPT_TLS_CERT_FILE and QUERYGPT_TLS_KEY_FILE: both or neither, and a pair that loads
    (a key that does not match the certificate fails here, not in every worker)."""
    cert = _parse("QUERYGPT_TLS_CERT_FILE", raw, _optional(_ca_file)) or None
    key = _parse("QUERYGPT_TLS_KEY_FILE", raw, _optional(_ca_file)) or None
    if bool(cert) != bool(key):
        missing = "QUERYGPT_TLS_KEY_FILE" if cert else "QUERYGPT_TLS_CERT_FILE"
        other = "QUERYGPT_TLS_CERT_FILE" if cert else "QUERYGPT_TLS_KEY_FILE"
        raise ConfigError(missing, f"must be set together with {other} (TLS needs both)")
    if cert and key:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                "QUERYGPT_TLS_CERT_FILE",
                f"{cert!r} and QUERYGPT_TLS_KEY_FILE {key!r} are not a usable certificate and "
                f"matching private key (PEM): {exc}",
            ) from None
    return {"tls_cert_file": cert, "tls_key_file": key}


def _identity(raw: Callable[[str], str], environ: Mapping[str, str]) -> dict[str, object]:
    """The identity block of Settings (auth.py, limits.py), parsed and checked together."""
    # Taken verbatim and never echoed (it is a secret); require_secret_key checks its length.
    key = environ.get("QUERYGPT_SECRET_KEY", "").strip()
    if any(ch.isspace() or not ch.isprintable() for ch in key):
        raise ConfigError(
            "QUERYGPT_SECRET_KEY", "must be a single token of printable characters without spaces"
        )
    idle = _parse("QUERYGPT_SESSION_IDLE_SECONDS", raw, _int_between(60, 30 * 86400))
    maximum = _parse("QUERYGPT_SESSION_MAX_SECONDS", raw, _int_between(60, 90 * 86400))
    if idle > maximum:
        raise ConfigError(
            "QUERYGPT_SESSION_IDLE_SECONDS",
            f"must not exceed QUERYGPT_SESSION_MAX_SECONDS ({maximum}), got {idle}",
        )
    return {
        "secret_key": key,
        "session_idle_seconds": idle,
        "session_max_seconds": maximum,
        "user_query_rate_per_minute": _parse(
            "QUERYGPT_USER_QUERY_RATE_PER_MINUTE", raw, _int_between(1, 60_000)
        ),
        "user_upload_rate_per_minute": _parse(
            "QUERYGPT_USER_UPLOAD_RATE_PER_MINUTE", raw, _int_between(1, 60_000)
        ),
        "user_max_concurrent_queries": _parse(
            "QUERYGPT_USER_MAX_CONCURRENT_QUERIES", raw, _int_between(1, MAX_ADMITTED)
        ),
        "user_max_concurrent_uploads": _parse(
            "QUERYGPT_USER_MAX_CONCURRENT_UPLOADS", raw, _int_between(1, MAX_ADMITTED)
        ),
        "user_storage_quota_bytes": _parse(
            "QUERYGPT_USER_STORAGE_QUOTA_BYTES", raw, _int_between(0, 1024**5)
        ),
    }


def require_secret_key(settings: Settings) -> None:
    """Refuse to run without the key that signs session cookies and CSRF tokens."""
    if len(settings.secret_key) < MIN_SECRET_KEY_CHARS:
        problem = "is empty" if not settings.secret_key else (
            f"is too short ({len(settings.secret_key)} characters)"
        )
        raise ConfigError(
            "QUERYGPT_SECRET_KEY",
            f"{problem}; set it to a random string of at least {MIN_SECRET_KEY_CHARS} "
            "characters (Secrets Manager backend-secret-key; in the vault "
            "vault_backend_secret_key), e.g. `openssl rand -base64 48`",
        )


def _database(raw: Callable[[str], str], environ: Mapping[str, str]) -> dict[str, object]:
    """The PostgreSQL block of Settings (database.py), parsed and checked together."""
    sslmode = _parse("QUERYGPT_DATABASE_SSLMODE", raw, _choice(SSL_MODES, lower=True))
    sslrootcert = _parse("QUERYGPT_DATABASE_SSLROOTCERT", raw, _optional(_ca_file))
    # Taken verbatim (not stripped, not parsed): a password may contain anything, and the
    # value must never be echoed in an error.
    password = environ.get("QUERYGPT_DATABASE_PASSWORD", "")
    if "\n" in password or "\x00" in password:
        raise ConfigError(
            "QUERYGPT_DATABASE_PASSWORD", "must be a single line without NUL characters"
        )
    return {
        "database_hosts": _parse("QUERYGPT_DATABASE_HOSTS", raw, _optional_hosts),
        "database_name": _parse("QUERYGPT_DATABASE_NAME", raw, _db_identifier),
        "database_user": _parse("QUERYGPT_DATABASE_USER", raw, _db_identifier),
        "database_password": password or None,
        "database_sslmode": sslmode,
        "database_sslrootcert": sslrootcert or None,
        "database_connect_timeout_seconds": _parse(
            "QUERYGPT_DATABASE_CONNECT_TIMEOUT_SECONDS", raw, _int_between(1, 60)
        ),
        "database_pool_size": _parse("QUERYGPT_DATABASE_POOL_SIZE", raw, _int_between(1, 32)),
    }


def _limits(raw: Callable[[str], str]) -> dict[str, float | int]:
    """The limits block of Settings (limits.py), parsed and checked together."""
    limits: dict[str, float | int] = {
        "query_deadline_seconds": _parse("QUERYGPT_QUERY_DEADLINE_SECONDS", raw, _positive_float),
        "upload_deadline_seconds": _parse(
            "QUERYGPT_UPLOAD_DEADLINE_SECONDS", raw, _positive_float
        ),
        "gpu_concurrency": _parse("QUERYGPT_GPU_CONCURRENCY", raw, _int_between(1, 64)),
        "gpu_queue": _parse("QUERYGPT_GPU_QUEUE", raw, _int_between(0, 1024)),
        "query_rate": _parse("QUERYGPT_QUERY_RATE", raw, _rate),
        "query_burst": _parse("QUERYGPT_QUERY_BURST", raw, _int_between(1, 10_000)),
        "query_concurrency": _parse(
            "QUERYGPT_QUERY_CONCURRENCY", raw, _int_between(1, MAX_ADMITTED)
        ),
        "upload_rate": _parse("QUERYGPT_UPLOAD_RATE", raw, _rate),
        "upload_burst": _parse("QUERYGPT_UPLOAD_BURST", raw, _int_between(1, 10_000)),
        "upload_concurrency": _parse(
            "QUERYGPT_UPLOAD_CONCURRENCY", raw, _int_between(1, MAX_ADMITTED)
        ),
    }
    admitted = int(limits["query_concurrency"]) + int(limits["upload_concurrency"])
    if admitted > MAX_ADMITTED:
        raise ConfigError(
            "QUERYGPT_UPLOAD_CONCURRENCY",
            f"plus QUERYGPT_QUERY_CONCURRENCY is {admitted}, more than the {MAX_ADMITTED} "
            "requests a process can run at once (its threadpool has 40 threads); lower one of them",
        )
    return limits


def require_documents_bucket(settings: Settings) -> None:
    """Refuse to run without somewhere to keep the originals.

    Indexing a PDF whose original is not kept would make the index impossible to rebuild
    (``querygpt-backend reindex``) once Qdrant and its snapshots are lost.
    """
    if not settings.documents_bucket:
        raise ConfigError(
            "QUERYGPT_DOCUMENTS_BUCKET",
            "is empty; set it to the S3 bucket that keeps the uploaded PDFs (Terraform output "
            "documents_bucket; in the Ansible role backend_documents_bucket)",
        )


def require_database(settings: Settings) -> None:
    """Refuse to run without the database: without it documents could not be listed or
    erased, and an upload would leave a document nobody can find again."""
    if not settings.database_hosts:
        raise ConfigError(
            "QUERYGPT_DATABASE_HOSTS",
            "is empty; set it to every PostgreSQL server, primary and standbys, as "
            "comma-separated host[:port] (the backend connects to whichever accepts writes)",
        )
    if settings.database_sslmode in SSL_VERIFYING_MODES and not settings.database_sslrootcert:
        raise ConfigError(
            "QUERYGPT_DATABASE_SSLROOTCERT",
            f"is empty, but QUERYGPT_DATABASE_SSLMODE={settings.database_sslmode} checks the "
            "server's certificate; set it to the internal CA's certificate file (PEM), or "
            "choose another sslmode",
        )


def database_hosts_text(hosts: tuple[tuple[str, int], ...]) -> str:
    """``host:port,...`` for operator logs (never in an API response)."""
    return ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in hosts)


def is_valid_collection_name(name: str) -> bool:
    """True if ``name`` is an acceptable Qdrant collection name for QueryGPT."""
    return bool(COLLECTION_NAME_RE.fullmatch(name))


# --- parsers: each takes the raw string and raises ValueError with a reason --


def _parse(name: str, raw: Callable[[str], str], parser: Callable[[str], T]) -> T:
    value = raw(name)
    try:
        return parser(value)
    except ValueError as exc:
        raise ConfigError(name, str(exc)) from None


def _optional(parser: Callable[[str], str]) -> Callable[[str], str]:
    """Empty stays empty (the variable's default is ""); anything else must parse."""

    def parse(value: str) -> str:
        return parser(value) if value else ""

    return parse


def _int_between(low: int, high: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise ValueError(f"must be an integer, got {value!r}") from None
        if not low <= number <= high:
            raise ValueError(f"must be between {low} and {high}, got {number}")
        return number

    return parse


def _above_zero(high: float, unit: str) -> Callable[[str], float]:
    """A number in (0, high]; ``unit`` names it in the error ("seconds", ...)."""

    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"must be a number of {unit}, got {value!r}") from None
        if not 0 < number <= high:
            raise ValueError(f"must be greater than 0 and at most {high:g}, got {value}")
        return number

    return parse


_positive_float = _above_zero(3600, "seconds")
_rate = _above_zero(10_000, "requests per second")


def _choice(options: tuple[str, ...], *, lower: bool) -> Callable[[str], str]:
    def parse(value: str) -> str:
        normalized = value.lower() if lower else value.upper()
        if normalized not in options:
            raise ValueError(f"must be one of {', '.join(options)}; got {value!r}")
        return normalized

    return parse


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http(s) URL such as http://127.0.0.1:6333, got {value!r}")
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ValueError(f"has an invalid port: {value!r}") from None
    if parts.query or parts.fragment:
        raise ValueError(f"must not contain a query string or fragment, got {value!r}")
    return value.rstrip("/")


def _http_urls(value: str) -> tuple[str, ...]:
    """A comma-separated list of one or more distinct http(s) URLs; spaces around items are
    ignored, an empty item (",," or a trailing comma) is an error."""
    items = [item.strip() for item in value.split(",")]
    if not any(items):
        raise ValueError(
            "must list at least one http(s) URL (comma-separated) such as "
            f"http://10.0.0.5:11434, got {value!r}"
        )
    if "" in items:
        raise ValueError(f"has an empty item (a stray comma?), got {value!r}")
    urls: list[str] = []
    seen: dict[tuple[str, str, int | None, str], str] = {}
    for number, item in enumerate(items, start=1):
        try:
            url = _http_url(item)
        except ValueError as exc:
            if len(items) == 1:
                raise
            raise ValueError(f"item {number} {exc}") from None
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        key = (parts.scheme.lower(), (parts.hostname or "").lower(), port, parts.path)
        if key in seen:
            raise ValueError(f"lists the same URL twice ({seen[key]!r} and {item!r})")
        seen[key] = item
        urls.append(url)
    return tuple(urls)


def _model_name(value: str) -> str:
    if any(ch.isspace() for ch in value) or len(value) > 200:
        raise ValueError(f"must be an Ollama model name like 'all-minilm', got {value!r}")
    return value


def _collection_name(value: str) -> str:
    if not is_valid_collection_name(value):
        raise ValueError(f"must be 1-64 characters of letters, digits, '_' or '-', got {value!r}")
    return value


def _bucket_name(value: str) -> str:
    if not BUCKET_NAME_RE.fullmatch(value) or ".." in value:
        raise ValueError(
            "must be an S3 bucket name (3-63 lower-case letters, digits, '.' or '-'), "
            f"got {value!r}"
        )
    return value


def _key_prefix(value: str) -> str:
    prefix = value.strip("/")
    segments = prefix.split("/")
    if len(prefix) > 256 or not all(
        _PREFIX_SEGMENT_RE.fullmatch(s) and s not in (".", "..") for s in segments
    ):
        raise ValueError(
            "must be a key prefix such as 'documents' or 'prod/documents' (letters, digits, "
            f"'.', '_', '-' separated by '/', at most 256 characters), got {value!r}"
        )
    return prefix


def _region(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", value):
        raise ValueError(f"must be a region name such as eu-central-1, got {value!r}")
    return value


def _token(value: str) -> str:
    """A key id, secret or KMS key ARN: anything printable without spaces."""
    if len(value) > 2048 or not value.isprintable() or any(ch.isspace() for ch in value):
        # Never echo the value: it may be a secret.
        raise ValueError("must be a single token without spaces (at most 2048 characters)")
    return value


def _db_host(item: str) -> tuple[str, int]:
    """``host``, ``host:port`` or ``[ipv6]:port``."""
    port_text = ""
    if item.startswith("["):
        host, sep, rest = item[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")) or not re.fullmatch(r"[0-9A-Fa-f:.]+", host):
            raise ValueError(f"has a malformed IPv6 address {item!r} (write [fd00::5]:5432)")
        port_text = rest[1:]
        if rest and not port_text:
            raise ValueError(f"has an empty port in {item!r}")
    else:
        host, sep, port_text = item.partition(":")
        if sep and not port_text:
            raise ValueError(f"has an empty port in {item!r}")
        if not _DB_HOST_RE.fullmatch(host):
            raise ValueError(f"has {item!r}, which is not a host name or address")
    port = DEFAULT_DB_PORT
    if port_text:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ValueError(f"has an invalid port in {item!r} (1-65535)")
        port = int(port_text)
    return host, port


def _optional_hosts(value: str) -> tuple[tuple[str, int], ...]:
    """Comma-separated ``host[:port]`` (default port 5432), distinct; empty stays empty
    (require_database reports it, after every malformed variable)."""
    if not value:
        return ()
    items = [item.strip() for item in value.split(",")]
    if "" in items:
        raise ValueError(f"has an empty item (a stray comma?), got {value!r}")
    hosts: list[tuple[str, int]] = []
    for item in items:
        host = _db_host(item)
        if (host[0].lower(), host[1]) in {(h.lower(), p) for h, p in hosts}:
            raise ValueError(f"lists {item!r} twice")
        hosts.append(host)
    return tuple(hosts)


def _db_identifier(value: str) -> str:
    if not _DB_IDENTIFIER_RE.fullmatch(value):
        raise ValueError(
            "must be a PostgreSQL name of letters, digits and '_' (not starting with a digit, "
            f"at most 63 characters), got {value!r}"
        )
    return value


def _ca_file(value: str) -> str:
    from pathlib import Path

    path = Path(value)
    if not path.is_absolute():
        raise ValueError(f"must be an absolute path to a PEM file, got {value!r}")
    try:
        is_file = path.is_file()
        if is_file:
            with path.open("rb"):
                pass
    except OSError as exc:  # e.g. a directory the service's user may not enter
        raise ValueError(f"names {value!r}, which cannot be read: {exc.strerror}") from None
    if not is_file:
        raise ValueError(f"names {value!r}, which does not exist or is not a file")
    return value


def _host(value: str) -> str:
    if any(ch.isspace() for ch in value) or "/" in value:
        raise ValueError(f"must be a host name or IP address to bind, got {value!r}")
    return value
