"""The console script validates configuration before starting uvicorn and
prepares prometheus multiprocess mode."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from querygpt import __version__, cli
from querygpt_testkit import DATABASE_ENV

BACKEND_SRC = Path(__file__).resolve().parents[2] / "app" / "backend" / "src"


def test_invalid_config_exits_2_naming_the_variable(monkeypatch, capsys) -> None:
    monkeypatch.setenv("QUERYGPT_PORT", "eighty")
    assert cli.main([]) == 2
    err = capsys.readouterr().err
    assert "QUERYGPT_PORT" in err and "eighty" in err


def test_refuses_to_start_without_a_documents_bucket(monkeypatch, capsys) -> None:
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: pytest.fail("must not start"))
    monkeypatch.delenv("QUERYGPT_DOCUMENTS_BUCKET", raising=False)
    assert cli.main([]) == 2
    err = capsys.readouterr().err
    assert "invalid configuration: QUERYGPT_DOCUMENTS_BUCKET is empty" in err


def test_unknown_arguments_print_usage(capsys) -> None:
    assert cli.main(["--bogus"]) == 2
    assert "querygpt-backend reindex" in capsys.readouterr().err


def test_version_flag(capsys) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == __version__


def test_runs_uvicorn_with_env_settings(monkeypatch, tmp_path) -> None:
    calls = {}
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.update(app=app, **kw))
    monkeypatch.setenv("QUERYGPT_HOST", "0.0.0.0")
    monkeypatch.setenv("QUERYGPT_PORT", "8123")
    monkeypatch.setenv("QUERYGPT_WORKERS", "3")
    monkeypatch.setenv("QUERYGPT_DOCUMENTS_BUCKET", "querygpt-documents")
    for name, value in DATABASE_ENV.items():
        monkeypatch.setenv(name, value)
    prom = tmp_path / "prom"
    prom.mkdir()
    (prom / "counter_123.db").write_bytes(b"stale")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(prom))
    assert cli.main([]) == 0
    assert calls["app"] == "querygpt.app:create_app" and calls["factory"] is True
    assert (calls["host"], calls["port"], calls["workers"]) == ("0.0.0.0", 8123, 3)
    assert calls["log_config"] is None
    assert not list(prom.glob("*.db")), "stale metric files are removed at start"


def test_multiprocess_metrics(tmp_path) -> None:
    """With PROMETHEUS_MULTIPROC_DIR set (before import), /metrics aggregates
    the per-process files; runs in a subprocess to get a clean import."""
    script = textwrap.dedent("""
        import sys, warnings
        warnings.simplefilter("ignore")
        import httpx
        from fastapi.testclient import TestClient
        from qdrant_client import QdrantClient
        from querygpt.app import create_app
        from querygpt.config import Settings

        def fake(request):
            return httpx.Response(200, json={"version": "x"})

        # Static keys: building the S3 client then needs no credential lookup.
        settings = Settings(documents_bucket="querygpt-documents", s3_region="us-east-1",
                            s3_access_key_id="test", s3_secret_access_key="test",
                            # Never connected to: nothing here touches the database.
                            database_hosts=(("127.0.0.1", 9),), database_sslmode="disable",
                            secret_key="k" * 32)
        app = create_app(settings, qdrant_client=QdrantClient(":memory:"),
                         http_transport=httpx.MockTransport(fake))
        with TestClient(app) as client:
            client.get("/health")
            sys.stdout.write("METRICS\\n" + client.get("/metrics").text)
        """)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(BACKEND_SRC)}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    text = result.stdout.split("METRICS\n", 1)[1]
    assert 'querygpt_http_requests_total{method="GET",route="/health",status="200"} 1.0' in text
    assert "querygpt_documents_indexed" in text
    assert list(tmp_path.glob("*.db")), "values are kept in the multiprocess directory"
