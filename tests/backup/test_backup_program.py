"""The backup program (roles/backup/files/querygpt_backup.py) against the Qdrant stand-in
and moto's S3 server: upload layout and verification, failure handling and metrics,
retention with an injected clock, and restores that refuse bad snapshots."""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from botocore.exceptions import ClientError
import trustme

from backup_testkit import BUCKET, QdrantStandin, free_port
from crltestkit import write_crl

NOW = datetime(2026, 11, 26, 2, 17, 0, tzinfo=timezone.utc)


def metrics(config: Any) -> dict[str, float]:
    text = (Path(config.textfile_dir) / "querygpt_backup.prom").read_text()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line and not line.startswith("#")}


def keys(s3: Any, config: Any) -> list[str]:
    listing = s3.list_objects_v2(Bucket=BUCKET, Prefix=config.s3_prefix + "/")
    return sorted(o["Key"] for o in listing.get("Contents", []))


def test_backup_uploads_verified_snapshot_with_metadata(
        qb: ModuleType, qdrant: QdrantStandin, s3: Any, config: Any, collection: str) -> None:
    qdrant.make_collection(collection, 40)
    assert qb.run_backup(config, now=NOW) == 0

    key = f"{config.s3_prefix}/{collection}/20261126T021700Z.snapshot"
    assert keys(s3, config) == [key]
    obj = s3.get_object(Bucket=BUCKET, Key=key)
    body = obj["Body"].read()
    meta = obj["Metadata"]
    assert meta["sha256"] == hashlib.sha256(body).hexdigest()
    assert meta["size"] == str(len(body))
    assert meta["collection"] == collection
    assert meta["points-count"] == "40"
    assert re.fullmatch(r"\d+\.\d+\.\d+", meta["qdrant-version"])
    # the local snapshot is gone
    assert qdrant.call("GET", f"/collections/{collection}/snapshots") == []

    m = metrics(config)
    assert m["querygpt_backup_last_run_success"] == 1
    assert m[f'querygpt_backup_bytes{{collection="{collection}"}}'] == len(body)
    assert m[f'querygpt_backup_last_success_timestamp_seconds{{collection="{collection}"}}'] > 0
    assert m[f'querygpt_backup_failures_total{{collection="{collection}"}}'] == 0
    assert m["querygpt_backup_last_run_timestamp_seconds"] > 0
    assert "querygpt_backup_duration_seconds" in m
    # atomic writes leave no temporary files behind
    assert [p.name for p in Path(config.textfile_dir).iterdir()] == ["querygpt_backup.prom"]


def test_s3_unreachable_fails_sets_metric_and_keeps_old_backups(
        qb: ModuleType, qdrant: QdrantStandin, s3: Any, config: Any, collection: str) -> None:
    qdrant.make_collection(collection, 10)
    assert qb.run_backup(config, now=NOW - timedelta(days=1)) == 0
    before = keys(s3, config)
    good_ts = metrics(config)[f'querygpt_backup_last_success_timestamp_seconds{{collection="{collection}"}}']

    dead = dataclasses.replace(config, s3_endpoint_url=f"http://127.0.0.1:{free_port()}")
    assert qb.main(["--config", write_config(dead), "backup"]) == 1

    m = metrics(config)
    assert m["querygpt_backup_last_run_success"] == 0
    assert m[f'querygpt_backup_failures_total{{collection="{collection}"}}'] == 1
    # the last success stays what it was, so BackupStale keeps counting from it
    assert m[f'querygpt_backup_last_success_timestamp_seconds{{collection="{collection}"}}'] == good_ts
    assert keys(s3, config) == before
    assert qdrant.call("GET", f"/collections/{collection}/snapshots") == []


