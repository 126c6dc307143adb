"""Collection snapshots: create, list, read, delete, recover.

LAB TEST FIXTURE (QueryGPT Qdrant stand-in, NOT Qdrant).

Why: the backup/restore playbooks and their tests need upstream's snapshot
workflow (file layout ``<snapshots_path>/<collection>/<name>`` with a
``<name>.checksum`` sha256 sidecar, checksum-verified recovery, same-minor
version rule, file:// locations confined to the snapshots directory). The file
itself is a tar holding one JSON document, which is NOT upstream's format:
stand-in snapshots only restore into the stand-in.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, Callable

from .errors import ApiError, bad_input, bad_request, forbidden, not_found
from .storage import Collection, Store, validate_collection_name, write_atomically

SNAPSHOT_FORMAT = "querygpt-lab-qdrant-standin-snapshot/1"
SNAPSHOT_MEMBER = "standin-snapshot.json"
PRIORITIES = ("no_sync", "snapshot", "replica", "replica_only")
PEER_ID = 1


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _minor(version: str) -> tuple[str, str]:
    major, _, rest = version.partition(".")
    return major, rest.partition(".")[0]


def encode_snapshot(collection: Collection, version: str, extra: dict[str, Any] | None = None) -> bytes:
    """A tar with one JSON member carrying config, points and the writer's version (cluster
    mode adds the peer's local shards under ``shards``)."""
    document = {
        "format": SNAPSHOT_FORMAT,
        "standin_version": version,
        "collection": collection.to_json(),
        **(extra or {}),
    }
    payload = json.dumps(document, separators=(",", ":")).encode("utf-8")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(SNAPSHOT_MEMBER)
        info.size = len(payload)
        info.mtime = int(time.time())
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


def decode_snapshot(data: bytes, target_name: str, running_version: str) -> Collection:
    """Parse a snapshot and enforce upstream's "same minor version" restore rule."""
    return Collection.from_json(target_name, decode_document(data, running_version)["collection"])


