"""``querygpt-backend reindex``: rebuild collections from the documents bucket.

Documents are uploaded through the API (moto S3, in-memory Qdrant, fake
Ollama), the collection is emptied as if Qdrant had been lost, and the
reindex must bring back exactly the same points: same ids, same payloads.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from qdrant_client import QdrantClient
from querygpt import cli, reindex
from querygpt.envfile import EnvFileError, parse_env_file
from querygpt_testkit import DOCUMENTS_BUCKET, S3_REGION, make_pdf, points, upload

ORDERS_V1 = make_pdf([["Table orders: one row per order.", "orders.id INTEGER PRIMARY KEY"]])
ORDERS_V2 = make_pdf(
    [
        ["Table orders: one row per order.", "orders.id INTEGER PRIMARY KEY"],
        ["orders.total NUMERIC(10,2)", "orders.placed_at TIMESTAMP"],
    ]
)


@pytest.fixture
def qdrant() -> QdrantClient:
    return QdrantClient(":memory:")


@pytest.fixture
def uploaded(make_client, qdrant, schema_pdf) -> dict[str, dict[str, Any]]:
    """Two documents in ``querygpt`` (orders.pdf re-uploaded: its earlier version is
    noncurrent in the bucket) and one in ``sales``; the upload responses by name."""
    client = make_client(qdrant)
    bodies = {}
    for data, filename, collection in (
        (schema_pdf, "shop schema.pdf", "querygpt"),
        (ORDERS_V1, "orders.pdf", "querygpt"),
        (ORDERS_V2, "orders.pdf", "querygpt"),
        (schema_pdf, "sales.pdf", "sales"),
    ):
        response = upload(client, data, filename=filename, collection_name=collection)
        assert response.status_code == 200, response.text
        bodies[filename] = response.json()
    return bodies


@pytest.fixture
def run_reindex(settings, fake_ollama, qdrant):
    """``reindex.run`` with the test seams; keyword args override settings fields."""

    def run(collections: list[str] | None, **overrides: Any) -> reindex.Summary:
        return reindex.run(
            replace(settings, **overrides),
            collections,
            qdrant_client=qdrant,
            http_transport=httpx.MockTransport(fake_ollama),
        )

    return run


def test_reindex_rebuilds_an_emptied_collection(uploaded, qdrant, run_reindex) -> None:
    before = points(qdrant, "querygpt")
    assert {p["s3_version_id"] for p in before.values() if p["s3_key"].endswith("orders.pdf")} == {
        uploaded["orders.pdf"]["s3_version_id"]
    }
    qdrant.delete_collection("querygpt")  # Qdrant and its snapshots are lost

    summary = run_reindex(["querygpt"])
    assert summary.ok, summary.failures
    assert (summary.documents, summary.points) == (2, len(before))
    assert summary.collections == ["querygpt"]
    assert points(qdrant, "querygpt") == before  # same ids, same payloads
    assert qdrant.get_collection("querygpt").config.params.vectors.size == 32


def test_reindex_twice_gives_the_same_points(uploaded, qdrant, run_reindex) -> None:
    before = {name: points(qdrant, name) for name in ("querygpt", "sales")}
    for _ in range(2):
        summary = run_reindex(None)  # --all
        assert summary.ok, summary.failures
        assert summary.collections == ["querygpt", "sales"]
        assert summary.documents == 3
        assert {name: points(qdrant, name) for name in before} == before


def test_reindex_with_other_chunk_settings_leaves_no_stale_chunks(
    uploaded, qdrant, run_reindex
) -> None:
    before = qdrant.count("querygpt").count
    summary = run_reindex(["querygpt"], chunk_size=2000, chunk_overlap=0)
    assert summary.ok and summary.points < before
    assert qdrant.count("querygpt").count == summary.points


def test_failed_reindex_of_a_live_collection_keeps_what_was_searchable(
    uploaded, qdrant, fake_ollama, run_reindex
) -> None:
    before = points(qdrant, "querygpt")
    fake_ollama.fail_embed_call = len(fake_ollama.embed_calls) + 2  # first document, batch 2
    summary = run_reindex(["querygpt"], embed_batch_size=1)
    assert [f.key for f in summary.failures] == [uploaded["orders.pdf"]["s3_key"]]
    assert "left in place" in summary.failures[0].error
    assert summary.documents == 1  # the next document is still reindexed
    assert points(qdrant, "querygpt") == before  # nothing became unsearchable


def test_corrupted_object_is_reported_and_not_indexed(uploaded, s3, qdrant, run_reindex) -> None:
    key = uploaded["orders.pdf"]["s3_key"]
    good_sha = uploaded["orders.pdf"]["sha256"]
    # Bytes damaged in storage: the recorded checksum no longer matches.
    s3.put_object(Bucket=DOCUMENTS_BUCKET, Key=key, Body=ORDERS_V1, Metadata={"sha256": good_sha})
    # An object nobody stored through QueryGPT: no checksum to verify.
    s3.put_object(Bucket=DOCUMENTS_BUCKET, Key="documents/querygpt/stray.pdf", Body=ORDERS_V1)
    qdrant.delete_collection("querygpt")

    summary = run_reindex(["querygpt"])
    assert not summary.ok
    assert summary.documents == 1  # the intact one is still rebuilt
    assert summary.points == uploaded["shop schema.pdf"]["chunks"]
    failures = {f.key: f for f in summary.failures}
    assert set(failures) == {key, "documents/querygpt/stray.pdf"}
    mismatch = failures[key].error
    assert "sha256 mismatch" in mismatch and good_sha in mismatch
    assert hashlib.sha256(ORDERS_V1).hexdigest() in mismatch
    assert failures[key].version_id  # which version to look at
    assert "none recorded" in failures["documents/querygpt/stray.pdf"].error
    indexed = {p["s3_key"] for p in points(qdrant, "querygpt").values()}
    assert indexed == {uploaded["shop schema.pdf"]["s3_key"]}


def test_missing_collection_folder_is_a_failure(s3, run_reindex) -> None:
    summary = run_reindex(["nothing_here"])
    assert not summary.ok
    assert summary.failures[0].collection == "nothing_here"
    assert "no documents under s3://" in summary.failures[0].error


def test_unreachable_service_stops_the_run(uploaded, qdrant, fake_ollama, run_reindex) -> None:
    qdrant.delete_collection("querygpt")
    fake_ollama.ollama_up = False
    summary = run_reindex(None)
    assert summary.stopped_early and len(summary.failures) == 1
    assert "Ollama" in summary.failures[0].error


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def env_file(tmp_path: Path, monkeypatch, database) -> Path:
    """The service's env file as the role writes it; no QUERYGPT_* in the process env."""
    for name in list(os.environ):
        if name.startswith("QUERYGPT_"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(cli, "DEFAULT_ENV_FILE", tmp_path / "absent.env")
    path = tmp_path / "backend.env"
    path.write_text(
        "# Ansible managed\n"
        f"QUERYGPT_DOCUMENTS_BUCKET={DOCUMENTS_BUCKET}\n"
        "QUERYGPT_DOCUMENTS_PREFIX=documents\n"
        f"QUERYGPT_S3_REGION={S3_REGION}\n"
        'QUERYGPT_QDRANT_API_KEY="k\\"ey\\\\1"\n'
        "QUERYGPT_CHUNK_SIZE=120\n"
        "QUERYGPT_CHUNK_OVERLAP=20\n"
        + "".join(f"{name}={value}\n" for name, value in database.environ().items())
    )
    return path


@pytest.fixture
def cli_seams(monkeypatch, qdrant, fake_ollama) -> list[Any]:
    """Route the CLI's reindex to the test's Qdrant and Ollama; records its settings."""
    seen: list[Any] = []
    real = functools.partial(
        reindex.run, qdrant_client=qdrant, http_transport=httpx.MockTransport(fake_ollama)
    )

    def run(settings, collections):
        seen.append(settings)
        return real(settings, collections)

    monkeypatch.setattr(reindex, "run", run)
    return seen


def test_cli_prints_a_json_summary_and_exits_0(
    uploaded, qdrant, env_file, cli_seams, capsys
) -> None:
    expected = qdrant.count("querygpt").count
    qdrant.delete_collection("querygpt")
    code = cli.main(["reindex", "--collection", "querygpt", "--env-file", str(env_file)])
    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(out)  # stdout is only the summary; logs go to stderr
    assert summary == {
        "ok": True,
        "bucket": DOCUMENTS_BUCKET,
        "prefix": "documents",
        "collections": ["querygpt"],
        "documents": 2,
        "points": expected,
        "failures": [],
        "stopped_early": False,
    }
    assert '"document indexed"' in err or "document indexed" in err
    assert cli_seams[0].qdrant_api_key == 'k"ey\\1'  # the role's escaping, undone


def test_cli_exits_1_when_a_document_fails(
    uploaded, s3, env_file, cli_seams, capsys
) -> None:
    key = uploaded["orders.pdf"]["s3_key"]
    damaged = {"Body": b"%PDF-1.4 damaged", "Metadata": {"sha256": "0" * 64}}
    s3.put_object(Bucket=DOCUMENTS_BUCKET, Key=key, **damaged)
    code = cli.main(["reindex", "--all", "--env-file", str(env_file)])
    summary = json.loads(capsys.readouterr().out)
    assert code == 1
    assert summary["ok"] is False and summary["documents"] == 2
    assert [(f["collection"], f["key"]) for f in summary["failures"]] == [("querygpt", key)]


def test_cli_uses_the_service_env_file_by_default(
    uploaded, env_file, cli_seams, monkeypatch, capsys
) -> None:
    monkeypatch.setattr(cli, "DEFAULT_ENV_FILE", env_file)
    monkeypatch.setenv("QUERYGPT_DOCUMENTS_PREFIX", "documents")  # the shell may override
    assert cli.main(["reindex", "--collection", "sales"]) == 0
    assert json.loads(capsys.readouterr().out)["documents"] == 1
    assert cli_seams[0].documents_bucket == DOCUMENTS_BUCKET


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["reindex"], "one of the arguments --collection --all is required"),
        (["reindex", "--all", "--collection", "x"], "not allowed with argument"),
        (["reindex", "--collection", "no spaces"], "is not a collection name"),
    ],
)
def test_cli_usage_errors_exit_2(args, message, env_file, capsys) -> None:
    assert cli.main(args) == 2
    assert message in capsys.readouterr().err


