"""Configuration comes only from the environment and fails loudly, naming
the variable, when a value is unusable."""

from __future__ import annotations

import pytest
from querygpt.config import DEFAULTS, Settings
from querygpt.errors import ConfigError
from querygpt.vectorstore import CollectionLayout
from querygpt_testkit import CA_FILE, DATABASE_ENV, DATABASE_FIELDS, SECRET_KEY

#: The variables without a usable default: the bucket and the database servers (and, with
#: the default sslmode verify-full, the CA that signed their certificates).
BUCKET = {"QUERYGPT_DOCUMENTS_BUCKET": "querygpt-documents", **DATABASE_ENV}


def test_defaults_match_documented_values() -> None:
    settings = Settings.from_env(BUCKET)
    assert settings == Settings(documents_bucket="querygpt-documents", **DATABASE_FIELDS)
    assert settings.qdrant_api_key is None
    assert settings.embed_model == "all-minilm"
    assert settings.llm_model == "qwen2.5-coder:1.5b"
    assert settings.port == 8000
    assert settings.ollama_urls == ("http://127.0.0.1:11434",)
    assert settings.ollama_cooldown_seconds == 10.0
    assert settings.qdrant_urls == ("http://127.0.0.1:6333",)
    assert settings.qdrant_cooldown_seconds == 10.0
    assert settings.qdrant_connect_timeout_seconds == 2.0
    assert settings.max_upload_bytes == 20 * 1024 * 1024
    # Every default is parseable by the same code that parses the environment.
    assert set(DEFAULTS) >= {
        "QUERYGPT_QDRANT_URLS",
        "QUERYGPT_QDRANT_COOLDOWN_SECONDS",
        "QUERYGPT_QDRANT_CONNECT_TIMEOUT_SECONDS",
        "QUERYGPT_QDRANT_API_KEY",
        "QUERYGPT_OLLAMA_URLS",
        "QUERYGPT_OLLAMA_COOLDOWN_SECONDS",
        "QUERYGPT_EMBED_MODEL",
        "QUERYGPT_LLM_MODEL",
        "QUERYGPT_TOP_K",
        "QUERYGPT_CHUNK_SIZE",
        "QUERYGPT_CHUNK_OVERLAP",
        "QUERYGPT_MAX_UPLOAD_BYTES",
        "QUERYGPT_DEFAULT_COLLECTION",
        "QUERYGPT_HOST",
        "QUERYGPT_PORT",
        "QUERYGPT_WORKERS",
        "QUERYGPT_LOG_LEVEL",
        "QUERYGPT_REQUEST_TIMEOUT",
        "QUERYGPT_DOCUMENTS_BUCKET",
        "QUERYGPT_DOCUMENTS_PREFIX",
        "QUERYGPT_S3_ENDPOINT_URL",
        "QUERYGPT_S3_REGION",
        "QUERYGPT_S3_ACCESS_KEY_ID",
        "QUERYGPT_S3_SECRET_ACCESS_KEY",
        "QUERYGPT_S3_KMS_KEY_ID",
    }
    assert settings.documents_prefix == "documents"
    # None: AWS S3 with boto3's default chain (instance profile, bucket encryption).
    assert settings.s3_endpoint_url is None and settings.s3_region is None
    assert settings.s3_access_key_id is None and settings.s3_secret_access_key is None
    assert settings.s3_kms_key_id is None


def test_pdf_bounds_have_production_defaults_and_are_read() -> None:
    settings = Settings.from_env(BUCKET)
    assert (settings.pdf_max_pages, settings.pdf_max_chars, settings.pdf_max_chunks) == (
        1000,
        2_000_000,
        5000,
    )
    assert settings.pdf_max_stream_bytes == 4 * 1024 * 1024
    assert settings.pdf_memory_bytes == 512 * 1024 * 1024
    assert settings.pdf_cpu_seconds == 30
    custom = Settings.from_env(
        {
            **BUCKET,
            "QUERYGPT_PDF_MAX_PAGES": "50",
            "QUERYGPT_PDF_MAX_CHARS": "100000",
            "QUERYGPT_PDF_MAX_CHUNKS": "300",
            "QUERYGPT_PDF_MAX_STREAM_BYTES": "1048576",
            "QUERYGPT_PDF_MEMORY_BYTES": "268435456",
            "QUERYGPT_PDF_CPU_SECONDS": "10",
        }
    )
    assert (custom.pdf_max_pages, custom.pdf_max_chars, custom.pdf_max_chunks) == (50, 100_000, 300)
    assert (custom.pdf_max_stream_bytes, custom.pdf_memory_bytes) == (1048576, 268435456)
    assert custom.pdf_cpu_seconds == 10


