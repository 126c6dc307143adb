#!/usr/bin/python3
"""querygpt-backup: Qdrant collection snapshots to S3, their retention, listing and restore.

Installed by the backup role on the qdrant hosts as /usr/local/bin/querygpt-backup and run
daily by cron. It needs only Debian's python3-boto3 and python3-requests (the hosts sit in
a private subnet without PyPI).

    querygpt-backup [--config FILE] backup [--collection C ...]   # snapshot, upload, verify, prune
    querygpt-backup [--config FILE] list [--collection C] [--json]
    querygpt-backup [--config FILE] describe --collection C [--key KEY]
    querygpt-backup [--config FILE] restore --collection C [--key KEY]
    querygpt-backup --config FILE check-config

Objects: s3://<bucket>/<prefix>/<collection>/<YYYYmmddTHHMMSSZ>.snapshot with metadata
sha256, size, collection, qdrant-version, points-count, snapshot-name. An object is "good"
when its metadata carries a sha256 and a size equal to the object's length; the upload is
only left in place when the streamed bytes hash to Qdrant's own checksum. The snapshot is
downloaded with Accept-Encoding: identity: Qdrant compresses any response the client
accepts compressed, and the hash of a gzip stream is not the hash of the file.

Exit codes: 0 success, 1 a backup/restore step failed, 2 bad usage or config,
3 restore refused (version or checksum), 75 another run holds the lock.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, BinaryIO

LOG = logging.getLogger("querygpt-backup")
DEFAULT_CONFIG = "/etc/querygpt/backup.json"
KEY_TIME_FORMAT = "%Y%m%dT%H%M%SZ"
KEY_RE = re.compile(r"^(?P<stamp>\d{8}T\d{6}Z)\.snapshot$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
IDENTITY = "identity"
EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED, EXIT_LOCKED = 1, 2, 3, 75
METRICS_FILE = "querygpt_backup.prom"
RUN_LABEL = "_run"  # failures before any collection was attempted (Qdrant down, bad config)


class BackupError(Exception):
    """A failure the operator must act on; the message says what and where."""


class RestoreRefused(BackupError):
    """The snapshot must not be restored (other minor version, checksum mismatch)."""


# --------------------------------------------------------------------------- config


@dataclass
class Config:
    """The program's settings (/etc/querygpt/backup.json, written by the backup role)."""

    qdrant_url: str
    qdrant_api_key: str
    s3_bucket: str
    s3_prefix: str
    qdrant_snapshots_dir: str = "/var/lib/qdrant/snapshots"
    collections: list[str] = field(default_factory=list)
    s3_endpoint_url: str = ""
    s3_region: str = ""
    s3_access_key_id: str = ""
    s3_secret_access_key: str = ""
    s3_kms_key_id: str = ""
    s3_multipart_threshold_mb: int = 64
    s3_multipart_chunksize_mb: int = 64
    s3_max_concurrency: int = 4
    s3_connect_timeout: int = 10
    s3_max_attempts: int = 5
    retention_days: int = 7
    textfile_dir: str = "/var/lib/prometheus/node-exporter"
    state_dir: str = "/var/lib/querygpt-backup"
    lock_file: str = "/run/lock/querygpt-backup.lock"
    qdrant_timeout: int = 600
    restore_ready_timeout: int = 300

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> Config:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise BackupError(f"{source}: unknown keys {unknown}; known keys: {sorted(known)}")
        missing = [k for k in ("qdrant_url", "qdrant_api_key", "s3_bucket", "s3_prefix") if not data.get(k)]
        if missing:
            raise BackupError(f"{source}: required keys missing or empty: {missing}")
        try:  # numbers may arrive as strings from a template; coerce them or say which
            for name, spec in cls.__dataclass_fields__.items():
                if isinstance(spec.default, int) and name in data:
                    data = {**data, name: int(data[name])}
        except (TypeError, ValueError) as err:
            raise BackupError(f"{source}: {name} must be a whole number: {err}") from None
        if not isinstance(data.get("collections", []), list):
            raise BackupError(f"{source}: collections must be a list of names")
        config = cls(**data)
        if config.retention_days < 0:
            raise BackupError(f"{source}: retention_days must be >= 0 (0 disables retention), got {config.retention_days}")
        if config.s3_prefix.startswith("/") or config.s3_prefix.endswith("/"):
            raise BackupError(f"{source}: s3_prefix {config.s3_prefix!r} must not start or end with '/'")
        return config

    @classmethod
    def load(cls, path: str) -> Config:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as err:
            raise BackupError(f"cannot read the config {path}: {err}") from None
        if not isinstance(data, dict):
            raise BackupError(f"{path}: expected a JSON object")
        return cls.from_dict(data, path)


