#!/usr/bin/python3
"""querygpt-backup: Qdrant snapshots to S3, per collection or per shard, their retention, listing and restore.

Installed by the backup role on the qdrant hosts as /usr/local/bin/querygpt-backup and run
daily by cron. It needs only Debian's python3-boto3 and python3-requests (the hosts sit in
a private subnet without PyPI).

    querygpt-backup [--config FILE] backup [--collection C ...]   # snapshot, upload, verify, prune
    querygpt-backup [--config FILE] list [--collection C [--shard N]] [--json]
    querygpt-backup [--config FILE] describe --collection C [--shard N] [--key KEY]
    querygpt-backup [--config FILE] restore --collection C [--shard N] [--key KEY]
    querygpt-backup [--config FILE] create-collection --collection C [--shard N] [--key KEY]
    querygpt-backup --config FILE check-config

The mode comes from Qdrant itself (GET /cluster: "disabled" or "enabled").

Single node: one snapshot per collection,
s3://<bucket>/<prefix>/<collection>/<YYYYmmddTHHMMSSZ>.snapshot with metadata sha256, size,
collection, qdrant-version, points-count, snapshot-name.

Distributed (cluster) mode: a collection snapshot on a peer holds only that peer's shards,
so each peer backs up every shard replica it holds that is Active, through the shard
snapshot API, to
s3://<bucket>/<prefix>/<collection>/shards/<shard id>/<YYYYmmddTHHMMSSZ>-peer<peer id>.snapshot
with the same metadata plus shard-id, peer-id and shard-count. Every replica holder uploads:
storage times the replication factor, but a shard's backup survives the loss of any peer and
any single failed upload. A replica that is not Active, or any failed step, fails that shard
(exit 1) while the other shards are still backed up. Retention works per (collection, shard),
whichever peer uploaded: each shard keeps its newest good copy, however old.
`restore` in cluster mode recovers each shard of the collection (or --shard N) on this peer
(PUT .../shards/{id}/snapshots/recover, priority snapshot: Qdrant then re-syncs the shard's
other replicas from it); a shard with no replica here is refused with exit 4 and nothing
is restored. Whole-collection objects are only restored on single-node Qdrant and shard
objects only in cluster mode; neither is ever deleted by the other mode's retention.

Every backup also records the collection's creation layout (metadata collection-layout,
compact JSON: vectors, shard_number, replication_factor, write_consistency_factor, and
sparse_vectors and sharding_method when Qdrant reports them), what PUT /collections/{c}
needs to create it again; a layout over 1 KiB, or metadata that would pass S3's 2 KiB, is
not recorded (a warning says so). `create-collection` (cluster mode, where a shard is only
restored into an existing collection) creates a missing collection from the layout
recorded with its newest good shard backup (or --key), does nothing when it exists, and
refuses a replication factor above the number of peers and custom sharding.

An object is "good" when its metadata carries a sha256 and a size equal to the object's
length; the upload is only left in place when the streamed bytes hash to Qdrant's own
checksum. The snapshot is downloaded with Accept-Encoding: identity: Qdrant compresses any
response the client accepts compressed, and the hash of a gzip stream is not the hash of
the file. Keys are parsed strictly: anything else under the prefix is never touched.

Exit codes: 0 success, 1 a backup/restore step failed (create-collection: also no layout
recorded), 2 bad usage or config, 3 restore refused (version, checksum, shard count) or
create-collection refused (replication factor above the peers, custom sharding), 4 restore
refused: shard not local to this peer, 75 another run holds the lock.
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
# cluster mode: <prefix>/<collection>/shards/<shard id>/<stamp>-peer<peer id>.snapshot
SHARD_DIR = "shards"
SHARD_ID_RE = re.compile(r"^(?:0|[1-9][0-9]{0,9})$")
SHARD_KEY_RE = re.compile(r"^(?P<stamp>\d{8}T\d{6}Z)-peer(?P<peer>[1-9][0-9]{0,19})\.snapshot$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# the collection's creation layout, recorded with every backup (S3 user metadata, JSON)
LAYOUT_META = "collection-layout"
LAYOUT_MAX_BYTES = 1024  # well under S3's limit for all user metadata together
S3_METADATA_LIMIT = 2048  # S3: the keys and values of the user metadata, UTF-8, 2 KiB at most
LAYOUT_PARAMS = ("vectors", "sparse_vectors", "shard_number", "replication_factor", "write_consistency_factor",
                 "sharding_method")
IDENTITY = "identity"
EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED, EXIT_NOT_LOCAL, EXIT_LOCKED = 1, 2, 3, 4, 75
METRICS_FILE = "querygpt_backup.prom"
RUN_LABEL = "_run"  # failures before any collection was attempted (Qdrant down, bad config)


class BackupError(Exception):
    """A failure the operator must act on; the message says what and where."""


class RestoreRefused(BackupError):
    """The snapshot must not be restored (other minor version, checksum mismatch)."""


class ShardNotLocal(BackupError):
    """Cluster mode: a shard to restore has no replica on this peer (run it on a holder)."""


# --------------------------------------------------------------------------- config


@dataclass
class Config:
    """The program's settings (/etc/querygpt/backup.json, written by the backup role)."""

    qdrant_url: str
    qdrant_api_key: str
    s3_bucket: str
    s3_prefix: str
    # During a key rotation only (playbooks/runbooks/rotate_secrets.yml): the other key, sent
    # when a peer answers 401 to the first.
    qdrant_api_key_previous: str = ""
    qdrant_snapshots_dir: str = "/var/lib/qdrant/snapshots"
    # The CA Qdrant's TLS certificate is verified against (the internal CA); "" = the system's.
    qdrant_ca_file: str = ""
    # The internal CA's revocation lists (PEM): a revoked Qdrant certificate is refused, and so
    # is one of a CA with no CRL in the file. "" = no revocation check.
    qdrant_crl_file: str = ""
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
    shard_id: int | None = None  # None: a whole-collection (single-node) snapshot
    peer_id: int | None = None  # cluster mode: the peer whose replica was snapshotted
    shard_count: int | None = None  # cluster mode: shards of the collection at backup time
    layout_json: str = ""  # the collection's creation layout at backup time ("" before it was recorded)

    @property
    def good(self) -> bool:
        """Complete and verifiable: a sha256 was recorded and the length matches it."""
        return bool(SHA256_RE.match(self.sha256)) and self.meta_size == self.size

    @property
    def layout(self) -> dict[str, Any] | None:
        """What PUT /collections/{c} needs to create the collection again, or None when the
        backup records none (taken before layouts were recorded, or one too large)."""
        try:
            layout = json.loads(self.layout_json) if self.layout_json else None
        except ValueError:
            return None
        return layout if isinstance(layout, dict) else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key, "collection": self.collection,
            "time": self.taken_at.strftime("%Y-%m-%dT%H:%M:%SZ"), "size": self.size,
            "sha256": self.sha256, "qdrant_version": self.qdrant_version,
            "points_count": self.points_count, "good": self.good,
            "shard": self.shard_id, "peer": self.peer_id, "shard_count": self.shard_count,
            "layout": self.layout,
        }