def test_values_are_read_and_normalised() -> None:
    settings = Settings.from_env(
        {
            "QUERYGPT_QDRANT_URLS": "https://qdrant.internal:6333/, http://10.0.2.11:6333",
            "QUERYGPT_QDRANT_COOLDOWN_SECONDS": "4",
            "QUERYGPT_QDRANT_CONNECT_TIMEOUT_SECONDS": "0.5",
            "QUERYGPT_QDRANT_API_KEY": " key ",
            "QUERYGPT_OLLAMA_URLS": " http://10.0.0.5:11434/ ,https://ollama-b.internal ",
            "QUERYGPT_OLLAMA_COOLDOWN_SECONDS": "2.5",
            "QUERYGPT_TOP_K": "12",
            "QUERYGPT_CHUNK_SIZE": "300",
            "QUERYGPT_CHUNK_OVERLAP": "0",
            "QUERYGPT_CHUNK_UNIT": "WORDS",
            "QUERYGPT_LOG_LEVEL": "debug",
            "QUERYGPT_WORKERS": "4",
            "QUERYGPT_REQUEST_TIMEOUT": "2.5",
            "QUERYGPT_DEFAULT_COLLECTION": "schemas_v2",
            "QUERYGPT_PORT": "",  # empty means default
            "QUERYGPT_DOCUMENTS_BUCKET": "querygpt-prod-documents-123456789012",
            "QUERYGPT_DOCUMENTS_PREFIX": "/prod/documents/",
            "QUERYGPT_S3_ENDPOINT_URL": "http://10.42.2.51:5000/",
            "QUERYGPT_S3_REGION": "eu-central-1",
            "QUERYGPT_S3_ACCESS_KEY_ID": "AKIAEXAMPLE",
            "QUERYGPT_S3_SECRET_ACCESS_KEY": "wJalr/K7MDENG+bPxRfiCY",
            "QUERYGPT_S3_KMS_KEY_ID": "arn:aws:kms:eu-central-1:123456789012:key/abcd-ef",
            "QUERYGPT_DATABASE_HOSTS": " db-a.internal , 10.0.3.12:5433,[fd00::7]:6432 ",
            "QUERYGPT_DATABASE_NAME": "querygpt_prod",
            "QUERYGPT_DATABASE_USER": "querygpt_app",
            "QUERYGPT_DATABASE_PASSWORD": " pass word with spaces ",
            "QUERYGPT_DATABASE_SSLMODE": "VERIFY-CA",
            "QUERYGPT_DATABASE_SSLROOTCERT": CA_FILE,
            "QUERYGPT_DATABASE_CONNECT_TIMEOUT_SECONDS": "5",
            "QUERYGPT_DATABASE_POOL_SIZE": "2",
            "QUERYGPT_SECRET_KEY": " " + SECRET_KEY + " ",
            "QUERYGPT_SESSION_IDLE_SECONDS": "600",
            "QUERYGPT_SESSION_MAX_SECONDS": "3600",
            "QUERYGPT_USER_QUERY_RATE_PER_MINUTE": "12",
            "QUERYGPT_USER_UPLOAD_RATE_PER_MINUTE": "3",
            "QUERYGPT_USER_MAX_CONCURRENT_QUERIES": "4",
            "QUERYGPT_USER_MAX_CONCURRENT_UPLOADS": "2",
            "QUERYGPT_USER_STORAGE_QUOTA_BYTES": "1048576",
        }
    )
    assert settings.secret_key == SECRET_KEY
    assert (settings.session_idle_seconds, settings.session_max_seconds) == (600, 3600)
    assert (settings.user_query_rate_per_minute, settings.user_upload_rate_per_minute) == (12, 3)
    assert (settings.user_max_concurrent_queries, settings.user_max_concurrent_uploads) == (4, 2)
    assert settings.user_storage_quota_bytes == 1048576
    assert settings.database_hosts == (
        ("db-a.internal", 5432), ("10.0.3.12", 5433), ("fd00::7", 6432)
    )
    assert (settings.database_name, settings.database_user) == ("querygpt_prod", "querygpt_app")
    assert settings.database_password == " pass word with spaces "  # verbatim
    assert settings.database_sslmode == "verify-ca" and settings.database_sslrootcert == CA_FILE
    assert settings.database_connect_timeout_seconds == 5 and settings.database_pool_size == 2
    assert settings.qdrant_urls == ("https://qdrant.internal:6333", "http://10.0.2.11:6333")
    assert settings.qdrant_cooldown_seconds == 4
    assert settings.qdrant_connect_timeout_seconds == 0.5
    assert settings.qdrant_api_key == "key"
    assert settings.ollama_urls == ("http://10.0.0.5:11434", "https://ollama-b.internal")
    assert settings.ollama_cooldown_seconds == 2.5
    assert settings.top_k == 12
    assert (settings.chunk_size, settings.chunk_overlap, settings.chunk_unit) == (300, 0, "words")
    assert settings.log_level == "DEBUG"
    assert settings.workers == 4
    assert settings.request_timeout == 2.5
    assert settings.default_collection == "schemas_v2"
    assert settings.port == 8000
    assert settings.documents_bucket == "querygpt-prod-documents-123456789012"
    assert settings.documents_prefix == "prod/documents"  # slashes at the ends dropped
    assert settings.s3_endpoint_url == "http://10.42.2.51:5000"
    assert settings.s3_region == "eu-central-1"
    assert settings.s3_access_key_id == "AKIAEXAMPLE"
    assert settings.s3_secret_access_key == "wJalr/K7MDENG+bPxRfiCY"
    assert settings.s3_kms_key_id.endswith(":key/abcd-ef")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("QUERYGPT_QDRANT_URLS", "localhost:6333"),
        ("QUERYGPT_QDRANT_URLS", "ftp://qdrant"),
        ("QUERYGPT_QDRANT_URLS", "http://10.0.2.10:6333,localhost:6333"),
        ("QUERYGPT_QDRANT_URLS", " , "),
        ("QUERYGPT_QDRANT_URLS", "http://10.0.2.10:6333,"),
        ("QUERYGPT_QDRANT_URLS", "http://10.0.2.10:6333, http://10.0.2.10:6333/"),
        ("QUERYGPT_QDRANT_COOLDOWN_SECONDS", "0"),
        ("QUERYGPT_QDRANT_COOLDOWN_SECONDS", "soon"),
        ("QUERYGPT_QDRANT_CONNECT_TIMEOUT_SECONDS", "0"),
        ("QUERYGPT_QDRANT_CONNECT_TIMEOUT_SECONDS", "61"),
        ("QUERYGPT_QDRANT_CONNECT_TIMEOUT_SECONDS", "-1"),
        ("QUERYGPT_OLLAMA_URLS", "http://host:notaport"),
        ("QUERYGPT_OLLAMA_URLS", "http://10.0.0.5:11434,localhost:11434"),
        ("QUERYGPT_OLLAMA_URLS", " , "),
        ("QUERYGPT_OLLAMA_URLS", "http://10.0.0.5:11434,"),
        ("QUERYGPT_OLLAMA_URLS", "http://10.0.0.5:11434,,http://10.0.0.6:11434"),
        ("QUERYGPT_OLLAMA_URLS", "http://10.0.0.5:11434, http://10.0.0.5:11434/"),
        ("QUERYGPT_OLLAMA_URLS", "http://ollama, http://OLLAMA:80"),
        ("QUERYGPT_OLLAMA_COOLDOWN_SECONDS", "0"),
        ("QUERYGPT_OLLAMA_COOLDOWN_SECONDS", "soon"),
        ("QUERYGPT_EMBED_MODEL", "all minilm"),
        ("QUERYGPT_TOP_K", "0"),
        ("QUERYGPT_TOP_K", "five"),
        ("QUERYGPT_CHUNK_SIZE", "-1"),
        ("QUERYGPT_CHUNK_UNIT", "tokens"),
        ("QUERYGPT_MAX_UPLOAD_BYTES", "20MB"),
        ("QUERYGPT_DEFAULT_COLLECTION", "my docs"),
        ("QUERYGPT_PORT", "70000"),
        ("QUERYGPT_WORKERS", "0"),
        ("QUERYGPT_LOG_LEVEL", "verbose"),
        ("QUERYGPT_REQUEST_TIMEOUT", "0"),
        ("QUERYGPT_HOST", "0.0.0.0/0"),
        ("QUERYGPT_DOCUMENTS_BUCKET", "My_Documents"),
        ("QUERYGPT_DOCUMENTS_BUCKET", "s3://querygpt-documents"),
        ("QUERYGPT_DOCUMENTS_PREFIX", "documents/../etc"),
        ("QUERYGPT_DOCUMENTS_PREFIX", "a//b"),
        ("QUERYGPT_DOCUMENTS_PREFIX", "my documents"),
        ("QUERYGPT_S3_ENDPOINT_URL", "minio:9000"),
        ("QUERYGPT_S3_REGION", "eu central"),
        ("QUERYGPT_S3_KMS_KEY_ID", "alias/my key"),
        ("QUERYGPT_PDF_MAX_PAGES", "0"),
        ("QUERYGPT_PDF_MAX_CHARS", "999"),
        ("QUERYGPT_PDF_MAX_CHUNKS", "many"),
        ("QUERYGPT_PDF_MAX_STREAM_BYTES", "1024"),
        ("QUERYGPT_PDF_MEMORY_BYTES", str(64 * 1024 * 1024)),
        ("QUERYGPT_PDF_CPU_SECONDS", "0"),
        ("QUERYGPT_QDRANT_SHARD_NUMBER", "0"),
        ("QUERYGPT_QDRANT_SHARD_NUMBER", "3000"),
        ("QUERYGPT_QDRANT_REPLICATION_FACTOR", "two"),
        ("QUERYGPT_QDRANT_REPLICATION_FACTOR", "0"),
        ("QUERYGPT_QDRANT_WRITE_CONSISTENCY_FACTOR", "0"),
        ("QUERYGPT_DATABASE_HOSTS", "db-1,,db-2"),
        ("QUERYGPT_DATABASE_HOSTS", "db-1:port"),
        ("QUERYGPT_DATABASE_HOSTS", "db-1:70000"),
        ("QUERYGPT_DATABASE_HOSTS", "db-1:"),
        ("QUERYGPT_DATABASE_HOSTS", "postgresql://db-1/querygpt"),
        ("QUERYGPT_DATABASE_HOSTS", "db-1,DB-1:5432"),
        ("QUERYGPT_DATABASE_HOSTS", "[fd00::7"),
        ("QUERYGPT_DATABASE_NAME", "query-gpt"),
        ("QUERYGPT_DATABASE_USER", "1user"),
        ("QUERYGPT_DATABASE_SSLMODE", "on"),
        ("QUERYGPT_DATABASE_SSLROOTCERT", "internal-ca.pem"),
        ("QUERYGPT_DATABASE_SSLROOTCERT", "/nonexistent/internal-ca.pem"),
        ("QUERYGPT_DATABASE_CONNECT_TIMEOUT_SECONDS", "0"),
        ("QUERYGPT_DATABASE_POOL_SIZE", "100"),
    ],
)
def test_invalid_value_names_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({**BUCKET, variable: value})
    assert info.value.variable == variable
    assert str(info.value).startswith(variable)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (",", "must list at least one http(s) URL"),
        ("http://10.0.0.5:11434, ,http://10.0.0.6:11434", "has an empty item"),
        ("http://10.0.0.5:11434,ftp://10.0.0.6", "item 2 must be an http(s) URL"),
        ("http://10.0.0.5:11434,http://10.0.0.5:11434/", "lists the same URL twice"),
    ],
)
@pytest.mark.parametrize("variable", ["QUERYGPT_OLLAMA_URLS", "QUERYGPT_QDRANT_URLS"])
def test_url_lists_errors_say_what_is_wrong(variable: str, value: str, problem: str) -> None:
    # Both lists are parsed alike, with the same messages.
    with pytest.raises(ConfigError) as info:
        Settings.from_env({**BUCKET, variable: value})
    assert str(info.value).startswith(f"{variable} {problem}"), str(info.value)


