"""What the throughput work (benchmarks/backup_throughput.py, docs/backups.md "Throughput")
changed in the backup program, pinned: the restore hashes its download in the same pass
and in order, each run reports where its time went (Qdrant's part apart from the
program's), disabled retention lists nothing, and a process parses the S3 model once."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest

from backup_testkit import BUCKET, QdrantStandin

NOW = datetime(2026, 11, 26, 2, 17, 0, tzinfo=timezone.utc)
MIB = 1024 * 1024


def stored(qb: ModuleType, s3: Any, config: Any, collection: str, body: bytes, sha256: str = "") -> Any:
    """An object of `body` with the metadata a backup records, and its Backup record."""
    key = f"{config.s3_prefix}/{collection}/{NOW:%Y%m%dT%H%M%SZ}.snapshot"
    digest = sha256 or hashlib.sha256(body).hexdigest()
    s3.put_object(Bucket=BUCKET, Key=key, Body=body, Metadata={"sha256": digest, "size": str(len(body))})
    return qb.Backup(key=key, collection=collection, taken_at=NOW, size=len(body), sha256=digest,
                     meta_size=len(body))


def test_restore_download_is_hashed_in_order_across_parallel_ranges(
        qb: ModuleType, s3: Any, config: Any, collection: str, tmp_path: Path) -> None:
    """Fails if the sink were seekable (s3transfer would then write the ranges as they
    arrive, out of order, past the hash) or if the hash missed part of the stream."""
    body = os.urandom(3 * MIB + 12345)
    backup = stored(qb, s3, config, collection, body)
    ranges: list[str] = []
    s3.meta.events.register("before-parameter-build.s3.GetObject",
                            lambda params, **_: ranges.append(params.get("Range", "")))
    small_parts = dataclasses.replace(config, s3_multipart_threshold_mb=1, s3_multipart_chunksize_mb=1,
                                      s3_max_concurrency=4)
    dest = tmp_path / "staged" / "c.snapshot"

    qb.download_verified(small_parts, s3, backup, dest)

    assert len(ranges) == 4 and all(r.startswith("bytes=") for r in ranges)
    assert dest.read_bytes() == body
    assert sorted(p.name for p in dest.parent.iterdir()) == ["c.snapshot"]


def test_restore_download_that_misses_the_record_is_refused_and_removed(
        qb: ModuleType, s3: Any, config: Any, collection: str, tmp_path: Path) -> None:
    backup = stored(qb, s3, config, collection, os.urandom(2 * MIB), sha256="0" * 64)
    dest = tmp_path / "staged" / "c.snapshot"

    with pytest.raises(qb.RestoreRefused, match="checksum mismatch"):
        qb.download_verified(dataclasses.replace(config, s3_multipart_threshold_mb=1,
                                                 s3_multipart_chunksize_mb=1), s3, backup, dest)

    assert list(dest.parent.iterdir()) == []  # neither the file nor its .part


def test_backup_and_restore_report_where_their_time_went(
        qb: ModuleType, qdrant: QdrantStandin, config: Any, collection: str) -> None:
    qdrant.make_collection(collection, 30)
    assert qb.run_backup(config, now=NOW) == 0
    state = json.loads((Path(config.state_dir) / "state.json").read_text())
    backup_seconds = state["collections"][collection]["seconds"]
    assert set(backup_seconds) == {"qdrant_snapshot", "transfer", "verify", "qdrant_cleanup", "retention"}
    assert all(v >= 0 for v in backup_seconds.values())

    result = qb.run_restore(config, collection)

    seconds = result["seconds"]
    assert set(seconds) == {"select", "download", "qdrant_recover", "qdrant_ready", "total"}
    assert seconds["total"] >= sum(v for k, v in seconds.items() if k != "total") - 0.01
    assert json.loads(json.dumps(result)) == result  # the CLI prints it as JSON


def test_disabled_retention_does_not_list_the_bucket(
        qb: ModuleType, s3: Any, config: Any, collection: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def listing(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("retention_days 0 must not list (one HEAD per object)")

    monkeypatch.setattr(qb, "list_backups", listing)
    assert qb.apply_retention(dataclasses.replace(config, retention_days=0), s3, collection, NOW) == []


def test_one_boto3_session_serves_every_client_of_a_process(
        qb: ModuleType, config: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[Any] = []

    class Counting(boto3.session.Session):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            made.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(qb, "_BOTO_SESSIONS", [])
    monkeypatch.setattr(boto3.session, "Session", Counting)

    first, second = qb.s3_client(config), qb.s3_client(dataclasses.replace(config, s3_connect_timeout=7))

    assert len(made) == 1
    assert first is not second and second.meta.config.connect_timeout == 7