def retention_deletions(backups: Sequence[Backup], now: datetime, retention_days: int) -> list[Backup]:
    """Backups past the retention period, never including the newest good one of a unit.

    A unit is a collection's whole-collection backups (single node), or one shard of a
    collection (cluster mode), whichever peer uploaded it: every shard keeps its own newest
    good copy, so a shard whose backups fail is never stripped of its last good copy because
    other shards, or another peer's replica of another shard, were uploaded since. Within a
    shard, any peer's copy serves a restore (replicas hold the same points), so the newest
    good one of the shard is enough.

    Pure: `now` is injected so the rule is tested without sleeping. retention_days 0 keeps
    everything. The newest good copy survives however old it is, so a host whose backups
    have been failing for weeks still has something to restore.
    """
    if retention_days <= 0:
        return []
    cutoff = now - timedelta(days=retention_days)
    newest_good: dict[tuple[str, int | None], Backup] = {}
    for b in backups:
        unit = (b.collection, b.shard_id)
        if b.good and (unit not in newest_good or (b.taken_at, b.key) > (newest_good[unit].taken_at,
                                                                          newest_good[unit].key)):
            newest_good[unit] = b
    keep = {id(b) for b in newest_good.values()}
    return sorted((b for b in backups if b.taken_at < cutoff and id(b) not in keep), key=lambda b: b.key)


@dataclass(frozen=True)
class KeyParts:
    """What an object key says: its collection, time and, for a shard backup, shard and peer."""

    collection: str
    taken_at: datetime
    shard_id: int | None = None
    peer_id: int | None = None


def parse_key(config: Config, key: str) -> KeyParts | None:
    """The parts of one of our keys, or None for anything else (never touched).

    Strict on purpose: retention deletes what this accepts, so only the two layouts the
    program writes qualify, exactly:
    <prefix>/<collection>/<YYYYmmddTHHMMSSZ>.snapshot and
    <prefix>/<collection>/shards/<shard id>/<YYYYmmddTHHMMSSZ>-peer<peer id>.snapshot.
    """
    if not key.startswith(config.s3_prefix + "/"):
        return None
    rest = key[len(config.s3_prefix) + 1:].split("/")
    if len(rest) == 2 and rest[0] and (match := KEY_RE.match(rest[1])):
        return KeyParts(rest[0], _stamp_time(match["stamp"]))
    if (len(rest) == 4 and rest[0] and rest[1] == SHARD_DIR and SHARD_ID_RE.match(rest[2])
            and (match := SHARD_KEY_RE.match(rest[3]))):
        return KeyParts(rest[0], _stamp_time(match["stamp"]), int(rest[2]), int(match["peer"]))
    return None


def _stamp_time(stamp: str) -> datetime:
    return datetime.strptime(stamp, KEY_TIME_FORMAT).replace(tzinfo=timezone.utc)


def key_time(key: str) -> datetime | None:
    match = KEY_RE.match(key.rsplit("/", 1)[-1]) or SHARD_KEY_RE.match(key.rsplit("/", 1)[-1])
    if not match:
        return None
    return _stamp_time(match["stamp"])


def collection_prefix(config: Config, collection: str) -> str:
    return f"{config.s3_prefix}/{collection}/"


def shard_prefix(config: Config, collection: str, shard_id: int) -> str:
    return f"{collection_prefix(config, collection)}{SHARD_DIR}/{shard_id}/"


def backup_key(config: Config, collection: str, taken_at: datetime) -> str:
    return f"{collection_prefix(config, collection)}{taken_at.strftime(KEY_TIME_FORMAT)}.snapshot"


def shard_backup_key(config: Config, collection: str, shard_id: int, peer_id: int, taken_at: datetime) -> str:
    return f"{shard_prefix(config, collection, shard_id)}{taken_at.strftime(KEY_TIME_FORMAT)}-peer{peer_id}.snapshot"


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


