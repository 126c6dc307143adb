"""Configuration comes only from the environment and fails loudly, naming
the variable, when a value is unusable."""

from __future__ import annotations

import pytest
from querygpt.config import DEFAULTS, Settings
from querygpt.errors import ConfigError


def test_defaults_match_documented_values() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.qdrant_api_key is None
    assert settings.embed_model == "all-minilm"
    assert settings.llm_model == "qwen2.5-coder:1.5b"
    assert settings.port == 8000
    assert settings.max_upload_bytes == 20 * 1024 * 1024
    # Every default is parseable by the same code that parses the environment.
    assert set(DEFAULTS) >= {
        "QUERYGPT_QDRANT_URL",
        "QUERYGPT_QDRANT_API_KEY",
        "QUERYGPT_OLLAMA_URL",
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
    }


def test_values_are_read_and_normalised() -> None:
    settings = Settings.from_env(
        {
            "QUERYGPT_QDRANT_URL": "https://qdrant.internal:6333/",
            "QUERYGPT_QDRANT_API_KEY": " key ",
            "QUERYGPT_OLLAMA_URL": "http://10.0.0.5:11434",
            "QUERYGPT_TOP_K": "8",
            "QUERYGPT_CHUNK_SIZE": "300",
            "QUERYGPT_CHUNK_OVERLAP": "0",
            "QUERYGPT_CHUNK_UNIT": "WORDS",
            "QUERYGPT_LOG_LEVEL": "debug",
            "QUERYGPT_WORKERS": "4",
            "QUERYGPT_REQUEST_TIMEOUT": "2.5",
            "QUERYGPT_DEFAULT_COLLECTION": "schemas_v2",
            "QUERYGPT_PORT": "",  # empty means default
        }
    )
    assert settings.qdrant_url == "https://qdrant.internal:6333"
    assert settings.qdrant_api_key == "key"
    assert settings.top_k == 8
    assert (settings.chunk_size, settings.chunk_overlap, settings.chunk_unit) == (300, 0, "words")
    assert settings.log_level == "DEBUG"
    assert settings.workers == 4
    assert settings.request_timeout == 2.5
    assert settings.default_collection == "schemas_v2"
    assert settings.port == 8000


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("QUERYGPT_QDRANT_URL", "localhost:6333"),
        ("QUERYGPT_QDRANT_URL", "ftp://qdrant"),
        ("QUERYGPT_OLLAMA_URL", "http://host:notaport"),
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
    ],
)
def test_invalid_value_names_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({variable: value})
    assert info.value.variable == variable
    assert str(info.value).startswith(variable)


def test_overlap_must_be_smaller_than_size() -> None:
    with pytest.raises(ConfigError, match="QUERYGPT_CHUNK_OVERLAP.*QUERYGPT_CHUNK_SIZE"):
        Settings.from_env({"QUERYGPT_CHUNK_SIZE": "100", "QUERYGPT_CHUNK_OVERLAP": "100"})


def test_api_key_is_not_in_repr() -> None:
    settings = Settings.from_env({"QUERYGPT_QDRANT_API_KEY": "very-secret"})
    assert "very-secret" not in repr(settings)