def test_collection_layout_is_read_and_defaults_to_one_copy() -> None:
    assert CollectionLayout.from_settings(Settings.from_env(BUCKET)) == CollectionLayout(1, 1, 1)
    settings = Settings.from_env(
        {
            **BUCKET,
            "QUERYGPT_QDRANT_SHARD_NUMBER": "6",
            "QUERYGPT_QDRANT_REPLICATION_FACTOR": "2",
            "QUERYGPT_QDRANT_WRITE_CONSISTENCY_FACTOR": "2",
        }
    )
    assert CollectionLayout.from_settings(settings) == CollectionLayout(6, 2, 2)


def test_write_consistency_above_the_replication_factor_is_refused() -> None:
    # Every write would need more acknowledgements than there are copies.
    with pytest.raises(ConfigError) as info:
        Settings.from_env(
            {
                **BUCKET,
                "QUERYGPT_QDRANT_REPLICATION_FACTOR": "2",
                "QUERYGPT_QDRANT_WRITE_CONSISTENCY_FACTOR": "3",
            }
        )
    assert info.value.variable == "QUERYGPT_QDRANT_WRITE_CONSISTENCY_FACTOR"
    assert "must not exceed QUERYGPT_QDRANT_REPLICATION_FACTOR (2), got 3" in str(info.value)