# --------------------------------------------------------------------------- retention


@dataclass(frozen=True)
class Backup:
    """One snapshot object in S3 (metadata read with HEAD)."""

    key: str
    collection: str
    taken_at: datetime
    size: int
    sha256: str = ""
    meta_size: int = -1
    qdrant_version: str = ""
    points_count: int | None = None

    @property
    def good(self) -> bool:
        """Complete and verifiable: a sha256 was recorded and the length matches it."""
        return bool(SHA256_RE.match(self.sha256)) and self.meta_size == self.size

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key, "collection": self.collection,
            "time": self.taken_at.strftime("%Y-%m-%dT%H:%M:%SZ"), "size": self.size,
            "sha256": self.sha256, "qdrant_version": self.qdrant_version,
            "points_count": self.points_count, "good": self.good,
        }


def retention_deletions(backups: Sequence[Backup], now: datetime, retention_days: int) -> list[Backup]:
    """Backups past the retention period, never including the newest good one.

    Pure: `now` is injected so the rule is tested without sleeping. retention_days 0 keeps
    everything. The newest good copy survives however old it is, so a host whose backups
    have been failing for weeks still has something to restore.
    """
    if retention_days <= 0:
        return []
    cutoff = now - timedelta(days=retention_days)
    good = [b for b in backups if b.good]
    newest_good = max(good, key=lambda b: (b.taken_at, b.key)) if good else None
    return sorted(
        (b for b in backups if b.taken_at < cutoff and b is not newest_good),
        key=lambda b: b.key,
    )


def key_time(key: str) -> datetime | None:
    match = KEY_RE.match(key.rsplit("/", 1)[-1])
    if not match:
        return None
    return datetime.strptime(match["stamp"], KEY_TIME_FORMAT).replace(tzinfo=timezone.utc)


def collection_prefix(config: Config, collection: str) -> str:
    return f"{config.s3_prefix}/{collection}/"


def backup_key(config: Config, collection: str, taken_at: datetime) -> str:
    return f"{collection_prefix(config, collection)}{taken_at.strftime(KEY_TIME_FORMAT)}.snapshot"


# --------------------------------------------------------------------------- clients


class Phases:
    """Wall-clock seconds of each step of one backup or restore, logged with its outcome.

    Names starting with "qdrant_" are time spent waiting on Qdrant (creating, deleting or
    recovering a snapshot); the rest is this program's own work. Keeping them apart tells
    an operator whether a slow backup or a long restore is Qdrant's doing or the transfer's,
    and gives the restore time (RTO) of a collection from a real run.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.monotonic() - started

    def rounded(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in self.seconds.items()}

    def __str__(self) -> str:
        return ", ".join(f"{k} {v:.2f}s" for k, v in self.seconds.items())


class HashingReader:
    """A read-only stream that hashes and counts what passes through it (for upload_fileobj)."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.digest = hashlib.sha256()
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.digest.update(data)
        self.count += len(data)
        return data

    def hexdigest(self) -> str:
        return self.digest.hexdigest()