def test_qdrant_unreachable_counts_a_run_failure(qb: ModuleType, config: Any) -> None:
    dead = dataclasses.replace(config, qdrant_url=f"http://127.0.0.1:{free_port()}")
    assert qb.run_backup(dead, now=NOW) == 1
    m = metrics(config)
    assert m['querygpt_backup_failures_total{collection="_run"}'] == 1
    assert m["querygpt_backup_last_run_success"] == 0


def test_qdrant_certificate_not_from_the_configured_ca_fails_the_run(
        qb: ModuleType, qdrant: QdrantStandin, s3: Any, config: Any, collection: str, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """Qdrant's certificate is verified: with the system's CAs (qdrant_ca_file "") or another
    CA, the throw-away CA's certificate is refused and the run fails without uploading."""
    qdrant.make_collection(collection, 5)
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    for ca_file in ("", str(other)):
        unverified = dataclasses.replace(config, qdrant_ca_file=ca_file)
        assert qb.run_backup(unverified, now=NOW) == 1, ca_file
        assert metrics(config)["querygpt_backup_last_run_success"] == 0
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text
    assert keys(s3, config) == []
    # the same run with the right CA succeeds
    assert qb.run_backup(config, now=NOW) == 0


def test_a_revoked_qdrant_certificate_fails_the_run(
        qb: ModuleType, qdrant: QdrantStandin, s3: Any, config: Any, collection: str, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """The internal CA's CRL is checked as the backend checks it: a Qdrant certificate listed
    there is refused, so is one of a CA the file holds no CRL of, and a file with no CRL at all
    is a clear error; each run fails without uploading, and the empty CRL lets it through."""
    qdrant.make_collection(collection, 5)
    other = trustme.CA()
    cases = {"revoked": (qdrant.revoked_crl_file, "certificate revoked"),
             "another CA's CRL": (write_crl(other, tmp_path / "other-crl.pem"), "unable to get certificate CRL"),
             "no CRL in the file": (qdrant.ca_file, f"the CRL file {qdrant.ca_file} holds no CRL")}
    for case, (crl_file, needle) in cases.items():
        caplog.clear()
        assert qb.run_backup(dataclasses.replace(config, qdrant_crl_file=crl_file), now=NOW) == 1, case
        assert metrics(config)["querygpt_backup_last_run_success"] == 0, case
        assert needle in caplog.text, (case, caplog.text[-500:])
    assert keys(s3, config) == []
    assert qb.run_backup(config, now=NOW) == 0  # config: the CA's current, empty CRL


def test_overlapping_run_is_refused(qb: ModuleType, config: Any) -> None:
    path = write_config(config)
    with open(config.lock_file, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert qb.main(["--config", path, "backup"]) == 75


def write_config(config: Any) -> str:
    path = Path(config.state_dir).parent / f"config-{id(config)}.json"
    path.write_text(json.dumps(dataclasses.asdict(config)))
    return str(path)


# --------------------------------------------------------------------------- retention


def backup(qb: ModuleType, age_days: float, good: bool = True, name: str = "c") -> Any:
    taken = NOW - timedelta(days=age_days)
    return qb.Backup(key=f"p/{name}/{taken:%Y%m%dT%H%M%SZ}.snapshot", collection=name, taken_at=taken,
                     size=100, sha256="a" * 64 if good else "", meta_size=100 if good else -1)


def test_retention_deletes_only_past_the_period(qb: ModuleType) -> None:
    items = [backup(qb, d) for d in (0.5, 3, 6.9, 7.1, 10, 30)]
    doomed = qb.retention_deletions(items, NOW, 7)
    assert sorted(b.taken_at for b in doomed) == sorted(b.taken_at for b in items[3:])


def test_retention_never_deletes_the_newest_good_copy(qb: ModuleType) -> None:
    old_good = [backup(qb, d) for d in (20, 30, 40)]
    newer_bad = [backup(qb, d, good=False) for d in (8, 9)]
    doomed = qb.retention_deletions(old_good + newer_bad, NOW, 7)
    kept = {b.key for b in old_good + newer_bad} - {b.key for b in doomed}
    assert kept == {old_good[0].key}  # the newest good one, 20 days old


def test_retention_keeps_recent_bad_copies_and_zero_disables(qb: ModuleType) -> None:
    items = [backup(qb, 1, good=False), backup(qb, 2), backup(qb, 9)]
    assert qb.retention_deletions(items, NOW, 7) == [items[2]]
    assert qb.retention_deletions(items, NOW, 0) == []
    assert qb.retention_deletions([], NOW, 7) == []


def test_retention_in_s3_with_injected_time(
        qb: ModuleType, qdrant: QdrantStandin, s3: Any, config: Any, collection: str) -> None:
    qdrant.make_collection(collection, 5)
    for days in (9, 8, 6, 1):  # four daily runs at the injected times
        assert qb.run_backup(config, now=NOW - timedelta(days=days)) == 0
    # the run "now" prunes everything older than 7 days: 9 and 8 go
    assert qb.run_backup(config, now=NOW) == 0
    stamps = [k.rsplit("/", 1)[1] for k in keys(s3, config)]
    assert stamps == [f"{NOW - timedelta(days=d):%Y%m%dT%H%M%SZ}.snapshot" for d in (6, 1, 0)]
    # weeks without a backup: the newest good copy survives alone
    later = NOW + timedelta(days=40)
    oldest_two = keys(s3, config)[:2]
    assert qb.apply_retention(config, s3, collection, later) == oldest_two
    assert [k.rsplit("/", 1)[1] for k in keys(s3, config)] == [f"{NOW:%Y%m%dT%H%M%SZ}.snapshot"]


def test_a_backup_deleted_between_listing_and_reading_is_skipped(
        qb: ModuleType, qdrant: QdrantStandin, s3: Any, config: Any, collection: str) -> None:
    """Every holder of a cluster shard prunes that shard's backups, and the peers run at the
    same minute: an object another peer deleted after this one listed it is not an error."""
    qdrant.make_collection(collection, 5)
    for days in (2, 1):
        assert qb.run_backup(config, now=NOW - timedelta(days=days)) == 0
    first, second = keys(s3, config)

    class DeletedMeanwhile:  # deletes the first object right before its HEAD, as a peer would
        def __getattr__(self, name: str) -> Any:
            return getattr(s3, name)

        def head_object(self, **kwargs: Any) -> Any:
            if kwargs["Key"] == first:
                s3.delete_object(Bucket=BUCKET, Key=first)
            return s3.head_object(**kwargs)

    assert [b.key for b in qb.list_backups(config, DeletedMeanwhile(), collection)] == [second]
    assert qb.apply_retention(config, DeletedMeanwhile(), collection, NOW + timedelta(days=400)) == []
    # Where IAM lets the caller list only some prefixes, S3 answers 403 for a missing key:
    # skipped too, when the key is no longer listed.
    s3.put_object(Bucket=BUCKET, Key=first, Body=b"put back")

    class DeletedMeanwhileForbidden(DeletedMeanwhile):
        def head_object(self, **kwargs: Any) -> Any:
            if kwargs["Key"] == first:
                s3.delete_object(Bucket=BUCKET, Key=first)
                raise ClientError({"Error": {"Code": "403", "Message": "Forbidden"}}, "HeadObject")
            return s3.head_object(**kwargs)

    assert [b.key for b in qb.list_backups(config, DeletedMeanwhileForbidden(), collection)] == [second]

    # A 403 (or 404) for an object still listed is a real failure and fails the listing.
    class Refused(DeletedMeanwhile):
        def head_object(self, **kwargs: Any) -> Any:
            raise ClientError({"Error": {"Code": "403", "Message": "Forbidden"}}, "HeadObject")

    with pytest.raises(qb.BackupError, match="listing"):
        qb.list_backups(config, Refused(), collection)


def test_a_shard_restore_stages_in_the_shards_directory_owned_by_qdrant_even_when_it_fails(
        qb: ModuleType, qdrant: QdrantStandin, s3: Any, config: Any, collection: str, tmp_path: Path) -> None:
    """A shard snapshot is handed to Qdrant by its bare name from <snapshots>/<c>/shards/<id>/
    (Qdrant refuses file:// there). Directories the program makes there belong to Qdrant's
    user from the start: one left root's by a failed download would stop Qdrant's own shard
    snapshots, and so the next backups."""
    snapshots = tmp_path / "snapshots"
    snapshots.mkdir()
    os.chown(snapshots, 4321, 4321)  # Qdrant's user
    staged = dataclasses.replace(config, qdrant_snapshots_dir=str(snapshots))
    qdrant.make_collection(collection, 3)
    assert qb.run_backup(config, now=NOW) == 0
    (backup,) = qb.list_backups(config, s3, collection)
    seen: list[tuple[str, str]] = []

    def recover(location: str, checksum: str) -> None:
        shard_dir = snapshots / "target" / "shards" / "2"
        assert (shard_dir / location).is_file() and "/" not in location
        seen.append((location, checksum))
        for path in (snapshots / "target", snapshots / "target" / "shards", shard_dir, shard_dir / location):
            assert (path.stat().st_uid, path.stat().st_gid) == (4321, 4321), path

    qb.stage_and_recover(staged, backup, s3, qb.Phases(), "target-shard2", recover, shard=("target", 2))
    assert seen == [(seen[0][0], backup.sha256)]
    assert list((snapshots / "target" / "shards" / "2").iterdir()) == []  # removed afterwards

    corrupt = dataclasses.replace(backup, sha256="0" * 64)
    with pytest.raises(qb.RestoreRefused):
        qb.stage_and_recover(staged, corrupt, s3, qb.Phases(), "other-shard0", recover, shard=("other", 0))
    for path in (snapshots / "other", snapshots / "other" / "shards", snapshots / "other" / "shards" / "0"):
        assert (path.stat().st_uid, path.stat().st_gid) == (4321, 4321), path


def test_foreign_objects_are_never_touched(qb: ModuleType, s3: Any, config: Any, collection: str) -> None:
    foreign = f"{config.s3_prefix}/{collection}/notes.txt"
    s3.put_object(Bucket=BUCKET, Key=foreign, Body=b"x")
    assert qb.apply_retention(config, s3, collection, NOW + timedelta(days=400)) == []
    assert keys(s3, config) == [foreign]


def test_single_node_ignores_shard_backups_of_the_same_collection(
        qb: ModuleType, qdrant: QdrantStandin, s3: Any, config: Any, collection: str) -> None:
    # e.g. left by the time the collection lived on a cluster: another unit, never pruned or
    # restored by the single-node path, and a single-node Qdrant refuses --shard
    qdrant.make_collection(collection, 6)
    shard_key = f"{config.s3_prefix}/{collection}/shards/0/{NOW + timedelta(days=1):%Y%m%dT%H%M%SZ}-peer7.snapshot"
    s3.put_object(Bucket=BUCKET, Key=shard_key, Body=b"x", Metadata={"sha256": "a" * 64, "size": "1"})
    old = f"{config.s3_prefix}/{collection}/shards/0/{NOW - timedelta(days=30):%Y%m%dT%H%M%SZ}-peer7.snapshot"
    s3.put_object(Bucket=BUCKET, Key=old, Body=b"x", Metadata={"sha256": "a" * 64, "size": "1"})
    assert qb.run_backup(config, now=NOW - timedelta(days=20)) == 0
    assert qb.run_backup(config, now=NOW) == 0
    whole = f"{config.s3_prefix}/{collection}/{NOW:%Y%m%dT%H%M%SZ}.snapshot"
    assert keys(s3, config) == sorted([whole, old, shard_key])  # the 20-day-old whole one pruned only
    assert qb.choose_backup(config, s3, collection).key == whole  # not the newer shard object
    assert qb.run_restore(config, collection)["key"] == whole
    with pytest.raises(qb.BackupError, match="runs single-node"):
        qb.run_restore(config, collection, shard_id=0)
    with pytest.raises(qb.BackupError, match="shard backup"):
        qb.run_restore(config, collection, key=shard_key)


# --------------------------------------------------------------------------- restore


def test_restore_after_delete_gives_same_count_and_results(
        qb: ModuleType, qdrant: QdrantStandin, config: Any, collection: str) -> None:
    qdrant.make_collection(collection, 60)
    before = (qdrant.count(collection), qdrant.top_k(collection))
    assert qb.run_backup(config, now=NOW) == 0
    qdrant.call("DELETE", f"/collections/{collection}")

    result = qb.run_restore(config, collection)
    assert result["restored_points"] == 60
    assert (qdrant.count(collection), qdrant.top_k(collection)) == before
    # the downloaded file is removed once Qdrant has recovered it
    assert not list((qdrant.snapshots / "querygpt-restore").glob("*"))


def test_during_a_key_rotation_backup_and_restore_work_with_either_key_on_the_peer(
        qb: ModuleType, qdrant: QdrantStandin, config: Any, collection: str) -> None:
    # rotate_secrets.yml gives the program the new key first and the old one as the previous:
    # the peer (still on the old key here) refuses the first, the second is used from then on.
    rotating = dataclasses.replace(config, qdrant_api_key="the-new-key",
                                   qdrant_api_key_previous=config.qdrant_api_key)
    qdrant.make_collection(collection, 20)
    assert qb.run_backup(rotating, now=NOW) == 0
    qdrant.call("DELETE", f"/collections/{collection}")
    assert qb.run_restore(rotating, collection)["restored_points"] == 20
    client = qb.Qdrant(rotating)
    assert client.collections() and client.keys == [config.qdrant_api_key, "the-new-key"]
    # neither key held by the peer: the run fails on the 401, it does not pass
    wrong = dataclasses.replace(config, qdrant_api_key="a", qdrant_api_key_previous="b")
    with pytest.raises(qb.BackupError, match="answered 401"):
        qb.Qdrant(wrong).collections()


def test_restore_refuses_a_corrupted_object(
        qb: ModuleType, qdrant: QdrantStandin, s3: Any, config: Any, collection: str) -> None:
    qdrant.make_collection(collection, 20)
    assert qb.run_backup(config, now=NOW) == 0
    key = keys(s3, config)[0]
    original = s3.get_object(Bucket=BUCKET, Key=key)
    body = bytearray(original["Body"].read())
    body[len(body) // 2] ^= 0xFF  # one flipped byte, same length, same metadata
    s3.put_object(Bucket=BUCKET, Key=key, Body=bytes(body), Metadata=original["Metadata"])
    qdrant.call("PUT", f"/collections/{collection}/points", params={"wait": "true"},
                json={"points": [{"id": 999, "vector": [0.5] * 8, "payload": {}}]})

    assert qb.main(["--config", write_config(config), "restore", "--collection", collection]) == 3
    assert qdrant.count(collection) == 21  # untouched
    assert not list((qdrant.snapshots / "querygpt-restore").glob("*"))


def test_restore_refuses_another_minor_version(
        qb: ModuleType, qdrant: QdrantStandin, s3: Any, config: Any, collection: str) -> None:
    qdrant.make_collection(collection, 3)
    assert qb.run_backup(config, now=NOW) == 0
    key = keys(s3, config)[0]
    meta = s3.head_object(Bucket=BUCKET, Key=key)["Metadata"]
    running = meta["qdrant-version"].split(".")
    meta["qdrant-version"] = f"{running[0]}.{int(running[1]) + 1}.0"
    s3.copy_object(Bucket=BUCKET, Key=key, CopySource={"Bucket": BUCKET, "Key": key},
                   Metadata=meta, MetadataDirective="REPLACE")
    with pytest.raises(qb.RestoreRefused, match="same minor version"):
        qb.run_restore(config, collection)


def test_list_and_describe_change_nothing(
        qb: ModuleType, qdrant: QdrantStandin, s3: Any, config: Any, collection: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    qdrant.make_collection(collection, 4)
    assert qb.run_backup(config, now=NOW - timedelta(days=1)) == 0
    assert qb.run_backup(config, now=NOW) == 0
    before = keys(s3, config)
    path = write_config(config)
    capsys.readouterr()
    assert qb.main(["--config", path, "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [b["key"] for b in listed] == before
    assert all(b["good"] and b["points_count"] == 4 for b in listed)
    assert all(b["shard"] is None and b["peer"] is None and b["shard_count"] is None for b in listed)
    assert qb.main(["--config", path, "describe", "--collection", collection]) == 0
    assert json.loads(capsys.readouterr().out)["key"] == before[-1]
    assert qb.main(["--config", path, "list"]) == 0
    assert "COLLECTION" in capsys.readouterr().out
    assert keys(s3, config) == before


def test_bad_config_is_named(qb: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"qdrant_url": "http://x", "s3_bucket": "b", "typo": 1}))
    assert qb.main(["--config", str(path), "check-config"]) == 2
    assert "typo" in capsys.readouterr().err


def test_an_unexpected_error_still_fails_the_run_and_counts(
        qb: ModuleType, qdrant: QdrantStandin, config: Any, collection: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    qdrant.make_collection(collection, 2)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("size")  # e.g. an unexpected API answer

    monkeypatch.setattr(qb, "backup_collection", broken)
    assert qb.run_backup(config, now=NOW) == 1
    m = metrics(config)
    assert m[f'querygpt_backup_failures_total{{collection="{collection}"}}'] == 1
    assert m["querygpt_backup_last_run_success"] == 0


# --------------------------------------------------------------------------- the collection's layout


def test_backup_records_the_collection_layout_in_metadata(
        qb: ModuleType, qdrant: QdrantStandin, s3: Any, config: Any, collection: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    qdrant.call("PUT", f"/collections/{collection}", json={
        "vectors": {"size": 8, "distance": "Euclid"}, "replication_factor": 2, "write_consistency_factor": 2})
    assert qb.run_backup(config, now=NOW) == 0

    expected = {"vectors": {"size": 8, "distance": "Euclid"}, "shard_number": 1, "replication_factor": 2,
                "write_consistency_factor": 2}
    meta = s3.head_object(Bucket=BUCKET, Key=keys(s3, config)[0])["Metadata"]
    assert json.loads(meta["collection-layout"]) == expected
    assert " " not in meta["collection-layout"]  # compact
    assert qb.metadata_bytes(meta) < 1024  # well under S3's 2 KiB for all user metadata
    assert qb.list_backups(config, s3, collection)[0].layout == expected
    capsys.readouterr()
    assert qb.main(["--config", write_config(config), "describe", "--collection", collection]) == 0
    assert json.loads(capsys.readouterr().out)["layout"] == expected
    assert qb.main(["--config", write_config(config), "list"]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert row.split()[header.split().index("LAYOUT") - 1] == "yes"  # the header's "TIME (UTC)" is two words


def test_a_layout_too_large_is_not_recorded_and_the_backup_still_succeeds(
        qb: ModuleType, qdrant: QdrantStandin, s3: Any, config: Any, collection: str,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    qdrant.make_collection(collection, 5)
    monkeypatch.setattr(qb, "LAYOUT_MAX_BYTES", 40)  # the stand-in's layout takes about 100
    assert qb.run_backup(config, now=NOW) == 0

    meta = s3.head_object(Bucket=BUCKET, Key=keys(s3, config)[0])["Metadata"]
    assert "collection-layout" not in meta and meta["points-count"] == "5"
    assert f"collection {collection}: its layout takes" in caplog.text and "not recorded" in caplog.text
    assert qb.list_backups(config, s3, collection)[0].layout is None
    assert qb.list_backups(config, s3, collection)[0].as_dict()["layout"] is None


def test_the_layout_keeps_named_vectors_as_returned_and_drops_what_creation_does_not_need(qb: ModuleType) -> None:
    named = {"text": {"size": 768, "distance": "Cosine", "on_disk": True},
             "image": {"size": 512, "distance": "Dot", "multivector_config": {"comparator": "max_sim"}}}
    info = {"status": "green", "points_count": 7, "config": {
        "params": {"vectors": named, "sparse_vectors": {"kw": {"modifier": "idf"}}, "shard_number": 6,
                   "replication_factor": 3, "write_consistency_factor": 2, "on_disk_payload": True,
                   "sharding_method": "custom", "read_fan_out_factor": None},
        "hnsw_config": {"m": 16}, "optimizer_config": {}}}
    assert qb.collection_layout(info) == {
        "vectors": named, "sparse_vectors": {"kw": {"modifier": "idf"}}, "shard_number": 6,
        "replication_factor": 3, "write_consistency_factor": 2, "sharding_method": "custom"}


def test_metadata_over_the_s3_limit_loses_the_layout_only(qb: ModuleType, caplog: pytest.LogCaptureFixture) -> None:
    base = {"sha256": "a" * 64, "size": "10", "collection": "c" * 255, "snapshot-name": "c" * 255 + "-1.snapshot"}
    fits = dict(base, **{"collection-layout": "x" * 1024})
    assert qb.fit_metadata("collection c", fits) == fits
    over = dict(base, **{"collection-layout": "x" * 1500})
    assert qb.fit_metadata("collection c", over) == base
    assert "over S3's 2048" in caplog.text


def test_create_collection_is_for_cluster_mode(
        qb: ModuleType, qdrant: QdrantStandin, config: Any, collection: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    qdrant.make_collection(collection, 3)
    assert qb.run_backup(config, now=NOW) == 0
    qdrant.call("DELETE", f"/collections/{collection}")
    assert qb.main(["--config", write_config(config), "create-collection", "--collection", collection]) == 1
    assert "runs single-node" in capsys.readouterr().err
    assert collection not in [c["name"] for c in qdrant.call("GET", "/collections")["collections"]]


class _StuckCluster:
    """A peer whose view of the collection never settles: shard 0 Partial here, and once
    Qdrant errors; every poll is counted."""

    def __init__(self, qb: ModuleType) -> None:
        self.qb, self.polls = qb, 0

    def collection_cluster(self, collection: str) -> dict:
        self.polls += 1
        if self.polls == 1:
            raise self.qb.BackupError("Qdrant GET /collections/c/cluster: 503")
        return {"peer_id": 1, "shard_count": 1, "local_shards": [{"shard_id": 0, "state": "Partial"}],
                "remote_shards": [{"shard_id": 0, "peer_id": 2, "state": "Active"}], "shard_transfers": []}


def test_waits_on_the_cluster_give_up_at_their_deadline_naming_what_they_waited_for(qb: ModuleType) -> None:
    """A restored shard or a created collection that never settles fails the run (never
    hangs, never passes), naming the shard and the replica states last seen."""
    stuck = _StuckCluster(qb)
    with pytest.raises(qb.BackupError) as settled:
        qb.wait_shard_settled(stuck, "c", 0, timeout=1.2)
    assert "collection c: shard 0's replicas were not all Active after the restore, 1.2s later" in str(settled.value)
    assert "'Partial'" in str(settled.value) and stuck.polls >= 2  # the 503 was retried
    with pytest.raises(qb.BackupError, match="created, but its 1 shards were not all Active, 0.6s later"):
        qb.wait_collection_active(_StuckCluster(qb), "c", 1, timeout=0.6)