def test_the_replaced_single_ollama_url_is_refused_not_ignored() -> None:
    # Ignored, it would send every call to the default 127.0.0.1:11434 without a word.
    with pytest.raises(ConfigError) as info:
        Settings.from_env({**BUCKET, "QUERYGPT_OLLAMA_URL": "http://10.0.0.5:11434"})
    assert info.value.variable == "QUERYGPT_OLLAMA_URL"
    assert "rename it to QUERYGPT_OLLAMA_URLS" in str(info.value)


def test_the_replaced_single_qdrant_url_is_refused_not_ignored() -> None:
    # Ignored, it would send every operation to the default 127.0.0.1:6333 without a word.
    with pytest.raises(ConfigError) as info:
        Settings.from_env({**BUCKET, "QUERYGPT_QDRANT_URL": "http://10.0.2.10:6333"})
    assert info.value.variable == "QUERYGPT_QDRANT_URL"
    assert "rename it to QUERYGPT_QDRANT_URLS" in str(info.value)
    assert "one per peer" in str(info.value)
    # Refused even next to the new variable: a half-renamed file is a mistake to point out.
    with pytest.raises(ConfigError):
        Settings.from_env(
            {
                **BUCKET,
                "QUERYGPT_QDRANT_URL": "http://10.0.2.10:6333",
                "QUERYGPT_QDRANT_URLS": "http://10.0.2.10:6333",
            }
        )