def test_cli_without_a_bucket_exits_2_naming_the_variable(tmp_path, env_file, capsys) -> None:
    bare = tmp_path / "bare.env"
    bare.write_text("QUERYGPT_QDRANT_URLS=http://127.0.0.1:6333\n")
    assert cli.main(["reindex", "--all", "--env-file", str(bare)]) == 2
    err = capsys.readouterr().err
    assert "QUERYGPT_DOCUMENTS_BUCKET is empty" in err and str(bare) in err


def test_cli_with_an_unreadable_env_file_exits_2(tmp_path, env_file, capsys) -> None:
    missing = tmp_path / "nope.env"
    assert cli.main(["reindex", "--all", "--env-file", str(missing)]) == 2
    assert f"cannot read {missing}" in capsys.readouterr().err


def test_env_file_syntax(tmp_path: Path) -> None:
    path = tmp_path / "x.env"
    path.write_text(
        "# comment\n; comment\n\n"
        "PLAIN=a b=c\n"
        'QUOTED="with \\"quotes\\" and \\\\ backslash"\n'
        "SINGLE='kept $as \\ is'\n"
        "EMPTY=\n"
    )
    assert parse_env_file(path) == {
        "PLAIN": "a b=c",
        "QUOTED": 'with "quotes" and \\ backslash',
        "SINGLE": "kept $as \\ is",
        "EMPTY": "",
    }
    path.write_text('BROKEN="unterminated\\"\n')
    with pytest.raises(EnvFileError, match=r"x.env:1: BROKEN: unterminated"):
        parse_env_file(path)
    path.write_text("not a variable\n")
    with pytest.raises(EnvFileError, match=r"x.env:1: expected NAME=VALUE"):
        parse_env_file(path)