class HashingWriter:
    """A write-only, non-seekable sink that hashes and counts what it writes to `raw`.

    Non-seekable on purpose: given such a target, s3transfer still fetches the ranges in
    parallel but writes them in order, so the sha256 is computed during the download
    instead of in a second pass over the file afterwards.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.digest = hashlib.sha256()
        self.count = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.count += len(data)
        return self.raw.write(data)

    def seekable(self) -> bool:
        return False

    def hexdigest(self) -> str:
        return self.digest.hexdigest()


class Qdrant:
    """The few REST calls the backups need, with the full-access key."""

    def __init__(self, config: Config) -> None:
        import requests  # Debian's python3-requests

        self.base = config.qdrant_url.rstrip("/")
        self.timeout = config.qdrant_timeout
        self.session = requests.Session()
        self.session.trust_env = False  # never send the key through a proxy
        self.session.headers["api-key"] = config.qdrant_api_key

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        import requests

        url = self.base + path
        try:
            response = self.session.request(method, url, timeout=kwargs.pop("timeout", self.timeout), **kwargs)
        except requests.RequestException as err:
            raise BackupError(f"Qdrant {method} {url} failed: {err}") from None
        if response.status_code >= 400:
            raise BackupError(f"Qdrant {method} {url} answered {response.status_code}: {response.text[:500]}")
        return response.json().get("result") if response.content else None

    def version(self) -> str:
        """The running release (GET /), recorded with each backup for the same-minor rule."""
        return str(self._root().get("version", ""))

    def _root(self) -> dict[str, Any]:
        import requests

        try:
            response = self.session.get(self.base + "/", timeout=30)
            response.raise_for_status()
            return dict(response.json())
        except (requests.RequestException, ValueError) as err:
            raise BackupError(f"Qdrant GET {self.base}/ failed: {err}") from None

    def collections(self) -> list[str]:
        return sorted(c["name"] for c in self._call("GET", "/collections")["collections"])

    def collection_info(self, collection: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/collections/{collection}"))

    def count(self, collection: str) -> int:
        return int(self._call("POST", f"/collections/{collection}/points/count", json={"exact": True})["count"])

    def create_snapshot(self, collection: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/collections/{collection}/snapshots", params={"wait": "true"}))

    def delete_snapshot(self, collection: str, name: str) -> None:
        self._call("DELETE", f"/collections/{collection}/snapshots/{name}", params={"wait": "true"})

    def open_snapshot(self, collection: str, name: str) -> Any:
        """The streamed download of the snapshot file, whose raw body is the file's own bytes.

        Qdrant's HTTP server (actix-web's Compress middleware) encodes every response in
        whatever the request accepts, and requests accepts gzip and deflate by default: the
        raw stream would then be the compressed bytes, whose sha256 and length are not those
        Qdrant reports for the file, and every backup would be judged unverified. So the
        download asks for identity and refuses any other coding instead of decoding it: what
        is hashed and uploaded must be exactly the bytes Qdrant checksummed.
        """
        import requests

        url = f"{self.base}/collections/{collection}/snapshots/{name}"
        try:
            response = self.session.get(url, stream=True, timeout=self.timeout,
                                        headers={"Accept-Encoding": IDENTITY})
        except requests.RequestException as err:
            raise BackupError(f"Qdrant GET {url} failed: {err}") from None
        if response.status_code != 200:
            text = response.text[:500]
            response.close()
            raise BackupError(f"Qdrant GET {url} answered {response.status_code}: {text}")
        codings = content_codings(response.headers.get("Content-Encoding", ""))
        if codings:
            response.close()
            raise BackupError(
                f"Qdrant GET {url} answered with Content-Encoding {', '.join(codings)} although "
                f"the request asked for {IDENTITY}: those bytes are not the snapshot file, so their "
                f"sha256 cannot match Qdrant's checksum. Something between this host and Qdrant "
                f"re-encodes responses (a proxy or load balancer in qdrant_url {self.base}?): point "
                f"qdrant_url at Qdrant itself or make that hop pass snapshots through unencoded.")
        response.raw.decode_content = False  # hash what arrives, never a transparently decoded view
        return response

    def recover(self, collection: str, location: str, checksum: str) -> None:
        self._call("PUT", f"/collections/{collection}/snapshots/recover", params={"wait": "true"},
                   json={"location": location, "priority": "snapshot", "checksum": checksum})


def content_codings(header: str) -> list[str]:
    """The codings a Content-Encoding header applies, identity (a no-op) left out."""
    return [c for c in (part.strip().lower() for part in header.split(",")) if c and c != IDENTITY]


_BOTO_SESSIONS: list[Any] = []


def boto_session() -> Any:
    """One boto3 session per process: each new session parses the S3 service model again
    (0.3 to 1 s of CPU here), and a restore used to pay that twice (main and run_restore)."""
    import boto3

    if not _BOTO_SESSIONS:
        _BOTO_SESSIONS.append(boto3.session.Session())
    return _BOTO_SESSIONS[0]


def s3_client(config: Config) -> Any:
    """boto3 S3 client: the instance profile unless keys are configured (S3-compatible stores)."""
    from botocore.config import Config as BotoConfig

    kwargs: dict[str, Any] = {
        "config": BotoConfig(
            connect_timeout=config.s3_connect_timeout,
            read_timeout=max(60, config.s3_connect_timeout),
            retries={"max_attempts": config.s3_max_attempts, "mode": "standard"},
            s3={"addressing_style": "path" if config.s3_endpoint_url else "auto"},
        )
    }
    if config.s3_endpoint_url:
        kwargs["endpoint_url"] = config.s3_endpoint_url
    if config.s3_region:
        kwargs["region_name"] = config.s3_region
    if config.s3_access_key_id:
        kwargs["aws_access_key_id"] = config.s3_access_key_id
        kwargs["aws_secret_access_key"] = config.s3_secret_access_key
    return boto_session().client("s3", **kwargs)


def transfer_config(config: Config) -> Any:
    from boto3.s3.transfer import TransferConfig

    mib = 1024 * 1024
    return TransferConfig(
        multipart_threshold=config.s3_multipart_threshold_mb * mib,
        multipart_chunksize=config.s3_multipart_chunksize_mb * mib,
        max_concurrency=config.s3_max_concurrency,
    )


def s3_error(err: Exception, what: str) -> BackupError:
    return BackupError(f"S3: {what} failed: {err}")


def list_backups(config: Config, s3: Any, collection: str | None = None) -> list[Backup]:
    """Every snapshot object under the prefix (or one collection), with its metadata."""
    from botocore.exceptions import BotoCoreError, ClientError

    prefix = collection_prefix(config, collection) if collection else f"{config.s3_prefix}/"
    found: list[Backup] = []
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=config.s3_bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                rest = obj["Key"][len(config.s3_prefix) + 1:].split("/")
                taken_at = key_time(obj["Key"])
                if len(rest) != 2 or taken_at is None:
                    continue  # not ours: never touched
                meta = s3.head_object(Bucket=config.s3_bucket, Key=obj["Key"]).get("Metadata", {})
                points = meta.get("points-count", "")
                found.append(Backup(
                    key=obj["Key"], collection=rest[0], taken_at=taken_at, size=int(obj["Size"]),
                    sha256=meta.get("sha256", ""),
                    meta_size=int(meta["size"]) if meta.get("size", "").isdigit() else -1,
                    qdrant_version=meta.get("qdrant-version", ""),
                    points_count=int(points) if points.isdigit() else None,
                ))
    except (BotoCoreError, ClientError) as err:
        raise s3_error(err, f"listing s3://{config.s3_bucket}/{prefix}") from None
    return sorted(found, key=lambda b: (b.collection, b.taken_at, b.key))


# --------------------------------------------------------------------------- backup


@dataclass
class Outcome:
    collection: str
    ok: bool
    size: int = 0
    key: str = ""
    error: str = ""
    phases: dict[str, float] = field(default_factory=dict)


def stable_snapshot(qdrant: Qdrant, collection: str, attempts: int = 3) -> tuple[dict[str, Any], int | None]:
    """A snapshot and the point count it holds: counted before and after, retried on writes."""
    for attempt in range(1, attempts + 1):
        before = qdrant.count(collection)
        snapshot = qdrant.create_snapshot(collection)
        after = qdrant.count(collection)
        if before == after:
            return snapshot, after
        if attempt == attempts:
            LOG.warning("collection %s: points changed during every snapshot (%d -> %d); "
                        "recording the count as unknown", collection, before, after)
            return snapshot, None
        qdrant.delete_snapshot(collection, snapshot["name"])
    raise AssertionError("unreachable")


def backup_collection(config: Config, qdrant: Qdrant, s3: Any, collection: str,
                      version: str, now: datetime) -> Outcome:
    """Snapshot -> stream to S3 -> verify against Qdrant's checksum -> delete local -> prune."""
    from botocore.exceptions import BotoCoreError, ClientError

    phase = Phases()
    with phase("qdrant_snapshot"):
        snapshot, points = stable_snapshot(qdrant, collection)
    key = backup_key(config, collection, now)
    try:
        checksum = str(snapshot.get("checksum") or "").lower()
        if not SHA256_RE.match(checksum):
            raise BackupError(f"collection {collection}: Qdrant returned no sha256 checksum for "
                              f"snapshot {snapshot.get('name')} (Qdrant >= 1.8 does)")
        size = int(snapshot["size"])
        extra: dict[str, Any] = {
            "ContentType": "application/octet-stream",
            "Metadata": {
                "sha256": checksum, "size": str(size), "collection": collection,
                "qdrant-version": version, "snapshot-name": snapshot["name"],
                "points-count": "" if points is None else str(points),
            },
        }
        if config.s3_kms_key_id:
            extra.update(ServerSideEncryption="aws:kms", SSEKMSKeyId=config.s3_kms_key_id)
        with phase("transfer"):
            response = qdrant.open_snapshot(collection, snapshot["name"])
            reader = HashingReader(response.raw)
            try:
                s3.upload_fileobj(reader, config.s3_bucket, key, ExtraArgs=extra, Config=transfer_config(config))
            except (BotoCoreError, ClientError, OSError) as err:
                raise s3_error(err, f"uploading s3://{config.s3_bucket}/{key}") from None
            finally:
                response.close()
        problem = ""
        if reader.hexdigest() != checksum or reader.count != size:
            problem = (f"streamed {reader.count} bytes with sha256 {reader.hexdigest()}, "
                       f"Qdrant reported {size} bytes with sha256 {checksum}")
        else:
            try:
                with phase("verify"):
                    head = s3.head_object(Bucket=config.s3_bucket, Key=key)
            except (BotoCoreError, ClientError) as err:
                raise s3_error(err, f"verifying s3://{config.s3_bucket}/{key}") from None
            if int(head["ContentLength"]) != size or head.get("Metadata", {}).get("sha256") != checksum:
                problem = f"S3 holds {head['ContentLength']} bytes, metadata {head.get('Metadata')}"
        if problem:
            try:
                s3.delete_object(Bucket=config.s3_bucket, Key=key)
            except (BotoCoreError, ClientError) as err:
                LOG.error("could not delete the bad upload s3://%s/%s: %s", config.s3_bucket, key, err)
            raise BackupError(f"collection {collection}: upload verification failed: {problem}")
    finally:
        try:
            with phase("qdrant_cleanup"):
                qdrant.delete_snapshot(collection, snapshot["name"])
        except BackupError as err:
            LOG.error("could not delete the local snapshot %s: %s", snapshot["name"], err)
    LOG.info("collection %s: uploaded s3://%s/%s (%d bytes, sha256 %s, %s points)",
             collection, config.s3_bucket, key, size, checksum, "unknown" if points is None else points)
    with phase("retention"):
        apply_retention(config, s3, collection, now)
    LOG.info("collection %s: took %s", collection, phase)
    return Outcome(collection, True, size=size, key=key, phases=phase.rounded())