def test_overlap_must_be_smaller_than_size() -> None:
    with pytest.raises(ConfigError, match="QUERYGPT_CHUNK_OVERLAP.*QUERYGPT_CHUNK_SIZE"):
        Settings.from_env({"QUERYGPT_CHUNK_SIZE": "100", "QUERYGPT_CHUNK_OVERLAP": "100"})


@pytest.mark.parametrize("value", [None, "", "   "])
def test_documents_bucket_is_required(value: str | None) -> None:
    environ = {} if value is None else {"QUERYGPT_DOCUMENTS_BUCKET": value}
    with pytest.raises(ConfigError) as info:
        Settings.from_env(environ)
    assert info.value.variable == "QUERYGPT_DOCUMENTS_BUCKET"
    assert "backend_documents_bucket" in str(info.value)  # where to set it


def test_a_malformed_variable_is_reported_before_the_missing_bucket() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"QUERYGPT_PORT": "eighty"})
    assert info.value.variable == "QUERYGPT_PORT"


@pytest.mark.parametrize(
    ("given", "missing"),
    [
        ("QUERYGPT_S3_ACCESS_KEY_ID", "QUERYGPT_S3_SECRET_ACCESS_KEY"),
        ("QUERYGPT_S3_SECRET_ACCESS_KEY", "QUERYGPT_S3_ACCESS_KEY_ID"),
    ],
)
def test_static_s3_keys_come_in_pairs(given: str, missing: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({**BUCKET, given: "only-half-of-a-pair"})
    assert info.value.variable == missing
    assert "only-half-of-a-pair" not in str(info.value)


def test_secrets_are_not_in_repr_nor_in_error_messages() -> None:
    settings = Settings.from_env(
        {
            **BUCKET,
            "QUERYGPT_QDRANT_API_KEY": "very-secret",
            "QUERYGPT_QDRANT_API_KEY_PREVIOUS": "old-secret",
            "QUERYGPT_S3_ACCESS_KEY_ID": "AKIASECRETID",
            "QUERYGPT_S3_SECRET_ACCESS_KEY": "s3-very-secret",
        }
    )
    for secret in ("very-secret", "old-secret", "AKIASECRETID", "s3-very-secret"):
        assert secret not in repr(settings)
    assert set(settings.secrets()) == {
        "very-secret", "old-secret", "AKIASECRETID", "s3-very-secret", SECRET_KEY
    }
    assert settings.qdrant_api_keys == ("very-secret", "old-secret")
    with pytest.raises(ConfigError) as info:
        Settings.from_env({**BUCKET, "QUERYGPT_S3_SECRET_ACCESS_KEY": "bad secret with spaces"})
    assert "bad secret" not in str(info.value)


@pytest.mark.parametrize("value", [None, "", "  "])
def test_database_hosts_are_required(value: str | None) -> None:
    environ = {**BUCKET}
    del environ["QUERYGPT_DATABASE_HOSTS"]
    if value is not None:
        environ["QUERYGPT_DATABASE_HOSTS"] = value
    with pytest.raises(ConfigError) as info:
        Settings.from_env(environ)
    assert info.value.variable == "QUERYGPT_DATABASE_HOSTS"
    assert "primary and standbys" in str(info.value)


@pytest.mark.parametrize("sslmode", ["verify-full", "verify-ca"])
def test_a_verifying_sslmode_needs_the_ca(sslmode: str) -> None:
    environ = {**BUCKET, "QUERYGPT_DATABASE_SSLMODE": sslmode}
    del environ["QUERYGPT_DATABASE_SSLROOTCERT"]
    with pytest.raises(ConfigError) as info:
        Settings.from_env(environ)
    assert info.value.variable == "QUERYGPT_DATABASE_SSLROOTCERT"
    # Without verification no CA is needed (e.g. a loopback test server).
    environ["QUERYGPT_DATABASE_SSLMODE"] = "require"
    assert Settings.from_env(environ).database_sslrootcert is None


def test_database_password_is_a_secret() -> None:
    password = "pg-Pa55/with spaces"
    settings = Settings.from_env({**BUCKET, "QUERYGPT_DATABASE_PASSWORD": password})
    assert password not in repr(settings)
    assert password in settings.secrets()
    with pytest.raises(ConfigError) as info:
        Settings.from_env({**BUCKET, "QUERYGPT_DATABASE_PASSWORD": "line1\nsecret-line2"})
    assert info.value.variable == "QUERYGPT_DATABASE_PASSWORD"
    assert "secret-line2" not in str(info.value)


def test_identity_defaults_match_the_contract() -> None:
    """docs/access-control.md: 8 h idle, 24 h absolute, 30/10 per minute, 2/1 in flight, 1 GiB."""
    settings = Settings.from_env(BUCKET)
    assert (settings.session_idle_seconds, settings.session_max_seconds) == (8 * 3600, 24 * 3600)
    assert (settings.user_query_rate_per_minute, settings.user_upload_rate_per_minute) == (30, 10)
    assert (settings.user_max_concurrent_queries, settings.user_max_concurrent_uploads) == (2, 1)
    assert settings.user_storage_quota_bytes == 1024**3


@pytest.mark.parametrize(
    ("value", "problem"),
    [(None, "is empty"), ("", "is empty"), ("s" * 31, "is too short (31 characters)")],
)
def test_the_secret_key_is_required_and_long(value, problem) -> None:
    env = {k: v for k, v in BUCKET.items() if k != "QUERYGPT_SECRET_KEY"}
    if value is not None:
        env["QUERYGPT_SECRET_KEY"] = value
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert info.value.variable == "QUERYGPT_SECRET_KEY"
    assert problem in str(info.value)
    if value:
        assert value not in str(info.value)  # never echoed


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("QUERYGPT_SESSION_IDLE_SECONDS", "0"),
        ("QUERYGPT_SESSION_IDLE_SECONDS", "90000"),  # longer than the 24 h maximum
        ("QUERYGPT_SESSION_MAX_SECONDS", "ten"),
        ("QUERYGPT_USER_QUERY_RATE_PER_MINUTE", "0"),
        ("QUERYGPT_USER_UPLOAD_RATE_PER_MINUTE", "-1"),
        ("QUERYGPT_USER_MAX_CONCURRENT_QUERIES", "33"),
        ("QUERYGPT_USER_MAX_CONCURRENT_UPLOADS", "0"),
        ("QUERYGPT_USER_STORAGE_QUOTA_BYTES", "lots"),
    ],
)
def test_identity_settings_are_bounded(variable, value) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({**BUCKET, variable: value})
    assert info.value.variable == variable


def test_there_is_no_setting_to_make_the_cookie_insecure() -> None:
    assert not any("COOKIE" in name for name in DEFAULTS)


def test_a_previous_qdrant_key_alone_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({**BUCKET, "QUERYGPT_QDRANT_API_KEY_PREVIOUS": "old-secret"})
    assert info.value.variable == "QUERYGPT_QDRANT_API_KEY_PREVIOUS"
    assert "old-secret" not in str(info.value)
