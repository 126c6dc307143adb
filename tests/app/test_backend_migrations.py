"""Schema migrations: ``querygpt-backend migrate`` and ``--check`` on fresh databases of the
session's PostgreSQL, the advisory lock that lets several hosts run it at once, a failing
revision that must leave the previous one in place, and models that match the migrations."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from querygpt import cli, migrate
from querygpt.database import make_engine
from querygpt_testkit import DOCUMENTS_BUCKET, TestDatabase

BACKEND_SRC = Path(__file__).resolve().parents[2] / "app" / "backend" / "src"
TABLES = {
    "alembic_version", "collections", "documents", "query_history",
    # 0002: identity (docs/access-control.md)
    "users", "grants", "api_tokens", "sessions", "audit_events",
}
#: This release's head revision.
HEAD = "0002"


@pytest.fixture
def fresh(postgres) -> Iterator[TestDatabase]:
    """An empty database of its own."""
    name = postgres.create_database(f"fresh_{uuid.uuid4().hex[:10]}")
    try:
        yield TestDatabase(postgres, name)
    finally:
        postgres.drop_database(name)


@pytest.fixture
def service_env(fresh, monkeypatch) -> dict[str, str]:
    """The service's variables in the process environment, as on a host."""
    for name in list(os.environ):
        if name.startswith("QUERYGPT_"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(cli, "DEFAULT_ENV_FILE", Path("/nonexistent/backend.env"))
    env = {"QUERYGPT_DOCUMENTS_BUCKET": DOCUMENTS_BUCKET, **fresh.environ()}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def tables(db: TestDatabase) -> set[str]:
    rows = db.query("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {name for (name,) in rows}


def test_migrate_from_empty_then_check(fresh, service_env, capsys) -> None:
    assert cli.main(["migrate", "--check"]) == 1
    out = capsys.readouterr().out
    assert "revision: none (empty database)" in out and "pending: 0001 0002" in out

    assert cli.main(["migrate"]) == 0
    out = capsys.readouterr().out
    assert "revision before: none (empty database)" in out
    assert "revision after: 0002" in out and "applied: 0001 0002" in out
    assert tables(fresh) == TABLES

    assert cli.main(["migrate", "--check"]) == 0
    assert "at head" in capsys.readouterr().out
    assert cli.main(["migrate"]) == 0  # idempotent
    assert "already at head" in capsys.readouterr().out
    # The password was passed to libpq, never printed.
    assert service_env["QUERYGPT_DATABASE_PASSWORD"] not in capsys.readouterr().err


def test_migrate_errors_exit_non_zero_with_a_reason(service_env, monkeypatch, capsys) -> None:
    monkeypatch.setenv("QUERYGPT_DATABASE_SSLMODE", "sometimes")
    assert cli.main(["migrate"]) == 2
    assert "QUERYGPT_DATABASE_SSLMODE" in capsys.readouterr().err
    monkeypatch.delenv("QUERYGPT_DATABASE_SSLMODE")
    monkeypatch.delenv("QUERYGPT_DATABASE_HOSTS")
    assert cli.main(["migrate", "--check"]) == 2
    assert "QUERYGPT_DATABASE_HOSTS is empty" in capsys.readouterr().err

    from pgserver import free_port

    monkeypatch.setenv("QUERYGPT_DATABASE_HOSTS", f"127.0.0.1:{free_port()}")
    monkeypatch.setenv("QUERYGPT_DATABASE_SSLMODE", "disable")
    assert cli.main(["migrate", "--check"]) == 3
    assert "could not read the schema revision: OperationalError" in capsys.readouterr().err
    assert cli.main(["migrate"]) == 1
    assert "could not migrate: OperationalError" in capsys.readouterr().err


def test_two_hosts_migrating_at_once_take_turns(fresh) -> None:
    """Two ``querygpt-backend migrate`` processes started together: both succeed, one applies
    the revision, the other finds it applied."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("QUERYGPT_")},
        "PYTHONPATH": str(BACKEND_SRC),
        "QUERYGPT_DOCUMENTS_BUCKET": DOCUMENTS_BUCKET,
        **fresh.environ(),
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "querygpt", "migrate"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(2)
    ]
    results = [proc.communicate(timeout=120) + (proc.returncode,) for proc in procs]
    assert [code for _, _, code in results] == [0, 0], results
    outs = sorted(out for out, _, _ in results)
    assert sum("applied: 0001 0002" in out for out in outs) == 1, outs
    assert sum("already at head" in out for out in outs) == 1, outs
    assert fresh.query("SELECT version_num FROM alembic_version") == [(HEAD,)]


def test_migrate_waits_for_the_advisory_lock(fresh) -> None:
    engine = make_engine(fresh.settings(), for_migrations=True)
    done = threading.Event()
    with fresh.server.admin(fresh.name) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (migrate.LOCK_KEY,))
        worker = threading.Thread(target=lambda: (migrate.upgrade(engine), done.set()))
        worker.start()
        time.sleep(1.0)
        assert not done.is_set(), "migrate ran while another session held the lock"
        assert tables(fresh) == set()
        holder.execute("SELECT pg_advisory_unlock(%s)", (migrate.LOCK_KEY,))
        worker.join(timeout=60)
    engine.dispose()
    assert done.is_set() and tables(fresh) == TABLES


def test_a_failing_revision_leaves_the_previous_one_in_place(fresh, tmp_path) -> None:
    scripts = tmp_path / "migrations"
    shutil.copytree(migrate.MIGRATIONS, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    (scripts / "versions" / "0003_broken.py").write_text(
        'import sqlalchemy as sa\n'
        'from alembic import op\n'
        'revision = "0003"\n'
        'down_revision = "0002"\n'
        'branch_labels = None\n'
        'depends_on = None\n'
        'def upgrade():\n'
        '    op.create_table("half_done", sa.Column("id", sa.Integer, primary_key=True))\n'
        '    op.add_column("documents", sa.Column("pages", sa.Integer))\n'
        '    raise RuntimeError("revision 0003 is broken")\n'
    )
    engine = make_engine(fresh.settings(), for_migrations=True)
    try:
        with pytest.raises(migrate.MigrationError) as info:
            migrate.upgrade(engine, scripts)
        assert "revision 0003 is broken" in str(info.value)
        assert "stays at revision 0002" in str(info.value)
        # 0001 and 0002 (each its own transaction) are in place; nothing of 0003 is.
        assert fresh.query("SELECT version_num FROM alembic_version") == [(HEAD,)]
        assert tables(fresh) == TABLES
        columns = fresh.query(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'documents'"
        )
        assert "pages" not in {name for (name,) in columns}
        # The lock was released: the shipped migrations still run (nothing to do).
        before, after = migrate.upgrade(engine)
        assert before.at_head and after == HEAD
    finally:
        engine.dispose()


def test_the_models_match_the_migrations(app_database) -> None:
    """Autogenerate finds nothing to add: models.py and the revisions describe one schema."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from querygpt.models import Base

    engine = make_engine(app_database.settings(), for_migrations=True)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


def test_the_migrations_ship_in_the_wheel(tmp_path) -> None:
    """``querygpt-backend migrate`` runs from the installed wheel: the scripts are package
    data. Built offline with the pinned setuptools already in the venv."""
    # A copy: building leaves build/ and *.egg-info behind.
    backend = tmp_path / "backend"
    shutil.copytree(
        BACKEND_SRC.parent, backend,
        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"),
    )
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "dist"), str(backend)],
        capture_output=True, text=True, timeout=300,
        cwd=tmp_path,
    )
    if result.returncode != 0 and "No module named setuptools" in result.stderr:
        pytest.fail("setuptools is missing from .venv: run `bin/lab bootstrap`")
    assert result.returncode == 0, result.stderr
    import zipfile

    (wheel,) = (tmp_path / "dist").glob("querygpt_backend-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {
        "querygpt/migrations/env.py",
        "querygpt/migrations/script.py.mako",
        "querygpt/migrations/versions/0001_initial.py",
        "querygpt/migrations/versions/0002_identity.py",
    } <= names