def decode_document(data: bytes, running_version: str) -> dict[str, Any]:
    """The snapshot's JSON document, after the format and version checks."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            member = tar.extractfile(SNAPSHOT_MEMBER)
            if member is None:
                raise KeyError(SNAPSHOT_MEMBER)
            document = json.loads(member.read())
    except (tarfile.TarError, KeyError, ValueError) as err:
        raise bad_input(f"Invalid snapshot file (not a lab stand-in snapshot): {err}") from None
    if document.get("format") != SNAPSHOT_FORMAT:
        raise bad_input(f"Invalid snapshot file: unknown format {document.get('format')!r}")
    snapshot_version = str(document.get("standin_version"))
    if _minor(snapshot_version) != _minor(running_version):
        raise bad_input(
            f"Snapshot was created by version {snapshot_version} and cannot be recovered "
            f"by version {running_version}: snapshots only restore onto the same minor "
            "version (upgrade one minor version at a time)"
        )
    return dict(document)


class SnapshotManager:
    """Snapshot files of every collection under ``snapshots_path``."""

    def __init__(self, snapshots_path: Path, store: Store,
                 check: Callable[[str], Any] | None = None) -> None:
        self.root = snapshots_path
        self.store = store
        self._check = check or self._check_store
        self.root.mkdir(parents=True, exist_ok=True)

    def _check_store(self, collection_name: str) -> None:
        """404 unless the collection exists (cluster mode passes its own check)."""
        with self.store.lock:
            self.store.get(collection_name)

    def _collection_dir(self, collection: str, shard_id: int | None = None) -> Path:
        """Upstream's layout: ``<collection>/`` and, per shard, ``<collection>/shards/<id>/``."""
        validate_collection_name(collection)
        base = self.root / collection
        return base if shard_id is None else base / "shards" / str(shard_id)

    def _snapshot_path(self, collection: str, name: str, shard_id: int | None = None) -> Path:
        if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
            raise bad_input(f"Invalid snapshot name {name!r}")
        path = self._collection_dir(collection, shard_id) / name
        if not name.endswith(".snapshot") or not path.is_file():
            raise not_found(f"Snapshot {name} not found")
        return path

    @staticmethod
    def _describe(path: Path) -> dict[str, Any]:
        stat = path.stat()
        checksum_file = path.with_name(path.name + ".checksum")
        checksum = checksum_file.read_text().strip() if checksum_file.is_file() else None
        created = datetime.fromtimestamp(stat.st_mtime, timezone.utc).replace(tzinfo=None)
        return {
            "name": path.name,
            "creation_time": created.isoformat(timespec="seconds"),
            "size": stat.st_size,
            "checksum": checksum,
        }

    def create(self, collection_name: str) -> dict[str, Any]:
        """Upstream's naming: ``<collection>-<peer id>-<UTC timestamp>.snapshot``."""
        with self.store.lock:
            collection = self.store.get(collection_name)
            data = encode_snapshot(collection, self.store.version)
        return self.write(self._collection_dir(collection_name), f"{collection_name}-{PEER_ID}", data)

    def write(self, directory: Path, prefix: str, data: bytes) -> dict[str, Any]:
        """Store ``<prefix>-<UTC timestamp>.snapshot`` and its checksum sidecar."""
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d-%H-%M-%S")
        path = directory / f"{prefix}-{stamp}.snapshot"
        suffix = 1
        while path.exists():  # two snapshots in one second: keep both
            path = directory / f"{prefix}-{stamp}-{suffix}.snapshot"
            suffix += 1
        write_atomically(path.with_name(path.name + ".checksum"), sha256_hex(data).encode())
        write_atomically(path, data)
        return self._describe(path)

    def list(self, collection_name: str, shard_id: int | None = None) -> list[dict[str, Any]]:
        self._check(collection_name)
        directory = self._collection_dir(collection_name, shard_id)
        if not directory.is_dir():
            return []
        return [self._describe(p) for p in sorted(directory.glob("*.snapshot")) if p.is_file()]

    def open(self, collection_name: str, name: str, shard_id: int | None = None) -> BinaryIO:
        """The snapshot file opened for streaming: a delete during the download unlinks the
        name but the open file still reads to its end, as on upstream."""
        self._check(collection_name)
        return self._snapshot_path(collection_name, name, shard_id).open("rb")

    def delete(self, collection_name: str, name: str, shard_id: int | None = None) -> None:
        self._check(collection_name)
        path = self._snapshot_path(collection_name, name, shard_id)
        path.unlink()
        path.with_name(path.name + ".checksum").unlink(missing_ok=True)

    def _fetch(self, location: str, api_key: str | None) -> bytes:
        url = urllib.parse.urlparse(location)
        if url.scheme == "file":
            if url.netloc not in ("", "localhost"):
                raise bad_request("Invalid snapshot URI, file path must be absolute or on localhost")
            local = Path(urllib.parse.unquote(url.path))
            if not local.exists():
                raise bad_request(f"Snapshot file {str(local)!r} does not exist")
            allowed = self.root.resolve()
            if not local.resolve().is_relative_to(allowed):
                raise forbidden(f"Snapshot file path must be inside the snapshots directory {str(allowed)!r}")
            return local.resolve().read_bytes()
        if url.scheme in ("http", "https"):
            request = urllib.request.Request(location)
            if api_key:
                request.add_header("api-key", api_key)
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    # urllib asks for identity; a server (or proxy) that encodes anyway would
                    # hand us bytes whose checksum is not the snapshot's: refuse, never guess.
                    coding = (response.headers.get("Content-Encoding") or "identity").strip().lower()
                    if coding != "identity":
                        raise bad_request(f"Failed to download snapshot from {location}: "
                                          f"the response is {coding}-encoded although identity was asked for")
                    data: bytes = response.read()
                    return data
            except (urllib.error.URLError, OSError) as err:
                raise bad_request(f"Failed to download snapshot from {location}: {err}") from None
        raise bad_request(f"URL {location} with scheme {url.scheme} is not supported")

    @staticmethod
    def verify_checksum(data: bytes, checksum: str | None) -> None:
        if checksum is not None:
            actual = sha256_hex(data)
            if not hmac.compare_digest(actual, checksum.strip().lower()):
                raise bad_input(f"Snapshot checksum mismatch: expected {checksum}, got {actual}")

    def fetch(self, body: Any) -> bytes:
        """The snapshot a ``SnapshotRecover`` body points at, checksum verified."""
        if not isinstance(body, dict) or not isinstance(body.get("location"), str):
            raise bad_input("Validation error in JSON body: [location: field is required]")
        check_priority(body.get("priority"))
        data = self._fetch(body["location"], body.get("api_key"))
        self.verify_checksum(data, body.get("checksum"))
        return data

    def fetch_shard(self, collection_name: str, shard_id: int, body: Any) -> bytes:
        """The snapshot a ``ShardSnapshotRecover`` body points at, checksum verified. Upstream
        (src/common/snapshots.rs) reads ``location`` as an http(s) URL to download, or as
        the bare name of a file in the shard's own snapshot directory
        (``<collection>/shards/<id>/``); any other URL scheme, file:// included, is refused
        (only the whole-collection recover reads file:// URLs)."""
        location = body.get("location") if isinstance(body, dict) else None
        scheme = urllib.parse.urlparse(location).scheme if isinstance(location, str) else ""
        if not isinstance(location, str) or scheme:  # a URL (upstream's untagged enum tries Url first)
            if scheme and scheme not in ("http", "https"):
                raise bad_input(f"Invalid snapshot URL {location}: URLs with {scheme} scheme are not supported")
            return self.fetch(body)  # as the collection's recover: body checks, download, checksum
        check_priority(body.get("priority"))
        if not location or Path(location).name != location:
            raise not_found(f"Snapshot {location}")
        path = self._collection_dir(collection_name, shard_id) / location
        if not path.is_file():
            raise not_found(f"Snapshot file {str(path)!r} does not exist")
        data = path.read_bytes()
        self.verify_checksum(data, body.get("checksum"))
        return data

    def recover(self, collection_name: str, data: bytes, checksum: str | None) -> None:
        """Replace the collection's contents with the snapshot's (creating it if missing)."""
        validate_collection_name(collection_name)
        self.verify_checksum(data, checksum)
        collection = decode_snapshot(data, collection_name, self.store.version)
        with self.store.lock:
            self.store.replace(collection)

    def recover_from_location(self, collection_name: str, body: Any) -> None:
        if not isinstance(body, dict) or not isinstance(body.get("location"), str):
            raise bad_input("Validation error in JSON body: [location: field is required]")
        check_priority(body.get("priority"))
        data = self._fetch(body["location"], body.get("api_key"))
        self.recover(collection_name, data, body.get("checksum"))


def check_priority(priority: Any) -> None:
    if priority is not None and priority not in PRIORITIES:
        raise ApiError(
            400,
            f"Json deserialize error: unknown variant `{priority}`, expected one of "
            + ", ".join(f"`{p}`" for p in PRIORITIES),
        )
