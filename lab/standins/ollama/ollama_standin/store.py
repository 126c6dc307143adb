"""Lab test fixture: the on-disk model store (OLLAMA_MODELS) and pulls from the lab mirror.

Layout and semantics follow upstream so the role's state checks behave the same:
manifests/<host>/<namespace>/<model>/<tag> plus blobs/sha256-<hex>; the digest
/api/tags reports is the sha256 of the manifest bytes; a pull copies every
layer, verifies its sha256, then writes the manifest and prunes layers the old
manifest no longer needs. The "registry" is a directory with the same layout.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ollama_standin.catalog import MEDIA_MODEL, MEDIA_TEMPLATE
from ollama_standin.names import InvalidName, ModelName, parse_name

Progress = Callable[[dict[str, Any]], None]
CHUNK = 64 * 1024
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


class StoreError(Exception):
    """A failure whose message is returned to API clients verbatim (as upstream does)."""


@dataclass(frozen=True)
class LocalModel:
    """A pulled model as the API describes it."""

    name: ModelName
    digest: str
    size: int
    modified_at: dt.datetime
    config: dict[str, Any]
    spec: dict[str, Any]
    template: str

    @property
    def kind(self) -> str:
        return str(self.spec.get("kind", "generation"))

    @property
    def capabilities(self) -> list[str]:
        return ["embedding"] if self.kind == "embedding" else ["completion"]

    def details(self) -> dict[str, Any]:
        """upstream ModelDetails."""
        return {
            "parent_model": "",
            "format": self.config.get("model_format", "gguf"),
            "family": self.config.get("model_family", ""),
            "families": self.config.get("model_families", []),
            "parameter_size": self.config.get("model_type", ""),
            "quantization_level": self.config.get("file_type", ""),
        }


class Store:
    """Models under one OLLAMA_MODELS directory; one lock serialises writers."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.lock = threading.RLock()

    @property
    def manifests_dir(self) -> Path:
        return self.root / "manifests"

    def blob_path(self, digest: str, root: Path | None = None) -> Path:
        """blobs/sha256-<hex> (upstream replaces ':' by '-')."""
        if not _DIGEST.fullmatch(digest):
            raise StoreError(f"invalid digest format: {digest}")
        return (root or self.root) / "blobs" / digest.replace(":", "-")

    def _manifest_path(self, name: ModelName, root: Path | None = None) -> Path:
        return (root or self.root) / "manifests" / name.manifest_relpath

    def get(self, name: ModelName) -> LocalModel | None:
        """The model if it is pulled and readable, else None."""
        path = self._manifest_path(name)
        try:
            data = path.read_bytes()
            manifest = json.loads(data)
            config = json.loads(self.blob_path(manifest["config"]["digest"]).read_bytes())
            spec: dict[str, Any] = {}
            template = ""
            for layer in manifest["layers"]:
                if layer["mediaType"] == MEDIA_MODEL:
                    spec = json.loads(self.blob_path(layer["digest"]).read_bytes())
                elif layer["mediaType"] == MEDIA_TEMPLATE:
                    template = self.blob_path(layer["digest"]).read_text()
            mtime = path.stat().st_mtime
        except (OSError, ValueError, KeyError, TypeError):
            return None
        size = manifest["config"]["size"] + sum(layer["size"] for layer in manifest["layers"])
        return LocalModel(
            name=name,
            digest=hashlib.sha256(data).hexdigest(),
            size=size,
            modified_at=dt.datetime.fromtimestamp(mtime, dt.UTC),
            config=config,
            spec=spec,
            template=template,
        )

    def _names(self) -> Iterator[ModelName]:
        for path in sorted(self.manifests_dir.glob("*/*/*/*")):
            if path.is_file():
                try:
                    yield parse_name(
                        "/".join(path.relative_to(self.manifests_dir).parts[:3]) + ":" + path.name
                    )
                except InvalidName:
                    continue

    def list(self) -> list[LocalModel]:
        """Readable models, most recently modified first (as upstream lists them)."""
        with self.lock:
            models = [m for m in (self.get(n) for n in self._names()) if m is not None]
        return sorted(models, key=lambda m: m.modified_at, reverse=True)

    def _referenced_digests(self) -> set[str]:
        digests: set[str] = set()
        for name in self._names():
            digests |= self._digests_of(name)
        return digests

    def _prune(self, candidates: set[str]) -> None:
        for digest in candidates - self._referenced_digests():
            self.blob_path(digest).unlink(missing_ok=True)

    def delete(self, name: ModelName) -> bool:
        """Remove a model and the blobs no other model uses; False if it was not there."""
        with self.lock:
            path = self._manifest_path(name)
            try:
                manifest = json.loads(path.read_bytes())
            except FileNotFoundError:
                return False
            path.unlink()
            for parent in path.parents:
                if parent == self.manifests_dir or any(parent.iterdir()):
                    break
                parent.rmdir()
            self._prune(_manifest_digests(manifest))
            return True

    def _copy_blob(self, source: Path, digest: str, total: int, emit: Progress) -> tuple[Path, str]:
        """Copy one layer to a -partial file, reporting progress; return it and its real digest."""
        partial = self.blob_path(digest).with_name(self.blob_path(digest).name + "-partial")
        partial.parent.mkdir(parents=True, exist_ok=True)
        status = f"pulling {digest[7:19]}"
        hasher = hashlib.sha256()
        completed = 0
        emit({"status": status, "digest": digest, "total": total})
        try:
            with source.open("rb") as src, partial.open("wb") as dst:
                while chunk := src.read(CHUNK):
                    dst.write(chunk)
                    hasher.update(chunk)
                    completed += len(chunk)
                    emit({"status": status, "digest": digest, "total": total, "completed": completed})
        except FileNotFoundError:
            partial.unlink(missing_ok=True)
            raise StoreError(f"pull model blob {digest}: file does not exist") from None
        return partial, "sha256:" + hasher.hexdigest()

    def pull(self, name: ModelName, mirror: Path | None, emit: Progress) -> None:
        """Pull from the lab mirror with upstream's progress statuses; raise StoreError on failure."""
        with self.lock:
            emit({"status": "pulling manifest"})
            if mirror is None:
                raise StoreError(
                    "pull model manifest: no model mirror configured (set OLLAMA_STANDIN_MIRROR)"
                )
            try:
                data = self._manifest_path(name, mirror).read_bytes()
                manifest = json.loads(data)
                layers = [*manifest["layers"], manifest["config"]]
            except FileNotFoundError:
                raise StoreError("pull model manifest: file does not exist") from None
            except (ValueError, KeyError, TypeError) as exc:
                raise StoreError(f"pull model manifest: {exc}") from None
            old_digests = self._digests_of(name)

            fetched: list[tuple[Path, str, str]] = []
            for layer in layers:
                digest, total = layer["digest"], int(layer["size"])
                if self.blob_path(digest).exists() or any(digest == f[1] for f in fetched):
                    emit(
                        {
                            "status": f"pulling {digest[7:19]}",
                            "digest": digest,
                            "total": total,
                            "completed": total,
                        }
                    )
                    continue
                partial, actual = self._copy_blob(self.blob_path(digest, mirror), digest, total, emit)
                fetched.append((partial, digest, actual))

            emit({"status": "verifying sha256 digest"})
            mismatched = [(digest, actual) for _, digest, actual in fetched if actual != digest]
            if mismatched:
                for partial, _, _ in fetched:
                    partial.unlink(missing_ok=True)
                digest, actual = mismatched[0]
                raise StoreError(
                    f"digest mismatch, file must be downloaded again: want {digest}, got {actual}"
                )
            for partial, digest, _ in fetched:
                os.replace(partial, self.blob_path(digest))

            emit({"status": "writing manifest"})
            target = self._manifest_path(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)

            unused = old_digests - {layer["digest"] for layer in layers}
            if unused:
                emit({"status": "removing unused layers"})
                self._prune(unused)
            emit({"status": "success"})

    def _digests_of(self, name: ModelName) -> set[str]:
        """Blobs the currently stored manifest of name uses (empty if none/unreadable)."""
        try:
            return _manifest_digests(json.loads(self._manifest_path(name).read_bytes()))
        except (OSError, ValueError, KeyError, TypeError):
            return set()


def _manifest_digests(manifest: dict[str, Any]) -> set[str]:
    """Every blob a manifest references (config + layers)."""
    return {manifest["config"]["digest"]} | {layer["digest"] for layer in manifest["layers"]}