def apply_retention(config: Config, s3: Any, collection: str, now: datetime) -> list[str]:
    from botocore.exceptions import BotoCoreError, ClientError

    if config.retention_days <= 0:
        return []  # retention disabled: not even the listing (a HEAD per object) is needed
    doomed = retention_deletions(list_backups(config, s3, collection), now, config.retention_days)
    for backup in doomed:
        try:
            s3.delete_object(Bucket=config.s3_bucket, Key=backup.key)
        except (BotoCoreError, ClientError) as err:
            raise s3_error(err, f"retention: deleting s3://{config.s3_bucket}/{backup.key}") from None
        LOG.info("retention: deleted s3://%s/%s (older than %d days)", config.s3_bucket, backup.key,
                 config.retention_days)
    return [b.key for b in doomed]


# --------------------------------------------------------------------------- metrics


def load_state(config: Config) -> dict[str, Any]:
    path = Path(config.state_dir) / "state.json"
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def write_atomically(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def render_metrics(state: dict[str, Any]) -> str:
    """node_exporter textfile format, from the persisted state."""
    def esc(value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    lines: list[str] = []

    def family(name: str, kind: str, text: str, samples: list[tuple[str, float]]) -> None:
        lines.extend([f"# HELP {name} {text}", f"# TYPE {name} {kind}"])
        lines.extend(f"{name}{labels} {value:.17g}" for labels, value in samples)

    collections = state.get("collections", {})
    family("querygpt_backup_last_run_timestamp_seconds", "gauge",
           "Unix time the last backup run ended.", [("", state.get("last_run", 0))])
    family("querygpt_backup_last_run_success", "gauge",
           "1 when the last backup run backed up every collection, else 0.",
           [("", 1.0 if state.get("last_run_ok") else 0.0)])
    family("querygpt_backup_duration_seconds", "gauge",
           "Duration of the last backup run.", [("", state.get("duration", 0.0))])
    family("querygpt_backup_last_success_timestamp_seconds", "gauge",
           "Unix time of the last verified upload of each collection.",
           [(f'{{collection="{esc(c)}"}}', v["last_success"]) for c, v in sorted(collections.items())
            if v.get("last_success")])
    family("querygpt_backup_bytes", "gauge", "Size of the last verified upload of each collection.",
           [(f'{{collection="{esc(c)}"}}', v.get("bytes", 0)) for c, v in sorted(collections.items())
            if v.get("last_success")])
    failures = dict(state.get("failures", {}))
    family("querygpt_backup_failures_total", "counter",
           f"Failed backups per collection (collection=\"{RUN_LABEL}\": the run failed before any collection).",
           [(f'{{collection="{esc(c)}"}}', n) for c, n in sorted(failures.items())])
    return "\n".join(lines) + "\n"


def record_run(config: Config, started: float, outcomes: list[Outcome], run_error: bool,
               present: list[str] | None) -> None:
    """Persist the state and rewrite the textfile metrics (tmp + rename)."""
    state = load_state(config)
    collections: dict[str, Any] = state.setdefault("collections", {})
    failures: dict[str, float] = state.setdefault("failures", {})
    failures.setdefault(RUN_LABEL, 0)
    if present is not None:  # forget collections that no longer exist (no stale alerts for them)
        for gone in set(collections) - set(present):
            collections.pop(gone)
    for outcome in outcomes:
        failures.setdefault(outcome.collection, 0)
        if outcome.ok:
            collections[outcome.collection] = {"last_success": time.time(), "bytes": outcome.size,
                                               "key": outcome.key, "seconds": outcome.phases}
        else:
            failures[outcome.collection] += 1
    if run_error:
        failures[RUN_LABEL] += 1
    state["last_run"] = time.time()
    state["last_run_ok"] = not run_error and all(o.ok for o in outcomes)
    state["duration"] = round(time.monotonic() - started, 3)
    try:
        write_atomically(Path(config.state_dir) / "state.json", json.dumps(state, indent=2) + "\n", 0o600)
        write_atomically(Path(config.textfile_dir) / METRICS_FILE, render_metrics(state))
    except OSError as err:
        LOG.error("could not write the state or metrics (%s, %s): %s", config.state_dir, config.textfile_dir, err)


@dataclass
class Lock:
    """An fcntl lock on a file: the kernel drops it when the process ends, however it ends."""

    path: str
    handle: Any = None

    def acquire(self) -> bool:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "a")  # noqa: SIM115 - held for the whole run
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.close()
            return False
        return True

    def release(self) -> None:
        self.handle.close()


def run_backup(config: Config, only: Sequence[str] = (), now: datetime | None = None) -> int:
    """One backup run over every (or the configured, or the given) collection."""
    started = time.monotonic()
    outcomes: list[Outcome] = []
    present: list[str] | None = None
    run_error = False
    try:
        qdrant = Qdrant(config)
        version = qdrant.version()
        present = qdrant.collections()
        wanted = list(only) or config.collections or present
        missing = sorted(set(wanted) - set(present))
        if missing:
            LOG.error("collections %s do not exist in Qdrant (present: %s)", missing, present)
            outcomes.extend(Outcome(c, False, error="missing") for c in missing)
        s3 = s3_client(config)
        for collection in [c for c in wanted if c in present]:
            stamp = (now or datetime.now(timezone.utc)).replace(microsecond=0)
            try:
                outcomes.append(backup_collection(config, qdrant, s3, collection, version, stamp))
            except Exception as err:  # noqa: BLE001 - any failure fails the collection, never the metrics
                LOG.error("collection %s: backup failed: %s", collection, err)
                outcomes.append(Outcome(collection, False, error=str(err)))
        if not wanted:
            LOG.warning("no collections to back up")
    except Exception as err:  # noqa: BLE001 - still record the failure for the alerts
        LOG.error("backup run failed: %s", err)
        run_error = True
    record_run(config, started, outcomes, run_error, present if not only else None)
    failed = [o.collection for o in outcomes if not o.ok]
    if run_error or failed:
        LOG.error("backup run FAILED (collections failed: %s)", failed or "-")
        return EXIT_FAILED
    LOG.info("backup run ok: %d collection(s) in %.1fs", len(outcomes), time.monotonic() - started)
    return 0


# --------------------------------------------------------------------------- restore


def minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def choose_backup(config: Config, s3: Any, collection: str, key: str = "") -> Backup:
    """The named object, or the newest good one of the collection."""
    backups = list_backups(config, s3, collection)
    if key:
        for backup in backups:
            if backup.key == key or backup.key.rsplit("/", 1)[-1] == key:
                return backup
        raise BackupError(f"no backup {key!r} of collection {collection} under "
                          f"s3://{config.s3_bucket}/{collection_prefix(config, collection)} "
                          f"(list them: querygpt-backup list --collection {collection})")
    good = [b for b in backups if b.good]
    if not good:
        raise BackupError(f"no good backup of collection {collection} under "
                          f"s3://{config.s3_bucket}/{collection_prefix(config, collection)}")
    return good[-1]


def check_version(backup: Backup, running: str) -> None:
    if minor(backup.qdrant_version) != minor(running):
        raise RestoreRefused(
            f"{backup.key} was taken on Qdrant {backup.qdrant_version or 'unknown'}, this host runs "
            f"{running}: Qdrant restores snapshots only onto the same minor version "
            f"({minor(backup.qdrant_version) or '?'}). Restore onto a host running "
            f"{minor(backup.qdrant_version) or 'that version'}.x (qdrant_version), or pick a backup "
            f"taken on {minor(running)}.x with restore_snapshot.")


def download_verified(config: Config, s3: Any, backup: Backup, dest: Path) -> None:
    """Download to dest and refuse (delete) it unless its sha256 matches the recorded one.

    The sha256 is computed as the bytes are written (HashingWriter), in one pass: the file
    is not read back. What reaches the disk is still checked twice over: here against the
    sha256 recorded at backup time, and by Qdrant, which gets that checksum with the
    recover call and refuses a file that does not match it.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    if not backup.good:
        raise RestoreRefused(f"{backup.key} has no complete checksum metadata (sha256 "
                             f"{backup.sha256!r}, size {backup.meta_size} vs {backup.size}): not restorable")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    try:
        with open(tmp, "wb") as out:
            sink = HashingWriter(out)
            s3.download_fileobj(config.s3_bucket, backup.key, sink, Config=transfer_config(config))
    except (BotoCoreError, ClientError, OSError) as err:
        tmp.unlink(missing_ok=True)
        raise s3_error(err, f"downloading s3://{config.s3_bucket}/{backup.key}") from None
    if sink.hexdigest() != backup.sha256 or sink.count != backup.meta_size:
        tmp.unlink(missing_ok=True)
        raise RestoreRefused(f"{backup.key}: checksum mismatch, the object is corrupted: "
                             f"{sink.count} bytes with sha256 {sink.hexdigest()}, recorded "
                             f"{backup.meta_size} bytes with sha256 {backup.sha256}. Not restored; "
                             "pick another backup (querygpt-backup list).")
    os.replace(tmp, dest)


def wait_ready(qdrant: Qdrant, collection: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            info = qdrant.collection_info(collection)
            if info.get("status") == "green":
                return info
        except BackupError:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise BackupError(f"collection {collection} not green after {timeout}s")
        time.sleep(1)


def run_restore(config: Config, collection: str, key: str = "") -> dict[str, Any]:
    """Download, verify, recover through the API, wait, compare the point count.

    The result carries the seconds of each step ("qdrant_*": Qdrant's own work), so every
    restore, drills included, measures the collection's restore time (RTO).
    """
    started = time.monotonic()
    phase = Phases()
    with phase("select"):
        qdrant = Qdrant(config)
        s3 = s3_client(config)
        backup = choose_backup(config, s3, collection, key)
        running = qdrant.version()
        check_version(backup, running)
    snapshots = Path(config.qdrant_snapshots_dir)
    dest = snapshots / "querygpt-restore" / f"{collection}-{backup.key.rsplit('/', 1)[-1]}"
    LOG.info("restoring %s into collection %s (sha256 %s)", backup.key, collection, backup.sha256)
    with phase("download"):
        download_verified(config, s3, backup, dest)
    try:
        owner = snapshots.stat()
        os.chown(dest.parent, owner.st_uid, owner.st_gid)
        os.chown(dest, owner.st_uid, owner.st_gid)
        with phase("qdrant_recover"):
            qdrant.recover(collection, dest.resolve().as_uri(), backup.sha256)
    finally:
        dest.unlink(missing_ok=True)
    with phase("qdrant_ready"):
        wait_ready(qdrant, collection, config.restore_ready_timeout)
        count = qdrant.count(collection)
    if backup.points_count is not None and count != backup.points_count:
        raise BackupError(f"collection {collection} holds {count} points after the restore, "
                          f"the backup recorded {backup.points_count}")
    total = time.monotonic() - started
    result = dict(backup.as_dict(), restored_points=count, qdrant_running=running,
                  seconds=dict(phase.rounded(), total=round(total, 3)))
    LOG.info("restored collection %s from %s: %d points in %.1fs (%s)", collection, backup.key, count,
             total, phase)
    return result


# --------------------------------------------------------------------------- CLI


class JournalFormatter(logging.Formatter):
    """`<priority>message` lines: systemd-cat (--level-prefix, its default) maps them."""

    PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}

    def format(self, record: logging.LogRecord) -> str:
        return f"<{self.PRIORITY.get(record.levelno, 6)}>{record.getMessage()}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="querygpt-backup", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--log-format", choices=["text", "journal"], default="text")
    sub = parser.add_subparsers(dest="command", required=True)
    backup = sub.add_parser("backup", help="back up every (or the given) collection")
    backup.add_argument("--collection", action="append", default=[])
    listing = sub.add_parser("list", help="list the backups in S3 (changes nothing)")
    listing.add_argument("--collection")
    listing.add_argument("--json", action="store_true")
    for name, text in (("describe", "print the backup a restore would use (JSON)"),
                       ("restore", "restore a collection from S3")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--collection", required=True)
        cmd.add_argument("--key", default="", help="object key or file name; default: the newest good one")
    sub.add_parser("check-config", help="validate the config file and exit")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JournalFormatter() if args.log_format == "journal"
                         else logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    logging.getLogger("botocore").setLevel(logging.WARNING)
    try:
        config = Config.load(args.config)
    except BackupError as err:
        LOG.error("%s", err)
        return EXIT_USAGE
    if args.command == "check-config":
        print(f"{args.config}: ok")
        return 0
    try:
        if args.command == "backup":
            lock = Lock(config.lock_file)
            if not lock.acquire():
                LOG.error("another querygpt-backup run holds %s; not starting a second one", config.lock_file)
                return EXIT_LOCKED
            try:
                return run_backup(config, args.collection)
            finally:
                lock.release()
        s3 = s3_client(config)
        if args.command == "list":
            backups = list_backups(config, s3, args.collection)
            if args.json:
                print(json.dumps([b.as_dict() for b in backups], indent=2))
            else:
                print_table(backups)
            return 0
        if args.command == "describe":
            print(json.dumps(choose_backup(config, s3, args.collection, args.key).as_dict(), indent=2))
            return 0
        print(json.dumps(run_restore(config, args.collection, args.key), indent=2))
        return 0
    except RestoreRefused as err:
        LOG.error("REFUSED: %s", err)
        return EXIT_REFUSED
    except BackupError as err:
        LOG.error("%s", err)
        return EXIT_FAILED


def print_table(backups: Sequence[Backup]) -> None:
    rows = [("COLLECTION", "TIME (UTC)", "SIZE", "SHA256", "POINTS", "QDRANT", "STATE", "KEY")]
    for b in backups:
        d = b.as_dict()
        rows.append((b.collection, d["time"], str(b.size), b.sha256 or "MISSING",
                     "?" if b.points_count is None else str(b.points_count), b.qdrant_version,
                     "GOOD" if b.good else "INCOMPLETE", b.key))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


if __name__ == "__main__":
    sys.exit(main())