def _revocation_checking_adapter(ca_file: str, crl_file: str) -> Any:
    """A requests adapter whose TLS context also checks the server's certificate against the
    CRLs of crl_file, as OpenSSL does for the backend (VERIFY_CRL_CHECK_LEAF): a certificate
    listed there is refused, and so is one of a CA the file holds no CRL of."""
    import ssl

    from requests.adapters import HTTPAdapter

    context = ssl.create_default_context(cafile=ca_file or None)
    try:
        context.load_verify_locations(cafile=crl_file)  # it reads the CRLs of a PEM file too
    except (OSError, ssl.SSLError) as err:
        raise BackupError(f"cannot read the CRL file {crl_file}: {err}") from None
    if not context.cert_store_stats()["crl"]:
        raise BackupError(f"the CRL file {crl_file} holds no CRL (PEM X509 CRL blocks)")
    context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF

    class RevocationChecking(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            # the pool's connections use this context; requests still adds ca_file to it
            super().init_poolmanager(*args, **{**kwargs, "ssl_context": context})

    return RevocationChecking()


class Qdrant:
    """The few REST calls the backups need, with the full-access key."""

    def __init__(self, config: Config) -> None:
        import requests  # Debian's python3-requests

        self.base = config.qdrant_url.rstrip("/")
        self.timeout = config.qdrant_timeout
        self.session = requests.Session()
        self.session.trust_env = False  # never send the key through a proxy
        # https: verified against the internal CA (never switched off); http is refused upstream
        # of here by the role's preflight, but a hand-written config may still use it.
        self.session.verify = config.qdrant_ca_file or True
        if config.qdrant_crl_file:
            self.session.mount("https://", _revocation_checking_adapter(config.qdrant_ca_file, config.qdrant_crl_file))
        # One key, or two while a rotation moves the peers to the new one: the one that worked
        # last goes first.
        self.keys = list(dict.fromkeys(k for k in (config.qdrant_api_key, config.qdrant_api_key_previous) if k))

    def _send(self, method: str, url: str, **kwargs: Any) -> Any:
        """The request with the first key, and again with the next one after a 401 (a key the
        peer does not hold). Every request here has a JSON body or none, so it can be sent again."""
        for index, key in enumerate(self.keys):
            headers = {**kwargs.get("headers", {}), "api-key": key}
            response = self.session.request(method, url, **{**kwargs, "headers": headers})
            if response.status_code != 401 or index == len(self.keys) - 1:
                if index:
                    self.keys.insert(0, self.keys.pop(index))
                return response
            response.close()
        raise BackupError("no Qdrant API key configured")

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        import requests

        url = self.base + path
        try:
            response = self._send(method, url, timeout=kwargs.pop("timeout", self.timeout), **kwargs)
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
            response = self._send("GET", self.base + "/", timeout=30)
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

    def open_snapshot(self, collection: str, name: str, shard_id: int | None = None) -> Any:
        """The streamed download of the snapshot file, whose raw body is the file's own bytes.

        Qdrant's HTTP server (actix-web's Compress middleware) encodes every response in
        whatever the request accepts, and requests accepts gzip and deflate by default: the
        raw stream would then be the compressed bytes, whose sha256 and length are not those
        Qdrant reports for the file, and every backup would be judged unverified. So the
        download asks for identity and refuses any other coding instead of decoding it: what
        is hashed and uploaded must be exactly the bytes Qdrant checksummed.
        """
        import requests

        url = f"{self.base}{self._snapshots_path(collection, shard_id)}/{name}"
        try:
            response = self._send("GET", url, stream=True, timeout=self.timeout,
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

    # -- distributed mode -------------------------------------------------------------------

    @staticmethod
    def _snapshots_path(collection: str, shard_id: int | None) -> str:
        if shard_id is None:
            return f"/collections/{collection}/snapshots"
        return f"/collections/{collection}/shards/{shard_id}/snapshots"

    def cluster_status(self) -> dict[str, Any]:
        """GET /cluster: status ("enabled"/"disabled") and, in cluster mode, peers by id."""
        info = dict(self._call("GET", "/cluster") or {})
        if info.get("status") not in ("enabled", "disabled"):
            raise BackupError(f"Qdrant GET {self.base}/cluster: unexpected status {info.get('status')!r} "
                              "(expected enabled or disabled)")
        return info

    def cluster_enabled(self) -> bool:
        """Distributed mode, as Qdrant itself reports it (GET /cluster: "enabled"/"disabled")."""
        return self.cluster_status()["status"] == "enabled"

    def collection_exists(self, collection: str) -> bool:
        return bool(self._call("GET", f"/collections/{collection}/exists")["exists"])

    def create_collection(self, collection: str, layout: dict[str, Any]) -> None:
        self._call("PUT", f"/collections/{collection}", json=layout)

    def collection_cluster(self, collection: str) -> dict[str, Any]:
        """This peer's view of the collection's shards: peer_id, shard_count, local_shards
        [{shard_id, points_count, state}], remote_shards [{shard_id, peer_id, state}]."""
        return dict(self._call("GET", f"/collections/{collection}/cluster"))

    def create_shard_snapshot(self, collection: str, shard_id: int) -> dict[str, Any]:
        return dict(self._call("POST", self._snapshots_path(collection, shard_id), params={"wait": "true"}))

    def delete_shard_snapshot(self, collection: str, shard_id: int, name: str) -> None:
        self._call("DELETE", f"{self._snapshots_path(collection, shard_id)}/{name}", params={"wait": "true"})

    def recover_shard(self, collection: str, shard_id: int, location: str, checksum: str) -> None:
        """Priority "snapshot": the recovered replica becomes the shard's source of truth and
        Qdrant re-syncs the shard's other replicas from it."""
        self._call("PUT", f"{self._snapshots_path(collection, shard_id)}/recover", params={"wait": "true"},
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


def list_backups(config: Config, s3: Any, collection: str | None = None,
                 shard_id: int | None = None) -> list[Backup]:
    """Every snapshot object under the prefix (or one collection, or one of its shards),
    with its metadata: whole-collection and shard backups alike (Backup.shard_id tells)."""
    from botocore.exceptions import BotoCoreError, ClientError

    if collection and shard_id is not None:
        prefix = shard_prefix(config, collection, shard_id)
    else:
        prefix = collection_prefix(config, collection) if collection else f"{config.s3_prefix}/"
    found: list[Backup] = []
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=config.s3_bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                parts = parse_key(config, obj["Key"])
                if parts is None:
                    continue  # not ours: never touched
                try:
                    meta = s3.head_object(Bucket=config.s3_bucket, Key=obj["Key"]).get("Metadata", {})
                except ClientError as err:
                    # Gone since the listing? Every holder of a shard prunes its backups, and
                    # the peers run at the same time. S3 answers a missing key with 404, or
                    # 403 where the caller may list only some prefixes (IAM's s3:prefix
                    # condition): a key no longer listed is skipped, anything else fails.
                    code = err.response.get("Error", {}).get("Code")
                    if code not in ("404", "NoSuchKey", "NotFound", "403", "AccessDenied") or \
                            still_listed(s3, config.s3_bucket, obj["Key"]):
                        raise
                    LOG.info("s3://%s/%s: deleted since it was listed; skipped", config.s3_bucket, obj["Key"])
                    continue
                found.append(Backup(
                    key=obj["Key"], collection=parts.collection, taken_at=parts.taken_at, size=int(obj["Size"]),
                    sha256=meta.get("sha256", ""),
                    meta_size=_number(meta.get("size", ""), -1),
                    qdrant_version=meta.get("qdrant-version", ""),
                    points_count=_number(meta.get("points-count", ""), None),
                    shard_id=parts.shard_id, peer_id=parts.peer_id,
                    shard_count=_number(meta.get("shard-count", ""), None) if parts.shard_id is not None else None,
                    layout_json=meta.get(LAYOUT_META, ""),
                ))
    except (BotoCoreError, ClientError) as err:
        raise s3_error(err, f"listing s3://{config.s3_bucket}/{prefix}") from None
    return sorted(found, key=lambda b: (b.collection, -1 if b.shard_id is None else b.shard_id, b.taken_at, b.key))


def still_listed(s3: Any, bucket: str, key: str) -> bool:
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1).get("Contents", [])
    return any(obj["Key"] == key for obj in listed)


def _number(text: str, default: Any) -> Any:
    return int(text) if text.isdigit() else default


# --------------------------------------------------------------------------- backup


@dataclass
class Outcome:
    collection: str
    ok: bool
    size: int = 0
    key: str = ""
    error: str = ""
    phases: dict[str, float] = field(default_factory=dict)
    shard_id: int | None = None

    @property
    def label(self) -> str:
        """Its key in state.json and its metrics labels: `c`, or `c/shards/<id>` (cluster)."""
        return unit_label(self.collection, self.shard_id)


def unit_label(collection: str, shard_id: int | None) -> str:
    return collection if shard_id is None else f"{collection}/{SHARD_DIR}/{shard_id}"


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


def upload_verified(config: Config, s3: Any, what: str, key: str, snapshot: dict[str, Any],
                    metadata: dict[str, str], phase: Phases, open_snapshot: Any, delete_snapshot: Any) -> int:
    """Stream a Qdrant snapshot into S3, verify it, always delete the local snapshot.

    Shared by whole-collection and shard backups: the upload is only left in place when the
    streamed bytes hash to Qdrant's own checksum and the object's length and metadata match;
    otherwise it is deleted and BackupError names `what`. Returns the size.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    uploaded = False
    try:
        checksum = str(snapshot.get("checksum") or "").lower()
        if not SHA256_RE.match(checksum):
            raise BackupError(f"{what}: Qdrant returned no sha256 checksum for "
                              f"snapshot {snapshot.get('name')} (Qdrant >= 1.8 does)")
        size = int(snapshot["size"])
        extra: dict[str, Any] = {
            "ContentType": "application/octet-stream",
            "Metadata": fit_metadata(what, {"sha256": checksum, "size": str(size), **metadata,
                                            "snapshot-name": snapshot["name"]}),
        }
        if config.s3_kms_key_id:
            extra.update(ServerSideEncryption="aws:kms", SSEKMSKeyId=config.s3_kms_key_id)
        with phase("transfer"):
            response = open_snapshot()
            reader = HashingReader(response.raw)
            try:
                s3.upload_fileobj(reader, config.s3_bucket, key, ExtraArgs=extra, Config=transfer_config(config))
                uploaded = True  # from here on, anything but a verified object is deleted
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
            raise BackupError(f"{what}: upload verification failed: {problem}")
        uploaded = False  # verified: it stays
    except BaseException:
        if uploaded:  # an unverified object must not look like a backup
            try:
                s3.delete_object(Bucket=config.s3_bucket, Key=key)
            except (BotoCoreError, ClientError) as err:
                LOG.error("could not delete the bad upload s3://%s/%s: %s", config.s3_bucket, key, err)
        raise
    finally:
        try:
            with phase("qdrant_cleanup"):
                delete_snapshot()
        except BackupError as err:
            LOG.error("could not delete the local snapshot %s: %s", snapshot.get("name"), err)
    LOG.info("%s: uploaded s3://%s/%s (%d bytes, sha256 %s, %s points)", what, config.s3_bucket, key, size,
             checksum, metadata.get("points-count") or "unknown")
    return size


def metadata_bytes(metadata: dict[str, str]) -> int:
    """The size S3 counts against its user-metadata limit: every key and value, UTF-8."""
    return sum(len(k.encode()) + len(v.encode()) for k, v in metadata.items())


def fit_metadata(what: str, metadata: dict[str, str]) -> dict[str, str]:
    """The metadata, without the layout if all of it together would pass S3's limit (a
    long collection name, say): the backup is still good, only the layout is not recorded."""
    if LAYOUT_META in metadata and metadata_bytes(metadata) > S3_METADATA_LIMIT:
        LOG.warning("%s: the metadata would take %d bytes, over S3's %d: the collection layout is not recorded "
                    "with this backup (create-collection cannot use it)", what, metadata_bytes(metadata),
                    S3_METADATA_LIMIT)
        return {k: v for k, v in metadata.items() if k != LAYOUT_META}
    return metadata


def collection_layout(info: dict[str, Any]) -> dict[str, Any]:
    """A collection's creation layout, from its GET /collections/{c} result (config.params):
    what PUT /collections/{c} takes to create it again with the same vectors (one unnamed
    vector's params or named vectors, as returned) and the same shard layout."""
    params = (info.get("config") or {}).get("params") or {}
    return {k: params[k] for k in LAYOUT_PARAMS if params.get(k) is not None}


def layout_metadata(qdrant: Qdrant, collection: str) -> dict[str, str]:
    """{collection-layout: compact JSON} for a backup's metadata, or {} with a warning when
    the layout cannot be read or is over LAYOUT_MAX_BYTES (the backup itself goes on)."""
    try:
        layout = collection_layout(qdrant.collection_info(collection))
    except (BackupError, AttributeError, TypeError) as err:
        LOG.warning("collection %s: its layout could not be read (%s): not recorded with the backup", collection, err)
        return {}
    missing = [k for k in ("vectors", "shard_number", "replication_factor", "write_consistency_factor")
               if k not in layout]
    if missing:
        LOG.warning("collection %s: Qdrant reports no %s in its config: the layout is not recorded with the backup",
                    collection, ", ".join(missing))
        return {}
    text = json.dumps(layout, separators=(",", ":"), sort_keys=True)  # ASCII: \u escapes
    if len(text) > LAYOUT_MAX_BYTES:
        LOG.warning("collection %s: its layout takes %d bytes as JSON, over the %d recorded with a backup: not "
                    "recorded (create-collection cannot recreate it; create it by hand before a cluster restore)",
                    collection, len(text), LAYOUT_MAX_BYTES)
        return {}
    return {LAYOUT_META: text}


def backup_collection(config: Config, qdrant: Qdrant, s3: Any, collection: str,
                      version: str, now: datetime) -> Outcome:
    """Snapshot -> stream to S3 -> verify against Qdrant's checksum -> delete local -> prune."""
    phase = Phases()
    with phase("qdrant_snapshot"):
        layout = layout_metadata(qdrant, collection)
        snapshot, points = stable_snapshot(qdrant, collection)
    key = backup_key(config, collection, now)
    metadata = {"collection": collection, "qdrant-version": version,
                "points-count": "" if points is None else str(points), **layout}
    size = upload_verified(config, s3, f"collection {collection}", key, snapshot, metadata, phase,
                           lambda: qdrant.open_snapshot(collection, snapshot["name"]),
                           lambda: qdrant.delete_snapshot(collection, snapshot["name"]))
    with phase("retention"):
        apply_retention(config, s3, collection, now)
    LOG.info("collection %s: took %s", collection, phase)
    return Outcome(collection, True, size=size, key=key, phases=phase.rounded())


def local_shard_points(qdrant: Qdrant, collection: str, shard_id: int) -> int | None:
    for local in qdrant.collection_cluster(collection).get("local_shards", []):
        if int(local["shard_id"]) == shard_id and local.get("points_count") is not None:
            return int(local["points_count"])
    return None


def stable_shard_snapshot(qdrant: Qdrant, collection: str, shard_id: int,
                          attempts: int = 3) -> tuple[dict[str, Any], int | None]:
    """A shard snapshot and the point count of this replica, counted before and after
    (GET .../cluster reports each local shard's count), retried when writes raced it."""
    for attempt in range(1, attempts + 1):
        before = local_shard_points(qdrant, collection, shard_id)
        snapshot = qdrant.create_shard_snapshot(collection, shard_id)
        after = local_shard_points(qdrant, collection, shard_id)
        if before == after:
            return snapshot, after
        if attempt == attempts:
            LOG.warning("collection %s shard %d: points changed during every snapshot (%s -> %s); "
                        "recording the count as unknown", collection, shard_id, before, after)
            return snapshot, None
        qdrant.delete_shard_snapshot(collection, shard_id, snapshot["name"])
    raise AssertionError("unreachable")


def backup_shard(config: Config, qdrant: Qdrant, s3: Any, collection: str, shard_id: int, peer_id: int,
                 shard_count: int, version: str, now: datetime, layout: dict[str, str] | None = None) -> Outcome:
    """One local replica of one shard: the same steps as a collection, through the shard API.
    Retention then applies to that shard's objects only, whichever peer uploaded them.
    `layout`: the collection's layout metadata (layout_metadata), read once per collection."""
    phase = Phases()
    what = f"collection {collection} shard {shard_id} (peer {peer_id})"
    with phase("qdrant_snapshot"):
        snapshot, points = stable_shard_snapshot(qdrant, collection, shard_id)
    key = shard_backup_key(config, collection, shard_id, peer_id, now)
    metadata = {"collection": collection, "qdrant-version": version,
                "points-count": "" if points is None else str(points),
                "shard-id": str(shard_id), "peer-id": str(peer_id), "shard-count": str(shard_count),
                **(layout or {})}
    size = upload_verified(config, s3, what, key, snapshot, metadata, phase,
                           lambda: qdrant.open_snapshot(collection, snapshot["name"], shard_id),
                           lambda: qdrant.delete_shard_snapshot(collection, shard_id, snapshot["name"]))
    with phase("retention"):
        apply_retention(config, s3, collection, now, shard_id)
    LOG.info("%s: took %s", what, phase)
    return Outcome(collection, True, size=size, key=key, phases=phase.rounded(), shard_id=shard_id)


def backup_collection_shards(config: Config, qdrant: Qdrant, s3: Any, collection: str,
                             version: str, now: datetime) -> list[Outcome]:
    """Cluster mode: every shard replica local to this peer, each on its own.

    A collection snapshot on a peer holds only that peer's shards, so each peer backs up
    the shards it holds, through the shard snapshot API. Every holder of a replica uploads
    it (the shard survives the loss of any peer and of any one upload); a replica that is
    not Active (Dead, Partial: its data may be stale or half-copied) fails that shard on
    this peer without stopping the others.
    """
    info = qdrant.collection_cluster(collection)
    peer_id = int(info["peer_id"])
    shard_ids = {int(s["shard_id"]) for s in info.get("local_shards", []) + info.get("remote_shards", [])}
    shard_count = int(info.get("shard_count") or len(shard_ids))
    local = sorted(info.get("local_shards", []), key=lambda s: int(s["shard_id"]))
    if not local:
        LOG.info("collection %s: no shard of it on this peer (%d): nothing to back up here", collection, peer_id)
        return []
    layout = layout_metadata(qdrant, collection)
    outcomes: list[Outcome] = []
    for shard in local:
        shard_id = int(shard["shard_id"])
        if shard.get("state") != "Active":
            LOG.error("collection %s shard %d: the replica on this peer (%d) is %s, not Active: not backed "
                      "up here (its data may be stale); the shard's other holders back it up, and its older "
                      "backups are kept", collection, shard_id, peer_id, shard.get("state"))
            outcomes.append(Outcome(collection, False, error=f"replica {shard.get('state')}", shard_id=shard_id))
            continue
        try:
            outcomes.append(backup_shard(config, qdrant, s3, collection, shard_id, peer_id, shard_count,
                                         version, now, layout))
        except Exception as err:  # noqa: BLE001 - one shard's failure never stops the others
            LOG.error("collection %s shard %d: backup failed: %s", collection, shard_id, err)
            outcomes.append(Outcome(collection, False, error=str(err), shard_id=shard_id))
    return outcomes


def apply_retention(config: Config, s3: Any, collection: str, now: datetime,
                    shard_id: int | None = None) -> list[str]:
    """Prune one unit: the collection's whole-collection backups, or one shard's backups
    (shard_id). The units never touch each other's objects."""
    from botocore.exceptions import BotoCoreError, ClientError

    if config.retention_days <= 0:
        return []  # retention disabled: not even the listing (a HEAD per object) is needed
    unit = [b for b in list_backups(config, s3, collection, shard_id) if b.shard_id == shard_id]
    doomed = retention_deletions(unit, now, config.retention_days)
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

    def labels(unit: str) -> str:
        """`c` -> collection="c"; `c/shards/3` (cluster mode) -> collection="c",shard="3"."""
        collection, _, shard = unit.partition(f"/{SHARD_DIR}/")
        return f'{{collection="{esc(collection)}"' + (f',shard="{esc(shard)}"' if shard else "") + "}"

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
           "Unix time of the last verified upload of each collection (cluster mode: of each shard, from this peer).",
           [(labels(c), v["last_success"]) for c, v in sorted(collections.items())
            if v.get("last_success")])
    family("querygpt_backup_bytes", "gauge", "Size of the last verified upload of each collection.",
           [(labels(c), v.get("bytes", 0)) for c, v in sorted(collections.items())
            if v.get("last_success")])
    failures = dict(state.get("failures", {}))
    family("querygpt_backup_failures_total", "counter",
           f"Failed backups per collection (collection=\"{RUN_LABEL}\": the run failed before any collection).",
           [(labels(c), n) for c, n in sorted(failures.items())])
    return "\n".join(lines) + "\n"


def record_run(config: Config, started: float, outcomes: list[Outcome], run_error: bool,
               present: Sequence[str] | None, kept: Sequence[str] = ()) -> None:
    """Persist the state and rewrite the textfile metrics (tmp + rename).

    `present`: the units (collections, or `c/shards/<id>` in cluster mode) this host backs
    up now; others are forgotten (a dropped collection, a shard moved to another peer, the
    whole-collection entry after a switch to cluster mode), so no stale alert stays behind.
    `kept`: collections whose units could not be read this run (left as they were).
    """
    state = load_state(config)
    collections: dict[str, Any] = state.setdefault("collections", {})
    failures: dict[str, float] = state.setdefault("failures", {})
    failures.setdefault(RUN_LABEL, 0)
    if present is not None:
        for gone in set(collections) - set(present):
            if gone.partition("/")[0] not in kept:
                collections.pop(gone)
    for outcome in outcomes:
        failures.setdefault(outcome.label, 0)
        if outcome.ok:
            collections[outcome.label] = {"last_success": time.time(), "bytes": outcome.size,
                                          "key": outcome.key, "seconds": outcome.phases}
        else:
            failures[outcome.label] += 1
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
    """One backup run over every (or the configured, or the given) collection.

    The mode comes from Qdrant itself (GET /cluster): single node, one snapshot per
    collection; distributed, one per shard replica held by this peer.
    """
    started = time.monotonic()
    outcomes: list[Outcome] = []
    present: list[str] | None = None
    units: list[str] = []
    kept: list[str] = []
    cluster = False
    run_error = False
    try:
        qdrant = Qdrant(config)
        version = qdrant.version()
        cluster = qdrant.cluster_enabled()
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
                if cluster:
                    shards = backup_collection_shards(config, qdrant, s3, collection, version, stamp)
                    outcomes.extend(shards)
                    units.extend(o.label for o in shards)
                else:
                    units.append(collection)
                    outcomes.append(backup_collection(config, qdrant, s3, collection, version, stamp))
            except Exception as err:  # noqa: BLE001 - any failure fails the collection, never the metrics
                LOG.error("collection %s: backup failed: %s", collection, err)
                outcomes.append(Outcome(collection, False, error=str(err)))
                units.append(collection)
                kept.append(collection)
        if not wanted:
            LOG.warning("no collections to back up")
    except Exception as err:  # noqa: BLE001 - still record the failure for the alerts
        LOG.error("backup run failed: %s", err)
        run_error = True
    # forget units only after a complete run over every collection: a partial one did not see them all
    complete = present is not None and not only and not run_error
    record_run(config, started, outcomes, run_error, units if complete else None, kept)
    failed = [o.label for o in outcomes if not o.ok]
    if run_error or failed:
        LOG.error("backup run FAILED (collections failed: %s)", failed or "-")
        return EXIT_FAILED
    LOG.info("backup run ok: %d %s in %.1fs", len(outcomes), "shard replica(s)" if cluster else "collection(s)",
             time.monotonic() - started)
    return 0


# --------------------------------------------------------------------------- restore


def minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def choose_backup(config: Config, s3: Any, collection: str, key: str = "", shard_id: int | None = None) -> Backup:
    """The named object, or the newest good one of the collection (shard_id None: its
    whole-collection backups) or of one of its shards (any peer's copy)."""
    backups = list_backups(config, s3, collection, shard_id)
    where = (f"s3://{config.s3_bucket}/"
             f"{collection_prefix(config, collection) if shard_id is None else shard_prefix(config, collection, shard_id)}")
    if key:
        named = [b for b in backups if (b.key == key or b.key.rsplit("/", 1)[-1] == key)
                 and (shard_id is None or b.shard_id == shard_id)]
        if len(named) > 1:  # one stamp and peer in several shards: the file name alone is ambiguous
            raise BackupError(f"{key!r} names {len(named)} backups of collection {collection} "
                              f"({', '.join(b.key for b in named)}): give the whole key or the shard")
        if named:
            return named[0]
        raise BackupError(f"no backup {key!r} of collection {collection} under {where} "
                          f"(list them: querygpt-backup list --collection {collection})")
    good = [b for b in backups if b.good and b.shard_id == shard_id]
    if not good:
        raise BackupError(f"no good backup of collection {collection}"
                          f"{'' if shard_id is None else f' shard {shard_id}'} under {where}")
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


def run_restore(config: Config, collection: str, key: str = "", shard_id: int | None = None) -> dict[str, Any]:
    """Download, verify, recover through the API, wait, compare the point count.

    The result carries the seconds of each step ("qdrant_*": Qdrant's own work), so every
    restore, drills included, measures the collection's restore time (RTO). In cluster
    mode (GET /cluster) it restores shard by shard instead: run_restore_shards.
    """
    started = time.monotonic()
    phase = Phases()
    with phase("select"):
        qdrant = Qdrant(config)
        cluster = qdrant.cluster_enabled()
    if cluster:
        return run_restore_shards(config, qdrant, collection, key, shard_id, started, phase)
    with phase("select"):
        if shard_id is not None:
            raise BackupError(f"--shard {shard_id}: Qdrant at {config.qdrant_url} runs single-node "
                              "(GET /cluster: disabled); restore the whole collection without --shard")
        s3 = s3_client(config)
        backup = choose_backup(config, s3, collection, key)
        if backup.shard_id is not None:
            raise BackupError(f"{backup.key} is a shard backup (cluster mode); Qdrant at {config.qdrant_url} "
                              "runs single-node: restore a whole-collection backup here")
        running = qdrant.version()
        check_version(backup, running)
    LOG.info("restoring %s into collection %s (sha256 %s)", backup.key, collection, backup.sha256)
    stage_and_recover(config, backup, s3, phase, collection,
                      lambda location, checksum: qdrant.recover(collection, location, checksum))
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


def stage_and_recover(config: Config, backup: Backup, s3: Any, phase: Phases, stem: str, recover: Any,
                      shard: tuple[str, int] | None = None) -> None:
    """Download into Qdrant's snapshots directory (verified), hand it to Qdrant with the
    checksum, remove it whatever happens.

    A collection's snapshot goes to querygpt-restore/ and Qdrant reads it as a file:// URL.
    A shard's recover accepts no file:// URL (upstream refuses every scheme but http(s));
    it reads a local snapshot only by its bare name, from the shard's own snapshot directory
    (<snapshots>/<collection>/shards/<id>/), so a shard's is staged there: `shard` is the
    (collection, shard id) it is recovered into.
    """
    snapshots = Path(config.qdrant_snapshots_dir)
    name = f"querygpt-restore-{stem}-{backup.key.rsplit('/', 1)[-1]}"
    staging = snapshots / "querygpt-restore" if shard is None else \
        snapshots / shard[0] / "shards" / str(shard[1])
    dest = staging / name
    owner = snapshots.stat()
    # Directories made here are Qdrant's from the start (its own user writes its snapshots
    # there later), even when the download then fails.
    for directory in reversed([d for d in (staging, *staging.parents)
                               if d.is_relative_to(snapshots) and d != snapshots and not d.exists()]):
        directory.mkdir()
        os.chown(directory, owner.st_uid, owner.st_gid)
    with phase("download"):
        download_verified(config, s3, backup, dest)
    try:
        os.chown(dest, owner.st_uid, owner.st_gid)
        with phase("qdrant_recover"):
            recover(dest.resolve().as_uri() if shard is None else name, backup.sha256)
    finally:
        dest.unlink(missing_ok=True)


def shard_holders(info: dict[str, Any]) -> dict[int, dict[int, str]]:
    """shard id -> {peer id: replica state}, from one peer's GET /collections/{c}/cluster."""
    holders: dict[int, dict[int, str]] = {}
    for local in info.get("local_shards", []):
        holders.setdefault(int(local["shard_id"]), {})[int(info["peer_id"])] = str(local.get("state"))
    for remote in info.get("remote_shards", []):
        holders.setdefault(int(remote["shard_id"]), {})[int(remote["peer_id"])] = str(remote.get("state"))
    return holders


def poll_cluster(qdrant: Qdrant, collection: str, timeout: float, done: Any, what: str) -> Any:
    """Poll this peer's view of the collection's shards (every 0.5 s) until done(info) returns
    something other than None, and return it. Errors from Qdrant are retried until the
    deadline; then BackupError names `what` and the last view seen."""
    deadline = time.monotonic() + timeout
    seen: Any = None
    while True:
        try:
            info = qdrant.collection_cluster(collection)
            seen = shard_holders(info)
            result = done(info)
            if result is not None:
                return result
        except BackupError:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise BackupError(f"collection {collection}: {what}, {timeout}s later (last seen: {seen})")
        time.sleep(0.5)


def wait_shard_settled(qdrant: Qdrant, collection: str, shard_id: int, timeout: float) -> int:
    """Wait until every replica of the shard is Active and no transfer of it runs (Qdrant
    re-syncs the other replicas from the restored one); the local point count then."""
    def settled(info: dict[str, Any]) -> int | None:
        replicas = shard_holders(info).get(shard_id, {})
        moving = [t for t in info.get("shard_transfers", []) if int(t.get("shard_id", -1)) == shard_id]
        if replicas and all(state == "Active" for state in replicas.values()) and not moving:
            return local_shard_points(qdrant, collection, shard_id)
        return None

    return int(poll_cluster(qdrant, collection, timeout, settled,
                            f"shard {shard_id}'s replicas were not all Active after the restore"))


def select_shard_backups(config: Config, qdrant: Qdrant, collection: str, key: str,
                         shard_id: int | None) -> tuple[list[Backup], dict[str, Any], str]:
    """The backup of each shard to restore here, every refusal checked before any change."""
    s3 = s3_client(config)
    try:
        info = qdrant.collection_cluster(collection)
    except BackupError as err:
        raise BackupError(f"{err}. In cluster mode a shard is restored into the existing collection: "
                          f"create {collection} first from the layout recorded with its backups (querygpt-backup "
                          f"create-collection --collection {collection}), then restore") from None
    peer_id = int(info["peer_id"])
    holders = shard_holders(info)
    shard_count = int(info.get("shard_count") or len(holders))
    if key and shard_id is None:
        shard_id = choose_backup(config, s3, collection, key).shard_id
        if shard_id is None:
            raise BackupError(f"{key} is a whole-collection (single-node) backup; Qdrant at {config.qdrant_url} "
                              "runs in cluster mode, where only shard backups can be restored")
    wanted = sorted(holders) if shard_id is None else [shard_id]
    unknown = [s for s in wanted if s not in holders]
    if unknown:
        raise BackupError(f"collection {collection} has no shard {unknown} (shards: {sorted(holders)})")
    remote = [s for s in wanted if peer_id not in holders[s]]
    if remote:
        where = "; ".join(f"shard {s} on peer(s) {sorted(holders[s])}" for s in remote)
        raise ShardNotLocal(f"collection {collection}: {where}, not on this peer ({peer_id}): Qdrant recovers a "
                            "shard snapshot only into a local replica. Run the restore on a peer holding it "
                            "(playbooks/runbooks/restore_qdrant.yml does that per shard), or pass --shard with a "
                            "shard local here. Nothing was restored.")
    running = qdrant.version()
    chosen = [choose_backup(config, s3, collection, key, s) for s in wanted]
    for backup in chosen:
        check_version(backup, running)
        if backup.shard_count is not None and backup.shard_count != shard_count:
            raise RestoreRefused(f"{backup.key} was taken from {collection} with {backup.shard_count} shards, it "
                                 f"has {shard_count} now: points would sit in the wrong shard. Recreate the "
                                 f"collection with shard_number {backup.shard_count}, then restore.")
    return chosen, info, running


def run_restore_shards(config: Config, qdrant: Qdrant, collection: str, key: str, shard_id: int | None,
                       started: float, phase: Phases) -> dict[str, Any]:
    """Cluster mode: recover each shard (or one) on this peer from its newest good backup.

    Every shard to restore must have a replica here (Qdrant recovers a shard snapshot only
    into a local replica); otherwise nothing is restored and ShardNotLocal names the peers
    holding it. Every backup is chosen and checked (minor version, shard count) before the
    first shard is touched. Priority "snapshot": the restored replica becomes the source of
    truth and Qdrant re-syncs the shard's other replicas from it; the restore waits for that.
    """
    with phase("select"):
        chosen, info, running = select_shard_backups(config, qdrant, collection, key, shard_id)
    peer_id = int(info["peer_id"])
    s3 = s3_client(config)
    restored: list[dict[str, Any]] = []
    for backup in chosen:
        sid = int(backup.shard_id)  # type: ignore[arg-type] - chosen per shard
        LOG.info("restoring %s into collection %s shard %d on peer %d (sha256 %s)", backup.key, collection, sid,
                 peer_id, backup.sha256)
        stage_and_recover(config, backup, s3, phase, f"{collection}-shard{sid}",
                          lambda location, checksum, sid=sid: qdrant.recover_shard(collection, sid, location, checksum),
                          shard=(collection, sid))
        with phase("qdrant_ready"):
            count = wait_shard_settled(qdrant, collection, sid, config.restore_ready_timeout)
        if backup.points_count is not None and count != backup.points_count:
            raise BackupError(f"collection {collection} shard {sid} holds {count} points on peer {peer_id} after "
                              f"the restore, the backup recorded {backup.points_count}")
        restored.append(dict(backup.as_dict(), restored_points=count))
        LOG.info("restored collection %s shard %d from %s: %d points", collection, sid, backup.key, count)
    total = time.monotonic() - started
    LOG.info("restored %d shard(s) of collection %s on peer %d in %.1fs (%s)", len(restored), collection, peer_id,
             total, phase)
    return {"collection": collection, "mode": "cluster", "peer": peer_id, "qdrant_running": running,
            "shards": restored, "seconds": dict(phase.rounded(), total=round(total, 3))}


def layout_backup(config: Config, s3: Any, collection: str, key: str, shard_id: int | None) -> Backup:
    """The shard backup whose recorded layout creates the collection: the given one (--key),
    or the newest good shard backup recording a layout (of shard_id, or of any shard).

    Without --key, the layout must have the shard count of the backups the restore will take
    (each shard's newest good copy): a collection created otherwise would only be refused by
    the restore, and left behind empty.
    """
    if key:
        backup = choose_backup(config, s3, collection, key, shard_id)
        if backup.shard_id is None:
            raise BackupError(f"{backup.key} is a whole-collection (single-node) backup; in cluster mode the "
                              "collection is created from a shard backup's layout (the shards restored into it)")
        if backup.layout is None:
            raise BackupError(no_layout_message(config, collection, [backup]))
        valid_layout(backup)
        return backup
    shard_backups = [b for b in list_backups(config, s3, collection, shard_id)
                     if b.good and b.shard_id is not None and (shard_id is None or b.shard_id == shard_id)]
    with_layout = [b for b in shard_backups if b.layout is not None]
    if not with_layout:
        raise BackupError(no_layout_message(config, collection, shard_backups))
    backup = max(with_layout, key=lambda b: (b.taken_at, b.key))
    shard_number = valid_layout(backup)["shard_number"]
    newest: dict[int, Backup] = {}
    for b in shard_backups:  # sorted by shard, then time and key: the last one of a shard wins
        newest[int(b.shard_id)] = b  # type: ignore[arg-type] - shard backups only
    other = sorted(s for s, b in newest.items() if b.shard_count is not None and b.shard_count != shard_number)
    if other:
        raise RestoreRefused(f"the layout recorded with {backup.key} has shard_number {shard_number}, but the newest "
                             f"backups of shard(s) {other} were taken with {newest[other[0]].shard_count} shards: "
                             "the restore would refuse them. Nothing was created; pick the backup with --key "
                             "(restore_snapshot and restore_shard in the runbook).")
    return backup


def no_layout_message(config: Config, collection: str, backups: Sequence[Backup]) -> str:
    """Why the collection cannot be created from a backup, and how to create it by hand."""
    why = ("(taken before querygpt-backup recorded layouts, or with a layout too large for the S3 metadata)")
    if not backups:
        what = (f"there is no good shard backup of collection {collection} under "
                f"s3://{config.s3_bucket}/{collection_prefix(config, collection)}{SHARD_DIR}/ to take its layout from")
    elif len(backups) == 1:
        what = f"{backups[0].key} records no layout of collection {collection} {why}"
    else:
        what = f"none of the {len(backups)} good shard backups of collection {collection} records its layout {why}"
    newest = max(backups, key=lambda b: (b.taken_at, b.key)) if backups else None
    shards = newest.shard_count if newest and newest.shard_count else "<shard_count: querygpt-backup list>"
    return (f"{what}: nothing was created. Create the collection by hand as the backend does (its vector size and "
            f"distance, backend_qdrant_shard_number, backend_qdrant_replication_factor and "
            f"backend_qdrant_write_consistency_factor), with the backups' shard count, then rerun the restore: "
            f"curl -X PUT -H 'api-key: <qdrant key>' -H 'Content-Type: application/json' "
            f"{config.qdrant_url.rstrip('/')}/collections/{collection} -d '{{\"vectors\": {{\"size\": <vector "
            f"size>, \"distance\": \"Cosine\"}}, \"shard_number\": {shards}, \"replication_factor\": <at most "
            f"the peers>, \"write_consistency_factor\": 1}}'")


def valid_layout(backup: Backup) -> dict[str, Any]:
    """The layout recorded with the backup, refused (RestoreRefused) unless complete."""
    layout = dict(backup.layout or {})
    numbers = {k: layout.get(k) for k in ("shard_number", "replication_factor", "write_consistency_factor")}
    bad = {k: v for k, v in numbers.items() if isinstance(v, bool) or not isinstance(v, int) or v < 1}
    if not isinstance(layout.get("vectors"), dict) or bad:
        raise RestoreRefused(f"the layout recorded with {backup.key} is incomplete or invalid "
                             f"(vectors {layout.get('vectors')!r}, {numbers}): nothing was created; pick another "
                             "backup with --key, or create the collection by hand")
    return layout


def check_layout(backup: Backup, peers: int) -> dict[str, Any]:
    """The recorded layout, refused (RestoreRefused) when it cannot be created as recorded."""
    layout = valid_layout(backup)
    if layout.get("sharding_method", "auto") != "auto":
        raise RestoreRefused(f"the collection was created with sharding_method {layout['sharding_method']!r} "
                             f"(recorded with {backup.key}): its shards are made per shard key, which the layout "
                             "does not hold, so it is not created from it; create the collection and its shard keys "
                             "by hand, then restore")
    if layout["replication_factor"] > peers:
        raise RestoreRefused(f"the layout recorded with {backup.key} has replication_factor "
                             f"{layout['replication_factor']}, and the cluster has {peers} peer(s) now: Qdrant would "
                             "place fewer replicas than recorded. Nothing was created; add peers (the qdrant group) "
                             "and rerun, or create the collection by hand with a replication_factor of at most "
                             f"{peers} if that is what you want")
    return layout


def wait_collection_active(qdrant: Qdrant, collection: str, shard_number: int, timeout: float) -> None:
    """Wait until this peer sees every shard of the new collection with its replicas Active."""
    def active(info: dict[str, Any]) -> bool | None:
        held = shard_holders(info)
        ok = (sorted(held) == list(range(shard_number))
              and all(r and all(state == "Active" for state in r.values()) for r in held.values()))
        return True if ok else None

    poll_cluster(qdrant, collection, timeout, active, f"created, but its {shard_number} shards were not all Active")


def run_create_collection(config: Config, collection: str, key: str = "", shard_id: int | None = None
                          ) -> dict[str, Any]:
    """Cluster mode: create the collection, when it does not exist, from the layout recorded
    with its newest good shard backup (or the given one), so that its shards can be restored.

    Does nothing ("created": false) when it exists. Refuses (nothing created) a backup
    recording no layout, a layout with custom sharding, and a replication factor above the
    number of peers (never lowered silently). Waits until every shard is Active.
    """
    qdrant = Qdrant(config)
    status = qdrant.cluster_status()
    if status["status"] != "enabled":
        raise BackupError(f"Qdrant at {config.qdrant_url} runs single-node (GET /cluster: disabled): there "
                          "`restore` creates a missing collection from the snapshot itself; create-collection is "
                          "for cluster mode, where shards are restored into an existing collection")
    if qdrant.collection_exists(collection):
        LOG.info("collection %s exists: nothing created (its shards are restored into it as it is)", collection)
        return {"collection": collection, "created": False}
    backup = layout_backup(config, s3_client(config), collection, key, shard_id)
    peers = len(status.get("peers") or {})
    layout = check_layout(backup, peers)
    LOG.info("collection %s does not exist: creating it from the layout recorded with %s (taken %s): %s",
             collection, backup.key, backup.as_dict()["time"], json.dumps(layout, separators=(",", ":")))
    qdrant.create_collection(collection, layout)
    wait_collection_active(qdrant, collection, layout["shard_number"], config.restore_ready_timeout)
    LOG.info("created collection %s: %d shard(s), replication_factor %d, write_consistency_factor %d, on %d peer(s)",
             collection, layout["shard_number"], layout["replication_factor"], layout["write_consistency_factor"],
             peers)
    return {"collection": collection, "created": True, "key": backup.key, "time": backup.as_dict()["time"],
            "layout": layout, "peers": peers}


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
    listing.add_argument("--shard", type=shard_arg, help="only this shard's backups (needs --collection)")
    listing.add_argument("--json", action="store_true")
    for name, text in (("describe", "print the backup a restore would use (JSON; --shard: that shard's)"),
                       ("restore", "restore a collection from S3 (cluster mode: its shards local here)"),
                       ("create-collection", ("cluster mode: create the collection, if missing, from the layout "
                                              "recorded with its newest good backup (or --key)"))):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--collection", required=True)
        cmd.add_argument("--key", default="", help="object key or file name; default: the newest good one")
        cmd.add_argument("--shard", type=shard_arg, help="cluster mode: this shard only" if name != "create-collection"
                         else "take the layout from this shard's backups (with --key: the shard whose backup it is)")
    sub.add_parser("check-config", help="validate the config file and exit")
    return parser.parse_args(argv)


def shard_arg(text: str) -> int:
    if not SHARD_ID_RE.match(text):
        raise argparse.ArgumentTypeError(f"a shard id is a whole number >= 0, got {text!r}")
    return int(text)


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
            if args.shard is not None and not args.collection:
                LOG.error("list --shard needs --collection")
                return EXIT_USAGE
            backups = [b for b in list_backups(config, s3, args.collection, args.shard)
                       if args.shard is None or b.shard_id == args.shard]
            if args.json:
                print(json.dumps([b.as_dict() for b in backups], indent=2))
            else:
                print_table(backups)
            return 0
        if args.command == "describe":
            print(json.dumps(choose_backup(config, s3, args.collection, args.key, args.shard).as_dict(), indent=2))
            return 0
        if args.command == "create-collection":
            print(json.dumps(run_create_collection(config, args.collection, args.key, args.shard), indent=2))
            return 0
        print(json.dumps(run_restore(config, args.collection, args.key, args.shard), indent=2))
        return 0
    except RestoreRefused as err:
        LOG.error("REFUSED: %s", err)
        return EXIT_REFUSED
    except ShardNotLocal as err:
        LOG.error("NOT LOCAL: %s", err)
        return EXIT_NOT_LOCAL
    except BackupError as err:
        LOG.error("%s", err)
        return EXIT_FAILED


def print_table(backups: Sequence[Backup]) -> None:
    rows = [("COLLECTION", "SHARD", "PEER", "TIME (UTC)", "SIZE", "SHA256", "POINTS", "QDRANT", "STATE", "LAYOUT",
             "KEY")]
    for b in backups:
        d = b.as_dict()
        rows.append((b.collection, "-" if b.shard_id is None else f"{b.shard_id}/{b.shard_count or '?'}",
                     "-" if b.peer_id is None else str(b.peer_id), d["time"], str(b.size), b.sha256 or "MISSING",
                     "?" if b.points_count is None else str(b.points_count), b.qdrant_version,
                     "GOOD" if b.good else "INCOMPLETE", "-" if b.layout is None else "yes", b.key))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


if __name__ == "__main__":
    sys.exit(main())
